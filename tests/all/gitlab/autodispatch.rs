//! Tests: `defsync serve` triggering GitLab pull pipelines through the same durable outbox as
//! GitHub dispatches, and one `serve` whose projects live on both forges (`--dispatch-targets`).
//! A real `serve` process talks to the GitLab and GitHub stand-ins, whose traffic is validated
//! against each forge's OpenAPI description.

use std::path::Path;
use std::time::{Duration, Instant};

use defsync::api::client::HttpClient;
use defsync::api::{Change, CreateCommit, Origin, OriginType};
use defsync::store::{DispatchState, OutboxEntry, Store};
use serde_json::json;

use super::standin::{Action, PROJECT_ID, PROJECT_PATH, StandIn, TRIGGER_TOKEN};
use crate::github::standin::StandIn as GitHubStandIn;
use crate::server::ServerProcess;

const KEY: &str = "gl-autodispatch-key";

fn client(server: &ServerProcess) -> HttpClient {
    crate::server::client(&server.url(), Some(KEY))
}

/// Creates `project` and makes one dashboard commit in it; returns the commit ID.
async fn dashboard_commit(c: &HttpClient, project: &str) -> String {
    c.put_project(project, project).await.unwrap();
    let body = CreateCommit {
        parent: None,
        message: "edit".into(),
        origin: Origin { kind: OriginType::Dashboard, ..Default::default() },
        changes: vec![Change::Put { kind: "workflow".into(), name: "a".into(), spec: json!({"v": 1}), blob: None }],
    };
    c.create_commit(project, serde_json::to_vec(&body).unwrap(), &format!("k-{project}")).await.unwrap().id
}

fn outbox(store: &Path, project: &str) -> Vec<OutboxEntry> {
    Store::open(store).unwrap().dispatch_outbox(Some(project)).unwrap()
}

/// Waits (up to 20 s) until the project's only outbox row leaves `pending`, and returns it.
async fn settled(server: &ServerProcess, store: &Path, project: &str) -> OutboxEntry {
    let started = Instant::now();
    loop {
        let rows = outbox(store, project);
        if let [row] = rows.as_slice()
            && row.state != DispatchState::Pending
        {
            return row.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no settled dispatch for {project}: {rows:?}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A GitLab stand-in whose `main` exists (a trigger needs the ref).
async fn gitlab() -> StandIn {
    let s = StandIn::start().await;
    s.commit_files("main", &[("README.md".into(), "defs\n".into())], "init");
    s
}

fn gitlab_args(s: &StandIn) -> Vec<String> {
    ["--dispatch-forge", "gitlab", "--dispatch-repository", PROJECT_PATH, "--gitlab-url", s.url.as_str()]
        .map(str::to_owned)
        .to_vec()
}

fn start(store: &Path, args: &[String], env: &[(&str, &str)]) -> ServerProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut all_env = vec![("DEFSYNC_DISPATCH_POLL_MS", "50"), ("DEFSYNC_DISPATCH_BACKOFF_MS", "100")];
    all_env.extend_from_slice(env);
    ServerProcess::start_with(store, KEY, &args, &all_env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_commit_triggers_the_gitlab_pull_pipeline_after_a_retry() {
    let s = gitlab().await;
    // The first trigger meets an outage: the outbox retries it after the backoff.
    s.inject("POST", "/trigger/pipeline", Action::Answer { status: 502, body: json!({"message": "502 Bad Gateway"}) });
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    let server = start(&store, &gitlab_args(&s), &[("DEFSYNC_DISPATCH_TOKEN", TRIGGER_TOKEN)]);
    let c = client(&server);
    let commit = dashboard_commit(&c, "p1").await;

    let row = settled(&server, &store, "p1").await;
    assert_eq!(row.state, DispatchState::Done, "{row:?}\n{}", server.logs());
    assert_eq!(row.attempts, 2, "one failed attempt, then the pipeline: {row:?}");
    let st = s.state.lock().unwrap();
    assert_eq!(st.pipelines.len(), 1, "one pipeline for one commit");
    assert_eq!(st.pipelines[0]["ref"], "main");
    assert_eq!(st.pipelines[0]["variables"], json!({"DEFSYNC_PROJECT_ID": "p1", "DEFSYNC_COMMIT_ID": commit}));
    let pipeline_id =
        st.exchanges.iter().rev().find(|e| e.status == 201).unwrap().response.as_ref().unwrap()["id"].as_u64().unwrap();
    drop(st);
    assert_eq!(row.run_id, Some(pipeline_id));
    assert_eq!((row.forge.as_deref(), row.target.as_deref()), (Some("gitlab"), Some(PROJECT_PATH)));
    assert_eq!(
        row.run_url,
        Some(format!("{}/{PROJECT_PATH}/-/pipelines/{pipeline_id}", s.url.trim_end_matches("/api/v4")))
    );
    let logs = server.logs();
    assert!(
        logs.contains(&format!("dispatch: started the pipeline on main in {PROJECT_PATH} (GitLab) for project p1")),
        "{logs}"
    );
    assert!(logs.contains("retrying in"), "{logs}");
    assert!(!logs.contains(TRIGGER_TOKEN), "the trigger token was logged:\n{logs}");
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_trigger_token_fails_the_dispatch_at_once_and_says_so() {
    let s = gitlab().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    let server = start(&store, &gitlab_args(&s), &[("DEFSYNC_DISPATCH_TOKEN", "glptt-wrong")]);
    dashboard_commit(&client(&server), "p1").await;

    let row = settled(&server, &store, "p1").await;
    assert_eq!((row.state, row.attempts), (DispatchState::Failed, 1), "a 404 is not retried: {row:?}");
    assert!(row.last_error.as_deref().is_some_and(|e| e.contains("404")), "{row:?}");
    let logs = server.logs();
    assert!(logs.contains("dispatch: gave up starting the pipeline on main"), "{logs}");
    assert!(!logs.contains("glptt-wrong"), "{logs}");
    assert!(s.state.lock().unwrap().pipelines.is_empty());
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_serve_dispatches_each_project_to_its_own_forge() {
    let gl = gitlab().await;
    let gh = GitHubStandIn::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets.yml");
    std::fs::write(
        &targets,
        format!(
            "# billing lives on GitLab; every other project on GitHub. Unmatched: none.\n\
             targets:\n\
             \x20 - projects: ['billing*']\n\
             \x20   forge: gitlab\n\
             \x20   repository: '{PROJECT_ID}'\n\
             \x20   gitlab_url: {gl}\n\
             \x20   token_env: BILLING_TRIGGER\n\
             \x20   pass_as: inputs\n\
             \x20 - projects: [crm]\n\
             \x20   forge: github\n\
             \x20   repository: octo/defs\n\
             \x20   github_api_url: {gh}\n\
             \x20   token_env: CRM_DISPATCH\n",
            gl = gl.url,
            gh = gh.url
        ),
    )
    .unwrap();
    let store = dir.path().join("store.db");
    let args = ["--dispatch-targets".to_owned(), targets.display().to_string()];
    let server = start(&store, &args, &[("BILLING_TRIGGER", TRIGGER_TOKEN), ("CRM_DISPATCH", "ghp_crmsecret")]);
    let c = client(&server);
    let billing = dashboard_commit(&c, "billing-eu").await;
    let crm = dashboard_commit(&c, "crm").await;
    dashboard_commit(&c, "hr").await;

    assert_eq!(settled(&server, &store, "billing-eu").await.state, DispatchState::Done, "{}", server.logs());
    let crm_row = settled(&server, &store, "crm").await;
    assert_eq!(crm_row.state, DispatchState::Done, "{}", server.logs());
    assert_eq!((crm_row.forge.as_deref(), crm_row.target.as_deref()), (Some("github"), Some("octo/defs")));
    let hr = settled(&server, &store, "hr").await;
    assert_eq!(hr.state, DispatchState::Failed);
    assert!(hr.last_error.as_deref().is_some_and(|e| e.contains("no dispatch target serves project hr")), "{hr:?}");

    let pipelines = gl.state.lock().unwrap().pipelines.clone();
    assert_eq!(pipelines.len(), 1);
    assert_eq!(pipelines[0]["inputs"], json!({"project-id": "billing-eu", "commit-id": billing}));
    let dispatches = gh.state.lock().unwrap().dispatches.clone();
    assert_eq!(dispatches.len(), 1);
    assert_eq!(dispatches[0]["inputs"], json!({"projectId": "crm", "commitId": crm}));
    let logs = server.logs();
    assert!(logs.contains("the first of 2 targets that serves the project"), "{logs}");
    assert!(!logs.contains(TRIGGER_TOKEN) && !logs.contains("ghp_crmsecret"), "{logs}");
    gl.assert_conforms();
    gh.assert_conforms();
}

#[test]
fn a_targets_file_naming_an_unset_token_variable_stops_serve_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets.yml");
    std::fs::write(
        &targets,
        "targets:\n  - forge: gitlab\n    repository: g/p\n    token_env: DEFSYNC_TEST_UNSET_VAR\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_defsync"))
        .args(["serve", "--key", KEY, "--listen", "127.0.0.1:0", "--dispatch-targets"])
        .arg(&targets)
        .arg("--store")
        .arg(dir.path().join("store.db"))
        .env_remove("DEFSYNC_TEST_UNSET_VAR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("targets.yml: targets[0] (g/p)") && stderr.contains("DEFSYNC_TEST_UNSET_VAR"), "{stderr}");
}
