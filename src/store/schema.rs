//! The store's SQLite schema and its version.
//!
//! Manifests are versioned rows, not copies: `entries` holds one row per version of a key, live
//! from `from_seq` until `to_seq` (NULL while live), so the manifest at `seq` N is every row with
//! `from_seq <= N AND (to_seq IS NULL OR to_seq > N)`. A commit costs rows in proportion to its
//! changes, whatever the project's size. Text compares bytewise (SQLite's BINARY collation), which
//! is the contract's manifest order by UTF-8 bytes.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// Bumped on any change to the tables below; a store from a newer defsync is refused.
pub const VERSION: i64 = 1;

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

/// Creates the tables on a new store, or checks the version of an existing one.
pub fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let version: Option<i64> = tx.query_row("SELECT version FROM schema_version", [], |r| r.get(0)).optional()?;
    match version {
        None => {
            tx.execute_batch(SCHEMA)?;
            tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [VERSION])?;
        }
        Some(VERSION) => {}
        Some(v) if v > VERSION => anyhow::bail!(
            "the store has schema version {v}, newer than this defsync knows ({VERSION}): use a newer defsync"
        ),
        Some(v) => anyhow::bail!("the store has an unknown schema version {v}"),
    }
    tx.commit()?;
    Ok(())
}
