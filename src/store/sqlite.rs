//! The SQLite backend: one file, one connection, for the embedded store and a single `serve`
//! process. Every write is one `BEGIN IMMEDIATE` transaction on a WAL database with
//! `synchronous=FULL`: a crash at any moment leaves either all of a request or none of it, and
//! the one writer at a time is what keeps the rules' checks true until the write.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::keys::{KEY_COLUMNS, KeyRow, key_of};
use super::outbox::{DueRow, ENTRY_COLUMNS, EntryRow, SentDispatch, entry_from};
use super::runs::ReportRow;
use super::{
    BaseEntry, BaseSet, BranchPush, Commit, Delivery, Key, ManifestEntry, OutboxEntry, ProjectRow, Put, R, RecordRow,
    RunStatus, StoredKey, SyncRecord, TouchedEntry, Tx, TxKind, commit_of, parse_digest, parse_direction, schema,
};
use crate::api::ApiError;

/// How long a write waits for another process holding the database before answering 503.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct Sqlite {
    conn: Mutex<Connection>,
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

impl Sqlite {
    pub(super) fn open(path: &Path) -> anyhow::Result<Self> {
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
        schema::sqlite::migrate(&mut conn).with_context(|| format!("cannot set up the store {}", path.display()))?;
        Ok(Sqlite { conn: Mutex::new(conn) })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock dropped its transaction, which rolled back: the
        // connection is still sound.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    pub(super) fn execute_for_test(&self, sql: &str) {
        self.lock().execute_batch(sql).unwrap();
    }

    /// One writer at a time (`BEGIN IMMEDIATE`) never races, so `f` runs once.
    pub(super) fn transaction<T>(&self, kind: TxKind, f: &mut dyn FnMut(&mut dyn Tx) -> R<T>) -> R<T> {
        let mut conn = self.lock();
        let behavior = match kind {
            TxKind::Read => TransactionBehavior::Deferred,
            TxKind::Write => TransactionBehavior::Immediate,
        };
        let mut tx = SqliteTx(conn.transaction_with_behavior(behavior)?);
        let out = f(&mut tx)?;
        tx.0.commit()?;
        Ok(out)
    }
}

struct SqliteTx<'a>(rusqlite::Transaction<'a>);

const COMMIT_COLUMNS: &str = "id, seq, parent, created_at, message, origin";

type CommitColumns = (String, i64, Option<String>, String, String, String);

fn commit_columns(r: &Row) -> rusqlite::Result<CommitColumns> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn to_commit((id, seq, parent, created_at, message, origin): CommitColumns) -> R<Commit> {
    commit_of(id, seq, parent, created_at, message, &origin)
}

type KeyColumns = (String, String, Option<String>, Option<i64>, String, Option<String>, String);

fn key_columns(r: &Row) -> rusqlite::Result<KeyColumns> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
}

fn to_key((name, scope, projects, expires, created, revoked, hint): KeyColumns) -> R<StoredKey> {
    key_of(name, &scope, projects, expires, created, revoked, hint)
}

impl EntryRow for Row<'_> {
    fn int(&self, i: usize) -> R<i64> {
        Ok(self.get(i)?)
    }
    fn opt_int(&self, i: usize) -> R<Option<i64>> {
        Ok(self.get(i)?)
    }
    fn text(&self, i: usize) -> R<String> {
        Ok(self.get(i)?)
    }
    fn opt_text(&self, i: usize) -> R<Option<String>> {
        Ok(self.get(i)?)
    }
}

impl SqliteTx<'_> {
    /// Outbox rows matching `clause` (over `o`, the outbox, and `p`, its project), oldest first.
    fn entries(&mut self, clause: &str, values: &[&dyn rusqlite::ToSql]) -> R<Vec<OutboxEntry>> {
        let mut stmt = self.0.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM dispatch_outbox o JOIN projects p ON p.pid = o.pid WHERE {clause} ORDER BY o.id"
        ))?;
        let mut rows = stmt.query(values)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(entry_from(row)?);
        }
        Ok(out)
    }

    fn commit_where(&mut self, clause: &str, pid: i64, value: &dyn rusqlite::ToSql) -> R<Option<Commit>> {
        self.0
            .prepare_cached(&format!("SELECT {COMMIT_COLUMNS} FROM commits WHERE pid = ?1 AND {clause} = ?2"))?
            .query_row(params![pid, value], commit_columns)
            .optional()?
            .map(to_commit)
            .transpose()
    }

    fn key_where(&mut self, column: &str, value: &str) -> R<Option<StoredKey>> {
        self.0
            .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE {column} = ?1"))?
            .query_row([value], key_columns)
            .optional()?
            .map(to_key)
            .transpose()
    }
}

impl Tx for SqliteTx<'_> {
    fn schema_version(&mut self) -> R<i64> {
        Ok(self.0.prepare_cached("SELECT version FROM schema_version")?.query_row([], |r| r.get(0))?)
    }

    fn project(&mut self, id: &str) -> R<Option<ProjectRow>> {
        Ok(self
            .0
            .prepare_cached("SELECT pid, id, name, head_seq FROM projects WHERE id = ?1")?
            .query_row([id], |r| Ok(ProjectRow { pid: r.get(0)?, id: r.get(1)?, name: r.get(2)?, head_seq: r.get(3)? }))
            .optional()?)
    }

    fn projects(&mut self) -> R<Vec<ProjectRow>> {
        Ok(self
            .0
            .prepare_cached("SELECT pid, id, name, head_seq FROM projects ORDER BY id")?
            .query_map([], |r| Ok(ProjectRow { pid: r.get(0)?, id: r.get(1)?, name: r.get(2)?, head_seq: r.get(3)? }))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn upsert_project(&mut self, id: &str, name: &str, created_at: &str) -> R<bool> {
        let updated = self.0.execute("UPDATE projects SET name = ?2 WHERE id = ?1", params![id, name])?;
        if updated == 0 {
            self.0.execute(
                "INSERT INTO projects (id, name, head_seq, created_at) VALUES (?1, ?2, 0, ?3)",
                params![id, name, created_at],
            )?;
        }
        Ok(updated == 0)
    }

    fn set_head(&mut self, pid: i64, seq: i64) -> R<()> {
        self.0.prepare_cached("UPDATE projects SET head_seq = ?2 WHERE pid = ?1")?.execute(params![pid, seq])?;
        Ok(())
    }

    fn commit_by_seq(&mut self, pid: i64, seq: i64) -> R<Option<Commit>> {
        self.commit_where("seq", pid, &seq)
    }

    fn commit_by_id(&mut self, pid: i64, id: &str) -> R<Option<Commit>> {
        self.commit_where("id", pid, &id)
    }

    fn commits_after(&mut self, pid: i64, after_seq: i64, limit: u32) -> R<Vec<Commit>> {
        let rows = self
            .0
            .prepare_cached(&format!(
                "SELECT {COMMIT_COLUMNS} FROM commits WHERE pid = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            ))?
            .query_map(params![pid, after_seq, limit], commit_columns)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(to_commit).collect()
    }

    fn insert_commit(&mut self, pid: i64, c: &Commit, origin: &str) -> R<()> {
        self.0
            .prepare_cached(
                "INSERT INTO commits (pid, seq, id, parent, created_at, message, origin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![pid, c.seq as i64, c.id, c.parent, c.created_at, c.message, origin])?;
        Ok(())
    }

    fn live_digests(&mut self, pid: i64, keys: &[Key<'_>]) -> R<Vec<Option<String>>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT digest FROM entries WHERE pid = ?1 AND kind = ?2 AND name = ?3 AND to_seq IS NULL",
        )?;
        let mut digests = Vec::with_capacity(keys.len());
        for (kind, name) in keys {
            digests.push(stmt.query_row(params![pid, kind, name], |r| r.get(0)).optional()?);
        }
        Ok(digests)
    }

    fn close_entries(&mut self, pid: i64, keys: &[Key<'_>], seq: i64) -> R<()> {
        let mut stmt = self.0.prepare_cached(
            "UPDATE entries SET to_seq = ?4 WHERE pid = ?1 AND kind = ?2 AND name = ?3 AND to_seq IS NULL",
        )?;
        for (kind, name) in keys {
            stmt.execute(params![pid, kind, name, seq])?;
        }
        Ok(())
    }

    fn open_entries(&mut self, pid: i64, puts: &[Put<'_>], seq: i64) -> R<()> {
        let mut open = self.0.prepare_cached(
            "INSERT INTO entries (pid, kind, name, digest, size, from_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut object = self.0.prepare_cached(
            "INSERT OR IGNORE INTO objects (pid, digest, kind, name, spec, size) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (kind, name, put) in puts {
            let digest = put.digest.to_string();
            open.execute(params![pid, kind, name, digest, put.size, seq])?;
            object.execute(params![pid, digest, kind, name, put.spec_json, put.size])?;
        }
        Ok(())
    }

    fn manifest_each(&mut self, pid: i64, seq: Option<i64>, each: &mut dyn FnMut(ManifestEntry) -> R<()>) -> R<()> {
        // Both statements take the same two parameters, so one `query` serves both; the head's
        // ignores the second (always NULL there).
        let (mut stmt, seq) = match seq {
            None => (
                self.0.prepare_cached(
                    "SELECT kind, name, digest, size FROM entries WHERE pid = ?1 AND to_seq IS NULL AND ?2 IS NULL ORDER BY kind, name",
                )?,
                None,
            ),
            Some(seq) => (
                self.0.prepare_cached(
                    "SELECT kind, name, digest, size FROM entries INDEXED BY entries_history
                     WHERE pid = ?1 AND from_seq <= ?2 AND (to_seq IS NULL OR to_seq > ?2) ORDER BY kind, name",
                )?,
                Some(seq),
            ),
        };
        let mut rows = stmt.query(params![pid, seq])?;
        while let Some(r) = rows.next()? {
            let digest: String = r.get(2)?;
            let size: i64 = r.get(3)?;
            each(ManifestEntry {
                kind: r.get(0)?,
                name: r.get(1)?,
                digest: parse_digest(&digest)?,
                size: size as u64,
            })?;
        }
        Ok(())
    }

    fn live_since(&mut self, pid: i64) -> R<Vec<(String, String, i64)>> {
        Ok(self
            .0
            .prepare_cached("SELECT kind, name, from_seq FROM entries WHERE pid = ?1 AND to_seq IS NULL")?
            .query_map([pid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn entries_touched(&mut self, pid: i64, lo: i64, hi: i64) -> R<Vec<TouchedEntry>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT kind, name, from_seq, to_seq FROM entries
                 WHERE pid = ?1 AND ((from_seq BETWEEN ?2 AND ?3) OR (to_seq BETWEEN ?2 AND ?3))",
            )?
            .query_map(params![pid, lo, hi], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn object(&mut self, pid: i64, digest: &str) -> R<Option<(String, String, String, i64)>> {
        Ok(self
            .0
            .prepare_cached("SELECT kind, name, spec, size FROM objects WHERE pid = ?1 AND digest = ?2")?
            .query_row(params![pid, digest], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?)
    }

    fn record(&mut self, pid: i64) -> R<Option<RecordRow>> {
        type Columns = (String, String, String, String, Option<String>, i64, Option<String>, String, String, i64);
        let row: Option<Columns> = self
            .0
            .prepare_cached(
                "SELECT repository, ref, path, direction, commit_id, seq, git_commit, updated_at, etag_salt, etag_version
                 FROM sync_records WHERE pid = ?1",
            )?
            .query_row([pid], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            })
            .optional()?;
        row.map(|(repository, git_ref, path, direction, commit, seq, git_commit, updated_at, salt, version)| {
            Ok(RecordRow {
                record: SyncRecord {
                    repository,
                    git_ref,
                    path,
                    direction: parse_direction(&direction)?,
                    commit,
                    seq: seq as u64,
                    git_commit,
                    updated_at,
                },
                salt,
                version,
            })
        })
        .transpose()
    }

    fn put_record(&mut self, pid: i64, row: &RecordRow) -> R<()> {
        let r = &row.record;
        self.0
            .prepare_cached(
                "INSERT OR REPLACE INTO sync_records
                 (pid, repository, ref, path, direction, commit_id, seq, git_commit, updated_at, etag_salt, etag_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                pid,
                r.repository,
                r.git_ref,
                r.path,
                r.direction.as_str(),
                r.commit,
                r.seq as i64,
                r.git_commit,
                r.updated_at,
                row.salt,
                row.version
            ])?;
        Ok(())
    }

    fn record_git_commit(&mut self, pid: i64, c: &Commit) -> R<()> {
        self.0
            .prepare_cached(
                "UPDATE sync_records SET commit_id = ?2, seq = MAX(seq, ?3), git_commit = ?4, updated_at = ?5,
                 etag_version = etag_version + 1 WHERE pid = ?1",
            )?
            .execute(params![pid, c.id, c.seq as i64, c.origin.git_commit, c.created_at])?;
        Ok(())
    }

    fn base_each(&mut self, pid: i64, each: &mut dyn FnMut(BaseEntry) -> R<()>) -> R<()> {
        let mut stmt =
            self.0.prepare_cached("SELECT kind, name, digest, blob FROM base WHERE pid = ?1 ORDER BY kind, name")?;
        let mut rows = stmt.query([pid])?;
        while let Some(r) = rows.next()? {
            let digest: String = r.get(2)?;
            each(BaseEntry { kind: r.get(0)?, name: r.get(1)?, digest: parse_digest(&digest)?, blob: r.get(3)? })?;
        }
        Ok(())
    }

    fn base_set(&mut self, pid: i64, entries: &[BaseSet<'_>]) -> R<()> {
        let mut stmt = self.0.prepare_cached(
            "INSERT INTO base (pid, kind, name, digest, blob) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (pid, kind, name) DO UPDATE SET digest = excluded.digest, blob = excluded.blob",
        )?;
        for ((kind, name), digest, blob) in entries {
            stmt.execute(params![pid, kind, name, digest, blob])?;
        }
        Ok(())
    }

    fn base_remove(&mut self, pid: i64, keys: &[Key<'_>]) -> R<()> {
        let mut stmt = self.0.prepare_cached("DELETE FROM base WHERE pid = ?1 AND kind = ?2 AND name = ?3")?;
        for (kind, name) in keys {
            stmt.execute(params![pid, kind, name])?;
        }
        Ok(())
    }

    fn base_clear(&mut self, pid: i64) -> R<()> {
        self.0.prepare_cached("DELETE FROM base WHERE pid = ?1")?.execute([pid])?;
        Ok(())
    }

    fn idempotency(&mut self, pid: i64, key: &str) -> R<Option<(Vec<u8>, i64, i64)>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT body_sha256, commit_seq, created_unix FROM idempotency WHERE pid = ?1 AND key = ?2",
            )?
            .query_row(params![pid, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?)
    }

    fn put_idempotency(&mut self, pid: i64, key: &str, body_sha256: &[u8], seq: i64, now_unix: i64) -> R<()> {
        self.0
            .prepare_cached(
                "INSERT OR REPLACE INTO idempotency (pid, key, body_sha256, commit_seq, created_unix)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![pid, key, body_sha256, seq, now_unix])?;
        Ok(())
    }

    fn expire_idempotency(&mut self, before_unix: i64) -> R<()> {
        self.0.prepare_cached("DELETE FROM idempotency WHERE created_unix < ?1")?.execute([before_unix])?;
        Ok(())
    }

    fn enqueue_dispatch(&mut self, pid: i64, c: &Commit, now_ms: i64) -> R<i64> {
        Ok(self
            .0
            .prepare_cached(
                "INSERT INTO dispatch_outbox (pid, commit_id, seq, created_at, state, attempts, next_attempt_ms)
                 VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5) RETURNING id",
            )?
            .query_row(params![pid, c.id, c.seq as i64, c.created_at, now_ms], |r| r.get(0))?)
    }

    fn due_dispatches(&mut self, now_ms: i64) -> R<Vec<DueRow>> {
        // One writer at a time: the claim's transaction is the lock.
        Ok(self
            .0
            .prepare_cached(
                "SELECT o.id, o.pid, p.id, o.seq, o.commit_id, o.attempts
                 FROM dispatch_outbox o JOIN projects p ON p.pid = o.pid
                 WHERE o.state = 'pending' AND o.next_attempt_ms <= ?1
                   AND o.id = (SELECT id FROM dispatch_outbox
                               WHERE pid = o.pid AND state = 'pending' AND next_attempt_ms <= ?1
                               ORDER BY seq DESC, id DESC LIMIT 1)
                 ORDER BY o.next_attempt_ms, o.id",
            )?
            .query_map([now_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn coalesce_dispatches(&mut self, pid: i64, id: i64, seq: i64, done_at: &str, into: &str) -> R<Vec<String>> {
        Ok(self
            .0
            .prepare_cached(
                "UPDATE dispatch_outbox SET state = 'coalesced', done_at = ?3, coalesced_into = ?4
                 WHERE pid = ?1 AND state = 'pending' AND seq <= ?2 AND id <> ?5 RETURNING commit_id",
            )?
            .query_map(params![pid, seq, done_at, into, id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn schedule_dispatch(&mut self, id: i64, attempts: u32, next_attempt_ms: i64) -> R<()> {
        self.0
            .prepare_cached("UPDATE dispatch_outbox SET attempts = ?2, next_attempt_ms = ?3 WHERE id = ?1")?
            .execute(params![id, attempts, next_attempt_ms])?;
        Ok(())
    }

    fn dispatch_attempts(&mut self, id: i64) -> R<Option<i64>> {
        Ok(self
            .0
            .prepare_cached("SELECT attempts FROM dispatch_outbox WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?)
    }

    fn dispatch_done(&mut self, id: i64, done_at: &str, sent_ms: i64, sent: &SentDispatch<'_>) -> R<bool> {
        let run_id = sent.run_id.map(|n| n as i64);
        let n = self
            .0
            .prepare_cached(
                "UPDATE dispatch_outbox SET state = 'done', done_at = ?2, run_id = ?3, run_url = ?4, last_error = NULL,
                 forge = ?5, target = ?6, sent_ms = ?7, run_status = NULL, run_conclusion = NULL, run_updated_at = NULL
                 WHERE id = ?1",
            )?
            .execute(params![id, done_at, run_id, sent.run_url, sent.forge, sent.target, sent_ms])?;
        Ok(n > 0)
    }

    fn dispatch_failed(&mut self, id: i64, error: &str, done_at: &str) -> R<()> {
        self.0
            .prepare_cached("UPDATE dispatch_outbox SET state = 'failed', last_error = ?2, done_at = ?3 WHERE id = ?1")?
            .execute(params![id, error, done_at])?;
        Ok(())
    }

    fn dispatch_retry(&mut self, id: i64, error: &str, next_attempt_ms: i64) -> R<()> {
        self.0
            .prepare_cached("UPDATE dispatch_outbox SET last_error = ?2, next_attempt_ms = ?3 WHERE id = ?1")?
            .execute(params![id, error, next_attempt_ms])?;
        Ok(())
    }

    fn outbox(&mut self, project: Option<&str>) -> R<Vec<OutboxEntry>> {
        self.entries("?1 IS NULL OR p.id = ?1", &[&project])
    }

    fn outbox_counts(&mut self) -> R<Vec<(String, i64)>> {
        Ok(self
            .0
            .prepare_cached("SELECT state, count(*) FROM dispatch_outbox GROUP BY state ORDER BY state")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn outbox_row(&mut self, id: i64) -> R<Option<OutboxEntry>> {
        Ok(self.entries("o.id = ?1", &[&id])?.pop())
    }

    fn outbox_by_run(&mut self, forge: &str, target: &str, run_id: i64) -> R<Vec<OutboxEntry>> {
        self.entries("o.run_id = ?3 AND o.forge = ?1 AND lower(o.target) = lower(?2)", &[&forge, &target, &run_id])
    }

    fn set_run_status(
        &mut self,
        id: i64,
        status: RunStatus,
        conclusion: Option<&str>,
        run_url: Option<&str>,
        at: &str,
    ) -> R<()> {
        self.0
            .prepare_cached(
                "UPDATE dispatch_outbox SET run_status = ?2, run_conclusion = ?3, run_url = COALESCE(?4, run_url),
                 run_updated_at = ?5, last_error = CASE WHEN ?2 = 'not_started' THEN last_error END WHERE id = ?1",
            )?
            .execute(params![id, status.as_str(), conclusion, run_url, at])?;
        Ok(())
    }

    fn set_dispatch_error(&mut self, id: i64, error: &str) -> R<()> {
        self.0
            .prepare_cached("UPDATE dispatch_outbox SET last_error = ?2 WHERE id = ?1")?
            .execute(params![id, error])?;
        Ok(())
    }

    fn attach_run(&mut self, forge: &str, target: &str, commit_id: &str, run_id: i64) -> R<Option<i64>> {
        Ok(self
            .0
            .prepare_cached(
                "UPDATE dispatch_outbox SET run_id = ?4 WHERE id = (
                   SELECT id FROM dispatch_outbox WHERE commit_id = ?3 AND forge = ?1 AND lower(target) = lower(?2)
                     AND state = 'done' AND run_id IS NULL ORDER BY id DESC LIMIT 1)
                 RETURNING id",
            )?
            .query_row(params![forge, target, commit_id, run_id], |r| r.get(0))
            .optional()?)
    }

    fn awaiting_run(&mut self, sent_before_ms: i64) -> R<Vec<i64>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT id FROM dispatch_outbox WHERE state = 'done' AND run_id IS NULL AND run_status IS NULL
                 AND sent_ms IS NOT NULL AND sent_ms < ?1 ORDER BY id",
            )?
            .query_map([sent_before_ms], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn pending_dispatch(&mut self, pid: i64, seq: i64) -> R<Option<i64>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT id FROM dispatch_outbox WHERE pid = ?1 AND seq = ?2 AND state = 'pending'
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![pid, seq], |r| r.get(0))
            .optional()?)
    }

    fn reset_dispatch(&mut self, id: i64, now_ms: i64) -> R<()> {
        self.0
            .prepare_cached(
                "UPDATE dispatch_outbox SET state = 'pending', attempts = 0, next_attempt_ms = ?2, done_at = NULL
                 WHERE id = ?1",
            )?
            .execute(params![id, now_ms])?;
        Ok(())
    }

    fn dispatched_to(&mut self, forge: &str, target: &str) -> R<bool> {
        Ok(self
            .0
            .prepare_cached("SELECT 1 FROM dispatch_outbox WHERE forge = ?1 AND lower(target) = lower(?2) LIMIT 1")?
            .query_row(params![forge, target], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn insert_delivery(&mut self, d: &Delivery, expires_ms: i64) -> R<bool> {
        let n = self
            .0
            .prepare_cached(
                "INSERT INTO webhook_deliveries (forge, delivery_id, event, received_ms, expires_ms, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (forge, delivery_id) DO NOTHING",
            )?
            .execute(params![d.forge, d.delivery_id, d.event, d.received_ms, expires_ms, d.body])?;
        Ok(n > 0)
    }

    fn expire_deliveries(&mut self, now_ms: i64) -> R<()> {
        // A delivery not processed yet stays, whatever its age: it is owed its work.
        self.0
            .prepare_cached("DELETE FROM webhook_deliveries WHERE expires_ms < ?1 AND body IS NULL")?
            .execute([now_ms])?;
        Ok(())
    }

    fn unprocessed_deliveries(&mut self) -> R<Vec<Delivery>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT forge, delivery_id, event, received_ms, body FROM webhook_deliveries
                 WHERE body IS NOT NULL ORDER BY received_ms, delivery_id",
            )?
            .query_map([], |r| {
                Ok(Delivery {
                    forge: r.get(0)?,
                    delivery_id: r.get(1)?,
                    event: r.get(2)?,
                    received_ms: r.get(3)?,
                    body: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn delivery_processed(&mut self, forge: &str, delivery_id: &str, at: &str) -> R<()> {
        self.0
            .prepare_cached(
                "UPDATE webhook_deliveries SET body = NULL, processed_at = ?3 WHERE forge = ?1 AND delivery_id = ?2",
            )?
            .execute(params![forge, delivery_id, at])?;
        Ok(())
    }

    fn put_branch_push(&mut self, p: &BranchPush) -> R<()> {
        self.0
            .prepare_cached(
                "INSERT INTO branch_pushes (forge, repository, ref, after_sha, at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (forge, repository, ref) DO UPDATE SET after_sha = excluded.after_sha, at = excluded.at",
            )?
            .execute(params![p.forge, p.repository, p.git_ref, p.after, p.at])?;
        Ok(())
    }

    fn branch_pushes(&mut self, forge: &str, repository: &str) -> R<Vec<BranchPush>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT forge, repository, ref, after_sha, at FROM branch_pushes
                 WHERE forge = ?1 AND lower(repository) = lower(?2) ORDER BY ref",
            )?
            .query_map(params![forge, repository], |r| {
                Ok(BranchPush {
                    forge: r.get(0)?,
                    repository: r.get(1)?,
                    git_ref: r.get(2)?,
                    after: r.get(3)?,
                    at: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn insert_run_report(&mut self, pid: i64, r: &ReportRow) -> R<i64> {
        Ok(self
            .0
            .prepare_cached(
                "INSERT INTO run_reports (pid, received_at, command, outcome, run_url, git_commit, platform_commit,
                 conflicts, deferred) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
            )?
            .query_row(
                params![
                    pid,
                    r.received_at,
                    r.command,
                    r.outcome,
                    r.run_url,
                    r.git_commit,
                    r.platform_commit,
                    r.conflicts,
                    r.deferred
                ],
                |row| row.get(0),
            )?)
    }

    fn trim_run_reports(&mut self, pid: i64, keep: i64) -> R<()> {
        self.0
            .prepare_cached(
                "DELETE FROM run_reports WHERE pid = ?1 AND id NOT IN
                 (SELECT id FROM run_reports WHERE pid = ?1 ORDER BY id DESC LIMIT ?2)",
            )?
            .execute(params![pid, keep])?;
        Ok(())
    }

    fn run_reports(&mut self, pid: i64, limit: i64) -> R<Vec<ReportRow>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT id, received_at, command, outcome, run_url, git_commit, platform_commit, conflicts, deferred
                 FROM run_reports WHERE pid = ?1 ORDER BY id DESC LIMIT ?2",
            )?
            .query_map(params![pid, limit], |r| {
                Ok(ReportRow {
                    id: r.get(0)?,
                    received_at: r.get(1)?,
                    command: r.get(2)?,
                    outcome: r.get(3)?,
                    run_url: r.get(4)?,
                    git_commit: r.get(5)?,
                    platform_commit: r.get(6)?,
                    conflicts: r.get(7)?,
                    deferred: r.get(8)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn insert_key(&mut self, k: &KeyRow) -> R<bool> {
        let n = self
            .0
            .prepare_cached(
                "INSERT INTO api_keys (name, hash, scope, projects, expires_unix, created_at, hint)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (name) DO NOTHING",
            )?
            .execute(params![k.name, k.hash, k.scope, k.projects, k.expires_unix, k.created_at, k.hint])?;
        Ok(n > 0)
    }

    fn key_by_name(&mut self, name: &str) -> R<Option<StoredKey>> {
        self.key_where("name", name)
    }

    fn key_by_hash(&mut self, hash: &str) -> R<Option<StoredKey>> {
        self.key_where("hash", hash)
    }

    fn keys(&mut self) -> R<Vec<StoredKey>> {
        let rows = self
            .0
            .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id"))?
            .query_map([], key_columns)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(to_key).collect()
    }

    fn revoke_key(&mut self, name: &str, at: &str) -> R<()> {
        self.0
            .prepare_cached("UPDATE api_keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL")?
            .execute(params![name, at])?;
        Ok(())
    }
}
