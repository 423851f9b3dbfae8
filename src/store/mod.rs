//! The platform side of the contract (part 3) on SQLite. `defsync serve` is a thin HTTP layer
//! over it, and runs open it in-process as the embedded store, so both give the same answers.
//!
//! Request bodies arrive as the bytes that were sent, so validation and idempotency (which
//! compares bytes) are the same for both front ends. Every write is one `BEGIN IMMEDIATE`
//! transaction on a WAL database with `synchronous=FULL`: a crash at any moment leaves either all
//! of a request or none of it.

mod clock;
mod keys;
mod outbox;
mod schema;
pub mod strict;

/// The strict JSON parser, for the fuzz targets (`crate::fuzzing`).
#[doc(hidden)]
pub use strict::parse as strict_parse;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::api::{
    ApiError, Base, BaseEntry, BatchGetRequest, BatchGetResponse, Change, Commit, Commits, CreateCommit, Direction,
    ETag, Manifest, ManifestEntry, Object, Origin, OriginType, Project, PutSync, SyncRecord,
};
use crate::digest::Digest;
use crate::model::{Definition, validate_kind, validate_name};

pub use keys::{Access, KEY_PREFIX, KeyScope, NewKey, StoredKey};
pub use outbox::{ClaimedDispatch, DispatchFailure, DispatchState, OutboxEntry, RetryPolicy};

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
/// How long a write waits for another process holding the database before answering 503.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

type R<T> = std::result::Result<T, ApiError>;

/// The platform's state in one SQLite file. Cheap to share: it is `Sync`, and callers from
/// several threads take turns on its one connection.
pub struct Store {
    conn: Mutex<Connection>,
    /// Whether commits whose origin is not `git` queue a dispatch of the pull workflow (see
    /// [`Store::set_dispatch_outbox`]).
    outbox: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// SQLite failures are the platform's own: 503 when another writer holds the database too long
/// (so clients retry), 500 otherwise.
impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
        match e.sqlite_error_code() {
            Some(DatabaseBusy | DatabaseLocked) => {
                let mut err = ApiError::new(503, "unavailable", "the store is busy; try again");
                err.retry_after = Some(1);
                err
            }
            _ => ApiError::new(500, "internal", format!("store error: {e}")),
        }
    }
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

struct ProjectRow {
    pid: i64,
    id: String,
    name: String,
    head_seq: i64,
}

struct RecordRow {
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

fn project_row(conn: &Connection, project: &str) -> R<ProjectRow> {
    conn.prepare_cached("SELECT pid, id, name, head_seq FROM projects WHERE id = ?1")?
        .query_row([project], |r| {
            Ok(ProjectRow { pid: r.get(0)?, id: r.get(1)?, name: r.get(2)?, head_seq: r.get(3)? })
        })
        .optional()?
        .ok_or_else(|| not_found(format!("no project {project:?} on this platform")))
}

fn conversion_error(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

fn digest_column(r: &Row, i: usize) -> rusqlite::Result<Digest> {
    let s: String = r.get(i)?;
    Digest::parse(&s).map_err(|e| conversion_error(std::io::Error::other(e)))
}

const COMMIT_COLUMNS: &str = "id, seq, parent, created_at, message, origin";

fn commit_from_row(r: &Row) -> rusqlite::Result<Commit> {
    let origin: String = r.get(5)?;
    Ok(Commit {
        id: r.get(0)?,
        seq: r.get::<_, i64>(1)? as u64,
        parent: r.get(2)?,
        created_at: r.get(3)?,
        message: r.get(4)?,
        origin: serde_json::from_str(&origin).map_err(conversion_error)?,
    })
}

fn commit_by_seq(conn: &Connection, pid: i64, seq: i64) -> R<Option<Commit>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COMMIT_COLUMNS} FROM commits WHERE pid = ?1 AND seq = ?2"))?
        .query_row(params![pid, seq], commit_from_row)
        .optional()?)
}

fn commit_by_id(conn: &Connection, pid: i64, id: &str) -> R<Option<Commit>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COMMIT_COLUMNS} FROM commits WHERE pid = ?1 AND id = ?2"))?
        .query_row(params![pid, id], commit_from_row)
        .optional()?)
}

fn head(conn: &Connection, p: &ProjectRow) -> R<Option<Commit>> {
    if p.head_seq == 0 {
        return Ok(None);
    }
    commit_by_seq(conn, p.pid, p.head_seq)?
        .map(Some)
        .ok_or_else(|| internal("the head commit is missing from the store"))
}

fn direction_from_str(s: &str) -> rusqlite::Result<Direction> {
    serde_json::from_value(Value::String(s.to_owned())).map_err(conversion_error)
}

fn record_row(conn: &Connection, pid: i64) -> R<Option<RecordRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT repository, ref, path, direction, commit_id, seq, git_commit, updated_at, etag_salt, etag_version
             FROM sync_records WHERE pid = ?1",
        )?
        .query_row([pid], |r| {
            Ok(RecordRow {
                record: SyncRecord {
                    repository: r.get(0)?,
                    git_ref: r.get(1)?,
                    path: r.get(2)?,
                    direction: direction_from_str(&r.get::<_, String>(3)?)?,
                    commit: r.get(4)?,
                    seq: r.get::<_, i64>(5)? as u64,
                    git_commit: r.get(6)?,
                    updated_at: r.get(7)?,
                },
                salt: r.get(8)?,
                version: r.get(9)?,
            })
        })
        .optional()?)
}

/// The live digest of a key at the head.
fn live_digest(conn: &Connection, pid: i64, kind: &str, name: &str) -> R<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT digest FROM entries WHERE pid = ?1 AND kind = ?2 AND name = ?3 AND to_seq IS NULL")?
        .query_row(params![pid, kind, name], |r| r.get(0))
        .optional()?)
}

/// A change of a commit request, checked and hashed before the write lock is taken.
struct Prepared {
    kind: String,
    name: String,
    /// `None` for a delete.
    put: Option<PreparedPut>,
    /// False when the key broke a rule of part 1 (already in the details).
    valid: bool,
}

struct PreparedPut {
    digest: Digest,
    size: i64,
    /// The spec as sent (key order kept).
    spec_json: String,
}

/// Checks every change against part 1 and against the others; returns them with the problems.
fn prepare_changes(changes: Vec<Change>) -> (Vec<Prepared>, Vec<Detail>) {
    let mut details = Vec::new();
    let mut seen = HashSet::with_capacity(changes.len());
    let mut prepared = Vec::with_capacity(changes.len());
    for change in changes {
        let (kind, name, put, mut valid) = match change {
            Change::Put { kind, name, spec } => {
                let def = Definition { kind, name, spec };
                match def.validate() {
                    Ok(canonical) => {
                        let put = PreparedPut {
                            digest: Digest::of_canonical(&canonical),
                            size: canonical.len() as i64,
                            spec_json: serde_json::to_string(&def.spec).unwrap_or_default(),
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
    /// Opens (creating it, and its parent folders, if needed) the store at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create the folder {}", parent.display()))?;
        }
        let mut conn = Connection::open(path).with_context(|| format!("cannot open the store {}", path.display()))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            anyhow::bail!("the store {} cannot use write-ahead logging (journal mode {mode})", path.display());
        }
        // FULL: a commit acknowledged to a client survives a power cut, not only a process crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrate(&mut conn).with_context(|| format!("cannot set up the store {}", path.display()))?;
        Ok(Store { conn: Mutex::new(conn), outbox: AtomicBool::new(false) })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock dropped its transaction, which rolled back: the
        // connection is still sound.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the store answers: a read of the schema version, for `GET /healthz`.
    pub fn ping(&self) -> R<()> {
        let conn = self.lock();
        conn.prepare_cached("SELECT version FROM schema_version")?.query_row([], |r| r.get::<_, i64>(0))?;
        Ok(())
    }

    /// Creates (`true`) or renames (`false`) a project.
    pub fn put_project(&self, project: &str, name: &str) -> R<(Project, bool)> {
        validate_project_id(project).map_err(invalid)?;
        if name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err(invalid("a project name has at most 200 characters and no control characters"));
        }
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let updated = tx.execute("UPDATE projects SET name = ?2 WHERE id = ?1", params![project, name])?;
        let created = updated == 0;
        if created {
            tx.execute(
                "INSERT INTO projects (id, name, head_seq, created_at) VALUES (?1, ?2, 0, ?3)",
                params![project, name, clock::now_rfc3339()],
            )?;
        }
        let (p, _) = read_project(&tx, project)?;
        tx.commit()?;
        Ok((p, created))
    }

    /// The project, its head and record, and the record's entity tag.
    pub fn project(&self, project: &str) -> R<(Project, ETag)> {
        let mut conn = self.lock();
        // One read transaction: the head, record and tag come from the same snapshot.
        let tx = conn.transaction()?;
        read_project(&tx, project)
    }

    /// The base, sorted like a manifest, with the record's entity tag.
    pub fn base(&self, project: &str) -> R<(Base, ETag)> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let p = project_row(&tx, project)?;
        let record = record_row(&tx, p.pid)?;
        let mut stmt = tx.prepare_cached("SELECT kind, name, digest FROM base WHERE pid = ?1 ORDER BY kind, name")?;
        let entries = stmt
            .query_map([p.pid], |r| Ok(BaseEntry { kind: r.get(0)?, name: r.get(1)?, digest: digest_column(r, 2)? }))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((Base { entries }, etag_of(record.as_ref())))
    }

    /// Commits after `after_seq`, ascending. `limit` 0 means the default (100); above 1000 it is
    /// clamped to 1000.
    pub fn commits(&self, project: &str, after_seq: u64, limit: u32) -> R<Commits> {
        let limit = match limit {
            0 => DEFAULT_COMMITS_LIMIT,
            n => n.min(MAX_COMMITS_LIMIT),
        };
        let conn = self.lock();
        let p = project_row(&conn, project)?;
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COMMIT_COLUMNS} FROM commits WHERE pid = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
        ))?;
        let commits =
            stmt.query_map(params![p.pid, after, limit], commit_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Commits { commits })
    }

    pub fn commit(&self, project: &str, commit: &str) -> R<Commit> {
        let conn = self.lock();
        let p = project_row(&conn, project)?;
        commit_by_id(&conn, p.pid, commit)?.ok_or_else(|| unknown_commit(project, commit))
    }

    /// The manifest of a commit, sorted by kind then name (UTF-8 bytes).
    pub fn manifest(&self, project: &str, commit: &str) -> R<Manifest> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let p = project_row(&tx, project)?;
        let c = commit_by_id(&tx, p.pid, commit)?.ok_or_else(|| unknown_commit(project, commit))?;
        let seq = c.seq as i64;
        let map = |r: &Row| {
            Ok(ManifestEntry {
                kind: r.get(0)?,
                name: r.get(1)?,
                digest: digest_column(r, 2)?,
                size: r.get::<_, i64>(3)? as u64,
            })
        };
        let entries = if seq == p.head_seq {
            // The head's manifest is the live rows: the partial index gives them in order.
            tx.prepare_cached(
                "SELECT kind, name, digest, size FROM entries WHERE pid = ?1 AND to_seq IS NULL ORDER BY kind, name",
            )?
            .query_map([p.pid], map)?
            .collect::<rusqlite::Result<Vec<_>>>()?
        } else {
            tx.prepare_cached(
                "SELECT kind, name, digest, size FROM entries INDEXED BY entries_history
                 WHERE pid = ?1 AND from_seq <= ?2 AND (to_seq IS NULL OR to_seq > ?2) ORDER BY kind, name",
            )?
            .query_map(params![p.pid, seq], map)?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        Ok(Manifest { commit: c, entries })
    }

    /// `body` is the request body as sent, a `BatchGetRequest`. At most 1000 digests, and at
    /// most 16 MiB of canonical forms: a larger answer is 422 `invalid` (the request is not too
    /// large, the answer would be), so the client splits its batches by the manifest's sizes.
    pub fn batch_get(&self, project: &str, body: &[u8]) -> R<BatchGetResponse> {
        self.project_exists(project)?;
        let req: BatchGetRequest = strict::parse(body).map_err(invalid)?;
        if req.digests.len() > MAX_BATCH_DIGESTS {
            return Err(invalid(format!(
                "{} digests were asked for; at most {MAX_BATCH_DIGESTS} are allowed in one batch",
                req.digests.len()
            )));
        }
        let conn = self.lock();
        let p = project_row(&conn, project)?;
        let mut stmt =
            conn.prepare_cached("SELECT kind, name, spec, size FROM objects WHERE pid = ?1 AND digest = ?2")?;
        let mut seen = HashSet::with_capacity(req.digests.len());
        let mut objects = Vec::with_capacity(req.digests.len());
        let mut missing = Vec::new();
        let mut total: u64 = 0;
        for digest in req.digests {
            if !seen.insert(digest.clone()) {
                continue;
            }
            let row = stmt
                .query_row(params![p.pid, digest.to_string()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
                })
                .optional()?;
            let Some((kind, name, spec, size)) = row else {
                missing.push(digest);
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
            objects.push(Object { digest, kind, name, spec });
        }
        Ok(BatchGetResponse { objects, missing })
    }

    fn project_exists(&self, project: &str) -> R<()> {
        let conn = self.lock();
        project_row(&conn, project).map(drop)
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
        let (prepared, mut details) = prepare_changes(changes);
        let body_sha256 = Sha256::digest(body).to_vec();
        let now_unix = clock::unix_now();

        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let p = project_row(&tx, project)?;

        if let Some(key) = idempotency_key {
            let earlier: Option<(Vec<u8>, i64, i64)> = tx
                .prepare_cached(
                    "SELECT body_sha256, commit_seq, created_unix FROM idempotency WHERE pid = ?1 AND key = ?2",
                )?
                .query_row(params![p.pid, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            if let Some((sha, seq, created)) = earlier
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
                return commit_by_seq(&tx, p.pid, seq)?
                    .ok_or_else(|| internal("the commit of an idempotency key is missing"));
            }
        }

        let head = head(&tx, &p)?;
        let record = record_row(&tx, p.pid)?;
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
        let mut effective = Vec::with_capacity(prepared.len());
        for (i, change) in prepared.iter().enumerate() {
            if !change.valid {
                continue;
            }
            let current = live_digest(&tx, p.pid, &change.kind, &change.name)?;
            match (&change.put, current) {
                (None, None) => details.push(Detail {
                    kind: change.kind.clone(),
                    name: change.name.clone(),
                    message: "cannot delete it: the key does not exist at the head".into(),
                }),
                (None, Some(_)) => effective.push(i),
                (Some(put), current) if current.as_deref() == Some(put.digest.to_string().as_str()) => {}
                (Some(_), _) => effective.push(i),
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
            id: clock::new_commit_id(),
            seq: seq as u64,
            parent,
            created_at: clock::rfc3339(now_unix),
            message,
            origin,
        };
        let origin_json = serde_json::to_string(&commit.origin).map_err(|e| internal(e.to_string()))?;
        tx.prepare_cached(
            "INSERT INTO commits (pid, seq, id, parent, created_at, message, origin) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![p.pid, seq, commit.id, commit.parent, commit.created_at, commit.message, origin_json])?;
        {
            let mut close = tx.prepare_cached(
                "UPDATE entries SET to_seq = ?4 WHERE pid = ?1 AND kind = ?2 AND name = ?3 AND to_seq IS NULL",
            )?;
            let mut open = tx.prepare_cached(
                "INSERT INTO entries (pid, kind, name, digest, size, from_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut object = tx.prepare_cached(
                "INSERT OR IGNORE INTO objects (pid, digest, kind, name, spec, size) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for &i in &effective {
                let c = &prepared[i];
                close.execute(params![p.pid, c.kind, c.name, seq])?;
                if let Some(put) = &c.put {
                    open.execute(params![p.pid, c.kind, c.name, put.digest.to_string(), put.size, seq])?;
                    object.execute(params![p.pid, put.digest.to_string(), c.kind, c.name, put.spec_json, put.size])?;
                }
            }
        }
        tx.prepare_cached("UPDATE projects SET head_seq = ?2 WHERE pid = ?1")?.execute(params![p.pid, seq])?;
        if commit.origin.kind != OriginType::Git && self.outbox.load(Ordering::Relaxed) {
            // In the commit's own transaction: a commit acknowledged to the dashboard always has
            // its dispatch queued, whenever the process dies. A replay returned earlier, above.
            outbox::enqueue(&tx, p.pid, &commit)?;
        }

        if commit.origin.kind == OriginType::Git {
            // The keys of a git commit now agree between the branch and the platform.
            tx.prepare_cached(
                "UPDATE sync_records SET commit_id = ?2, seq = MAX(seq, ?3), git_commit = ?4, updated_at = ?5,
                 etag_version = etag_version + 1 WHERE pid = ?1",
            )?
            .execute(params![p.pid, commit.id, seq, commit.origin.git_commit, commit.created_at])?;
            let mut set = tx.prepare_cached(
                "INSERT INTO base (pid, kind, name, digest) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (pid, kind, name) DO UPDATE SET digest = excluded.digest",
            )?;
            let mut remove = tx.prepare_cached("DELETE FROM base WHERE pid = ?1 AND kind = ?2 AND name = ?3")?;
            for c in &prepared {
                match &c.put {
                    Some(put) => set.execute(params![p.pid, c.kind, c.name, put.digest.to_string()])?,
                    None => remove.execute(params![p.pid, c.kind, c.name])?,
                };
            }
        }

        if let Some(key) = idempotency_key {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO idempotency (pid, key, body_sha256, commit_seq, created_unix)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![p.pid, key, body_sha256, seq, now_unix])?;
        }
        // Forget expired keys as we go, so the table stays as small as a day of commits.
        tx.prepare_cached("DELETE FROM idempotency WHERE created_unix < ?1")?
            .execute([now_unix - IDEMPOTENCY_TTL.as_secs() as i64])?;
        tx.commit()?;
        Ok(commit)
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
        let req: PutSync = strict::parse(body).map_err(invalid)?;
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
            } else if !seen.insert((u.kind.as_str(), u.name.as_str())) {
                details.push(Detail {
                    kind: u.kind.clone(),
                    name: u.name.clone(),
                    message: "the key appears more than once in base".into(),
                });
            }
        }

        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let p = project_row(&tx, project)?;
        let current = record_row(&tx, p.pid)?;
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
                let c = commit_by_id(&tx, p.pid, id)?.ok_or_else(|| unknown_commit(project, id))?;
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
        // Contract v1.1: a base digest need not be an object of the project. A push that defers
        // to the platform records Git's version, which the platform never saw.
        if !details.is_empty() {
            return Err(invalid_details("the base is invalid", details));
        }

        // A Git commit belongs to the link it was made on: moving the link forgets it.
        let git_commit = req.git_commit.clone().or_else(|| {
            current
                .as_ref()
                .filter(|r| r.record.repository == req.repository && r.record.git_ref == req.git_ref)
                .and_then(|r| r.record.git_commit.clone())
        });
        let record = SyncRecord {
            repository: req.repository,
            git_ref: req.git_ref,
            path: req.path,
            direction: req.direction,
            commit: commit_id,
            seq: seq.max(record_seq),
            git_commit,
            updated_at: clock::now_rfc3339(),
        };
        let (salt, version) = match &current {
            Some(r) => (r.salt.clone(), r.version + 1),
            None => (clock::new_salt(), 1),
        };
        tx.prepare_cached(
            "INSERT OR REPLACE INTO sync_records
             (pid, repository, ref, path, direction, commit_id, seq, git_commit, updated_at, etag_salt, etag_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            p.pid,
            record.repository,
            record.git_ref,
            record.path,
            record.direction.as_str(),
            record.commit,
            record.seq as i64,
            record.git_commit,
            record.updated_at,
            salt,
            version
        ])?;
        if req.replace_base {
            tx.prepare_cached("DELETE FROM base WHERE pid = ?1")?.execute([p.pid])?;
        }
        {
            let mut set = tx.prepare_cached(
                "INSERT INTO base (pid, kind, name, digest) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (pid, kind, name) DO UPDATE SET digest = excluded.digest",
            )?;
            let mut remove = tx.prepare_cached("DELETE FROM base WHERE pid = ?1 AND kind = ?2 AND name = ?3")?;
            for u in &req.base {
                match &u.digest {
                    Some(d) => set.execute(params![p.pid, u.kind, u.name, d.to_string()])?,
                    None => remove.execute(params![p.pid, u.kind, u.name])?,
                };
            }
        }
        tx.commit()?;
        let etag = RecordRow { record: record.clone(), salt, version }.etag();
        Ok((record, etag))
    }
}

fn unknown_commit(project: &str, commit: &str) -> ApiError {
    not_found(format!("no commit {commit:?} in project {project:?}"))
}

fn read_project(conn: &Connection, project: &str) -> R<(Project, ETag)> {
    let p = project_row(conn, project)?;
    let head = head(conn, &p)?;
    let record = record_row(conn, p.pid)?;
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
