//! Tests: keys with a scope (`defsync serve keys`), enforced by a real `defsync serve` on every
//! route, and what a real `status` and `push` do with a read-only key.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use defsync::api::client::{ClientOptions, HttpClient};
use defsync::api::{ApiError, Change, CreateCommit, Origin, OriginType};
use defsync::digest::Digest;
use defsync::model::Definition;
use defsync::platform::PlatformError;
use serde_json::{Value, json};

use crate::server::ServerProcess;
use crate::support::{BIN, Env, Run};

/// `defsync serve keys <args>` on `store`, with no `DEFSYNC_*` from the caller's environment.
fn keys(store: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "keys"]).args(args).env("DEFSYNC_STORE", store);
    for (k, _) in std::env::vars() {
        if k.starts_with("DEFSYNC_") && k != "DEFSYNC_STORE" {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run defsync serve keys");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Creates a key and returns its secret: all of stdout, one line.
fn create(store: &Path, args: &[&str]) -> String {
    let r = keys(store, &[&["create"], args].concat()).ok();
    let secret = r.stdout.trim_end_matches('\n').to_owned();
    assert!(secret.starts_with("dsk_") && !secret.contains('\n'), "stdout is not the secret alone: {r:#?}");
    assert!(!r.stderr.contains(&secret), "the secret is on stderr too: {r:#?}");
    secret
}

fn client(url: &str, key: &str) -> HttpClient {
    let options = ClientOptions {
        api_key: Some(key.to_owned()),
        timeout: Duration::from_secs(20),
        max_retry_time: Duration::from_secs(2),
        ..Default::default()
    };
    HttpClient::new(url, options).unwrap()
}

fn api(e: PlatformError) -> ApiError {
    match e {
        PlatformError::Api(e) => e,
        other => panic!("expected an API error, got {other}"),
    }
}

#[track_caller]
fn refused(e: PlatformError, status: u16, code: &str) -> ApiError {
    let e = api(e);
    assert_eq!((e.status, e.code.as_str()), (status, code), "{e:?}");
    e
}

fn commit_body(parent: Option<&str>, name: &str) -> Vec<u8> {
    let change = Change::Put { kind: "workflow".into(), name: name.into(), spec: json!({"steps": 1}), blob: None };
    let origin = Origin { kind: OriginType::Dashboard, ..Default::default() };
    serde_json::to_vec(&CreateCommit {
        parent: parent.map(str::to_owned),
        message: "m".into(),
        origin,
        changes: vec![change],
    })
    .unwrap()
}

fn sync_body(commit: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "repository": "acme/defs", "ref": "refs/heads/main", "path": "platform",
        "direction": "bidirectional", "commit": commit, "replace_base": true, "base": [],
    }))
    .unwrap()
}

/// A store with a write key that created `p1` (one commit) and `p2`, served with no `--key`.
struct Setup {
    dir: tempfile::TempDir,
    server: ServerProcess,
    writer: String,
}

impl Setup {
    async fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store.db");
        let writer = create(&store, &["--name", "writer", "--scope", "write"]);
        let server = ServerProcess::start(&store, "");
        let w = client(&server.url(), &writer);
        w.put_project("p1", "one").await.unwrap();
        w.put_project("p2", "two").await.unwrap();
        w.create_commit("p1", commit_body(None, "first"), "k1").await.unwrap();
        Setup { dir, server, writer }
    }

    fn store(&self) -> std::path::PathBuf {
        self.dir.path().join("store.db")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_key_reads_everything_but_writes_nothing() {
    let s = Setup::new().await;
    let reader = create(&s.store(), &["--name", "pr-check", "--scope", "read"]);
    let r = client(&s.server.url(), &reader);

    let (project, etag) = r.project("p1").await.unwrap();
    let head = project.head.expect("a head");
    r.base("p1").await.unwrap();
    r.commits("p1", 0, 10).await.unwrap();
    r.commit("p1", &head.id).await.unwrap();
    let manifest = r.manifest("p1", &head.id).await.unwrap();
    let entry = &manifest.entries[0];
    let objects = r.batch_get("p1", &[(entry.digest.clone(), entry.size)]).await.unwrap();
    assert_eq!(objects.objects.len(), 1, "batch-get is a read");

    let e = refused(
        r.create_commit("p1", commit_body(Some(&head.id), "second"), "k2").await.unwrap_err(),
        403,
        "forbidden",
    );
    assert!(e.message.contains("read-only") && e.message.contains("pr-check"), "{}", e.message);
    refused(r.put_sync("p1", &etag, sync_body(&head.id)).await.unwrap_err(), 403, "forbidden");
    refused(r.put_project("p1", "renamed").await.unwrap_err(), 403, "forbidden");
    refused(r.put_project("p3", "new").await.unwrap_err(), 403, "forbidden");

    // Nothing was written: the same head, record and name, and no project p3.
    let w = client(&s.server.url(), &s.writer);
    let (after, after_etag) = w.project("p1").await.unwrap();
    assert_eq!((after.head.map(|h| h.id), after.name.as_str()), (Some(head.id), "one"));
    assert_eq!(after_etag, etag);
    assert!(after.sync.is_none());
    refused(w.project("p3").await.unwrap_err(), 404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limited_to_projects_gets_403_on_any_other() {
    let s = Setup::new().await;
    let limited = create(&s.store(), &["--name", "team-a", "--scope", "write", "--project", "p2"]);
    let c = client(&s.server.url(), &limited);
    let (p2, _) = c.project("p2").await.unwrap();
    c.create_commit("p2", commit_body(p2.head.as_ref().map(|h| h.id.as_str()), "mine"), "k3").await.unwrap();

    let e = refused(c.project("p1").await.unwrap_err(), 403, "forbidden");
    assert!(e.message.contains("\"p1\"") && e.message.contains("\"p2\""), "{}", e.message);
    refused(c.commits("p1", 0, 10).await.unwrap_err(), 403, "forbidden");
    refused(c.create_commit("p1", commit_body(None, "theirs"), "k4").await.unwrap_err(), 403, "forbidden");
    let digest: Digest = Definition { kind: "w".into(), name: "a".into(), spec: json!(1) }.digest();
    refused(c.batch_get("p1", &[(digest, 10)]).await.unwrap_err(), 403, "forbidden");
    // A project ID written with percent-escapes is the same project.
    let (status, _) = raw_get(&format!("{}/v1/projects/%70%31", s.server.url()), &limited).await;
    assert_eq!(status, 403);
    assert_eq!(client(&s.server.url(), &s.writer).commits("p1", 0, 10).await.unwrap().commits.len(), 1);
}

async fn raw_get(url: &str, key: &str) -> (u16, Value) {
    let answer = reqwest::Client::new().get(url).bearer_auth(key).send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_keys_get_401_from_the_next_request_on() {
    let s = Setup::new().await;
    let short = create(&s.store(), &["--name", "short", "--scope", "read", "--expires-in", "1s"]);
    let revoked = create(&s.store(), &["--name", "leaver", "--scope", "write"]);
    let c = client(&s.server.url(), &revoked);
    c.project("p1").await.unwrap();
    keys(&s.store(), &["revoke", "leaver"]).ok();
    let e = refused(c.project("p1").await.unwrap_err(), 401, "unauthorized");
    assert!(e.message.contains("revoked"), "{}", e.message);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let e = refused(client(&s.server.url(), &short).project("p1").await.unwrap_err(), 401, "unauthorized");
    assert!(e.message.contains("expired"), "{}", e.message);

    let listed = keys(&s.store(), &["list"]).ok().stdout;
    let line = |name: &str| listed.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_owned();
    assert!(line("leaver").contains("revoked") && line("short").contains("expired"), "{listed}");
    assert!(line("writer").contains("active"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_list_logs_or_the_store_file() {
    let s = Setup::new().await;
    let reader = create(&s.store(), &["--name", "reader", "--scope", "read", "--project", "p1"]);
    client(&s.server.url(), &reader).project("p1").await.unwrap();
    refused(client(&s.server.url(), &reader).put_project("p1", "x").await.unwrap_err(), 403, "forbidden");
    refused(client(&s.server.url(), &format!("{reader}x")).project("p1").await.unwrap_err(), 401, "unauthorized");

    let human = keys(&s.store(), &["list"]).ok();
    let json = keys(&s.store(), &["list", "--json"]).ok();
    let listed: Value = serde_json::from_str(&json.stdout).unwrap();
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["writer", "reader"]);
    assert_eq!(listed[1]["scope"], "read");
    assert_eq!(listed[1]["projects"], json!(["p1"]));

    // The access log names the key; the refused unknown one has no name.
    let logs = wait_for_log(&s.server, "status=401");
    assert!(logs.contains("key=reader"), "{logs}");
    for secret in [&s.writer, &reader] {
        // The part after the prefix and the four characters of the hint.
        let hidden = &secret[8..];
        for (what, text) in [("list", &human.stdout), ("list --json", &json.stdout), ("the logs", &logs)] {
            assert!(!text.contains(hidden), "a secret is in {what}: {text}");
        }
        for file in ["store.db", "store.db-wal"] {
            let raw = std::fs::read(s.dir.path().join(file)).unwrap_or_default();
            assert!(!raw.windows(hidden.len()).any(|w| w == hidden.as_bytes()), "a secret is in {file}");
        }
    }
}

#[test]
fn serve_starts_on_stored_keys_alone_and_warns_about_full_access_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    // Neither kind of key: the error gives both ways.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg(&store)
        .env_remove("DEFSYNC_SERVER_KEYS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("defsync serve keys create") && stderr.contains("--key"), "{stderr}");

    // A revoked key is no key.
    create(&store, &["--name", "old", "--scope", "write"]);
    keys(&store, &["revoke", "old"]).ok();
    let out = Command::new(BIN).args(["serve", "--listen", "127.0.0.1:0", "--store"]).arg(&store).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));

    create(&store, &["--name", "ci", "--scope", "write"]);
    let alone = ServerProcess::start(&store, "");
    let logs = wait_for_log(&alone, "1 active key(s) in the store");
    assert!(!logs.contains("may read and write every project"), "{logs}");
    drop(alone);

    let legacy = "legacy-key-1234567890";
    for (args, env, named) in [
        (vec!["--key", legacy], vec![], "--key"),
        (vec![], vec![("DEFSYNC_SERVER_KEYS", legacy)], "DEFSYNC_SERVER_KEYS"),
    ] {
        let server = ServerProcess::start_with(&store, "", &args, &env);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { client(&server.url(), legacy).put_project("p9", "x").await.unwrap() });
        wait_for_log(&server, "may read and write every project");
        // The access log names the key by its place, never by its value.
        let logs = wait_for_log(&server, "key=--key #1");
        assert!(logs.contains(named) && logs.contains("defsync serve keys create"), "{logs}");
        assert!(!logs.contains(legacy), "the key is in the logs: {logs}");
    }
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

#[test]
fn key_names_and_expiries_are_checked_before_anything_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    for (args, says) in [
        (vec!["--name", "a/b", "--scope", "read"], "key name"),
        (vec!["--name", "k", "--scope", "read", "--expires-in", "soon"], "--expires-in"),
        (vec!["--name", "k", "--scope", "read", "--expires-at", "2001-01-01T00:00:00Z"], "in the past"),
        (vec!["--name", "k", "--scope", "read", "--project", "a b"], "a b"),
    ] {
        let r = keys(&store, &[&["create"], &args[..]].concat());
        assert_eq!(r.code, 2, "{args:?}: {r:#?}");
        assert!(r.stdout.is_empty() && r.stderr.contains(says), "{args:?}: {r:#?}");
    }
    create(&store, &["--name", "k", "--scope", "read", "--expires-at", "2999-01-01T00:00:00Z"]);
    let r = keys(&store, &["create", "--name", "k", "--scope", "write"]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("exists already"), "{r:#?}");
    let r = keys(&store, &["revoke", "nobody"]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("keys list"), "{r:#?}");
    let listed: Value = serde_json::from_str(&keys(&store, &["list", "--json"]).ok().stdout).unwrap();
    assert_eq!(listed[0]["expires_at"], "2999-01-01T00:00:00Z");
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

/// The pull-request check runs `status` and `push --dry-run` with a read key: they work. A real
/// `push` with it fails, saying the key is read-only and what to use instead.
#[test]
fn status_and_a_dry_run_work_with_a_read_key_and_a_push_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    let writer = create(&store, &["--name", "writer", "--scope", "write"]);
    let reader = create(&store, &["--name", "pr-check", "--scope", "read", "--project", "p1"]);
    let server = ServerProcess::start(&store, "");
    let mut env = Env::on_server(&server.url(), &writer);
    env.dashboard_put("workflow", "from-the-dashboard", json!({"a": 1}));
    env.run("pull", &[]).ok();
    env.write("defs/workflow/from-git.yaml", "kind: workflow\nname: from-git\nspec: {b: 2}\n");
    env.commit_and_push("a definition from git");
    let seq = env.platform_head_seq();

    env.key = Some(reader.clone());
    let status = env.run("status", &[]).ok();
    assert!(status.changes().iter().any(|c| c.contains("from-git")), "{status:#?}");
    env.run("push", &["--dry-run"]).ok();

    let push = env.run("push", &[]);
    assert_eq!(push.code, 1, "{push:#?}");
    assert!(push.stderr.contains("403"), "{push:#?}");
    assert!(push.stderr.contains("read-only") && push.stderr.contains("need a key with write access"), "{push:#?}");
    assert!(!push.stderr.contains(&reader[8..]), "the key is printed: {push:#?}");
    env.key = Some(writer);
    assert_eq!(env.platform_head_seq(), seq, "the read key wrote a commit");
    env.run("push", &[]).ok();
    assert_eq!(env.platform_head_seq(), seq + 1);
}
