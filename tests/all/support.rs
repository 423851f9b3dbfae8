//! Shared test helpers: scratch Git repositories with isolated config, and the real binary.

#![allow(dead_code)] // each test module uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_defsync");
pub const PROJECT: &str = "p1";

/// A bare origin, a clone of it with one commit on `main`, and a platform with project `p1`.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub origin: PathBuf,
    pub work: PathBuf,
    /// `--platform`: a store path, or a server URL.
    pub platform: String,
    pub key: Option<String>,
    pub path: String,
}

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The `--json` report.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("no JSON report ({e}): {self:#?}"))
    }

    pub fn status(&self) -> String {
        self.json()["status"].as_str().unwrap_or_default().to_owned()
    }

    /// Changes as `side op kind/name`, sorted.
    pub fn changes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.json()["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .map(|c| {
                format!(
                    "{} {} {}/{}",
                    c["side"].as_str().unwrap(),
                    c["op"].as_str().unwrap(),
                    c["kind"].as_str().unwrap(),
                    c["name"].as_str().unwrap()
                )
            })
            .collect();
        v.sort();
        v
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }
}

fn output(mut cmd: Command) -> Output {
    cmd.output().expect("run a command")
}

impl Env {
    /// An environment on the embedded store.
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store.db");
        let env = Env::with_platform(dir, store.to_str().unwrap().to_owned(), None);
        env.defsync(&["dashboard", "create-project", "--name", "Project one"]).ok();
        env
    }

    /// An environment on a platform given by URL (a `defsync serve` the caller started).
    pub fn on_server(url: &str, key: &str) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = Env::with_platform(dir, url.to_owned(), Some(key.to_owned()));
        env.defsync(&["dashboard", "create-project"]).ok();
        env
    }

    /// An environment on a platform that already holds project `p1` (a stand-in).
    pub fn on_server_without_project(url: &str, key: &str) -> Env {
        Env::with_platform(tempfile::tempdir().expect("tempdir"), url.to_owned(), Some(key.to_owned()))
    }

    fn with_platform(dir: tempfile::TempDir, platform: String, key: Option<String>) -> Env {
        let origin = dir.path().join("origin.git");
        let work = dir.path().join("work");
        std::fs::write(
            dir.path().join("gitconfig"),
            "[user]\n\tname = Test User\n\temail = test@example.com\n[commit]\n\tgpgsign = false\n[init]\n\tdefaultBranch = main\n",
        )
        .unwrap();
        let env = Env { dir, origin, work, platform, key, path: "defs".into() };
        env.git_in(env.dir.path(), &["init", "--quiet", "--bare", env.origin.to_str().unwrap()]);
        env.git_in(env.dir.path(), &["clone", "--quiet", env.origin.to_str().unwrap(), env.work.to_str().unwrap()]);
        std::fs::write(env.work.join("README.md"), "# test\n").unwrap();
        env.git(&["add", "README.md"]);
        env.git(&["commit", "--quiet", "-m", "initial"]);
        env.git(&["push", "--quiet", "origin", "main"]);
        env
    }

    /// Isolates a command from the user's Git config and from any CI or defsync environment.
    pub fn isolate(&self, cmd: &mut Command) {
        cmd.env("GIT_CONFIG_GLOBAL", self.dir.path().join("gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE");
        for (k, _) in std::env::vars() {
            // GitLab's too: a test run inside a GitLab job must not find itself in one.
            if k.starts_with("GITHUB_")
                || k.starts_with("DEFSYNC_")
                || k == "RUNNER_TEMP"
                || k.starts_with("GITLAB_")
                || k.starts_with("CI_")
            {
                cmd.env_remove(k);
            }
        }
    }

    pub fn git_in(&self, dir: &Path, args: &[&str]) -> String {
        let mut cmd = Command::new("git");
        cmd.current_dir(dir).args(args);
        self.isolate(&mut cmd);
        let out = output(cmd);
        assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs git in the checkout.
    pub fn git(&self, args: &[&str]) -> String {
        self.git_in(&self.work, args)
    }

    /// Runs git in `dir` and returns what it did, whether or not it succeeded.
    pub fn git_try(&self, dir: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new("git");
        cmd.current_dir(dir).args(args);
        self.isolate(&mut cmd);
        output(cmd)
    }

    /// The command [`Env::defsync_in`] runs, for a caller that spawns (and perhaps kills) it.
    pub fn defsync_command(&self, dir: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir).args(args);
        self.isolate(&mut cmd);
        cmd.env("DEFSYNC_PLATFORM", &self.platform).env("DEFSYNC_PROJECT", PROJECT).env("DEFSYNC_PATH", &self.path);
        if let Some(k) = &self.key {
            cmd.env("DEFSYNC_API_KEY", k);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs defsync in `dir` with this environment's platform, project and path.
    pub fn defsync_in(&self, dir: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Run {
        let out = output(self.defsync_command(dir, args, extra_env));
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn defsync(&self, args: &[&str]) -> Run {
        self.defsync_in(&self.work, args, &[])
    }

    /// `defsync <command> --json` in the checkout.
    pub fn run(&self, command: &str, extra: &[&str]) -> Run {
        let mut args = vec![command, "--json"];
        args.extend_from_slice(extra);
        self.defsync(&args)
    }

    /// Puts a definition as the dashboard would.
    pub fn dashboard_put(&self, kind: &str, name: &str, spec: Value) {
        let file = self.dir.path().join(format!("put-{}.yaml", rand_suffix()));
        let yaml = format!(
            "kind: {kind}\nname: {}\nspec: {}\n",
            serde_json::to_string(name).unwrap(),
            serde_json::to_string(&spec).unwrap()
        );
        std::fs::write(&file, yaml).unwrap();
        self.defsync(&["dashboard", "put", file.to_str().unwrap()]).ok();
    }

    pub fn dashboard_delete(&self, kind: &str, name: &str) {
        self.defsync(&["dashboard", "delete", kind, name]).ok();
    }

    /// Writes a file in the checkout (relative to the repository root).
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.work.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.work.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.work.join(rel).exists()
    }

    /// Commits everything and pushes it to the origin.
    pub fn commit_and_push(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "-m", message]);
        self.git(&["push", "--quiet", "origin", "main"]);
    }

    /// The files below the sync root, relative to the repository root, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut out: Vec<String> =
            self.git(&["ls-tree", "-r", "--name-only", "HEAD", "--", &self.path]).lines().map(str::to_owned).collect();
        out.sort();
        out
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    pub fn origin_head(&self) -> String {
        self.git_in(&self.origin, &["rev-parse", "refs/heads/main"]).trim().to_owned()
    }

    /// Another clone of the origin, e.g. a colleague pushing while a run works.
    pub fn second_clone(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        self.git_in(self.dir.path(), &["clone", "--quiet", self.origin.to_str().unwrap(), p.to_str().unwrap()]);
        p
    }

    /// The platform's state through the binary's view: `status --json`.
    pub fn platform_head_seq(&self) -> u64 {
        let r = self.run("status", &[]);
        r.json()["platform_commit"]["seq"].as_u64().unwrap_or(0)
    }
}

pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}
