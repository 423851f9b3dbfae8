//! Tests: several real `defsync serve` processes on one PostgreSQL database, raced. Each test
//! works in a scratch schema of its own (dropped at the end), so they run in parallel.
//!
//! They need a PostgreSQL server: `DEFSYNC_TEST_POSTGRES` (CI sets it; `.ci/postgres.sh` starts
//! one), else the default URL below if something answers there; otherwise they are skipped,
//! saying so once. With the variable set, an unreachable server fails them.

use std::io::Write as _;
use std::sync::{Arc, Barrier, Once};
use std::time::{Duration, Instant};

use defsync::store::{DispatchState, OutboxEntry, Store, StoreLocation};
use serde_json::{Value, json};

use crate::github::standin::StandIn;
use crate::server::ServerProcess;

const DEFAULT_TEST_POSTGRES: &str = "postgres://defsync:defsync@127.0.0.1:5432/defsync";
const KEY: &str = "postgres-test-key";
const P: &str = "p1";

/// Runs `f` on a thread of its own: the synchronous PostgreSQL client (in `Store` too) runs a
/// runtime of its own, which cannot start on a thread that drives the test's.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

/// A scratch schema on the test database, dropped when this is.
struct Db {
    /// The URL without its password, scoped to the schema: what `serve` gets.
    url: String,
    /// The password, for `PGPASSWORD`: never on a command line.
    password: String,
    admin: String,
    schema: String,
}

fn test_postgres() -> Option<String> {
    static SKIPPED: Once = Once::new();
    let (url, required) = match std::env::var("DEFSYNC_TEST_POSTGRES") {
        Ok(url) if !url.trim().is_empty() => (url, true),
        _ => (DEFAULT_TEST_POSTGRES.to_owned(), false),
    };
    match postgres::Client::connect(&url, postgres::NoTls) {
        Ok(_) => Some(url),
        Err(e) if required => panic!("DEFSYNC_TEST_POSTGRES is set but PostgreSQL does not answer there: {e}"),
        Err(_) => {
            SKIPPED.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "PostgreSQL tests skipped: set DEFSYNC_TEST_POSTGRES={DEFAULT_TEST_POSTGRES} (or another \
                     database; `.ci/postgres.sh` starts one) to run them"
                );
            });
            None
        }
    }
}

impl Db {
    fn new() -> Option<Db> {
        off_runtime(Db::create)
    }

    fn create() -> Option<Db> {
        let admin = test_postgres()?;
        let schema = format!("defsync_it_{:016x}", rand::random::<u64>());
        postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap()
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .unwrap();
        // postgres://user:password@host… → postgres://user@host…, and the password apart.
        let (scheme, rest) = admin.split_once("://").unwrap();
        let (userinfo, hostpart) = rest.split_once('@').unwrap_or(("", rest));
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let at = if user.is_empty() { String::new() } else { format!("{user}@") };
        let sep = if hostpart.contains('?') { '&' } else { '?' };
        let url = format!("{scheme}://{at}{hostpart}{sep}options=-c%20search_path%3D{schema}");
        Some(Db { url, password: password.to_owned(), admin, schema })
    }

    fn store(&self) -> StoreHere {
        let store =
            off_runtime(|| Store::open_location(&StoreLocation::parse(&self.url_with_password()).unwrap()).unwrap());
        StoreHere(Some(store))
    }

    fn outbox(&self, store: &Store) -> Vec<OutboxEntry> {
        off_runtime(|| store.dispatch_outbox(None).unwrap())
    }

    fn url_with_password(&self) -> String {
        let (scheme, rest) = self.url.split_once("://").unwrap();
        match rest.split_once('@') {
            Some((user, host)) if !self.password.is_empty() => format!("{scheme}://{user}:{}@{host}", self.password),
            _ => self.url.clone(),
        }
    }

    fn serve(&self, args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let mut all_env = vec![("PGPASSWORD", self.password.as_str())];
        all_env.extend_from_slice(env);
        ServerProcess::start_with(std::path::Path::new(&self.url), KEY, args, &all_env)
    }

    fn query_i64(&self, sql: &str) -> i64 {
        off_runtime(|| {
            let mut c = postgres::Client::connect(&self.admin, postgres::NoTls).unwrap();
            c.batch_execute(&format!("SET search_path = {}", self.schema)).unwrap();
            c.query_one(sql, &[]).unwrap().get(0)
        })
    }
}

/// A store opened by the test itself, closed (its pool's connections too) off the runtime.
struct StoreHere(Option<Store>);

impl std::ops::Deref for StoreHere {
    type Target = Store;
    fn deref(&self) -> &Store {
        self.0.as_ref().unwrap()
    }
}

impl Drop for StoreHere {
    fn drop(&mut self) {
        let store = self.0.take();
        off_runtime(move || drop(store));
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        off_runtime(|| {
            if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
            }
        })
    }
}

/// `defsync conformance` passes against `serve` on PostgreSQL as it does on SQLite.
#[test]
fn conformance_passes_against_serve_on_postgres() {
    let Some(db) = Db::new() else { return };
    let server = db.serve(&[], &[]);
    crate::conformance::every_rule_passes(&server.url(), KEY);
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Option<String>, Value) {
    let res = req.bearer_auth(KEY).send().await.unwrap();
    let status = res.status().as_u16();
    let etag = res.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
    let body = res.json().await.unwrap_or(Value::Null);
    (status, etag, body)
}

fn commit_body(parent: Option<&str>, name: &str) -> Value {
    json!({"parent": parent, "message": "m", "origin": {"type": "dashboard"},
           "changes": [{"op": "put", "kind": "workflow", "name": name, "spec": {"v": name}}]})
}

async fn put_project(server: &ServerProcess, id: &str) {
    let (status, _, body) =
        send(http().put(format!("{}/v1/projects/{id}", server.url())).json(&json!({"name": "Project"}))).await;
    assert!(status == 201 || status == 200, "{status} {body}");
}

/// Two processes, N commits at once on the same parent, spread over both: exactly one wins,
/// every other is 409 head_moved naming the winner as the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_commits_on_one_parent_through_two_processes_have_one_winner() {
    let Some(db) = Db::new() else { return };
    let servers = [db.serve(&[], &[]), db.serve(&[], &[])];
    put_project(&servers[0], P).await;
    for round in 0..3 {
        let (_, _, project) = send(http().get(format!("{}/v1/projects/{P}", servers[1].url()))).await;
        let parent = project["head"]["id"].as_str().map(str::to_owned);
        let n = 12;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let url = format!("{}/v1/projects/{P}/commits", servers[i % 2].url());
                let body = commit_body(parent.as_deref(), &format!("r{round}-{i}"));
                tokio::spawn(async move { send(http().post(url).json(&body)).await })
            })
            .collect();
        let mut answers = vec![];
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        let won: Vec<&Value> = answers.iter().filter(|(s, _, _)| *s == 201).map(|(_, _, b)| b).collect();
        assert_eq!(won.len(), 1, "round {round}: {answers:#?}");
        for (status, _, body) in answers.iter().filter(|(s, _, _)| *s != 201) {
            assert_eq!((*status, body["error"]["code"].as_str()), (409, Some("head_moved")), "{body}");
            assert_eq!(body["error"]["head"]["id"], won[0]["id"], "{body}");
        }
        assert_eq!(won[0]["seq"], json!(round + 1));
    }
    assert_eq!(db.query_i64("SELECT count(*) FROM commits"), 3);
}

/// The same Idempotency-Key and body sent to both processes at once: one commit, and both
/// answers are that commit's 201.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_sent_to_two_processes_at_once_makes_one_commit() {
    let Some(db) = Db::new() else { return };
    let servers = [db.serve(&[], &[]), db.serve(&[], &[])];
    put_project(&servers[0], P).await;
    for round in 0..5 {
        let (_, _, project) = send(http().get(format!("{}/v1/projects/{P}", servers[0].url()))).await;
        let parent = project["head"]["id"].as_str().map(str::to_owned);
        let body = commit_body(parent.as_deref(), &format!("w{round}"));
        let key = format!("idem-{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = servers
            .iter()
            .map(|s| {
                let (url, body, key, barrier) =
                    (format!("{}/v1/projects/{P}/commits", s.url()), body.clone(), key.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    send(http().post(url).header("Idempotency-Key", key).json(&body)).await
                })
            })
            .collect();
        let mut answers = vec![];
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        assert_eq!((answers[0].0, answers[1].0), (201, 201), "{answers:#?}");
        assert_eq!(answers[0].2, answers[1].2);
    }
    assert_eq!(db.query_i64("SELECT count(*) FROM commits"), 5);
}

/// If-Match races: two PUT sync with the same tag, through both processes at once: one 200,
/// one 412.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn if_match_races_on_put_sync_have_one_winner() {
    let Some(db) = Db::new() else { return };
    let servers = [db.serve(&[], &[]), db.serve(&[], &[])];
    put_project(&servers[0], P).await;
    for round in 0..5 {
        let (_, etag, _) = send(http().get(format!("{}/v1/projects/{P}", servers[1].url()))).await;
        let etag = etag.unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let url = format!("{}/v1/projects/{P}/sync", s.url());
                let body = json!({"repository": "acme/defs", "ref": "refs/heads/main", "path": format!("p{round}-{i}"),
                                  "direction": "bidirectional", "replace_base": true, "base": []});
                let (etag, barrier) = (etag.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    send(http().put(url).header("If-Match", etag).json(&body)).await
                })
            })
            .collect();
        let mut statuses = vec![];
        for t in tasks {
            statuses.push(t.await.unwrap().0);
        }
        statuses.sort();
        assert_eq!(statuses, [200, 412], "round {round}");
    }
    assert_eq!(db.query_i64("SELECT etag_version FROM sync_records"), 5);
}

/// Two processes starting at once on an empty database: one creates the tables, the other
/// waits for it and finds them.
#[test]
fn two_processes_starting_at_once_migrate_once() {
    let Some(db) = Db::new() else { return };
    let db = Arc::new(db);
    let barrier = Arc::new(Barrier::new(2));
    let starts: Vec<_> = (0..2)
        .map(|_| {
            let (db, barrier) = (db.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                db.serve(&[], &[])
            })
        })
        .collect();
    let servers: Vec<ServerProcess> = starts.into_iter().map(|t| t.join().unwrap()).collect();
    let created = servers.iter().filter(|s| s.logs().contains("created the store's tables at schema version")).count();
    assert_eq!(created, 1, "{}\n---\n{}", servers[0].logs(), servers[1].logs());
    assert_eq!(db.query_i64("SELECT count(*) FROM schema_version"), 1);
    assert_eq!(db.query_i64("SELECT max(version) FROM schema_version"), 4, "version 4: the base's blob column");
    // A newer schema is refused, as SQLite's is.
    drop(servers);
    db.query_i64("WITH u AS (UPDATE schema_version SET version = 99 RETURNING version) SELECT version FROM u");
    let e = Store::open_location(&StoreLocation::parse(&db.url_with_password()).unwrap()).map(drop).unwrap_err();
    assert!(format!("{e:#}").contains("newer than this defsync knows"), "{e:#}");
}

fn dispatch_args(api_url: &str) -> Vec<String> {
    ["--dispatch-repository", "octo/defs", "--github-api-url", api_url].map(str::to_owned).to_vec()
}

const DISPATCH_ENV: [(&str, &str); 3] = [
    ("DEFSYNC_DISPATCH_TOKEN", "ghp_postgrestest"),
    ("DEFSYNC_DISPATCH_POLL_MS", "20"),
    ("DEFSYNC_DISPATCH_BACKOFF_MS", "3000"),
];

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Two processes dispatching from one outbox: every commit's dispatch is sent exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_send_each_dispatch_exactly_once() {
    let Some(db) = Db::new() else { return };
    let standin = StandIn::start("").await;
    let args = dispatch_args(&standin.url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let servers = [db.serve(&args, &DISPATCH_ENV), db.serve(&args, &DISPATCH_ENV)];
    let n = 16;
    let mut commits = vec![];
    for i in 0..n {
        // One project per commit, so no dispatch is coalesced into another.
        let s = &servers[i % 2];
        let project = format!("p{i}");
        put_project(s, &project).await;
        let url = format!("{}/v1/projects/{project}/commits", s.url());
        let (status, _, body) = send(http().post(url).json(&commit_body(None, "a"))).await;
        assert_eq!(status, 201, "{body}");
        commits.push(body["id"].as_str().unwrap().to_owned());
    }
    let store = db.store();
    let all_done = || db.outbox(&store).iter().all(|e| e.state == DispatchState::Done);
    wait_for("every dispatch", || all_done() && standin.state.lock().unwrap().dispatches.len() >= n).await;
    // Time for a duplicate to arrive, if there were one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sent: Vec<String> = standin
        .state
        .lock()
        .unwrap()
        .dispatches
        .iter()
        .map(|d| d["inputs"]["commitId"].as_str().unwrap().to_owned())
        .collect();
    sent.sort();
    commits.sort();
    assert_eq!(sent, commits, "each dispatch exactly once");
    let senders = servers.iter().filter(|s| s.logs().contains("dispatch: started")).count();
    eprintln!("dispatches sent by {senders} of the 2 processes");
}

/// A process killed (SIGKILL) while it holds a claim, its request to GitHub in flight: after
/// the claim's lease (the backoff), the other process sends the dispatch, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_of_a_killed_process_is_taken_over_after_its_lease() {
    let Some(db) = Db::new() else { return };
    // A "GitHub" that accepts the request and never answers: the claim stays held.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_url = format!("http://{}", hang.local_addr().unwrap());
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((socket, _)) = hang.accept().await {
            let _ = arrived_tx.send(Instant::now());
            held.push(socket);
        }
    });
    let hang_args = dispatch_args(&hang_url);
    let hang_args: Vec<&str> = hang_args.iter().map(String::as_str).collect();
    let mut a = db.serve(&hang_args, &DISPATCH_ENV);
    put_project(&a, P).await;
    let (status, _, commit) =
        send(http().post(format!("{}/v1/projects/{P}/commits", a.url())).json(&commit_body(None, "a"))).await;
    assert_eq!(status, 201);
    let claimed_at = tokio::time::timeout(Duration::from_secs(20), arrived.recv()).await.unwrap().unwrap();
    a.kill();

    let standin = StandIn::start("").await;
    let args = dispatch_args(&standin.url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let b = db.serve(&args, &DISPATCH_ENV);
    wait_for("the dispatch by the other process", || !standin.state.lock().unwrap().dispatches.is_empty()).await;
    let waited = claimed_at.elapsed();
    // The lease is the 3 s backoff of a first attempt; the claim was made just before the
    // request arrived.
    assert!(waited >= Duration::from_millis(2500), "taken over after {waited:?}, before the lease ended");
    let store = db.store();
    wait_for("the row to be done", || db.outbox(&store)[0].state == DispatchState::Done).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dispatches = standin.state.lock().unwrap().dispatches.clone();
    assert_eq!(dispatches.len(), 1, "{dispatches:?}");
    assert_eq!(dispatches[0]["inputs"]["commitId"], commit["id"]);
    let row = db.outbox(&store).pop().unwrap();
    assert_eq!(row.attempts, 2, "the killed process's attempt counts: {row:?}");
    assert!(b.logs().contains("dispatch: started"), "{}", b.logs());
}

/// Makes a CA and a certificate for 127.0.0.1 signed by it, with the `openssl` command:
/// `(ca.pem, server.pem, server.key)`.
fn test_certificates(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]
            .into_iter()
            .chain(["-subj", "/CN=defsync test CA", "-addext", "basicConstraints=critical,CA:TRUE"])
            .collect::<Vec<_>>(),
    );
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

/// A proxy that speaks PostgreSQL's TLS opening (an SSLRequest answered `S`, then a TLS
/// handshake with `cert`) and forwards the decrypted stream to `upstream`. It closes any
/// connection that does not ask for TLS first, so a client that skipped TLS fails.
fn tls_proxy(cert: &std::path::Path, key: &std::path::Path, upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // SSLRequest: length 8, then the code 80877103.
                    let mut request = [0u8; 8];
                    if client.read_exact(&mut request).await.is_err() || request != [0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f] {
                        return;
                    }
                    if client.write_all(b"S").await.is_err() {
                        return;
                    }
                    let Ok(mut tls) = acceptor.accept(client).await else { return };
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                });
            }
        });
    });
    addr
}

/// `sslmode=require` encrypts and verifies the certificate and the host: through a proxy that
/// accepts TLS only, `serve` works with the proxy's CA in `PGSSLROOTCERT`, and refuses to start
/// without it, saying why, never showing the password.
#[test]
fn sslmode_require_encrypts_and_verifies_the_certificate() {
    let Some(db) = Db::new() else { return };
    let config: postgres::Config = db.admin.parse().unwrap();
    let postgres::config::Host::Tcp(host) = &config.get_hosts()[0] else { return };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let upstream = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)).unwrap().next().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(certs.path());
    let proxy = tls_proxy(&cert, &key, upstream);
    let hostport = format!("{host}:{port}");
    assert!(db.url.contains(&hostport), "the test URL names its port: {}", db.url);
    let url = format!("{}&sslmode=require", db.url.replacen(&hostport, &proxy.to_string(), 1));

    let server = ServerProcess::start_with(
        std::path::Path::new(&url),
        KEY,
        &[],
        &[("PGPASSWORD", db.password.as_str()), ("PGSSLROOTCERT", ca.to_str().unwrap())],
    );
    let mut stream = std::net::TcpStream::connect(server.url().trim_start_matches("http://")).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: defsync\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(server);

    // Without the CA, the certificate is not trusted: serve does not start.
    let out = std::process::Command::new(crate::support::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--key", KEY, "--store", &url])
        .env("PGPASSWORD", &db.password)
        .env_remove("PGSSLROOTCERT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate") || stderr.contains("UnknownIssuer"), "{stderr}");
    assert!(stderr.contains("PGSSLROOTCERT") && stderr.contains("UnknownIssuer"), "{stderr}");
    // The URL is shown without its password (here the same word as the user's name).
    assert!(!stderr.contains(&format!(":{}@", db.password)), "{stderr}");
}
