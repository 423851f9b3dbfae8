//! The HTTP client for GitHub's REST API: octocrab's transport, with defsync's own retry,
//! rate-limit and error handling around each request.
//!
//! octocrab supplies the connection (hyper, rustls on `ring`, timeouts), the base URL (GitHub
//! Enterprise Server's `/api/v3` prefix included) and the `Authorization` header. Requests go
//! through its raw `execute`, so every answer's status and headers reach this module: the
//! rate-limit headers decide waits, and error answers become [`GitHubError`]s with a hint.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method};
use octocrab::secrecy::{ExposeSecret as _, SecretString};
use octocrab::{OctoBody, Octocrab};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::errors::{ErrorInfo, ErrorKind, GitHubError, Permission};

/// The REST API version every request asks for.
pub const API_VERSION: &str = "2022-11-28";
/// api.github.com; GitHub Enterprise Server uses `https://HOST/api/v3`.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// How to reach GitHub and how patient to be.
#[derive(Clone)]
pub struct GitHubOptions {
    pub token: SecretString,
    /// The API root: `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise
    /// Server (what Actions sets as `GITHUB_API_URL`).
    pub api_url: String,
    pub connect_timeout: Duration,
    /// The longest wait for any read of an answer.
    pub read_timeout: Duration,
    /// The least wait after a secondary rate limit that gave no `retry-after`. GitHub asks for
    /// at least a minute; tests lower it.
    pub min_secondary_backoff: Duration,
    /// The longest single wait for a rate limit to reset; a longer one fails the run instead.
    pub max_rate_limit_wait: Duration,
    /// Retries after a rate limit, a 5xx or a lost connection (the latter two for requests
    /// safe to repeat only).
    pub retries: u32,
    /// The first wait before retrying a 5xx or a lost connection; it doubles each time.
    pub retry_backoff: Duration,
    /// Create-tree request bodies stay under this size; larger edits chain several trees.
    pub max_tree_request_bytes: usize,
    /// Create-tree requests carry at most this many entries.
    pub max_tree_entries: usize,
}

impl GitHubOptions {
    /// Defaults suited to a workflow run.
    pub fn new(token: impl Into<String>, api_url: impl Into<String>) -> Self {
        GitHubOptions {
            token: SecretString::from(token.into()),
            api_url: api_url.into(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            min_secondary_backoff: Duration::from_secs(60),
            max_rate_limit_wait: Duration::from_secs(15 * 60),
            retries: 3,
            retry_backoff: Duration::from_secs(1),
            max_tree_request_bytes: 8 << 20,
            max_tree_entries: 5_000,
        }
    }

    /// `GITHUB_API_URL` when set (Actions sets it, also on GitHub Enterprise Server), else
    /// api.github.com.
    pub fn api_url_from_env() -> String {
        std::env::var("GITHUB_API_URL").ok().filter(|u| !u.trim().is_empty()).unwrap_or_else(|| DEFAULT_API_URL.into())
    }
}

impl std::fmt::Debug for GitHubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubOptions")
            .field("token", &"<redacted>")
            .field("api_url", &self.api_url)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("min_secondary_backoff", &self.min_secondary_backoff)
            .field("max_rate_limit_wait", &self.max_rate_limit_wait)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

/// A repository, `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoName {
    pub owner: String,
    pub name: String,
}

impl RepoName {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let s = s.trim().trim_end_matches(".git");
        let (owner, name) = s.split_once('/').with_context(|| format!("repository {s:?} is not \"owner/name\""))?;
        let ok = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok(owner) || !ok(name) {
            bail!("repository {s:?} is not \"owner/name\"");
        }
        Ok(RepoName { owner: owner.into(), name: name.into() })
    }

    /// `/repos/{owner}/{name}`.
    pub(crate) fn path(&self) -> String {
        format!("/repos/{}/{}", segment(&self.owner), segment(&self.name))
    }
}

impl std::fmt::Display for RepoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

pub(crate) use crate::net::{error_chain, segment};

/// A ref name in a path: each `/`-separated part encoded, the slashes kept (GitHub expects them).
pub(crate) fn ref_path(name: &str) -> String {
    name.split('/').map(segment).collect::<Vec<_>>().join("/")
}

/// Whether a request may be sent again after an unclear outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Repeating it cannot do harm: reads, content-addressed writes (blobs, trees, commits),
    /// setting a ref to a value, adding labels.
    Safe,
    /// Only when GitHub said it did not process it (a rate-limit answer). A lost connection or
    /// a 5xx may hide a success, and repeating would act twice (open a second PR, start a
    /// second workflow run).
    RejectedOnly,
}

/// One request, before it is sent.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub method: Method,
    /// Relative to the API root, with any query.
    pub path: String,
    pub body: Option<String>,
    pub retry: Retry,
    pub permission: Option<Permission>,
    /// What it does, for messages ("create a tree in o/r").
    pub operation: String,
}

impl Req {
    fn new(method: Method, path: String, operation: impl Into<String>) -> Self {
        Req { method, path, body: None, retry: Retry::Safe, permission: None, operation: operation.into() }
    }
    pub fn get(path: String, operation: impl Into<String>) -> Self {
        Req::new(Method::GET, path, operation).needs(Permission::ContentsRead)
    }
    pub fn delete(path: String, operation: impl Into<String>) -> Self {
        Req::new(Method::DELETE, path, operation)
    }
    pub fn post(path: String, body: &impl Serialize, operation: impl Into<String>) -> Self {
        Req::new(Method::POST, path, operation).body(body)
    }
    pub fn patch(path: String, body: &impl Serialize, operation: impl Into<String>) -> Self {
        Req::new(Method::PATCH, path, operation).body(body)
    }
    fn body(mut self, body: &impl Serialize) -> Self {
        // Serializing our own plain structs cannot fail.
        self.body = Some(serde_json::to_string(body).expect("request bodies serialize"));
        self
    }
    pub fn needs(mut self, permission: Permission) -> Self {
        self.permission = Some(permission);
        self
    }
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }
}

/// A 2xx answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// GitHub's REST API, as defsync uses it.
pub struct GitHub {
    octo: Octocrab,
    options: GitHubOptions,
    requests: AtomicU64,
    /// Set when an answer said the primary rate limit is used up: no request goes out before.
    blocked_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub").field("options", &self.options).field("requests", &self.requests()).finish()
    }
}

impl GitHub {
    /// Checks the options and sets up the client. Call it inside a Tokio runtime: octocrab
    /// starts its connection task there.
    pub fn new(options: GitHubOptions) -> anyhow::Result<Self> {
        let token = options.token.expose_secret().trim();
        if token.is_empty() {
            bail!("no GitHub token: pass --github-token or set DEFSYNC_GITHUB_TOKEN");
        }
        // octocrab builds the Authorization header from it and panics on bytes a header cannot
        // hold; say so instead, without showing the token.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("the GitHub token contains spaces or control characters; check the secret's value");
        }
        let api_url = options.api_url.trim().trim_end_matches('/').to_owned();
        let uri: http::Uri = api_url.parse().with_context(|| format!("the GitHub API URL {api_url:?} is not a URL"))?;
        let loopback = matches!(uri.host(), Some("127.0.0.1" | "localhost" | "[::1]" | "::1"));
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if loopback => {}
            _ => bail!(
                "the GitHub API URL {api_url:?} must be https:// (the token would travel in clear text); \
                 for GitHub Enterprise Server it looks like https://HOST/api/v3"
            ),
        }
        let octo = Octocrab::builder()
            .base_uri(api_url.as_str())
            .context("the GitHub API URL")?
            .personal_token(token.to_owned())
            .set_connect_timeout(Some(options.connect_timeout))
            .set_read_timeout(Some(options.read_timeout))
            .build()
            .context("cannot set up the GitHub client")?;
        Ok(GitHub {
            octo,
            options: GitHubOptions { api_url, ..options },
            requests: AtomicU64::new(0),
            blocked_until: Mutex::new(None),
        })
    }

    /// Requests sent so far, retries included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn options(&self) -> &GitHubOptions {
        &self.options
    }

    /// Sends a request, waiting out rate limits and retrying what is safe to retry; any answer
    /// but a 2xx becomes an error with a hint.
    pub(crate) async fn call(&self, req: &Req) -> Result<Answer, GitHubError> {
        let mut attempt = 0u32;
        loop {
            self.wait_out_primary_limit().await;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let sent = self.send_once(req).await;
            let retries_left = attempt < self.options.retries;
            match sent {
                Err(message) => {
                    if req.retry == Retry::Safe && retries_left {
                        tracing::warn!("GitHub: {} {}: {message}; retrying", req.method, req.path);
                        tokio::time::sleep(self.backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(self.transport_error(req, message));
                }
                Ok(answer) => {
                    self.remember_primary_limit(&answer.headers);
                    if (200..300).contains(&answer.status) {
                        return Ok(answer);
                    }
                    if let Some(limit) = self.rate_limit(&answer, attempt) {
                        if retries_left && limit.wait <= self.options.max_rate_limit_wait {
                            tracing::warn!(
                                "GitHub: {} rate limit on {} {}; waiting {:.1}s",
                                limit.which,
                                req.method,
                                req.path,
                                limit.wait.as_secs_f64()
                            );
                            tokio::time::sleep(limit.wait).await;
                            attempt += 1;
                            continue;
                        }
                        let mut e = self.answer_error(req, &answer);
                        e.kind = ErrorKind::RateLimited;
                        e.info.hint = Some(format!(
                            "GitHub's {} rate limit is exhausted and would free up in {}s, beyond the waits \
                             allowed; run again later, or use a token with its own limit (a GitHub App's)",
                            limit.which,
                            limit.wait.as_secs()
                        ));
                        return Err(e);
                    }
                    if answer.status >= 500 && req.retry == Retry::Safe && retries_left {
                        tracing::warn!("GitHub: {} {} answered {}; retrying", req.method, req.path, answer.status);
                        tokio::time::sleep(self.backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(self.answer_error(req, &answer).classify(req.permission));
                }
            }
        }
    }

    /// Sends a request and reads its JSON answer.
    pub(crate) async fn call_json<T: DeserializeOwned>(&self, req: &Req) -> Result<T, GitHubError> {
        let answer = self.call(req).await?;
        self.parse(req, &answer)
    }

    pub(crate) fn parse<T: DeserializeOwned>(&self, req: &Req, answer: &Answer) -> Result<T, GitHubError> {
        serde_json::from_str(&answer.body).map_err(|e| GitHubError {
            kind: ErrorKind::Protocol,
            status: Some(answer.status),
            info: Box::new(ErrorInfo {
                operation: req.operation.clone(),
                method: req.method.to_string(),
                path: req.path.clone(),
                message: format!("unexpected answer: {e}"),
                details: vec![],
                documentation_url: None,
                request_id: answer.header("x-github-request-id").map(str::to_owned),
                hint: Some("check that the API URL points at GitHub's REST API (GITHUB_API_URL)".into()),
            }),
        })
    }

    async fn send_once(&self, req: &Req) -> Result<Answer, String> {
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(req.path.as_str())
            .header(ACCEPT, "application/vnd.github+json")
            .header("x-github-api-version", API_VERSION);
        let body = match &req.body {
            Some(b) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                OctoBody::from(b.clone())
            }
            None => {
                builder = builder.header(CONTENT_LENGTH, "0");
                OctoBody::empty()
            }
        };
        let request = builder.body(body).map_err(|e| format!("cannot build the request: {e}"))?;
        let response = self.octo.execute(request).await.map_err(|e| error_chain(&e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = self.octo.body_to_string(response).await.map_err(|e| error_chain(&e))?;
        Ok(Answer { status, headers, body })
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.options.retry_backoff.saturating_mul(1 << attempt.min(6))
    }

    /// A rate-limit answer and how long to wait; `None` for any other answer.
    fn rate_limit(&self, answer: &Answer, attempt: u32) -> Option<RateLimit> {
        if answer.status != 403 && answer.status != 429 {
            return None;
        }
        if let Some(secs) = answer.header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
            return Some(RateLimit { which: "secondary", wait: Duration::from_secs(secs) });
        }
        if answer.header("x-ratelimit-remaining").map(str::trim) == Some("0") {
            let wait = answer
                .header("x-ratelimit-reset")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|reset| self.until_reset(reset))
                .unwrap_or(self.options.min_secondary_backoff);
            return Some(RateLimit { which: "primary", wait });
        }
        let message = answer.body.to_ascii_lowercase();
        if answer.status == 429 || message.contains("secondary rate limit") || message.contains("abuse") {
            // No retry-after: GitHub asks for at least a minute, longer each time.
            let wait = self.options.min_secondary_backoff.saturating_mul(1 << attempt.min(4));
            return Some(RateLimit { which: "secondary", wait });
        }
        None
    }

    /// The wait until `x-ratelimit-reset` (epoch seconds), with a margin for clock skew.
    fn until_reset(&self, reset: u64) -> Duration {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        Duration::from_secs(reset.saturating_sub(now)) + self.options.min_secondary_backoff.min(Duration::from_secs(1))
    }

    fn remember_primary_limit(&self, headers: &HeaderMap) {
        let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
        if get("x-ratelimit-remaining") == Some("0")
            && let Some(reset) = get("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok())
        {
            let wait = self.until_reset(reset);
            if wait <= self.options.max_rate_limit_wait {
                *self.blocked_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + wait);
            }
        }
    }

    async fn wait_out_primary_limit(&self) {
        let until = self.blocked_until.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(until) = until {
            let now = Instant::now();
            if until > now {
                tracing::warn!("GitHub: primary rate limit used up; waiting {:.1}s", (until - now).as_secs_f64());
                tokio::time::sleep(until - now).await;
            }
        }
    }

    fn transport_error(&self, req: &Req, message: String) -> GitHubError {
        GitHubError {
            kind: ErrorKind::Transport,
            status: None,
            info: Box::new(ErrorInfo {
                operation: req.operation.clone(),
                method: req.method.to_string(),
                path: req.path.clone(),
                message,
                details: vec![],
                documentation_url: None,
                request_id: None,
                hint: Some(format!(
                    "GitHub at {} did not answer{}; check the network and GITHUB_API_URL",
                    self.options.api_url,
                    if req.retry == Retry::Safe {
                        " after every retry"
                    } else {
                        " (not retried: repeating could act twice)"
                    }
                )),
            }),
        }
    }

    /// An error answer as GitHub reported it, not yet classified.
    pub(crate) fn answer_error(&self, req: &Req, answer: &Answer) -> GitHubError {
        #[derive(serde::Deserialize, Default)]
        struct Body {
            message: Option<String>,
            documentation_url: Option<String>,
            #[serde(default)]
            errors: Vec<serde_json::Value>,
        }
        let body: Body = serde_json::from_str(&answer.body).unwrap_or_default();
        let details = body
            .errors
            .iter()
            .map(|e| match e {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Object(o) => match o.get("message").and_then(|m| m.as_str()) {
                    Some(m) => m.to_owned(),
                    None => {
                        let s = |k: &str| o.get(k).and_then(|v| v.as_str()).unwrap_or("");
                        format!("{} {} {}", s("resource"), s("field"), s("code")).trim().to_owned()
                    }
                },
                other => other.to_string(),
            })
            .collect();
        let message = body.message.unwrap_or_else(|| {
            let mut text: String = answer.body.chars().take(200).collect();
            if text.trim().is_empty() {
                text = "(no message)".into();
            }
            text
        });
        GitHubError {
            kind: ErrorKind::Rejected,
            status: Some(answer.status),
            info: Box::new(ErrorInfo {
                operation: req.operation.clone(),
                method: req.method.to_string(),
                path: req.path.clone(),
                message,
                details,
                documentation_url: body.documentation_url,
                request_id: answer.header("x-github-request-id").map(str::to_owned),
                hint: None,
            }),
        }
    }
}

struct RateLimit {
    which: &'static str,
    wait: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn debug_never_shows_the_token() {
        let options = GitHubOptions::new("ghp_secretsecret", "https://api.github.com");
        assert!(!format!("{options:?}").contains("secret"));
        let gh = GitHub::new(options).unwrap();
        assert!(!format!("{gh:?}").contains("secret"));
    }

    #[tokio::test]
    async fn plain_http_is_refused_except_on_loopback() {
        assert!(GitHub::new(GitHubOptions::new("t", "http://ghe.example.com/api/v3")).is_err());
        assert!(GitHub::new(GitHubOptions::new("t", "http://127.0.0.1:9/api/v3")).is_ok());
        assert!(GitHub::new(GitHubOptions::new("a b", "https://api.github.com")).is_err());
    }

    #[test]
    fn repo_names_and_ref_paths() {
        let r = RepoName::parse("octo/hello.world").unwrap();
        assert_eq!(r.path(), "/repos/octo/hello.world");
        assert!(RepoName::parse("octo").is_err());
        assert!(RepoName::parse("octo/a/b").is_err());
        assert_eq!(ref_path("defsync/p 1"), "defsync/p%201");
    }
}
