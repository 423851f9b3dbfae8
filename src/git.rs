//! Git, through the `git` command line.
//!
//! Commits are built with plumbing on a temporary index (`read-tree`, `update-index`,
//! `write-tree`, `commit-tree`), so a tree can be verified before any commit exists and the
//! user's own index is never touched. Refs move only by fast-forward: `git push` without force,
//! and `merge --ff-only` for the checkout.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// A 40- or 64-hex-digit object name.
pub type Oid = String;

/// An object name held as its 20 (SHA-1) or 32 (SHA-256) bytes: no allocation, and less than
/// half the memory of its hex digits in a `String`. A run at 100,000 files holds one per file
/// and one per base entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    len: u8,
    bytes: [u8; 32],
}

impl ObjectId {
    /// Reads 40 or 64 lowercase hex digits; anything else is no object name.
    pub fn from_hex(hex: &str) -> Option<ObjectId> {
        let digits = hex.as_bytes();
        if !(digits.len() == 40 || digits.len() == 64) {
            return None;
        }
        let nibble = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        let mut bytes = [0u8; 32];
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            bytes[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Some(ObjectId { len: (digits.len() / 2) as u8, bytes })
    }

    /// The hex digits, as Git writes them.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.bytes[..usize::from(self.len)])
    }
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

/// An entry of `git ls-tree -r`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// The mode as Git writes it, in octal: `0o100644`, `0o120000`.
    pub mode: u32,
    pub oid: Oid,
    /// Relative to the repository root.
    pub path: String,
}

impl TreeEntry {
    pub fn is_symlink(&self) -> bool {
        self.mode == 0o120000
    }
    pub fn is_file(&self) -> bool {
        self.mode == 0o100644 || self.mode == 0o100755
    }
}

/// A change to a tree: a blob written at a path, or a path removed.
#[derive(Debug, Clone)]
pub enum TreeEdit {
    Write { path: String, content: Vec<u8> },
    Remove { path: String },
}

/// Changes to a tree whose contents are already in the object store, so a large change never
/// holds every file in memory at once.
#[derive(Debug, Clone, Default)]
pub struct Staged {
    /// Paths (relative to the repository root) and the blobs to put there.
    pub writes: Vec<(String, Oid)>,
    pub removes: Vec<String>,
}

impl Staged {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.removes.is_empty()
    }
}

/// The identity of an author or committer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

impl Identity {
    /// Parses `Name <email>`.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let (name, rest) = s
            .split_once('<')
            .ok_or_else(|| Error::Config(format!("identity {s:?} is not of the form \"Name <email>\"")))?;
        let email = rest
            .strip_suffix('>')
            .ok_or_else(|| Error::Config(format!("identity {s:?} is not of the form \"Name <email>\"")))?;
        Ok(Identity { name: name.trim().to_owned(), email: email.trim().to_owned() })
    }

    /// The identity GitHub shows for commits made by workflows.
    pub fn github_actions_bot() -> Self {
        Identity {
            name: "github-actions[bot]".into(),
            email: "41898282+github-actions[bot]@users.noreply.github.com".into(),
        }
    }
}

/// Why a push did not land.
#[derive(Debug)]
pub enum PushOutcome {
    Pushed,
    /// The remote branch moved: fetch, re-plan and try again.
    Rejected(String),
}

/// A Git work tree.
#[derive(Debug, Clone)]
pub struct Repo {
    root: PathBuf,
    /// `safe.directory` to pass to every command, for container actions whose workspace belongs
    /// to another user. Given through the environment, so no config file is ever changed.
    safe_directory: Option<String>,
    /// How `fetch` and `push` authenticate to the forge's server, when a token was given.
    auth: Option<GitHubAuth>,
    /// `git push -o` options for pushes onto the synced branch (GitLab's `ci.skip`).
    push_options: Vec<String>,
}

/// defsync's own credentials for `git fetch` and `git push` on the GitHub server: the token it
/// already holds, as the `Authorization` header actions/checkout would have stored. It reaches
/// git as `http.<server>/.extraheader` in `GIT_CONFIG_*` variables, so it is never on a command
/// line (which `ps` shows) nor in `.git/config` (which later workflow steps can read).
#[derive(Clone)]
pub struct GitHubAuth {
    /// `https://github.com`, or a GitHub Enterprise Server's URL; no trailing slash.
    server: String,
    header: String,
}

impl std::fmt::Debug for GitHubAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubAuth").field("server", &self.server).field("header", &"***").finish()
    }
}

impl GitHubAuth {
    /// `None` unless the server is an `https://` URL and the token is not empty: a token must
    /// never travel in clear text.
    pub fn new(token: &str, server_url: &str) -> Option<Self> {
        Self::basic("x-access-token", token, server_url)
    }

    /// A GitLab token for an https origin on `server_url` (`CI_SERVER_URL`, or the instance's
    /// root). GitLab takes any user name with a project, group or personal access token and
    /// documents `oauth2`; a CI/CD job token must come with the user `gitlab-ci-token`.
    pub fn gitlab(token: &str, job_token: bool, server_url: &str) -> Option<Self> {
        Self::basic(if job_token { "gitlab-ci-token" } else { "oauth2" }, token, server_url)
    }

    fn basic(user: &str, token: &str, server_url: &str) -> Option<Self> {
        use base64::Engine as _;
        let server = server_url.trim().trim_end_matches('/');
        let rest = server.strip_prefix("https://").filter(|r| !r.is_empty() && !r.contains('@'))?;
        if token.is_empty() || token.chars().any(|c| c.is_control() || c.is_whitespace()) || rest.contains(' ') {
            return None;
        }
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
        Some(GitHubAuth { server: server.to_owned(), header: format!("AUTHORIZATION: basic {basic}") })
    }

    /// From the token defsync was given (`--github-token` or `DEFSYNC_GITHUB_TOKEN`, else the
    /// runner's `GITHUB_TOKEN`) and the runner's `GITHUB_SERVER_URL` (default github.com).
    pub fn from_env(token: Option<&str>) -> Option<Self> {
        let given = |v: Option<String>| v.filter(|t| !t.is_empty());
        let token = given(token.map(str::to_owned)).or_else(|| given(std::env::var("GITHUB_TOKEN").ok()))?;
        let server = given(std::env::var("GITHUB_SERVER_URL").ok()).unwrap_or_else(|| "https://github.com".into());
        Self::new(&token, &server)
    }

    /// Whether `url` is an https remote on this server. A remote that carries its own
    /// credentials (`https://user:token@host/...`) keeps them and gets no header.
    pub fn applies_to(&self, url: &str) -> bool {
        let url = url.trim();
        url.len() > self.server.len()
            && url.is_char_boundary(self.server.len())
            && url[..self.server.len()].eq_ignore_ascii_case(&self.server)
            && url[self.server.len()..].starts_with('/')
    }

    /// The config entries for a command that talks to this server. The empty value first
    /// clears any header for the server that a checkout with `persist-credentials: true` left in
    /// `.git/config`: two `Authorization` headers make GitHub answer 400.
    fn config(&self) -> [(String, String); 2] {
        let key = format!("http.{}/.extraheader", self.server);
        [(key.clone(), String::new()), (key, self.header.clone())]
    }
}

/// Environment variables a git subprocess never needs, and must not see: every `DEFSYNC_*`
/// (the platform key among them) and any token or secret of the runner. Git's own `GIT_*`
/// variables stay.
fn scrubbed(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    if name.starts_with("GIT_") {
        return false;
    }
    const TOKENS: &[&str] = &[
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "GH_ENTERPRISE_TOKEN",
        "GITHUB_ENTERPRISE_TOKEN",
        "ACTIONS_RUNTIME_TOKEN",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        "ACTIONS_ID_TOKEN_REQUEST_URL",
    ];
    name.starts_with("DEFSYNC_")
        || TOKENS.contains(&name.as_str())
        || ["_TOKEN", "_API_KEY", "_SECRET", "_PASSWORD"].iter().any(|s| name.ends_with(s))
}

impl Repo {
    /// The repository that contains `dir`.
    pub fn discover(dir: &Path) -> Result<Self> {
        let safe_directory = std::env::var("GITHUB_WORKSPACE")
            .ok()
            .filter(|_| std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true"))
            .filter(|w| !w.is_empty());
        let probe = Repo { root: dir.to_path_buf(), safe_directory, auth: None, push_options: Vec::new() };
        let top = probe.run(["rev-parse", "--show-toplevel"]).map_err(|e| {
            Error::Config(format!(
                "{} is not inside a Git work tree ({e}); run defsync from a clone of the repository",
                dir.display()
            ))
        })?;
        Ok(Repo { root: PathBuf::from(top.trim_end_matches(['\n', '\r'])), ..probe })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Authenticates `fetch` and `push` to https remotes on the forge's server with `auth`.
    pub fn with_auth(self, auth: Option<GitHubAuth>) -> Self {
        Repo { auth, ..self }
    }

    /// Sends these `git push -o` options with every push onto the synced branch (not with the
    /// change-request branch, whose pipelines are the review's checks).
    pub fn with_push_options(self, push_options: Vec<String>) -> Self {
        Repo { push_options, ..self }
    }

    fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command_with(args, &[])
    }

    /// The one place git is spawned: every command gets a scrubbed environment and the config
    /// entries it needs, added after any `GIT_CONFIG_*` entries the caller's environment has.
    fn command_with<I, S>(&self, args: I, extra_config: &[(String, String)]) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("git");
        cmd.current_dir(&self.root)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            // Names are data: never let a pathspec be read as a glob or magic.
            .env("GIT_LITERAL_PATHSPECS", "1")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        for (name, _) in std::env::vars_os() {
            if scrubbed(&name.to_string_lossy()) {
                cmd.env_remove(name);
            }
        }
        let mut config: Vec<(String, String)> = Vec::new();
        if let Some(dir) = &self.safe_directory {
            config.push(("safe.directory".into(), dir.clone()));
        }
        config.extend_from_slice(extra_config);
        if !config.is_empty() {
            let inherited: usize = std::env::var("GIT_CONFIG_COUNT").ok().and_then(|n| n.parse().ok()).unwrap_or(0);
            for (i, (key, value)) in config.iter().enumerate() {
                cmd.env(format!("GIT_CONFIG_KEY_{}", inherited + i), key)
                    .env(format!("GIT_CONFIG_VALUE_{}", inherited + i), value);
            }
            cmd.env("GIT_CONFIG_COUNT", (inherited + config.len()).to_string());
        }
        cmd
    }

    /// A command that talks to `remote` (a remote's name or a URL): with defsync's credentials
    /// when the remote's URL for that direction is an https URL on the GitHub server.
    fn remote_command(&self, args: &[&str], remote: &str, push: bool) -> Command {
        let config = match &self.auth {
            Some(auth) => {
                let mut get_url = vec!["remote", "get-url"];
                if push {
                    get_url.push("--push");
                }
                get_url.extend(["--", remote]);
                // A name git does not know is a URL (as `git fetch <url>` takes it).
                let url = self.run(&get_url).map(|u| u.trim().to_owned()).unwrap_or_else(|_| remote.to_owned());
                if auth.applies_to(&url) { auth.config().to_vec() } else { Vec::new() }
            }
            None => Vec::new(),
        };
        self.command_with(args, &config)
    }

    /// Runs git and returns its stdout; a non-zero exit is an error carrying stderr.
    fn run<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.output(self.command(args))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn output(&self, mut cmd: Command) -> Result<Vec<u8>> {
        let out = cmd.output().map_err(|e| Error::Git(format!("cannot run git: {e}")))?;
        if out.status.success() { Ok(out.stdout) } else { Err(Error::Git(describe_failure(&cmd, &out.stderr))) }
    }

    /// Runs git with `input` on stdin.
    fn run_with_input(&self, mut cmd: Command, input: &[u8]) -> Result<Vec<u8>> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| Error::Git(format!("cannot run git: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let out = std::thread::scope(|s| {
            s.spawn(move || {
                let _ = stdin.write_all(input);
            });
            child.wait_with_output()
        })
        .map_err(|e| Error::Git(format!("git failed: {e}")))?;
        if out.status.success() { Ok(out.stdout) } else { Err(Error::Git(describe_failure(&cmd, &out.stderr))) }
    }

    pub fn rev_parse(&self, rev: &str) -> Result<Oid> {
        match self.run(["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")]) {
            Ok(out) => Ok(out.trim().to_owned()),
            Err(e) if rev == "HEAD" => Err(self.unborn_branch().map_or(e, |branch| {
                Error::Config(format!(
                    "branch {branch:?} has no commit yet: make a first commit (`git commit`) and push it to \
                     the origin (`git push -u origin {branch}`), then run defsync again"
                ))
            })),
            Err(e) => Err(e),
        }
    }

    /// The branch HEAD names when it has no commit yet, as right after `git init`.
    fn unborn_branch(&self) -> Option<String> {
        let branch = self.current_branch()?;
        self.try_rev_parse_quiet(&format!("refs/heads/{branch}")).is_none().then_some(branch)
    }

    fn try_rev_parse_quiet(&self, rev: &str) -> Option<String> {
        self.run(["rev-parse", "--verify", "--quiet", rev]).ok()
    }

    pub fn try_rev_parse(&self, rev: &str) -> Option<Oid> {
        self.rev_parse(rev).ok()
    }

    /// The checked-out branch, or `None` on a detached HEAD.
    pub fn current_branch(&self) -> Option<String> {
        self.run(["symbolic-ref", "--quiet", "--short", "HEAD"])
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    pub fn remote_url(&self, remote: &str) -> Option<String> {
        self.run(["remote", "get-url", remote]).ok().map(|s| s.trim().to_owned())
    }

    pub fn is_shallow(&self) -> bool {
        self.run(["rev-parse", "--is-shallow-repository"]).is_ok_and(|s| s.trim() == "true")
    }

    /// Fetches `branch` from `remote` into `refs/remotes/<remote>/<branch>` and returns its tip.
    /// A shallow clone stays shallow (depth 1 is all a run needs); a full clone stays full.
    pub fn fetch(&self, remote: &str, branch: &str) -> Result<Oid> {
        let tracking = format!("refs/remotes/{remote}/{branch}");
        let refspec = format!("+refs/heads/{branch}:{tracking}");
        let mut args = vec!["fetch", "--quiet", "--no-tags", "--no-write-fetch-head"];
        if self.is_shallow() {
            args.push("--depth=1");
        }
        args.extend([remote, refspec.as_str()]);
        self.output(self.remote_command(&args, remote, false)).map_err(|e| match e {
            // The branch and the credentials are not what is wrong.
            Error::Git(m) if m.contains(STALE_LOCK) => Error::Git(format!("cannot fetch branch {branch:?} from {remote:?}: {m}")),
            Error::Git(m) => Error::Git(format!(
                "cannot fetch branch {branch:?} from {remote:?}: {m}. Check that the branch exists and that defsync has a token that may read the repository (the action's github-token input, or DEFSYNC_GITHUB_TOKEN; a workflow needs `permissions: contents: read`)"
            )),
            e => e,
        })?;
        self.rev_parse(&tracking)
    }

    /// Whether `ancestor` is an ancestor of (or equal to) `descendant`.
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> bool {
        self.command(["merge-base", "--is-ancestor", ancestor, descendant])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// How many commits reachable from `tip` but not from `base` change something at or below
    /// `path` (`.` for any).
    pub fn count_commits(&self, base: &str, tip: &str, path: &str) -> Result<usize> {
        let range = format!("{base}..{tip}");
        let mut args = vec!["rev-list", "--count", range.as_str()];
        if path != "." {
            args.extend(["--", path]);
        }
        let out = self.run(&args)?;
        out.trim().parse().map_err(|_| Error::Git(format!("unexpected rev-list output: {out:?}")))
    }

    /// Paths with uncommitted changes (tracked or untracked) at or below `path`.
    pub fn dirty_paths(&self, path: &str) -> Result<Vec<String>> {
        let out = self.output({
            let mut c = self.command(["status", "--porcelain=v1", "-z", "--untracked-files=all", "--", path]);
            c.env_remove("GIT_LITERAL_PATHSPECS");
            c
        })?;
        let mut paths = Vec::new();
        let mut fields = out.split(|b| *b == 0).filter(|f| !f.is_empty());
        while let Some(entry) = fields.next() {
            if entry.len() < 4 {
                continue;
            }
            let status = &entry[..2];
            paths.push(String::from_utf8_lossy(&entry[3..]).into_owned());
            // A rename or copy is followed by its source path.
            if status.contains(&b'R') || status.contains(&b'C') {
                fields.next();
            }
        }
        Ok(paths)
    }

    /// Moves the checkout forward to `commit`; refuses anything but a fast-forward.
    pub fn fast_forward(&self, commit: &str) -> Result<()> {
        self.run(["merge", "--ff-only", "--quiet", commit]).map(drop)
    }

    /// Every blob below `path` (a directory relative to the root, `.` for all) in `commit`.
    pub fn ls_tree(&self, commit: &str, path: &str) -> Result<Vec<TreeEntry>> {
        let mut args = vec!["ls-tree", "-r", "-z", "--full-tree", commit];
        if path != "." {
            args.extend(["--", path]);
        }
        let out = self.output(self.command(&args))?;
        let mut entries = Vec::new();
        for record in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let record = String::from_utf8_lossy(record);
            let (meta, path) =
                record.split_once('\t').ok_or_else(|| Error::Git(format!("unexpected ls-tree output: {record:?}")))?;
            let mut meta = meta.split(' ');
            let (Some(mode), Some(_kind), Some(oid)) = (meta.next(), meta.next(), meta.next()) else {
                return Err(Error::Git(format!("unexpected ls-tree output: {record:?}")));
            };
            let mode = u32::from_str_radix(mode, 8)
                .map_err(|_| Error::Git(format!("unexpected ls-tree output: {record:?}")))?;
            entries.push(TreeEntry { mode, oid: oid.to_owned(), path: path.to_owned() });
        }
        Ok(entries)
    }

    /// Whether `path` is a directory in `commit`'s tree.
    pub fn tree_has_path(&self, commit: &str, path: &str) -> bool {
        path == "." || self.run(["cat-file", "-e", &format!("{commit}:{path}")]).is_ok()
    }

    /// Reads blobs through one `git cat-file --batch`, in the order given.
    pub fn read_blobs(&self, oids: &[ObjectId]) -> Result<Vec<Vec<u8>>> {
        if oids.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = self.command(["cat-file", "--batch"]);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| Error::Git(format!("cannot run git: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let input: String = oids.iter().map(|o| format!("{o}\n")).collect();
        let result = std::thread::scope(|s| {
            s.spawn(move || {
                let _ = stdin.write_all(input.as_bytes());
            });
            let mut reader = BufReader::new(stdout);
            let mut blobs = Vec::with_capacity(oids.len());
            let mut header = String::new();
            for oid in oids {
                header.clear();
                reader.read_line(&mut header).map_err(|e| Error::Git(e.to_string()))?;
                let mut parts = header.split_whitespace();
                let (Some(_), Some(kind), Some(size)) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(Error::Git(format!("object {oid} is missing: {}", header.trim())));
                };
                if kind != "blob" {
                    return Err(Error::Git(format!("object {oid} is a {kind}, not a blob")));
                }
                let size: usize = size.parse().map_err(|_| Error::Git(format!("bad size for {oid}")))?;
                let mut blob = vec![0; size + 1];
                reader.read_exact(&mut blob).map_err(|e| Error::Git(e.to_string()))?;
                blob.pop(); // the newline after each object
                blobs.push(blob);
            }
            Ok(blobs)
        });
        let status = child.wait().map_err(|e| Error::Git(e.to_string()))?;
        let blobs = result?;
        if !status.success() {
            return Err(Error::Git("git cat-file --batch failed".into()));
        }
        Ok(blobs)
    }

    /// Writes blobs into the object store and returns their names, in order.
    pub fn write_blobs(&self, contents: &[&[u8]]) -> Result<Vec<Oid>> {
        if contents.is_empty() {
            return Ok(Vec::new());
        }
        // `hash-object --stdin-paths` writes many blobs with one process; the files are staged
        // in a private folder inside .git, never in the work tree.
        let git_dir = self.git_dir()?;
        let scratch = tempfile::Builder::new()
            .prefix("defsync-")
            .tempdir_in(&git_dir)
            .map_err(|e| Error::Git(format!("cannot create a scratch folder in {}: {e}", git_dir.display())))?;
        let mut list = String::new();
        for (i, content) in contents.iter().enumerate() {
            let file = scratch.path().join(i.to_string());
            std::fs::write(&file, content).map_err(|e| Error::Git(format!("cannot write {}: {e}", file.display())))?;
            list.push_str(&file.to_string_lossy());
            list.push('\n');
        }
        let out =
            self.run_with_input(self.command(["hash-object", "-w", "--no-filters", "--stdin-paths"]), list.as_bytes())?;
        let oids: Vec<Oid> = String::from_utf8_lossy(&out).lines().map(str::to_owned).collect();
        if oids.len() != contents.len() {
            return Err(Error::Git("git hash-object returned the wrong number of objects".into()));
        }
        Ok(oids)
    }

    /// Starts writing blobs into one new pack through `git fast-import`, for large changes: one
    /// process and one pack file instead of a scratch file and a loose object per blob, and a
    /// pack that `git push` sends on without compressing every object again.
    pub fn pack_writer(&self) -> Result<PackWriter> {
        let git_dir = self.git_dir()?;
        let scratch = tempfile::Builder::new()
            .prefix("defsync-")
            .tempdir_in(&git_dir)
            .map_err(|e| Error::Git(format!("cannot create a scratch folder in {}: {e}", git_dir.display())))?;
        let marks = scratch.path().join("marks");
        let mut export = std::ffi::OsString::from("--export-marks=");
        export.push(&marks);
        // `--done`: a stream cut short (defsync failing mid-way) is an error, and no pack is
        // installed from it.
        let mut cmd =
            self.command([OsStr::new("fast-import"), OsStr::new("--quiet"), OsStr::new("--done"), export.as_os_str()]);
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| Error::Git(format!("cannot run git fast-import: {e}")))?;
        let stdin = std::io::BufWriter::with_capacity(1 << 16, child.stdin.take().expect("piped"));
        // Drained on a thread, so a chatty failure can never block the stream.
        let mut stderr = child.stderr.take().expect("piped");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Ok(PackWriter {
            child: Some(child),
            stdin: Some(stdin),
            stderr: Some(stderr),
            marks,
            count: 0,
            _scratch: scratch,
        })
    }

    pub fn git_dir(&self) -> Result<PathBuf> {
        let dir = self.run(["rev-parse", "--absolute-git-dir"])?;
        Ok(PathBuf::from(dir.trim_end_matches(['\n', '\r'])))
    }

    /// The tree of `base` with `staged` applied, written to the object store. Nothing else moves.
    pub fn stage_tree(&self, base: &str, staged: &Staged) -> Result<Oid> {
        let git_dir = self.git_dir()?;
        let index = tempfile::Builder::new()
            .prefix("defsync-index-")
            .tempfile_in(&git_dir)
            .map_err(|e| Error::Git(format!("cannot create a temporary index: {e}")))?;
        let index_path = index.path().to_path_buf();
        let with_index = |args: &[&str]| {
            let mut c = self.command(args);
            c.env("GIT_INDEX_FILE", &index_path);
            c
        };
        self.output(with_index(&["read-tree", base]))?;
        let mut info = Vec::new();
        for (path, oid) in &staged.writes {
            info.extend_from_slice(format!("100644 {oid}\t{path}").as_bytes());
            info.push(0);
        }
        for path in &staged.removes {
            info.extend_from_slice(format!("0 {}\t{path}", "0".repeat(40)).as_bytes());
            info.push(0);
        }
        self.run_with_input(with_index(&["update-index", "-z", "--index-info"]), &info)?;
        let tree = self.output(with_index(&["write-tree"]))?;
        Ok(String::from_utf8_lossy(&tree).trim().to_owned())
    }

    pub fn tree_of(&self, commit: &str) -> Result<Oid> {
        Ok(self.run(["rev-parse", &format!("{commit}^{{tree}}")])?.trim().to_owned())
    }

    /// Creates a commit object; no ref moves.
    pub fn commit_tree(
        &self,
        tree: &str,
        parent: &str,
        message: &str,
        author: Option<&Identity>,
        committer: Option<&Identity>,
    ) -> Result<Oid> {
        let mut cmd = self.command(["commit-tree", tree, "-p", parent, "-F", "-"]);
        if let Some(a) = author {
            cmd.env("GIT_AUTHOR_NAME", &a.name).env("GIT_AUTHOR_EMAIL", &a.email);
        }
        if let Some(c) = committer {
            cmd.env("GIT_COMMITTER_NAME", &c.name).env("GIT_COMMITTER_EMAIL", &c.email);
        }
        let out = self.run_with_input(cmd, message.as_bytes()).map_err(|e| match e {
            Error::Git(m) if m.contains("tell me who you are") || m.contains("empty ident") => Error::Config(format!(
                "Git has no identity to commit with: set user.name and user.email, or pass --author/--committer ({m})"
            )),
            e => e,
        })?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// Pushes `commit` to `refs/heads/<branch>` on `remote`, fast-forward only.
    pub fn push(&self, remote: &str, commit: &str, branch: &str) -> Result<PushOutcome> {
        let refspec = format!("{commit}:refs/heads/{branch}");
        let mut args = vec!["push", "--porcelain", "--quiet"];
        for option in &self.push_options {
            args.extend(["-o", option.as_str()]);
        }
        args.extend([remote, refspec.as_str()]);
        let mut cmd = self.remote_command(&args, remote, true);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = cmd.output().map_err(|e| Error::Git(format!("cannot run git: {e}")))?;
        if out.status.success() {
            return Ok(PushOutcome::Pushed);
        }
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // "failed to update ref" / "cannot lock ref": another push won the race for the ref lock
        // after this one was checked, which is the same lost race as a non-fast-forward.
        let lost_race = ["non-fast-forward", "[rejected]", "fetch first", "failed to update ref", "cannot lock ref"];
        if lost_race.iter().any(|m| text.contains(m)) {
            return Ok(PushOutcome::Rejected(text.trim().to_owned()));
        }
        Err(Error::Git(push_failure_hint(branch, &text)))
    }

    /// Points `refs/heads/<branch>` on `remote` at `commit`, replacing what was there. Only for
    /// branches that belong to defsync (the pull-request branch).
    pub fn push_branch_force(&self, remote: &str, commit: &str, branch: &str) -> Result<()> {
        let refspec = format!("+{commit}:refs/heads/{branch}");
        self.output(self.remote_command(&["push", "--quiet", remote, &refspec], remote, true))
            .map(drop)
            .map_err(|e| Error::Git(push_failure_hint(branch, &e.to_string())))
    }

    /// The last commit on `rev`'s history that changed each of `paths`, as `git log -1 -- path`
    /// finds it (GitLab's `last_commit_id`); paths no commit changed are left out. One walk of
    /// the history, limited to the paths' directories, rather than one `git log` per path.
    pub fn last_commits(&self, rev: &str, paths: &[&str]) -> Result<std::collections::HashMap<String, Oid>> {
        use std::collections::{BTreeSet, HashMap, HashSet};
        let mut wanted: HashSet<&str> = paths.iter().copied().collect();
        let mut found = HashMap::new();
        if wanted.is_empty() {
            return Ok(found);
        }
        let dirs: BTreeSet<&str> = paths.iter().map(|p| p.rsplit_once('/').map_or(".", |(d, _)| d)).collect();
        // A merge counts where it changed a path against every parent (`dense-combined`), as
        // history simplification makes `git log -- path` show it.
        let mut args = vec![
            "log",
            "-z",
            "--format=%x01%H",
            "--name-only",
            "--no-renames",
            "--diff-merges=dense-combined",
            rev,
            "--",
        ];
        args.extend(dirs.iter().copied());
        let out = self.output(self.command(&args))?;
        let mut current: Option<String> = None;
        for field in out.split(|b| *b == 0) {
            let field = String::from_utf8_lossy(field);
            let field = field.trim_start_matches('\n');
            if let Some(sha) = field.strip_prefix('\u{1}') {
                current = Some(sha.to_owned());
            } else if let Some(sha) = &current
                && wanted.remove(field)
            {
                found.insert(field.to_owned(), sha.clone());
                if wanted.is_empty() {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// The subject and trailers of a commit, for reports.
    pub fn commit_message(&self, commit: &str) -> Result<String> {
        self.run(["log", "-1", "--format=%B", commit])
    }
}

/// Blobs on their way into one pack (see [`Repo::pack_writer`]). Nothing is in the object
/// store before [`PackWriter::finish`]; dropped unfinished, git is stopped and no pack is
/// installed.
pub struct PackWriter {
    child: Option<std::process::Child>,
    stdin: Option<std::io::BufWriter<std::process::ChildStdin>>,
    stderr: Option<std::thread::JoinHandle<String>>,
    marks: PathBuf,
    count: usize,
    _scratch: tempfile::TempDir,
}

impl PackWriter {
    /// Streams a blob to git; its name is known once the pack is finished.
    pub fn add(&mut self, content: &[u8]) -> Result<()> {
        self.count += 1;
        let stdin = self.stdin.as_mut().expect("open until finished");
        let header = format!("blob\nmark :{}\ndata {}\n", self.count, content.len());
        let sent = stdin
            .write_all(header.as_bytes())
            .and_then(|()| stdin.write_all(content))
            .and_then(|()| stdin.write_all(b"\n"));
        sent.map_err(|e| self.failed(&format!("cannot stream a blob to git fast-import: {e}")))
    }

    /// Ends the stream, waits for the pack to be installed, and returns the blobs' names in the
    /// order they were added.
    pub fn finish(mut self) -> Result<Vec<Oid>> {
        let mut stdin = self.stdin.take().expect("open until finished");
        if let Err(e) = stdin.write_all(b"done\n").and_then(|()| stdin.flush()) {
            return Err(self.failed(&format!("cannot end the git fast-import stream: {e}")));
        }
        drop(stdin);
        let status = self.child.take().expect("running").wait().map_err(|e| Error::Git(e.to_string()))?;
        let said = self.stderr.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        if !status.success() {
            return Err(Error::Git(format!("`git fast-import` failed ({status}): {}", said.trim())));
        }
        let marks = std::fs::read_to_string(&self.marks)
            .map_err(|e| Error::Git(format!("cannot read git fast-import's marks {}: {e}", self.marks.display())))?;
        let mut oids = vec![None; self.count];
        for line in marks.lines() {
            let parsed = line.strip_prefix(':').and_then(|l| l.split_once(' '));
            let Some((mark, oid)) = parsed.and_then(|(m, o)| Some((m.parse::<usize>().ok()?, o))) else {
                return Err(Error::Git(format!("unexpected line in git fast-import's marks: {line:?}")));
            };
            if let Some(slot) = mark.checked_sub(1).and_then(|i| oids.get_mut(i)) {
                *slot = Some(oid.to_owned());
            }
        }
        oids.into_iter()
            .enumerate()
            .map(|(i, o)| o.ok_or_else(|| Error::Git(format!("git fast-import did not name blob {}", i + 1))))
            .collect()
    }

    /// Stops git (a broken pipe means it died) and returns its message.
    fn failed(&mut self, what: &str) -> Error {
        self.abort();
        let said = self.stderr.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        Error::Git(format!("{what}: {}", said.trim()))
    }

    fn abort(&mut self) {
        // Closing stdin without `done` makes fast-import fail and discard its pack; kill it too,
        // so nothing waits on a half-read stream.
        self.stdin.take();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Removes credentials from every URL in `text` (`https://user:token@host` → `https://***@host`):
/// Git's messages quote remote URLs, and a remote may carry a token.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail.find(|c: char| c.is_whitespace() || c == '/' || c == '\'' || c == '"').unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(userinfo) => {
                out.push_str("***");
                out.push_str(&tail[userinfo..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn describe_failure(cmd: &Command, stderr: &[u8]) -> String {
    let args: Vec<String> = cmd.get_args().map(|a| redact_urls(&a.to_string_lossy())).collect();
    let stderr = redact_urls(&String::from_utf8_lossy(stderr));
    let stderr = stderr.trim();
    let said = if stderr.is_empty() { "(no message)" } else { stderr };
    match stale_lock(stderr) {
        Some(hint) => format!("`git {}` failed: {hint}. Git said: {said}", args.join(" ")),
        None => format!("`git {}` failed: {said}", args.join(" ")),
    }
}

/// Starts the hint of [`stale_lock`], so that callers can tell a lock failure from others.
const STALE_LOCK: &str = "Git's lock file";

/// Git's "Unable to create '…/X.lock': File exists": a run killed during `git fetch` (or any
/// Git command) leaves `shallow.lock`, `index.lock` or a ref's lock behind, and every later
/// Git command that needs it fails. Removing it is safe only when no Git process is still
/// running, which only the user can tell, so the hint says how and never removes it.
fn stale_lock(stderr: &str) -> Option<String> {
    let (_, rest) = stderr.split_once("Unable to create '")?;
    let (path, rest) = rest.split_once('\'')?;
    if !rest.starts_with(": File exists") || !path.ends_with(".lock") {
        return None;
    }
    Some(format!(
        "{STALE_LOCK} {path} exists, so an earlier Git process in this checkout was interrupted (a killed run?) or is still running. \
         Check that no git process is running here (`ps -ef | grep git`), then remove the file: rm {}; \
         defsync never removes it itself",
        shell_quote(path)
    ))
}

/// `path` as one shell word, for a command the user may copy.
fn shell_quote(path: &str) -> String {
    if path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+@%:,".contains(&b)) {
        path.to_owned()
    } else {
        format!("'{}'", path.replace('\'', "'\\''"))
    }
}

fn push_failure_hint(branch: &str, text: &str) -> String {
    let hint = if text.contains("GH006") || text.contains("protected branch") || text.contains("rule violations") {
        "the branch is protected by a rule or ruleset that refuses direct pushes: allow the workflow to push, or deliver through a pull request"
    } else if text.contains("refusing to allow") && text.contains("workflow") {
        "definitions under .github/workflows need a token with the workflows permission"
    } else if text.contains("not allowed to push code to protected branches") {
        "GitLab: the branch is protected and this token's role may not push to it: deliver through a merge request (`--delivery merge-request`), or allow the role in Settings → Repository → Protected branches"
    } else if text.contains("You are not allowed to upload code") {
        "GitLab: the token may not push: a project access token needs `write_repository` and at least Developer; a CI/CD job token pushes only where the project turns on \"Allow Git push requests to the repository\" (GitLab 17.2+)"
    } else if text.contains("HTTP Basic: Access denied") {
        "GitLab refused the token for git: it is invalid, expired or revoked, or lacks `read_repository`/`write_repository`; update the GITLAB_TOKEN CI/CD variable"
    } else if text.contains("403") || text.contains("Permission") || text.contains("denied") {
        "the token may not push: give the workflow `permissions: contents: write`"
    } else if text.contains("could not read Username") || text.contains("Authentication failed") {
        "git has no credentials: give defsync a token that may push (the action's github-token input, or DEFSYNC_GITHUB_TOKEN) and `permissions: contents: write`"
    } else {
        "see Git's message"
    };
    if let Some(lock) = stale_lock(text) {
        return format!("cannot push to branch {branch:?}: {lock}. Git said: {}", redact_urls(text.trim()));
    }
    format!("cannot push to branch {branch:?}: {hint}. Git said: {}", redact_urls(text.trim()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn object_ids_read_and_write_their_hex_digits() {
        use super::ObjectId;
        for hex in ["0123456789abcdef0123456789abcdef01234567", &"f0".repeat(32)] {
            let id = ObjectId::from_hex(hex).unwrap();
            assert_eq!(id.to_hex(), hex);
            assert_eq!(id.to_string(), hex);
        }
        for bad in ["", "0123", &"A".repeat(40), &"g".repeat(40), &"0".repeat(41), &"0".repeat(63)] {
            assert_eq!(ObjectId::from_hex(bad), None, "{bad}");
        }
        let (a, b) = (ObjectId::from_hex(&"0".repeat(40)).unwrap(), ObjectId::from_hex(&"0".repeat(64)).unwrap());
        assert_ne!(a, b, "a SHA-1 name and a SHA-256 name are never equal");
    }

    use super::*;

    #[test]
    fn the_auth_header_is_only_for_https_remotes_on_the_github_server() {
        let auth = GitHubAuth::new("ghs_secret", "https://github.com/").unwrap();
        for url in ["https://github.com/acme/defs.git", "HTTPS://GitHub.com/acme/defs", "https://github.com/a/b/"] {
            assert!(auth.applies_to(url), "{url}");
        }
        for url in [
            "http://github.com/acme/defs.git",
            "git@github.com:acme/defs.git",
            "ssh://git@github.com/acme/defs.git",
            "https://github.com.evil.example/acme/defs.git",
            "https://github.com@evil.example/acme/defs.git",
            "https://x-access-token:other@github.com/acme/defs.git",
            "https://gitlab.com/acme/defs.git",
            "/tmp/origin.git",
            "../origin.git",
            "file:///tmp/origin.git",
            "https://github.com",
        ] {
            assert!(!auth.applies_to(url), "{url}");
        }
        // The header is Basic x-access-token:<token>, as actions/checkout writes it.
        let [(clear_key, clear), (key, header)] = auth.config();
        assert_eq!((clear_key.as_str(), clear.as_str()), ("http.https://github.com/.extraheader", ""));
        assert_eq!(key, "http.https://github.com/.extraheader");
        assert_eq!(header, "AUTHORIZATION: basic eC1hY2Nlc3MtdG9rZW46Z2hzX3NlY3JldA==");
        // A token never goes out in clear text, and never prints.
        assert!(GitHubAuth::new("ghs_secret", "http://ghe.example").is_none());
        assert!(GitHubAuth::new("", "https://github.com").is_none());
        assert!(GitHubAuth::new("a\nb", "https://github.com").is_none());
        assert!(!format!("{auth:?}").contains("eC1hY2Nlc3Mt"));
        let ghes = GitHubAuth::new("t", "https://ghe.example/").unwrap();
        assert!(ghes.applies_to("https://ghe.example/o/r.git") && !ghes.applies_to("https://github.com/o/r.git"));
    }

    #[test]
    fn gitlab_tokens_go_as_basic_oauth2_or_gitlab_ci_token() {
        use base64::Engine as _;
        let decode = |auth: &GitHubAuth| {
            let header = auth.config()[1].1.clone();
            let b64 = header.strip_prefix("AUTHORIZATION: basic ").unwrap().to_owned();
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
        };
        let pat = GitHubAuth::gitlab("glpat-x", false, "https://gitlab.example.com/").unwrap();
        assert_eq!(decode(&pat), "oauth2:glpat-x");
        assert!(pat.applies_to("https://gitlab.example.com/g/sub/p.git"));
        let job = GitHubAuth::gitlab("job", true, "https://gitlab.example.com").unwrap();
        assert_eq!(decode(&job), "gitlab-ci-token:job");
        assert!(GitHubAuth::gitlab("glpat-x", false, "http://gitlab.example.com").is_none());
    }

    #[test]
    fn last_commits_match_git_log_per_path() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .current_dir(dir.path())
                .args(args)
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_AUTHOR_NAME", "a")
                .env("GIT_AUTHOR_EMAIL", "a@example.com")
                .env("GIT_COMMITTER_NAME", "a")
                .env("GIT_COMMITTER_EMAIL", "a@example.com")
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        git(&["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(dir.path().join("d/e")).unwrap();
        std::fs::write(dir.path().join("d/a b.yaml"), "1").unwrap();
        std::fs::write(dir.path().join("d/e/c.yaml"), "1").unwrap();
        git(&["add", "."]);
        git(&["commit", "-qm", "one"]);
        std::fs::write(dir.path().join("d/e/c.yaml"), "2").unwrap();
        git(&["commit", "-qam", "two"]);
        let repo = Repo::discover(dir.path()).unwrap();
        let found = repo.last_commits("HEAD", &["d/a b.yaml", "d/e/c.yaml", "d/none.yaml"]).unwrap();
        for path in ["d/a b.yaml", "d/e/c.yaml"] {
            assert_eq!(found[path], git(&["log", "-1", "--format=%H", "--", path]), "{path}");
        }
        assert_ne!(found["d/a b.yaml"], found["d/e/c.yaml"]);
        assert!(!found.contains_key("d/none.yaml"));
    }

    #[test]
    fn git_never_sees_the_platform_key_or_tokens() {
        for name in [
            "DEFSYNC_API_KEY",
            "DEFSYNC_GITHUB_TOKEN",
            "GITHUB_TOKEN",
            "GH_TOKEN",
            "ACTIONS_RUNTIME_TOKEN",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
            "NPM_TOKEN",
            "defsync_api_key",
            "SOME_API_KEY",
            "DEFSYNC_SERVER_KEYS",
            "GITLAB_TOKEN",
            "CI_JOB_TOKEN",
            "DEFSYNC_GITLAB_TRIGGER_TOKEN",
        ] {
            assert!(scrubbed(name), "{name}");
        }
        for name in ["PATH", "HOME", "GIT_ASKPASS", "GIT_CONFIG_GLOBAL", "SSH_AUTH_SOCK", "HTTPS_PROXY", "LANG"] {
            assert!(!scrubbed(name), "{name}");
        }
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        let said = "fatal: unable to access 'https://x-access-token:ghs_secret@github.com/acme/i.git/': 403";
        let shown = redact_urls(said);
        assert!(!shown.contains("ghs_secret") && !shown.contains("x-access-token"), "{shown}");
        assert!(shown.contains("https://***@github.com/acme/i.git/"), "{shown}");
        assert_eq!(redact_urls("no url here"), "no url here");
        assert_eq!(redact_urls("ssh://git@host/x and https://h/y"), "ssh://***@host/x and https://h/y");
    }
}
