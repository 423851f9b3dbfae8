//! The PostgreSQL backend: several `serve` processes on one database, each with a pool of
//! connections (`r2d2`), each connection keeping its prepared statements, so a statement costs
//! one round trip after its first use.
//!
//! How each write keeps its meaning across processes: a write transaction (READ COMMITTED)
//! starts by locking the project's row (`SELECT … FOR UPDATE`), so two commits, record updates
//! or idempotent replays of one project take turns, and the second sees what the first wrote
//! (its new head, its idempotency row, its new tag). Reads run in one REPEATABLE READ snapshot.
//! The outbox's claim skips rows another process is claiming (`FOR UPDATE SKIP LOCKED`). A
//! transaction that PostgreSQL aborts for racing another (serialization failure 40001, deadlock
//! 40P01, or a unique key taken meanwhile) runs again, a few times, with a growing wait.
//!
//! TLS: `sslmode=require` encrypts with rustls and verifies the server's certificate and name
//! against the system's roots, plus the CA in `PGSSLROOTCERT` (libpq's variable) for a database
//! whose certificate a private CA signed. `disable` and `prefer` (the default) do not encrypt.

use std::collections::HashMap;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{IsolationLevel, NoTls, Row, Statement};

use super::keys::{KEY_COLUMNS, KeyRow, key_of};
use super::outbox::{DueRow, ENTRY_COLUMNS, EntryRow, SentDispatch, entry_from};
use super::runs::ReportRow;
use super::{
    BaseEntry, BaseSet, BranchPush, Commit, Delivery, Key, ManifestEntry, OutboxEntry, ProjectRow, Put, R, RecordRow,
    RunStatus, StoredKey, SyncRecord, TouchedEntry, Tx, TxKind, commit_of, parse_digest, parse_direction, schema,
};
use crate::api::ApiError;

/// Connections per process. A request holds one for one transaction, so this bounds the
/// requests a process has in the database at once; PostgreSQL's default `max_connections` (100)
/// leaves room for several processes.
const POOL_SIZE: u32 = 16;
/// How long a request waits for a free connection (or a new one) before answering 503.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Runs of a transaction that keeps racing others, before the request gives up with 503.
const MAX_RUNS: u32 = 8;
/// The code of the error that asks for another run; it never reaches a client.
const RACED: &str = "transaction_raced";

/// Whether `s` names a PostgreSQL database rather than a SQLite file.
pub(super) fn is_postgres_url(s: &str) -> bool {
    let s = s.trim_start().to_ascii_lowercase();
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// A PostgreSQL connection URL. It never shows its password: not in `Display`, `Debug` or any
/// error. Without a password in the URL, `PGPASSWORD` from the environment is used, which keeps
/// it off command lines.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    /// As given; it may hold the password, so it is never printed.
    url: String,
    /// `postgres://user@host:port/dbname`, for messages.
    shown: String,
}

impl PostgresUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let mut url = url.trim().to_owned();
        // Schemes are case-insensitive; the parser knows them in lower case only.
        if let Some(end) = url.find("://") {
            url.replace_range(..end, &url[..end].to_ascii_lowercase());
        }
        let config: postgres::Config = url.parse().map_err(|e| {
            // The parser's messages name the option, never its value.
            let hint = if url.contains("sslmode=verify") {
                ": defsync supports sslmode=disable, prefer or require; require always verifies the certificate and \
                 the host name (see `sslmode` in the README)"
            } else {
                ""
            };
            format!("the PostgreSQL URL is not valid ({e}){hint}; the form is postgres://USER@HOST:PORT/DATABASE")
        })?;
        let shown = shown(&config);
        Ok(PostgresUrl { url, shown })
    }

    fn config(&self) -> postgres::Config {
        let mut config: postgres::Config = self.url.parse().expect("parsed before");
        if config.get_password().is_none()
            && let Some(password) = std::env::var_os("PGPASSWORD")
        {
            config.password(password.as_encoded_bytes());
        }
        if config.get_user().is_none()
            && let Ok(user) = std::env::var("PGUSER")
        {
            config.user(&user);
        }
        if config.get_application_name().is_none() {
            config.application_name("defsync serve");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECTION_TIMEOUT);
        }
        config
    }

    /// Whether every host is this machine, where an unencrypted connection stays on it.
    fn is_loopback(&self) -> bool {
        self.config().get_hosts().iter().all(|h| match h {
            postgres::config::Host::Tcp(host) => {
                host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
            #[cfg(unix)]
            postgres::config::Host::Unix(_) => true,
        })
    }
}

fn shown(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                postgres::config::Host::Tcp(host) => host.clone(),
                #[cfg(unix)]
                postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    format!("postgres://{user}{}/{}", hosts.join(","), config.get_dbname().unwrap_or_default())
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// PostgreSQL failures: a race asks for another run of the transaction; text PostgreSQL cannot
/// hold (a NUL character) is the client's 422; a lost connection is 503, so clients retry; the
/// rest is the platform's own 500.
impl From<postgres::Error> for ApiError {
    fn from(e: postgres::Error) -> Self {
        let raced = [SqlState::T_R_SERIALIZATION_FAILURE, SqlState::T_R_DEADLOCK_DETECTED, SqlState::UNIQUE_VIOLATION];
        match e.code() {
            Some(code) if raced.contains(code) => ApiError::new(503, RACED, "the transaction raced another"),
            Some(code) if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE => ApiError::new(
                422,
                "invalid",
                "the request holds a NUL character (\\u0000) in a text this platform stores: remove it",
            ),
            _ if e.is_closed() => unavailable("the connection to PostgreSQL was lost"),
            _ => match e.as_db_error() {
                Some(db) => {
                    ApiError::new(500, "internal", format!("store error: {} ({})", db.message(), db.code().code()))
                }
                None => ApiError::new(500, "internal", format!("store error: {e}")),
            },
        }
    }
}

fn unavailable(why: &str) -> ApiError {
    let mut err = ApiError::new(503, "unavailable", format!("the store is busy ({why}); try again"));
    err.retry_after = Some(1);
    err
}

pub(super) struct Postgres {
    pool: r2d2::Pool<Manager>,
}

/// Opens the pool's connections.
struct Manager {
    config: postgres::Config,
    /// For `sslmode=require`.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

/// The TLS connector for `sslmode=require`: the system's roots, and the CA certificates in the
/// PEM file `PGSSLROOTCERT` names, if any. The certificate and the host name are always verified.
fn tls_connector() -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use anyhow::Context as _;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    // A system without a readable store still works with PGSSLROOTCERT.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = std::env::var_os("PGSSLROOTCERT").filter(|p| !p.is_empty()) {
        let shown = std::path::Path::new(&path).display().to_string();
        let mut added = 0;
        for cert in
            CertificateDer::pem_file_iter(&path).with_context(|| format!("cannot read PGSSLROOTCERT {shown}"))?
        {
            let cert = cert.with_context(|| format!("PGSSLROOTCERT {shown} is not a PEM file of certificates"))?;
            roots.add(cert).with_context(|| format!("PGSSLROOTCERT {shown} holds a certificate rustls refuses"))?;
            added += 1;
        }
        if added == 0 {
            anyhow::bail!(
                "PGSSLROOTCERT {shown} holds no certificate: give the PEM file of the CA that signed the database's certificate"
            );
        }
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("cannot set up TLS")?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A pooled connection, with the statements prepared on it.
struct Connection {
    client: postgres::Client,
    statements: HashMap<String, Statement>,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Connection, postgres::Error> {
        let client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone())?,
            None => self.config.connect(NoTls)?,
        };
        Ok(Connection { client, statements: HashMap::new() })
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(drop)
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.client.is_closed()
    }
}

impl Postgres {
    /// Connects, and migrates the schema (one process at a time).
    pub(super) fn open(url: &PostgresUrl) -> anyhow::Result<Self> {
        let config = url.config();
        let require_tls = config.get_ssl_mode() == postgres::config::SslMode::Require;
        if !require_tls && !url.is_loopback() {
            tracing::warn!(
                "the connection to the PostgreSQL store {url} is not encrypted: add sslmode=require to the URL \
                 (with PGSSLROOTCERT for a private CA), or keep it on a private network"
            );
        }
        let tls = require_tls.then(tls_connector).transpose()?;
        let manager = Manager { config, tls };
        // One connection first, for an error that says why (the pool's only says it timed out).
        if let Err(e) = r2d2::ManageConnection::connect(&manager) {
            let cause = with_sources(&e);
            let hint = if cause.contains("certificate") || cause.contains("UnknownIssuer") {
                "the database's TLS certificate is not trusted: set PGSSLROOTCERT to the PEM file of the CA that \
                 signed it"
            } else {
                "check that it runs, and the user and password (PGPASSWORD)"
            };
            anyhow::bail!("cannot connect to the PostgreSQL store {url}: {cause}; {hint}");
        }
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECTION_TIMEOUT)
            .error_handler(Box::new(LogErrors))
            .build(manager)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot connect to the PostgreSQL store {url}: {e}; check that it runs, and the user and \
                     password (PGPASSWORD)"
                )
            })?;
        let mut conn = pool.get().map_err(|e| anyhow::anyhow!("cannot connect to the PostgreSQL store {url}: {e}"))?;
        schema::postgres::migrate(&mut conn.client)
            .map_err(|e| anyhow::anyhow!("cannot set up the PostgreSQL store {url}: {}", describe(&e)))?;
        drop(conn);
        Ok(Postgres { pool })
    }

    #[cfg(test)]
    pub(super) fn execute_for_test(&self, sql: &str) {
        self.pool.get().unwrap().client.batch_execute(sql).unwrap();
    }

    /// Runs `f` in a transaction, again after a race, at most [`MAX_RUNS`] times.
    pub(super) fn transaction<T>(&self, kind: TxKind, f: &mut dyn FnMut(&mut dyn Tx) -> R<T>) -> R<T> {
        let mut run = 1;
        loop {
            match self.run_once(kind, f) {
                Err(e) if e.code == RACED => {
                    if run >= MAX_RUNS {
                        tracing::warn!("a transaction raced others {run} times; answering 503");
                        return Err(unavailable("too many concurrent writes to one project"));
                    }
                    std::thread::sleep(backoff(run));
                    run += 1;
                }
                other => return other,
            }
        }
    }

    fn run_once<T>(&self, kind: TxKind, f: &mut dyn FnMut(&mut dyn Tx) -> R<T>) -> R<T> {
        let mut conn = self.pool.get().map_err(|e| {
            tracing::warn!("no PostgreSQL connection: {e}");
            unavailable("no database connection is free")
        })?;
        let isolation = match kind {
            TxKind::Read => IsolationLevel::RepeatableRead,
            TxKind::Write => IsolationLevel::ReadCommitted,
        };
        let Connection { client, statements } = &mut *conn;
        let tx = client.build_transaction().isolation_level(isolation).read_only(kind == TxKind::Read).start()?;
        let mut tx = PgTx { tx, kind, statements };
        let out = f(&mut tx)?;
        tx.tx.commit()?;
        Ok(out)
    }
}

/// 5, 10, 20 … ms, with jitter, so two racing transactions do not race again in step.
fn backoff(run: u32) -> Duration {
    let base = 5u64 << run.min(6);
    let jitter = u64::from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos(),
    ) % base;
    Duration::from_millis(base + jitter)
}

/// The database's own message for an error, when it is one.
fn describe(e: &anyhow::Error) -> String {
    match e.downcast_ref::<postgres::Error>().and_then(postgres::Error::as_db_error) {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => format!("{e:#}"),
    }
}

/// An error and its causes, `a: b: c`: a TLS failure's reason is in its source.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The pool's connection errors go to the log, with the pool's own wording.
#[derive(Debug)]
struct LogErrors;

impl r2d2::HandleError<postgres::Error> for LogErrors {
    fn handle_error(&self, error: postgres::Error) {
        tracing::warn!("PostgreSQL connection error: {}", with_sources(&error));
    }
}

struct PgTx<'a> {
    tx: postgres::Transaction<'a>,
    kind: TxKind,
    /// The connection's prepared statements, by their text.
    statements: &'a mut HashMap<String, Statement>,
}

const COMMIT_COLUMNS: &str = "id, seq, parent, created_at, message, origin";

fn to_commit(r: &Row) -> R<Commit> {
    commit_of(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get::<_, &str>(5))
}

fn to_key(r: &Row) -> R<StoredKey> {
    key_of(r.get(0), r.get::<_, &str>(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6))
}

impl EntryRow for Row {
    fn int(&self, i: usize) -> R<i64> {
        Ok(self.try_get(i)?)
    }
    fn opt_int(&self, i: usize) -> R<Option<i64>> {
        Ok(self.try_get(i)?)
    }
    fn text(&self, i: usize) -> R<String> {
        Ok(self.try_get(i)?)
    }
    fn opt_text(&self, i: usize) -> R<Option<String>> {
        Ok(self.try_get(i)?)
    }
}

impl PgTx<'_> {
    /// Outbox rows matching `clause` (over `o`, the outbox, and `p`, its project), oldest first.
    fn entries(&mut self, clause: &str, params: &[&(dyn ToSql + Sync)]) -> R<Vec<OutboxEntry>> {
        // A locking suffix goes after ORDER BY.
        let (clause, lock) = match clause.find(" FOR UPDATE") {
            Some(i) => clause.split_at(i),
            None => (clause, ""),
        };
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM dispatch_outbox o JOIN projects p ON p.pid = o.pid WHERE {clause} ORDER BY o.id{lock}"
        );
        self.all(&sql, params)?.iter().map(|r| entry_from(r)).collect()
    }

    /// In a write transaction, the outbox rows read are locked until it ends.
    fn for_update_of_o(&self) -> &'static str {
        match self.kind {
            TxKind::Read => "",
            TxKind::Write => " FOR UPDATE OF o",
        }
    }

    /// `sql` prepared on this connection, once: the texts are the fixed set in this file.
    fn statement(&mut self, sql: &str) -> R<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let statement = self.tx.prepare(sql)?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    fn opt(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> R<Option<Row>> {
        let statement = self.statement(sql)?;
        Ok(self.tx.query_opt(&statement, params)?)
    }

    fn all(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> R<Vec<Row>> {
        let statement = self.statement(sql)?;
        Ok(self.tx.query(&statement, params)?)
    }

    /// Hands each row to `each` as it arrives, rather than all of them at the end as
    /// [`PgTx::all`] does.
    fn each_row(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)], each: &mut dyn FnMut(&Row) -> R<()>) -> R<()> {
        use postgres::fallible_iterator::FallibleIterator;
        let statement = self.statement(sql)?;
        let mut rows = self.tx.query_raw(&statement, params.iter().copied())?;
        while let Some(r) = rows.next()? {
            each(&r)?;
        }
        Ok(())
    }

    fn exec(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> R<u64> {
        let statement = self.statement(sql)?;
        Ok(self.tx.execute(&statement, params)?)
    }

    /// In a write transaction, the rows read are locked until it ends.
    fn for_update(&self) -> &'static str {
        match self.kind {
            TxKind::Read => "",
            TxKind::Write => " FOR UPDATE",
        }
    }
}

impl Tx for PgTx<'_> {
    fn schema_version(&mut self) -> R<i64> {
        let row = self.opt("SELECT version FROM schema_version", &[])?;
        row.map(|r| r.get(0)).ok_or_else(|| super::internal("the store has no schema version"))
    }

    fn project(&mut self, id: &str) -> R<Option<ProjectRow>> {
        let sql = format!("SELECT pid, id, name, head_seq FROM projects WHERE id = $1{}", self.for_update());
        Ok(self.opt(&sql, &[&id])?.map(|r| ProjectRow {
            pid: r.get(0),
            id: r.get(1),
            name: r.get(2),
            head_seq: r.get(3),
        }))
    }

    fn projects(&mut self) -> R<Vec<ProjectRow>> {
        let rows = self.all("SELECT pid, id, name, head_seq FROM projects ORDER BY id", &[])?;
        Ok(rows
            .iter()
            .map(|r| ProjectRow { pid: r.get(0), id: r.get(1), name: r.get(2), head_seq: r.get(3) })
            .collect())
    }

    fn upsert_project(&mut self, id: &str, name: &str, created_at: &str) -> R<bool> {
        // xmax is 0 on a row this statement inserted, and set on one it updated.
        let row = self.opt(
            "INSERT INTO projects (id, name, head_seq, created_at) VALUES ($1, $2, 0, $3)
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name RETURNING (xmax = 0)",
            &[&id, &name, &created_at],
        )?;
        Ok(row.is_some_and(|r| r.get(0)))
    }

    fn set_head(&mut self, pid: i64, seq: i64) -> R<()> {
        self.exec("UPDATE projects SET head_seq = $2 WHERE pid = $1", &[&pid, &seq]).map(drop)
    }

    fn commit_by_seq(&mut self, pid: i64, seq: i64) -> R<Option<Commit>> {
        let sql = format!("SELECT {COMMIT_COLUMNS} FROM commits WHERE pid = $1 AND seq = $2");
        self.opt(&sql, &[&pid, &seq])?.as_ref().map(to_commit).transpose()
    }

    fn commit_by_id(&mut self, pid: i64, id: &str) -> R<Option<Commit>> {
        let sql = format!("SELECT {COMMIT_COLUMNS} FROM commits WHERE pid = $1 AND id = $2");
        self.opt(&sql, &[&pid, &id])?.as_ref().map(to_commit).transpose()
    }

    fn commits_after(&mut self, pid: i64, after_seq: i64, limit: u32) -> R<Vec<Commit>> {
        let sql = format!("SELECT {COMMIT_COLUMNS} FROM commits WHERE pid = $1 AND seq > $2 ORDER BY seq LIMIT $3");
        self.all(&sql, &[&pid, &after_seq, &i64::from(limit)])?.iter().map(to_commit).collect()
    }

    fn insert_commit(&mut self, pid: i64, c: &Commit, origin: &str) -> R<()> {
        self.exec(
            "INSERT INTO commits (pid, seq, id, parent, created_at, message, origin) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&pid, &(c.seq as i64), &c.id, &c.parent, &c.created_at, &c.message, &origin],
        )
        .map(drop)
    }

    fn live_digests(&mut self, pid: i64, keys: &[Key<'_>]) -> R<Vec<Option<String>>> {
        let (kinds, names): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
        let rows = self.all(
            "SELECT k.i, e.digest FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS k(kind, name, i)
             JOIN entries e ON e.pid = $1 AND e.kind = k.kind AND e.name = k.name AND e.to_seq IS NULL",
            &[&pid, &kinds, &names],
        )?;
        let mut digests = vec![None; keys.len()];
        for r in rows {
            let i = usize::try_from(r.get::<_, i64>(0) - 1).map_err(|e| super::internal(e.to_string()))?;
            digests[i] = Some(r.get(1));
        }
        Ok(digests)
    }

    fn close_entries(&mut self, pid: i64, keys: &[Key<'_>], seq: i64) -> R<()> {
        let (kinds, names): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
        self.exec(
            "UPDATE entries e SET to_seq = $4 FROM unnest($2::text[], $3::text[]) AS k(kind, name)
             WHERE e.pid = $1 AND e.kind = k.kind AND e.name = k.name AND e.to_seq IS NULL",
            &[&pid, &kinds, &names, &seq],
        )
        .map(drop)
    }

    fn open_entries(&mut self, pid: i64, puts: &[Put<'_>], seq: i64) -> R<()> {
        let kinds: Vec<&str> = puts.iter().map(|p| p.0).collect();
        let names: Vec<&str> = puts.iter().map(|p| p.1).collect();
        let digests: Vec<String> = puts.iter().map(|p| p.2.digest.to_string()).collect();
        let sizes: Vec<i64> = puts.iter().map(|p| p.2.size).collect();
        let specs: Vec<&str> = puts.iter().map(|p| p.2.spec_json.as_str()).collect();
        self.exec(
            "INSERT INTO entries (pid, kind, name, digest, size, from_seq)
             SELECT $1, kind, name, digest, size, $6
             FROM unnest($2::text[], $3::text[], $4::text[], $5::int8[]) AS u(kind, name, digest, size)",
            &[&pid, &kinds, &names, &digests, &sizes, &seq],
        )?;
        self.exec(
            "INSERT INTO objects (pid, digest, kind, name, spec, size)
             SELECT $1, digest, kind, name, spec, size
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int8[]) AS u(digest, kind, name, spec, size)
             ON CONFLICT (pid, digest) DO NOTHING",
            &[&pid, &digests, &kinds, &names, &specs, &sizes],
        )
        .map(drop)
    }

    fn manifest_each(&mut self, pid: i64, seq: Option<i64>, each: &mut dyn FnMut(ManifestEntry) -> R<()>) -> R<()> {
        let row = |r: &Row| -> R<ManifestEntry> {
            Ok(ManifestEntry {
                kind: r.get(0),
                name: r.get(1),
                digest: parse_digest(r.get(2))?,
                size: r.get::<_, i64>(3) as u64,
            })
        };
        match seq {
            None => self.each_row(
                "SELECT kind, name, digest, size FROM entries WHERE pid = $1 AND to_seq IS NULL ORDER BY kind, name",
                &[&pid],
                &mut |r| each(row(r)?),
            ),
            Some(seq) => self.each_row(
                "SELECT kind, name, digest, size FROM entries
                 WHERE pid = $1 AND from_seq <= $2 AND (to_seq IS NULL OR to_seq > $2) ORDER BY kind, name",
                &[&pid, &seq],
                &mut |r| each(row(r)?),
            ),
        }
    }

    fn live_since(&mut self, pid: i64) -> R<Vec<(String, String, i64)>> {
        let rows = self.all("SELECT kind, name, from_seq FROM entries WHERE pid = $1 AND to_seq IS NULL", &[&pid])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    fn entries_touched(&mut self, pid: i64, lo: i64, hi: i64) -> R<Vec<TouchedEntry>> {
        let rows = self.all(
            "SELECT kind, name, from_seq, to_seq FROM entries
             WHERE pid = $1 AND ((from_seq BETWEEN $2 AND $3) OR (to_seq BETWEEN $2 AND $3))",
            &[&pid, &lo, &hi],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
    }

    fn object(&mut self, pid: i64, digest: &str) -> R<Option<(String, String, String, i64)>> {
        Ok(self
            .opt("SELECT kind, name, spec, size FROM objects WHERE pid = $1 AND digest = $2", &[&pid, &digest])?
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))))
    }

    fn record(&mut self, pid: i64) -> R<Option<RecordRow>> {
        let row = self.opt(
            "SELECT repository, ref, path, direction, commit_id, seq, git_commit, updated_at, etag_salt, etag_version
             FROM sync_records WHERE pid = $1",
            &[&pid],
        )?;
        row.map(|r| {
            Ok(RecordRow {
                record: SyncRecord {
                    repository: r.get(0),
                    git_ref: r.get(1),
                    path: r.get(2),
                    direction: parse_direction(r.get(3))?,
                    commit: r.get(4),
                    seq: r.get::<_, i64>(5) as u64,
                    git_commit: r.get(6),
                    updated_at: r.get(7),
                },
                salt: r.get(8),
                version: r.get(9),
            })
        })
        .transpose()
    }

    fn put_record(&mut self, pid: i64, row: &RecordRow) -> R<()> {
        let r = &row.record;
        self.exec(
            "INSERT INTO sync_records
             (pid, repository, ref, path, direction, commit_id, seq, git_commit, updated_at, etag_salt, etag_version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (pid) DO UPDATE SET repository = EXCLUDED.repository, ref = EXCLUDED.ref,
               path = EXCLUDED.path, direction = EXCLUDED.direction, commit_id = EXCLUDED.commit_id,
               seq = EXCLUDED.seq, git_commit = EXCLUDED.git_commit, updated_at = EXCLUDED.updated_at,
               etag_salt = EXCLUDED.etag_salt, etag_version = EXCLUDED.etag_version",
            &[
                &pid,
                &r.repository,
                &r.git_ref,
                &r.path,
                &r.direction.as_str(),
                &r.commit,
                &(r.seq as i64),
                &r.git_commit,
                &r.updated_at,
                &row.salt,
                &row.version,
            ],
        )
        .map(drop)
    }

    fn record_git_commit(&mut self, pid: i64, c: &Commit) -> R<()> {
        self.exec(
            "UPDATE sync_records SET commit_id = $2, seq = GREATEST(seq, $3), git_commit = $4, updated_at = $5,
             etag_version = etag_version + 1 WHERE pid = $1",
            &[&pid, &c.id, &(c.seq as i64), &c.origin.git_commit, &c.created_at],
        )
        .map(drop)
    }

    fn base_each(&mut self, pid: i64, each: &mut dyn FnMut(BaseEntry) -> R<()>) -> R<()> {
        self.each_row(
            "SELECT kind, name, digest, blob FROM base WHERE pid = $1 ORDER BY kind, name",
            &[&pid],
            &mut |r| {
                each(BaseEntry { kind: r.get(0), name: r.get(1), digest: parse_digest(r.get(2))?, blob: r.get(3) })
            },
        )
    }

    fn base_set(&mut self, pid: i64, entries: &[BaseSet<'_>]) -> R<()> {
        let kinds: Vec<&str> = entries.iter().map(|e| e.0.0).collect();
        let names: Vec<&str> = entries.iter().map(|e| e.0.1).collect();
        let digests: Vec<&str> = entries.iter().map(|e| e.1.as_str()).collect();
        let blobs: Vec<Option<&str>> = entries.iter().map(|e| e.2).collect();
        self.exec(
            "INSERT INTO base (pid, kind, name, digest, blob)
             SELECT $1, kind, name, digest, blob
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(kind, name, digest, blob)
             ON CONFLICT (pid, kind, name) DO UPDATE SET digest = EXCLUDED.digest, blob = EXCLUDED.blob",
            &[&pid, &kinds, &names, &digests, &blobs],
        )
        .map(drop)
    }

    fn base_remove(&mut self, pid: i64, keys: &[Key<'_>]) -> R<()> {
        let (kinds, names): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
        self.exec(
            "DELETE FROM base b USING unnest($2::text[], $3::text[]) AS k(kind, name)
             WHERE b.pid = $1 AND b.kind = k.kind AND b.name = k.name",
            &[&pid, &kinds, &names],
        )
        .map(drop)
    }

    fn base_clear(&mut self, pid: i64) -> R<()> {
        self.exec("DELETE FROM base WHERE pid = $1", &[&pid]).map(drop)
    }

    fn idempotency(&mut self, pid: i64, key: &str) -> R<Option<(Vec<u8>, i64, i64)>> {
        Ok(self
            .opt(
                "SELECT body_sha256, commit_seq, created_unix FROM idempotency WHERE pid = $1 AND key = $2",
                &[&pid, &key],
            )?
            .map(|r| (r.get(0), r.get(1), r.get(2))))
    }

    fn put_idempotency(&mut self, pid: i64, key: &str, body_sha256: &[u8], seq: i64, now_unix: i64) -> R<()> {
        self.exec(
            "INSERT INTO idempotency (pid, key, body_sha256, commit_seq, created_unix) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (pid, key) DO UPDATE SET body_sha256 = EXCLUDED.body_sha256,
               commit_seq = EXCLUDED.commit_seq, created_unix = EXCLUDED.created_unix",
            &[&pid, &key, &body_sha256, &seq, &now_unix],
        )
        .map(drop)
    }

    fn expire_idempotency(&mut self, before_unix: i64) -> R<()> {
        self.exec("DELETE FROM idempotency WHERE created_unix < $1", &[&before_unix]).map(drop)
    }

    fn enqueue_dispatch(&mut self, pid: i64, c: &Commit, now_ms: i64) -> R<i64> {
        let row = self.opt(
            "INSERT INTO dispatch_outbox (pid, commit_id, seq, created_at, state, attempts, next_attempt_ms)
             VALUES ($1, $2, $3, $4, 'pending', 0, $5) RETURNING id",
            &[&pid, &c.id, &(c.seq as i64), &c.created_at, &now_ms],
        )?;
        row.map(|r| r.get(0)).ok_or_else(|| super::internal("the outbox row was not inserted"))
    }

    fn due_dispatches(&mut self, now_ms: i64) -> R<Vec<DueRow>> {
        // A row another process is claiming is skipped, not waited for; once that claim
        // commits, the row's next_attempt_ms (its lease) is in the future, so it is not due.
        let rows = self.all(
            "SELECT o.id, o.pid, p.id, o.seq, o.commit_id, o.attempts
             FROM dispatch_outbox o JOIN projects p ON p.pid = o.pid
             WHERE o.state = 'pending' AND o.next_attempt_ms <= $1
               AND o.id = (SELECT id FROM dispatch_outbox
                           WHERE pid = o.pid AND state = 'pending' AND next_attempt_ms <= $1
                           ORDER BY seq DESC, id DESC LIMIT 1)
             ORDER BY o.next_attempt_ms, o.id
             FOR UPDATE OF o SKIP LOCKED",
            &[&now_ms],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect())
    }

    fn coalesce_dispatches(&mut self, pid: i64, id: i64, seq: i64, done_at: &str, into: &str) -> R<Vec<String>> {
        Ok(self
            .all(
                "UPDATE dispatch_outbox SET state = 'coalesced', done_at = $3, coalesced_into = $4
                 WHERE pid = $1 AND state = 'pending' AND seq <= $2 AND id <> $5 RETURNING commit_id",
                &[&pid, &seq, &done_at, &into, &id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn schedule_dispatch(&mut self, id: i64, attempts: u32, next_attempt_ms: i64) -> R<()> {
        self.exec(
            "UPDATE dispatch_outbox SET attempts = $2, next_attempt_ms = $3 WHERE id = $1",
            &[&id, &i64::from(attempts), &next_attempt_ms],
        )
        .map(drop)
    }

    fn dispatch_attempts(&mut self, id: i64) -> R<Option<i64>> {
        let sql = format!("SELECT attempts FROM dispatch_outbox WHERE id = $1{}", self.for_update());
        Ok(self.opt(&sql, &[&id])?.map(|r| r.get(0)))
    }

    fn dispatch_done(&mut self, id: i64, done_at: &str, sent_ms: i64, sent: &SentDispatch<'_>) -> R<bool> {
        let run_id = sent.run_id.map(|n| n as i64);
        let n = self.exec(
            "UPDATE dispatch_outbox SET state = 'done', done_at = $2, run_id = $3, run_url = $4, last_error = NULL,
             forge = $5, target = $6, sent_ms = $7, run_status = NULL, run_conclusion = NULL, run_updated_at = NULL
             WHERE id = $1",
            &[&id, &done_at, &run_id, &sent.run_url, &sent.forge, &sent.target, &sent_ms],
        )?;
        Ok(n > 0)
    }

    fn dispatch_failed(&mut self, id: i64, error: &str, done_at: &str) -> R<()> {
        self.exec(
            "UPDATE dispatch_outbox SET state = 'failed', last_error = $2, done_at = $3 WHERE id = $1",
            &[&id, &error, &done_at],
        )
        .map(drop)
    }

    fn dispatch_retry(&mut self, id: i64, error: &str, next_attempt_ms: i64) -> R<()> {
        self.exec(
            "UPDATE dispatch_outbox SET last_error = $2, next_attempt_ms = $3 WHERE id = $1",
            &[&id, &error, &next_attempt_ms],
        )
        .map(drop)
    }

    fn outbox(&mut self, project: Option<&str>) -> R<Vec<OutboxEntry>> {
        self.entries("$1::text IS NULL OR p.id = $1", &[&project])
    }

    fn outbox_counts(&mut self) -> R<Vec<(String, i64)>> {
        Ok(self
            .all("SELECT state, count(*) FROM dispatch_outbox GROUP BY state ORDER BY state", &[])?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn outbox_row(&mut self, id: i64) -> R<Option<OutboxEntry>> {
        Ok(self.entries("o.id = $1", &[&id])?.pop())
    }

    fn outbox_by_run(&mut self, forge: &str, target: &str, run_id: i64) -> R<Vec<OutboxEntry>> {
        let sql = format!("o.run_id = $3 AND o.forge = $1 AND lower(o.target) = lower($2){}", self.for_update_of_o());
        self.entries(&sql, &[&forge, &target, &run_id])
    }

    fn set_run_status(
        &mut self,
        id: i64,
        status: RunStatus,
        conclusion: Option<&str>,
        run_url: Option<&str>,
        at: &str,
    ) -> R<()> {
        self.exec(
            "UPDATE dispatch_outbox SET run_status = $2, run_conclusion = $3, run_url = COALESCE($4, run_url),
             run_updated_at = $5, last_error = CASE WHEN $2 = 'not_started' THEN last_error END WHERE id = $1",
            &[&id, &status.as_str(), &conclusion, &run_url, &at],
        )
        .map(drop)
    }

    fn set_dispatch_error(&mut self, id: i64, error: &str) -> R<()> {
        self.exec("UPDATE dispatch_outbox SET last_error = $2 WHERE id = $1", &[&id, &error]).map(drop)
    }

    fn attach_run(&mut self, forge: &str, target: &str, commit_id: &str, run_id: i64) -> R<Option<i64>> {
        Ok(self
            .opt(
                "UPDATE dispatch_outbox SET run_id = $4 WHERE id = (
                   SELECT id FROM dispatch_outbox WHERE commit_id = $3 AND forge = $1 AND lower(target) = lower($2)
                     AND state = 'done' AND run_id IS NULL ORDER BY id DESC LIMIT 1 FOR UPDATE)
                 RETURNING id",
                &[&forge, &target, &commit_id, &run_id],
            )?
            .map(|r| r.get(0)))
    }

    fn awaiting_run(&mut self, sent_before_ms: i64) -> R<Vec<i64>> {
        // Skips rows a webhook is updating in another process: the next sweep sees them.
        Ok(self
            .all(
                "SELECT id FROM dispatch_outbox WHERE state = 'done' AND run_id IS NULL AND run_status IS NULL
                 AND sent_ms IS NOT NULL AND sent_ms < $1 ORDER BY id FOR UPDATE SKIP LOCKED",
                &[&sent_before_ms],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn pending_dispatch(&mut self, pid: i64, seq: i64) -> R<Option<i64>> {
        Ok(self
            .opt(
                "SELECT id FROM dispatch_outbox WHERE pid = $1 AND seq = $2 AND state = 'pending'
                 ORDER BY id DESC LIMIT 1",
                &[&pid, &seq],
            )?
            .map(|r| r.get(0)))
    }

    fn reset_dispatch(&mut self, id: i64, now_ms: i64) -> R<()> {
        self.exec(
            "UPDATE dispatch_outbox SET state = 'pending', attempts = 0, next_attempt_ms = $2, done_at = NULL
             WHERE id = $1",
            &[&id, &now_ms],
        )
        .map(drop)
    }

    fn dispatched_to(&mut self, forge: &str, target: &str) -> R<bool> {
        Ok(self
            .opt(
                "SELECT 1 FROM dispatch_outbox WHERE forge = $1 AND lower(target) = lower($2) LIMIT 1",
                &[&forge, &target],
            )?
            .is_some())
    }

    fn insert_delivery(&mut self, d: &Delivery, expires_ms: i64) -> R<bool> {
        let n = self.exec(
            "INSERT INTO webhook_deliveries (forge, delivery_id, event, received_ms, expires_ms, body)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (forge, delivery_id) DO NOTHING",
            &[&d.forge, &d.delivery_id, &d.event, &d.received_ms, &expires_ms, &d.body],
        )?;
        Ok(n > 0)
    }

    fn expire_deliveries(&mut self, now_ms: i64) -> R<()> {
        self.exec("DELETE FROM webhook_deliveries WHERE expires_ms < $1 AND body IS NULL", &[&now_ms]).map(drop)
    }

    fn unprocessed_deliveries(&mut self) -> R<Vec<Delivery>> {
        Ok(self
            .all(
                "SELECT forge, delivery_id, event, received_ms, body FROM webhook_deliveries
                 WHERE body IS NOT NULL ORDER BY received_ms, delivery_id",
                &[],
            )?
            .iter()
            .map(|r| Delivery {
                forge: r.get(0),
                delivery_id: r.get(1),
                event: r.get(2),
                received_ms: r.get(3),
                body: r.get(4),
            })
            .collect())
    }

    fn delivery_processed(&mut self, forge: &str, delivery_id: &str, at: &str) -> R<()> {
        self.exec(
            "UPDATE webhook_deliveries SET body = NULL, processed_at = $3 WHERE forge = $1 AND delivery_id = $2",
            &[&forge, &delivery_id, &at],
        )
        .map(drop)
    }

    fn put_branch_push(&mut self, p: &BranchPush) -> R<()> {
        self.exec(
            "INSERT INTO branch_pushes (forge, repository, ref, after_sha, at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (forge, repository, ref) DO UPDATE SET after_sha = EXCLUDED.after_sha, at = EXCLUDED.at",
            &[&p.forge, &p.repository, &p.git_ref, &p.after, &p.at],
        )
        .map(drop)
    }

    fn branch_pushes(&mut self, forge: &str, repository: &str) -> R<Vec<BranchPush>> {
        Ok(self
            .all(
                "SELECT forge, repository, ref, after_sha, at FROM branch_pushes
                 WHERE forge = $1 AND lower(repository) = lower($2) ORDER BY ref",
                &[&forge, &repository],
            )?
            .iter()
            .map(|r| BranchPush {
                forge: r.get(0),
                repository: r.get(1),
                git_ref: r.get(2),
                after: r.get(3),
                at: r.get(4),
            })
            .collect())
    }

    fn insert_run_report(&mut self, pid: i64, r: &ReportRow) -> R<i64> {
        let row = self.opt(
            "INSERT INTO run_reports (pid, received_at, command, outcome, run_url, git_commit, platform_commit,
             conflicts, deferred) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            &[
                &pid,
                &r.received_at,
                &r.command,
                &r.outcome,
                &r.run_url,
                &r.git_commit,
                &r.platform_commit,
                &r.conflicts,
                &r.deferred,
            ],
        )?;
        row.map(|r| r.get(0)).ok_or_else(|| super::internal("the run report was not inserted"))
    }

    fn trim_run_reports(&mut self, pid: i64, keep: i64) -> R<()> {
        self.exec(
            "DELETE FROM run_reports WHERE pid = $1 AND id NOT IN
             (SELECT id FROM run_reports WHERE pid = $1 ORDER BY id DESC LIMIT $2)",
            &[&pid, &keep],
        )
        .map(drop)
    }

    fn run_reports(&mut self, pid: i64, limit: i64) -> R<Vec<ReportRow>> {
        Ok(self
            .all(
                "SELECT id, received_at, command, outcome, run_url, git_commit, platform_commit, conflicts, deferred
                 FROM run_reports WHERE pid = $1 ORDER BY id DESC LIMIT $2",
                &[&pid, &limit],
            )?
            .iter()
            .map(|r| ReportRow {
                id: r.get(0),
                received_at: r.get(1),
                command: r.get(2),
                outcome: r.get(3),
                run_url: r.get(4),
                git_commit: r.get(5),
                platform_commit: r.get(6),
                conflicts: r.get(7),
                deferred: r.get(8),
            })
            .collect())
    }

    fn insert_key(&mut self, k: &KeyRow) -> R<bool> {
        let n = self.exec(
            "INSERT INTO api_keys (name, hash, scope, projects, expires_unix, created_at, hint)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
            &[&k.name, &k.hash, &k.scope, &k.projects, &k.expires_unix, &k.created_at, &k.hint],
        )?;
        Ok(n > 0)
    }

    fn key_by_name(&mut self, name: &str) -> R<Option<StoredKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE name = $1");
        self.opt(&sql, &[&name])?.as_ref().map(to_key).transpose()
    }

    fn key_by_hash(&mut self, hash: &str) -> R<Option<StoredKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = $1");
        self.opt(&sql, &[&hash])?.as_ref().map(to_key).transpose()
    }

    fn keys(&mut self) -> R<Vec<StoredKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id");
        self.all(&sql, &[])?.iter().map(to_key).collect()
    }

    fn revoke_key(&mut self, name: &str, at: &str) -> R<()> {
        self.exec("UPDATE api_keys SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL", &[&name, &at]).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreLocation;

    #[test]
    fn urls_select_postgres_and_never_show_the_password() {
        for url in ["postgres://u:s3cr%3Ft@db.example:6543/defs", "PostgreSQL://u:s3cr%3Ft@db.example:6543/defs"] {
            let StoreLocation::Postgres(pg) = StoreLocation::parse(url).unwrap() else { panic!("{url}") };
            assert_eq!(pg.to_string(), "postgres://u@db.example:6543/defs");
            let loc = StoreLocation::Postgres(pg);
            for shown in [format!("{loc}"), format!("{loc:?}")] {
                assert!(!shown.contains("s3cr"), "{shown}");
            }
        }
        assert!(matches!(StoreLocation::parse("./postgres/store.db").unwrap(), StoreLocation::Sqlite(_)));
        let tls = StoreLocation::parse("postgres://u:s3cret@db.example/defs?sslmode=require").unwrap();
        assert!(!format!("{tls} {tls:?}").contains("s3cret"));
        let e = StoreLocation::parse("postgres://u:s3cret@db.example/defs?sslmode=verify-full").unwrap_err();
        assert!(e.contains("sslmode") && !e.contains("s3cret"), "{e}");
    }

    /// Nothing listens on port 1: the error names the server, not the password.
    #[test]
    fn a_failed_connection_does_not_show_the_password() {
        let url = PostgresUrl::parse("postgres://u:s3cret@127.0.0.1:1/defs?connect_timeout=2").unwrap();
        let e = format!("{:#}", Postgres::open(&url).map(drop).unwrap_err());
        assert!(e.contains("postgres://u@127.0.0.1:1/defs") && !e.contains("s3cret"), "{e}");
    }
}
