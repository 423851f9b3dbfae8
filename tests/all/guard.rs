//! The deletion guard (issue 8, part 3): a run that would delete more than `--max-deletions` of
//! one side's definitions stops with exit 2 and changes nothing, on a real `defsync serve` with
//! real `git`.

use std::net::SocketAddr;
use std::path::Path;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{Value, json};

use crate::server::ServerProcess;
use crate::support::{Env, Run};

const KEY: &str = "guard-test-key";

/// A serve and an environment on it whose branch and platform agree on `n` workflows
/// (`defs/workflow/w<i>.yaml`), with a README in the sync root, so the root survives when
/// every definition file is removed.
fn synced(n: usize) -> (tempfile::TempDir, ServerProcess, Env) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("store.db"), KEY);
    let env = Env::on_server(&server.url(), KEY);
    env.write("defs/README.md", "Definitions synced with the platform.\n");
    for i in 0..n {
        env.write(&format!("defs/workflow/w{i}.yaml"), &format!("kind: workflow\nname: w{i}\nspec:\n  step: {i}\n"));
    }
    env.commit_and_push("definitions");
    let r = env.run("push", &[]).ok();
    assert_eq!(r.changes().len(), n, "{r:#?}");
    (dir, server, env)
}

fn remove_workflows(env: &Env, range: std::ops::Range<usize>) {
    for i in range {
        std::fs::remove_file(env.work.join(format!("defs/workflow/w{i}.yaml"))).unwrap();
    }
    env.commit_and_push("remove workflows");
}

/// The platform head's seq: it moves with every platform commit.
fn seq(env: &Env) -> u64 {
    env.platform_head_seq()
}

#[track_caller]
fn assert_stopped(r: &Run, side: &str, deletions: u64, of: u64, limit: &str) -> Value {
    assert_eq!(r.code, 2, "expected the guard to stop the run: {r:#?}");
    let report = r.json();
    assert_eq!(report["status"], "mass_delete", "{r:#?}");
    let g = &report["deletion_guard"];
    assert_eq!(g["side"], side, "{g}");
    assert_eq!(g["deletions"], deletions, "{g}");
    assert_eq!(g["of"], of, "{g}");
    assert_eq!(g["limit"], limit, "{g}");
    assert_eq!((g["exceeded"].as_bool(), g["allowed"].as_bool()), (Some(true), Some(false)), "{g}");
    // The message: how many, out of how many, the limit, and both ways to allow the deletions.
    let said = format!("would delete {deletions} of the {of} ");
    let needles = [said.as_str(), limit, "--allow-mass-delete", "allow-mass-delete: true", "likely cause"];
    for needle in needles.into_iter().chain(["result: mass_delete (nothing was changed on either side"]) {
        assert!(r.stderr.contains(needle), "stderr lacks {needle:?}:\n{}", r.stderr);
    }
    report
}

#[test]
fn a_push_after_every_file_of_the_sync_root_was_deleted_stops_and_changes_nothing() {
    let (_dir, _server, env) = synced(12);
    let before = seq(&env);
    remove_workflows(&env, 0..12);

    let r = env.run("push", &[]);
    let report = assert_stopped(&r, "platform", 12, 12, "50%");
    assert_eq!(report["deletion_guard"]["max"], 6);
    assert!(r.stderr.contains("was moved, deleted or emptied in Git"), "{}", r.stderr);
    // The planned deletions are listed, so the reader sees what would have gone.
    assert_eq!(r.changes().len(), 12);
    assert!(r.changes().iter().all(|c| c.starts_with("platform delete ")), "{:?}", r.changes());
    assert_eq!(seq(&env), before, "the platform changed");

    // A dry run and `status` predict it, and fail too, so a check on the pull request shows it.
    assert_stopped(&env.run("push", &["--dry-run"]), "platform", 12, 12, "50%");
    assert_stopped(&env.run("status", &[]), "platform", 12, 12, "50%");

    // Nothing moved: putting the files back leaves both sides in agreement, base included.
    env.git(&["revert", "--no-edit", "HEAD"]);
    env.git(&["push", "--quiet", "origin", "main"]);
    let status = env.run("status", &[]).ok();
    assert_eq!(status.status(), "in_sync", "{status:#?}");
    assert_eq!(env.run("push", &[]).ok().status(), "in_sync");
    assert_eq!(seq(&env), before);
}

#[test]
fn a_sync_root_moved_elsewhere_in_git_deletes_nothing() {
    let (_dir, _server, env) = synced(12);
    let before = seq(&env);
    env.git(&["mv", "defs", "platform-defs"]);
    env.commit_and_push("move the definitions");

    // The root is gone: push refuses it as configuration, and says how to follow the move.
    let r = env.run("push", &[]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("sync root defs does not exist"), "{}", r.stderr);
    assert!(r.stderr.contains("defsync link --path"), "{}", r.stderr);
    assert_eq!(seq(&env), before);
    // `status` plans on the missing root as empty, and so shows the guard stopping the push.
    assert_stopped(&env.run("status", &[]), "platform", 12, 12, "50%");

    // A new, nearly empty folder at the old path: now the guard is what stops the push.
    env.write("defs/workflow/new.yaml", "kind: workflow\nname: new\n");
    env.commit_and_push("a new definition where the old ones were");
    let r = env.run("push", &[]);
    assert_stopped(&r, "platform", 12, 12, "50%");
    assert_eq!(seq(&env), before, "the guarded push sent the new definition anyway");
}

#[test]
fn a_dashboard_commit_deleting_everything_is_not_pulled_into_the_branch() {
    let (_dir, _server, env) = synced(10);
    for i in 0..10 {
        env.dashboard_delete("workflow", &format!("w{i}"));
    }
    let (head, origin) = (env.head(), env.origin_head());
    let r = env.run("pull", &[]);
    assert_stopped(&r, "git", 10, 10, "50%");
    assert!(r.stderr.contains("the platform answered an empty or partial project"), "{}", r.stderr);
    assert_eq!((env.head(), env.origin_head()), (head.clone(), origin.clone()), "the branch changed");
    assert_eq!(env.files().len(), 11);
    assert_stopped(&env.run("pull", &["--dry-run"]), "git", 10, 10, "50%");

    // Allowed for one run (the action's input arrives as this variable): the pull goes through.
    let r = env.defsync_in(&env.work, &["pull", "--json"], &[("DEFSYNC_ALLOW_MASS_DELETE", "true")]).ok();
    assert_eq!(r.status(), "changed");
    let g = &r.json()["deletion_guard"];
    assert_eq!(
        (g["deletions"].as_u64(), g["exceeded"].as_bool(), g["allowed"].as_bool()),
        (Some(10), Some(true), Some(true))
    );
    assert_eq!(env.files(), ["defs/README.md"]);
    assert_ne!(env.origin_head(), origin);
    // And the sides agree afterwards: the next runs change nothing and need no permission.
    assert_eq!(env.run("push", &[]).ok().status(), "in_sync");
    assert_eq!(env.run("pull", &[]).ok().status(), "in_sync");
}

#[test]
fn an_allowed_mass_delete_on_push_goes_through() {
    let (_dir, _server, env) = synced(12);
    let before = seq(&env);
    remove_workflows(&env, 0..12);
    let r = env.run("push", &["--allow-mass-delete"]).ok();
    assert_eq!(r.status(), "changed");
    let g = &r.json()["deletion_guard"];
    assert_eq!(
        (g["deletions"].as_u64(), g["exceeded"].as_bool(), g["allowed"].as_bool()),
        (Some(12), Some(true), Some(true))
    );
    assert!(r.stderr.contains("allowed for this run by --allow-mass-delete"), "{}", r.stderr);
    assert_eq!(seq(&env), before + 1);
    // The platform holds nothing now, and the permission was for that run only.
    let status = env.run("status", &[]).ok();
    assert_eq!(status.status(), "in_sync");
    assert!(status.json()["deletion_guard"].is_null());
}

#[test]
fn deletions_below_the_limit_and_in_small_projects_are_unaffected() {
    let (_dir, _server, env) = synced(12);
    // Exactly half is not more than half.
    remove_workflows(&env, 0..6);
    let r = env.run("push", &[]).ok();
    assert_eq!(r.status(), "changed");
    let g = &r.json()["deletion_guard"];
    assert_eq!((g["deletions"].as_u64(), g["of"].as_u64(), g["max"].as_u64()), (Some(6), Some(12), Some(6)));
    assert_eq!((g["exceeded"].as_bool(), g["allowed"].as_bool()), (Some(false), Some(true)));
    assert!(!r.stderr.contains("allow-mass-delete"), "{}", r.stderr);

    // Six left, fewer than ten: a share does not apply, and all of them may go.
    remove_workflows(&env, 6..12);
    let r = env.run("push", &[]).ok();
    assert_eq!(r.changes().len(), 6);
    let g = &r.json()["deletion_guard"];
    assert_eq!((g["of"].as_u64(), g["max"].is_null(), g["exceeded"].as_bool()), (Some(6), true, Some(false)));
    assert_eq!(env.run("status", &[]).ok().status(), "in_sync");
}

#[test]
fn an_absolute_count_applies_to_any_project() {
    let (_dir, _server, env) = synced(5);
    let before = seq(&env);
    remove_workflows(&env, 0..3);
    let r = env.run("push", &["--max-deletions", "2"]);
    let report = assert_stopped(&r, "platform", 3, 5, "2");
    assert_eq!(report["deletion_guard"]["max"], 2);
    assert_eq!(seq(&env), before);
    // The same limit from the environment (the action's max-deletions input), raised to fit.
    let r = env.defsync_in(&env.work, &["push", "--json"], &[("DEFSYNC_MAX_DELETIONS", "3")]).ok();
    assert_eq!(r.changes().len(), 3);
    assert_eq!(seq(&env), before + 1);
    // A limit that is neither a count nor a share is a usage error that says what to give.
    let r = env.run("push", &["--max-deletions", "half"]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("`50%`"), "{}", r.stderr);
}

#[test]
fn the_job_summary_outputs_and_annotations_show_the_guard() {
    let (dir, _server, env) = synced(12);
    remove_workflows(&env, 0..10);
    let (summary, output) = (dir.path().join("summary.md"), dir.path().join("output.txt"));
    let runner = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
        ("GITHUB_OUTPUT", output.to_str().unwrap()),
    ];
    let r = env.defsync_in(&env.work, &["push", "--json"], &runner);
    assert_stopped(&r, "platform", 10, 12, "50%");
    let md = read(&summary);
    for needle in
        ["stopped by the deletion guard", "### Deletion guard", "| 10 | 12 | `50%` (at most 6) | **stopped** |"]
    {
        assert!(md.contains(needle), "summary lacks {needle:?}:\n{md}");
    }
    assert!(md.contains("allow-mass-delete: true"), "{md}");
    let out = read(&output);
    assert!(out.contains("status=mass_delete\n") && out.contains("changed=false\n"), "{out}");
    assert!(r.stderr.contains("::error title=Mass deletion stopped::A push would delete 10 of the 12"), "{}", r.stderr);
}

#[test]
fn a_platform_that_answers_an_empty_manifest_cannot_empty_the_branch() {
    let (_dir, server, mut env) = synced(12);
    let (head, origin) = (env.head(), env.origin_head());
    let faulty = EmptyingProxy::start(&server.url());
    env.platform = faulty.url.clone();
    let r = env.run("pull", &[]);
    assert_stopped(&r, "git", 12, 12, "50%");
    assert!(faulty.emptied() > 0, "the proxy never saw a manifest");
    assert_eq!((env.head(), env.origin_head()), (head.clone(), origin.clone()), "the branch changed");
    assert_eq!(env.files().len(), 13);
    // Nothing moved on the platform either: through the real server, the sides still agree and
    // the base is intact (a base emptied by the faulty run would turn the files into additions).
    env.platform = server.url();
    let status = env.run("status", &[]).ok();
    assert_eq!(status.status(), "in_sync", "{status:#?}");
    assert_eq!(env.run("pull", &[]).ok().status(), "in_sync");
    assert_eq!(env.head(), head);
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// A faulty platform: forwards to a real `defsync serve`, but every manifest it returns lists
/// no entries, as a platform bug that loses a project's contents would.
struct EmptyingProxy {
    url: String,
    emptied: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

#[derive(Clone)]
struct Upstream {
    url: String,
    client: reqwest::Client,
    emptied: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl EmptyingProxy {
    fn start(upstream: &str) -> EmptyingProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let emptied = std::sync::Arc::default();
        let state = Upstream {
            url: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            emptied: std::sync::Arc::clone(&emptied),
        };
        let app = axum::Router::new().fallback(forward_emptying).with_state(state);
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        EmptyingProxy { url: format!("http://{addr}"), emptied, _runtime: runtime }
    }

    fn emptied(&self) -> usize {
        self.emptied.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn forward_emptying(State(up): State<Upstream>, req: Request) -> Response {
    let method = req.method().clone();
    let manifest = req.uri().path().ends_with("/manifest");
    let path_q = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let headers = req.headers().clone();
    let body = to_bytes(req.into_body(), usize::MAX).await.unwrap();
    let mut out = up.client.request(method, format!("{}{path_q}", up.url));
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    let answer = out.body(body).send().await.unwrap();
    let status = answer.status();
    let mut response = Response::builder().status(status);
    for (k, v) in answer.headers() {
        if k != "content-length" && k != "transfer-encoding" {
            response = response.header(k, v);
        }
    }
    let mut bytes = answer.bytes().await.unwrap().to_vec();
    if manifest && status.is_success() {
        let mut value: Value = serde_json::from_slice(&bytes).unwrap();
        value["entries"] = json!([]);
        bytes = serde_json::to_vec(&value).unwrap();
        up.emptied.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    response.body(Body::from(bytes)).unwrap()
}
