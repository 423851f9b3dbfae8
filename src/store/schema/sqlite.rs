//! The SQLite schema, and its migrations.
//!
//! Manifests are versioned rows, not copies: `entries` holds one row per version of a key, live
//! from `from_seq` until `to_seq` (NULL while live), so the manifest at `seq` N is every row with
//! `from_seq <= N AND (to_seq IS NULL OR to_seq > N)`. A commit costs rows in proportion to its
//! changes, whatever the project's size. Text compares bytewise (SQLite's BINARY collation), which
//! is the contract's manifest order by UTF-8 bytes.
//!
//! A store is migrated forward on open, one version at a time, inside the same transaction that
//! checks the version: a store either is at the new version with all its tables, or untouched.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

#[cfg(test)]
use super::VERSION;
use super::check_version;

const SCHEMA: &str = "
CREATE TABLE projects (
    pid        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    head_seq   INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

CREATE TABLE commits (
    pid        INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    id         TEXT NOT NULL,
    parent     TEXT,
    created_at TEXT NOT NULL,
    message    TEXT NOT NULL,
    origin     TEXT NOT NULL,
    PRIMARY KEY (pid, seq)
);
CREATE UNIQUE INDEX commits_by_id ON commits (pid, id);

-- Every definition any commit ever held, stored as sent, addressed by digest.
CREATE TABLE objects (
    pid    INTEGER NOT NULL,
    digest TEXT NOT NULL,
    kind   TEXT NOT NULL,
    name   TEXT NOT NULL,
    spec   TEXT NOT NULL,
    size   INTEGER NOT NULL
);
CREATE UNIQUE INDEX objects_by_digest ON objects (pid, digest);

CREATE TABLE entries (
    pid      INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    name     TEXT NOT NULL,
    digest   TEXT NOT NULL,
    size     INTEGER NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq   INTEGER
);
-- The head's manifest, in manifest order, and the key lookups of a commit.
CREATE UNIQUE INDEX entries_live ON entries (pid, kind, name) WHERE to_seq IS NULL;
-- Older manifests, in manifest order.
CREATE INDEX entries_history ON entries (pid, kind, name, from_seq);

CREATE TABLE sync_records (
    pid          INTEGER PRIMARY KEY,
    repository   TEXT NOT NULL,
    ref          TEXT NOT NULL,
    path         TEXT NOT NULL,
    direction    TEXT NOT NULL,
    commit_id    TEXT,
    seq          INTEGER NOT NULL,
    git_commit   TEXT,
    updated_at   TEXT NOT NULL,
    etag_salt    TEXT NOT NULL,
    etag_version INTEGER NOT NULL
);

CREATE TABLE base (
    pid    INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    name   TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (pid, kind, name)
) WITHOUT ROWID;

CREATE TABLE idempotency (
    pid          INTEGER NOT NULL,
    key          TEXT NOT NULL,
    body_sha256  BLOB NOT NULL,
    commit_seq   INTEGER NOT NULL,
    created_unix INTEGER NOT NULL,
    PRIMARY KEY (pid, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_by_age ON idempotency (created_unix);
";

/// Version 2: the outbox of pull-workflow dispatches that `defsync serve` sends after commits
/// whose origin is not `git` (see `outbox.rs`). Rows are kept after they are done, so what was
/// dispatched, coalesced or given up on stays queryable.
const V2_DISPATCH_OUTBOX: &str = "
CREATE TABLE dispatch_outbox (
    id              INTEGER PRIMARY KEY,
    pid             INTEGER NOT NULL,
    commit_id       TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    -- pending, done, coalesced (a newer commit's dispatch covered it) or failed (given up).
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    done_at         TEXT,
    run_id          INTEGER,
    run_url         TEXT,
    coalesced_into  TEXT
);
CREATE UNIQUE INDEX dispatch_outbox_by_commit ON dispatch_outbox (pid, seq);
-- The worker's poll: only pending rows, by due time.
CREATE INDEX dispatch_outbox_due ON dispatch_outbox (next_attempt_ms) WHERE state = 'pending';
";

/// Version 3: API keys with a scope (see `keys.rs`). Only the SHA-256 of a key is kept; a
/// revoked key stays, so its name is never reused for another.
const V3_API_KEYS: &str = "
CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    hash         TEXT NOT NULL UNIQUE,
    -- read or write.
    scope        TEXT NOT NULL,
    -- A JSON array of project IDs, or NULL for every project.
    projects     TEXT,
    expires_unix INTEGER,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT,
    hint         TEXT NOT NULL
);
";

/// Version 4: run status (issue 11). Each outbox row learns where its dispatch went (`forge`,
/// `target`) and what became of the run it started, from signed webhooks; Sync now and Retry may
/// queue a second row for one commit, so `(pid, seq)` is no longer unique. Webhook deliveries
/// are kept (by ID, until they expire) to drop duplicates and to finish one that a stop cut off;
/// the last push seen per branch, and the reports runs post, are kept too.
const V4_RUN_STATUS: &str = "
ALTER TABLE dispatch_outbox ADD COLUMN forge TEXT;
ALTER TABLE dispatch_outbox ADD COLUMN target TEXT;
-- queued, in_progress, succeeded, failed or not_started; NULL until something is known.
ALTER TABLE dispatch_outbox ADD COLUMN run_status TEXT;
-- The forge's own word for how the run ended: failure, timed_out, cancelled, ...
ALTER TABLE dispatch_outbox ADD COLUMN run_conclusion TEXT;
ALTER TABLE dispatch_outbox ADD COLUMN run_updated_at TEXT;
-- Unix milliseconds when the forge accepted the dispatch: the not-started clock.
ALTER TABLE dispatch_outbox ADD COLUMN sent_ms INTEGER;
DROP INDEX dispatch_outbox_by_commit;
CREATE INDEX dispatch_outbox_by_commit ON dispatch_outbox (pid, seq);
CREATE INDEX dispatch_outbox_by_run ON dispatch_outbox (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX dispatch_outbox_by_commit_id ON dispatch_outbox (commit_id);

CREATE TABLE webhook_deliveries (
    forge        TEXT NOT NULL,
    delivery_id  TEXT NOT NULL,
    event        TEXT NOT NULL,
    received_ms  INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    -- The verified body, until it is processed; then NULL (the ID stays for deduplication).
    body         BLOB,
    processed_at TEXT,
    PRIMARY KEY (forge, delivery_id)
) WITHOUT ROWID;
CREATE INDEX webhook_deliveries_by_expiry ON webhook_deliveries (expires_ms);

-- The last push seen on each branch.
CREATE TABLE branch_pushes (
    forge      TEXT NOT NULL,
    repository TEXT NOT NULL,
    ref        TEXT NOT NULL,
    after_sha  TEXT NOT NULL,
    at         TEXT NOT NULL,
    PRIMARY KEY (forge, repository, ref)
) WITHOUT ROWID;

CREATE TABLE run_reports (
    id              INTEGER PRIMARY KEY,
    pid             INTEGER NOT NULL,
    received_at     TEXT NOT NULL,
    command         TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    run_url         TEXT,
    git_commit      TEXT,
    platform_commit TEXT,
    -- JSON arrays, as the run sent them.
    conflicts       TEXT NOT NULL,
    deferred        TEXT NOT NULL
);
CREATE INDEX run_reports_by_project ON run_reports (pid, id);
";

/// Version 5: each base entry may carry the Git blob ID that proves its digest (contract v1.2,
/// "Blob proofs"); NULL for entries set without one, such as every entry before this version.
const V5_BASE_BLOB: &str = "
ALTER TABLE base ADD COLUMN blob TEXT;
";

/// The statements that take a store from version `n - 1` to `n`, for `n` in 2..=VERSION.
const MIGRATIONS: &[(i64, &str)] = &[(2, V2_DISPATCH_OUTBOX), (3, V3_API_KEYS), (4, V4_RUN_STATUS), (5, V5_BASE_BLOB)];

/// Creates the tables on a new store, migrates an older one, or checks the version.
pub fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let version: Option<i64> = tx.query_row("SELECT version FROM schema_version", [], |r| r.get(0)).optional()?;
    let from = match version {
        None => {
            tx.execute_batch(SCHEMA)?;
            tx.execute("INSERT INTO schema_version (version) VALUES (1)", [])?;
            1
        }
        Some(v) => check_version(v)?,
    };
    for (to, statements) in MIGRATIONS.iter().filter(|(to, _)| *to > from) {
        tx.execute_batch(statements)?;
        tx.execute("UPDATE schema_version SET version = ?1", [to])?;
        // A new store is created at the latest version: only an existing one is news.
        if version.is_some() {
            tracing::info!("migrated the store to schema version {to}");
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_reach_the_current_version_in_order() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, (2..=VERSION).collect::<Vec<_>>());
    }

    /// A version-1 store (as defsync wrote it before the outbox) is migrated on open, keeps its
    /// data, and gains the outbox and the key table.
    #[test]
    fn a_version_1_store_is_migrated() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);
             INSERT INTO projects (id, name, head_seq, created_at) VALUES ('p1', 'One', 0, 'now');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn.query_row("SELECT version FROM schema_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, VERSION);
        let n: i64 = conn.query_row("SELECT count(*) FROM projects", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
        let n: i64 = conn.query_row("SELECT count(*) FROM dispatch_outbox", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
        let n: i64 = conn.query_row("SELECT count(*) FROM api_keys", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
        let n: i64 = conn.query_row("SELECT count(*) FROM run_reports", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
        // Version 5: base entries kept from before have no blob.
        let n: i64 = conn.query_row("SELECT count(blob) FROM base", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
        // Opening again changes nothing.
        migrate(&mut conn).unwrap();
    }

    #[test]
    fn a_newer_store_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (99);",
        )
        .unwrap();
        let e = migrate(&mut conn).unwrap_err().to_string();
        assert!(e.contains("newer than this defsync knows"), "{e}");
    }
}
