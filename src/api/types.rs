//! Wire types of the Sync API (contract part 3), shared by the client, `serve` and the embedded
//! store, so all three speak exactly the same JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;

/// Where a platform commit's change came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Origin {
    #[serde(rename = "type")]
    pub kind: OriginType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OriginType {
    #[default]
    Dashboard,
    Git,
    Api,
}

/// One immutable version of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub id: String,
    pub seq: u64,
    pub parent: Option<String>,
    pub created_at: String,
    pub message: String,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    #[default]
    Bidirectional,
    GitToPlatform,
    PlatformToGit,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Bidirectional => "bidirectional",
            Direction::GitToPlatform => "git-to-platform",
            Direction::PlatformToGit => "platform-to-git",
        }
    }
}

/// The sync record: the link, and where the branch and the platform last met.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub repository: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub path: String,
    pub direction: Direction,
    pub commit: Option<String>,
    pub seq: u64,
    pub git_commit: Option<String>,
    pub updated_at: String,
}

/// `GET /v1/projects/{project}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub head: Option<Commit>,
    pub sync: Option<SyncRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseEntry {
    pub kind: String,
    pub name: String,
    pub digest: Digest,
    /// Contract v1.2: the Git blob ID of the file at the key's default path that held the agreed
    /// content, when the client that set this base said so. Proof that a file with this blob at
    /// that path has this digest, without parsing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
}

/// `GET /v1/projects/{project}/sync/base`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    pub entries: Vec<BaseEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub kind: String,
    pub name: String,
    pub digest: Digest,
    pub size: u64,
}

/// `GET /v1/projects/{project}/commits/{commit}/manifest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub commit: Commit,
    pub entries: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commits {
    pub commits: Vec<Commit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchGetRequest {
    pub digests: Vec<Digest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub digest: Digest,
    pub kind: String,
    pub name: String,
    pub spec: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchGetResponse {
    pub objects: Vec<Object>,
    pub missing: Vec<Digest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Change {
    Put {
        kind: String,
        name: String,
        spec: Value,
        /// Contract v1.2, git-origin commits only: the blob ID of the file sent, when it sits at
        /// the key's default path; recorded with the key's base.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        blob: Option<String>,
    },
    Delete {
        kind: String,
        name: String,
    },
}

impl Change {
    pub fn kind(&self) -> &str {
        match self {
            Change::Put { kind, .. } | Change::Delete { kind, .. } => kind,
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Change::Put { name, .. } | Change::Delete { name, .. } => name,
        }
    }
}

/// `POST /v1/projects/{project}/commits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateCommit {
    pub parent: Option<String>,
    pub message: String,
    pub origin: Origin,
    pub changes: Vec<Change>,
}

/// One entry of `PUT /sync`'s `base`: a `None` digest removes the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseUpdate {
    pub kind: String,
    pub name: String,
    pub digest: Option<Digest>,
    /// Contract v1.2: as in [`BaseEntry::blob`]; absent clears any blob the key had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
}

/// `PUT /v1/projects/{project}/sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutSync {
    pub repository: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub path: String,
    pub direction: Direction,
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub git_commit: Option<String>,
    #[serde(default)]
    pub replace_base: bool,
    #[serde(default)]
    pub base: Vec<BaseUpdate>,
}

/// `PUT /v1/projects/{project}` (an extension of `serve` for demos and tests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutProject {
    pub name: String,
}

/// `POST /v1/projects/{project}/runs` (contract v1.2, optional): what one run of `pull`, `push`
/// or `status` found, so the platform can show the conflicts of the last runs with both versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// `pull`, `push` or `status`.
    pub command: String,
    /// How the run ended: `ok`, `conflict`, `failed`, … (the client's own word, at most 64 bytes).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_url: Option<String>,
    /// The Git commit the run ended at (or started from, when it wrote nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// The platform commit the run ended at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_commit: Option<String>,
    #[serde(default)]
    pub conflicts: Vec<ReportedConflict>,
    /// Keys a conflict preference deferred: left as they are on both sides until a person decides.
    #[serde(default)]
    pub deferred: Vec<ReportedKey>,
}

/// A key both sides changed differently since their base, with each side's spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedConflict {
    pub kind: String,
    pub name: String,
    /// The spec in Git; `None`: deleted (absent) in Git.
    #[serde(default)]
    pub git: Option<Value>,
    /// The spec on the platform; `None`: deleted (absent) on the platform.
    #[serde(default)]
    pub platform: Option<Value>,
}

/// A key, `(kind, name)`, in a run report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedKey {
    pub kind: String,
    pub name: String,
}

/// An entity tag, echoed back byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(pub String);

impl ETag {
    pub fn none() -> Self {
        ETag("\"none\"".into())
    }
}

/// An error answer of the Sync API: `{"error": {"code", "message", ...}}` with its HTTP status.
///
/// The store returns these too, so the embedded store and `serve` fail in exactly the same way.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    /// Extra members of the error object (`head`, `details`, ...).
    /// Boxed: it is rare, and keeps every `Result<_, ApiError>` small.
    pub extra: Box<serde_json::Map<String, Value>>,
    /// Seconds to wait before a retry, from `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ApiError { status, code: code.into(), message: message.into(), extra: Default::default(), retry_after: None }
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    /// The JSON body of this error, as the contract specifies it.
    pub fn body(&self) -> Value {
        let mut obj = (*self.extra).clone();
        obj.insert("code".into(), Value::String(self.code.clone()));
        obj.insert("message".into(), Value::String(self.message.clone()));
        serde_json::json!({ "error": Value::Object(obj) })
    }

    /// Parses an error body; a body that is not of the contract's form is kept as the message.
    pub fn from_body(status: u16, body: &[u8]) -> Self {
        let parsed: Option<serde_json::Map<String, Value>> =
            serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("error").and_then(Value::as_object).cloned());
        match parsed {
            Some(mut obj) => {
                let code = match obj.remove("code") {
                    Some(Value::String(s)) => s,
                    _ => "unknown".into(),
                };
                let message = match obj.remove("message") {
                    Some(Value::String(s)) => s,
                    _ => String::new(),
                };
                ApiError { status, code, message, extra: Box::new(obj), retry_after: None }
            }
            None => {
                let text = String::from_utf8_lossy(body);
                let text: String = text.chars().take(500).collect();
                ApiError::new(status, "unknown", format!("unexpected answer: {text}"))
            }
        }
    }

    pub fn is(&self, code: &str) -> bool {
        self.code == code
    }
}
