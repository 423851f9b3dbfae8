//! Dashboard sessions: a random 256-bit ID in an `HttpOnly`, `SameSite=Strict` cookie, kept
//! server-side (only its SHA-256) with who logged in and the session's CSRF token. The API key
//! itself is never kept in the cookie nor in the session: a stored key is named, and looked up
//! again on every request, so a revocation or an expiry ends the session at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

/// The cookie that carries the session ID.
pub const SESSION_COOKIE: &str = "defsync_session";
/// The cookie that carries the login form's CSRF token (there is no session yet).
pub const LOGIN_COOKIE: &str = "defsync_login";
/// A session ends this long after its login, whatever happens meanwhile.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// At most this many live sessions; the oldest goes first.
const MAX_SESSIONS: usize = 10_000;

/// Who logged in: never the key, only how to find it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// The N-th full-access key of `--key` / `DEFSYNC_SERVER_KEYS` (from 0).
    FullKey(usize),
    /// A key kept in the store, by name.
    Stored(String),
}

#[derive(Debug, Clone)]
pub struct Session {
    pub who: Who,
    pub csrf: String,
    started: Instant,
}

impl Session {
    /// How the session is shown: a stored key's name, or `--key #N`.
    pub fn label(&self) -> String {
        match &self.who {
            Who::FullKey(n) => format!("--key #{}", n + 1),
            Who::Stored(name) => name.clone(),
        }
    }
}

/// The live sessions of this process.
#[derive(Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
}

/// 32 random bytes, URL-safe base64: session IDs and CSRF tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Compares two secrets in a time that depends on neither: their hashes are compared whole.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (hash(a), hash(b));
    let diff = a.iter().zip(&b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Sessions {
    /// Starts a session for `who`; returns the ID for the cookie.
    pub fn create(&self, who: Who) -> String {
        let id = random_token();
        let mut map = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.started.elapsed() < SESSION_TTL);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.started).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(hash(&id), Session { who, csrf: random_token(), started: Instant::now() });
        id
    }

    /// The live session with this ID.
    pub fn get(&self, id: &str) -> Option<Session> {
        let key = hash(id);
        let mut map = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&key) {
            Some(s) if s.started.elapsed() < SESSION_TTL => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, id: &str) {
        self.by_hash.lock().unwrap_or_else(|e| e.into_inner()).remove(&hash(id));
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, `Path=/`, and `Secure` when asked.
/// `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_found_by_their_id_only() {
        let sessions = Sessions::default();
        let id = sessions.create(Who::Stored("ci".into()));
        assert_eq!(id.len(), 43, "256 bits in base64url");
        assert_eq!(sessions.get(&id).unwrap().who, Who::Stored("ci".into()));
        assert!(sessions.get(&random_token()).is_none());
        assert!(sessions.get(&id[..42]).is_none());
        sessions.remove(&id);
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn cookies_are_read_and_written() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, "a=1; defsync_session=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
        let c = set_cookie(SESSION_COOKIE, "v", SESSION_TTL, true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("; Secure"), "{c}");
        assert!(!set_cookie(SESSION_COOKIE, "v", SESSION_TTL, false).contains("Secure"));
    }
}
