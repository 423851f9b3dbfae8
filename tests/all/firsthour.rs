//! The first hour by hand (issue 7, parts 3 and 4): each trap a new user or a real runner met,
//! replayed through the real binary, real `git` and a real `defsync serve` on 127.0.0.1.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::server::ServerProcess;
use crate::support::{BIN, Env, Run};

const KEY: &str = "test-key-first-hour";

fn server() -> (tempfile::TempDir, ServerProcess) {
    ServerProcess::scratch(KEY)
}

/// A project on a real server with two definitions, pulled into the checkout.
fn pulled(server: &ServerProcess) -> Env {
    let env = seeded(server);
    env.run("pull", &[]).ok();
    env
}

fn seeded(server: &ServerProcess) -> Env {
    let env = Env::on_server(&server.url(), KEY);
    env.dashboard_put("workflow", "notify-on-deal", json!({"channel": "#sales", "retries": 3}));
    env.dashboard_put("connection", "salesforce", json!({"api_version": "61.0"}));
    env
}

/// Runs `program` in `dir`, isolated like every test command, with only `vars` of defsync's.
fn bare(env: &Env, dir: &Path, program: &str, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir).args(args);
    env.isolate(&mut cmd);
    cmd.envs(vars.iter().copied());
    let out = cmd.output().expect("run a command");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a command line as a user would paste it into a shell, with `defsync` on the `PATH`.
fn shell(env: &Env, dir: &Path, line: &str, vars: &[(&str, &str)]) -> Run {
    let bin_dir = Path::new(BIN).parent().unwrap().display().to_string();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    let mut vars = vars.to_vec();
    vars.push(("PATH", &path));
    bare(env, dir, "sh", &["-c", line], &vars)
}

fn read_file(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// §3: push left `git_commit` empty, so the `git-commit` output and the summary said "(none)".
#[test]
fn push_reports_the_git_commit_it_synced_even_when_in_sync() {
    let (_dir, server) = server();
    let env = pulled(&server);
    let f = "defs/workflow/notify-on-deal.yaml";
    env.write(f, &env.read(f).replace("retries: 3", "retries: 4"));
    env.commit_and_push("more retries");
    let head = env.head();
    let changed = env.run("push", &[]).ok();
    assert_eq!(changed.status(), "changed");
    assert_eq!(changed.json()["git_commit"].as_str(), Some(head.as_str()));

    // The same through the Actions runtime: the step output and the summary name it too.
    let output = env.dir.path().join("output.txt");
    let summary = env.dir.path().join("summary.md");
    let vars = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_OUTPUT", output.to_str().unwrap()),
        ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
        ("GITHUB_EVENT_NAME", "push"),
    ];
    let in_sync = env.defsync_in(&env.work, &["push", "--json"], &vars).ok();
    assert_eq!(in_sync.status(), "in_sync");
    assert_eq!(in_sync.json()["git_commit"].as_str(), Some(head.as_str()));
    assert!(read_file(&output).contains(&head), "{}", read_file(&output));
    assert!(read_file(&summary).contains(&format!("**Git commit:** `{head}`")), "{}", read_file(&summary));
}

/// §3: a pull-request check's checkout is detached, and its summary said `refs/heads/HEAD`.
#[test]
fn a_pull_request_check_names_the_pull_requests_branch() {
    let (_dir, server) = server();
    let env = pulled(&server);
    env.git(&["checkout", "--quiet", "--detach"]);
    let summary = env.dir.path().join("summary.md");
    let vars = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
        ("GITHUB_EVENT_NAME", "pull_request"),
        ("GITHUB_HEAD_REF", "feature/faster-sync"),
        ("GITHUB_REF", "refs/pull/7/merge"),
    ];
    let r = env.defsync_in(&env.work, &["status", "--json"], &vars).ok();
    assert_eq!(r.json()["ref"].as_str(), Some("refs/heads/feature/faster-sync"));
    let md = read_file(&summary);
    assert!(md.contains("at `refs/heads/feature/faster-sync`"), "{md}");
    assert!(!md.contains("refs/heads/HEAD"), "{md}");
    // Outside a workflow, a detached checkout is named as such.
    assert_eq!(env.run("status", &[]).ok().json()["ref"].as_str(), Some("HEAD"));
}

/// §4.1: the demo's last line suggested a `defsync status` that exited 2, because the demo had
/// linked the project to a made-up repository.
#[test]
fn the_demos_suggested_command_works() {
    let env = Env::new();
    let demo_dir = env.dir.path().join("demo");
    let demo = bare(&env, env.dir.path(), BIN, &["demo", "--dir", demo_dir.to_str().unwrap()], &[]);
    assert_eq!(demo.code, 0, "{demo:#?}");
    let lines: Vec<&str> = demo.stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    let (cd, command) = (lines[lines.len() - 2].trim(), lines[lines.len() - 1].trim());
    let work = cd.strip_prefix("cd ").unwrap_or_else(|| panic!("no cd line: {cd}"));
    assert!(command.contains(" status "), "{command}");
    let r = shell(&env, Path::new(work), command, &[]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(r.stderr.contains("result: in_sync"), "{r:#?}");
}

/// §4.2: a commit that was committed but not `git push`ed was silently left out (in_sync).
#[test]
fn push_refuses_commits_that_are_not_on_the_origin() {
    let (_dir, server) = server();
    let env = pulled(&server);
    let seq = env.platform_head_seq();
    let f = "defs/workflow/notify-on-deal.yaml";
    env.write(f, &env.read(f).replace("retries: 3", "retries: 8"));
    env.git(&["commit", "--quiet", "-am", "not pushed yet"]);
    env.write("defs/connection/salesforce.yaml", &env.read("defs/connection/salesforce.yaml").replace("61", "62"));
    env.git(&["commit", "--quiet", "-am", "not pushed either"]);
    let r = env.run("push", &[]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(
        r.stderr.contains(
            "2 commits on main are not on origin/main; defsync push sends what the origin has: git push first"
        ),
        "{r:#?}"
    );
    assert_eq!(env.platform_head_seq(), seq);
    // A local commit outside the sync root is no reason to refuse.
    env.git(&["push", "--quiet", "origin", "main"]);
    env.write("NOTES.md", "not synced\n");
    env.git(&["add", "NOTES.md"]);
    env.git(&["commit", "--quiet", "-m", "notes"]);
    let r = env.run("push", &[]).ok();
    assert_eq!(r.changes(), ["platform update connection/salesforce", "platform update workflow/notify-on-deal"]);
}

/// §4.3: the link stored the remote as written, so a second clone of the same origin (written
/// `../origin.git`, or as a `file://` URL) was "another repository", exit 2.
#[test]
fn every_clone_of_one_origin_is_the_same_repository() {
    let (_dir, server) = server();
    let env = pulled(&server);
    let linked = env.run("status", &[]).ok().json()["repository"].as_str().unwrap().to_owned();
    let origin = env.origin.canonicalize().unwrap();
    assert_eq!(linked, origin.to_str().unwrap().strip_suffix(".git").unwrap());
    let remotes =
        ["../origin.git".to_owned(), format!("file://{}/", origin.display()), format!("{}/", origin.display())];
    for (i, url) in remotes.iter().enumerate() {
        let clone = env.second_clone(&format!("clone{i}"));
        env.git_in(&clone, &["remote", "set-url", "origin", url]);
        let r = env.defsync_in(&clone, &["push", "--json"], &[]);
        assert_eq!(r.code, 0, "{url}: {r:#?}");
        assert_eq!(r.status(), "in_sync", "{url}");
        assert_eq!(r.json()["repository"].as_str(), Some(linked.as_str()), "{url}");
    }
}

/// §4.3: the `defsync link` command that a link mismatch suggests lacked `--platform`, so it
/// could not run as printed.
#[test]
fn the_suggested_link_command_runs_as_printed() {
    let (_dir, server) = server();
    let env = pulled(&server);
    env.write("platform/workflow/x.yaml", "kind: workflow\nname: x\nspec: {}\n");
    env.commit_and_push("a second sync root");
    let r = env.run("push", &["--path", "platform"]);
    assert_eq!(r.code, 2, "{r:#?}");
    let (_, after) = r.stderr.split_once("move the link with `").unwrap_or_else(|| panic!("{r:#?}"));
    let command = after.split('`').next().unwrap();
    assert!(command.contains(&format!("--platform {}", server.url())), "{command}");
    // Only the API key comes from the environment, as the help recommends.
    let linked = shell(&env, &env.work, command, &[("DEFSYNC_API_KEY", KEY)]);
    assert_eq!(linked.code, 0, "{command}: {linked:#?}");
    let r = env.run("push", &["--path", "platform"]).ok();
    assert_eq!(r.changes(), ["platform add workflow/x"]);
}

/// §4.4: any `--platform` that was not `http(s)://` was a store path: `HTTPS://x` made a file
/// `./HTTPS:/x` and exited 0.
#[test]
fn platform_urls_need_an_http_scheme_and_stores_must_exist() {
    let (_dir, server) = server();
    let env = seeded(&server);
    let upper = server.url().replacen("http://", "HTTP://", 1);
    let r = env.run("status", &["--platform", &upper]).ok();
    assert_eq!(r.status(), "dry_run", "{r:#?}");
    for bad in ["ftp://example.com/x", "htps://example.com"] {
        let r = env.defsync(&["dashboard", "--platform", bad, "create-project"]);
        assert_eq!(r.code, 2, "{r:#?}");
        assert!(r.stderr.contains("give an http:// or https:// URL"), "{r:#?}");
    }
    let r = env.defsync(&["dashboard", "--platform", "HTTPS://127.0.0.1:9", "--retry-for", "0", "create-project"]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(!env.work.join("HTTPS:").exists());
    // A store is created only by create-project, which says so; nothing else makes one.
    let store = env.dir.path().join("new-store.db");
    let r = env.run("status", &["--platform", store.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("create one with `defsync dashboard create-project`"), "{r:#?}");
    assert!(!store.exists());
    let r = env.defsync(&["dashboard", "--platform", store.to_str().unwrap(), "create-project"]).ok();
    assert!(r.stderr.contains(&format!("created the store {}", store.display())), "{r:#?}");
    let r = env.defsync(&["dashboard", "--platform", store.to_str().unwrap(), "create-project"]).ok();
    assert!(!r.stderr.contains("created the store"), "{r:#?}");
}

/// §4.5: a first run that failed (a mistyped `--path`) still linked the project to it.
#[test]
fn a_failed_first_run_does_not_link_the_project() {
    let (_dir, server) = server();
    let env = seeded(&server);
    let r = env.run("push", &["--path", "defz"]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("the sync root defz does not exist"), "{r:#?}");
    // A conflicting first run fails too: the same key differs on both sides, with no base.
    env.write("defs/connection/salesforce.yaml", "kind: connection\nname: salesforce\nspec:\n  api_version: '1'\n");
    env.commit_and_push("a different salesforce");
    assert_eq!(env.run("push", &["--path", "defs"]).code, 3);
    env.git(&["rm", "--quiet", "-r", "defs"]);
    env.git(&["commit", "--quiet", "-m", "start over"]);
    env.git(&["push", "--quiet", "origin", "main"]);
    // The right run links it now, instead of being refused for the mistyped link.
    let r = env.run("pull", &[]).ok();
    assert_eq!(r.changes(), ["git add connection/salesforce", "git add workflow/notify-on-deal"]);
    assert_eq!(env.run("status", &[]).ok().json()["path"].as_str(), Some("defs"));
}

/// §4.6: conflicts in the human report showed only 12-character digests.
#[test]
fn conflicts_by_hand_show_both_versions_as_a_diff() {
    let (_dir, server) = server();
    let env = pulled(&server);
    env.dashboard_put("workflow", "notify-on-deal", json!({"channel": "#sales", "retries": 9}));
    let f = "defs/workflow/notify-on-deal.yaml";
    env.write(f, &env.read(f).replace("retries: 3", "retries: 7"));
    env.commit_and_push("git edit");
    for command in ["push", "pull", "status"] {
        let r = env.defsync(&[command]);
        assert_eq!(r.code, 3, "{r:#?}");
        let diff = ["    --- git", "    +++ platform", "    -  retries: 7", "    +  retries: 9"];
        for line in diff {
            assert!(r.stderr.lines().any(|l| l == line), "{command}: no {line:?} in\n{}", r.stderr);
        }
    }
}

/// §4.7: `--help` hid `--api-key` and `--github-token`, and every sync command listed the
/// options of `pull`.
#[test]
fn each_command_shows_its_own_options_and_how_to_authenticate() {
    let env = Env::new();
    let help = |command: &str| {
        let r = bare(&env, env.dir.path(), BIN, &[command, "--help"], &[("DEFSYNC_API_KEY", "sekrit-key")]);
        assert_eq!(r.code, 0, "{r:#?}");
        assert!(!r.stdout.contains("sekrit-key"), "{command} --help shows the key: {}", r.stdout);
        assert!(r.stdout.contains("--api-key") && r.stdout.contains("DEFSYNC_API_KEY"), "{}", r.stdout);
        r.stdout
    };
    let pull = help("pull");
    for option in ["--github-token", "DEFSYNC_GITHUB_TOKEN", "--no-push", "--delivery", "--commit ", "--dry-run"] {
        assert!(pull.contains(option), "pull --help lacks {option}");
    }
    let only_pull = ["--no-push", "--delivery", "--commit-via", "--pr-branch", "--author", "--commit "];
    for (command, also_absent) in [("push", &[][..]), ("status", &["--dry-run"][..]), ("link", &["--on-conflict"][..])]
    {
        let text = help(command);
        // Every sync command fetches, and a private origin needs the token for that.
        assert!(text.contains("--github-token"), "{command} --help lacks --github-token");
        for option in only_pull.iter().chain(also_absent) {
            assert!(!text.contains(option), "{command} --help lists {option}:\n{text}");
        }
    }
}

/// §4.8: `status` printed `result: dry_run` and no more when there were changes.
#[test]
fn status_says_what_would_change_on_each_side() {
    let (_dir, server) = server();
    let env = pulled(&server);
    env.dashboard_put("connection", "salesforce", json!({"api_version": "62.0"}));
    env.dashboard_put("connection", "hubspot", json!({"portal": 1}));
    let f = "defs/workflow/notify-on-deal.yaml";
    env.write(f, &env.read(f).replace("retries: 3", "retries: 4"));
    env.commit_and_push("git edit");
    let r = env.defsync(&["status"]).ok();
    assert!(r.stderr.contains("`defsync pull` would add 1 file, update 1 file in the branch"), "{}", r.stderr);
    assert!(r.stderr.contains("`defsync push` would update 1 definition on the platform"), "{}", r.stderr);
}

/// §4.10: `doctor` said "GitHub API ok" for an API it could not reach, and "push credentials
/// FAIL" for a local origin.
#[test]
fn doctor_never_says_ok_for_a_check_it_could_not_run() {
    let (_dir, server) = server();
    let env = pulled(&server);
    let vars = [("GITHUB_API_URL", "http://127.0.0.1:9"), ("DEFSYNC_GITHUB_TOKEN", "ghp_0123456789abcdef")];
    let r = env.defsync_in(&env.work, &["doctor", "--json", "--repository", "acme/integrations"], &vars);
    let checks: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:#?}"));
    let outcome = |name: &str| {
        let c = checks.as_array().unwrap().iter().find(|c| c["check"] == name);
        c.unwrap_or_else(|| panic!("no {name} check: {checks:#}"))["outcome"].as_str().unwrap().to_owned()
    };
    assert_eq!(outcome("GitHub API"), "fail", "{checks:#}");
    assert_eq!(outcome("repository and permissions"), "skipped", "{checks:#}");
    assert_eq!(outcome("push credentials"), "skipped", "{checks:#}");
    assert_eq!(outcome("project access"), "ok", "{checks:#}");
    assert_eq!(r.code, 1, "{r:#?}");
}

/// §4.11: `dashboard put` with two files defining one key exited 1 without naming the files.
#[test]
fn dashboard_put_names_both_files_of_one_key() {
    let (_dir, server) = server();
    let env = seeded(&server);
    let seq = env.platform_head_seq();
    let (a, b) = (env.dir.path().join("a.yaml"), env.dir.path().join("b.yaml"));
    std::fs::write(&a, "kind: workflow\nname: w\nspec: {x: 1}\n").unwrap();
    std::fs::write(&b, "kind: workflow\nname: w\nspec: {x: 2}\n").unwrap();
    let r = env.defsync(&["dashboard", "put", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(r.code, 4, "{r:#?}");
    assert!(r.stderr.contains(&format!("defined in both {} and {}", a.display(), b.display())), "{r:#?}");
    assert_eq!(env.platform_head_seq(), seq);
}

/// §4.12: `git init` with no commit yet failed with "`git rev-parse … HEAD^{commit}` failed:
/// (no message)".
#[test]
fn a_repository_with_no_commit_yet_says_so() {
    let (_dir, server) = server();
    let env = seeded(&server);
    let fresh = env.dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    env.git_in(&fresh, &["init", "--quiet"]);
    for command in ["status", "push", "pull"] {
        let r = env.defsync_in(&fresh, &[command], &[]);
        assert_eq!(r.code, 2, "{command}: {r:#?}");
        assert!(r.stderr.contains("branch \"main\" has no commit yet: make a first commit"), "{command}: {r:#?}");
        assert!(!r.stderr.contains("(no message)"), "{r:#?}");
    }
}
