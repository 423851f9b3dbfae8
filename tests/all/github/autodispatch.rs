//! Tests: `defsync serve` dispatching the pull workflow after commits not from Git. A real
//! `defsync serve` process talks to the GitHub stand-in; commits arrive over HTTP through the
//! real client, as a dashboard's would.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use defsync::api::client::{ClientOptions, HttpClient};
use defsync::api::{Change, Commit, CreateCommit, Direction, ETag, Origin, OriginType, PutSync};
use defsync::store::{DispatchState, Store};
use serde_json::{Value, json};

use super::standin::{Action, StandIn};
use crate::server::ServerProcess;

const KEY: &str = "autodispatch-key";
const TOKEN: &str = "ghp_dispatchsecret";
const P: &str = "p1";

struct Setup {
    standin: StandIn,
    server: ServerProcess,
    client: HttpClient,
    store: PathBuf,
    _dir: tempfile::TempDir,
}

/// The stand-in, and a server dispatching to it with waits short enough for tests (first retry
/// after `backoff_ms`), plus `args`; project `p1` exists.
async fn setup(backoff_ms: u64, args: &[&str]) -> Setup {
    let standin = StandIn::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    let backoff = backoff_ms.to_string();
    let mut all = vec!["--dispatch-repository", "octo/defs", "--github-api-url", standin.url.as_str()];
    all.extend(args);
    let env = [
        ("DEFSYNC_DISPATCH_TOKEN", TOKEN),
        ("DEFSYNC_DISPATCH_POLL_MS", "50"),
        ("DEFSYNC_DISPATCH_BACKOFF_MS", backoff.as_str()),
    ];
    let server = ServerProcess::start_with(&store, KEY, &all, &env);
    let client = client(&server);
    client.put_project(P, "Project one").await.unwrap();
    Setup { standin, server, client, store, _dir: dir }
}

fn client(server: &ServerProcess) -> HttpClient {
    let options = ClientOptions {
        api_key: Some(KEY.into()),
        timeout: Duration::from_secs(20),
        max_retry_time: Duration::from_secs(5),
        ..Default::default()
    };
    HttpClient::new(&server.url(), options).unwrap()
}

fn origin(kind: OriginType) -> Origin {
    let git = kind == OriginType::Git;
    Origin {
        kind,
        repository: git.then(|| "octo/defs".into()),
        git_ref: git.then(|| "refs/heads/main".into()),
        path: git.then(|| "platform".into()),
        git_commit: git.then(|| "3f1c".into()),
        run_url: None,
    }
}

fn commit_body(parent: Option<&str>, kind: OriginType, name: &str) -> Vec<u8> {
    let change = Change::Put { kind: "workflow".into(), name: name.into(), spec: json!({"v": name}), blob: None };
    let req = CreateCommit {
        parent: parent.map(str::to_owned),
        message: "m".into(),
        origin: origin(kind),
        changes: vec![change],
    };
    serde_json::to_vec(&req).unwrap()
}

/// Commits one definition on the head, with a fresh idempotency key.
async fn commit(c: &HttpClient, kind: OriginType, name: &str) -> Commit {
    let parent = c.project(P).await.unwrap().0.head.map(|h| h.id);
    let key = format!("k-{name}-{:x}", rand::random::<u64>());
    c.create_commit(P, commit_body(parent.as_deref(), kind, name), &key).await.unwrap()
}

/// The dispatches GitHub accepted, as sent.
fn dispatches(s: &StandIn) -> Vec<Value> {
    s.state.lock().unwrap().dispatches.clone()
}

/// The status of every dispatch request, injected answers included.
fn dispatch_statuses(s: &StandIn) -> Vec<u16> {
    s.exchanges().iter().filter(|e| e.path.ends_with("/dispatches")).map(|e| e.status).collect()
}

/// Waits (up to 20 s) for `done`, then fails showing the server's log.
async fn wait_for(what: &str, server: &ServerProcess, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}; server log:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The outbox, read from the store file as another process would (WAL allows it).
fn outbox(store: &Path) -> Vec<defsync::store::OutboxEntry> {
    Store::open(store).unwrap().dispatch_outbox(Some(P)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_commit_dispatches_the_pull_once_and_a_git_commit_none() {
    let t = setup(200, &["--dispatch-workflow", "sync.yml", "--dispatch-ref", "release"]).await;
    let c = commit(&t.client, OriginType::Dashboard, "a").await;
    wait_for("the dispatch", &t.server, || !dispatches(&t.standin).is_empty()).await;
    assert_eq!(
        dispatches(&t.standin),
        [json!({"ref": "release", "inputs": {"projectId": P, "commitId": c.id}, "return_run_details": true})]
    );
    let exchange = t.standin.exchanges().into_iter().find(|e| e.path.ends_with("/dispatches")).unwrap();
    assert_eq!(exchange.path, "/repos/octo/defs/actions/workflows/sync.yml/dispatches");
    wait_for("the success line", &t.server, || t.server.logs().contains("dispatch: started sync.yml")).await;
    let logs = t.server.logs();
    assert!(
        logs.contains(&format!(
            "dispatch: started sync.yml on release in octo/defs for project p1, commit {} (seq 1): run 30433643 \
             http://",
            c.id
        )),
        "{logs}"
    );

    // Replaying the same request (same key, same body) is answered from the first: no second run.
    let body = commit_body(Some(&c.id), OriginType::Api, "b");
    let b = t.client.create_commit(P, body.clone(), "replayed-key").await.unwrap();
    assert_eq!(t.client.create_commit(P, body, "replayed-key").await.unwrap(), b);
    wait_for("the API commit's dispatch", &t.server, || dispatches(&t.standin).len() == 2).await;
    assert_eq!(dispatches(&t.standin)[1]["inputs"]["commitId"], json!(b.id));

    // A git-origin commit (from a push on the linked branch) starts no pull.
    let (_, etag) = t.client.project(P).await.unwrap();
    assert_eq!(etag, ETag::none());
    let link = PutSync {
        repository: "octo/defs".into(),
        git_ref: "refs/heads/main".into(),
        path: "platform".into(),
        direction: Direction::Bidirectional,
        commit: None,
        git_commit: None,
        replace_base: true,
        base: vec![],
    };
    t.client.put_sync(P, &etag, serde_json::to_vec(&link).unwrap()).await.unwrap();
    let g = commit(&t.client, OriginType::Git, "c").await;
    assert_eq!(g.origin.kind, OriginType::Git);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(dispatches(&t.standin).len(), 2, "a git commit dispatched a pull");
    wait_for("both rows to be done", &t.server, || outbox(&t.store).iter().all(|r| r.state == DispatchState::Done))
        .await;

    let rows = outbox(&t.store);
    let summary: Vec<(&str, DispatchState, Option<u64>)> =
        rows.iter().map(|r| (r.commit_id.as_str(), r.state, r.run_id)).collect();
    assert_eq!(
        summary,
        [(c.id.as_str(), DispatchState::Done, Some(30433643)), (b.id.as_str(), DispatchState::Done, Some(30433644))]
    );
    assert!(!t.server.logs().contains(TOKEN), "the token was logged");
    t.standin.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_dispatches_are_retried_until_github_takes_them() {
    let t = setup(100, &[]).await;
    for status in [500, 503] {
        let body = json!({"message": "Server Error", "documentation_url": "https://docs.github.com/rest"});
        t.standin.inject("POST", "/dispatches", Action::Answer { status, headers: vec![], body });
    }
    let c = commit(&t.client, OriginType::Dashboard, "a").await;
    wait_for("the dispatch", &t.server, || !dispatches(&t.standin).is_empty()).await;
    assert_eq!(dispatch_statuses(&t.standin), [500, 503, 200]);
    assert_eq!(dispatches(&t.standin)[0]["inputs"]["commitId"], json!(c.id));
    let logs = t.server.logs();
    assert!(logs.contains("(attempt 1 of 25); retrying in 0.1s") && logs.contains("answered 500"), "{logs}");
    assert!(logs.contains("(attempt 2 of 25); retrying in 0.2s") && logs.contains("answered 503"), "{logs}");
    // GitHub has the dispatch a moment before the server records it.
    wait_for("the row to be done", &t.server, || outbox(&t.store)[0].state == DispatchState::Done).await;
    let row = outbox(&t.store).pop().unwrap();
    assert_eq!((row.attempts, row.last_error, row.run_id), (3, None, Some(30433643)));
}

/// The dispatch is owed from the moment the commit is: a server killed (SIGKILL) while GitHub
/// is failing sends it after it starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_owed_by_a_killed_server_is_sent_after_a_restart() {
    let mut t = setup(500, &[]).await;
    for _ in 0..2 {
        let body = json!({"message": "Service Unavailable", "documentation_url": "https://docs.github.com/rest"});
        t.standin.inject("POST", "/dispatches", Action::Answer { status: 503, headers: vec![], body });
    }
    let c = commit(&t.client, OriginType::Dashboard, "a").await;
    wait_for("a first failed attempt", &t.server, || t.server.logs().contains("retrying in")).await;
    t.server.kill();
    assert!(dispatches(&t.standin).is_empty());
    let row = outbox(&t.store).pop().unwrap();
    assert_eq!((row.state, row.attempts), (DispatchState::Pending, 1));

    t.server.restart();
    wait_for("the dispatch after the restart", &t.server, || !dispatches(&t.standin).is_empty()).await;
    assert_eq!(dispatch_statuses(&t.standin), [503, 503, 200]);
    assert_eq!(dispatches(&t.standin)[0]["inputs"]["commitId"], json!(c.id));
    assert!(t.server.logs().contains("(1 pending from before, 0 failed earlier)"), "{}", t.server.logs());
    wait_for("the row to be done", &t.server, || outbox(&t.store)[0].state == DispatchState::Done).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_gives_up_at_once_and_says_why() {
    let t = setup(100, &["--dispatch-workflow", "missing.yml"]).await;
    let body = json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest/actions/workflows#create-a-workflow-dispatch-event", "status": "404"});
    t.standin.inject("POST", "/dispatches", Action::Answer { status: 404, headers: vec![], body });
    let c = commit(&t.client, OriginType::Dashboard, "a").await;
    wait_for("the failed state", &t.server, || outbox(&t.store)[0].state == DispatchState::Failed).await;
    let row = outbox(&t.store).pop().unwrap();
    assert_eq!((row.commit_id.as_str(), row.attempts), (c.id.as_str(), 1));
    let error = row.last_error.unwrap();
    assert!(error.contains("answered 404 \"Not Found\"") && error.contains("actions: write"), "{error}");

    // The row is marked failed before the line is logged: wait for the line too.
    wait_for("the log line", &t.server, || t.server.logs().contains("dispatch: gave up")).await;
    let logs = t.server.logs();
    let line = logs.lines().find(|l| l.contains("dispatch: gave up")).unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("missing.yml on main in octo/defs") && line.contains(&c.id), "{line}");
    assert!(line.contains("an error that retrying cannot fix") && line.contains("answered 404"), "{line}");
    // Not retried: a 404 does not go away by itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(dispatch_statuses(&t.standin), [404]);
    assert!(!logs.contains(TOKEN));
}

#[test]
fn a_repository_without_a_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::support::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--key", "k", "--store"])
        .arg(dir.path().join("store.db"))
        .args(["--dispatch-repository", "octo/defs"])
        .env_remove("DEFSYNC_DISPATCH_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a configuration error exits 2: {stderr}");
    assert!(stderr.contains("no token to dispatch with") && stderr.contains("DEFSYNC_DISPATCH_TOKEN"), "{stderr}");
}
