//! Tests: the web dashboard of a real `defsync serve` on 127.0.0.1, over HTTP as a browser
//! would use it (cookies, forms, redirects), without a browser: login, CSRF, scopes, escaping,
//! validation at the line, and a head that moved while a form was open. The browser itself is
//! in `tests/browser/` (see `browser` below).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use crate::github::standin::{Action, StandIn};
use crate::server::ServerProcess;
use crate::support::{BIN, Env};

const KEY: &str = "dashboard-full-key";
const P: &str = "p1";

/// A browser-like HTTP client: keeps cookies, follows no redirect (tests look at each step).
struct Web {
    http: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

/// One answer, read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

impl Web {
    fn new(base: &str) -> Web {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Web { http, base: base.to_owned(), cookies: BTreeMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn keep(&mut self, r: reqwest::Response) -> Answer {
        let status = r.status();
        let headers = r.headers().clone();
        for c in headers.get_all(SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        Answer { status, headers, body: r.text().await.unwrap() }
    }

    async fn get(&mut self, path: &str) -> Answer {
        let r = self.http.get(format!("{}{path}", self.base)).header("cookie", self.cookie_header()).send().await;
        self.keep(r.unwrap()).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await;
        self.keep(r.unwrap()).await
    }

    async fn login(&mut self, key: &str) -> Answer {
        let page = self.get("/login").await;
        let csrf = field(&page.body, "csrf");
        self.post("/login", &[("csrf", &csrf), ("key", key)]).await
    }
}

/// The value of the first `<input name=NAME>` (maud writes `name` before `value`).
fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no field {name} in:\n{html}")) + marker.len();
    let end = html[start..].find('"').unwrap();
    html[start..start + end].replace("&amp;", "&").replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">")
}

/// The text of the `<textarea name=NAME>`.
fn textarea(html: &str) -> String {
    let start = html.find("<textarea").expect("a text area");
    let start = start + html[start..].find('>').unwrap() + 1;
    let end = start + html[start..].find("</textarea>").unwrap();
    html[start..end].replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&")
}

/// A server with project `p1` and its client for the API.
struct Setup {
    server: ServerProcess,
    store: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    let server = ServerProcess::start(&store, KEY);
    let s = Setup { server, store, _dir: dir };
    let (status, _) = api(&s, reqwest::Method::PUT, &format!("/v1/projects/{P}"), json!({"name": "Project one"})).await;
    assert!(status.is_success());
    s
}

async fn api(s: &Setup, method: reqwest::Method, path: &str, body: Value) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .request(method, format!("{}{path}", s.server.url()))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn head_seq(s: &Setup) -> u64 {
    let (_, p) = api(s, reqwest::Method::GET, &format!("/v1/projects/{P}"), Value::Null).await;
    p["head"]["seq"].as_u64().unwrap_or(0)
}

/// An API commit of one definition on the head.
async fn api_put(s: &Setup, kind: &str, name: &str, spec: Value) -> u64 {
    let (_, p) = api(s, reqwest::Method::GET, &format!("/v1/projects/{P}"), Value::Null).await;
    let body = json!({
        "parent": p["head"]["id"], "message": "api edit", "origin": {"type": "api"},
        "changes": [{"op": "put", "kind": kind, "name": name, "spec": spec}],
    });
    let (status, c) = api(s, reqwest::Method::POST, &format!("/v1/projects/{P}/commits"), body).await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    c["seq"].as_u64().unwrap()
}

/// Creates a stored key with `args` and returns its secret.
fn create_key(store: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "keys", "create"]).args(args).env("DEFSYNC_STORE", store);
    for (k, _) in std::env::vars() {
        if k.starts_with("DEFSYNC_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("DEFSYNC_STORE", store);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn definition_path(kind: &str, name: &str) -> String {
    let enc = |v: &str| v.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    format!("/projects/{P}/definition?kind={}&name={}", enc(kind), enc(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_takes_a_known_key_through_the_forms_token_and_sets_a_strict_cookie() {
    let s = setup().await;
    let mut web = Web::new(&s.server.url());

    let r = web.get("/").await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/login"));
    // An API client (a bearer key) is never redirected: it gets the API's 404, as before the
    // dashboard (conformance rule robustness.no_redirect).
    let r = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = r.get(format!("{}/", s.server.url())).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "not_found");
    let r = web.get(&format!("/projects/{P}")).await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/login"), "no page without a session");

    // A login posted from elsewhere has no login cookie: refused, even with the right key.
    let r = Web::new(&s.server.url()).post("/login", &[("csrf", "x"), ("key", KEY)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!r.headers.get_all(SET_COOKIE).iter().any(|c| c.to_str().unwrap().starts_with("defsync_session=")));

    let r = web.login("not-a-key").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("not known to this server"), "{}", r.body);

    let r = web.login(KEY).await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/"));
    let cookie = r
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("defsync_session="));
    let cookie = cookie.expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains("Secure"), "on loopback the cookie must work over plain http: {cookie}");
    assert!(!cookie.contains(KEY), "the key is never in the cookie: {cookie}");
    let id = &cookie["defsync_session=".len()..cookie.find(';').unwrap()];
    assert_eq!(id.len(), 43, "256 random bits, base64url");

    let r = web.get("/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Project one") && r.body.contains("<html lang=\"en\">"), "{}", r.body);
    let csp = r.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(!r.body.contains("<script>"), "no inline script");

    // Logging out needs the form's token, then ends the session on the server.
    let csrf = field(&r.body, "csrf");
    assert_eq!(web.post("/logout", &[("csrf", "wrong")]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(web.post("/logout", &[("csrf", &csrf)]).await.location(), "/login");
    let mut replay = Web::new(&s.server.url());
    replay.cookies.insert("defsync_session".into(), id.to_owned());
    assert_eq!(replay.get("/").await.location(), "/login", "the old session ID is dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_without_the_sessions_csrf_token_changes_nothing() {
    let s = setup().await;
    api_put(&s, "workflow", "a", json!({"v": 1})).await;
    let mut web = Web::new(&s.server.url());
    web.login(KEY).await;
    let page = web.get(&definition_path("workflow", "a")).await;
    let parent = field(&page.body, "parent");
    let nonce = field(&page.body, "nonce");
    let text = "kind: workflow\nname: a\nspec:\n  v: 2\n";
    for csrf in ["", "forged", &field(&Web::new(&s.server.url()).get("/login").await.body, "csrf")] {
        let r = web
            .post(
                &format!("/projects/{P}/save"),
                &[
                    ("csrf", csrf),
                    ("parent", &parent),
                    ("orig_kind", "workflow"),
                    ("orig_name", "a"),
                    ("text", text),
                    ("nonce", &nonce),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "csrf {csrf:?}: {}", r.body);
        assert!(r.body.contains("security token"), "{}", r.body);
    }
    let r = web
        .post(
            &format!("/projects/{P}/delete"),
            &[("csrf", "forged"), ("parent", &parent), ("kind", "workflow"), ("name", "a")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(head_seq(&s).await, 1, "nothing was committed");

    // With the token, the same form saves.
    let csrf = field(&page.body, "csrf");
    let r = web
        .post(
            &format!("/projects/{P}/save"),
            &[
                ("csrf", &csrf),
                ("parent", &parent),
                ("orig_kind", "workflow"),
                ("orig_name", "a"),
                ("text", text),
                ("nonce", &nonce),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(head_seq(&s).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_key_may_look_but_not_edit_and_a_revoked_key_ends_its_session() {
    let s = setup().await;
    api_put(&s, "workflow", "a", json!({"v": 1})).await;
    let reader = create_key(&s.store, &["--name", "viewer", "--scope", "read"]);
    let mut web = Web::new(&s.server.url());
    assert_eq!(web.login(&reader).await.status, StatusCode::SEE_OTHER);

    let page = web.get(&definition_path("workflow", "a")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("viewer") && page.body.contains("read-only"), "{}", page.body);
    assert!(!page.body.contains("<textarea"), "no edit form for a read key");
    assert!(page.body.contains("Editing needs a key with the write scope"));

    // A forged save with the session's own token is still refused: the key may not write.
    let csrf = field(&page.body, "csrf");
    let r = web
        .post(
            &format!("/projects/{P}/save"),
            &[
                ("csrf", &csrf),
                ("parent", ""),
                ("orig_kind", "workflow"),
                ("orig_name", "a"),
                ("text", "kind: workflow\nname: a\nspec: 2\n"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("read-only"), "{}", r.body);
    assert_eq!(web.get(&format!("/projects/{P}/delete?kind=workflow&name=a")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(head_seq(&s).await, 1);

    // A key limited to other projects does not see this one.
    let other = create_key(&s.store, &["--name", "other", "--scope", "write", "--project", "p2"]);
    let mut web2 = Web::new(&s.server.url());
    web2.login(&other).await;
    assert!(!web2.get("/").await.body.contains("Project one"));
    assert_eq!(web2.get(&format!("/projects/{P}")).await.status, StatusCode::FORBIDDEN);

    let out =
        Command::new(BIN).args(["serve", "keys", "revoke", "viewer"]).env("DEFSYNC_STORE", &s.store).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(web.get(&format!("/projects/{P}")).await.location(), "/login", "the session ends with its key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_specs_with_html_in_them_are_shown_as_text() {
    let s = setup().await;
    let name = "<img src=x onerror=alert(1)> & \"q\"";
    api_put(&s, "workflow", name, json!({"body": "</textarea><script>alert(2)</script>"})).await;
    let mut web = Web::new(&s.server.url());
    web.login(KEY).await;
    for path in [format!("/projects/{P}"), definition_path("workflow", name)] {
        let page = web.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(!page.body.contains("<img"), "{path}: {}", page.body);
        assert!(!page.body.contains("<script>alert"), "{path}");
        assert!(page.body.contains("&lt;img src=x onerror=alert(1)&gt; &amp; &quot;q&quot;"), "{path}: {}", page.body);
    }
    let page = web.get(&definition_path("workflow", name)).await;
    assert!(page.body.contains("&lt;/textarea&gt;&lt;script&gt;alert(2)&lt;/script&gt;"));
    // The text area holds the file exactly as defsync writes it.
    let text = textarea(&page.body);
    let parsed = defsync::yaml::parse(text.as_bytes()).unwrap();
    assert_eq!((parsed.name.as_str(), &parsed.spec), (name, &json!({"body": "</textarea><script>alert(2)</script>"})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_on_a_moved_head_keeps_the_users_text_and_says_so() {
    let s = setup().await;
    api_put(&s, "workflow", "a", json!({"v": 1})).await;
    let mut web = Web::new(&s.server.url());
    web.login(KEY).await;
    let page = web.get(&definition_path("workflow", "a")).await;
    let (csrf, parent, nonce) = (field(&page.body, "csrf"), field(&page.body, "parent"), field(&page.body, "nonce"));

    // Someone else commits while the form is open.
    api_put(&s, "workflow", "a", json!({"v": "theirs"})).await;

    let mine = "kind: workflow\nname: a\nspec:\n  v: mine\n";
    let form = |parent: String, nonce: String| {
        vec![
            ("csrf", csrf.clone()),
            ("parent", parent),
            ("orig_kind", "workflow".into()),
            ("orig_name", "a".into()),
            ("text", mine.replace('\n', "\r\n")),
            ("nonce", nonce),
        ]
    };
    let pairs = form(parent.clone(), nonce.clone());
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = web.post(&format!("/projects/{P}/save"), &pairs).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.body.contains("the project changed since you opened this page"), "{}", r.body);
    assert_eq!(textarea(&r.body), mine, "the user's text is kept");
    assert!(r.body.contains("theirs"), "the current version is shown beside it");
    assert_eq!(head_seq(&s).await, 2, "nothing saved over the other edit");

    // The form now names the new head: saving again is a deliberate overwrite.
    let new_parent = field(&r.body, "parent");
    assert_ne!(new_parent, parent);
    let pairs = form(new_parent, field(&r.body, "nonce"));
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = web.post(&format!("/projects/{P}/save"), &pairs).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(r.location().contains("saved=3"), "{}", r.location());
    let page = web.get(r.location()).await;
    assert!(page.body.contains("Saved as dashboard commit seq 3"));
    assert_eq!(textarea(&page.body), mine, "stored with LF line breaks, rendered as defsync writes files");
    let history = web.get(&format!("/projects/{P}")).await.body;
    assert!(history.contains("seq 3") && history.contains("Edit workflow/a in the dashboard"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_yaml_is_refused_at_its_line_as_the_api_would() {
    let s = setup().await;
    let mut web = Web::new(&s.server.url());
    web.login(KEY).await;
    let page = web.get(&format!("/projects/{P}/definition")).await;
    assert!(page.body.contains("New definition"));
    let (csrf, nonce) = (field(&page.body, "csrf"), field(&page.body, "nonce"));
    let save = |text: &'static str| {
        [("csrf", csrf.clone()), ("parent", String::new()), ("text", text.to_owned()), ("nonce", nonce.clone())]
    };
    // A duplicate key on line 5: YAML allows it, the contract does not.
    let bad = "kind: workflow\nname: b\nspec:\n  x: 1\n  x: 2\n";
    let pairs = save(bad);
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = web.post(&format!("/projects/{P}/save"), &pairs).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.contains("Line 5"), "{}", r.body);
    assert!(r.body.contains("data-line=\"5\""), "the script can put the cursor on it");
    assert_eq!(textarea(&r.body), bad);
    // A spec the contract refuses (an integer beyond 2^53) is refused with the API's words.
    let pairs = save("kind: workflow\nname: b\nspec: 9007199254740993\n");
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = web.post(&format!("/projects/{P}/save"), &pairs).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(head_seq(&s).await, 0);
}

// ---------------------------------------------------------------------------------------------
// In a real browser
// ---------------------------------------------------------------------------------------------

const TOKEN: &str = "ghp_dashboarddispatch";
const WEBHOOK_SECRET: &str = "dashboard-webhook-secret";
/// A name with markup and script in it: the pages must show it as text.
const HTML_NAME: &str = "<b>bold</b> <script>window.__defsync_xss = 1; alert(1)</script>";

/// The Python with Playwright and the Chromium that drive the browser test, or why they are
/// missing. Nothing is downloaded here: `.ci/browser.sh` installs them.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = PathBuf::from(std::env::var("DEFSYNC_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    if !chromium.is_file() {
        return Err(format!(
            "no Chromium at {} (apt-get install chromium, or set DEFSYNC_CHROMIUM)",
            chromium.display()
        ));
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let candidates: Vec<PathBuf> = match std::env::var("DEFSYNC_BROWSER_PYTHON") {
        Ok(p) => vec![p.into()],
        Err(_) => vec![target.join("browser-venv/bin/python"), "python3".into()],
    };
    for python in &candidates {
        let ok =
            Command::new(python).args(["-c", "import playwright.sync_api"]).output().is_ok_and(|o| o.status.success());
        if ok {
            return Ok((python.clone(), chromium));
        }
    }
    Err(format!(
        "no Python with Playwright among {candidates:?} (bash .ci/browser.sh makes target/browser-venv, or set \
         DEFSYNC_BROWSER_PYTHON)"
    ))
}

/// Spec of each side of a conflict from a `--json` report, as a run reports it to the platform.
fn reported_conflicts(report: &Value) -> Vec<defsync::api::ReportedConflict> {
    let spec = |yaml: &Value| yaml.as_str().map(|y| defsync::yaml::parse(y.as_bytes()).unwrap().spec);
    report["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| defsync::api::ReportedConflict {
            kind: c["kind"].as_str().unwrap().into(),
            name: c["name"].as_str().unwrap().into(),
            git: spec(&c["git_yaml"]),
            platform: spec(&c["platform_yaml"]),
        })
        .collect()
}

/// Log in, see a name with HTML as text, see a conflict, edit a definition and watch its pull
/// succeed on a signed webhook, then fail when GitHub has no such workflow: Chromium, driven by
/// `tests/browser/dashboard.py`, against a real `serve` dispatching to the GitHub stand-in.
/// Skips unless Chromium and Playwright are there; `DEFSYNC_REQUIRE_BROWSER=1` (CI) makes that a
/// failure. With `DEFSYNC_SCREENSHOTS=<dir>` it writes the README's screenshots there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_end_to_end() -> Result<(), ScriptFailed> {
    let (python, chromium) = match browser_tools() {
        Ok(tools) => tools,
        Err(why) if std::env::var("DEFSYNC_REQUIRE_BROWSER").is_ok_and(|v| v == "1") => {
            panic!("DEFSYNC_REQUIRE_BROWSER=1, but the browser test cannot run: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED dashboard::browser_end_to_end: {why}; set DEFSYNC_REQUIRE_BROWSER=1 to fail instead");
            return Ok(());
        }
    };
    let standin = StandIn::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    let server = ServerProcess::start_with(
        &store,
        KEY,
        &["--dispatch-repository", "octo/defs", "--github-api-url", standin.url.as_str()],
        &[
            ("DEFSYNC_DISPATCH_TOKEN", TOKEN),
            ("DEFSYNC_DISPATCH_POLL_MS", "50"),
            ("DEFSYNC_DISPATCH_BACKOFF_MS", "200"),
            ("DEFSYNC_GITHUB_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    );
    let url = server.url();

    // The Git side, and a conflict found by a real pull and reported to the platform.
    let env = tokio::task::block_in_place(|| Env::on_server(&url, KEY));
    let renamed = reqwest::Client::new()
        .put(format!("{url}/v1/projects/{P}"))
        .bearer_auth(KEY)
        .json(&json!({"name": "Project one"}))
        .send()
        .await
        .unwrap();
    assert!(renamed.status().is_success());
    let env = tokio::task::block_in_place(|| {
        env.dashboard_put("workflow", "notify-on-deal", json!({"channel": "#sales", "retries": 3}));
        env.dashboard_put("connection", "salesforce", json!({"api_version": "61.0"}));
        env.dashboard_put("workflow", HTML_NAME, json!({"note": "</textarea><img src=x onerror=alert(1)>"}));
        env.run("pull", &[]).ok();
        env.dashboard_put("workflow", "notify-on-deal", json!({"channel": "#sales", "retries": 9}));
        let f = "defs/workflow/notify-on-deal.yaml";
        env.write(f, &env.read(f).replace("retries: 3", "retries: 7"));
        env.commit_and_push("git edit");
        env
    });
    let pull = tokio::task::block_in_place(|| env.run("pull", &[]));
    assert_eq!(pull.code, 3, "{pull:#?}");
    let report = defsync::api::RunReport {
        command: "pull".into(),
        outcome: "conflict".into(),
        run_url: Some(format!("{}/octo/defs/actions/runs/1", standin.url)),
        git_commit: Some(env.origin_head()),
        platform_commit: pull.json()["platform_commit"]["id"].as_str().map(str::to_owned),
        conflicts: reported_conflicts(&pull.json()),
        deferred: vec![],
    };
    defsync::store::Store::open(&store).unwrap().add_run_report(P, &report).unwrap();

    let shots = match std::env::var("DEFSYNC_SCREENSHOTS") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => dir.path().join("screenshots"),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.py");
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .env("DEFSYNC_URL", &url)
        .env("DEFSYNC_KEY", KEY)
        .env("DEFSYNC_HTML_NAME", HTML_NAME)
        .env("DEFSYNC_CHROMIUM", &chromium)
        .env("DEFSYNC_SCREENSHOTS", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the browser script");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let stderr = child.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        let mut text = String::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let mut done = false;
    let started = Instant::now();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(180), lines.next_line()).await {
        let message: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON from the script: {line}"));
        if message["done"] == true {
            done = true;
            break;
        }
        let answer = match message["request"].as_str() {
            Some("workflow-missing") => {
                // GitHub's answer for a workflow file that is not on the ref.
                standin.inject(
                    "POST",
                    "/dispatches",
                    Action::Answer {
                        status: 404,
                        headers: vec![],
                        body: json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest/actions/workflows#create-a-workflow-dispatch-event", "status": "404"}),
                    },
                );
                json!({"ok": true})
            }
            Some("run-completed") => {
                run_completed(
                    &standin,
                    &server,
                    &store,
                    message["seq"].as_u64().unwrap(),
                    message["conclusion"].as_str().unwrap(),
                )
                .await
            }
            other => panic!("unknown request {other:?} from the script"),
        };
        stdin.write_all(format!("{answer}\n").as_bytes()).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(600), "the browser test takes too long");
    }
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("the script ends").unwrap();
    let log = log.await.unwrap();
    if !(done && status.success()) {
        // The script's own log, which ends with the check that failed, comes last.
        let logs = server.logs();
        let lines: Vec<&str> = logs.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        return Err(ScriptFailed(format!(
            "the browser script failed ({status}).\nthe last lines of the server's log:\n{tail}\nthe script's log:\n{log}"
        )));
    }
    // GitHub answers 404 for a workflow missing on the ref, which its OpenAPI description does not
    // list; everything else must conform.
    let violations: Vec<String> = standin.state.lock().unwrap().violations.clone();
    let unexpected: Vec<&String> =
        violations.iter().filter(|v| !v.contains("/dispatches: status 404 is not documented")).collect();
    assert!(unexpected.is_empty(), "traffic that does not conform to GitHub's OpenAPI: {unexpected:#?}");
    Ok(())
}

/// The browser script's failure, printed as it is: a test that returns `Err` prints it with
/// `Debug` and without a backtrace, so the check that failed ends the output instead of being
/// buried above a panic's backtrace.
struct ScriptFailed(String);

impl std::fmt::Debug for ScriptFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// GitHub finishing the run that the pull of commit `seq` started: the stand-in's run moves to
/// `completed` with `conclusion`, and a signed `workflow_run` delivery tells `serve`, which reads
/// the run back from the stand-in.
async fn run_completed(standin: &StandIn, server: &ServerProcess, store: &Path, seq: u64, conclusion: &str) -> Value {
    let started = Instant::now();
    let row = loop {
        let outbox = defsync::store::Store::open(store).unwrap().dispatch_outbox(Some(P)).unwrap();
        if let Some(row) = outbox.into_iter().filter(|e| e.seq == seq && e.run_id.is_some()).max_by_key(|e| e.id) {
            break row;
        }
        if started.elapsed() > Duration::from_secs(60) {
            // The test's failure shows the end of the server's log.
            return json!({"error": format!("no run was started for seq {seq} in 60 s")});
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let run_id = row.run_id.unwrap();
    standin.set_run(run_id, "completed", Some(conclusion), &format!("defsync pull {P} {}", row.commit_id));
    let body = json!({
        "action": "completed",
        "workflow_run": {"id": run_id, "name": "defsync pull", "status": "completed", "conclusion": conclusion,
                         "html_url": format!("https://github.com/octo/defs/actions/runs/{run_id}")},
        "repository": {"id": 1, "full_name": "octo/defs", "name": "defs"},
        "sender": {"login": "octo-bot"}
    });
    let bytes = serde_json::to_vec(&body).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/github", server.url()))
        .header("content-type", "application/json")
        .header("x-github-event", "workflow_run")
        .header("x-github-delivery", format!("delivery-{run_id}"))
        .header("x-hub-signature-256", defsync::forge::github::webhook::sign(WEBHOOK_SECRET.as_bytes(), &bytes))
        .body(bytes)
        .send()
        .await
        .unwrap();
    match r.status().as_u16() {
        202 => json!({"ok": true}),
        status => {
            json!({"error": format!("the webhook was answered {status}: {}", r.text().await.unwrap_or_default())})
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_asks_for_confirmation_and_actions_need_a_dispatch() {
    let s = setup().await;
    api_put(&s, "workflow", "a/b c", json!({"v": 1})).await;
    let mut web = Web::new(&s.server.url());
    web.login(KEY).await;
    let page = web.get(&definition_path("workflow", "a/b c")).await;
    assert!(page.body.contains("Delete…"));
    // The link only opens the confirmation page; nothing is deleted yet.
    let confirm = web.get(&format!("/projects/{P}/delete?kind=workflow&name=a%2Fb%20c")).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("Delete workflow/<span class=\"name\">a/b c</span>?"), "{}", confirm.body);
    assert_eq!(head_seq(&s).await, 1);
    let form = [
        ("csrf", field(&confirm.body, "csrf")),
        ("parent", field(&confirm.body, "parent")),
        ("kind", "workflow".to_owned()),
        ("name", "a/b c".to_owned()),
        ("nonce", field(&confirm.body, "nonce")),
    ];
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = web.post(&format!("/projects/{P}/delete"), &pairs).await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/projects/p1?done=deleted-2#history"));
    // A second submit of the same form is the same commit, not an error or a second delete.
    let again = web.post(&format!("/projects/{P}/delete"), &pairs).await;
    assert_eq!(again.location(), r.location());
    let project = web.get(&format!("/projects/{P}?done=deleted-2")).await.body;
    assert!(project.contains("Deleted: dashboard commit seq 2."), "{project}");
    assert!(project.contains("deleted</span> workflow/<span class=\"name\">a/b c</span>"), "{project}");
    assert_eq!(web.get(&definition_path("workflow", "a/b c")).await.status, StatusCode::NOT_FOUND);

    // This server dispatches nothing: no Sync now button, and a forged one is refused.
    assert!(!project.contains("Sync now</button>") && project.contains("does not dispatch the pull workflow"));
    let csrf = field(&project, "csrf");
    let r = web.post(&format!("/projects/{P}/sync-now"), &[("csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.body.contains("--dispatch-repository"), "{}", r.body);
    assert_eq!(
        web.post(&format!("/projects/{P}/dispatches/1/retry"), &[("csrf", "x")]).await.status,
        StatusCode::FORBIDDEN
    );
}
