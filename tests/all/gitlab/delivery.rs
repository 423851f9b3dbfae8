//! `defsync pull --forge gitlab` end to end through the real binary: an API commit onto the
//! branch, a merge request opened, updated and closed, a conflict MR, a branch that moves
//! mid-run, `ci.skip`, and `defsync dispatch --forge gitlab`. The stand-in's bare repository is
//! the checkout's origin, so `git fetch` and the API see the same real objects.

use serde_json::json;

use super::standin::{Action, PROJECT_PATH, StandIn, TRIGGER_TOKEN};
use crate::support::{Env, Run};

/// An embedded-store environment whose origin is the stand-in's bare repository.
async fn setup() -> (StandIn, Env) {
    let s = StandIn::start().await;
    let env = tokio::task::spawn_blocking(|| {
        let env = Env::new();
        env.dashboard_put("workflow", "notify", json!({"channel": "#sales"}));
        env
    })
    .await
    .unwrap();
    let bare = s.bare.to_str().unwrap().to_owned();
    env.git(&["push", "--quiet", &bare, "main"]);
    env.git(&["remote", "set-url", "origin", &bare]);
    env.git(&["fetch", "--quiet", "origin"]);
    (s, env)
}

/// Runs a command as a GitLab job would: the forge from `GITLAB_CI`, the API root from
/// `CI_API_V4_URL`, the project from `CI_PROJECT_ID`... here given as the path, and the token
/// in `GITLAB_TOKEN`.
fn run_with(s: &StandIn, env: &Env, command: &str, extra: &[&str], token: &str) -> Run {
    let mut args = vec![command, "--json"];
    args.extend_from_slice(extra);
    env.defsync_in(
        &env.work,
        &args,
        &[
            ("GITLAB_CI", "true"),
            ("GITLAB_TOKEN", token),
            ("CI_API_V4_URL", s.url.as_str()),
            ("CI_PROJECT_ID", PROJECT_PATH),
        ],
    )
}

fn pull(s: &StandIn, env: &Env, extra: &[&str]) -> Run {
    run_with(s, env, "pull", extra, "glpat-maintainer")
}

fn gitlab_requests(s: &StandIn) -> usize {
    s.exchanges().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_commits_through_the_api_onto_the_branch() {
    let (s, env) = setup().await;
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--commit-via", "api"]));
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(r.changes(), ["git add workflow/notify"]);
    let sha = r.json()["git_commit"].as_str().unwrap().to_owned();
    assert_eq!(s.git(&["rev-parse", "main"]), sha);
    s.git(&["fsck", "--strict"]);
    assert!(s.git(&["ls-tree", "-r", "--name-only", "main"]).contains("defs/workflow/notify.yaml"));
    // The checkout followed: GitLab's commit has the tree defsync verified (the engine compares).
    assert_eq!(env.head(), sha);
    assert!(!r.stdout.contains("glpat-maintainer") && !r.stderr.contains("glpat-maintainer"));
    let again = tokio::task::block_in_place(|| pull(&s, &env, &["--commit-via", "api"]));
    assert_eq!(again.status(), "in_sync", "{again:#?}");
    // The push pipeline that the pull commit starts on GitLab is a no-op.
    assert_eq!(tokio::task::block_in_place(|| run_with(&s, &env, "push", &[], "glpat-maintainer")).status(), "in_sync");
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_of_1000_changed_definitions_takes_at_most_3_gitlab_requests() {
    let (s, env) = setup().await;
    let put_all = |version: &str| {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<String> = (0..1000)
            .map(|i| {
                let f = dir.path().join(format!("d{i}.yaml"));
                std::fs::write(&f, format!("kind: dashboard\nname: d{i}\nspec:\n  title: \"{version}\"\n")).unwrap();
                f.to_str().unwrap().to_owned()
            })
            .collect();
        let mut args = vec!["dashboard", "put"];
        args.extend(files.iter().map(String::as_str));
        env.defsync(&args).ok();
    };
    tokio::task::block_in_place(|| put_all("v1"));
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--commit-via", "api"]));
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(r.changes().len(), 1001);
    let first = gitlab_requests(&s);
    assert!(first <= 3, "{first} GitLab requests: {:#?}", s.exchanges().iter().map(|e| &e.path).collect::<Vec<_>>());

    // 1,000 updates: each carries its file's last commit as the guard.
    tokio::task::block_in_place(|| put_all("v2"));
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--commit-via", "api"]));
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(r.changes().len(), 1000);
    let second = gitlab_requests(&s) - first;
    assert!(second <= 3, "{second} GitLab requests");
    let commit = s.exchanges().into_iter().rfind(|e| e.method == "POST").unwrap();
    let actions = commit.request.unwrap()["actions"].as_array().unwrap().clone();
    assert_eq!(actions.len(), 1000);
    assert!(actions.iter().all(|a| a["action"] == "update" && a["last_commit_id"].is_string()));
    assert_eq!(env.head(), s.git(&["rev-parse", "main"]));
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_that_moves_mid_run_is_re_planned_and_no_commit_is_lost() {
    let (s, env) = setup().await;
    // Between defsync's read of the branch and its commit, a colleague pushes another file.
    s.inject(
        "post",
        "/repository/commits",
        Action::PushFiles { branch: "main".into(), files: vec![("docs/notes.md".into(), "colleague\n".into())] },
    );
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--commit-via", "api"]));
    assert_eq!(r.code, 0, "{r:#?}");
    let tip = s.git(&["rev-parse", "main"]);
    // Both the colleague's file and the definition are on main; the run re-planned and found
    // the definition already there.
    assert_eq!(s.git(&["show", "main:docs/notes.md"]), "colleague");
    assert!(s.git(&["ls-tree", "-r", "--name-only", "main"]).contains("defs/workflow/notify.yaml"));
    assert!(s.git(&["log", "--format=%an", "main"]).contains("Other Writer"));
    assert_eq!(env.head(), tip, "the checkout followed the branch");
    let again = tokio::task::block_in_place(|| pull(&s, &env, &["--commit-via", "api"]));
    assert_eq!(again.status(), "in_sync", "{again:#?}");
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_request_is_opened_updated_and_closed() {
    let (s, env) = setup().await;
    let main_before = s.git(&["rev-parse", "main"]);
    // A Developer may not push to the protected main, but may deliver through an MR.
    let mr_pull = |extra: &[&str]| {
        let mut args = vec!["--delivery", "merge-request", "--commit-via", "api"];
        args.extend_from_slice(extra);
        tokio::task::block_in_place(|| run_with(&s, &env, "pull", &args, "glpat-developer"))
    };
    let r = mr_pull(&["--pr-labels", "defsync,sync"]);
    assert_eq!(r.code, 0, "{r:#?}");
    let mr = r.json()["pull_request"].clone();
    assert_eq!(mr["state"], "opened", "{mr}");
    assert_eq!(mr["number"], 1);
    assert_eq!(s.git(&["rev-parse", "main"]), main_before, "nothing lands on main without review");
    assert_eq!(r.json()["git_commit"].as_str().unwrap(), s.git(&["rev-parse", "defsync/p1"]));
    {
        let st = s.state.lock().unwrap();
        let open: Vec<_> = st.mrs.iter().filter(|m| m.state == "opened").collect();
        assert_eq!(open.len(), 1);
        assert!(open[0].description.contains("notify") && open[0].description.contains("merge request"));
        assert_eq!(open[0].labels, ["defsync", "sync"]);
    }
    tokio::task::block_in_place(|| env.dashboard_put("workflow", "notify", json!({"channel": "#deals"})));
    let r = mr_pull(&[]);
    assert_eq!(r.json()["pull_request"]["state"], "updated", "{r:#?}");
    assert_eq!(s.state.lock().unwrap().mrs.len(), 1);
    // Merge it (main fast-forwards to the MR branch), then pull: the MR is closed, its branch gone.
    let head = s.git(&["rev-parse", "defsync/p1"]);
    s.git(&["update-ref", "refs/heads/main", &head]);
    let r = mr_pull(&[]);
    assert_eq!(r.status(), "in_sync", "{r:#?}");
    assert_eq!(r.json()["pull_request"]["state"], "closed", "{r:#?}");
    assert!(s.git(&["branch", "--list", "defsync/p1"]).is_empty());
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_goes_on_the_merge_request_branch_and_main_is_untouched() {
    let (s, env) = setup().await;
    tokio::task::block_in_place(|| pull(&s, &env, &[]).ok());
    let f = "defs/workflow/notify.yaml";
    env.write(f, &env.read(f).replace("sales", "git-side"));
    env.git(&["commit", "--quiet", "-am", "git edit"]);
    env.git(&["push", "--quiet", "origin", "main"]);
    tokio::task::block_in_place(|| env.dashboard_put("workflow", "notify", json!({"channel": "#platform-side"})));
    let main_before = s.git(&["rev-parse", "main"]);
    // Git delivery of the MR branch: a force push of defsync's own branch, then the API.
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--delivery", "merge-request"]));
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(r.json()["conflicts"][0]["resolution"], "written");
    assert_eq!(s.git(&["rev-parse", "main"]), main_before);
    assert!(s.git(&["show", &format!("defsync/p1:{f}")]).contains("platform-side"));
    let st = s.state.lock().unwrap();
    let description = &st.mrs.iter().find(|m| m.state == "opened").unwrap().description;
    assert!(description.contains("### Conflicts") && description.contains("merge request"), "{description}");
    drop(st);
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_skip_pushes_with_the_push_option_and_api_commits_say_skip_ci() {
    let (s, env) = setup().await;
    // The origin records the push options it receives, as GitLab reads `ci.skip` from them.
    s.git(&["config", "receive.advertisePushOptions", "true"]);
    let log = s.bare.join("push-options.log");
    let hook = s.bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >/dev/null\ni=0\nwhile [ $i -lt \"${{GIT_PUSH_OPTION_COUNT:-0}}\" ]; do eval \"echo \\$GIT_PUSH_OPTION_$i\" >> '{}'; i=$((i+1)); done\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--ci-skip"]));
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ci.skip\n");
    // Through the API: `[skip ci]` on the subject.
    tokio::task::block_in_place(|| env.dashboard_put("workflow", "notify", json!({"channel": "#api"})));
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--ci-skip", "--commit-via", "api"]));
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(s.git(&["log", "-1", "--format=%s", "main"]).ends_with("[skip ci]"));
    // And were the pipeline to run anyway, its push would be a no-op.
    assert_eq!(tokio::task::block_in_place(|| run_with(&s, &env, "push", &[], "glpat-maintainer")).status(), "in_sync");
    // On GitHub the option makes no sense, and says why.
    let gh = tokio::task::block_in_place(|| env.run("pull", &["--forge", "github", "--ci-skip"]));
    assert_eq!(gh.code, 2, "{gh:#?}");
    assert!(gh.stderr.contains("--ci-skip is for GitLab"), "{}", gh.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_branch_refuses_a_developer_with_the_fix() {
    let (s, env) = setup().await;
    let r = tokio::task::block_in_place(|| run_with(&s, &env, "pull", &["--commit-via", "api"], "glpat-developer"));
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stderr.contains("You are not allowed to push into this branch"), "{}", r.stderr);
    assert!(r.stderr.contains("--delivery pull-request"), "{}", r.stderr);
    assert!(!r.stderr.contains("glpat-developer"));
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_triggers_the_pull_pipeline() {
    let (s, env) = setup().await;
    let r = tokio::task::block_in_place(|| {
        env.defsync_in(
            &env.work,
            &[
                "dispatch",
                "--forge",
                "gitlab",
                "--gitlab-project",
                PROJECT_PATH,
                "--ref",
                "main",
                "--project",
                "p1",
                "--commit",
                "c7",
            ],
            &[("DEFSYNC_GITLAB_TRIGGER_TOKEN", TRIGGER_TOKEN), ("DEFSYNC_GITLAB_URL", s.url.as_str())],
        )
    });
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(r.stderr.contains("started pipeline"), "{}", r.stderr);
    assert!(!r.stderr.contains(TRIGGER_TOKEN));
    let st = s.state.lock().unwrap();
    assert_eq!(st.pipelines.len(), 1);
    assert_eq!(st.pipelines[0]["variables"], json!({"DEFSYNC_PROJECT": "p1", "DEFSYNC_COMMIT": "c7"}));
    drop(st);
    s.assert_conforms();
}
