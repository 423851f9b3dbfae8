//! Tests: operating a real `defsync serve`: the health check (and `serve healthcheck`, which a
//! container's HEALTHCHECK runs), Prometheus metrics, JSON logs, and a graceful stop on SIGTERM.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use defsync::api::client::{ClientOptions, HttpClient};
use defsync::api::{Change, CreateCommit, Origin, OriginType};
use serde_json::{Value, json};

use crate::server::ServerProcess;
use crate::support::{BIN, Run};

const KEY: &str = "ops-full-access-key";

fn client(url: &str, key: &str) -> HttpClient {
    let options = ClientOptions {
        api_key: Some(key.to_owned()),
        timeout: Duration::from_secs(20),
        max_retry_time: Duration::from_secs(2),
        ..Default::default()
    };
    HttpClient::new(url, options).unwrap()
}

fn defsync(args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("DEFSYNC_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run defsync");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Creates a stored key and returns its secret.
fn stored_key(store: &Path, name: &str, scope: &str) -> String {
    let store = store.to_str().unwrap();
    defsync(&["serve", "keys", "create", "--store", store, "--name", name, "--scope", scope])
        .ok()
        .stdout
        .trim()
        .to_owned()
}

fn commit_body(changes: Vec<Change>) -> Vec<u8> {
    let origin = Origin { kind: OriginType::Dashboard, ..Default::default() };
    serde_json::to_vec(&CreateCommit { parent: None, message: "m".into(), origin, changes }).unwrap()
}

async fn get(url: &str, key: Option<&str>) -> (u16, String) {
    let mut r = reqwest::Client::new().get(url);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let answer = r.send().await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

/// The server's logs once they contain `needle` (at most 10 s later).
fn wait_for_log(server: &ServerProcess, needle: &str) -> String {
    for _ in 0..100 {
        let logs = server.logs();
        if logs.contains(needle) {
            return logs;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no {needle:?} in the logs:\n{}", server.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_needs_no_key_checks_the_store_and_serve_healthcheck_reports_it() {
    let (dir, server) = ServerProcess::scratch(KEY);
    let (status, body) = get(&format!("{}/healthz", server.url()), None).await;
    assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap()), (200, json!({"status": "ok"})));
    let healthy = defsync(&["serve", "healthcheck", "--url", &server.url()]);
    assert_eq!(healthy.code, 0, "{healthy:#?}");
    // The image's HEALTHCHECK gives no --url: the address comes from DEFSYNC_LISTEN, and an
    // address on every interface is asked on loopback.
    let port = server.url().rsplit(':').next().unwrap().to_owned();
    let out = Command::new(BIN)
        .args(["serve", "healthcheck"])
        .env("DEFSYNC_LISTEN", format!("0.0.0.0:{port}"))
        .env("DEFSYNC_STORE", dir.path().join("unused.db"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Break the store under the running server: the check fails, with a reason.
    let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    conn.execute_batch("DROP TABLE schema_version").unwrap();
    drop(conn);
    let (status, body) = get(&format!("{}/healthz", server.url()), None).await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, &body["status"]), (503, &json!("unavailable")), "{body}");
    assert!(body["reason"].as_str().unwrap().contains("schema_version"), "{body}");
    let sick = defsync(&["serve", "healthcheck", "--url", &server.url()]);
    assert_eq!(sick.code, 1, "{sick:#?}");
    assert!(sick.stderr.contains("503") && sick.stderr.contains("schema_version"), "{sick:#?}");

    drop(server);
    let gone = defsync(&["serve", "healthcheck", "--url", &format!("http://127.0.0.1:{port}"), "--timeout", "2"]);
    assert_eq!(gone.code, 1, "{gone:#?}");
    assert!(gone.stderr.contains("does not answer"), "{gone:#?}");
}

/// A server whose dispatches never reach GitHub (nothing listens at the API URL), so they stay
/// pending and count as failures.
fn dispatching_server(store: &Path, args: &[&str]) -> ServerProcess {
    let mut all = vec!["--dispatch-repository", "octo/defs", "--github-api-url", "http://127.0.0.1:9"];
    all.extend(args);
    let env = [("DEFSYNC_DISPATCH_TOKEN", "ghp_metricssecret"), ("DEFSYNC_DISPATCH_BACKOFF_MS", "600000")];
    ServerProcess::start_with(store, KEY, &all, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_commits_and_the_outbox_behind_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    let reader = stored_key(&store, "scraper", "read");
    let server = dispatching_server(&store, &[]);
    let c = client(&server.url(), KEY);
    for p in ["p1", "p2", "p3"] {
        c.put_project(p, "x").await.unwrap();
        c.project(p).await.unwrap();
    }
    let put = Change::Put { kind: "workflow".into(), name: "a".into(), spec: json!(1), blob: None };
    c.create_commit("p1", commit_body(vec![put]), "k1").await.unwrap();
    let url = format!("{}/metrics", server.url());
    assert_eq!(get(&url, None).await.0, 401, "metrics on the API's address need a key");
    wait_for_log(&server, "dispatch: cannot start");

    let (status, text) = get(&url, Some(&reader)).await;
    assert_eq!(status, 200, "{text}");
    let has = |line: &str| assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    has(r#"defsync_http_requests_total{method="GET",route="/v1/projects/{project}",status="200"} 3"#);
    has(r#"defsync_http_requests_total{method="PUT",route="/v1/projects/{project}",status="201"} 3"#);
    has(r#"defsync_http_requests_total{method="POST",route="/v1/projects/{project}/commits",status="201"} 1"#);
    has(r#"defsync_http_requests_total{method="GET",route="/metrics",status="401"} 1"#);
    has(r#"defsync_http_request_duration_seconds_count{method="GET",route="/v1/projects/{project}"} 3"#);
    has(r#"defsync_commits_total{origin="dashboard"} 1"#);
    has(r#"defsync_dispatch_outbox{state="pending"} 1"#);
    has("defsync_dispatch_failures_total 1");
    assert!(!text.contains("/v1/projects/p1"), "raw paths make one series per project:\n{text}");
    assert!(!text.contains(KEY) && !text.contains(&reader) && !text.contains("ghp_"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_their_own_address_need_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start_with(&dir.path().join("store.db"), KEY, &["--metrics-listen", "127.0.0.1:0"], &[]);
    let logs = wait_for_log(&server, "defsync serve: metrics on ");
    let metrics_url = logs
        .lines()
        .find_map(|l| l.strip_prefix("defsync serve: metrics on "))
        .expect("the metrics line")
        .trim()
        .to_owned();
    client(&server.url(), KEY).put_project("p1", "x").await.unwrap();
    let (status, text) = get(&metrics_url, None).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains(r#"defsync_http_requests_total{method="PUT",route="/v1/projects/{project}",status="201"} 1"#)
    );
    // Not on the API's address, even with a key.
    assert_eq!(get(&format!("{}/metrics", server.url()), Some(KEY)).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_key_name_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    let writer = stored_key(&store, "ci-writer", "write");
    let server = ServerProcess::start_with(&store, KEY, &[], &[("DEFSYNC_LOG_FORMAT", "json")]);
    client(&server.url(), &writer).put_project("p1", "x").await.unwrap();
    client(&server.url(), KEY).project("p1").await.unwrap();
    assert!(client(&server.url(), &format!("{writer}-wrong")).project("p1").await.is_err());
    let logs = wait_for_log(&server, r#""status":401"#);

    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{logs}")))
        .collect();
    let access: Vec<&Value> = lines.iter().filter(|l| l["message"] == "request").collect();
    assert_eq!(access.len(), 3, "{logs}");
    for l in &access {
        assert!(l["timestamp"].is_string() && l["level"] == "INFO", "{l}");
        assert_eq!(
            (&l["method"], &l["route"]),
            (&json!(if l["status"] == 201 { "PUT" } else { "GET" }), &json!("/v1/projects/{project}")),
            "{l}"
        );
        assert!(l["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{l}");
    }
    let keys: Vec<(&Value, &Value)> = access.iter().map(|l| (&l["status"], &l["key"])).collect();
    assert_eq!(
        keys,
        [(&json!(201), &json!("ci-writer")), (&json!(200), &json!("--key #1")), (&json!(401), &json!("-"))]
    );
    assert!(lines.iter().any(|l| l["level"] == "WARN" && l["message"].as_str().unwrap().contains("--key")), "{logs}");
    assert!(!logs.contains(KEY) && !logs.contains(&writer[8..]), "a key is in the logs:\n{logs}");

    // A refusal to start is a JSON line too.
    let empty = dir.path().join("empty.db");
    let r = defsync(&["serve", "--store", empty.to_str().unwrap(), "--log-format", "json", "--listen", "127.0.0.1:0"]);
    assert_eq!(r.code, 2, "{r:#?}");
    let line: Value = serde_json::from_str(r.stderr.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {r:#?}"));
    assert_eq!(line["level"], "ERROR");
    assert!(line["message"].as_str().unwrap().contains("serve keys create"), "{line}");
}

/// Sends a commit's headers and half its body, and returns the connection and the rest.
fn start_slow_commit(url: &str, project: &str) -> (TcpStream, Vec<u8>) {
    // About 4 MiB of definitions: a real commit that takes a while to send.
    let changes = (0..400)
        .map(|i| Change::Put {
            kind: "workflow".into(),
            name: format!("w{i}"),
            spec: json!({"blob": "x".repeat(10_000)}),
            blob: None,
        })
        .collect();
    let body = commit_body(changes);
    let addr = url.strip_prefix("http://").unwrap();
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /v1/projects/{project}/commits HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: slow-1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    let half = body.len() / 2;
    conn.write_all(&body[..half]).unwrap();
    conn.flush().unwrap();
    (conn, body[half..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_connections_finishes_the_request_in_flight_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("store.db"), KEY);
    let c = client(&server.url(), KEY);
    c.put_project("p1", "x").await.unwrap();
    let (mut conn, rest) = start_slow_commit(&server.url(), "p1");
    // Let the server read the headers and start the request before the signal.
    std::thread::sleep(Duration::from_millis(300));
    server.terminate();
    wait_for_log(&server, "shutting down");
    let addr = server.url().strip_prefix("http://").unwrap().to_owned();
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(&addr).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(refused, "a new connection was accepted after SIGTERM:\n{}", server.logs());

    // The request in flight finishes, and is answered.
    conn.write_all(&rest).unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{}", &answer[..answer.len().min(300)]);
    let status = server.wait();
    assert_eq!(status.code(), Some(0), "{}", server.logs());
    let logs = server.logs();
    assert!(logs.contains("stopped"), "{logs}");

    // The commit is in the store, whole.
    let server = ServerProcess::start(&dir.path().join("store.db"), KEY);
    let (p, _) = client(&server.url(), KEY).project("p1").await.unwrap();
    let head = p.head.expect("the slow commit");
    let manifest = client(&server.url(), KEY).manifest("p1", &head.id).await.unwrap();
    assert_eq!(manifest.entries.len(), 400);
}

/// A GitHub API that takes `delay` to refuse every request with 422 (a permanent error), and
/// says on `seen` when a request arrives.
fn slow_github(delay: Duration) -> (String, mpsc::Receiver<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let _ = conn.read(&mut buf);
                let _ = tx.send(());
                std::thread::sleep(delay);
                let body = r#"{"message": "Unexpected inputs provided"}"#;
                let _ = write!(
                    conn,
                    "HTTP/1.1 422 Unprocessable Entity\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_dispatch_worker_finish_the_dispatch_it_is_sending() {
    let (github, seen) = slow_github(Duration::from_millis(1500));
    let dir = tempfile::tempdir().unwrap();
    let args = ["--dispatch-repository", "octo/defs", "--github-api-url", github.as_str()];
    let env = [("DEFSYNC_DISPATCH_TOKEN", "ghp_x"), ("DEFSYNC_DISPATCH_POLL_MS", "50")];
    let mut server = ServerProcess::start_with(&dir.path().join("store.db"), KEY, &args, &env);
    let c = client(&server.url(), KEY);
    c.put_project("p1", "x").await.unwrap();
    let put = Change::Put { kind: "workflow".into(), name: "a".into(), spec: json!(1), blob: None };
    c.create_commit("p1", commit_body(vec![put]), "k1").await.unwrap();
    seen.recv_timeout(Duration::from_secs(10)).expect("the dispatch reached GitHub");

    // The dispatch is in flight: the signal lets it finish, and its outcome is recorded.
    server.terminate();
    assert_eq!(server.wait().code(), Some(0), "{}", server.logs());
    let logs = server.logs();
    assert!(logs.contains("dispatch: gave up"), "the dispatch in flight was cut off:\n{logs}");
    assert!(logs.contains("dispatch: the worker stopped"), "{logs}");
    let outbox = defsync::store::Store::open(&dir.path().join("store.db")).unwrap().dispatch_outbox(None).unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].state, defsync::store::DispatchState::Failed, "{outbox:?}");
}
