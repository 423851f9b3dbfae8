//! A stand-in for GitHub's REST API, backed by a real bare Git repository.
//!
//! Git data is real: trees, blobs and commits are written with git plumbing, refs move with
//! GitHub's fast-forward rule. Pull requests, labels, dispatches and branch rules are kept in
//! memory. Every request and every answer is checked against GitHub's OpenAPI description
//! (`schema.rs`); answers start from its documented examples, so their shape is GitHub's.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::schema;

pub const OWNER: &str = "octo";
pub const REPO: &str = "defs";

/// An answer to give instead of the real one, or something to do first.
#[derive(Debug, Clone)]
pub enum Action {
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Value,
    },
    /// Move a branch (another writer) before handling the request normally.
    MoveBranch {
        branch: String,
        to: String,
    },
}

#[derive(Debug, Clone)]
struct Injection {
    method: String,
    path_contains: String,
    action: Action,
}

/// One request and its answer, as the stand-in saw them.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    /// Without the GHES prefix.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub request: Option<Value>,
    pub status: u16,
    pub response: Option<Value>,
    pub headers: Vec<(String, String)>,
    pub had_prefix: bool,
}

#[derive(Debug, Clone)]
pub struct Pull {
    pub number: u64,
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub state: String,
    pub labels: Vec<String>,
}

#[derive(Debug)]
pub struct State {
    pub bare: PathBuf,
    pub prefix: String,
    pub base_url: String,
    pub pulls: Vec<Pull>,
    pub dispatches: Vec<Value>,
    /// Answer dispatches with 200 and a run ID (newer GitHub) rather than 204.
    pub dispatch_run_details: bool,
    /// Workflow runs by ID: `status`, `conclusion` and `display_title`, merged into GitHub's
    /// example run. A dispatch adds one, queued, titled as the pull workflow's `run-name`
    /// makes it; tests move it on with [`StandIn::set_run`].
    pub runs: std::collections::BTreeMap<u64, Value>,
    pub rules: Value,
    pub protected: bool,
    pub actions_can_create_prs: bool,
    pub scopes: String,
    injections: VecDeque<Injection>,
    pub exchanges: Vec<Exchange>,
    pub violations: Vec<String>,
    remaining: u32,
    next_id: u64,
}

pub struct StandIn {
    /// The API root, with the GHES prefix if any.
    pub url: String,
    pub state: Arc<Mutex<State>>,
    pub bare: PathBuf,
    _dir: tempfile::TempDir,
}

/// Runs git with isolated configuration.
pub fn git(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Result<String, String> {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.env("GIT_AUTHOR_NAME", "Seed")
        .env("GIT_AUTHOR_EMAIL", "seed@example.com")
        .env("GIT_COMMITTER_NAME", "Seed")
        .env("GIT_COMMITTER_EMAIL", "seed@example.com");
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

impl StandIn {
    /// Starts the stand-in on 127.0.0.1 with an empty bare repository. `prefix` is `""` for
    /// api.github.com or `/api/v3` for GitHub Enterprise Server.
    pub async fn start(prefix: &str) -> StandIn {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("origin.git");
        git(dir.path(), &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()], None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base_url = format!("http://{addr}{prefix}");
        let state = Arc::new(Mutex::new(State {
            bare: bare.clone(),
            prefix: prefix.to_owned(),
            base_url: base_url.clone(),
            pulls: vec![],
            dispatches: vec![],
            dispatch_run_details: true,
            runs: Default::default(),
            rules: json!([]),
            protected: false,
            actions_can_create_prs: true,
            scopes: "repo, workflow".into(),
            injections: VecDeque::new(),
            exchanges: vec![],
            violations: vec![],
            remaining: 5000,
            next_id: 1,
        }));
        let shared = state.clone();
        let app =
            axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                async move {
                    tokio::task::spawn_blocking(move || handle(&state, &method, &uri, &headers, &body)).await.unwrap()
                }
            });
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        StandIn { url: base_url, state, bare, _dir: dir }
    }

    /// Sets a run's `status` and `conclusion` (a new run gets `title` as its display title).
    pub fn set_run(&self, id: u64, status: &str, conclusion: Option<&str>, title: &str) {
        let mut s = self.state.lock().unwrap();
        let run = s.runs.entry(id).or_insert_with(|| json!({"display_title": title}));
        run["status"] = json!(status);
        run["conclusion"] = json!(conclusion);
    }

    pub fn git(&self, args: &[&str]) -> String {
        git(&self.bare, args, None).unwrap_or_else(|e| panic!("git {args:?}: {e}"))
    }

    /// Commits `files` onto `branch` (a root commit when the branch is new) and returns the SHA.
    pub fn commit_files(&self, branch: &str, files: &[(String, String)], message: &str) -> String {
        let index = self.bare.join(format!("seed-index-{}", rand_suffix()));
        let with_index = |args: &[&str], input: Option<&[u8]>| git_env(&self.bare, args, input, &index);
        let parent = git(&self.bare, &["rev-parse", "--verify", "-q", &format!("refs/heads/{branch}")], None).ok();
        match &parent {
            Some(p) => with_index(&["read-tree", p], None),
            None => with_index(&["read-tree", "--empty"], None),
        };
        let mut info = Vec::new();
        for (path, content) in files {
            let oid = git(&self.bare, &["hash-object", "-w", "--stdin"], Some(content.as_bytes())).unwrap();
            info.extend_from_slice(format!("100644 {oid}\t{path}\0").as_bytes());
        }
        with_index(&["update-index", "-z", "--index-info"], Some(&info));
        let tree = with_index(&["write-tree"], None);
        let _ = std::fs::remove_file(&index);
        let mut args = vec!["commit-tree", tree.as_str(), "-m", message];
        if let Some(p) = &parent {
            args.extend(["-p", p.as_str()]);
        }
        let sha = self.git(&args);
        self.git(&["update-ref", &format!("refs/heads/{branch}"), &sha]);
        sha
    }

    /// `path → content` of the files at `rev`.
    pub fn files_at(&self, rev: &str) -> Vec<(String, String)> {
        let list = self.git(&["ls-tree", "-r", "--name-only", rev]);
        list.lines()
            .map(|p| {
                let out = Command::new("git")
                    .current_dir(&self.bare)
                    .args(["cat-file", "blob", &format!("{rev}:{p}")])
                    .output()
                    .unwrap();
                (p.to_owned(), String::from_utf8(out.stdout).unwrap())
            })
            .collect()
    }

    /// The next request whose method matches and whose path contains `path_contains` gets
    /// `action`.
    pub fn inject(&self, method: &str, path_contains: &str, action: Action) {
        self.state.lock().unwrap().injections.push_back(Injection {
            method: method.to_uppercase(),
            path_contains: path_contains.into(),
            action,
        });
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.state.lock().unwrap().exchanges.clone()
    }

    /// Asserts that all traffic so far conforms to GitHub's OpenAPI description.
    #[track_caller]
    pub fn assert_conforms(&self) {
        let s = self.state.lock().unwrap();
        assert!(
            s.violations.is_empty(),
            "traffic that does not conform to GitHub's OpenAPI:\n{}",
            s.violations.join("\n")
        );
        assert!(s.exchanges.iter().all(|e| e.had_prefix), "a request missed the API prefix {:?}", s.prefix);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn git_env(dir: &Path, args: &[&str], input: Option<&[u8]>, index: &Path) -> String {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_INDEX_FILE", index)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LC_ALL", "C")
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else if bytes[i] == b'+' {
            out.push(b' ');
            i += 1;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Reply {
    status: u16,
    body: Option<Value>,
    headers: Vec<(String, String)>,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply { status, body: Some(body), headers: vec![] }
}

fn error(status: u16, message: &str, doc: &str) -> Reply {
    reply(
        status,
        json!({"message": message, "documentation_url": format!("https://docs.github.com/rest/{doc}"), "status": status.to_string()}),
    )
}

fn validation(message: &str, doc: &str) -> Reply {
    reply(422, json!({"message": message, "documentation_url": format!("https://docs.github.com/rest/{doc}")}))
}

fn handle(state: &Mutex<State>, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Response {
    let mut s = state.lock().unwrap();
    let raw_path = uri.path().to_owned();
    let had_prefix = raw_path.starts_with(&s.prefix);
    let path: String = raw_path.strip_prefix(&s.prefix).unwrap_or(&raw_path).to_owned();
    let path = path.split('/').map(decode).collect::<Vec<_>>().join("/");
    let query: Vec<(String, String)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    let m = method.as_str().to_lowercase();
    let request: Option<Value> = if body.is_empty() { None } else { serde_json::from_slice(body).ok() };
    if !body.is_empty() && request.is_none() {
        s.violations.push(format!("{m} {path}: the body is not JSON"));
    }
    let v = schema::check_request(&m, &path, &query, request.as_ref());
    s.violations.extend(v);
    if headers.get("x-github-api-version").is_none() {
        s.violations.push(format!("{m} {path}: no X-GitHub-Api-Version header"));
    }

    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("token ")))
        .unwrap_or("")
        .to_owned();

    let reply = route(&mut s, &m, &path, &query, request.as_ref(), &token);

    let v = schema::check_response(&m, &path, reply.status, reply.body.as_ref());
    s.violations.extend(v);
    s.remaining = s.remaining.saturating_sub(1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut out_headers: Vec<(String, String)> = vec![
        ("content-type".into(), "application/json; charset=utf-8".into()),
        ("x-github-media-type".into(), "github.v3; format=json".into()),
        ("x-github-request-id".into(), format!("0000:{:05X}:{:07X}", s.exchanges.len(), now % 0xFFFFFFF)),
        ("x-ratelimit-limit".into(), "5000".into()),
        ("x-ratelimit-remaining".into(), s.remaining.to_string()),
        ("x-ratelimit-used".into(), (5000 - s.remaining).to_string()),
        ("x-ratelimit-reset".into(), (now + 3600).to_string()),
        ("x-ratelimit-resource".into(), "core".into()),
    ];
    if token.starts_with("ghp_") || token.starts_with("gho_") {
        out_headers.push(("x-oauth-scopes".into(), s.scopes.clone()));
        out_headers.push(("x-accepted-oauth-scopes".into(), "repo".into()));
    }
    for (k, v) in &reply.headers {
        out_headers.retain(|(ok, _)| ok != k);
        out_headers.push((k.clone(), v.clone()));
    }
    s.exchanges.push(Exchange {
        method: m.to_uppercase(),
        path: path.clone(),
        query,
        request,
        status: reply.status,
        response: reply.body.clone(),
        headers: out_headers.clone(),
        had_prefix,
    });
    let mut response = match &reply.body {
        Some(b) => (StatusCode::from_u16(reply.status).unwrap(), b.to_string()).into_response(),
        None => StatusCode::from_u16(reply.status).unwrap().into_response(),
    };
    for (k, v) in out_headers {
        if reply.body.is_none() && k == "content-type" {
            continue;
        }
        response
            .headers_mut()
            .insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(&v).unwrap());
    }
    response
}

fn route(s: &mut State, m: &str, path: &str, query: &[(String, String)], body: Option<&Value>, token: &str) -> Reply {
    // Injected answers come first: GitHub's rate limiter runs before the endpoint does.
    let upper = m.to_uppercase();
    if let Some(i) = s.injections.iter().position(|i| i.method == upper && path.contains(&i.path_contains)) {
        let inj = s.injections.remove(i).unwrap();
        match inj.action {
            Action::Answer { status, headers, body } => return Reply { status, body: Some(body), headers },
            Action::MoveBranch { branch, to } => {
                git(&s.bare, &["update-ref", &format!("refs/heads/{branch}"), &to], None).unwrap();
            }
        }
    }
    if token.is_empty() || token == "ghp_expired" {
        return reply(
            401,
            json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
        );
    }
    let repo_prefix = format!("/repos/{OWNER}/{REPO}");
    if path == "/user" {
        if token.starts_with("ghs_") {
            return error(403, "Resource not accessible by integration", "users/users#get-the-authenticated-user");
        }
        let mut user = schema::example("get", "/user", 200);
        user["login"] = json!("octo-bot");
        return reply(200, user);
    }
    let Some(rest) = path.strip_prefix(&repo_prefix) else {
        return error(404, "Not Found", "repos/repos#get-a-repository");
    };
    let readonly = token == "ghs_readonly";
    if readonly && m != "get" {
        return error(403, "Resource not accessible by integration", "git/trees#create-a-tree");
    }
    let base = s.base_url.clone();
    let bare = s.bare.clone();
    let html = format!("{}/{OWNER}/{REPO}", base.trim_end_matches("/api/v3"));
    let api = format!("{base}{repo_prefix}");
    let rev = |r: &str| git(&bare, &["rev-parse", "--verify", "-q", r], None).ok();
    let git_ref_json = |name: &str, sha: &str| json!({"ref": name, "node_id": "REF_kwDOAAAB", "url": format!("{api}/git/{name}"), "object": {"type": "commit", "sha": sha, "url": format!("{api}/git/commits/{sha}")}});
    let commit_json = |sha: &str| -> Value {
        let fmt = |f: &str| git(&bare, &["show", "-s", &format!("--format={f}"), sha], None).unwrap();
        let parents: Vec<Value> = fmt("%P")
            .split_whitespace()
            .map(|p| json!({"sha": p, "url": format!("{api}/git/commits/{p}"), "html_url": format!("{html}/commit/{p}")}))
            .collect();
        let tree = fmt("%T");
        let verified = fmt("%ae") == "41898282+github-actions[bot]@users.noreply.github.com";
        json!({
            "sha": sha, "node_id": "C_kwDOAAAB", "url": format!("{api}/git/commits/{sha}"), "html_url": format!("{html}/commit/{sha}"),
            "author": {"name": fmt("%an"), "email": fmt("%ae"), "date": fmt("%aI")},
            "committer": {"name": fmt("%cn"), "email": fmt("%ce"), "date": fmt("%cI")},
            "tree": {"sha": tree, "url": format!("{api}/git/trees/{tree}")},
            "message": fmt("%B"),
            "parents": parents,
            "verification": if verified {
                json!({"verified": true, "reason": "valid", "signature": "-----BEGIN PGP SIGNATURE-----\n(stand-in)\n-----END PGP SIGNATURE-----", "payload": format!("tree {tree}\n"), "verified_at": fmt("%cI")})
            } else {
                json!({"verified": false, "reason": "unsigned", "signature": null, "payload": null, "verified_at": null})
            }
        })
    };
    let tree_json = |sha: &str| -> Value {
        let items: Vec<Value> = git(&bare, &["ls-tree", "-l", sha], None)
            .unwrap()
            .lines()
            .map(|l| {
                let (meta, path) = l.split_once('\t').unwrap();
                let f: Vec<&str> = meta.split_whitespace().collect();
                let mut e = json!({"path": path, "mode": f[0], "type": f[1], "sha": f[2], "url": format!("{api}/git/{}s/{}", f[1], f[2])});
                if let Ok(size) = f[3].parse::<u64>() {
                    e["size"] = json!(size);
                }
                e
            })
            .collect();
        json!({"sha": sha, "url": format!("{api}/git/trees/{sha}"), "tree": items, "truncated": false})
    };

    match (m, rest) {
        ("get", "") => {
            let mut r = schema::example("get", "/repos/{owner}/{repo}", 200);
            r["name"] = json!(REPO);
            r["full_name"] = json!(format!("{OWNER}/{REPO}"));
            r["default_branch"] = json!("main");
            r["private"] = json!(true);
            // GitHub's example predates `language` being required, and shows a fork; this
            // repository is not one.
            r["language"] = json!("YAML");
            for k in ["source", "parent", "template_repository"] {
                r.as_object_mut().unwrap().remove(k);
            }
            r["fork"] = json!(false);
            if token.starts_with("ghs_") {
                // Installation tokens are not told their permissions here.
                r.as_object_mut().unwrap().remove("permissions");
            } else {
                r["permissions"] =
                    json!({"admin": false, "maintain": false, "push": true, "triage": true, "pull": true});
            }
            reply(200, r)
        }
        ("get", r) if r.starts_with("/git/commits/") => {
            let sha = &r["/git/commits/".len()..];
            match rev(&format!("{sha}^{{commit}}")) {
                Some(full) => reply(200, commit_json(&full)),
                None => error(404, "Not Found", "git/commits#get-a-commit-object"),
            }
        }
        ("get", r) if r.starts_with("/git/trees/") => {
            let sha = &r["/git/trees/".len()..];
            match rev(&format!("{sha}^{{tree}}")) {
                Some(full) => reply(200, tree_json(&full)),
                None => error(404, "Not Found", "git/trees#get-a-tree"),
            }
        }
        ("post", "/git/blobs") => {
            use base64::Engine as _;
            let b = body.unwrap();
            let content = b["content"].as_str().unwrap_or("");
            let bytes = if b["encoding"] == "base64" {
                base64::engine::general_purpose::STANDARD.decode(content).unwrap()
            } else {
                content.as_bytes().to_vec()
            };
            let sha = git(&bare, &["hash-object", "-w", "--stdin"], Some(&bytes)).unwrap();
            reply(201, json!({"url": format!("{api}/git/blobs/{sha}"), "sha": sha}))
        }
        ("post", "/git/trees") => {
            create_tree(&bare, body.unwrap()).map(|sha| reply(201, tree_json(&sha))).unwrap_or_else(|e| e)
        }
        ("post", "/git/commits") => {
            let b = body.unwrap();
            let tree = b["tree"].as_str().unwrap_or("");
            if rev(&format!("{tree}^{{tree}}")).is_none() {
                return validation("Tree SHA does not exist", "git/commits#create-a-commit");
            }
            let mut args = vec![
                "commit-tree".to_owned(),
                tree.to_owned(),
                "-m".into(),
                b["message"].as_str().unwrap_or("").to_owned(),
            ];
            for p in b["parents"].as_array().cloned().unwrap_or_default() {
                let p = p.as_str().unwrap_or("").to_owned();
                if rev(&format!("{p}^{{commit}}")).is_none() {
                    return validation(
                        "Parent SHA does not exist or is not a commit object",
                        "git/commits#create-a-commit",
                    );
                }
                args.extend(["-p".into(), p]);
            }
            // Without author and committer, GitHub makes the commit as the token's identity
            // and signs it; with them, it is unsigned.
            let (an, ae, cn, ce) = if b.get("author").is_none() && b.get("committer").is_none() {
                (
                    "github-actions[bot]",
                    "41898282+github-actions[bot]@users.noreply.github.com",
                    "GitHub",
                    "noreply@github.com",
                )
            } else {
                let a = &b["author"];
                let c = if b.get("committer").is_some() { &b["committer"] } else { a };
                (
                    a["name"].as_str().unwrap_or("?"),
                    a["email"].as_str().unwrap_or("?"),
                    c["name"].as_str().unwrap_or("?"),
                    c["email"].as_str().unwrap_or("?"),
                )
            };
            let mut cmd = Command::new("git");
            cmd.current_dir(&bare)
                .args(&args)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_AUTHOR_NAME", an)
                .env("GIT_AUTHOR_EMAIL", ae)
                .env("GIT_COMMITTER_NAME", cn)
                .env("GIT_COMMITTER_EMAIL", ce);
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let sha = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            reply(201, commit_json(&sha))
        }
        ("get", r) if r.starts_with("/git/ref/") => {
            let name = format!("refs/{}", &r["/git/ref/".len()..]);
            match rev(&name) {
                Some(sha) => reply(200, git_ref_json(&name, &sha)),
                None => error(404, "Not Found", "git/refs#get-a-reference"),
            }
        }
        ("post", "/git/refs") => {
            let b = body.unwrap();
            let name = b["ref"].as_str().unwrap_or("").to_owned();
            let sha = b["sha"].as_str().unwrap_or("").to_owned();
            if !name.starts_with("refs/") || name.matches('/').count() < 2 {
                return validation(
                    "Reference name must start with 'refs/' and have at least two slashes.",
                    "git/refs#create-a-reference",
                );
            }
            if rev(&name).is_some() {
                return validation("Reference already exists", "git/refs#create-a-reference");
            }
            if rev(&format!("{sha}^{{commit}}")).is_none() {
                return validation("Object does not exist", "git/refs#create-a-reference");
            }
            git(&bare, &["update-ref", &name, &sha], None).unwrap();
            reply(201, git_ref_json(&name, &sha))
        }
        ("patch", r) if r.starts_with("/git/refs/") => {
            let name = format!("refs/{}", &r["/git/refs/".len()..]);
            let b = body.unwrap();
            let sha = b["sha"].as_str().unwrap_or("").to_owned();
            let force = b["force"].as_bool().unwrap_or(false);
            let Some(current) = rev(&name) else {
                return validation("Reference does not exist", "git/refs#update-a-reference");
            };
            if rev(&format!("{sha}^{{commit}}")).is_none() {
                return validation("Object does not exist", "git/refs#update-a-reference");
            }
            if s.protected && name == "refs/heads/main" {
                return validation("Reference update failed", "git/refs#update-a-reference");
            }
            if !force && git(&bare, &["merge-base", "--is-ancestor", &current, &sha], None).is_err() {
                return validation("Update is not a fast forward", "git/refs#update-a-reference");
            }
            git(&bare, &["update-ref", &name, &sha], None).unwrap();
            reply(200, git_ref_json(&name, &sha))
        }
        ("delete", r) if r.starts_with("/git/refs/") => {
            let name = format!("refs/{}", &r["/git/refs/".len()..]);
            if rev(&name).is_none() {
                return validation("Reference does not exist", "git/refs#delete-a-reference");
            }
            git(&bare, &["update-ref", "-d", &name], None).unwrap();
            Reply { status: 204, body: None, headers: vec![] }
        }
        ("get", r) if r.starts_with("/branches/") => {
            let name = &r["/branches/".len()..];
            let Some(sha) = rev(&format!("refs/heads/{name}")) else {
                return error(404, "Branch not found", "branches/branches#get-a-branch");
            };
            let mut b = schema::example("get", "/repos/{owner}/{repo}/branches/{branch}", 200);
            b["name"] = json!(name);
            b["commit"]["sha"] = json!(sha);
            b["protected"] = json!(s.protected);
            reply(200, b)
        }
        ("get", r) if r.starts_with("/rules/branches/") => reply(200, s.rules.clone()),
        ("get", "/actions/permissions/workflow") => {
            if token.starts_with("ghs_") {
                return error(
                    403,
                    "Resource not accessible by integration",
                    "actions/permissions#get-default-workflow-permissions-for-a-repository",
                );
            }
            reply(
                200,
                json!({"default_workflow_permissions": "read", "can_approve_pull_request_reviews": s.actions_can_create_prs}),
            )
        }
        ("get", "/pulls") => {
            let get = |k: &str| query.iter().find(|(qk, _)| qk == k).map(|(_, v)| v.clone());
            let state = get("state").unwrap_or_else(|| "open".into());
            let head = get("head");
            let list: Vec<Value> = s
                .pulls
                .iter()
                .filter(|p| state == "all" || p.state == state)
                .filter(|p| head.as_deref().is_none_or(|h| h == format!("{OWNER}:{}", p.head)))
                .map(|p| pull_json(&api, &html, p, &bare, false))
                .collect();
            reply(200, json!(list))
        }
        ("post", "/pulls") => {
            let b = body.unwrap();
            let head = b["head"].as_str().unwrap_or("").to_owned();
            let head = head.strip_prefix(&format!("{OWNER}:")).unwrap_or(&head).to_owned();
            let base_branch = b["base"].as_str().unwrap_or("").to_owned();
            if token.starts_with("ghs_") && !s.actions_can_create_prs {
                return error(
                    403,
                    "GitHub Actions is not permitted to create or approve pull requests.",
                    "pulls/pulls#create-a-pull-request",
                );
            }
            if rev(&format!("refs/heads/{head}")).is_none() || rev(&format!("refs/heads/{base_branch}")).is_none() {
                return reply(
                    422,
                    json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}], "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"}),
                );
            }
            if s.pulls.iter().any(|p| p.state == "open" && p.head == head && p.base == base_branch) {
                return reply(
                    422,
                    json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom", "message": format!("A pull request already exists for {OWNER}:{head}.")}], "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"}),
                );
            }
            let number = s.next_id;
            s.next_id += 1;
            let p = Pull {
                number,
                head,
                base: base_branch,
                title: b["title"].as_str().unwrap_or("").into(),
                body: b["body"].as_str().unwrap_or("").into(),
                state: "open".into(),
                labels: vec![],
            };
            s.pulls.push(p.clone());
            reply(201, pull_json(&api, &html, &p, &bare, true))
        }
        ("patch", r) if r.starts_with("/pulls/") => {
            let n: u64 = r["/pulls/".len()..].parse().unwrap_or(0);
            let b = body.unwrap().clone();
            let Some(p) = s.pulls.iter_mut().find(|p| p.number == n) else {
                return error(404, "Not Found", "pulls/pulls#update-a-pull-request");
            };
            if let Some(t) = b["title"].as_str() {
                p.title = t.into();
            }
            if let Some(t) = b["body"].as_str() {
                p.body = t.into();
            }
            if let Some(t) = b["base"].as_str() {
                p.base = t.into();
            }
            if let Some(t) = b["state"].as_str() {
                p.state = t.into();
            }
            let p = p.clone();
            reply(200, pull_json(&api, &html, &p, &bare, true))
        }
        ("post", r) if r.starts_with("/issues/") && r.ends_with("/labels") => {
            let n: u64 = r["/issues/".len()..r.len() - "/labels".len()].parse().unwrap_or(0);
            let Some(p) = s.pulls.iter_mut().find(|p| p.number == n) else {
                return error(404, "Not Found", "issues/labels#add-labels-to-an-issue");
            };
            for l in body.unwrap()["labels"].as_array().cloned().unwrap_or_default() {
                let l = l.as_str().unwrap_or("").to_owned();
                if !p.labels.contains(&l) {
                    p.labels.push(l);
                }
            }
            let template =
                schema::example("post", "/repos/{owner}/{repo}/issues/{issue_number}/labels", 200)[0].clone();
            let labels: Vec<Value> = p
                .labels
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let mut t = template.clone();
                    t["id"] = json!(1000 + i);
                    t["name"] = json!(l);
                    t["url"] = json!(format!("{api}/labels/{l}"));
                    t
                })
                .collect();
            reply(200, json!(labels))
        }
        ("post", r) if r.starts_with("/actions/workflows/") && r.ends_with("/dispatches") => {
            let b = body.unwrap().clone();
            s.dispatches.push(b.clone());
            let id = 30433642 + s.dispatches.len() as u64;
            // The title the pull workflow's `run-name` gives its runs (scripts/gen-action.py).
            let title = format!(
                "defsync pull {} {}",
                b["inputs"]["projectId"].as_str().unwrap_or_default(),
                b["inputs"]["commitId"].as_str().unwrap_or_default()
            );
            s.runs.insert(id, json!({"status": "queued", "conclusion": null, "display_title": title}));
            if s.dispatch_run_details && b["return_run_details"] == true {
                reply(
                    200,
                    json!({"workflow_run_id": id, "run_url": format!("{api}/actions/runs/{id}"), "html_url": format!("{html}/actions/runs/{id}")}),
                )
            } else {
                Reply { status: 204, body: None, headers: vec![] }
            }
        }
        ("get", r) if r.starts_with("/actions/runs/") => {
            let found = r["/actions/runs/".len()..].parse::<u64>().ok().and_then(|id| Some((id, s.runs.get(&id)?)));
            let Some((id, run)) = found else {
                return error(404, "Not Found", "actions/workflow-runs#get-a-workflow-run");
            };
            let mut out = schema::example("get", "/repos/{owner}/{repo}/actions/runs/{run_id}", 200);
            out["id"] = json!(id);
            out["event"] = json!("workflow_dispatch");
            out["url"] = json!(format!("{api}/actions/runs/{id}"));
            out["html_url"] = json!(format!("{html}/actions/runs/{id}"));
            for field in ["status", "conclusion", "display_title"] {
                out[field] = run[field].clone();
            }
            reply(200, out)
        }
        _ => error(404, "Not Found", "repos"),
    }
}

/// GitHub's create-tree: `base_tree` plus entries; `content` writes a blob, `"sha": null`
/// deletes, `sha` places an existing object. Done on a temporary index.
fn create_tree(bare: &Path, b: &Value) -> Result<String, Reply> {
    let doc = "git/trees#create-a-tree";
    let index = bare.join(format!("standin-index-{}", rand_suffix()));
    let result = (|| {
        match b["base_tree"].as_str() {
            Some(base) => {
                if git(bare, &["rev-parse", "--verify", "-q", &format!("{base}^{{tree}}")], None).is_err() {
                    return Err(validation("base_tree is not a valid tree oid", doc));
                }
                git_env(bare, &["read-tree", base], None, &index);
            }
            None => {
                git_env(bare, &["read-tree", "--empty"], None, &index);
            }
        }
        let entries = b["tree"].as_array().cloned().unwrap_or_default();
        // Blobs for inline content, written in one go.
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let has_content = e.get("content").is_some();
            let has_sha = e.get("sha").is_some();
            if has_content && has_sha {
                return Err(validation("Must supply either tree.sha or tree.content, not both", doc));
            }
            if !has_content && !has_sha {
                return Err(validation("Must supply either tree.sha or tree.content", doc));
            }
            if let Some(c) = e["content"].as_str() {
                let f = dir.path().join(i.to_string());
                std::fs::write(&f, c).unwrap();
                files.push(f.to_str().unwrap().to_owned());
            }
        }
        let mut oids = if files.is_empty() {
            Vec::new()
        } else {
            let list = files.join("\n") + "\n";
            git(bare, &["hash-object", "-w", "--stdin-paths"], Some(list.as_bytes()))
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
        .into_iter();
        let mut info = Vec::new();
        for e in &entries {
            let path = e["path"].as_str().unwrap_or("");
            let mode = e["mode"].as_str().unwrap_or("100644");
            if e.get("content").is_some() {
                info.extend_from_slice(format!("{mode} {}\t{path}\0", oids.next().unwrap()).as_bytes());
            } else if e["sha"].is_null() {
                info.extend_from_slice(format!("0 {}\t{path}\0", "0".repeat(40)).as_bytes());
            } else {
                info.extend_from_slice(format!("{mode} {}\t{path}\0", e["sha"].as_str().unwrap()).as_bytes());
            }
        }
        git_env(bare, &["update-index", "-z", "--index-info"], Some(&info), &index);
        Ok(git_env(bare, &["write-tree"], None, &index))
    })();
    let _ = std::fs::remove_file(&index);
    result
}

fn pull_json(api: &str, html: &str, p: &Pull, bare: &Path, full: bool) -> Value {
    let template = if full {
        schema::example("post", "/repos/{owner}/{repo}/pulls", 201)
    } else {
        schema::example("get", "/repos/{owner}/{repo}/pulls", 200)[0].clone()
    };
    let mut v = template;
    let sha = |b: &str| {
        git(bare, &["rev-parse", "--verify", "-q", &format!("refs/heads/{b}")], None).unwrap_or_else(|_| "0".repeat(40))
    };
    v["number"] = json!(p.number);
    v["id"] = json!(9000 + p.number);
    v["url"] = json!(format!("{api}/pulls/{}", p.number));
    v["html_url"] = json!(format!("{html}/pull/{}", p.number));
    v["state"] = json!(p.state);
    v["title"] = json!(p.title);
    v["body"] = json!(p.body);
    v["head"]["ref"] = json!(p.head);
    v["head"]["label"] = json!(format!("{OWNER}:{}", p.head));
    v["head"]["sha"] = json!(sha(&p.head));
    v["base"]["ref"] = json!(p.base);
    v["base"]["label"] = json!(format!("{OWNER}:{}", p.base));
    v["base"]["sha"] = json!(sha(&p.base));
    v["merged_at"] = Value::Null;
    // The example's requested team predates the schema's required `type`; defsync requests none.
    v["requested_teams"] = json!([]);
    if full {
        v["merged"] = json!(false);
    }
    v["closed_at"] = if p.state == "closed" { v["created_at"].clone() } else { Value::Null };
    let label = v["labels"][0].clone();
    v["labels"] = json!(
        p.labels
            .iter()
            .map(|l| {
                let mut t = label.clone();
                t["name"] = json!(l);
                t
            })
            .collect::<Vec<_>>()
    );
    v
}
