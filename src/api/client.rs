//! The Sync API client over HTTP (reqwest with rustls). STUB: to be implemented.

use std::time::Duration;

use crate::api::{Base, BatchGetResponse, Commit, Commits, ETag, Manifest, Project, SyncRecord};
use crate::digest::Digest;
use crate::platform::Result;

#[derive(Clone)]
pub struct ClientOptions {
    /// Sent as `Authorization: Bearer`; never printed.
    pub api_key: Option<String>,
    /// Allow plain `http://` to hosts other than loopback.
    pub allow_insecure_http: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// The longest a request may spend retrying, in total.
    pub max_retry_time: Duration,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("timeout", &self.timeout)
            .field("max_retry_time", &self.max_retry_time)
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            api_key: None,
            allow_insecure_http: false,
            timeout: Duration::from_secs(30),
            max_retry_time: Duration::from_secs(120),
        }
    }
}

pub struct HttpClient {}

impl HttpClient {
    pub fn new(_base_url: &str, _options: ClientOptions) -> anyhow::Result<Self> {
        unimplemented!()
    }
    pub fn requests(&self) -> u64 {
        unimplemented!()
    }
    pub async fn project(&self, _project: &str) -> Result<(Project, ETag)> {
        unimplemented!()
    }
    pub async fn put_project(&self, _project: &str, _name: &str) -> Result<(Project, bool)> {
        unimplemented!()
    }
    pub async fn base(&self, _project: &str) -> Result<(Base, ETag)> {
        unimplemented!()
    }
    pub async fn commits(&self, _project: &str, _after_seq: u64, _limit: u32) -> Result<Commits> {
        unimplemented!()
    }
    pub async fn commit(&self, _project: &str, _commit: &str) -> Result<Commit> {
        unimplemented!()
    }
    pub async fn manifest(&self, _project: &str, _commit: &str) -> Result<Manifest> {
        unimplemented!()
    }
    /// `digests` carries each digest with its manifest `size`, so batches respect both limits.
    pub async fn batch_get(&self, _project: &str, _digests: &[(Digest, u64)]) -> Result<BatchGetResponse> {
        unimplemented!()
    }
    pub async fn create_commit(&self, _project: &str, _body: Vec<u8>, _idempotency_key: &str) -> Result<Commit> {
        unimplemented!()
    }
    pub async fn put_sync(&self, _project: &str, _if_match: &ETag, _body: Vec<u8>) -> Result<(SyncRecord, ETag)> {
        unimplemented!()
    }
}
