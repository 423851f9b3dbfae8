//! The PostgreSQL schema: the same tables and version numbers as SQLite's (see `sqlite.rs` for
//! what each holds). Keys, names and IDs are `COLLATE "C"`, so `ORDER BY kind, name` is the
//! contract's manifest order by UTF-8 bytes whatever the database's locale.
//!
//! Migrations run at start-up in one transaction under a transaction-scoped advisory lock: of
//! several `serve` processes starting at once, one migrates and the others wait for it, then
//! find the store at the current version.

use super::{VERSION, check_version};

const SCHEMA: &str = r#"
CREATE TABLE projects (
    pid        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT COLLATE "C" NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    head_seq   BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

CREATE TABLE commits (
    pid        BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    id         TEXT COLLATE "C" NOT NULL,
    parent     TEXT COLLATE "C",
    created_at TEXT NOT NULL,
    message    TEXT NOT NULL,
    origin     TEXT NOT NULL,
    PRIMARY KEY (pid, seq)
);
CREATE UNIQUE INDEX commits_by_id ON commits (pid, id);

CREATE TABLE objects (
    pid    BIGINT NOT NULL,
    digest TEXT COLLATE "C" NOT NULL,
    kind   TEXT COLLATE "C" NOT NULL,
    name   TEXT COLLATE "C" NOT NULL,
    spec   TEXT NOT NULL,
    size   BIGINT NOT NULL
);
CREATE UNIQUE INDEX objects_by_digest ON objects (pid, digest);

CREATE TABLE entries (
    pid      BIGINT NOT NULL,
    kind     TEXT COLLATE "C" NOT NULL,
    name     TEXT COLLATE "C" NOT NULL,
    digest   TEXT COLLATE "C" NOT NULL,
    size     BIGINT NOT NULL,
    from_seq BIGINT NOT NULL,
    to_seq   BIGINT
);
CREATE UNIQUE INDEX entries_live ON entries (pid, kind, name) WHERE to_seq IS NULL;
CREATE INDEX entries_history ON entries (pid, kind, name, from_seq);

CREATE TABLE sync_records (
    pid          BIGINT PRIMARY KEY,
    repository   TEXT NOT NULL,
    ref          TEXT NOT NULL,
    path         TEXT NOT NULL,
    direction    TEXT NOT NULL,
    commit_id    TEXT COLLATE "C",
    seq          BIGINT NOT NULL,
    git_commit   TEXT,
    updated_at   TEXT NOT NULL,
    etag_salt    TEXT NOT NULL,
    etag_version BIGINT NOT NULL
);

CREATE TABLE base (
    pid    BIGINT NOT NULL,
    kind   TEXT COLLATE "C" NOT NULL,
    name   TEXT COLLATE "C" NOT NULL,
    digest TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (pid, kind, name)
);

CREATE TABLE idempotency (
    pid          BIGINT NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    body_sha256  BYTEA NOT NULL,
    commit_seq   BIGINT NOT NULL,
    created_unix BIGINT NOT NULL,
    PRIMARY KEY (pid, key)
);
CREATE INDEX idempotency_by_age ON idempotency (created_unix);
"#;

const V2_DISPATCH_OUTBOX: &str = r#"
CREATE TABLE dispatch_outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pid             BIGINT NOT NULL,
    commit_id       TEXT COLLATE "C" NOT NULL,
    seq             BIGINT NOT NULL,
    created_at      TEXT NOT NULL,
    state           TEXT COLLATE "C" NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    last_error      TEXT,
    done_at         TEXT,
    run_id          BIGINT,
    run_url         TEXT,
    coalesced_into  TEXT COLLATE "C"
);
CREATE UNIQUE INDEX dispatch_outbox_by_commit ON dispatch_outbox (pid, seq);
CREATE INDEX dispatch_outbox_due ON dispatch_outbox (next_attempt_ms) WHERE state = 'pending';
"#;

const V3_API_KEYS: &str = r#"
CREATE TABLE api_keys (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         TEXT COLLATE "C" NOT NULL UNIQUE,
    hash         TEXT COLLATE "C" NOT NULL UNIQUE,
    scope        TEXT NOT NULL,
    projects     TEXT,
    expires_unix BIGINT,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT,
    hint         TEXT NOT NULL
);
"#;

/// Version 4: run status, webhook deliveries, branch pushes and run reports (see `sqlite.rs`).
const V4_RUN_STATUS: &str = r#"
ALTER TABLE dispatch_outbox ADD COLUMN forge TEXT COLLATE "C";
ALTER TABLE dispatch_outbox ADD COLUMN target TEXT COLLATE "C";
ALTER TABLE dispatch_outbox ADD COLUMN run_status TEXT COLLATE "C";
ALTER TABLE dispatch_outbox ADD COLUMN run_conclusion TEXT;
ALTER TABLE dispatch_outbox ADD COLUMN run_updated_at TEXT;
ALTER TABLE dispatch_outbox ADD COLUMN sent_ms BIGINT;
DROP INDEX dispatch_outbox_by_commit;
CREATE INDEX dispatch_outbox_by_commit ON dispatch_outbox (pid, seq);
CREATE INDEX dispatch_outbox_by_run ON dispatch_outbox (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX dispatch_outbox_by_commit_id ON dispatch_outbox (commit_id);

CREATE TABLE webhook_deliveries (
    forge        TEXT COLLATE "C" NOT NULL,
    delivery_id  TEXT COLLATE "C" NOT NULL,
    event        TEXT NOT NULL,
    received_ms  BIGINT NOT NULL,
    expires_ms   BIGINT NOT NULL,
    body         BYTEA,
    processed_at TEXT,
    PRIMARY KEY (forge, delivery_id)
);
CREATE INDEX webhook_deliveries_by_expiry ON webhook_deliveries (expires_ms);

CREATE TABLE branch_pushes (
    forge      TEXT COLLATE "C" NOT NULL,
    repository TEXT COLLATE "C" NOT NULL,
    ref        TEXT COLLATE "C" NOT NULL,
    after_sha  TEXT NOT NULL,
    at         TEXT NOT NULL,
    PRIMARY KEY (forge, repository, ref)
);

CREATE TABLE run_reports (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pid             BIGINT NOT NULL,
    received_at     TEXT NOT NULL,
    command         TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    run_url         TEXT,
    git_commit      TEXT,
    platform_commit TEXT,
    conflicts       TEXT NOT NULL,
    deferred        TEXT NOT NULL
);
CREATE INDEX run_reports_by_project ON run_reports (pid, id);
"#;

/// Version 5: each base entry may carry the Git blob ID that proves its digest (contract v1.2,
/// "Blob proofs"); NULL for entries set without one, such as every entry before this version.
const V5_BASE_BLOB: &str = r#"
ALTER TABLE base ADD COLUMN blob TEXT COLLATE "C";
"#;

/// The statements that take a store from version `n - 1` to `n`, for `n` in 2..=VERSION: the
/// same numbers as SQLite's.
const MIGRATIONS: &[(i64, &str)] = &[(2, V2_DISPATCH_OUTBOX), (3, V3_API_KEYS), (4, V4_RUN_STATUS), (5, V5_BASE_BLOB)];

/// Creates the tables in an empty schema, migrates an older one, or checks the version. The
/// version each start found is logged: exactly one process creates or migrates.
pub fn migrate(client: &mut postgres::Client) -> anyhow::Result<()> {
    let mut tx = client.transaction()?;
    // Per schema, so stores in several schemas of one database (the tests') migrate apart.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('defsync schema ' || current_schema()))", &[])?;
    let encoding: String = tx.query_one("SELECT current_setting('server_encoding')", &[])?.get(0);
    if !encoding.eq_ignore_ascii_case("UTF8") {
        anyhow::bail!(
            "the database's encoding is {encoding}, but defsync stores UTF-8 text: create it with ENCODING 'UTF8'"
        );
    }
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    let version: Option<i64> = tx.query_opt("SELECT version FROM schema_version", &[])?.map(|r| r.get(0));
    let from = match version {
        None => {
            tx.batch_execute(SCHEMA)?;
            tx.execute("INSERT INTO schema_version (version) VALUES (1)", &[])?;
            1
        }
        Some(v) => check_version(v)?,
    };
    for (to, statements) in MIGRATIONS.iter().filter(|(to, _)| *to > from) {
        tx.batch_execute(statements)?;
        tx.execute("UPDATE schema_version SET version = $1", &[to])?;
        if version.is_some() {
            tracing::info!("migrated the store to schema version {to}");
        }
    }
    if version.is_none() {
        tracing::info!("created the store's tables at schema version {VERSION}");
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_have_the_same_versions_as_sqlite() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, (2..=VERSION).collect::<Vec<_>>());
    }
}
