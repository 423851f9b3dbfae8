//! The platform side of the contract on SQLite: used by `defsync serve` and, in-process, as the
//! embedded store. STUB: to be implemented.

use std::path::Path;

use crate::api::{ApiError, Base, BatchGetResponse, Commit, Commits, ETag, Manifest, Project, SyncRecord};

pub struct Store {}

type R<T> = std::result::Result<T, ApiError>;

impl Store {
    pub fn open(_path: &Path) -> anyhow::Result<Self> {
        unimplemented!()
    }
    /// Creates (`true`) or renames (`false`) a project.
    pub fn put_project(&self, _project: &str, _name: &str) -> R<(Project, bool)> {
        unimplemented!()
    }
    pub fn project(&self, _project: &str) -> R<(Project, ETag)> {
        unimplemented!()
    }
    pub fn base(&self, _project: &str) -> R<(Base, ETag)> {
        unimplemented!()
    }
    pub fn commits(&self, _project: &str, _after_seq: u64, _limit: u32) -> R<Commits> {
        unimplemented!()
    }
    pub fn commit(&self, _project: &str, _commit: &str) -> R<Commit> {
        unimplemented!()
    }
    pub fn manifest(&self, _project: &str, _commit: &str) -> R<Manifest> {
        unimplemented!()
    }
    /// `body` is the request body as sent, a `BatchGetRequest`.
    pub fn batch_get(&self, _project: &str, _body: &[u8]) -> R<BatchGetResponse> {
        unimplemented!()
    }
    /// `body` is the request body as sent (a `CreateCommit`): idempotency compares these bytes.
    pub fn create_commit(&self, _project: &str, _body: &[u8], _idempotency_key: Option<&str>) -> R<Commit> {
        unimplemented!()
    }
    /// `body` is a `PutSync`.
    pub fn put_sync(&self, _project: &str, _if_match: Option<&str>, _body: &[u8]) -> R<(SyncRecord, ETag)> {
        unimplemented!()
    }
}
