//! The checker's HTTP side: one client that never follows redirects, every exchange kept as
//! evidence (never the key), scratch projects, and the helpers rules share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::{Value, json};

use super::{Options, SetupError, Verdict};

/// How much of an answer's body goes into the evidence.
const EVIDENCE_BODY_CHARS: usize = 400;

/// Which key a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Key,
    None,
    /// A key the server cannot know.
    Wrong,
}

/// A request to send as it is: method, path, optional body, extra headers.
pub type Request<'a> = (Method, String, Option<Vec<u8>>, Vec<(&'a str, &'a str)>);

/// One answer, kept whole for checks.
#[derive(Debug, Clone)]
pub struct Answer {
    pub method: Method,
    pub path: String,
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    /// The body as JSON; `Null` when it is not JSON.
    pub json: Value,
}

impl Answer {
    /// The `error.code` of an error body.
    pub fn code(&self) -> Option<&str> {
        self.json.pointer("/error/code").and_then(Value::as_str)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn etag(&self) -> Option<&str> {
        self.header("etag")
    }

    /// `METHOD path → status body…`: what a failure shows.
    pub fn summary(&self) -> String {
        format!("{} {} → {} {}", self.method, self.path, self.status, shorten(&self.text))
    }

    /// Expects `status`; otherwise fails the rule with what came instead.
    pub fn expect(&self, status: u16, what: &str) -> Result<&Self, Verdict> {
        if self.status == status {
            Ok(self)
        } else {
            Err(Verdict::Fail(format!("{what}: expected {status}, got {}", self.summary())))
        }
    }

    /// Expects an error answer with `status` and `code`, in the contract's error body.
    pub fn expect_error(&self, status: u16, code: &str, what: &str) -> Result<&Self, Verdict> {
        if self.status != status || self.code() != Some(code) {
            return Err(Verdict::Fail(format!("{what}: expected {status} {code}, got {}", self.summary())));
        }
        check_error_shape(self)?;
        Ok(self)
    }
}

/// The contract's error body: `{"error": {"code": string, "message": string, ...}}`.
pub fn check_error_shape(a: &Answer) -> Result<(), Verdict> {
    let e = a.json.get("error");
    let ok = e.and_then(|e| e.get("code")).is_some_and(Value::is_string)
        && e.and_then(|e| e.get("message")).is_some_and(Value::is_string);
    if ok {
        Ok(())
    } else {
        Err(Verdict::Fail(format!(
            "the error body is not {{\"error\": {{\"code\": string, \"message\": string}}}}: {}",
            a.summary()
        )))
    }
}

fn shorten(text: &str) -> String {
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() <= EVIDENCE_BODY_CHARS {
        one_line
    } else {
        let cut: String = one_line.chars().take(EVIDENCE_BODY_CHARS).collect();
        format!("{cut}… ({} bytes)", text.len())
    }
}

struct Inner {
    base: String,
    key: String,
    http: reqwest::Client,
    prefix: String,
    next_project: AtomicU64,
    /// The current rule's exchanges.
    evidence: Mutex<Vec<String>>,
    /// Every redirect answered to a request that carried a key, over the whole run.
    redirects: Mutex<Vec<String>>,
    max_body: u64,
    parallel: usize,
    /// The project of the 64 MiB commit and its digests, which batch-get's 16 MiB rule reuses
    /// rather than sending another large commit.
    big: Mutex<Option<(String, Vec<String>)>>,
}

/// The run's context, shared by every rule. Cheap to clone into parallel tasks.
#[derive(Clone)]
pub struct Cx(Arc<Inner>);

impl Cx {
    pub fn new(options: &Options) -> Result<Cx, SetupError> {
        if options.api_key.is_empty() {
            return Err(SetupError(
                "no API key: set DEFSYNC_API_KEY to a key the server accepts (the checker writes scratch projects)"
                    .into(),
            ));
        }
        let url = reqwest::Url::parse(&options.platform).map_err(|e| {
            SetupError(format!("--platform {:?} is not a URL ({e}); give the server's base URL", options.platform))
        })?;
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" => {}
            "http" if loopback || options.allow_insecure_http => {}
            "http" => {
                return Err(SetupError(format!(
                    "--platform {url} is plain http to a host other than loopback: the API key would travel in \
                     clear text; use https, or pass --allow-insecure-http"
                )));
            }
            s => return Err(SetupError(format!("--platform {url}: the scheme {s} is not http or https"))),
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(SetupError(format!("--platform {url} must not have a query or fragment")));
        }
        let http = reqwest::Client::builder()
            // The contract: clients never follow redirects, which would hand the key to another host.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.timeout.min(std::time::Duration::from_secs(10)))
            .timeout(options.timeout)
            .user_agent(concat!("defsync-conformance/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SetupError(format!("cannot set up the HTTP client: {e}")))?;
        let prefix = format!("conformance-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        Ok(Cx(Arc::new(Inner {
            base: url.as_str().trim_end_matches('/').to_owned(),
            key: options.api_key.clone(),
            http,
            prefix,
            next_project: AtomicU64::new(1),
            evidence: Mutex::default(),
            redirects: Mutex::default(),
            max_body: options.max_body,
            parallel: options.parallel.max(2),
            big: Mutex::default(),
        })))
    }

    pub fn base_url(&self) -> &str {
        &self.0.base
    }

    pub fn scratch_prefix(&self) -> &str {
        &self.0.prefix
    }

    pub fn max_body(&self) -> u64 {
        self.0.max_body
    }

    pub fn parallel(&self) -> usize {
        self.0.parallel
    }

    pub(super) fn begin_rule(&self) {
        self.0.evidence.lock().expect("evidence").clear();
    }

    pub(super) fn take_evidence(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.evidence.lock().expect("evidence"))
    }

    /// Adds a line to the current rule's evidence.
    pub fn note(&self, line: impl Into<String>) {
        self.0.evidence.lock().expect("evidence").push(line.into());
    }

    pub fn set_big_project(&self, project: String, digests: Vec<String>) {
        *self.0.big.lock().expect("big") = Some((project, digests));
    }

    pub fn big_project(&self) -> Option<(String, Vec<String>)> {
        self.0.big.lock().expect("big").clone()
    }

    pub fn redirects(&self) -> Vec<String> {
        self.0.redirects.lock().expect("redirects").clone()
    }

    /// Checks that the server answers at all, before any rule runs.
    pub(super) async fn reachable(&self) -> Result<(), SetupError> {
        let url = format!("{}/v1/projects/{}-probe", self.0.base, self.0.prefix);
        match self.0.http.get(&url).bearer_auth(&self.0.key).send().await {
            Ok(a) if a.status().as_u16() == 401 => Err(SetupError(format!(
                "the server at {} refused the API key (401): set DEFSYNC_API_KEY to a key it accepts",
                self.0.base
            ))),
            Ok(_) => Ok(()),
            Err(e) => Err(SetupError(format!(
                "cannot reach the server at {}: {}; is it running, and is --platform its base URL?",
                self.0.base,
                error_chain(&e)
            ))),
        }
    }

    /// Sends one request and records it. A transport error fails the rule.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Auth,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, Verdict> {
        let url = format!("{}{path}", self.0.base);
        let mut req = self.0.http.request(method.clone(), &url);
        match auth {
            Auth::Key => req = req.bearer_auth(&self.0.key),
            Auth::Wrong => req = req.bearer_auth(format!("{}-not-a-key", self.0.prefix)),
            Auth::None => {}
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let sent = body.as_ref().map_or(0, Vec::len);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let sent_note = if sent > 4096 { format!(" ({sent} bytes sent)") } else { String::new() };
        let answer = match req.send().await {
            Ok(a) => a,
            Err(e) => {
                let msg = format!("{method} {path}{sent_note} → no answer: {}", error_chain(&e));
                self.note(msg.clone());
                return Err(Verdict::Fail(msg));
            }
        };
        let status = answer.status().as_u16();
        let headers = answer.headers().clone();
        let text = match answer.text().await {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("{method} {path} → {status}, then the body broke off: {}", error_chain(&e));
                self.note(msg.clone());
                return Err(Verdict::Fail(msg));
            }
        };
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        let a = Answer { method, path: path.to_owned(), status, headers, text, json };
        let mut line = format!("{}{sent_note}", a.summary());
        if let Some(tag) = a.etag() {
            line.push_str(&format!(" [ETag {tag}]"));
        }
        // 304 Not Modified is an answer to `If-None-Match`, not a redirect.
        if (300..400).contains(&status) && status != 304 {
            line.push_str(&format!(" [Location {}]", a.header("location").unwrap_or("-")));
            if auth != Auth::None {
                self.0.redirects.lock().expect("redirects").push(line.clone());
            }
        }
        self.note(line);
        Ok(a)
    }

    pub async fn get(&self, path: &str) -> Result<Answer, Verdict> {
        self.send(Method::GET, path, Auth::Key, &[], None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Answer, Verdict> {
        self.send(Method::POST, path, Auth::Key, &[], Some(body.to_string().into_bytes())).await
    }

    /// A fresh scratch project; its id names the run so that an operator can find and remove it.
    pub async fn project(&self) -> Result<String, Verdict> {
        let n = self.0.next_project.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", self.0.prefix);
        let body = json!({"name": format!("defsync conformance scratch project {id} (safe to delete)")});
        let a = self
            .send(Method::PUT, &format!("/v1/projects/{id}"), Auth::Key, &[], Some(body.to_string().into_bytes()))
            .await?;
        if a.status != 201 && a.status != 200 {
            return Err(Verdict::Fail(format!(
                "cannot create a scratch project with PUT /v1/projects/{id} {{\"name\"}}: {}",
                a.summary()
            )));
        }
        Ok(id)
    }

    /// `POST /commits` with a dashboard origin; returns the answer whatever it is.
    pub async fn try_commit(&self, project: &str, parent: Option<&str>, changes: Value) -> Result<Answer, Verdict> {
        let body = json!({"parent": parent, "message": "defsync conformance", "origin": {"type": "dashboard"}, "changes": changes});
        self.post(&format!("/v1/projects/{project}/commits"), &body).await
    }

    /// A commit that must be 201; returns the new commit.
    pub async fn commit(&self, project: &str, parent: Option<&str>, changes: Value) -> Result<Value, Verdict> {
        let a = self.try_commit(project, parent, changes).await?;
        a.expect(201, "a valid commit")?;
        Ok(a.json)
    }

    /// The commit's id, or a failure naming what was answered instead.
    pub fn id(commit: &Value) -> Result<String, Verdict> {
        commit
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| Verdict::Fail(format!("the commit has no string \"id\": {}", shorten(&commit.to_string()))))
    }

    /// `GET` the project; returns (body, ETag).
    pub async fn project_state(&self, project: &str) -> Result<(Value, Option<String>), Verdict> {
        let a = self.get(&format!("/v1/projects/{project}")).await?;
        a.expect(200, "GET the project")?;
        Ok((a.json.clone(), a.etag().map(str::to_owned)))
    }

    /// The head's id, or `None` when the project has no commit.
    pub async fn head(&self, project: &str) -> Result<Option<String>, Verdict> {
        let (p, _) = self.project_state(project).await?;
        Ok(p.pointer("/head/id").and_then(Value::as_str).map(str::to_owned))
    }

    /// `GET` the base; returns (entries as (kind, name, digest), ETag).
    pub async fn base(&self, project: &str) -> Result<(Vec<(String, String, String)>, Option<String>), Verdict> {
        let a = self.get(&format!("/v1/projects/{project}/sync/base")).await?;
        a.expect(200, "GET the base")?;
        let entries = a
            .json
            .get("entries")
            .and_then(Value::as_array)
            .ok_or_else(|| Verdict::Fail(format!("the base has no \"entries\" array: {}", a.summary())))?;
        Ok((entries.iter().map(|e| triple(e, "digest")).collect(), a.etag().map(str::to_owned)))
    }

    /// A commit's manifest entries as (kind, name, digest, size).
    pub async fn manifest(&self, project: &str, commit: &str) -> Result<Vec<(String, String, String, u64)>, Verdict> {
        let a = self.get(&format!("/v1/projects/{project}/commits/{commit}/manifest")).await?;
        a.expect(200, "GET the manifest")?;
        let entries = a
            .json
            .get("entries")
            .and_then(Value::as_array)
            .ok_or_else(|| Verdict::Fail(format!("the manifest has no \"entries\" array: {}", a.summary())))?;
        Ok(entries
            .iter()
            .map(|e| {
                let (k, n, d) = triple(e, "digest");
                (k, n, d, e.get("size").and_then(Value::as_u64).unwrap_or(u64::MAX))
            })
            .collect())
    }

    /// `PUT /sync` with `If-Match`.
    pub async fn put_sync(&self, project: &str, etag: &str, body: &Value) -> Result<Answer, Verdict> {
        self.send(
            Method::PUT,
            &format!("/v1/projects/{project}/sync"),
            Auth::Key,
            &[("if-match", etag)],
            Some(body.to_string().into_bytes()),
        )
        .await
    }
}

fn triple(e: &Value, third: &str) -> (String, String, String) {
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    (s("kind"), s("name"), s(third))
}

/// A transport error with its causes, which reqwest keeps in the source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A definition's digest as the contract computes it.
pub fn digest(kind: &str, name: &str, spec: &Value) -> String {
    crate::digest::Digest::of_canonical(&crate::digest::canonical_definition(kind, name, spec)).to_string()
}

/// A put change.
pub fn put(kind: &str, name: &str, spec: Value) -> Value {
    json!({"op": "put", "kind": kind, "name": name, "spec": spec})
}

pub fn delete(kind: &str, name: &str) -> Value {
    json!({"op": "delete", "kind": kind, "name": name})
}

/// The `details` of a 422 `invalid` must name the offending key.
pub fn expect_details_name(a: &Answer, kind: &str, name: &str) -> Result<(), Verdict> {
    let details = a.json.pointer("/error/details").and_then(Value::as_array);
    let Some(details) = details else {
        return Err(Verdict::Fail(format!("422 invalid without a \"details\" array: {}", a.summary())));
    };
    let named = details.iter().any(|d| {
        d.get("kind").and_then(Value::as_str) == Some(kind)
            && d.get("name").and_then(Value::as_str) == Some(name)
            && d.get("message").is_some_and(Value::is_string)
    });
    if named {
        Ok(())
    } else {
        Err(Verdict::Fail(format!(
            "the details do not name {{\"kind\": {kind:?}, \"name\": {name:?}, \"message\"}}: {}",
            a.summary()
        )))
    }
}
