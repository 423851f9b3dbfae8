//! `defsync pull` delivering through GitHub's API: a verified commit onto the branch, and a
//! pull request that is opened, updated and closed. The stand-in's bare repository is the
//! checkout's origin, so `git fetch` and the API see the same real objects.

use serde_json::json;

use super::standin::{OWNER, REPO, StandIn};
use crate::support::{Env, Run};

/// An embedded-store environment whose origin is the stand-in's bare repository.
async fn setup() -> (StandIn, Env) {
    let s = StandIn::start("").await;
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

fn pull(s: &StandIn, env: &Env, extra: &[&str]) -> Run {
    run(s, env, "pull", extra)
}

/// Runs a command as the workflow would: with the repository's name and a token.
fn run(s: &StandIn, env: &Env, command: &str, extra: &[&str]) -> Run {
    let mut args = vec![command, "--json"];
    args.extend_from_slice(extra);
    let repository = format!("{OWNER}/{REPO}");
    env.defsync_in(
        &env.work,
        &args,
        &[
            ("DEFSYNC_GITHUB_TOKEN", "ghs_installationtoken"),
            ("GITHUB_API_URL", s.url.as_str()),
            ("GITHUB_REPOSITORY", repository.as_str()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_commits_through_the_api_onto_the_branch() {
    let (s, env) = setup().await;
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--commit-via", "api"]));
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(r.changes(), ["git add workflow/notify"]);
    let sha = r.json()["git_commit"].as_str().unwrap().to_owned();
    // The branch on the "GitHub" side moved by compare-and-swap to the API commit, which has the
    // exact tree defsync verified, and the checkout followed it.
    assert_eq!(s.git(&["rev-parse", "main"]), sha);
    s.git(&["fsck", "--strict"]);
    assert!(s.git(&["ls-tree", "-r", "--name-only", "main"]).contains("defs/workflow/notify.yaml"));
    assert_eq!(env.head(), sha);
    assert!(!r.stdout.contains("ghs_installationtoken") && !r.stderr.contains("ghs_installationtoken"));
    // Idempotent, and the base moved: a push finds nothing to do.
    let again = tokio::task::block_in_place(|| pull(&s, &env, &["--commit-via", "api"]));
    assert_eq!(again.status(), "in_sync", "{again:#?}");
    assert_eq!(tokio::task::block_in_place(|| run(&s, &env, "push", &[])).status(), "in_sync");
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_is_opened_updated_and_closed() {
    let (s, env) = setup().await;
    let main_before = s.git(&["rev-parse", "main"]);
    let r =
        tokio::task::block_in_place(|| pull(&s, &env, &["--delivery", "pull-request", "--pr-labels", "defsync,sync"]));
    assert_eq!(r.code, 0, "{r:#?}");
    let pr = r.json()["pull_request"].clone();
    assert_eq!(pr["state"], "opened", "{pr}");
    assert_eq!(s.git(&["rev-parse", "main"]), main_before, "nothing lands on main without review");
    let head = s.git(&["rev-parse", "defsync/p1"]);
    assert_eq!(r.json()["git_commit"].as_str(), Some(head.as_str()));
    {
        let state = s.state.lock().unwrap();
        let open: Vec<_> = state.pulls.iter().filter(|p| p.state == "open").collect();
        assert_eq!(open.len(), 1);
        assert!(open[0].body.contains("notify"), "{}", open[0].body);
        assert!(open[0].labels.contains(&"defsync".to_owned()));
    }
    // Another dashboard edit updates the same pull request.
    tokio::task::block_in_place(|| env.dashboard_put("workflow", "notify", json!({"channel": "#deals"})));
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--delivery", "pull-request"]));
    assert_eq!(r.json()["pull_request"]["state"], "updated", "{r:#?}");
    assert_eq!(s.state.lock().unwrap().pulls.iter().filter(|p| p.state == "open").count(), 1);
    // Merge it (a fast-forward of main to the PR branch), then pull again: nothing is left, so
    // the pull request is closed and its branch deleted.
    let pr_head = s.git(&["rev-parse", "defsync/p1"]);
    s.git(&["update-ref", "refs/heads/main", &pr_head]);
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--delivery", "pull-request"]));
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(r.status(), "in_sync");
    assert_eq!(r.json()["pull_request"]["state"], "closed", "{r:#?}");
    assert!(s.git(&["branch", "--list", "defsync/p1"]).is_empty(), "the branch is deleted");
    // The push that the merge triggers records the agreement; nothing is sent.
    let push = tokio::task::block_in_place(|| run(&s, &env, "push", &[]));
    assert_eq!(push.status(), "in_sync", "{push:#?}");
    s.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_goes_on_the_pull_request_branch_and_main_is_untouched() {
    let (s, env) = setup().await;
    tokio::task::block_in_place(|| pull(&s, &env, &[]).ok());
    let f = "defs/workflow/notify.yaml";
    env.write(f, &env.read(f).replace("sales", "git-side"));
    env.git(&["commit", "--quiet", "-am", "git edit"]);
    env.git(&["push", "--quiet", "origin", "main"]);
    tokio::task::block_in_place(|| env.dashboard_put("workflow", "notify", json!({"channel": "#platform-side"})));
    let main_before = s.git(&["rev-parse", "main"]);
    let r = tokio::task::block_in_place(|| pull(&s, &env, &["--delivery", "pull-request"]));
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(r.json()["conflicts"][0]["resolution"], "written");
    assert_eq!(s.git(&["rev-parse", "main"]), main_before);
    assert!(s.git(&["show", &format!("defsync/p1:{f}")]).contains("platform-side"));
    let state = s.state.lock().unwrap();
    let body = &state.pulls.iter().find(|p| p.state == "open").unwrap().body;
    assert!(body.to_lowercase().contains("conflict"), "{body}");
}
