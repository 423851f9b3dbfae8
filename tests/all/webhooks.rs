//! Tests: run status from signed webhooks (issue 11). A real `defsync serve` dispatches to the
//! GitHub stand-in; deliveries are signed here as GitHub signs them and posted over HTTP; the
//! run status is read back through `GET /v1/projects/{project}/dispatches`. The stand-in checks
//! serve's reads of the runs against GitHub's OpenAPI description.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use defsync::forge::github::webhook::sign;
use defsync::store::Store;
use serde_json::{Value, json};

use crate::github::standin::StandIn;
use crate::server::ServerProcess;

const KEY: &str = "webhooks-key";
const TOKEN: &str = "ghp_dispatchsecret";
const SECRET: &str = "whsec-test-8f2a";
const P: &str = "p1";

struct Setup {
    standin: StandIn,
    server: ServerProcess,
    http: reqwest::Client,
    store: PathBuf,
    _dir: tempfile::TempDir,
}

/// The stand-in (answering dispatches with a run ID when `run_details`), and a server
/// dispatching to `octo/defs` with GitHub webhooks on; project `p1` exists.
async fn setup(run_details: bool, args: &[&str]) -> Setup {
    let standin = StandIn::start("").await;
    standin.state.lock().unwrap().dispatch_run_details = run_details;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    let mut all = vec!["--dispatch-repository", "octo/defs", "--github-api-url", standin.url.as_str()];
    all.extend(args);
    let env = [
        ("DEFSYNC_DISPATCH_TOKEN", TOKEN),
        ("DEFSYNC_DISPATCH_POLL_MS", "50"),
        ("DEFSYNC_GITHUB_WEBHOOK_SECRET", SECRET),
    ];
    let server = ServerProcess::start_with(&store, KEY, &all, &env);
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{}/v1/projects/{P}", server.url()))
        .bearer_auth(KEY)
        .json(&json!({"name": "One"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    Setup { standin, server, http, store, _dir: dir }
}

impl Setup {
    /// A dashboard commit, through the API: its ID.
    async fn dashboard_commit(&self, name: &str) -> String {
        let url = format!("{}/v1/projects/{P}", self.server.url());
        let head: Value = self.http.get(&url).bearer_auth(KEY).send().await.unwrap().json().await.unwrap();
        let body = json!({
            "parent": head["head"]["id"], "message": "edit", "origin": {"type": "dashboard"},
            "changes": [{"op": "put", "kind": "workflow", "name": name, "spec": {"v": 1}}]
        });
        let r = self.http.post(format!("{url}/commits")).bearer_auth(KEY).json(&body).send().await.unwrap();
        let c: Value = r.json().await.unwrap();
        c["id"].as_str().unwrap_or_else(|| panic!("no commit: {c}")).to_owned()
    }

    /// Posts a delivery signed with `signature` (`None`: unsigned).
    async fn post(&self, event: &str, delivery: &str, body: &[u8], signature: Option<String>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/webhooks/github", self.server.url()))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .body(body.to_vec());
        if let Some(sig) = signature {
            req = req.header("x-hub-signature-256", sig);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Posts a delivery signed with the right secret.
    async fn deliver(&self, event: &str, delivery: &str, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        self.post(event, delivery, &bytes, Some(sign(SECRET.as_bytes(), &bytes))).await
    }

    /// The project's outbox rows, as serve shows them.
    async fn dispatches(&self) -> Vec<Value> {
        let url = format!("{}/v1/projects/{P}/dispatches", self.server.url());
        let v: Value = self.http.get(url).bearer_auth(KEY).send().await.unwrap().json().await.unwrap();
        v["dispatches"].as_array().cloned().unwrap_or_default()
    }

    /// Waits (up to 20 s) until the newest row satisfies `done`; returns it.
    async fn wait_row(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            if let Some(row) = self.dispatches().await.pop()
                && done(&row)
            {
                return row;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}: {:?}\nserver log:\n{}",
                self.dispatches().await,
                self.server.logs()
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    fn unprocessed(&self) -> usize {
        Store::open(&self.store).unwrap().unprocessed_deliveries().unwrap().len()
    }

    /// Waits (up to 20 s) until every recorded delivery is processed.
    async fn wait_processed(&self) {
        let started = Instant::now();
        while self.unprocessed() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "deliveries left unprocessed:\n{}",
                self.server.logs()
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

/// Waits (up to 10 s) for a line of the server's log: lines reach the test through a pipe.
async fn wait_log(server: &ServerProcess, text: &str) {
    let started = Instant::now();
    while !server.logs().contains(text) {
        assert!(started.elapsed() < Duration::from_secs(10), "no log line {text:?}:\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// A `workflow_run` event as GitHub sends it (the fields defsync reads, and a few more).
fn workflow_run(repository: &str, run_id: u64, action: &str, status: &str) -> Value {
    json!({
        "action": action,
        "workflow_run": {"id": run_id, "name": "defsync pull", "status": status, "conclusion": null,
                         "html_url": format!("https://github.com/{repository}/actions/runs/{run_id}")},
        "repository": {"id": 1, "full_name": repository, "name": "defs"},
        "sender": {"login": "octo-bot"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_signature_is_401_and_records_nothing() {
    let t = setup(true, &[]).await;
    let body = serde_json::to_vec(&workflow_run("octo/defs", 1, "completed", "completed")).unwrap();
    let wrong = sign(b"another secret", &body);
    let (status, answer) = t.post("workflow_run", "d-1", &body, Some(wrong)).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("does not match"), "{answer}");
    let (status, answer) = t.post("workflow_run", "d-1", &body, None).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("no X-Hub-Signature-256"), "{answer}");
    // A body changed after signing fails too.
    let mut tampered = body.clone();
    tampered.push(b' ');
    let (status, _) = t.post("workflow_run", "d-1", &tampered, Some(sign(SECRET.as_bytes(), &body))).await;
    assert_eq!(status, 401);
    assert_eq!(t.unprocessed(), 0);
    // Nothing was recorded: the same delivery ID, signed, is new.
    let (status, answer) = t
        .deliver(
            "push",
            "d-1",
            &json!({"ref": "refs/heads/main", "after": "abc", "repository": {"full_name": "octo/defs"}}),
        )
        .await;
    assert_eq!((status, answer["status"].as_str()), (202, Some("accepted")), "{answer}");
    assert!(!t.server.logs().contains(SECRET), "the secret is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_delivery_is_dropped_and_a_push_is_recorded() {
    let t = setup(true, &[]).await;
    let push =
        json!({"ref": "refs/heads/main", "before": "000", "after": "1a2b3c", "repository": {"full_name": "Octo/Defs"}});
    let (status, _) = t.deliver("push", "d-push", &push).await;
    assert_eq!(status, 202);
    let (status, answer) = t.deliver("push", "d-push", &push).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")), "{answer}");
    let started = Instant::now();
    loop {
        let pushes = Store::open(&t.store).unwrap().branch_pushes("github", "octo/defs").unwrap();
        if let Some(p) = pushes.first() {
            assert_eq!((p.git_ref.as_str(), p.after.as_str()), ("refs/heads/main", "1a2b3c"));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no push recorded:\n{}", t.server.logs());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    t.wait_processed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413() {
    let t = setup(true, &[]).await;
    let big = vec![b' '; defsync::server::MAX_WEBHOOK_BODY_BYTES + 1];
    let (status, answer) = t.post("push", "d-big", &big, Some(sign(SECRET.as_bytes(), &big))).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("webhook body"), "{answer}");
    assert_eq!(t.unprocessed(), 0);
}

/// Decision: an event for a repository this server does not dispatch to is 202 "ignored", not
/// 404, so an organisation-wide webhook does not fill GitHub's log with failed deliveries; it
/// is logged and nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_for_an_unknown_repository_is_ignored() {
    let t = setup(true, &[]).await;
    let (status, answer) =
        t.deliver("workflow_run", "d-other", &workflow_run("someone/else", 5, "completed", "completed")).await;
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")), "{answer}");
    assert!(answer["reason"].as_str().unwrap().contains("someone/else"));
    assert_eq!(t.unprocessed(), 0);
    wait_log(&t.server, "ignored: this server dispatches to no such repository").await;
    // Events defsync does not use are ignored the same way; a ping is answered.
    let (status, answer) = t.deliver("issues", "d-issue", &json!({"repository": {"full_name": "octo/defs"}})).await;
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")));
    let (status, _) = t.deliver("ping", "d-ping", &json!({"zen": "Keep it logically awesome."})).await;
    assert_eq!(status, 200);
    assert_eq!(t.unprocessed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_queued_in_progress_then_succeeded_or_failed() {
    let t = setup(true, &[]).await;
    let c = t.dashboard_commit("a").await;
    let row = t.wait_row("the dispatch", |r| r["state"] == "done").await;
    assert_eq!(
        (row["commit"].as_str(), row["forge"].as_str(), row["target"].as_str()),
        (Some(c.as_str()), Some("github"), Some("octo/defs"))
    );
    assert_eq!(row["run_status"], Value::Null);
    let run = row["run_id"].as_u64().expect("the stand-in named the run");

    // The event says completed, but the API says queued: the API wins (the event is a hint).
    let (status, _) = t.deliver("workflow_run", "d-q", &workflow_run("octo/defs", run, "completed", "completed")).await;
    assert_eq!(status, 202);
    let row = t.wait_row("queued", |r| r["run_status"] == "queued").await;
    assert!(row["run_url"].as_str().unwrap().ends_with(&format!("/actions/runs/{run}")));

    t.standin.set_run(run, "in_progress", None, "");
    t.deliver("workflow_run", "d-p", &workflow_run("octo/defs", run, "in_progress", "in_progress")).await;
    t.wait_row("in progress", |r| r["run_status"] == "in_progress").await;

    t.standin.set_run(run, "completed", Some("success"), "");
    t.deliver("workflow_run", "d-s", &workflow_run("octo/defs", run, "completed", "completed")).await;
    let row = t.wait_row("succeeded", |r| r["run_status"] == "succeeded").await;
    assert_eq!(row["run_conclusion"], "success");

    // A second commit whose run fails keeps GitHub's conclusion.
    t.dashboard_commit("b").await;
    let row = t.wait_row("the second dispatch", |r| r["state"] == "done" && r["run_id"].as_u64() != Some(run)).await;
    let second = row["run_id"].as_u64().unwrap();
    t.standin.set_run(second, "completed", Some("timed_out"), "");
    t.deliver("workflow_run", "d-f", &workflow_run("OCTO/DEFS", second, "completed", "completed")).await;
    let row = t.wait_row("failed", |r| r["run_status"] == "failed").await;
    assert_eq!(row["run_conclusion"], "timed_out");

    // A late event of an older status leaves the newer one.
    t.standin.set_run(second, "in_progress", None, "");
    t.deliver("workflow_run", "d-late", &workflow_run("octo/defs", second, "in_progress", "in_progress")).await;
    t.wait_processed().await;
    assert_eq!(t.dispatches().await.pop().unwrap()["run_status"], "failed");
    t.standin.assert_conforms();
}

/// Older GitHub answers a dispatch with 204 and no run: the run is found by the commit ID in its
/// title (the pull workflow's run-name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_github_named_no_id_for_is_matched_by_its_title() {
    let t = setup(false, &[]).await;
    let c = t.dashboard_commit("a").await;
    let row = t.wait_row("the dispatch", |r| r["state"] == "done").await;
    assert_eq!(row["run_id"], Value::Null);
    let (run, title) = {
        let s = t.standin.state.lock().unwrap();
        let (id, run) = s.runs.iter().next().expect("the stand-in started a run");
        (*id, run["display_title"].as_str().unwrap().to_owned())
    };
    assert!(title.contains(&c), "{title}");
    t.standin.set_run(run, "completed", Some("failure"), "");
    t.deliver("workflow_run", "d-1", &workflow_run("octo/defs", run, "completed", "completed")).await;
    let row = t.wait_row("the run tied by title", |r| r["run_status"] == "failed").await;
    assert_eq!((row["run_id"].as_u64(), row["run_conclusion"].as_str()), (Some(run), Some("failure")));
    t.standin.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_with_no_run_is_not_started_after_the_timeout() {
    let t = setup(false, &["--dispatch-run-timeout", "1s"]).await;
    t.dashboard_commit("a").await;
    // The workflow never runs: no webhook comes.
    let row = t.wait_row("not started", |r| r["run_status"] == "not_started").await;
    assert!(row["last_error"].as_str().unwrap().contains("workflow file missing or misnamed"), "{row}");
    wait_log(&t.server, "no run started within 1s").await;
}

/// A delivery recorded but not processed when serve stopped (here: written into the store
/// before serve starts, as a kill between the answer and the work leaves it) is processed at
/// the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_left_unprocessed_is_processed_at_the_next_start() {
    let mut t = setup(true, &[]).await;
    t.server.kill();
    let push = json!({"ref": "refs/heads/dev", "after": "feed", "repository": {"full_name": "octo/defs"}});
    let store = Store::open(&t.store).unwrap();
    assert!(store.record_delivery("github", "d-left", "push", &serde_json::to_vec(&push).unwrap()).unwrap());
    drop(store);
    t.server.restart();
    t.wait_processed().await;
    let pushes = Store::open(&t.store).unwrap().branch_pushes("github", "octo/defs").unwrap();
    assert_eq!(pushes.iter().map(|p| p.after.as_str()).collect::<Vec<_>>(), ["feed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_404_when_no_secret_is_set() {
    let (_dir, server) = ServerProcess::scratch(KEY);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/github", server.url()))
        .header("x-github-event", "push")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("DEFSYNC_GITHUB_WEBHOOK_SECRET"), "{v}");
}

// GitLab pipeline events.

const GL_TOKEN: &str = "glwt-test-3c9d";

/// A store with project `p1` whose dashboard commit was dispatched to GitLab project
/// `group/defs` as pipeline 31 (as the GitLab dispatch records it), and a server accepting
/// GitLab webhooks with the hash of [`GL_TOKEN`] and no read token.
fn gitlab_setup() -> (tempfile::TempDir, ServerProcess, PathBuf) {
    gitlab_setup_with("group/defs", &[])
}

/// [`gitlab_setup`] with the dispatch sent to `target` and more environment for the server.
fn gitlab_setup_with(target: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, ServerProcess, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    {
        let store = Store::open(&path).unwrap();
        store.set_dispatch_outbox(true);
        store.put_project(P, "One").unwrap();
        let body = json!({"parent": null, "message": "edit", "origin": {"type": "dashboard"},
                          "changes": [{"op": "put", "kind": "workflow", "name": "a", "spec": {}}]});
        store.create_commit(P, &serde_json::to_vec(&body).unwrap(), None).unwrap();
        let policy = defsync::store::RetryPolicy::default();
        let d = store.claim_due_dispatches(&policy).unwrap().pop().unwrap();
        let sent = defsync::store::SentDispatch { forge: "gitlab", target, run_id: Some(31), run_url: None };
        store.mark_dispatch_done(d.id, &sent).unwrap();
    }
    let hash = defsync::server::token_sha256(GL_TOKEN);
    let mut all_env = vec![("DEFSYNC_GITLAB_WEBHOOK_TOKEN_SHA256", hash.as_str())];
    all_env.extend_from_slice(env);
    let server = ServerProcess::start_with(&path, KEY, &[], &all_env);
    (dir, server, path)
}

fn pipeline_event(project: &str, pipeline: u64, status: &str) -> Value {
    json!({
        "object_kind": "pipeline",
        "object_attributes": {"id": pipeline, "iid": 3, "ref": "main", "status": status, "source": "trigger"},
        "project": {"id": 7, "name": "defs", "path_with_namespace": project, "web_url": format!("https://gitlab.example/{project}")}
    })
}

async fn post_gitlab(server: &ServerProcess, token: Option<&str>, uuid: &str, body: &Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/gitlab", server.url()))
        .header("content-type", "application/json")
        .header("x-gitlab-event", "Pipeline Hook")
        .header("x-gitlab-event-uuid", uuid)
        .body(serde_json::to_vec(body).unwrap());
    if let Some(token) = token {
        req = req.header("x-gitlab-token", token);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn wait_gitlab_status(
    server: &ServerProcess,
    store: &std::path::Path,
    status: &str,
) -> defsync::store::OutboxEntry {
    let started = Instant::now();
    loop {
        let row = Store::open(store).unwrap().dispatch_outbox(Some(P)).unwrap().pop().unwrap();
        if row.run_status.map(|s| s.as_str()) == Some(status) {
            return row;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no {status}: {row:?}\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_token_is_checked_and_pipeline_events_record_the_status() {
    let (_dir, server, store) = gitlab_setup();
    let running = pipeline_event("group/defs", 31, "running");
    let (status, answer) = post_gitlab(&server, Some("glwt-wrong"), "u-1", &running).await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = post_gitlab(&server, None, "u-1", &running).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("X-Gitlab-Token"));
    assert!(Store::open(&store).unwrap().unprocessed_deliveries().unwrap().is_empty(), "nothing recorded");

    let (status, answer) = post_gitlab(&server, Some(GL_TOKEN), "u-1", &running).await;
    assert_eq!((status, answer["status"].as_str()), (202, Some("accepted")), "{answer}");
    let row = wait_gitlab_status(&server, &store, "in_progress").await;
    assert_eq!(row.run_url.as_deref(), Some("https://gitlab.example/group/defs/-/pipelines/31"));
    let (status, answer) = post_gitlab(&server, Some(GL_TOKEN), "u-1", &running).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")));

    post_gitlab(&server, Some(GL_TOKEN), "u-2", &pipeline_event("group/defs", 31, "failed")).await;
    let row = wait_gitlab_status(&server, &store, "failed").await;
    assert_eq!(row.run_conclusion.as_deref(), Some("failed"));

    // A project this server never dispatched to: ignored, nothing recorded.
    let (status, answer) =
        post_gitlab(&server, Some(GL_TOKEN), "u-3", &pipeline_event("other/proj", 99, "success")).await;
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")), "{answer}");
    assert!(!server.logs().contains(GL_TOKEN), "the token is never logged");
}

/// With a read token, the event is only a hint: the status recorded is the one GitLab's API gives
/// for the pipeline (here `success`, while the event still says `running`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_read_token_a_pipeline_event_is_read_back_from_gitlab() {
    use crate::gitlab::standin::{PROJECT_ID, PROJECT_PATH, StandIn};
    let gitlab = StandIn::start().await;
    gitlab.state.lock().unwrap().pipeline_status.insert(31, "success".into());
    let env = [("DEFSYNC_GITLAB_READ_TOKEN", "glpat-maintainer"), ("DEFSYNC_GITLAB_URL", gitlab.url.as_str())];
    let (_dir, server, store) = gitlab_setup_with(PROJECT_PATH, &env);
    let mut running = pipeline_event(PROJECT_PATH, 31, "running");
    running["project"]["id"] = json!(PROJECT_ID);
    let (status, answer) = post_gitlab(&server, Some(GL_TOKEN), "u-read-1", &running).await;
    assert_eq!(status, 202, "{answer}");
    let row = wait_gitlab_status(&server, &store, "succeeded").await;
    assert_eq!(row.run_url, Some(format!("{}/{PROJECT_PATH}/-/pipelines/31", gitlab.url.trim_end_matches("/api/v4"))));
    let reads: Vec<_> = gitlab.exchanges().into_iter().filter(|e| e.path.ends_with("/pipelines/31")).collect();
    assert_eq!(reads.len(), 1, "one read of the pipeline: {reads:?}");
    assert_eq!((reads[0].method.as_str(), reads[0].status), ("GET", 200));
    assert!(!server.logs().contains("glpat-maintainer"), "the read token is never logged");
    gitlab.assert_conforms();
}

// Run reports (contract v1.2).

/// A real pull that stops on a conflict posts its report, with both versions of the key, and
/// the platform shows it newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_with_a_conflict_posts_its_report_with_both_versions() {
    let (_dir, server) = ServerProcess::scratch(KEY);
    let env = crate::support::Env::on_server(&server.url(), KEY);
    env.dashboard_put("workflow", "notify <b>", json!({"channel": "#sales", "retries": 3}));
    env.run("pull", &[]).ok();
    let file = env.files().into_iter().find(|f| f.ends_with(".yaml")).expect("the pulled file");
    env.dashboard_put("workflow", "notify <b>", json!({"channel": "#sales", "retries": 9}));
    env.write(&file, &env.read(&file).replace("retries: 3", "retries: 7"));
    env.commit_and_push("git edit");
    let r = env.run("pull", &[]);
    assert_eq!(r.code, 3, "a conflict: {r:#?}");

    let url = format!("{}/v1/projects/{}/runs", server.url(), crate::support::PROJECT);
    let v: Value = reqwest::Client::new().get(&url).bearer_auth(KEY).send().await.unwrap().json().await.unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "the first pull and the conflicted one: {v}");
    let last = &runs[0];
    assert_eq!((last["command"].as_str(), last["outcome"].as_str()), (Some("pull"), Some("conflict")), "{last}");
    let c = &last["conflicts"][0];
    assert_eq!((c["kind"].as_str(), c["name"].as_str()), (Some("workflow"), Some("notify <b>")));
    assert_eq!(c["git"], json!({"channel": "#sales", "retries": 7}));
    assert_eq!(c["platform"], json!({"channel": "#sales", "retries": 9}));
    assert_eq!(last["deferred"], json!([]));
    assert_eq!(runs[1]["outcome"], "changed");

    // A report is checked as the API checks: a bad body is 422, one over the limit 413.
    let bad = reqwest::Client::new().post(&url).bearer_auth(KEY).body(r#"{"command": "pull"}"#).send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 422);
    let big = format!(
        r#"{{"command":"pull","outcome":"ok","run_url":"https://x/{}"}}"#,
        "a".repeat(defsync::store::MAX_RUN_REPORT_BYTES)
    );
    let r = reqwest::Client::new().post(&url).bearer_auth(KEY).body(big).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 413);
}
