//! The platform side of the contract (part 3): its rules, written once. `defsync serve` is a thin
//! HTTP layer over them, and runs open the SQLite store in-process as the embedded store, so
//! every front end gives the same answers.
//!
//! The rules run inside one transaction of a backend, through [`Tx`], the storage primitives
//! each backend supplies: SQLite (`sqlite.rs`, one file, the default) or PostgreSQL
//! (`postgres.rs`, several `serve` processes on one database). A write either happens whole or
//! not at all; where PostgreSQL aborts a transaction that raced another (serialization failure,
//! deadlock), the rules run again from the start.
//!
//! Request bodies arrive as the bytes that were sent, so validation and idempotency (which
//! compares bytes) are the same for both front ends.

mod chunks;
mod clock;
mod dashboard;
mod keys;
mod outbox;
mod postgres;
mod runs;
mod schema;
mod sqlite;
pub mod strict;

/// The schema version this build creates and migrates to.
pub use chunks::Chunks;
pub use schema::VERSION as SCHEMA_VERSION;
/// The strict JSON parser, for the fuzz targets (`crate::fuzzing`).
#[doc(hidden)]
pub use strict::parse as strict_parse;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::api::{
    ApiError, Base, BaseEntry, BatchGetRequest, BatchGetResponse, Change, Commit, Commits, CreateCommit, Direction,
    ETag, Manifest, ManifestEntry, Object, Origin, OriginType, Project, PutSync, SyncRecord,
};
use crate::digest::Digest;
use crate::model::{Definition, validate_kind, validate_name};

pub use dashboard::{ChangeOp, CommitChange, DefinitionRow, HistoryPage, ProjectSummary, SyncView};
pub use keys::{Access, KEY_PREFIX, KeyScope, NewKey, StoredKey};
pub use outbox::{
    ClaimedDispatch, DispatchFailure, DispatchState, NOT_STARTED_MESSAGE, OutboxEntry, RetryPolicy, RunStatus,
    SentDispatch,
};
pub use postgres::PostgresUrl;
pub use runs::{
    BranchPush, DELIVERY_TTL, Delivery, MAX_REPORTED_KEYS, MAX_RUN_REPORT_BYTES, MAX_RUN_REPORTS_KEPT, StoredRunReport,
};

/// At most this many digests in one batch-get.
pub const MAX_BATCH_DIGESTS: usize = 1000;
/// At most this many bytes of canonical forms in one batch-get answer.
pub const MAX_BATCH_BYTES: u64 = 16 * 1024 * 1024;
/// `limit` of the commit list when none is given.
pub const DEFAULT_COMMITS_LIMIT: u32 = 100;
/// The largest `limit` of the commit list; larger ones are clamped to it.
pub const MAX_COMMITS_LIMIT: u32 = 1000;
/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

type R<T> = std::result::Result<T, ApiError>;

/// Where the platform's state lives: `--store` of `defsync serve`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite file, created with its folders if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL database, from a `postgres://` or `postgresql://` URL.
    Postgres(PostgresUrl),
}

impl StoreLocation {
    /// A `postgres://` or `postgresql://` URL is PostgreSQL; anything else is a SQLite path.
    pub fn parse(s: &str) -> Result<Self, String> {
        if postgres::is_postgres_url(s) {
            PostgresUrl::parse(s).map(StoreLocation::Postgres)
        } else if s.trim().is_empty() {
            Err("the store is empty: give a SQLite file path or a postgres:// URL".into())
        } else {
            Ok(StoreLocation::Sqlite(PathBuf::from(s)))
        }
    }
}

impl std::str::FromStr for StoreLocation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        StoreLocation::parse(s)
    }
}

/// A PostgreSQL URL shows without its password.
impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "{}", path.display()),
            StoreLocation::Postgres(url) => write!(f, "{url}"),
        }
    }
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// The platform's state, in a SQLite file or a PostgreSQL database. Cheap to share: it is
/// `Sync`; SQLite callers take turns on its one connection, PostgreSQL ones take a connection
/// from a pool.
pub struct Store {
    backend: Backend,
    /// Whether commits whose origin is not `git` queue a dispatch of the pull workflow (see
    /// [`Store::set_dispatch_outbox`]).
    outbox: AtomicBool,
}

enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        };
        f.debug_struct("Store").field("backend", &backend).finish_non_exhaustive()
    }
}

/// Whether a transaction only reads (one consistent snapshot) or writes (the rows it reads
/// before writing stay as read until it ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxKind {
    Read,
    Write,
}

/// A key: `(kind, name)`.
pub(crate) type Key<'a> = (&'a str, &'a str);
/// `(kind, name, from_seq, to_seq)` of an entry.
pub(crate) type TouchedEntry = (String, String, i64, Option<i64>);
/// A put of a commit: its key and its definition.
pub(crate) type Put<'a> = (&'a str, &'a str, &'a PreparedPut);
/// A key's new base: its digest, and the blob ID that proves it (contract v1.2), if any.
pub(crate) type BaseSet<'a> = (Key<'a>, String, Option<&'a str>);

/// The storage primitives the rules use, inside one transaction of a backend. In a write
/// transaction, [`Tx::project`] locks the project's row, so two writes to one project (from
/// any process) take turns and each sees the other's result.
pub(crate) trait Tx {
    fn schema_version(&mut self) -> R<i64>;

    fn project(&mut self, id: &str) -> R<Option<ProjectRow>>;
    /// Every project, by ID (the dashboard's list).
    fn projects(&mut self) -> R<Vec<ProjectRow>>;
    /// Creates the project (`true`) or renames it (`false`).
    fn upsert_project(&mut self, id: &str, name: &str, created_at: &str) -> R<bool>;
    fn set_head(&mut self, pid: i64, seq: i64) -> R<()>;

    fn commit_by_seq(&mut self, pid: i64, seq: i64) -> R<Option<Commit>>;
    fn commit_by_id(&mut self, pid: i64, id: &str) -> R<Option<Commit>>;
    fn commits_after(&mut self, pid: i64, after_seq: i64, limit: u32) -> R<Vec<Commit>>;
    /// `origin` is the commit's origin as JSON.
    fn insert_commit(&mut self, pid: i64, commit: &Commit, origin: &str) -> R<()>;

    /// The live digest of each key at the head, in the order of `keys`. The primitives on keys
    /// take a whole commit's keys at once, so a commit of 10,000 changes costs a few
    /// statements, not 40,000 round trips to a database server.
    fn live_digests(&mut self, pid: i64, keys: &[Key<'_>]) -> R<Vec<Option<String>>>;
    /// Ends the live version of each key at `seq`.
    fn close_entries(&mut self, pid: i64, keys: &[Key<'_>], seq: i64) -> R<()>;
    /// Opens each key's new version at `seq`, and keeps its definition (one stored already
    /// stays as it is).
    fn open_entries(&mut self, pid: i64, puts: &[Put<'_>], seq: i64) -> R<()>;
    /// Hands each entry of the manifest at `seq` to `each`, in manifest order; `None`: the
    /// head's. No list of 100,000 entries is built where each is written out at once.
    fn manifest_each(&mut self, pid: i64, seq: Option<i64>, each: &mut dyn FnMut(ManifestEntry) -> R<()>) -> R<()>;
    /// The manifest at `seq`, in manifest order; `None`: the head's.
    fn manifest(&mut self, pid: i64, seq: Option<i64>) -> R<Vec<ManifestEntry>> {
        let mut out = Vec::new();
        self.manifest_each(pid, seq, &mut |e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }
    /// `(kind, name, from_seq)` of each live entry: the seq of the commit that last changed it.
    fn live_since(&mut self, pid: i64) -> R<Vec<(String, String, i64)>>;
    /// `(kind, name, from_seq, to_seq)` of every entry opened or closed by a commit with a seq
    /// in `lo..=hi`: the changes of those commits.
    fn entries_touched(&mut self, pid: i64, lo: i64, hi: i64) -> R<Vec<TouchedEntry>>;
    /// `(kind, name, spec as sent, size)` of a stored definition.
    fn object(&mut self, pid: i64, digest: &str) -> R<Option<(String, String, String, i64)>>;

    fn record(&mut self, pid: i64) -> R<Option<RecordRow>>;
    fn put_record(&mut self, pid: i64, record: &RecordRow) -> R<()>;
    /// A git commit moved the record to `commit` (never back in `seq`), with a new tag.
    fn record_git_commit(&mut self, pid: i64, commit: &Commit) -> R<()>;
    /// Hands each base entry to `each`, in manifest order.
    fn base_each(&mut self, pid: i64, each: &mut dyn FnMut(BaseEntry) -> R<()>) -> R<()>;
    fn base(&mut self, pid: i64) -> R<Vec<BaseEntry>> {
        let mut out = Vec::new();
        self.base_each(pid, &mut |e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }
    /// Sets each key's base digest and blob (contract v1.2), replacing any blob it had: a blob
    /// proves only the digest it was recorded with.
    fn base_set(&mut self, pid: i64, entries: &[BaseSet<'_>]) -> R<()>;
    fn base_remove(&mut self, pid: i64, keys: &[Key<'_>]) -> R<()>;
    fn base_clear(&mut self, pid: i64) -> R<()>;

    /// `(body_sha256, commit_seq, created_unix)` of an idempotency key.
    fn idempotency(&mut self, pid: i64, key: &str) -> R<Option<(Vec<u8>, i64, i64)>>;
    fn put_idempotency(&mut self, pid: i64, key: &str, body_sha256: &[u8], seq: i64, now_unix: i64) -> R<()>;
    fn expire_idempotency(&mut self, before_unix: i64) -> R<()>;

    /// The new row's ID.
    fn enqueue_dispatch(&mut self, pid: i64, commit: &Commit, now_ms: i64) -> R<i64>;
    /// For each project, its newest pending row due at `now_ms` (highest seq, then newest),
    /// locked against other claimers (which skip it): `(id, pid, project, seq, commit_id,
    /// attempts)`.
    fn due_dispatches(&mut self, now_ms: i64) -> R<Vec<outbox::DueRow>>;
    /// Marks the project's other pending rows up to `seq` coalesced into `into` (row `id`'s
    /// commit); their commits.
    fn coalesce_dispatches(&mut self, pid: i64, id: i64, seq: i64, done_at: &str, into: &str) -> R<Vec<String>>;
    fn schedule_dispatch(&mut self, id: i64, attempts: u32, next_attempt_ms: i64) -> R<()>;
    fn dispatch_attempts(&mut self, id: i64) -> R<Option<i64>>;
    /// Whether the row exists. `sent_ms` starts the not-started clock.
    fn dispatch_done(&mut self, id: i64, done_at: &str, sent_ms: i64, sent: &outbox::SentDispatch<'_>) -> R<bool>;
    fn dispatch_failed(&mut self, id: i64, error: &str, done_at: &str) -> R<()>;
    fn dispatch_retry(&mut self, id: i64, error: &str, next_attempt_ms: i64) -> R<()>;
    fn outbox(&mut self, project: Option<&str>) -> R<Vec<OutboxEntry>>;
    fn outbox_counts(&mut self) -> R<Vec<(String, i64)>>;
    fn outbox_row(&mut self, id: i64) -> R<Option<OutboxEntry>>;
    /// The rows sent to `forge` and `target` (without case) that started run `run_id`.
    fn outbox_by_run(&mut self, forge: &str, target: &str, run_id: i64) -> R<Vec<OutboxEntry>>;
    fn set_run_status(
        &mut self,
        id: i64,
        status: RunStatus,
        conclusion: Option<&str>,
        run_url: Option<&str>,
        at: &str,
    ) -> R<()>;
    fn set_dispatch_error(&mut self, id: i64, error: &str) -> R<()>;
    /// Sets `run_id` on the newest `done` row of `commit_id` sent to `forge`/`target` without
    /// one; its ID.
    fn attach_run(&mut self, forge: &str, target: &str, commit_id: &str, run_id: i64) -> R<Option<i64>>;
    /// `done` rows sent before `sent_before_ms` with no run and no run status.
    fn awaiting_run(&mut self, sent_before_ms: i64) -> R<Vec<i64>>;
    /// The project's pending row for `seq`, if any.
    fn pending_dispatch(&mut self, pid: i64, seq: i64) -> R<Option<i64>>;
    /// Back to `pending`, due at `now_ms`, no attempt made.
    fn reset_dispatch(&mut self, id: i64, now_ms: i64) -> R<()>;
    /// Whether any row was sent to `forge` and `target` (without case).
    fn dispatched_to(&mut self, forge: &str, target: &str) -> R<bool>;

    /// Whether it was recorded: `false` for a delivery ID seen before (and not expired).
    fn insert_delivery(&mut self, d: &Delivery, expires_ms: i64) -> R<bool>;
    fn expire_deliveries(&mut self, now_ms: i64) -> R<()>;
    /// Deliveries recorded and not processed, oldest first.
    fn unprocessed_deliveries(&mut self) -> R<Vec<Delivery>>;
    /// Drops the body, keeps the ID until it expires.
    fn delivery_processed(&mut self, forge: &str, delivery_id: &str, at: &str) -> R<()>;
    fn put_branch_push(&mut self, push: &BranchPush) -> R<()>;
    /// The last push seen on each branch of `repository` (without case) on `forge`.
    fn branch_pushes(&mut self, forge: &str, repository: &str) -> R<Vec<BranchPush>>;
    fn insert_run_report(&mut self, pid: i64, row: &runs::ReportRow) -> R<i64>;
    /// Deletes the project's reports but the newest `keep`.
    fn trim_run_reports(&mut self, pid: i64, keep: i64) -> R<()>;
    /// The project's newest `limit` reports, newest first.
    fn run_reports(&mut self, pid: i64, limit: i64) -> R<Vec<runs::ReportRow>>;

    /// Whether it was inserted: `false` when the name is taken.
    fn insert_key(&mut self, key: &keys::KeyRow) -> R<bool>;
    fn key_by_name(&mut self, name: &str) -> R<Option<StoredKey>>;
    fn key_by_hash(&mut self, hash: &str) -> R<Option<StoredKey>>;
    fn keys(&mut self) -> R<Vec<StoredKey>>;
    fn revoke_key(&mut self, name: &str, at: &str) -> R<()>;
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(422, "invalid", message)
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::new(404, "not_found", message)
}

fn internal(message: impl Into<String>) -> ApiError {
    ApiError::new(500, "internal", message)
}

/// One problem with one key of a request, for the `details` of a 422 `invalid`.
#[derive(Clone)]
struct Detail {
    kind: String,
    name: String,
    message: String,
}

fn invalid_details(what: &str, details: Vec<Detail>) -> ApiError {
    let n = details.len();
    let first = details.first().map(|d| format!(": {}/{:?}: {}", d.kind, d.name, d.message)).unwrap_or_default();
    let more = if n > 1 { format!(" (and {} more, in details)", n - 1) } else { String::new() };
    let list: Vec<Value> =
        details.into_iter().map(|d| json!({"kind": d.kind, "name": d.name, "message": d.message})).collect();
    invalid(format!("{what}: {n} problem{}{first}{more}", if n == 1 { "" } else { "s" }))
        .with("details", Value::Array(list))
}

/// Project IDs appear in URL paths and file names, so they are kept to a portable alphabet.
pub fn validate_project_id(id: &str) -> Result<(), String> {
    let ok = (1..=100).contains(&id.len())
        && id != "."
        && id != ".."
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("project ID {id:?} is not valid: use 1 to 100 characters among A-Z, a-z, 0-9, '.', '_' and '-'"))
    }
}

pub(crate) struct ProjectRow {
    pid: i64,
    id: String,
    name: String,
    head_seq: i64,
}

pub(crate) struct RecordRow {
    record: SyncRecord,
    salt: String,
    version: i64,
}

impl RecordRow {
    fn etag(&self) -> ETag {
        ETag(format!("\"{}.{}\"", self.salt, self.version))
    }
}

fn etag_of(record: Option<&RecordRow>) -> ETag {
    record.map_or_else(ETag::none, RecordRow::etag)
}

fn project_row(tx: &mut dyn Tx, project: &str) -> R<ProjectRow> {
    tx.project(project)?.ok_or_else(|| not_found(format!("no project {project:?} on this platform")))
}

fn stored(what: &str, e: impl std::fmt::Display) -> ApiError {
    internal(format!("the store holds a bad {what}: {e}"))
}

fn parse_digest(s: &str) -> R<Digest> {
    Digest::parse(s).map_err(|e| stored("digest", e))
}

fn parse_direction(s: &str) -> R<Direction> {
    serde_json::from_value(Value::String(s.to_owned())).map_err(|e| stored("direction", e))
}

/// A commit from its stored columns; `origin` is JSON.
fn commit_of(
    id: String,
    seq: i64,
    parent: Option<String>,
    created_at: String,
    message: String,
    origin: &str,
) -> R<Commit> {
    Ok(Commit {
        id,
        seq: seq as u64,
        parent,
        created_at,
        message,
        origin: serde_json::from_str(origin).map_err(|e| stored("commit origin", e))?,
    })
}

fn head(tx: &mut dyn Tx, p: &ProjectRow) -> R<Option<Commit>> {
    if p.head_seq == 0 {
        return Ok(None);
    }
    tx.commit_by_seq(p.pid, p.head_seq)?.map(Some).ok_or_else(|| internal("the head commit is missing from the store"))
}

/// A change of a commit request, checked and hashed before the write lock is taken.
pub(crate) struct Prepared {
    kind: String,
    name: String,
    /// `None` for a delete.
    put: Option<PreparedPut>,
    /// False when the key broke a rule of part 1 (already in the details).
    valid: bool,
}

pub(crate) struct PreparedPut {
    digest: Digest,
    size: i64,
    /// The spec as sent (key order kept).
    spec_json: String,
    /// Contract v1.2: the blob ID a git-origin commit recorded for the key's base.
    blob: Option<String>,
}

/// Checks every change against part 1 and against the others; returns them with the problems.
fn prepare_changes(changes: Vec<Change>) -> (Vec<Prepared>, Vec<Detail>) {
    let mut details = Vec::new();
    let mut seen = HashSet::with_capacity(changes.len());
    let mut prepared = Vec::with_capacity(changes.len());
    for change in changes {
        let (kind, name, put, mut valid) = match change {
            Change::Put { kind, name, spec, blob } => {
                let def = Definition { kind, name, spec };
                let blob_ok = blob.as_deref().is_none_or(is_blob_id);
                match def.validate() {
                    Ok(_) if !blob_ok => {
                        details.push(Detail {
                            kind: def.kind.clone(),
                            name: def.name.clone(),
                            message: BAD_BLOB.into(),
                        });
                        (def.kind, def.name, None, false)
                    }
                    Ok(canonical) => {
                        let put = PreparedPut {
                            digest: Digest::of_canonical(&canonical),
                            size: canonical.len() as i64,
                            spec_json: serde_json::to_string(&def.spec).unwrap_or_default(),
                            blob,
                        };
                        (def.kind, def.name, Some(put), true)
                    }
                    Err(message) => {
                        details.push(Detail { kind: def.kind.clone(), name: def.name.clone(), message });
                        (def.kind, def.name, None, false)
                    }
                }
            }
            Change::Delete { kind, name } => match validate_kind(&kind).and_then(|()| validate_name(&name)) {
                Ok(()) => (kind, name, None, true),
                Err(message) => {
                    details.push(Detail { kind: kind.clone(), name: name.clone(), message });
                    (kind, name, None, false)
                }
            },
        };
        if !seen.insert((kind.clone(), name.clone())) {
            details.push(Detail {
                kind: kind.clone(),
                name: name.clone(),
                message: "the key appears more than once in the changes; send each key at most once".into(),
            });
            valid = false;
        }
        prepared.push(Prepared { kind, name, put, valid });
    }
    (prepared, details)
}

const BAD_BLOB: &str = "blob must be a Git blob ID: 40 or 64 lowercase hexadecimal digits";

/// A Git object ID as contract v1.2 allows for `blob`: SHA-1 or SHA-256, lowercase hex.
fn is_blob_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn non_empty(field: &str, value: Option<&str>) -> R<()> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(()),
        _ => Err(invalid(format!("{field} must be a non-empty string"))),
    }
}

fn validate_origin(origin: &Origin) -> R<()> {
    if origin.kind == OriginType::Git {
        non_empty("origin.repository", origin.repository.as_deref())?;
        non_empty("origin.ref", origin.git_ref.as_deref())?;
        non_empty("origin.path", origin.path.as_deref())?;
    }
    Ok(())
}

fn link_text(repository: &str, git_ref: &str, path: &str) -> String {
    format!("repository {repository:?}, ref {git_ref:?}, path {path:?}")
}

impl Store {
    /// Opens (creating it, and its parent folders, if needed) the SQLite store at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Store::with(Backend::Sqlite(sqlite::Sqlite::open(path)?)))
    }

    /// Opens the store at `location`, migrating its schema if needed.
    pub fn open_location(location: &StoreLocation) -> anyhow::Result<Self> {
        match location {
            StoreLocation::Sqlite(path) => Store::open(path),
            StoreLocation::Postgres(url) => Ok(Store::with(Backend::Postgres(postgres::Postgres::open(url)?))),
        }
    }

    fn with(backend: Backend) -> Self {
        Store { backend, outbox: AtomicBool::new(false) }
    }

    /// Runs `f` in one transaction, committed when it returns `Ok`. It may run more than once:
    /// PostgreSQL aborts a transaction that raced another, and it is then run again.
    fn transaction<T>(&self, kind: TxKind, mut f: impl FnMut(&mut dyn Tx) -> R<T>) -> R<T> {
        match &self.backend {
            Backend::Sqlite(b) => b.transaction(kind, &mut f),
            Backend::Postgres(b) => b.transaction(kind, &mut f),
        }
    }

    fn read<T>(&self, f: impl FnMut(&mut dyn Tx) -> R<T>) -> R<T> {
        self.transaction(TxKind::Read, f)
    }

    fn write<T>(&self, f: impl FnMut(&mut dyn Tx) -> R<T>) -> R<T> {
        self.transaction(TxKind::Write, f)
    }

    /// Runs `sql` outside the rules, for tests that age or inspect rows.
    #[cfg(test)]
    pub(crate) fn execute_for_test(&self, sql: &str) {
        match &self.backend {
            Backend::Sqlite(b) => b.execute_for_test(sql),
            Backend::Postgres(b) => b.execute_for_test(sql),
        }
    }

    /// Whether the store answers: a read of the schema version, for `GET /healthz`.
    pub fn ping(&self) -> R<()> {
        self.read(|tx| tx.schema_version()).map(drop)
    }

    /// Creates (`true`) or renames (`false`) a project.
    pub fn put_project(&self, project: &str, name: &str) -> R<(Project, bool)> {
        validate_project_id(project).map_err(invalid)?;
        if name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err(invalid("a project name has at most 200 characters and no control characters"));
        }
        self.write(|tx| {
            let created = tx.upsert_project(project, name, &clock::now_rfc3339())?;
            let (p, _) = read_project(tx, project)?;
            Ok((p, created))
        })
    }

    /// The project, its head and record, and the record's entity tag.
    pub fn project(&self, project: &str) -> R<(Project, ETag)> {
        // One read transaction: the head, record and tag come from the same snapshot.
        self.read(|tx| read_project(tx, project))
    }

    /// The base, sorted like a manifest, with the record's entity tag.
    pub fn base(&self, project: &str) -> R<(Base, ETag)> {
        self.read(|tx| {
            let p = project_row(tx, project)?;
            let record = tx.record(p.pid)?;
            let entries = tx.base(p.pid)?;
            Ok((Base { entries }, etag_of(record.as_ref())))
        })
    }

    /// Commits after `after_seq`, ascending. `limit` 0 means the default (100); above 1000 it is
    /// clamped to 1000.
    pub fn commits(&self, project: &str, after_seq: u64, limit: u32) -> R<Commits> {
        let limit = match limit {
            0 => DEFAULT_COMMITS_LIMIT,
            n => n.min(MAX_COMMITS_LIMIT),
        };
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        self.read(|tx| {
            let p = project_row(tx, project)?;
            Ok(Commits { commits: tx.commits_after(p.pid, after, limit)? })
        })
    }

    pub fn commit(&self, project: &str, commit: &str) -> R<Commit> {
        self.read(|tx| {
            let p = project_row(tx, project)?;
            tx.commit_by_id(p.pid, commit)?.ok_or_else(|| unknown_commit(project, commit))
        })
    }

    /// The manifest of a commit, sorted by kind then name (UTF-8 bytes).
    pub fn manifest(&self, project: &str, commit: &str) -> R<Manifest> {
        self.read(|tx| {
            let p = project_row(tx, project)?;
            let c = tx.commit_by_id(p.pid, commit)?.ok_or_else(|| unknown_commit(project, commit))?;
            let seq = c.seq as i64;
            // The head's manifest is the live rows, which an index gives in order.
            let entries = tx.manifest(p.pid, (seq != p.head_seq).then_some(seq))?;
            Ok(Manifest { commit: c, entries })
        })
    }

    /// `body` is the request body as sent, a `BatchGetRequest`. At most 1000 digests, and at
    /// most 16 MiB of canonical forms: a larger answer is 422 `invalid` (the request is not too
    /// large, the answer would be), so the client splits its batches by the manifest's sizes.
    pub fn batch_get(&self, project: &str, body: &[u8]) -> R<BatchGetResponse> {
        let (objects, missing) = self.batch_get_each(project, body, Vec::new, |objects, o| {
            objects.push(o);
            Ok(())
        })?;
        Ok(BatchGetResponse { objects, missing })
    }

    /// [`Store::batch_get`]'s answer as JSON, byte for byte what serialising it gives, written
    /// one object at a time: only one spec is a parsed value at once, not up to 16 MiB of them.
    pub fn batch_get_json(&self, project: &str, body: &[u8]) -> R<Vec<u8>> {
        let start = || b"{\"objects\":[".to_vec();
        let (mut out, missing) = self.batch_get_each(project, body, start, |out, o| {
            if out.last() != Some(&b'[') {
                out.push(b',');
            }
            serde_json::to_writer(&mut *out, &o).map_err(|e| internal(e.to_string()))
        })?;
        out.extend_from_slice(b"],\"missing\":");
        serde_json::to_writer(&mut out, &missing).map_err(|e| internal(e.to_string()))?;
        out.push(b'}');
        Ok(out)
    }

    /// The head's or an older commit's manifest as JSON, byte for byte what serialising
    /// [`Store::manifest`] gives, written entry by entry into [`Chunks`]: the answer costs its
    /// own bytes, and no list of its entries is built.
    pub fn manifest_json(&self, project: &str, commit: &str) -> R<Chunks> {
        self.read(|tx| {
            let p = project_row(tx, project)?;
            let c = tx.commit_by_id(p.pid, commit)?.ok_or_else(|| unknown_commit(project, commit))?;
            let seq = c.seq as i64;
            let mut out = Chunks::default();
            out.extend(b"{\"commit\":");
            serde_json::to_writer(&mut out, &c).map_err(|e| internal(e.to_string()))?;
            out.extend(b",\"entries\":[");
            let mut first = true;
            tx.manifest_each(p.pid, (seq != p.head_seq).then_some(seq), &mut |e| {
                if !std::mem::take(&mut first) {
                    out.extend(b",");
                }
                serde_json::to_writer(&mut out, &e).map_err(|e| internal(e.to_string()))
            })?;
            out.extend(b"]}");
            Ok(out)
        })
    }

    /// [`Store::base`] as JSON, written like [`Store::manifest_json`].
    pub fn base_json(&self, project: &str) -> R<(Chunks, ETag)> {
        self.read(|tx| {
            let p = project_row(tx, project)?;
            let record = tx.record(p.pid)?;
            let mut out = Chunks::default();
            out.extend(b"{\"entries\":[");
            let mut first = true;
            tx.base_each(p.pid, &mut |e| {
                if !std::mem::take(&mut first) {
                    out.extend(b",");
                }
                serde_json::to_writer(&mut out, &e).map_err(|e| internal(e.to_string()))
            })?;
            out.extend(b"]}");
            Ok((out, etag_of(record.as_ref())))
        })
    }

    /// Checks a batch-get request and hands each object found to `found` with the accumulator
    /// `start` made, in the order asked (once each); returns it and the digests not found. A
    /// transaction run again after a race starts again from a new accumulator.
    fn batch_get_each<A>(
        &self,
        project: &str,
        body: &[u8],
        start: impl Fn() -> A,
        mut found: impl FnMut(&mut A, Object) -> R<()>,
    ) -> R<(A, Vec<Digest>)> {
        self.project_exists(project)?;
        let req: BatchGetRequest = strict::parse_typed(body).map_err(invalid)?;
        if req.digests.len() > MAX_BATCH_DIGESTS {
            return Err(invalid(format!(
                "{} digests were asked for; at most {MAX_BATCH_DIGESTS} are allowed in one batch",
                req.digests.len()
            )));
        }
        self.read(|tx| {
            let p = project_row(tx, project)?;
            let mut seen = HashSet::with_capacity(req.digests.len());
            let mut acc = start();
            let mut missing = Vec::new();
            let mut total: u64 = 0;
            for digest in &req.digests {
                if !seen.insert(digest.clone()) {
                    continue;
                }
                let Some((kind, name, spec, size)) = tx.object(p.pid, &digest.to_string())? else {
                    missing.push(digest.clone());
                    continue;
                };
                total += size as u64;
                if total > MAX_BATCH_BYTES {
                    return Err(invalid(format!(
                        "the objects asked for are over {MAX_BATCH_BYTES} bytes of canonical forms; ask for fewer at a time"
                    )));
                }
                let spec: Value =
                    serde_json::from_str(&spec).map_err(|e| internal(format!("stored spec of {digest}: {e}")))?;
                found(&mut acc, Object { digest: digest.clone(), kind, name, spec })?;
            }
            Ok((acc, missing))
        })
    }

    fn project_exists(&self, project: &str) -> R<()> {
        self.read(|tx| project_row(tx, project).map(drop))
    }

    /// `body` is the request body as sent (a `CreateCommit`): idempotency compares these bytes.
    pub fn create_commit(&self, project: &str, body: &[u8], idempotency_key: Option<&str>) -> R<Commit> {
        if let Some(key) = idempotency_key
            && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || key.chars().any(char::is_control))
        {
            return Err(invalid(format!(
                "the Idempotency-Key must have 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes and no control characters"
            )));
        }
        // An unknown project is 404 whatever the body holds.
        self.project_exists(project)?;
        // Parsing, validating and hashing are the costly part of a large commit: do them before
        // taking the lock, so other requests are not held up.
        let req: CreateCommit = strict::parse(body).map_err(invalid)?;
        validate_origin(&req.origin)?;
        let CreateCommit { parent, message, origin, changes } = req;
        let (prepared, details) = prepare_changes(changes);
        let body_sha256 = Sha256::digest(body).to_vec();
        let now_unix = clock::unix_now();
        let outbox = self.outbox.load(Ordering::Relaxed);
        let commit_id = clock::new_commit_id();
        self.write(|tx| {
            let mut details = details.clone();
            // Locks the project's row: the checks below hold until the commit is written.
            let p = project_row(tx, project)?;

            if let Some(key) = idempotency_key
                && let Some((sha, seq, created)) = tx.idempotency(p.pid, key)?
                && now_unix - created < IDEMPOTENCY_TTL.as_secs() as i64
            {
                if sha != body_sha256 {
                    return Err(ApiError::new(
                        422,
                        "idempotency_key_reused",
                        "this Idempotency-Key was used for another request body; use a new key for each planned commit",
                    ));
                }
                // The same request again: the first answer, and nothing written.
                return tx
                    .commit_by_seq(p.pid, seq)?
                    .ok_or_else(|| internal("the commit of an idempotency key is missing"));
            }

            let head = head(tx, &p)?;
            let record = tx.record(p.pid)?;
            if origin.kind == OriginType::Git {
                check_link(project, &origin, record.as_ref())?;
            }
            if parent.as_deref() != head.as_ref().map(|c| c.id.as_str()) {
                let message = match (&parent, &head) {
                    (_, Some(h)) => format!("the head moved: it is {} (seq {}), not the parent sent", h.id, h.seq),
                    (Some(_), None) => "the head moved: the project has no commit yet, so parent must be null".into(),
                    (None, None) => unreachable!("equal parents"),
                };
                return Err(ApiError::new(409, "head_moved", message)
                    .with("head", serde_json::to_value(&head).unwrap_or(Value::Null)));
            }

            // Which changes change something, and deletes of keys that do not exist.
            let valid: Vec<&Prepared> = prepared.iter().filter(|c| c.valid).collect();
            let keys: Vec<Key<'_>> = valid.iter().map(|c| (c.kind.as_str(), c.name.as_str())).collect();
            let current = tx.live_digests(p.pid, &keys)?;
            let mut effective = Vec::with_capacity(valid.len());
            for (change, current) in valid.into_iter().zip(current) {
                match (&change.put, current) {
                    (None, None) => details.push(Detail {
                        kind: change.kind.clone(),
                        name: change.name.clone(),
                        message: "cannot delete it: the key does not exist at the head".into(),
                    }),
                    (None, Some(_)) => effective.push(change),
                    (Some(put), current) if current.as_deref() == Some(put.digest.to_string().as_str()) => {}
                    (Some(_), _) => effective.push(change),
                }
            }
            if !details.is_empty() {
                return Err(invalid_details("the commit is invalid", details));
            }
            if effective.is_empty() {
                return Err(ApiError::new(
                    422,
                    "empty_commit",
                    "the changes would change nothing: every put equals the head's definition",
                ));
            }

            let seq = p.head_seq + 1;
            let commit = Commit {
                id: commit_id.clone(),
                seq: seq as u64,
                parent: parent.clone(),
                created_at: clock::rfc3339(now_unix),
                message: message.clone(),
                origin: origin.clone(),
            };
            let origin_json = serde_json::to_string(&commit.origin).map_err(|e| internal(e.to_string()))?;
            tx.insert_commit(p.pid, &commit, &origin_json)?;
            let keys: Vec<Key<'_>> = effective.iter().map(|c| (c.kind.as_str(), c.name.as_str())).collect();
            tx.close_entries(p.pid, &keys, seq)?;
            let puts: Vec<Put<'_>> =
                effective.iter().filter_map(|c| Some((c.kind.as_str(), c.name.as_str(), c.put.as_ref()?))).collect();
            tx.open_entries(p.pid, &puts, seq)?;
            tx.set_head(p.pid, seq)?;
            if commit.origin.kind != OriginType::Git && outbox {
                // In the commit's own transaction: a commit acknowledged to the dashboard always
                // has its dispatch queued, whenever the process dies. A replay returned earlier.
                tx.enqueue_dispatch(p.pid, &commit, outbox::now_ms())?;
            }

            if commit.origin.kind == OriginType::Git {
                // The keys of a git commit now agree between the branch and the platform.
                tx.record_git_commit(p.pid, &commit)?;
                let (set, removed): (Vec<&Prepared>, Vec<&Prepared>) = prepared.iter().partition(|c| c.put.is_some());
                let set: Vec<BaseSet<'_>> = set
                    .iter()
                    .filter_map(|c| {
                        let put = c.put.as_ref()?;
                        Some(((c.kind.as_str(), c.name.as_str()), put.digest.to_string(), put.blob.as_deref()))
                    })
                    .collect();
                let removed: Vec<Key<'_>> = removed.iter().map(|c| (c.kind.as_str(), c.name.as_str())).collect();
                tx.base_set(p.pid, &set)?;
                tx.base_remove(p.pid, &removed)?;
            }

            if let Some(key) = idempotency_key {
                tx.put_idempotency(p.pid, key, &body_sha256, seq, now_unix)?;
            }
            // Forget expired keys as we go, so the table stays as small as a day of commits.
            tx.expire_idempotency(now_unix - IDEMPOTENCY_TTL.as_secs() as i64)?;
            Ok(commit)
        })
    }

    /// `body` is a `PutSync`; `if_match` the `If-Match` header, which must be the current tag.
    pub fn put_sync(&self, project: &str, if_match: Option<&str>, body: &[u8]) -> R<(SyncRecord, ETag)> {
        self.project_exists(project)?;
        let Some(if_match) = if_match else {
            return Err(ApiError::new(
                412,
                "precondition_failed",
                "If-Match is required: send the ETag of the project as read (\"none\" when it has no record)",
            ));
        };
        let req: PutSync = strict::parse_typed(body).map_err(invalid)?;
        non_empty("repository", Some(&req.repository))?;
        non_empty("ref", Some(&req.git_ref))?;
        non_empty("path", Some(&req.path))?;
        if let Some(commit) = &req.commit
            && commit.is_empty()
        {
            return Err(invalid("commit must be a commit ID or null"));
        }
        let mut details = Vec::new();
        let mut seen = HashSet::with_capacity(req.base.len());
        for u in &req.base {
            if let Err(message) = validate_kind(&u.kind).and_then(|()| validate_name(&u.name)) {
                details.push(Detail { kind: u.kind.clone(), name: u.name.clone(), message });
            } else if u.blob.as_deref().is_some_and(|b| !is_blob_id(b)) {
                details.push(Detail { kind: u.kind.clone(), name: u.name.clone(), message: BAD_BLOB.into() });
            } else if !seen.insert((u.kind.as_str(), u.name.as_str())) {
                details.push(Detail {
                    kind: u.kind.clone(),
                    name: u.name.clone(),
                    message: "the key appears more than once in base".into(),
                });
            }
        }
        let new_salt = clock::new_salt();

        self.write(|tx| {
            // Locks the project's row: the tag compared below is the one replaced.
            let p = project_row(tx, project)?;
            let current = tx.record(p.pid)?;
            let etag = etag_of(current.as_ref());
            if if_match != etag.0 {
                return Err(ApiError::new(
                    412,
                    "precondition_failed",
                    "the sync record or base changed since it was read (stale If-Match): read them again and re-plan",
                ));
            }
            let record_seq = current.as_ref().map_or(0, |r| r.record.seq);
            let (commit_id, seq) = match &req.commit {
                Some(id) => {
                    let c = tx.commit_by_id(p.pid, id)?.ok_or_else(|| unknown_commit(project, id))?;
                    if c.seq < record_seq {
                        return Err(ApiError::new(
                            409,
                            "sync_regression",
                            format!(
                                "commit {id} has seq {}, lower than the record's seq {record_seq}: the record never goes back",
                                c.seq
                            ),
                        ));
                    }
                    (Some(c.id), c.seq)
                }
                None => (current.as_ref().and_then(|r| r.record.commit.clone()), record_seq),
            };
            // Contract v1.1: a base digest need not be an object of the project. A push that
            // defers to the platform records Git's version, which the platform never saw.
            if !details.is_empty() {
                return Err(invalid_details("the base is invalid", details.clone()));
            }

            // A Git commit belongs to the link it was made on: moving the link forgets it.
            let git_commit = req.git_commit.clone().or_else(|| {
                current
                    .as_ref()
                    .filter(|r| r.record.repository == req.repository && r.record.git_ref == req.git_ref)
                    .and_then(|r| r.record.git_commit.clone())
            });
            let record = SyncRecord {
                repository: req.repository.clone(),
                git_ref: req.git_ref.clone(),
                path: req.path.clone(),
                direction: req.direction,
                commit: commit_id,
                seq: seq.max(record_seq),
                git_commit,
                updated_at: clock::now_rfc3339(),
            };
            let (salt, version) = match &current {
                Some(r) => (r.salt.clone(), r.version + 1),
                None => (new_salt.clone(), 1),
            };
            let row = RecordRow { record, salt, version };
            tx.put_record(p.pid, &row)?;
            if req.replace_base {
                tx.base_clear(p.pid)?;
            }
            let set: Vec<BaseSet<'_>> = req
                .base
                .iter()
                .filter_map(|u| {
                    Some(((u.kind.as_str(), u.name.as_str()), u.digest.as_ref()?.to_string(), u.blob.as_deref()))
                })
                .collect();
            let removed: Vec<Key<'_>> =
                req.base.iter().filter(|u| u.digest.is_none()).map(|u| (u.kind.as_str(), u.name.as_str())).collect();
            tx.base_set(p.pid, &set)?;
            tx.base_remove(p.pid, &removed)?;
            let etag = row.etag();
            Ok((row.record, etag))
        })
    }
}

fn unknown_commit(project: &str, commit: &str) -> ApiError {
    not_found(format!("no commit {commit:?} in project {project:?}"))
}

fn read_project(tx: &mut dyn Tx, project: &str) -> R<(Project, ETag)> {
    let p = project_row(tx, project)?;
    let head = head(tx, &p)?;
    let record = tx.record(p.pid)?;
    let etag = etag_of(record.as_ref());
    Ok((Project { id: p.id, name: p.name, head, sync: record.map(|r| r.record) }, etag))
}

/// A git-origin commit must come from the linked repository, ref and path.
fn check_link(project: &str, origin: &Origin, record: Option<&RecordRow>) -> R<()> {
    let sent = link_text(
        origin.repository.as_deref().unwrap_or_default(),
        origin.git_ref.as_deref().unwrap_or_default(),
        origin.path.as_deref().unwrap_or_default(),
    );
    let Some(r) = record else {
        return Err(ApiError::new(
            422,
            "link_mismatch",
            format!(
                "project {project:?} is not linked to any repository, so it takes no git commit from {sent}: \
                 link it first with `defsync link`"
            ),
        ));
    };
    let r = &r.record;
    let same = origin.repository.as_deref() == Some(r.repository.as_str())
        && origin.git_ref.as_deref() == Some(r.git_ref.as_str())
        && origin.path.as_deref() == Some(r.path.as_str());
    if same {
        return Ok(());
    }
    Err(ApiError::new(
        422,
        "link_mismatch",
        format!(
            "project {project:?} is linked to {}, but this git commit comes from {sent}: \
             run from the linked branch and path, or move the link with `defsync link`",
            link_text(&r.repository, &r.git_ref, &r.path)
        ),
    ))
}

#[cfg(test)]
mod tests;
