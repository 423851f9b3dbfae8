//! End-to-end runs of `pull`, `push`, `status` and `link` with real `git` (a bare origin and its
//! clones) and the real binary, on the embedded store, and on `defsync serve` where HTTP matters.

use serde_json::json;

use crate::support::{Env, PROJECT};

fn seeded() -> Env {
    let env = Env::new();
    env.dashboard_put("workflow", "notify-on-deal", json!({"channel": "#sales", "retries": 3}));
    env.dashboard_put("connection", "salesforce", json!({"api_version": "61.0"}));
    env
}

/// A seeded environment after its first pull.
fn pulled() -> Env {
    let env = seeded();
    env.run("pull", &[]).ok();
    env
}

#[test]
fn first_pull_into_an_empty_repository() {
    let env = seeded();
    let r = env.run("pull", &[]).ok();
    assert_eq!(r.status(), "changed");
    assert_eq!(r.changes(), ["git add connection/salesforce", "git add workflow/notify-on-deal"]);
    assert_eq!(env.files(), ["defs/connection/salesforce.yaml", "defs/workflow/notify-on-deal.yaml"]);
    assert_eq!(
        env.read("defs/workflow/notify-on-deal.yaml"),
        "kind: workflow\nname: notify-on-deal\nspec:\n  channel: '#sales'\n  retries: 3\n"
            .replace("'#sales'", &rendered_string("#sales"))
    );
    // The commit reached the origin, and the checkout moved with it.
    assert_eq!(env.head(), env.origin_head());
    assert_eq!(r.json()["git_commit"].as_str(), Some(env.head().as_str()));
    let message = env.git(&["log", "-1", "--format=%B"]);
    assert!(message.contains(&format!("Defsync-Project: {PROJECT}")), "{message}");
    let head = r.json()["platform_commit"]["id"].as_str().unwrap().to_owned();
    assert!(message.contains(&format!("Defsync-Commit: {head}")), "{message}");
    // Idempotent.
    let again = env.run("pull", &[]).ok();
    assert_eq!(again.status(), "in_sync");
    assert!(again.changes().is_empty());
    assert_eq!(env.head(), env.origin_head());
}

/// How the renderer writes a plain string scalar (quoted or not), so the test does not pin a
/// quoting style that the snapshot tests own.
fn rendered_string(s: &str) -> String {
    let def = defsync::model::Definition { kind: "k".into(), name: "n".into(), spec: json!(s) };
    defsync::yaml::render(&def).lines().find_map(|l| l.strip_prefix("spec: ")).unwrap().to_owned()
}

#[test]
fn a_git_edit_is_pushed_and_a_second_push_does_nothing() {
    let env = pulled();
    let seq = env.platform_head_seq();
    let f = "defs/workflow/notify-on-deal.yaml";
    env.write(f, &env.read(f).replace("retries: 3", "retries: 5"));
    env.commit_and_push("more retries");
    let r = env.run("push", &[]).ok();
    assert_eq!(r.status(), "changed");
    assert_eq!(r.changes(), ["platform update workflow/notify-on-deal"]);
    assert_eq!(r.json()["platform_commit"]["seq"].as_u64(), Some(seq + 1));
    let again = env.run("push", &[]).ok();
    assert_eq!(again.status(), "in_sync");
    assert_eq!(env.platform_head_seq(), seq + 1);
    // And the pull that the platform might dispatch after a Git commit does nothing either.
    let head = env.head();
    assert_eq!(env.run("pull", &[]).ok().status(), "in_sync");
    assert_eq!(env.head(), head);
}

#[test]
fn a_dashboard_edit_is_pulled_and_nothing_loops() {
    let env = pulled();
    env.dashboard_put("connection", "salesforce", json!({"api_version": "62.0"}));
    let seq = env.platform_head_seq();
    let r = env.run("pull", &[]).ok();
    assert_eq!(r.changes(), ["git update connection/salesforce"]);
    assert!(env.read("defs/connection/salesforce.yaml").contains("62.0"));
    let head = env.head();
    assert_eq!(env.run("pull", &[]).ok().status(), "in_sync");
    assert_eq!(env.head(), head);
    // The push that the pull commit triggers sends nothing.
    let push = env.run("push", &[]).ok();
    assert_eq!(push.status(), "in_sync");
    assert_eq!(env.platform_head_seq(), seq);
}

#[test]
fn edits_to_different_definitions_on_both_sides_merge() {
    let env = pulled();
    env.dashboard_put("connection", "salesforce", json!({"api_version": "63.0"}));
    let f = "defs/workflow/notify-on-deal.yaml";
    env.write(f, &env.read(f).replace("retries: 3", "retries: 4"));
    env.commit_and_push("git edit");
    assert_eq!(env.run("pull", &[]).ok().changes(), ["git update connection/salesforce"]);
    assert_eq!(env.run("push", &[]).ok().changes(), ["platform update workflow/notify-on-deal"]);
    let status = env.run("status", &[]).ok();
    assert_eq!(status.status(), "in_sync", "{status:#?}");
    assert!(env.read(f).contains("retries: 4"));
    assert!(env.read("defs/connection/salesforce.yaml").contains("63.0"));
}

/// Both sides edit `workflow/notify-on-deal`; returns the env and the platform's seq.
fn conflicted() -> (Env, u64) {
    let env = pulled();
    env.dashboard_put("workflow", "notify-on-deal", json!({"channel": "#sales", "retries": 9}));
    let f = "defs/workflow/notify-on-deal.yaml";
    env.write(f, &env.read(f).replace("retries: 3", "retries: 7"));
    env.commit_and_push("git edit");
    let seq = env.platform_head_seq();
    (env, seq)
}

#[test]
fn the_same_definition_edited_on_both_sides_is_a_conflict_and_nothing_changes() {
    let (env, seq) = conflicted();
    let origin = env.origin_head();
    for command in ["pull", "push"] {
        let r = env.run(command, &[]);
        assert_eq!(r.code, 3, "{r:#?}");
        let report = r.json();
        assert_eq!(report["status"], "conflict");
        let c = &report["conflicts"][0];
        assert_eq!((c["kind"].as_str(), c["name"].as_str()), (Some("workflow"), Some("notify-on-deal")));
        assert_eq!(c["resolution"], "none");
        assert!(c["base"].as_str().unwrap().starts_with("sha256:"));
        assert_ne!(c["git"], c["platform"]);
        assert!(c["git_yaml"].as_str().unwrap().contains("retries: 7"));
        assert!(c["platform_yaml"].as_str().unwrap().contains("retries: 9"));
        assert_eq!(env.origin_head(), origin, "{command} changed the branch");
        assert_eq!(env.platform_head_seq(), seq, "{command} changed the platform");
    }
}

#[test]
fn prefer_platform_on_pull_writes_the_platform_version() {
    let (env, _) = conflicted();
    let r = env.run("pull", &["--on-conflict", "prefer-platform"]).ok();
    assert_eq!(r.json()["conflicts"][0]["resolution"], "written");
    assert!(env.read("defs/workflow/notify-on-deal.yaml").contains("retries: 9"));
    assert_eq!(env.run("status", &[]).ok().status(), "in_sync");
}

#[test]
fn prefer_git_on_push_writes_the_git_version() {
    let (env, seq) = conflicted();
    let r = env.run("push", &["--on-conflict", "prefer-git"]).ok();
    assert_eq!(r.json()["conflicts"][0]["resolution"], "written");
    assert_eq!(env.platform_head_seq(), seq + 1);
    assert_eq!(env.run("status", &[]).ok().status(), "in_sync");
    assert!(env.read("defs/workflow/notify-on-deal.yaml").contains("retries: 7"));
}

#[test]
fn prefer_git_on_pull_defers_to_the_next_push() {
    let (env, seq) = conflicted();
    let head = env.head();
    let r = env.run("pull", &["--on-conflict", "prefer-git"]).ok();
    assert_eq!(r.json()["conflicts"][0]["resolution"], "deferred");
    assert_eq!(env.head(), head, "a deferral writes nothing to the branch");
    let push = env.run("push", &[]).ok();
    assert_eq!(push.changes(), ["platform update workflow/notify-on-deal"]);
    assert_eq!(env.platform_head_seq(), seq + 1);
    assert_eq!(env.run("status", &[]).ok().status(), "in_sync");
}

/// Contract v1.1: the push records the deferral by setting the base to Git's digest, which the
/// platform never saw. In v1 the platform refused that base, the push reported "deferred" and
/// `changed` while nothing changed, and the next pull still stopped on the conflict.
#[test]
fn prefer_platform_on_push_defers_to_the_next_pull() {
    let (env, seq) = conflicted();
    let r = env.run("push", &["--on-conflict", "prefer-platform"]).ok();
    assert_eq!(r.json()["conflicts"][0]["resolution"], "deferred");
    assert_eq!(r.status(), "changed", "the base moved");
    assert_eq!(env.platform_head_seq(), seq, "a deferral sends nothing to the platform");
    let pull = env.run("pull", &[]).ok();
    assert_eq!(pull.changes(), ["git update workflow/notify-on-deal"]);
    assert!(env.read("defs/workflow/notify-on-deal.yaml").contains("retries: 9"));
    assert_eq!(env.run("push", &[]).ok().status(), "in_sync");
    assert_eq!(env.run("status", &[]).ok().status(), "in_sync");
}

#[test]
fn deletions_are_carried_both_ways() {
    let env = pulled();
    env.git(&["rm", "--quiet", "defs/workflow/notify-on-deal.yaml"]);
    env.commit_and_push("remove the workflow");
    assert_eq!(env.run("push", &[]).ok().changes(), ["platform delete workflow/notify-on-deal"]);
    env.dashboard_delete("connection", "salesforce");
    assert_eq!(env.run("pull", &[]).ok().changes(), ["git delete connection/salesforce"]);
    assert!(env.files().is_empty());
    assert!(!env.exists("defs/connection"), "the folder left empty is removed");
    assert_eq!(env.run("status", &[]).ok().status(), "in_sync");
}

#[test]
fn a_moved_file_is_not_a_change() {
    let env = pulled();
    std::fs::create_dir_all(env.work.join("defs/sales")).unwrap();
    env.git(&["mv", "defs/workflow/notify-on-deal.yaml", "defs/sales/deal-alerts.yml"]);
    env.commit_and_push("reorganise");
    let seq = env.platform_head_seq();
    assert_eq!(env.run("push", &[]).ok().status(), "in_sync");
    assert_eq!(env.run("pull", &[]).ok().status(), "in_sync");
    assert_eq!(env.platform_head_seq(), seq);
    // A later platform edit lands in the file where the user keeps it.
    env.dashboard_put("workflow", "notify-on-deal", json!({"channel": "#sales", "retries": 1}));
    assert_eq!(env.run("pull", &[]).ok().changes(), ["git update workflow/notify-on-deal"]);
    assert!(env.read("defs/sales/deal-alerts.yml").contains("retries: 1"));
    assert!(!env.exists("defs/workflow/notify-on-deal.yaml"));
}

#[test]
fn a_late_dispatch_pulls_the_head() {
    let env = pulled();
    let first = env.run("status", &[]).json()["platform_commit"]["id"].as_str().unwrap().to_owned();
    env.dashboard_put("connection", "salesforce", json!({"api_version": "70.0"}));
    env.dashboard_put("connection", "salesforce", json!({"api_version": "71.0"}));
    let r = env.run("pull", &["--commit", &first]).ok();
    let report = r.json();
    assert_eq!(report["requested_commit"].as_str(), Some(first.as_str()));
    assert_ne!(report["platform_commit"]["id"].as_str(), Some(first.as_str()));
    assert!(env.read("defs/connection/salesforce.yaml").contains("71.0"));
    // A commit the platform never had is refused.
    let bad = env.run("pull", &["--commit", "c_does_not_exist"]);
    assert_eq!(bad.code, 2, "{bad:#?}");
    assert!(bad.stderr.contains("c_does_not_exist"));
}

#[test]
fn a_push_while_the_dashboard_holds_unpulled_edits_reverts_nothing() {
    let env = pulled();
    env.dashboard_put("connection", "salesforce", json!({"api_version": "99.0"}));
    let f = "defs/workflow/notify-on-deal.yaml";
    env.write(f, &env.read(f).replace("retries: 3", "retries: 8"));
    env.commit_and_push("git edit");
    assert_eq!(env.run("push", &[]).ok().changes(), ["platform update workflow/notify-on-deal"]);
    // The dashboard edit was not marked as agreed: the next pull brings it in.
    assert_eq!(env.run("pull", &[]).ok().changes(), ["git update connection/salesforce"]);
    assert!(env.read("defs/connection/salesforce.yaml").contains("99.0"));
    assert_eq!(env.run("status", &[]).ok().status(), "in_sync");
}

#[test]
fn an_old_push_run_repeated_later_sends_nothing_old() {
    let env = pulled();
    let f = "defs/workflow/notify-on-deal.yaml";
    env.write(f, &env.read(f).replace("retries: 3", "retries: 10"));
    env.commit_and_push("ten");
    let old = env.head();
    env.run("push", &[]).ok();
    env.write(f, &env.read(f).replace("retries: 10", "retries: 11"));
    env.commit_and_push("eleven");
    env.run("push", &[]).ok();
    let seq = env.platform_head_seq();
    // Re-run the first push's workflow: its checkout is the old commit.
    env.git(&["checkout", "--quiet", "--detach", &old]);
    let r = env.run("push", &["--branch", "main"]).ok();
    assert_eq!(r.status(), "in_sync", "{r:#?}");
    assert_eq!(env.platform_head_seq(), seq);
    env.git(&["checkout", "--quiet", "main"]);
}

#[test]
fn a_run_with_another_link_is_refused_and_link_moves_it() {
    let env = pulled();
    let r = env.run("push", &["--path", "elsewhere"]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("defsync link"), "{}", r.stderr);
    assert!(r.stderr.contains("path defs") && r.stderr.contains("path elsewhere"), "{}", r.stderr);
    let r = env.run("pull", &["--direction", "platform-to-git"]);
    assert_eq!(r.code, 2, "{r:#?}");
    // Move the link; keys found on one side only are copied, nothing is deleted.
    env.run("link", &["--path", "elsewhere"]).ok();
    let pull = env.run("pull", &["--path", "elsewhere"]).ok();
    assert_eq!(pull.changes().len(), 2);
    assert!(env.exists("elsewhere/workflow/notify-on-deal.yaml"));
    assert!(env.exists("defs/workflow/notify-on-deal.yaml"), "the old folder is left alone");
}

#[test]
fn one_way_links_refuse_the_other_direction() {
    let env = seeded();
    env.run("link", &["--direction", "platform-to-git"]).ok();
    env.run("pull", &["--direction", "platform-to-git"]).ok();
    let r = env.run("push", &["--direction", "platform-to-git"]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("push is refused"), "{}", r.stderr);
}

#[test]
fn a_pull_whose_push_is_rejected_replans_on_the_new_tip() {
    let env = seeded();
    env.run("pull", &[]).ok();
    env.dashboard_put("connection", "salesforce", json!({"api_version": "80.0"}));
    // A colleague pushes to main while the pull runs: a pre-push hook in the checkout pushes
    // their commit first, once, so the pull's own push is not a fast-forward.
    let colleague = env.second_clone("colleague");
    std::fs::write(colleague.join("NOTES.md"), "notes\n").unwrap();
    env.git_in(&colleague, &["add", "NOTES.md"]);
    env.git_in(&colleague, &["commit", "--quiet", "-m", "colleague's commit"]);
    let marker = env.dir.path().join("raced");
    let hook = env.work.join(".git/hooks/pre-push");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nif [ ! -e '{m}' ]; then touch '{m}'; git -C '{c}' push --quiet origin main; fi\nexit 0\n",
            m = marker.display(),
            c = colleague.display()
        ),
    )
    .unwrap();
    make_executable(&hook);
    let r = env.run("pull", &[]).ok();
    assert!(marker.exists(), "the race happened");
    assert_eq!(r.changes(), ["git update connection/salesforce"]);
    // The pull's commit sits on top of the colleague's.
    let log = env.git_in(&env.origin, &["log", "--format=%s", "main"]);
    let subjects: Vec<&str> = log.lines().collect();
    assert!(subjects[0].starts_with("defsync: pull"), "{subjects:?}");
    assert_eq!(subjects[1], "colleague's commit");
    assert_eq!(env.head(), env.origin_head());
}

#[cfg(unix)]
fn make_executable(p: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn bad_files_are_all_reported_and_nothing_is_sent() {
    let env = pulled();
    let seq = env.platform_head_seq();
    env.write("defs/bad/dup.yaml", "kind: workflow\nname: x\nspec:\n  a: 1\n  a: 2\n");
    env.write("defs/bad/unknown.yaml", "kind: workflow\nname: y\nmetadata: {}\n");
    env.write("defs/bad/syntax.yaml", "kind: workflow\nname: [unclosed\n");
    env.write("defs/good/new.yaml", "kind: workflow\nname: new-one\n");
    env.write("defs/good/copy.yaml", &env.read("defs/connection/salesforce.yaml"));
    env.commit_and_push("bad files");
    let r = env.run("push", &[]);
    assert_eq!(r.code, 4, "{r:#?}");
    let report = r.json();
    assert_eq!(report["status"], "invalid");
    let paths: Vec<&str> = report["errors"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    for p in [
        "defs/bad/dup.yaml",
        "defs/bad/unknown.yaml",
        "defs/bad/syntax.yaml",
        "defs/good/copy.yaml",
        "defs/connection/salesforce.yaml",
    ] {
        assert!(paths.contains(&p), "{p} not reported: {paths:?}");
    }
    let dup = report["errors"].as_array().unwrap().iter().find(|e| e["path"] == "defs/bad/dup.yaml").unwrap();
    assert!(dup["line"].as_u64().is_some(), "{dup}");
    assert_eq!(env.platform_head_seq(), seq);
    // A pull refuses too, rather than building on a branch it cannot read.
    assert_eq!(env.run("pull", &[]).code, 4);
}

#[test]
fn hostile_names_from_the_platform_stay_inside_the_sync_root() {
    let env = Env::new();
    let long = "x".repeat(200);
    let names = [
        "../../etc/passwd",
        "/abs",
        "a/../../b",
        "CON",
        "con",
        "Case",
        "case",
        long.as_str(),
        ".git/config",
        "..",
        "a\\..\\b",
    ];
    for n in names {
        env.dashboard_put("workflow", n, json!({"n": n}));
    }
    let r = env.run("pull", &[]).ok();
    assert_eq!(r.changes().len(), names.len());
    let files = env.files();
    assert_eq!(files.len(), names.len(), "{files:?}");
    for f in &files {
        assert!(f.starts_with("defs/workflow/"), "{f}");
        assert!(!f.split('/').any(|p| p == ".." || p == "." || p.starts_with('.')), "{f}");
        assert!(f.split('/').all(|p| p.len() <= 85), "{f}");
    }
    let lower: std::collections::HashSet<String> = files.iter().map(|f| f.to_lowercase()).collect();
    assert_eq!(lower.len(), files.len(), "case-insensitive collision: {files:?}");
    assert!(!env.dir.path().join("etc").exists());
    assert_eq!(env.run("status", &[]).ok().status(), "in_sync");
}

#[cfg(unix)]
#[test]
fn a_symlink_in_the_sync_root_is_an_error() {
    let env = pulled();
    std::os::unix::fs::symlink("../README.md", env.work.join("defs/link.yaml")).unwrap();
    env.commit_and_push("a link");
    let r = env.run("push", &[]);
    assert_eq!(r.code, 4, "{r:#?}");
    assert!(r.json()["errors"].as_array().unwrap().iter().any(|e| e["path"] == "defs/link.yaml"), "{r:#?}");
}

#[cfg(unix)]
#[test]
fn a_sync_root_behind_a_symlink_is_refused() {
    let env = seeded();
    std::fs::create_dir_all(env.work.join("real")).unwrap();
    std::os::unix::fs::symlink("real", env.work.join("defs")).unwrap();
    let r = env.run("pull", &[]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert!(std::fs::read_dir(env.work.join("real")).unwrap().next().is_none(), "nothing written through the link");
}

#[test]
fn uncommitted_work_in_the_sync_root_blocks_a_pull_but_not_outside_it() {
    let env = pulled();
    env.dashboard_put("connection", "salesforce", json!({"api_version": "64.0"}));
    env.write("defs/connection/salesforce.yaml", "kind: connection\nname: salesforce\nspec: local edit\n");
    let r = env.run("pull", &[]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("uncommitted"), "{}", r.stderr);
    assert!(env.read("defs/connection/salesforce.yaml").contains("local edit"));
    env.git(&["checkout", "--", "defs"]);
    env.write("README.md", "local notes outside the sync root\n");
    env.run("pull", &[]).ok();
    assert_eq!(env.read("README.md"), "local notes outside the sync root\n");
}

#[test]
fn a_shallow_clone_works() {
    let env = pulled();
    env.dashboard_put("connection", "salesforce", json!({"api_version": "65.0"}));
    let shallow = env.dir.path().join("shallow");
    let url = format!("file://{}", env.origin.display());
    env.git_in(env.dir.path(), &["clone", "--quiet", "--depth=1", &url, shallow.to_str().unwrap()]);
    let r = env.defsync_in(&shallow, &["pull", "--json"], &[]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(r.changes(), ["git update connection/salesforce"]);
    assert_eq!(env.git_in(&shallow, &["rev-parse", "--is-shallow-repository"]).trim(), "true");
}

#[test]
fn dry_runs_and_status_change_nothing() {
    let (env, seq) = conflicted();
    env.dashboard_put("connection", "salesforce", json!({"api_version": "66.0"}));
    let head = env.origin_head();
    for args in [vec!["pull", "--dry-run"], vec!["push", "--dry-run"], vec!["status"]] {
        let r = env.defsync(&[&args[..], &["--json"]].concat());
        assert_eq!(r.code, 3, "conflicts still exit 3 in {args:?}: {r:#?}");
    }
    assert_eq!(env.origin_head(), head);
    assert_eq!(env.platform_head_seq(), seq + 1);
}

#[test]
fn first_run_links_an_existing_repository_and_project() {
    let env = Env::new();
    env.dashboard_put("workflow", "only-on-platform", json!(1));
    env.dashboard_put("workflow", "on-both", json!("platform"));
    env.write("defs/only-in-git.yaml", "kind: workflow\nname: only-in-git\nspec: 2\n");
    env.write("defs/on-both.yaml", "kind: workflow\nname: on-both\nspec: git\n");
    env.commit_and_push("existing definitions");
    // No record: the first run links with its own settings; keys on both sides that differ
    // are conflicts, and nothing is lost.
    let r = env.run("push", &[]);
    assert_eq!(r.code, 3, "{r:#?}");
    env.write("defs/on-both.yaml", "kind: workflow\nname: on-both\nspec: platform\n");
    env.commit_and_push("agree");
    assert_eq!(env.run("push", &[]).ok().changes(), ["platform add workflow/only-in-git"]);
    assert_eq!(env.run("pull", &[]).ok().changes(), ["git add workflow/only-on-platform"]);
    assert_eq!(env.run("status", &[]).ok().status(), "in_sync");
}

mod over_http {
    //! The same runs against a real `defsync serve` on 127.0.0.1, where HTTP matters.

    use serde_json::json;

    use crate::proxy::Proxy;
    use crate::server::ServerProcess;
    use crate::support::{Env, PROJECT};

    const KEY: &str = "test-key-over-http";

    fn server() -> (tempfile::TempDir, ServerProcess) {
        ServerProcess::scratch(KEY)
    }

    #[test]
    fn a_no_op_pull_or_push_takes_at_most_three_requests() {
        let (_dir, server) = server();
        let env = Env::on_server(&server.url(), KEY);
        env.dashboard_put("workflow", "a", json!({"x": 1}));
        env.run("pull", &[]).ok();
        for command in ["pull", "push", "pull"] {
            let r = env.run(command, &[]).ok();
            assert_eq!(r.status(), "in_sync");
            let requests = r.json()["stats"]["http_requests"].as_u64().unwrap();
            assert!(requests <= 3, "{command} took {requests} requests");
        }
    }

    /// Found by the randomized interleaving test (seed 1): a push fetched the tip, then a
    /// colleague deleted a definition, pushed, and their push synced it; only then did the first
    /// push read the platform. It planned its old tip against a platform that no longer had the
    /// definition, and sent it back: a deletion undone, and the same Git commit synced twice.
    #[test]
    fn a_push_never_sends_a_tip_older_than_what_the_platform_synced() {
        let (_dir, server) = server();
        let env = Env::on_server(&server.url(), KEY);
        env.dashboard_put("workflow", "a", json!({"x": 1}));
        env.dashboard_put("workflow", "w2", json!({"x": 1}));
        env.run("pull", &[]).ok();
        // The colleague deletes w2 and pushes it, all while the first push starts reading.
        let colleague = env.second_clone("colleague");
        let (origin_env, platform) = (env.dir.path().join("gitconfig"), server.url());
        let race = move || {
            let git = |args: &[&str]| {
                let out = std::process::Command::new("git")
                    .current_dir(&colleague)
                    .args(args)
                    .env("GIT_CONFIG_GLOBAL", &origin_env)
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .output()
                    .unwrap();
                assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            };
            git(&["rm", "--quiet", "defs/workflow/w2.yaml"]);
            git(&["commit", "--quiet", "-m", "delete w2"]);
            git(&["push", "--quiet", "origin", "main"]);
            let out = std::process::Command::new(crate::support::BIN)
                .current_dir(&colleague)
                .args(["push", "--json", "--platform", &platform, "--project", PROJECT, "--path", "defs"])
                .env("DEFSYNC_API_KEY", KEY)
                .env("GIT_CONFIG_GLOBAL", &origin_env)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        let proxy = Proxy::start(&server.url(), "GET", &format!("/projects/{PROJECT}"), race);
        let r = env.defsync_in(&env.work, &["push", "--json", "--platform", &proxy.url], &[]);
        assert_eq!(r.code, 0, "{r:#?}");
        assert!(proxy.fired());
        assert!(r.changes().is_empty(), "the colleague's deletion is not undone: {r:#?}");
        assert_eq!(env.run("pull", &[]).ok().changes(), Vec::<String>::new());
        env.git(&["pull", "--quiet", "--ff-only"]);
        assert!(!env.exists("defs/workflow/w2.yaml"));
        assert_eq!(env.run("status", &[]).ok().status(), "in_sync");
    }

    #[test]
    fn head_moved_on_push_replans_against_the_new_head() {
        let (_dir, server) = server();
        let env = Env::on_server(&server.url(), KEY);
        env.dashboard_put("workflow", "a", json!({"x": 1}));
        env.dashboard_put("workflow", "b", json!({"x": 1}));
        env.run("pull", &[]).ok();
        let f = "defs/workflow/a.yaml";
        env.write(f, &env.read(f).replace("x: 1", "x: 2"));
        env.commit_and_push("edit a");
        // Someone edits `b` in the dashboard just as the push sends its commit.
        let hook_env = (env.platform.clone(), env.dir.path().to_owned());
        let dashboard = move || {
            let file = hook_env.1.join("race.yaml");
            std::fs::write(&file, "kind: workflow\nname: b\nspec:\n  x: 3\n").unwrap();
            let out = std::process::Command::new(crate::support::BIN)
                .args(["dashboard", "--platform", &hook_env.0, "--project", PROJECT, "put"])
                .arg(&file)
                .env("DEFSYNC_API_KEY", KEY)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        let proxy = Proxy::start(&server.url(), "POST", "/commits", dashboard);
        let r = env.defsync_in(&env.work, &["push", "--json", "--platform", &proxy.url], &[]);
        assert_eq!(r.code, 0, "{r:#?}");
        assert!(proxy.fired());
        assert_eq!(r.changes(), ["platform update workflow/a"]);
        // Both edits are on the platform; the dashboard's is pulled next, not reverted.
        assert_eq!(env.run("pull", &[]).ok().changes(), ["git update workflow/b"]);
        assert!(env.read("defs/workflow/b.yaml").contains("x: 3"));
        assert!(env.read(f).contains("x: 2"));
        assert_eq!(env.run("status", &[]).ok().status(), "in_sync");
    }

    #[test]
    fn the_server_restarted_in_the_middle_of_a_sequence_of_runs() {
        let (dir, mut server) = server();
        let mut env = Env::on_server(&server.url(), KEY);
        env.dashboard_put("workflow", "a", json!({"x": 1}));
        env.run("pull", &[]).ok();
        server.kill();
        // While it is down, a run fails cleanly and changes nothing.
        let f = "defs/workflow/a.yaml";
        env.write(f, &env.read(f).replace("x: 1", "x: 5"));
        env.commit_and_push("edit while the platform is down");
        let down = env.run("push", &["--platform", "http://127.0.0.1:9", "--retry-for", "2"]);
        assert_eq!(down.code, 1, "{down:#?}");
        server.restart();
        env.platform = server.url();
        assert_eq!(env.run("push", &[]).ok().changes(), ["platform update workflow/a"]);
        env.dashboard_put("workflow", "c", json!({"y": true}));
        server.kill();
        server.restart();
        env.platform = server.url();
        assert_eq!(env.run("pull", &[]).ok().changes(), ["git add workflow/c"]);
        assert_eq!(env.run("status", &[]).ok().status(), "in_sync");
        drop(dir);
    }
}

/// Regression: the embedded store's batch-get was sent every digest at once, and the store
/// (rightly) refused more than 1000, so a first pull of a large project failed.
#[test]
fn a_first_pull_of_more_definitions_than_one_batch_on_the_embedded_store() {
    let env = Env::new();
    let dir = env.dir.path().join("many");
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<String> = (0..1201)
        .map(|i| {
            let p = dir.join(format!("{i}.yaml"));
            std::fs::write(&p, format!("kind: workflow\nname: flow-{i}\nspec:\n  n: {i}\n")).unwrap();
            p.to_str().unwrap().to_owned()
        })
        .collect();
    let mut args = vec!["dashboard", "put"];
    args.extend(files.iter().map(String::as_str));
    env.defsync(&args).ok();
    let r = env.run("pull", &[]).ok();
    assert_eq!(r.changes().len(), 1201);
    assert_eq!(env.files().len(), 1201);
}

#[test]
fn no_push_commits_locally_and_leaves_the_base_alone() {
    let env = pulled();
    env.dashboard_put("connection", "salesforce", json!({"api_version": "67.0"}));
    let origin = env.origin_head();
    let r = env.run("pull", &["--no-push"]).ok();
    assert_eq!(r.changes(), ["git update connection/salesforce"]);
    assert_eq!(env.origin_head(), origin, "nothing was pushed");
    assert_eq!(r.json()["git_commit"].as_str(), Some(env.head().as_str()));
    // The commit has not reached the origin, so the platform still records the old agreement:
    // once pushed by hand, a pull finds the branch and the platform agree and repairs the base.
    env.git(&["push", "--quiet", "origin", "main"]);
    assert_eq!(env.run("pull", &[]).ok().status(), "in_sync");
    assert_eq!(env.run("push", &[]).ok().status(), "in_sync");
}

/// Pins what people read in the log for a run with every kind of line.
#[test]
fn the_human_report_reads_well() {
    use defsync::report::*;
    let mut r = Report::new("pull");
    r.project = Some("acme".into());
    r.platform_commit = Some(CommitRef { id: "c_02".into(), seq: 2 });
    r.requested_commit = Some("c_01".into());
    r.git_commit = Some("0123456789abcdef0123".into());
    r.status = Status::Changed;
    r.changes.push(Change {
        side: Side::Git,
        op: Op::Add,
        kind: "workflow".into(),
        name: "Notify ::error::x\nnext".into(),
        path: Some("defs/workflow/notify-error-x-next.yaml".into()),
    });
    let d = |s: &str| Some(defsync::digest::Digest::of_canonical(s));
    r.conflicts.push(Conflict {
        kind: "connection".into(),
        name: "crm".into(),
        path: Some("defs/connection/crm.yaml".into()),
        base: d("b"),
        git: d("g"),
        platform: None,
        resolution: Resolution::Written,
        git_yaml: None,
        platform_yaml: None,
    });
    r.errors.push(FileError {
        path: "defs/bad.yaml".into(),
        line: Some(3),
        column: Some(5),
        message: "duplicate key `a`".into(),
    });
    let text = defsync::output::human(&r);
    assert!(text.lines().all(|l| !l.trim_start().starts_with("::")));
    insta::assert_snapshot!(text);
}

#[test]
fn a_missing_platform_is_a_configuration_error() {
    let env = Env::new();
    let r = env.defsync_in(&env.work, &["pull"], &[("DEFSYNC_PLATFORM", "")]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("no platform") && r.stderr.contains("DEFSYNC_PLATFORM"), "{}", r.stderr);
}

/// A run killed during `git fetch` leaves Git's lock behind; every later run failed with Git's
/// bare "File exists". The message names the lock, says why it is there and how to remove it
/// safely, and the lock stays: only the user can tell that no Git process still runs.
#[test]
fn stale_ref_lock_is_named_with_how_to_remove_it() {
    let env = pulled();
    // A colleague's push, so that the fetch must move refs/remotes/origin/main.
    let colleague = env.second_clone("colleague");
    std::fs::write(colleague.join("NOTES.md"), "notes\n").unwrap();
    env.git_in(&colleague, &["add", "NOTES.md"]);
    env.git_in(&colleague, &["commit", "--quiet", "-m", "notes"]);
    env.git_in(&colleague, &["push", "--quiet", "origin", "main"]);
    let lock = env.work.join(".git/refs/remotes/origin/main.lock");
    std::fs::write(&lock, "").unwrap();

    let r = env.run("pull", &[]);
    assert_eq!(r.code, 1, "{r:#?}");
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(said.contains(&format!("Git's lock file {} exists", lock.display())), "{said}");
    assert!(said.contains("earlier Git process in this checkout was interrupted"), "{said}");
    assert!(said.contains(&format!("rm {}", lock.display())), "{said}");
    assert!(said.contains("no git process is running"), "{said}");
    assert!(!said.contains("credentials"), "not a credentials problem: {said}");
    assert!(lock.exists(), "the lock must never be removed silently");

    std::fs::remove_file(&lock).unwrap();
    env.run("pull", &[]).ok();
}

#[test]
fn stale_shallow_lock_is_named_with_how_to_remove_it() {
    let env = seeded();
    let shallow = env.dir.path().join("shallow");
    let url = format!("file://{}", env.origin.display());
    env.git_in(env.dir.path(), &["clone", "--quiet", "--depth", "1", &url, shallow.to_str().unwrap()]);
    let lock = shallow.join(".git/shallow.lock");
    std::fs::write(&lock, "").unwrap();

    let r = env.defsync_in(&shallow, &["pull", "--json"], &[]);
    assert_eq!(r.code, 1, "{r:#?}");
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(said.contains(&format!("Git's lock file {} exists", lock.display())), "{said}");
    assert!(said.contains(&format!("rm {}", lock.display())), "{said}");
    assert!(lock.exists(), "the lock must never be removed silently");
}
