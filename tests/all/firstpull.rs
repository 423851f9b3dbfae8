//! Large pulls, which write their files into one pack through `git fast-import`: the same
//! result as the small-pull path, and the same guarantees when something goes wrong.

use std::path::Path;

use crate::support::Env;

/// More writes than the pull sends through `git fast-import` (200).
const MANY: usize = 250;

/// Puts `names` as workflows in one dashboard commit, with `version` in each spec.
fn put_workflows(env: &Env, names: impl Iterator<Item = String>, version: u32) {
    let dir = env.dir.path().join(format!("defs-{}", crate::support::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for name in names {
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!("kind: workflow\nname: {name}\nspec:\n  version: {version}\n  steps: [fetch, notify]\n"),
        )
        .unwrap();
        files.push(file.to_str().unwrap().to_owned());
    }
    let mut args = vec!["dashboard", "put"];
    args.extend(files.iter().map(String::as_str));
    env.defsync(&args).ok();
}

fn names(range: std::ops::Range<usize>) -> impl Iterator<Item = String> {
    range.map(|i| format!("flow-{i:04}"))
}

/// `git count-objects -v` as (loose objects, objects in packs).
fn object_counts(repo: &Path, env: &Env) -> (u64, u64) {
    let out = env.git_in(repo, &["count-objects", "-v"]);
    let field = |name: &str| {
        out.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().parse::<u64>().unwrap()).unwrap_or(0)
    };
    (field("count:"), field("in-pack:"))
}

/// The branch, the origin, the index and the work tree, to compare before and after a run.
fn snapshot(env: &Env) -> (String, String, String, Vec<String>) {
    let mut files: Vec<String> = walkdir::WalkDir::new(&env.work)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git")
        .filter_map(Result::ok)
        .map(|e| e.path().strip_prefix(&env.work).unwrap().display().to_string())
        .collect();
    files.sort();
    (env.head(), env.origin_head(), env.git(&["status", "--porcelain", "--untracked-files=all"]), files)
}

#[test]
fn a_large_first_pull_writes_one_pack_and_checks_every_file_out() {
    let env = Env::new();
    put_workflows(&env, names(0..MANY), 1);
    let loose_before = object_counts(&env.work, &env).0;
    let r = env.run("pull", &[]).ok();
    assert_eq!(r.status(), "changed");
    assert_eq!(r.changes().len(), MANY);
    assert_eq!(env.files().len(), MANY);
    assert_eq!(env.head(), env.origin_head());
    let text = env.read("defs/workflow/flow-0123.yaml");
    assert!(text.starts_with("kind: workflow\nname: flow-0123\nspec:\n") && text.contains("version: 1"), "{text}");
    // Every file is in the work tree and the index as committed, with nothing left over.
    assert_eq!(env.git(&["status", "--porcelain", "--untracked-files=all"]), "");
    assert_eq!(std::fs::read_dir(env.work.join("defs/workflow")).unwrap().count(), MANY);
    // The blobs went into a pack, not one loose object each.
    let (loose, packed) = object_counts(&env.work, &env);
    assert!(loose < loose_before + 10, "{loose} loose objects (from {loose_before})");
    assert!(packed >= MANY as u64, "{packed} objects in packs");
    env.git(&["fsck", "--strict", "--no-dangling"]);
    assert_eq!(env.run("status", &[]).ok().status(), "in_sync");
    assert_eq!(env.run("pull", &[]).ok().status(), "in_sync");
}

#[test]
fn a_large_pull_into_a_branch_with_definitions_updates_adds_and_deletes() {
    let env = Env::new();
    put_workflows(&env, names(0..20), 1);
    env.write("notes/keep.txt", "outside the sync root\n");
    env.commit_and_push("notes");
    env.run("pull", &[]).ok();
    // 10 updated, 240 added, 5 deleted: more than the pack threshold in one pull.
    put_workflows(&env, names(10..MANY), 2);
    for name in names(0..5) {
        env.dashboard_delete("workflow", &name);
    }
    let r = env.run("pull", &[]).ok();
    assert_eq!(r.status(), "changed");
    let changes = r.changes();
    assert_eq!(changes.iter().filter(|c| c.starts_with("git update")).count(), 10);
    assert_eq!(changes.iter().filter(|c| c.starts_with("git add")).count(), MANY - 20);
    assert_eq!(changes.iter().filter(|c| c.starts_with("git delete")).count(), 5);
    assert_eq!(env.files().len(), MANY - 5);
    assert!(!env.exists("defs/workflow/flow-0000.yaml"));
    assert!(env.read("defs/workflow/flow-0007.yaml").contains("version: 1"));
    assert!(env.read("defs/workflow/flow-0012.yaml").contains("version: 2"));
    assert_eq!(env.read("notes/keep.txt"), "outside the sync root\n");
    assert_eq!(env.head(), env.origin_head());
    assert_eq!(env.git(&["status", "--porcelain", "--untracked-files=all"]), "");
    env.git(&["fsck", "--strict", "--no-dangling"]);
    assert_eq!(env.run("status", &[]).ok().status(), "in_sync");
}

#[test]
fn a_large_pull_whose_tree_fails_verification_commits_and_checks_out_nothing() {
    // The pack is written and the tree built, then a file reads back as ignored: the run stops
    // before any commit, with the branch, the origin and the work tree as they were.
    let env = Env::new();
    env.write("defs/.defsyncignore", "workflow/flow-0200.yaml\n");
    env.commit_and_push("ignore one path");
    put_workflows(&env, names(0..MANY), 1);
    let before = snapshot(&env);
    let r = env.run("pull", &[]);
    assert_eq!(r.code, 4, "{r:#?}");
    let errors = r.json()["errors"].to_string();
    assert!(errors.contains("flow-0200") && errors.contains("nothing was committed"), "{errors}");
    assert_eq!(snapshot(&env), before);
}

#[cfg(unix)]
#[test]
fn git_failing_mid_pack_leaves_the_branch_and_the_work_tree_as_they_were() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.run("pull", &[]).ok();
    put_workflows(&env, names(0..MANY), 1);
    // A git whose fast-import dies after reading part of the stream, as a full disk would
    // make it; every other command is the real git.
    let real =
        String::from_utf8(std::process::Command::new("sh").args(["-c", "command -v git"]).output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("git");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = fast-import ]; then head -c 20000 >/dev/null; echo 'fatal: simulated failure' >&2; exit 128; fi\nexec {real} \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(&env);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let r = env.defsync_in(&env.work, &["pull", "--json"], &[("PATH", path.as_str())]);
    assert_ne!(r.code, 0, "{r:#?}");
    assert!(r.stderr.contains("fast-import") && r.stderr.contains("simulated failure"), "{}", r.stderr);
    assert_eq!(snapshot(&env), before);
    // The next run, with a working git, pulls everything.
    let r = env.run("pull", &[]).ok();
    assert_eq!(r.changes().len(), MANY);
    assert_eq!(env.git(&["status", "--porcelain", "--untracked-files=all"]), "");
}

#[cfg(unix)]
#[test]
fn a_symlink_in_the_way_of_a_large_pull_is_refused() {
    let env = Env::new();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(env.work.join("defs")).unwrap();
    std::os::unix::fs::symlink(&outside, env.work.join("defs/workflow")).unwrap();
    env.commit_and_push("a link where the workflows go");
    put_workflows(&env, names(0..MANY), 1);
    let before = snapshot(&env);
    let r = env.run("pull", &[]);
    assert_eq!(r.code, 4, "{r:#?}");
    assert!(r.json()["errors"].to_string().contains("defs/workflow"), "{r:#?}");
    assert_eq!(snapshot(&env), before);
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "nothing written through the link");
}
