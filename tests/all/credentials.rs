//! Tests: what git sees. defsync's own fetch and push get the GitHub token through `GIT_CONFIG_*`
//! (never a command line, never `.git/config`), only for https remotes on the GitHub server, and
//! no git subprocess inherits the platform key or a token.

use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use serde_json::json;

use crate::server::ServerProcess;
use crate::support::Env;

const KEY: &str = "platform-key-git-must-not-see";
const TOKEN: &str = "ghs_tokenThatNeverReachesArgv";

/// One git call: its arguments and its environment.
pub(crate) struct Call {
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
}

impl Call {
    pub(crate) fn config(&self) -> Vec<(String, String)> {
        let get = |k: &str| self.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let count: usize = get("GIT_CONFIG_COUNT").map_or(0, |n| n.parse().unwrap());
        (0..count)
            .map(|i| (get(&format!("GIT_CONFIG_KEY_{i}")).unwrap(), get(&format!("GIT_CONFIG_VALUE_{i}")).unwrap()))
            .collect()
    }
}

/// A `git` first on PATH that records every call, then runs the real git.
pub(crate) struct GitSpy {
    dir: tempfile::TempDir,
}

impl GitSpy {
    pub(crate) fn new() -> GitSpy {
        let out = Command::new("sh").args(["-c", "command -v git"]).output().unwrap();
        let real = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        assert!(!real.is_empty(), "git is not installed");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls.log");
        let script = format!(
            "#!/bin/sh\n{{ echo '=== call'; printf '%s\\n' \"$@\"; echo '--- env'; env; }} >>'{}'\nexec '{real}' \"$@\"\n",
            log.display()
        );
        let git = dir.path().join("git");
        std::fs::write(&git, script).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&git, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        GitSpy { dir }
    }

    pub(crate) fn path(&self) -> String {
        format!("{}:{}", self.dir.path().display(), std::env::var("PATH").unwrap_or_default())
    }

    pub(crate) fn log(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        text.split("=== call\n")
            .filter(|c| !c.is_empty())
            .map(|c| {
                let (args, env) = c.split_once("--- env\n").unwrap();
                Call {
                    args: args.lines().map(str::to_owned).collect(),
                    env: env
                        .lines()
                        .filter_map(|l| l.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                }
            })
            .collect()
    }
}

fn basic(token: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
}

#[test]
fn git_subprocesses_inherit_no_key_and_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("store.db"), KEY);
    let env = Env::on_server(&server.url(), KEY);
    env.dashboard_put("workflow", "a", json!({"x": 1}));
    let spy = GitSpy::new();
    let path = spy.path();
    let secrets = [
        ("PATH", path.as_str()),
        ("DEFSYNC_GITHUB_TOKEN", TOKEN),
        ("GITHUB_TOKEN", TOKEN),
        ("GH_TOKEN", TOKEN),
        ("ACTIONS_RUNTIME_TOKEN", TOKEN),
        // The GitHub server is github.com; this origin is a local path, so it gets no header.
        ("GITHUB_SERVER_URL", "https://github.com"),
    ];
    let pull = env.defsync_in(&env.work, &["pull", "--json"], &secrets).ok();
    assert_eq!(pull.status(), "changed");
    env.write("defs/workflow/b.yaml", "kind: workflow\nname: b\nspec:\n  x: 2\n");
    env.commit_and_push("b");
    let push = env.defsync_in(&env.work, &["push", "--json"], &secrets).ok();
    assert_eq!(push.status(), "changed");

    let calls = spy.calls();
    let ran = |sub: &str| calls.iter().any(|c| c.args.first().is_some_and(|a| a == sub));
    assert!(ran("fetch") && ran("push"), "the spy saw no fetch or push: {:?}", calls.len());
    for call in &calls {
        for (name, value) in &call.env {
            for banned in
                ["DEFSYNC_API_KEY", "DEFSYNC_GITHUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN", "ACTIONS_RUNTIME_TOKEN"]
            {
                assert_ne!(name, banned, "git {:?} inherited {banned}", call.args);
            }
            assert!(
                !value.contains(KEY) && !value.contains(TOKEN) && !value.contains(&basic(TOKEN)),
                "git {:?} sees a secret in {name}",
                call.args
            );
        }
        assert!(!call.config().iter().any(|(k, _)| k.contains("extraheader")), "a local origin got a header");
        assert!(!call.args.iter().any(|a| a.contains(TOKEN) || a.contains(KEY)), "{:?}", call.args);
    }
    for run in [&pull, &push] {
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(!all.contains(TOKEN) && !all.contains(KEY), "{all}");
    }
    let config = std::fs::read_to_string(env.work.join(".git/config")).unwrap();
    assert!(!config.contains(TOKEN) && !config.contains(&basic(TOKEN)), "{config}");
}

#[test]
fn the_token_reaches_git_only_for_https_remotes_on_the_github_server() {
    let env = Env::new();
    // Port 9 on loopback refuses the connection: the fetch fails quickly, after git has read
    // its configuration, which is all this test needs to see.
    let server = "https://127.0.0.1:9";
    env.git(&["remote", "add", "github", &format!("{server}/acme/defs.git")]);
    env.git(&["remote", "add", "elsewhere", "https://127.0.0.2:9/acme/defs.git"]);
    env.git(&["remote", "add", "plain", "http://127.0.0.1:9/acme/defs.git"]);
    let spy = GitSpy::new();
    let path = spy.path();
    let header_for = |remote: &str| {
        let _ = std::fs::remove_file(spy.log());
        let run = env.defsync_in(
            &env.work,
            &["push", "--json", "--remote", remote],
            &[("PATH", path.as_str()), ("DEFSYNC_GITHUB_TOKEN", TOKEN), ("GITHUB_SERVER_URL", server)],
        );
        assert_ne!(run.code, 0, "{remote}: nothing listens there: {run:?}");
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(all.contains("cannot fetch"), "{remote}: {all}");
        assert!(!all.contains(TOKEN) && !all.contains(&basic(TOKEN)), "{remote}: {all}");
        let calls = spy.calls();
        let fetch = calls.iter().find(|c| c.args.first().is_some_and(|a| a == "fetch")).expect("a fetch");
        assert!(!fetch.args.iter().any(|a| a.contains(TOKEN) || a.contains(&basic(TOKEN))), "{:?}", fetch.args);
        fetch.config().into_iter().filter(|(k, _)| k.contains("extraheader")).collect::<Vec<_>>()
    };

    let key = format!("http.{server}/.extraheader");
    assert_eq!(
        header_for("github"),
        [(key.clone(), String::new()), (key, format!("AUTHORIZATION: basic {}", basic(TOKEN)))],
        "an empty value first clears a header a checkout may have persisted"
    );
    assert!(header_for("elsewhere").is_empty(), "another host got the token");
    assert!(header_for("plain").is_empty(), "plain http got the token");
}
