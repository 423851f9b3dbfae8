//! GitHub webhook deliveries: the `X-Hub-Signature-256` check and the few fields `serve` reads
//! from a verified body. A delivery is a hint that something changed; what changed is read back
//! from the API (see [`super::WorkflowRun`]).

use hmac::{Hmac, Mac as _};
use serde::Deserialize;
use sha2::Sha256;

/// The header with `sha256=` and the hex HMAC-SHA256 of the raw body, keyed by the secret.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The event's name: `workflow_run`, `push`, `ping`, …
pub const EVENT_HEADER: &str = "x-github-event";
/// A GUID per delivery; a redelivery keeps it.
pub const DELIVERY_HEADER: &str = "x-github-delivery";

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    /// Not `sha256=` and 64 hex digits.
    Malformed,
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SignatureError::Missing => {
                "no X-Hub-Signature-256 header: give the webhook a secret on GitHub (the value of \
                 DEFSYNC_GITHUB_WEBHOOK_SECRET)"
            }
            SignatureError::Malformed => "the X-Hub-Signature-256 header is not sha256= and 64 hex digits",
            SignatureError::Mismatch => {
                "the X-Hub-Signature-256 signature does not match the body: the webhook's secret on GitHub \
                 differs from DEFSYNC_GITHUB_WEBHOOK_SECRET"
            }
        })
    }
}

/// Checks `header` against the HMAC-SHA256 of `body` keyed by `secret`, in constant time (the
/// comparison does not stop at the first differing byte).
pub fn verify_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header.trim().strip_prefix("sha256=").ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    if expected.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| SignatureError::Mismatch)
}

/// `sha256=<hex>` for `body`: what GitHub sends, for tests and `webhook-setup`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What `serve` uses of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A workflow run was requested, started or completed.
    WorkflowRun { repository: String, run_id: u64 },
    /// A ref moved.
    Push { repository: String, git_ref: String, after: String },
    /// Sent when the webhook is created.
    Ping,
    /// Any other event: not used.
    Other(String),
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct WithRepository {
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct RunRef {
    id: u64,
}

#[derive(Deserialize)]
struct WorkflowRunEvent {
    repository: Repository,
    workflow_run: RunRef,
}

#[derive(Deserialize)]
struct PushEvent {
    repository: Repository,
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
}

/// The repository (`owner/name`) an event is about, if it names one.
pub fn repository(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<WithRepository>(body).ok()?.repository.map(|r| r.full_name)
}

/// The fields of `event` that `serve` uses. Only call it on a verified body.
pub fn parse(event: &str, body: &[u8]) -> Result<Event, String> {
    let bad = |e: serde_json::Error| format!("the {event} event's body is not what GitHub sends: {e}");
    Ok(match event {
        "workflow_run" => {
            let e: WorkflowRunEvent = serde_json::from_slice(body).map_err(bad)?;
            Event::WorkflowRun { repository: e.repository.full_name, run_id: e.workflow_run.id }
        }
        "push" => {
            let e: PushEvent = serde_json::from_slice(body).map_err(bad)?;
            Event::Push { repository: e.repository.full_name, git_ref: e.git_ref, after: e.after }
        }
        "ping" => Event::Ping,
        other => Event::Other(other.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's own example (docs, "Validating webhook deliveries"): secret "It's a Secret to
    /// Everybody", payload "Hello, World!".
    #[test]
    fn github_documented_signature_verifies() {
        let secret = b"It's a Secret to Everybody";
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret, b"Hello, World!"), expected);
        assert_eq!(verify_signature(secret, b"Hello, World!", Some(expected)), Ok(()));
        assert_eq!(verify_signature(secret, b"Hello, World?", Some(expected)), Err(SignatureError::Mismatch));
        assert_eq!(verify_signature(b"other", b"Hello, World!", Some(expected)), Err(SignatureError::Mismatch));
        assert_eq!(verify_signature(secret, b"x", None), Err(SignatureError::Missing));
        for bad in [
            "sha1=757107ea",
            "sha256=zz",
            "sha256=7571",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        ] {
            assert_eq!(verify_signature(secret, b"Hello, World!", Some(bad)), Err(SignatureError::Malformed), "{bad}");
        }
    }

    #[test]
    fn events_parse_to_what_serve_uses() {
        let run = br#"{"action":"completed","workflow_run":{"id":42,"status":"completed"},"repository":{"full_name":"Octo/Defs"}}"#;
        assert_eq!(parse("workflow_run", run), Ok(Event::WorkflowRun { repository: "Octo/Defs".into(), run_id: 42 }));
        assert_eq!(repository(run).as_deref(), Some("Octo/Defs"));
        let push = br#"{"ref":"refs/heads/main","after":"abc","repository":{"full_name":"o/r"}}"#;
        assert_eq!(
            parse("push", push),
            Ok(Event::Push { repository: "o/r".into(), git_ref: "refs/heads/main".into(), after: "abc".into() })
        );
        assert_eq!(parse("ping", b"{}"), Ok(Event::Ping));
        assert_eq!(parse("issues", b"{}"), Ok(Event::Other("issues".into())));
        assert!(parse("workflow_run", b"{}").unwrap_err().contains("workflow_run"));
        assert_eq!(repository(b"{}"), None);
    }
}
