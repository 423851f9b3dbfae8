//! What every HTTP client of defsync shares (the Sync API's, GitHub's, GitLab's): encoding a
//! path segment, and one line for a transport error with its causes.

/// Percent-encodes one path segment or query value: everything but unreserved characters. `.`
/// and `..` as a whole segment are encoded too, since URL parsers would otherwise remove them
/// and reach another endpoint; GitLab wants `group%2Fproject` as a project ID, and a branch's
/// slashes encoded in `/branches/:branch`.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') || (b == b'.' && s != "." && s != "..") {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An error and its sources on one line, each cause once: reqwest's top-level message ("error
/// sending request") says little without them.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cannot_leave_their_place_in_the_path() {
        assert_eq!(segment("p1.x_y-z~"), "p1.x_y-z~");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("."), "%2E");
        assert_eq!(segment("a/b c?"), "a%2Fb%20c%3F");
        assert_eq!(segment("group/sub/name"), "group%2Fsub%2Fname");
    }
}
