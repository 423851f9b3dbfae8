//! The HTTP client for GitLab's REST API (v4): reqwest with rustls, with defsync's own retry,
//! rate-limit and error handling around each request.
//!
//! Every answer's status and body reach this module, so error answers become [`GitLabError`]s
//! that keep GitLab's own message and add what to do.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::errors::{ErrorKind, GitLabError, Scope};

/// gitlab.com's API root.
pub const DEFAULT_API_URL: &str = "https://gitlab.com/api/v4";

/// A secret that never shows in `Debug` output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Which kind of token, because GitLab takes each in its own header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A personal, project or group access token (`PRIVATE-TOKEN`).
    Access,
    /// A CI/CD job token, `CI_JOB_TOKEN` (`JOB-TOKEN`): it reaches only a few endpoints.
    Job,
    /// A pipeline trigger token: it travels in the trigger request's body, no header.
    Trigger,
}

/// How to reach GitLab and how patient to be.
#[derive(Debug, Clone)]
pub struct GitLabOptions {
    pub token: Secret,
    pub token_kind: TokenKind,
    /// The API root: `https://gitlab.com/api/v4`, or `https://HOST/api/v4` on a self-managed
    /// instance (what a job sees as `CI_API_V4_URL`).
    pub api_url: String,
    /// A PEM file of CA certificates to trust besides the system's: a self-managed instance
    /// whose certificate a private CA signed.
    pub ca_cert: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Retries after a 429, a 5xx or a lost connection (the latter two for requests safe to
    /// repeat only).
    pub retries: u32,
    /// The first wait before a retry; it doubles each time.
    pub retry_backoff: Duration,
    /// The longest wait a `Retry-After` may ask for; a longer one fails the run instead.
    pub max_rate_limit_wait: Duration,
}

impl GitLabOptions {
    /// Defaults suited to a CI job.
    pub fn new(token: impl Into<String>, token_kind: TokenKind, api_url: impl Into<String>) -> Self {
        GitLabOptions {
            token: Secret::new(token),
            token_kind,
            api_url: api_url.into(),
            ca_cert: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            retries: 3,
            retry_backoff: Duration::from_secs(1),
            max_rate_limit_wait: Duration::from_secs(5 * 60),
        }
    }
}

pub(crate) use crate::net::{error_chain, segment};

/// Whether a request may be sent again after an unclear outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads, and writes whose repeat finds the same state.
    Safe,
    /// Only when GitLab said it did not process it (429). A commit or a new merge request sent
    /// twice would be made twice.
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
    /// The token scope the operation needs, for the hint when it is refused.
    pub scope: Option<Scope>,
    /// What it does, for messages ("create a commit on main").
    pub operation: String,
}

impl Req {
    fn new(method: Method, path: String, operation: impl Into<String>) -> Self {
        Req { method, path, body: None, retry: Retry::Safe, scope: None, operation: operation.into() }
    }
    pub fn get(path: String, operation: impl Into<String>) -> Self {
        Req::new(Method::GET, path, operation).needs(Scope::ReadApi)
    }
    pub fn delete(path: String, operation: impl Into<String>) -> Self {
        Req::new(Method::DELETE, path, operation).needs(Scope::Api)
    }
    pub fn post(path: String, body: &impl Serialize, operation: impl Into<String>) -> Self {
        Req::new(Method::POST, path, operation).body(body).needs(Scope::Api)
    }
    pub fn put(path: String, body: &impl Serialize, operation: impl Into<String>) -> Self {
        Req::new(Method::PUT, path, operation).body(body).needs(Scope::Api)
    }
    fn body(mut self, body: &impl Serialize) -> Self {
        // Serializing our own plain structs cannot fail.
        self.body = Some(serde_json::to_string(body).expect("request bodies serialize"));
        self
    }
    pub fn needs(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
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
    pub body: String,
}

/// GitLab's REST API, as defsync uses it.
pub struct GitLab {
    http: reqwest::Client,
    options: GitLabOptions,
    requests: AtomicU64,
}

impl std::fmt::Debug for GitLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitLab").field("options", &self.options).field("requests", &self.requests()).finish()
    }
}

impl GitLab {
    /// Checks the options and sets up the client.
    pub fn new(options: GitLabOptions) -> anyhow::Result<Self> {
        let token = options.token.expose().trim();
        if token.is_empty() {
            bail!("no GitLab token: set GITLAB_TOKEN (or DEFSYNC_GITLAB_TOKEN) to a project or personal access token");
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("the GitLab token contains spaces or control characters; check the CI/CD variable's value");
        }
        let api_url = options.api_url.trim().trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&api_url).with_context(|| {
            format!("the GitLab API URL {api_url:?} is not a URL (it looks like https://HOST/api/v4)")
        })?;
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]" | "::1"));
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => bail!(
                "the GitLab API URL {api_url:?} must be https:// (the token would travel in clear text); \
                 it looks like https://HOST/api/v4"
            ),
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .user_agent(concat!("defsync/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &options.ca_cert {
            let pem =
                std::fs::read(path).with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} holds no PEM certificate", path.display()))?;
            if certs.is_empty() {
                bail!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display());
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().context("cannot set up the GitLab client")?;
        Ok(GitLab { http, options: GitLabOptions { api_url, ..options }, requests: AtomicU64::new(0) })
    }

    /// Requests sent so far, retries included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn options(&self) -> &GitLabOptions {
        &self.options
    }

    /// The instance's web root, the API root without `/api/v4`.
    pub fn server_url(&self) -> &str {
        self.options.api_url.strip_suffix("/api/v4").unwrap_or(&self.options.api_url)
    }

    /// Sends a request, waiting out rate limits and retrying what is safe to retry; any answer
    /// but a 2xx becomes an error with a hint.
    pub(crate) async fn call(&self, req: &Req) -> Result<Answer, GitLabError> {
        let mut attempt = 0u32;
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let sent = self.send_once(req).await;
            let retries_left = attempt < self.options.retries;
            match sent {
                Err(message) => {
                    if req.retry == Retry::Safe && retries_left {
                        tracing::warn!("GitLab: {} {}: {message}; retrying", req.method, req.path);
                        tokio::time::sleep(self.backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(GitLabError::transport(req, message, &self.options.api_url));
                }
                Ok((status, retry_after, body)) => {
                    if (200..300).contains(&status) {
                        return Ok(Answer { status, body });
                    }
                    if status == 429 {
                        // GitLab's rate limiter answers before the endpoint runs: any request
                        // may be repeated.
                        let wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
                        if retries_left && wait <= self.options.max_rate_limit_wait {
                            tracing::warn!(
                                "GitLab: rate limit on {} {}; waiting {:.1}s",
                                req.method,
                                req.path,
                                wait.as_secs_f64()
                            );
                            tokio::time::sleep(wait).await;
                            attempt += 1;
                            continue;
                        }
                    }
                    if status >= 500 && req.retry == Retry::Safe && retries_left {
                        tracing::warn!("GitLab: {} {} answered {status}; retrying", req.method, req.path);
                        tokio::time::sleep(self.backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(GitLabError::answer(req, status, &body).classify(req.scope));
                }
            }
        }
    }

    /// Sends a request and reads its JSON answer.
    pub(crate) async fn call_json<T: DeserializeOwned>(&self, req: &Req) -> Result<T, GitLabError> {
        let answer = self.call(req).await?;
        serde_json::from_str(&answer.body).map_err(|e| {
            let mut err = GitLabError::answer(req, answer.status, "");
            err.kind = ErrorKind::Protocol;
            err.info.message = format!("unexpected answer: {e}");
            err.info.hint = Some("check that the API URL points at GitLab's REST API (https://HOST/api/v4)".into());
            err
        })
    }

    async fn send_once(&self, req: &Req) -> Result<(u16, Option<Duration>, String), String> {
        let url = format!("{}{}", self.options.api_url, req.path);
        let mut builder = self.http.request(req.method.clone(), url);
        let header = match self.options.token_kind {
            TokenKind::Access => Some("PRIVATE-TOKEN"),
            TokenKind::Job => Some("JOB-TOKEN"),
            TokenKind::Trigger => None,
        };
        if let Some(header) = header {
            builder = builder.header(header, self.options.token.expose().trim());
        }
        if let Some(body) = &req.body {
            builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
        }
        let response = builder.send().await.map_err(|e| error_chain(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.text().await.map_err(|e| error_chain(&e))?;
        Ok((status, retry_after, body))
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.options.retry_backoff.saturating_mul(1 << attempt.min(6))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let options = GitLabOptions::new("glpat-secretsecret", TokenKind::Access, DEFAULT_API_URL);
        assert!(!format!("{options:?}").contains("secret"));
        let gl = GitLab::new(options).unwrap();
        assert!(!format!("{gl:?}").contains("secret"));
    }

    #[test]
    fn plain_http_is_refused_except_on_loopback() {
        let new = |url: &str| GitLab::new(GitLabOptions::new("t", TokenKind::Access, url));
        assert!(new("http://gitlab.example.com/api/v4").is_err());
        assert!(new("http://127.0.0.1:9/api/v4").is_ok());
        assert!(GitLab::new(GitLabOptions::new("a b", TokenKind::Access, DEFAULT_API_URL)).is_err());
        assert!(GitLab::new(GitLabOptions::new("", TokenKind::Access, DEFAULT_API_URL)).is_err());
    }

    #[test]
    fn project_paths_and_branches_are_one_segment() {
        assert_eq!(segment("group/sub/name"), "group%2Fsub%2Fname");
        assert_eq!(segment("defsync/p 1"), "defsync%2Fp%201");
        assert_eq!(segment("42"), "42");
    }
}
