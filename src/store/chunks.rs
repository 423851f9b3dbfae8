//! Answers written in fixed-size chunks.

/// How large each chunk is.
const CHUNK: usize = 256 * 1024;

/// Bytes written into chunks of [`CHUNK`] bytes. A buffer grown by doubling may hold twice
/// its bytes and copies them as it grows; chunks cost the bytes written and one partly filled
/// chunk, and each can be sent, and freed, on its own.
#[derive(Debug, Default)]
pub struct Chunks {
    done: Vec<Vec<u8>>,
    current: Vec<u8>,
}

impl Chunks {
    /// Appends `bytes`.
    pub fn extend(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.current.len() == CHUNK {
                self.done.push(std::mem::take(&mut self.current));
            }
            if self.current.capacity() == 0 {
                self.current.reserve_exact(CHUNK);
            }
            let n = bytes.len().min(CHUNK - self.current.len());
            self.current.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
    }

    /// How many bytes were written.
    pub fn len(&self) -> usize {
        self.done.len() * CHUNK + self.current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunks, in order; the last is cut to its length.
    pub fn into_chunks(mut self) -> Vec<Vec<u8>> {
        if !self.current.is_empty() {
            self.current.shrink_to_fit();
            self.done.push(self.current);
        }
        self.done
    }

    /// The bytes in one buffer (tests and small answers).
    pub fn concat(self) -> Vec<u8> {
        self.into_chunks().concat()
    }
}

impl std::io::Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.extend(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_the_bytes_in_order_and_no_more() {
        let mut c = Chunks::default();
        let data: Vec<u8> = (0..CHUNK * 2 + 1000).map(|i| (i % 251) as u8).collect();
        for part in data.chunks(999) {
            c.extend(part);
        }
        assert_eq!(c.len(), data.len());
        let chunks = c.into_chunks();
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|ch| ch.capacity() == ch.len()));
        assert_eq!(chunks.concat(), data);
        assert!(Chunks::default().into_chunks().is_empty());
    }
}
