//! A fault-injecting HTTP proxy in front of a real `defsync serve`: it answers some requests
//! with 429 or 503 itself, and for others forwards the request and then drops the connection
//! without an answer (a lost response: the platform did the work, the client never hears of it).
//!
//! Plain threads and blocking sockets: every answer closes its connection, so requests never
//! share one and there is no HTTP framing to get wrong beyond a request's `content-length`.

#![allow(dead_code)] // the interleaving test uses most of it; the rest is for later tests

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Chances, per request, of each fault while faults are on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rates {
    /// 429 `rate_limited` with `Retry-After: 0`.
    pub too_many: f64,
    /// 503 `unavailable` without `Retry-After`, so the client backs off on its own.
    pub unavailable: f64,
    /// Forwarded, then the connection is closed before any answer.
    pub lost_response: f64,
    /// The connection is closed before the request is forwarded.
    pub lost_request: f64,
}

/// How many requests met each fate.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub forwarded: u64,
    pub too_many: u64,
    pub unavailable: u64,
    pub lost_response: u64,
    pub lost_request: u64,
    /// The upstream could not be reached (a killed `serve`): the connection is dropped.
    pub upstream_down: u64,
}

#[derive(Default)]
struct AtomicCounts([AtomicU64; 6]);

struct Shared {
    /// `host:port` of the `serve` behind the proxy; a restarted `serve` listens elsewhere.
    upstream: Mutex<String>,
    faults: AtomicBool,
    rates: Rates,
    /// splitmix64 state: the faults follow the seed, in the order requests arrive.
    rng: Mutex<u64>,
    counts: AtomicCounts,
    stop: AtomicBool,
}

pub struct FaultProxy {
    pub url: String,
    addr: String,
    shared: Arc<Shared>,
}

enum Fate {
    Forward,
    Status(u16),
    LostResponse,
    LostRequest,
}

/// One step of splitmix64.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` (`http://host:port`).
    /// Faults start switched off.
    pub fn start(upstream: &str, seed: u64, rates: Rates) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            upstream: Mutex::new(host_port(upstream)),
            faults: AtomicBool::new(false),
            rates,
            rng: Mutex::new(seed ^ 0x5EED_F00D),
            counts: AtomicCounts::default(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = handle(&s, stream);
                });
            }
        });
        FaultProxy { url: format!("http://{addr}"), addr, shared }
    }

    pub fn set_upstream(&self, upstream: &str) {
        *self.shared.upstream.lock().unwrap() = host_port(upstream);
    }

    pub fn set_faults(&self, on: bool) {
        self.shared.faults.store(on, Ordering::SeqCst);
    }

    pub fn counts(&self) -> Counts {
        let c = |i: usize| self.shared.counts.0[i].load(Ordering::Relaxed);
        Counts {
            forwarded: c(0),
            too_many: c(1),
            unavailable: c(2),
            lost_response: c(3),
            lost_request: c(4),
            upstream_down: c(5),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag and its thread ends.
        let _ = TcpStream::connect(&self.addr);
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches('/').to_owned()
}

impl Shared {
    fn fate(&self) -> Fate {
        if !self.faults.load(Ordering::SeqCst) {
            return Fate::Forward;
        }
        let r = (splitmix(&mut self.rng.lock().unwrap()) >> 11) as f64 / (1u64 << 53) as f64;
        let Rates { too_many, unavailable, lost_response, lost_request } = self.rates;
        if r < too_many {
            Fate::Status(429)
        } else if r < too_many + unavailable {
            Fate::Status(503)
        } else if r < too_many + unavailable + lost_response {
            Fate::LostResponse
        } else if r < too_many + unavailable + lost_response + lost_request {
            Fate::LostRequest
        } else {
            Fate::Forward
        }
    }

    fn count(&self, i: usize) {
        self.counts.0[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves one request on `client`, then closes the connection.
fn handle(shared: &Shared, client: TcpStream) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let mut head = request_line.clone();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').unwrap_or((trimmed, ""));
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().unwrap_or(0);
        }
        // One request per connection, both ways: simpler than keeping track of framing.
        if !name.eq_ignore_ascii_case("connection") && !name.eq_ignore_ascii_case("keep-alive") {
            head.push_str(&line);
        }
    }
    head.push_str("connection: close\r\n\r\n");
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut client = client;
    match shared.fate() {
        Fate::LostRequest => {
            shared.count(4);
            return client.shutdown(Shutdown::Both);
        }
        Fate::Status(status) => {
            let (i, code, extra) =
                if status == 429 { (1, "rate_limited", "retry-after: 0\r\n") } else { (2, "unavailable", "") };
            shared.count(i);
            let body = format!(r#"{{"error":{{"code":"{code}","message":"injected by the test proxy"}}}}"#);
            let reason = http::StatusCode::from_u16(status).unwrap().canonical_reason().unwrap_or("");
            write!(
                client,
                "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            )?;
            return client.flush();
        }
        fate @ (Fate::Forward | Fate::LostResponse) => {
            let upstream = shared.upstream.lock().unwrap().clone();
            let Ok(mut up) = TcpStream::connect(&upstream) else {
                shared.count(5);
                return client.shutdown(Shutdown::Both);
            };
            up.set_read_timeout(Some(Duration::from_secs(60)))?;
            up.write_all(head.as_bytes())?;
            up.write_all(&body)?;
            let mut answer = Vec::new();
            if up.read_to_end(&mut answer).is_err() || answer.is_empty() {
                shared.count(5);
                return client.shutdown(Shutdown::Both);
            }
            if matches!(fate, Fate::LostResponse) {
                shared.count(3);
                return client.shutdown(Shutdown::Both);
            }
            shared.count(0);
            client.write_all(&answer)?;
            client.flush()?;
        }
    }
    client.shutdown(Shutdown::Both)
}
