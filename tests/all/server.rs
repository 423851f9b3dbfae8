//! Tests: the Sync API of a real `defsync serve` on 127.0.0.1, through the real `HttpClient`.
//!
//! `ServerProcess` runs the binary and is shared with the other test modules. The client's own
//! behaviour (retries, redirects) is tested against tiny local stubs, since those are tests of
//! the client, not of the platform.

#![allow(dead_code)] // other modules use parts of the helper

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use defsync::api::client::{ClientOptions, HttpClient};
use defsync::api::{ApiError, Change, CreateCommit, Direction, ETag, Origin, OriginType, PutSync};
use defsync::digest::Digest;
use defsync::model::Definition;
use defsync::platform::PlatformError;
use serde_json::{Value, json};

use crate::support::BIN;

/// A `defsync serve` child process on a free port of 127.0.0.1.
pub struct ServerProcess {
    child: Option<Child>,
    store: PathBuf,
    key: String,
    url: String,
    logs: Arc<Mutex<Vec<String>>>,
    /// More arguments and environment for `serve`, kept for restarts.
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
}

impl ServerProcess {
    /// Starts `defsync serve` on a new store in a scratch directory, which the caller keeps
    /// alive as long as the server.
    pub fn scratch(key: &str) -> (tempfile::TempDir, ServerProcess) {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::start(&dir.path().join("store.db"), key);
        (dir, server)
    }

    /// Starts `defsync serve` on `store` accepting `key` (none when empty: the store's own keys
    /// only), and waits until it listens.
    pub fn start(store: &Path, key: &str) -> ServerProcess {
        ServerProcess::start_with(store, key, &[], &[])
    }

    /// As [`ServerProcess::start`], with more arguments and environment variables (set after
    /// the inherited `DEFSYNC_*` ones are cleared).
    pub fn start_with(store: &Path, key: &str, args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let mut server = ServerProcess {
            child: None,
            store: store.to_owned(),
            key: key.to_owned(),
            url: String::new(),
            logs: Arc::default(),
            extra_args: args.iter().map(|a| (*a).to_owned()).collect(),
            extra_env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--store"])
            .arg(&self.store)
            .args(if self.key.is_empty() { vec![] } else { vec!["--key", &self.key] })
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("DEFSYNC_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().expect("start defsync serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let logs = self.logs.clone();
        // Reads every line, so the server never blocks on a full pipe; keeps them for failures.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // With --log-format json, the line is the message of a JSON object.
                let message = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| line.clone());
                if let Some(url) = message.strip_prefix("defsync serve: listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
                logs.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => self.url = url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("defsync serve did not start:\n{}", self.logs());
            }
        }
        self.child = Some(child);
    }

    /// The base URL, such as `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// What the server wrote on stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM, as an orchestrator stopping the server does; [`ServerProcess::wait`] then
    /// gives its exit status.
    pub fn terminate(&self) {
        let pid = self.child.as_ref().expect("a running server").id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the server to exit (at most 30 seconds), and returns its exit status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("a running server");
        for _ in 0..300 {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        panic!("defsync serve did not exit within 30 s:\n{}", self.logs());
    }

    /// Starts the server again on the same store (on a new port: read `url()` again).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

const KEY: &str = "server-test-key";
const P: &str = "p1";

fn options(key: Option<&str>) -> ClientOptions {
    ClientOptions {
        api_key: key.map(str::to_owned),
        timeout: Duration::from_secs(20),
        max_retry_time: Duration::from_secs(5),
        ..Default::default()
    }
}

/// A client of the server at `url`, with `key` if any, and the tests' timeouts.
pub(crate) fn client(url: &str, key: Option<&str>) -> HttpClient {
    HttpClient::new(url, options(key)).unwrap()
}

/// A server with project `p1`, and a client for it.
async fn setup() -> (tempfile::TempDir, ServerProcess, HttpClient) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("store.db"), KEY);
    let c = client(&server.url(), Some(KEY));
    let (_, created) = c.put_project(P, "Project one").await.unwrap();
    assert!(created);
    (dir, server, c)
}

fn api(e: PlatformError) -> ApiError {
    match e {
        PlatformError::Api(e) => e,
        other => panic!("expected an API error, got {other}"),
    }
}

fn put(kind: &str, name: &str, spec: Value) -> Change {
    Change::Put { kind: kind.into(), name: name.into(), spec, blob: None }
}

fn delete(kind: &str, name: &str) -> Change {
    Change::Delete { kind: kind.into(), name: name.into() }
}

fn dashboard() -> Origin {
    Origin { kind: OriginType::Dashboard, ..Default::default() }
}

fn git_origin(path: &str) -> Origin {
    Origin {
        kind: OriginType::Git,
        repository: Some("acme/defs".into()),
        git_ref: Some("refs/heads/main".into()),
        path: Some(path.into()),
        git_commit: Some("3f1c".into()),
        run_url: None,
    }
}

fn body(parent: Option<&str>, origin: Origin, changes: Vec<Change>) -> Vec<u8> {
    serde_json::to_vec(&CreateCommit { parent: parent.map(str::to_owned), message: "m".into(), origin, changes })
        .unwrap()
}

fn new_key() -> String {
    format!("test-{:032x}", rand::random::<u128>())
}

async fn head(c: &HttpClient) -> Option<defsync::api::Commit> {
    c.project(P).await.unwrap().0.head
}

/// Commits `changes` on the current head.
async fn commit(c: &HttpClient, origin: Origin, changes: Vec<Change>) -> Result<defsync::api::Commit, ApiError> {
    let parent = head(c).await.map(|h| h.id);
    c.create_commit(P, body(parent.as_deref(), origin, changes), &new_key()).await.map_err(api)
}

fn sync_body(commit: Option<&str>, replace_base: bool, base: Value) -> Vec<u8> {
    let req = PutSync {
        repository: "acme/defs".into(),
        git_ref: "refs/heads/main".into(),
        path: "platform".into(),
        direction: Direction::Bidirectional,
        commit: commit.map(str::to_owned),
        git_commit: None,
        replace_base,
        base: serde_json::from_value(base).unwrap(),
    };
    serde_json::to_vec(&req).unwrap()
}

fn digest(kind: &str, name: &str, spec: Value) -> Digest {
    Definition { kind: kind.into(), name: name.into(), spec }.digest()
}

/// A raw request, for what the typed client never sends.
async fn raw(method: reqwest::Method, url: &str, key: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut r = reqwest::Client::new().request(method, url).body(body);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let answer = r.send().await.unwrap();
    let status = answer.status().as_u16();
    let text = answer.bytes().await.unwrap();
    (status, serde_json::from_slice(&text).unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&text)})))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_needs_a_known_key() {
    let (_d, server, _) = setup().await;
    for key in [None, Some("wrong-key"), Some("server-test-ke")] {
        let e = api(client(&server.url(), key).project(P).await.unwrap_err());
        assert_eq!((e.status, e.code.as_str()), (401, "unauthorized"), "{key:?}");
    }
    let (status, body) = raw(reqwest::Method::GET, &format!("{}/nowhere", server.url()), None, vec![]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    // The server never logs keys.
    assert!(!server.logs().contains(KEY) && !server.logs().contains("wrong-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_things_are_404_and_every_error_is_contract_json() {
    let (_d, server, c) = setup().await;
    let d = digest("w", "a", json!(1));
    assert_eq!(api(c.project("nope").await.unwrap_err()).code, "not_found");
    assert_eq!(api(c.base("nope").await.unwrap_err()).status, 404);
    assert_eq!(api(c.commits("nope", 0, 10).await.unwrap_err()).status, 404);
    assert_eq!(api(c.commit(P, "c_nope").await.unwrap_err()).status, 404);
    assert_eq!(api(c.manifest(P, "c_nope").await.unwrap_err()).status, 404);
    assert_eq!(api(c.batch_get("nope", &[(d, 10)]).await.unwrap_err()).status, 404);
    assert_eq!(api(c.create_commit("nope", body(None, dashboard(), vec![]), "k").await.unwrap_err()).status, 404);
    assert_eq!(api(c.put_sync("nope", &ETag::none(), sync_body(None, true, json!([]))).await.unwrap_err()).status, 404);
    // A commit ID that a URL parser would drop still names a commit, not the list.
    assert_eq!(api(c.commit(P, "..").await.unwrap_err()).status, 404);

    let url = server.url();
    let (status, body) = raw(reqwest::Method::GET, &format!("{url}/v2/x"), Some(KEY), vec![]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = raw(reqwest::Method::DELETE, &format!("{url}/v1/projects/{P}"), Some(KEY), vec![]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (405, Some("method_not_allowed")), "{body}");
    let (status, body) =
        raw(reqwest::Method::POST, &format!("{url}/v1/projects/{P}/commits"), Some(KEY), b"{not json".to_vec()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid")), "{body}");
    let (status, body) =
        raw(reqwest::Method::GET, &format!("{url}/v1/projects/{P}/commits?limit=x"), Some(KEY), vec![]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid")), "{body}");
    let (status, body) =
        raw(reqwest::Method::PUT, &format!("{url}/v1/projects/a%20b"), Some(KEY), br#"{"name": "x"}"#.to_vec()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413() {
    let (_d, server, _) = setup().await;
    let big = vec![b' '; 81 * 1024 * 1024];
    let (status, body) =
        raw(reqwest::Method::POST, &format!("{}/v1/projects/{P}/commits", server.url()), Some(KEY), big).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("payload_too_large")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_commits_and_manifests() {
    let (_d, _server, c) = setup().await;
    let (p, created) = c.put_project(P, "Renamed").await.unwrap();
    assert!(!created);
    assert_eq!(p.name, "Renamed");
    let (p, etag) = c.project(P).await.unwrap();
    assert_eq!((p.head, p.sync, etag.clone()), (None, None, ETag::none()));
    let (base, base_etag) = c.base(P).await.unwrap();
    assert!(base.entries.is_empty());
    assert_eq!(base_etag, etag);

    let c1 = commit(
        &c,
        dashboard(),
        vec![put("workflow", "b", json!({"z": 1, "a": [1.5, "x"]})), put("workflow", "a", json!(null))],
    )
    .await
    .unwrap();
    assert_eq!((c1.seq, c1.parent.as_deref()), (1, None));
    let c2 =
        commit(&c, dashboard(), vec![delete("workflow", "a"), put("connection", "crm/é", json!(true))]).await.unwrap();
    assert_eq!((c2.seq, c2.parent.as_deref()), (2, Some(c1.id.as_str())));
    assert_eq!(c.commit(P, &c1.id).await.unwrap(), c1);
    assert_eq!(c.commits(P, 0, 100).await.unwrap().commits, [c1.clone(), c2.clone()]);
    assert_eq!(c.commits(P, 1, 100).await.unwrap().commits, std::slice::from_ref(&c2));
    assert_eq!(c.commits(P, 0, 1).await.unwrap().commits, std::slice::from_ref(&c1));

    let m1 = c.manifest(P, &c1.id).await.unwrap();
    assert_eq!(m1.commit, c1);
    let keys =
        |m: &defsync::api::Manifest| m.entries.iter().map(|e| format!("{}/{}", e.kind, e.name)).collect::<Vec<_>>();
    assert_eq!(keys(&m1), ["workflow/a", "workflow/b"]);
    let m2 = c.manifest(P, &c2.id).await.unwrap();
    assert_eq!(keys(&m2), ["connection/crm/é", "workflow/b"]);
    let b = Definition { kind: "workflow".into(), name: "b".into(), spec: json!({"z": 1, "a": [1.5, "x"]}) };
    assert_eq!(m2.entries[1].digest, b.digest());
    assert_eq!(m2.entries[1].size, b.canonical().len() as u64);
    // The object comes back as it was sent, key order included.
    let got = c.batch_get(P, &[(b.digest(), 1)]).await.unwrap();
    assert_eq!(serde_json::to_string(&got.objects[0].spec).unwrap(), r#"{"z":1,"a":[1.5,"x"]}"#);
}

/// A GET with the key and optional `If-None-Match`: status, `ETag` and the body's bytes.
async fn get_raw(url: &str, if_none_match: Option<&str>) -> (u16, Option<String>, Vec<u8>) {
    let mut r = reqwest::Client::new().get(url).bearer_auth(KEY);
    if let Some(tag) = if_none_match {
        r = r.header("if-none-match", tag);
    }
    let answer = r.send().await.unwrap();
    let status = answer.status().as_u16();
    let etag = answer.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
    (status, etag, answer.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_is_tagged_by_its_commit_and_answers_304_when_it_matches() {
    let (_d, server, c) = setup().await;
    let c1 = commit(&c, dashboard(), vec![put("workflow", "a", json!({"n": 1}))]).await.unwrap();
    let c2 = commit(&c, dashboard(), vec![put("workflow", "b", json!({"n": 2}))]).await.unwrap();
    let url = |id: &str| format!("{}/v1/projects/{P}/commits/{id}/manifest", server.url());
    let tag = format!("\"{}\"", c1.id);
    let (status, etag, first) = get_raw(&url(&c1.id), None).await;
    assert_eq!((status, etag.as_deref()), (200, Some(tag.as_str())));
    // From the cache now: the same bytes.
    assert_eq!(get_raw(&url(&c1.id), None).await, (200, Some(tag.clone()), first.clone()));
    for matching in [tag.clone(), format!("W/{tag}"), format!("\"x\", {tag}"), "*".into()] {
        let (status, etag, body) = get_raw(&url(&c1.id), Some(&matching)).await;
        assert_eq!((status, etag.as_deref(), body.len()), (304, Some(tag.as_str()), 0), "{matching}");
    }
    // Another commit's tag, or a tag that is not quoted, gets the manifest.
    for other in [format!("\"{}\"", c2.id), c1.id.clone(), "\"\"".into()] {
        assert_eq!(get_raw(&url(&c1.id), Some(&other)).await.2, first, "{other}");
    }
    // A 304 never stands in for a commit that does not exist, cached or not.
    let (status, _, _) = get_raw(&url("no-such-commit"), Some("*")).await;
    assert_eq!(status, 404);
    let (status, etag, _) = get_raw(&url(&c2.id), Some(&format!("\"{}\"", c2.id))).await;
    assert_eq!((status, etag), (304, Some(format!("\"{}\"", c2.id))));
    // The typed client still reads it.
    assert_eq!(c.manifest(P, &c1.id).await.unwrap().commit, c1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_base_and_batch_get_answers_equal_the_serialised_values_byte_for_byte() {
    // The answers are written straight into bytes (and the manifest cached); they must stay
    // exactly what serialising the whole value gives.
    let (_d, server, c) = setup().await;
    let specs = [
        json!({"z": 1, "a": [1.5, "x", null, true], "q": "say \"hi\"\n\u{1}", "é": {"deep": [[], {}]}}),
        json!(12345678000129.125),
        json!("plain"),
        json!([]),
    ];
    let changes: Vec<Change> =
        specs.iter().enumerate().map(|(i, s)| put("workflow", &format!("w/\"{i}\" ü"), s.clone())).collect();
    let c1 = commit(&c, dashboard(), changes).await.unwrap();
    let base: Vec<Value> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"kind": "workflow", "name": format!("w/\"{i}\" ü"), "digest": digest("workflow", &format!("w/\"{i}\" ü"), s.clone())}))
        .collect();
    c.put_sync(P, &ETag::none(), sync_body(Some(&c1.id), true, json!(base))).await.unwrap();

    let store = defsync::store::Store::open(&server.store).unwrap();
    let manifest_url = format!("{}/v1/projects/{P}/commits/{}/manifest", server.url(), c1.id);
    let expected = serde_json::to_vec(&store.manifest(P, &c1.id).unwrap()).unwrap();
    assert_eq!(get_raw(&manifest_url, None).await.2, expected);
    assert_eq!(get_raw(&manifest_url, None).await.2, expected, "cached");
    let expected = serde_json::to_vec(&store.base(P).unwrap().0).unwrap();
    assert_eq!(get_raw(&format!("{}/v1/projects/{P}/sync/base", server.url()), None).await.2, expected);

    let mut digests: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| digest("workflow", &format!("w/\"{i}\" ü"), s.clone()).to_string())
        .collect();
    digests.push(digest("workflow", "never", json!(0)).to_string());
    digests.push(digests[1].clone());
    for asked in [digests.clone(), vec![], vec![digests[4].clone()]] {
        let body = serde_json::to_vec(&json!({"digests": asked})).unwrap();
        let expected = serde_json::to_vec(&store.batch_get(P, &body).unwrap()).unwrap();
        let answer = reqwest::Client::new()
            .post(format!("{}/v1/projects/{P}/objects/batch-get", server.url()))
            .bearer_auth(KEY)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        assert_eq!(answer.bytes().await.unwrap().to_vec(), expected, "{asked:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_refusals() {
    let (_d, _server, c) = setup().await;
    let c1 = commit(&c, dashboard(), vec![put("workflow", "a", json!(1))]).await.unwrap();

    // A stale parent: 409 with the head, nothing written.
    let e = api(c
        .create_commit(P, body(None, dashboard(), vec![put("workflow", "b", json!(1))]), &new_key())
        .await
        .unwrap_err());
    assert_eq!((e.status, e.code.as_str()), (409, "head_moved"));
    assert_eq!(e.extra["head"]["id"], c1.id.as_str());
    assert_eq!(head(&c).await.unwrap(), c1);

    let e = commit(&c, dashboard(), vec![put("workflow", "a", json!(1))]).await.unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (422, "empty_commit"));

    let e = commit(
        &c,
        dashboard(),
        vec![
            put("Bad", "x", json!(1)),
            put("workflow", "y", json!(9007199254740993_u64)),
            delete("workflow", "ghost"),
            put("workflow", "ok", json!(1)),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (422, "invalid"));
    let names: Vec<&str> = e.extra["details"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["x", "y", "ghost"], "{e:?}");

    let e = commit(&c, git_origin("platform"), vec![put("workflow", "g", json!(1))]).await.unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (422, "link_mismatch"));
    assert!(e.message.contains("defsync link"), "{e}");
    c.put_sync(P, &ETag::none(), sync_body(None, true, json!([]))).await.unwrap();
    let e = commit(&c, git_origin("elsewhere"), vec![put("workflow", "g", json!(1))]).await.unwrap_err();
    assert_eq!(e.code, "link_mismatch");
    assert_eq!(c.commits(P, 0, 100).await.unwrap().commits.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries() {
    let (_d, _server, c) = setup().await;
    let b = body(None, dashboard(), vec![put("workflow", "a", json!(1))]);
    let first = c.create_commit(P, b.clone(), "key-1").await.unwrap();
    let again = c.create_commit(P, b.clone(), "key-1").await.unwrap();
    assert_eq!(first, again);
    assert_eq!(c.commits(P, 0, 100).await.unwrap().commits.len(), 1, "the retry wrote nothing");
    let other = body(None, dashboard(), vec![put("workflow", "a", json!(2))]);
    let e = api(c.create_commit(P, other, "key-1").await.unwrap_err());
    assert_eq!((e.status, e.code.as_str()), (422, "idempotency_key_reused"));
    // A refused request is not remembered: the same key may be used again.
    let stale = body(None, dashboard(), vec![put("workflow", "b", json!(1))]);
    assert_eq!(api(c.create_commit(P, stale, "key-2").await.unwrap_err()).code, "head_moved");
    let fixed = body(Some(&first.id), dashboard(), vec![put("workflow", "b", json!(1))]);
    assert_eq!(c.create_commit(P, fixed, "key-2").await.unwrap().seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_and_the_base() {
    let (_d, _server, c) = setup().await;
    let c1 = commit(&c, dashboard(), vec![put("workflow", "dash", json!(1)), put("workflow", "old", json!(1))])
        .await
        .unwrap();
    let (rec, t1) = c.put_sync(P, &ETag::none(), sync_body(None, true, json!([]))).await.unwrap();
    assert_eq!((rec.seq, rec.commit, rec.path.as_str()), (0, None, "platform"));
    let (p, tag) = c.project(P).await.unwrap();
    assert_eq!(tag, t1);
    assert_eq!(p.sync.unwrap().repository, "acme/defs");

    // A git-origin commit moves the record and the base of its keys only.
    let c2 = commit(&c, git_origin("platform"), vec![put("workflow", "g", json!(1)), delete("workflow", "old")])
        .await
        .unwrap();
    let (p, t2) = c.project(P).await.unwrap();
    assert_ne!(t2, t1);
    let rec = p.sync.unwrap();
    assert_eq!((rec.seq, rec.commit.as_deref(), rec.git_commit.as_deref()), (2, Some(c2.id.as_str()), Some("3f1c")));
    let (base, base_tag) = c.base(P).await.unwrap();
    assert_eq!(base_tag, t2);
    let names: Vec<&str> = base.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["g"]);
    // A dashboard commit leaves them alone.
    commit(&c, dashboard(), vec![put("workflow", "dash", json!(2))]).await.unwrap();
    assert_eq!(c.project(P).await.unwrap().1, t2);

    // PUT /sync: stale tag, regression, unknown commit, unknown digest.
    let e = api(c.put_sync(P, &t1, sync_body(None, false, json!([]))).await.unwrap_err());
    assert_eq!((e.status, e.code.as_str()), (412, "precondition_failed"));
    let e = api(c.put_sync(P, &t2, sync_body(Some(&c1.id), false, json!([]))).await.unwrap_err());
    assert_eq!((e.status, e.code.as_str()), (409, "sync_regression"));
    let e = api(c.put_sync(P, &t2, sync_body(Some("c_nope"), false, json!([]))).await.unwrap_err());
    assert_eq!((e.status, e.code.as_str()), (404, "not_found"));
    let malformed = json!({"repository": "acme/defs", "ref": "refs/heads/main", "path": "platform",
        "direction": "bidirectional", "base": [{"kind": "workflow", "name": "dash", "digest": format!("sha256:{}", "A".repeat(64))}]});
    let e = api(c.put_sync(P, &t2, serde_json::to_vec(&malformed).unwrap()).await.unwrap_err());
    assert_eq!((e.status, e.code.as_str()), (422, "invalid"));
    assert_eq!(c.project(P).await.unwrap().1, t2, "refusals change nothing");

    // Contract v1.1: any well-formed digest is a base, even one the platform never held.
    let unknown = digest("workflow", "dash", json!(99));
    let (_, t2) = c
        .put_sync(P, &t2, sync_body(None, false, json!([{"kind": "workflow", "name": "dash", "digest": unknown}])))
        .await
        .unwrap();
    let (base, _) = c.base(P).await.unwrap();
    assert!(base.entries.iter().any(|e| e.name == "dash" && e.digest == unknown), "{base:?}");

    // Agreement on `dash` (an older version is fine: any object of the project), and a removal.
    let dash1 = digest("workflow", "dash", json!(1));
    let (rec, t3) = c
        .put_sync(
            P,
            &t2,
            sync_body(
                None,
                false,
                json!([{"kind": "workflow", "name": "dash", "digest": dash1},
                                        {"kind": "workflow", "name": "g", "digest": null}]),
            ),
        )
        .await
        .unwrap();
    assert_eq!(rec.seq, 2, "an absent commit keeps the record's");
    let (base, tag) = c.base(P).await.unwrap();
    assert_eq!(tag, t3);
    assert_eq!(base.entries.iter().map(|e| (e.name.as_str(), e.digest.clone())).collect::<Vec<_>>(), [("dash", dash1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_get_splits_and_reports_missing() {
    let (_d, _server, c) = setup().await;
    let defs: Vec<Definition> = (0..2300)
        .map(|i| Definition { kind: "workflow".into(), name: format!("w-{i}"), spec: json!({"n": i}) })
        .collect();
    commit(&c, dashboard(), defs.iter().map(|d| put(&d.kind, &d.name, d.spec.clone())).collect()).await.unwrap();
    let mut wanted: Vec<(Digest, u64)> = defs.iter().map(|d| (d.digest(), d.canonical().len() as u64)).collect();
    let unknown = digest("workflow", "never", json!(0));
    wanted.push((unknown.clone(), 10));
    let before = c.requests();
    let got = c.batch_get(P, &wanted).await.unwrap();
    assert_eq!(c.requests() - before, 3, "2301 digests take three requests");
    assert_eq!(got.objects.len(), 2300);
    assert_eq!(got.missing, [unknown]);
    let mut names: Vec<&str> = got.objects.iter().map(|o| o.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 2300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_on_one_parent_have_one_winner() {
    let (_d, server, c) = setup().await;
    let c1 = commit(&c, dashboard(), vec![put("workflow", "a", json!(0))]).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let url = server.url();
        let parent = c1.id.clone();
        tasks.spawn(async move {
            let c = client(&url, Some(KEY));
            c.create_commit(P, body(Some(&parent), dashboard(), vec![put("workflow", "a", json!(i + 1))]), &new_key())
                .await
        });
    }
    let (mut won, mut lost) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(commit) => {
                assert_eq!(commit.seq, 2);
                won += 1;
            }
            Err(e) => {
                let e = api(e);
                assert_eq!((e.status, e.code.as_str()), (409, "head_moved"));
                lost += 1;
            }
        }
    }
    assert_eq!((won, lost), (1, 7));
    assert_eq!(head(&c).await.unwrap().seq, 2);
}

/// Kill -9 in the middle of a burst of commits: every acknowledged commit survives the restart,
/// and the head's manifest holds exactly the keys of the commits up to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_commits_survive_kill_9() {
    let (_d, mut server, _) = setup().await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..4 {
        let url = server.url();
        let acked = acked.clone();
        tasks.spawn(async move {
            let c =
                HttpClient::new(&url, ClientOptions { max_retry_time: Duration::ZERO, ..options(Some(KEY)) }).unwrap();
            for n in 0.. {
                let Ok((p, _)) = c.project(P).await else { return };
                let parent = p.head.map(|h| h.id);
                let change = put("workflow", &format!("w{writer}-{n}"), json!({"n": n}));
                match c.create_commit(P, body(parent.as_deref(), dashboard(), vec![change]), &new_key()).await {
                    Ok(commit) => acked.lock().unwrap().push((commit, format!("w{writer}-{n}"))),
                    Err(PlatformError::Api(e)) if e.is("head_moved") => {}
                    Err(_) => return,
                }
            }
        });
    }
    // Let the burst run, then crash the server under it.
    while acked.lock().unwrap().len() < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    while tasks.join_next().await.is_some() {}
    server.restart();
    let c = client(&server.url(), Some(KEY));
    let acked = acked.lock().unwrap().clone();
    let head = head(&c).await.unwrap();
    let max_acked = acked.iter().map(|(commit, _)| commit.seq).max().unwrap();
    assert!(head.seq >= max_acked);
    for (commit, _) in &acked {
        assert_eq!(&c.commit(P, &commit.id).await.unwrap(), commit);
    }
    let all = c.commits(P, 0, 1000).await.unwrap().commits;
    assert_eq!(all.iter().map(|c| c.seq).collect::<Vec<_>>(), (1..=head.seq).collect::<Vec<_>>());
    for pair in all.windows(2) {
        assert_eq!(pair[1].parent.as_deref(), Some(pair[0].id.as_str()));
    }
    // Each commit added one key: the head's manifest has one entry per commit.
    let manifest = c.manifest(P, &head.id).await.unwrap();
    assert_eq!(manifest.entries.len() as u64, head.seq);
    for (_, name) in &acked {
        assert!(manifest.entries.iter().any(|e| &e.name == name), "{name} is lost");
    }
    // And the server keeps working.
    commit(&c, dashboard(), vec![put("workflow", "after", json!(1))]).await.unwrap();
}

#[test]
fn plain_http_to_another_host_is_refused() {
    let e = HttpClient::new("http://platform.example.com", options(Some(KEY))).unwrap_err().to_string();
    assert!(e.contains("--allow-insecure-http"), "{e}");
    assert!(!e.contains(KEY));
    assert!(
        HttpClient::new("http://platform.example.com", ClientOptions { allow_insecure_http: true, ..options(None) })
            .is_ok()
    );
}

#[test]
fn serve_refuses_to_start_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg(dir.path().join("s.db"))
        .env_remove("DEFSYNC_SERVER_KEYS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a configuration error exits 2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--key") && stderr.contains("DEFSYNC_SERVER_KEYS"), "{stderr}");
}

#[test]
fn serve_takes_keys_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg(dir.path().join("s.db"))
        .env("DEFSYNC_SERVER_KEYS", "k1,k2")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let url = line.strip_prefix("defsync serve: listening on ").expect("the listening line").to_owned();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        assert!(client(&url, Some("k2")).put_project(P, "x").await.is_ok());
        assert_eq!(api(client(&url, Some("k3")).project(P).await.unwrap_err()).status, 401);
    });
    let _ = child.kill();
    let _ = child.wait();
}

/// A stub platform that answers `status` (with `Retry-After: 0`) to the first `failures`
/// requests, then a project; counts requests. Tests the client, not the platform.
async fn flaky(status: u16, failures: u32, extra: Option<(&'static str, &'static str)>) -> (String, Arc<AtomicU32>) {
    let count = Arc::new(AtomicU32::new(0));
    let seen = count.clone();
    let app = axum::Router::new().fallback(move || {
        let seen = seen.clone();
        async move {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let mut r = axum::response::Response::builder();
            if n < failures {
                r = r.status(status).header("retry-after", "0");
                if let Some((k, v)) = extra {
                    r = r.header(k, v);
                }
                r.body(axum::body::Body::from(r#"{"error": {"code": "unavailable", "message": "busy"}}"#)).unwrap()
            } else {
                r.status(200)
                    .header("etag", "\"t1\"")
                    .body(axum::body::Body::from(r#"{"id": "p1", "name": "x", "head": null, "sync": null}"#))
                    .unwrap()
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_retries_503_and_429_honouring_retry_after() {
    for status in [503, 429] {
        let (url, count) = flaky(status, 3, None).await;
        let c = client(&url, Some(KEY));
        let (p, etag) = c.project(P).await.unwrap();
        assert_eq!((p.id.as_str(), etag.0.as_str()), ("p1", "\"t1\""));
        assert_eq!(count.load(Ordering::SeqCst), 4);
        assert_eq!(c.requests(), 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_gives_up_within_its_budget_and_says_how_often_it_tried() {
    let (url, _) = flaky(503, u32::MAX, None).await;
    let c = HttpClient::new(&url, ClientOptions { max_retry_time: Duration::from_millis(300), ..options(Some(KEY)) })
        .unwrap();
    let started = std::time::Instant::now();
    let e = api(c.project(P).await.unwrap_err());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!((e.status, e.code.as_str()), (503, "unavailable"));
    assert!(e.message.contains("attempts"), "{e}");
    assert_eq!(e.retry_after, Some(0));

    // Nothing listening: a transport error naming the URL and the attempts, never the key.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let c = HttpClient::new(&dead, ClientOptions { max_retry_time: Duration::from_millis(500), ..options(Some(KEY)) })
        .unwrap();
    let e = c.project(P).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, PlatformError::Transport(_)), "{text}");
    assert!(text.contains(&dead) && text.contains("attempt") && !text.contains(KEY), "{text}");
    assert!(c.requests() >= 2, "it retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_never_follows_redirects() {
    let (url, count) = flaky(307, 1, Some(("location", "https://elsewhere.example.com/v1"))).await;
    let e = client(&url, Some(KEY)).project(P).await.unwrap_err().to_string();
    assert!(e.contains("https://elsewhere.example.com/v1") && e.contains("redirect"), "{e}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_checks_what_it_receives() {
    // An answer without an ETag breaks the contract.
    let app = axum::Router::new().fallback(|| async {
        axum::response::Response::builder()
            .status(200)
            .body(axum::body::Body::from(r#"{"id": "p1", "name": "x", "head": null, "sync": null}"#))
            .unwrap()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let e = client(&url, Some(KEY)).project(P).await.unwrap_err();
    assert!(matches!(e, PlatformError::Invalid(_)), "{e}");

    // An object whose content does not match its digest.
    let claimed = digest("workflow", "a", json!(1));
    let answer = json!({"objects": [{"digest": claimed, "kind": "workflow", "name": "a", "spec": 2}], "missing": []});
    let app = axum::Router::new().fallback(move || {
        let answer = answer.clone();
        async move { axum::Json(answer) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // The client passes it on: the sync layer reports it as an invalid definition (exit 4).
    let got = client(&url, Some(KEY)).batch_get(P, &[(claimed.clone(), 40)]).await.unwrap();
    assert_eq!(got.objects[0].digest, claimed);

    // JSON nested beyond serde_json's limit: only a spec can be that deep, so it is an invalid
    // definition (exit 4), not a transport failure.
    let deep = format!(
        r#"{{"objects": [{{"digest": "{claimed}", "kind": "workflow", "name": "a", "spec": {}1{}}}], "missing": []}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let app = axum::Router::new().fallback(move || {
        let deep = deep.clone();
        async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], deep) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let e = client(&url, Some(KEY)).batch_get(P, &[(claimed, 40)]).await.unwrap_err();
    assert!(matches!(&e, PlatformError::InvalidDefinition(m) if m.contains("64 levels")), "{e}");
}
