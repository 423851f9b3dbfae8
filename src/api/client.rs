//! The Sync API client over HTTP (reqwest with rustls).
//!
//! It never follows redirects (that would hand the API key to another host), refuses plain
//! `http://` beyond loopback unless allowed, retries transient failures (connection errors,
//! timeouts, 429, 502, 503, 504) with exponential backoff and full jitter within a total time
//! budget, and checks every definition it receives against its digest.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::RngExt as _;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::api::{
    ApiError, Base, BatchGetRequest, BatchGetResponse, Commit, Commits, ETag, Manifest, Project, PutProject, SyncRecord,
};
use crate::digest::Digest;

use crate::platform::{PlatformError, Result};

/// The contract's batch-get limits: digests per request, and bytes of canonical forms.
pub const BATCH_MAX_DIGESTS: usize = 1000;
pub const BATCH_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Batch-gets in flight at once: enough to hide latency, few enough to be a polite client.
const BATCH_CONCURRENCY: usize = 4;
/// The first retry waits up to this long; each later one up to twice as long as the last...
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// ...but never more than this.
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Connecting takes at most this long (or the request timeout, if shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct ClientOptions {
    /// Sent as `Authorization: Bearer`; never printed.
    pub api_key: Option<String>,
    /// Allow plain `http://` to hosts other than loopback.
    pub allow_insecure_http: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// The longest a request may spend retrying, in total.
    pub max_retry_time: Duration,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("timeout", &self.timeout)
            .field("max_retry_time", &self.max_retry_time)
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            api_key: None,
            allow_insecure_http: false,
            timeout: Duration::from_secs(30),
            max_retry_time: Duration::from_secs(120),
        }
    }
}

/// A platform over HTTP. Cheap to share between tasks.
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// The base URL without a trailing `/`.
    base: String,
    http: reqwest::Client,
    options: ClientOptions,
    requests: AtomicU64,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.inner.base)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// Whether `url` may carry the key: https anywhere, http only to loopback unless allowed.
fn check_url(url: &reqwest::Url, allow_insecure_http: bool) -> anyhow::Result<()> {
    if !url.username().is_empty() || url.password().is_some() {
        anyhow::bail!("the platform URL must not hold credentials: give the API key with DEFSYNC_API_KEY instead");
    }
    let host = url.host_str().ok_or_else(|| anyhow::anyhow!("the platform URL {url} has no host"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            // IPv6 hosts come in brackets.
            let loopback = match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                Ok(ip) => ip.is_loopback(),
                Err(_) => host.eq_ignore_ascii_case("localhost"),
            };
            if loopback || allow_insecure_http {
                Ok(())
            } else {
                anyhow::bail!(
                    "refusing plain http:// to {host}: the API key would cross the network in clear text. Use \
                     https://, or allow it with --allow-insecure-http (DEFSYNC_ALLOW_INSECURE_HTTP=true)"
                )
            }
        }
        other => anyhow::bail!("the platform URL must start with https:// (or http:// for loopback), not {other}://"),
    }
}

/// The transport error and its causes, without the URL (the caller names it once).
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {}s", timeout.as_secs_f64());
    }
    crate::net::error_chain(&e.without_url())
}

/// `Retry-After` in seconds (the HTTP-date form is not used by platforms we know, and is ignored).
fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
}

/// Full jitter: a random wait between zero and the exponential bound.
fn backoff(attempt: u32) -> Duration {
    let bound = BACKOFF_BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(BACKOFF_CAP);
    Duration::from_millis(rand::rng().random_range(0..=bound.as_millis() as u64))
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `bytes::Bytes`, which reqwest takes and returns, named through axum's re-export so the crate
/// needs no direct dependency on `bytes`.
use axum::body::Bytes;

/// A 2xx answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// The most a body's announced length reserves up front; a longer body grows as it comes.
const MAX_RESERVE: u64 = 256 << 20;

/// Reads a body chunk by chunk into one buffer of its announced length. `Response::bytes`
/// gathers the chunks and then copies them into one buffer, holding a large answer (a base of
/// 100,000 entries is 17 MiB) twice.
async fn read_body(mut response: reqwest::Response) -> reqwest::Result<Bytes> {
    let announced = response.content_length().unwrap_or(0).min(MAX_RESERVE);
    let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

impl Inner {
    fn url(&self, segments: &[&str]) -> String {
        let mut url = self.base.clone();
        for s in segments {
            url.push('/');
            url.push_str(&crate::net::segment(s));
        }
        url
    }

    /// Sends a request, retrying transient failures; returns a 2xx answer or the final error.
    /// The body is shared by the attempts, not copied for each.
    async fn send(&self, method: Method, url: &str, body: Option<Bytes>, extra: &[(&str, &str)]) -> Result<Answer> {
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let mut request = self.http.request(method.clone(), url).header(header::ACCEPT, "application/json");
            if let Some(key) = &self.options.api_key {
                // bearer_auth marks the header sensitive, so it never shows in debug output.
                request = request.bearer_auth(key);
            }
            for (name, value) in extra {
                request = request.header(*name, *value);
            }
            if let Some(body) = &body {
                request = request.header(header::CONTENT_TYPE, "application/json").body(body.clone());
            }
            let failure = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    if status.is_redirection() {
                        let location = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("nowhere");
                        return Err(PlatformError::Transport(format!(
                            "{method} {url} answered {status}, redirecting to {location}; defsync never follows \
                             redirects, which would send the API key to another address: give the final URL as the \
                             platform"
                        )));
                    }
                    let body = read_body(response).await;
                    if status.is_success() {
                        match body {
                            Ok(body) => return Ok(Answer { status, headers, body }),
                            Err(e) => Err(describe(e, self.options.timeout)),
                        }
                    } else {
                        let mut e = ApiError::from_body(status.as_u16(), body.as_deref().unwrap_or_default());
                        e.retry_after = retry_after(&headers);
                        if !matches!(status.as_u16(), 429 | 502 | 503 | 504) {
                            return Err(PlatformError::Api(e));
                        }
                        Ok(e)
                    }
                }
                Err(e) if e.is_builder() => {
                    return Err(PlatformError::Transport(format!(
                        "cannot build the request {method} {url}: {}",
                        describe(e, self.options.timeout)
                    )));
                }
                Err(e) => Err(describe(e, self.options.timeout)),
            };
            let server_wait = failure.as_ref().ok().and_then(|e| e.retry_after);
            let delay = server_wait.map_or_else(|| backoff(attempt), Duration::from_secs);
            let elapsed = started.elapsed();
            if elapsed + delay > self.options.max_retry_time {
                let tries = format!("after {attempt} attempt{} in {:.1}s", plural(attempt), elapsed.as_secs_f64());
                return Err(match failure {
                    Ok(mut e) => {
                        e.message = format!("{} ({tries})", e.message);
                        PlatformError::Api(e)
                    }
                    Err(cause) => PlatformError::Transport(format!(
                        "cannot reach the platform: {method} {url}: {cause} ({tries}; --retry-for sets how long to retry)"
                    )),
                });
            }
            let why = match &failure {
                Ok(e) => format!("{} {}", e.status, e.code),
                Err(cause) => cause.clone(),
            };
            tracing::warn!(
                "{method} {url}: {}; retrying in {:.1}s (attempt {attempt})",
                crate::output::data(&why),
                delay.as_secs_f64()
            );
            tokio::time::sleep(delay).await;
        }
    }

    fn parse<T: DeserializeOwned>(&self, method: &Method, url: &str, answer: &Answer) -> Result<T> {
        serde_json::from_slice(&answer.body).map_err(|e| {
            if crate::store::strict::is_too_deep(&e) {
                // Only a spec can nest this deep in a contract answer.
                return PlatformError::InvalidDefinition(format!(
                    "{method} {url} answered with JSON nested more than {} levels deep; {}",
                    crate::store::strict::BODY_DEPTH,
                    crate::model::too_deep()
                ));
            }
            PlatformError::Invalid(format!(
                "{method} {url} answered {} with a body that is not the expected JSON: {e}",
                answer.status
            ))
        })
    }

    async fn get<T: DeserializeOwned>(&self, url: &str) -> Result<(T, Answer)> {
        let answer = self.send(Method::GET, url, None, &[]).await?;
        Ok((self.parse(&Method::GET, url, &answer)?, answer))
    }

    /// One batch-get request; checks that the answer holds exactly what was asked for.
    async fn batch_get(&self, project: &str, digests: Vec<Digest>) -> Result<BatchGetResponse> {
        let url = self.url(&["v1", "projects", project, "objects", "batch-get"]);
        let body = serde_json::to_vec(&BatchGetRequest { digests: digests.clone() }).expect("serialisable");
        let answer = self.send(Method::POST, &url, Some(Bytes::from(body)), &[]).await?;
        crate::store::strict::check_integer_literals(&answer.body)
            .map_err(|m| PlatformError::InvalidDefinition(format!("POST {url}: {m}")))?;
        let got: BatchGetResponse = self.parse(&Method::POST, &url, &answer)?;
        let asked: std::collections::HashSet<&Digest> = digests.iter().collect();
        let mut answered = std::collections::HashSet::with_capacity(digests.len());
        // Each object's content is checked against the contract and its digest by the caller,
        // which reports a bad one as an invalid definition (exit 4) rather than a failure.
        for o in &got.objects {
            let key = format!("{}/{:?}", o.kind, o.name);
            if !asked.contains(&o.digest) {
                return Err(PlatformError::Invalid(format!("definition {key} ({}) was not asked for", o.digest)));
            }
            answered.insert(&o.digest);
        }
        answered.extend(got.missing.iter());
        if let Some(d) = digests.iter().find(|d| !answered.contains(d)) {
            return Err(PlatformError::Invalid(format!("the answer to a batch-get neither holds nor lists {d}")));
        }
        Ok(got)
    }
}

fn etag(method: &Method, url: &str, answer: &Answer) -> Result<ETag> {
    answer
        .headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|v| ETag(v.to_owned()))
        .ok_or_else(|| PlatformError::Invalid(format!("{method} {url} answered without an ETag header")))
}

/// Splits digests (each with its manifest size) into batches within both contract limits.
/// Splits digests into batch-get requests within the contract's limits (count and bytes),
/// asking for each digest once. The embedded store uses the same batches.
pub fn batches(digests: &[(Digest, u64)]) -> Vec<Vec<Digest>> {
    let mut seen = std::collections::HashSet::with_capacity(digests.len());
    let mut out: Vec<Vec<Digest>> = Vec::new();
    let mut current: Vec<Digest> = Vec::new();
    let mut bytes = 0u64;
    for (d, size) in digests {
        if !seen.insert(d) {
            continue;
        }
        if !current.is_empty() && (current.len() == BATCH_MAX_DIGESTS || bytes + size > BATCH_MAX_BYTES) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(d.clone());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

impl HttpClient {
    pub fn new(base_url: &str, options: ClientOptions) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let parsed =
            reqwest::Url::parse(base_url).with_context(|| format!("the platform URL {base_url:?} is not valid"))?;
        check_url(&parsed, options.allow_insecure_http)?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            anyhow::bail!("the platform URL {parsed} must not have a query or fragment");
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT.min(options.timeout))
            .timeout(options.timeout)
            .user_agent(concat!("defsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the HTTP client")?;
        let base = parsed.as_str().trim_end_matches('/').to_owned();
        Ok(HttpClient { inner: Arc::new(Inner { base, http, options, requests: AtomicU64::new(0) }) })
    }

    /// Every HTTP attempt so far, retries included.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    pub async fn project(&self, project: &str) -> Result<(Project, ETag)> {
        let url = self.inner.url(&["v1", "projects", project]);
        let (p, answer) = self.inner.get(&url).await?;
        Ok((p, etag(&Method::GET, &url, &answer)?))
    }

    pub async fn put_project(&self, project: &str, name: &str) -> Result<(Project, bool)> {
        let url = self.inner.url(&["v1", "projects", project]);
        let body = serde_json::to_vec(&PutProject { name: name.to_owned() }).expect("serialisable");
        let answer = self.inner.send(Method::PUT, &url, Some(Bytes::from(body)), &[]).await?;
        let p = self.inner.parse(&Method::PUT, &url, &answer)?;
        Ok((p, answer.status == StatusCode::CREATED))
    }

    pub async fn base(&self, project: &str) -> Result<(Base, ETag)> {
        self.base_as(project).await
    }

    /// The base read into any form of it, such as the planner's map, so 100,000 entries are not
    /// held twice.
    pub async fn base_as<T: DeserializeOwned>(&self, project: &str) -> Result<(T, ETag)> {
        let url = self.inner.url(&["v1", "projects", project, "sync", "base"]);
        let (b, answer) = self.inner.get(&url).await?;
        Ok((b, etag(&Method::GET, &url, &answer)?))
    }

    pub async fn commits(&self, project: &str, after_seq: u64, limit: u32) -> Result<Commits> {
        let url =
            format!("{}?after_seq={after_seq}&limit={limit}", self.inner.url(&["v1", "projects", project, "commits"]));
        Ok(self.inner.get(&url).await?.0)
    }

    pub async fn commit(&self, project: &str, commit: &str) -> Result<Commit> {
        let url = self.inner.url(&["v1", "projects", project, "commits", commit]);
        Ok(self.inner.get(&url).await?.0)
    }

    pub async fn manifest(&self, project: &str, commit: &str) -> Result<Manifest> {
        self.manifest_as(project, commit).await
    }

    /// A manifest read into any form of it, as [`HttpClient::base_as`].
    pub async fn manifest_as<T: DeserializeOwned>(&self, project: &str, commit: &str) -> Result<T> {
        let url = self.inner.url(&["v1", "projects", project, "commits", commit, "manifest"]);
        Ok(self.inner.get(&url).await?.0)
    }

    /// `digests` carries each digest with its manifest `size`, so batches respect both limits.
    /// Batches run a few at a time; the answer lists objects and missing digests in batch order.
    pub async fn batch_get(&self, project: &str, digests: &[(Digest, u64)]) -> Result<BatchGetResponse> {
        let batches = batches(digests);
        let mut results: Vec<Option<BatchGetResponse>> = (0..batches.len()).map(|_| None).collect();
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = batches.into_iter().enumerate();
        loop {
            while tasks.len() < BATCH_CONCURRENCY {
                let Some((i, batch)) = pending.next() else { break };
                let inner = self.inner.clone();
                let project = project.to_owned();
                tasks.spawn(async move { (i, inner.batch_get(&project, batch).await) });
            }
            let Some(done) = tasks.join_next().await else { break };
            let (i, result) = done.map_err(|e| PlatformError::Transport(format!("a batch-get task failed: {e}")))?;
            // Dropping the JoinSet on error aborts the other batches.
            results[i] = Some(result?);
        }
        let mut out = BatchGetResponse { objects: Vec::new(), missing: Vec::new() };
        for r in results.into_iter().flatten() {
            out.objects.extend(r.objects);
            out.missing.extend(r.missing);
        }
        Ok(out)
    }

    pub async fn create_commit(&self, project: &str, body: Vec<u8>, idempotency_key: &str) -> Result<Commit> {
        let url = self.inner.url(&["v1", "projects", project, "commits"]);
        // The same key on every attempt makes the retries safe.
        let answer = self
            .inner
            .send(Method::POST, &url, Some(Bytes::from(body)), &[("idempotency-key", idempotency_key)])
            .await?;
        self.inner.parse(&Method::POST, &url, &answer)
    }

    /// `POST /v1/projects/{project}/runs` (contract v1.2, optional): a run's report.
    pub async fn post_run_report(&self, project: &str, body: Vec<u8>) -> Result<()> {
        let url = self.inner.url(&["v1", "projects", project, "runs"]);
        self.inner.send(Method::POST, &url, Some(Bytes::from(body)), &[]).await.map(drop)
    }

    pub async fn put_sync(&self, project: &str, if_match: &ETag, body: Vec<u8>) -> Result<(SyncRecord, ETag)> {
        let url = self.inner.url(&["v1", "projects", project, "sync"]);
        // Conditional on If-Match, so a retry after a lost answer at worst gets 412.
        let answer = self.inner.send(Method::PUT, &url, Some(Bytes::from(body)), &[("if-match", &if_match.0)]).await?;
        let record = self.inner.parse(&Method::PUT, &url, &answer)?;
        Ok((record, etag(&Method::PUT, &url, &answer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str, allow: bool) -> anyhow::Result<HttpClient> {
        HttpClient::new(url, ClientOptions { allow_insecure_http: allow, ..Default::default() })
    }

    #[test]
    fn plain_http_is_for_loopback_only() {
        for ok in [
            "http://127.0.0.1:8787",
            "http://127.1.2.3",
            "http://[::1]:80/",
            "http://LOCALHOST",
            "https://api.example.com",
        ] {
            assert!(client(ok, false).is_ok(), "{ok}");
        }
        let e = client("http://api.example.com", false).unwrap_err().to_string();
        assert!(e.contains("--allow-insecure-http") && e.contains("DEFSYNC_ALLOW_INSECURE_HTTP"), "{e}");
        assert!(client("http://10.0.0.1", false).is_err());
        assert!(client("http://api.example.com", true).is_ok());
        assert!(client("ftp://example.com", true).is_err());
        assert!(client("https://user:pw@example.com", false).is_err());
    }

    #[test]
    fn segments_are_encoded() {
        let c = client("https://api.example.com/base/", false).unwrap();
        assert_eq!(c.inner.url(&["v1", "projects", "p 1"]), "https://api.example.com/base/v1/projects/p%201");
    }

    #[test]
    fn batches_respect_both_limits() {
        let d = |i: usize| Digest::of_canonical(&i.to_string());
        let many: Vec<(Digest, u64)> = (0..2500).map(|i| (d(i), 10)).collect();
        assert_eq!(batches(&many).iter().map(Vec::len).collect::<Vec<_>>(), [1000, 1000, 500]);
        let big: Vec<(Digest, u64)> = (0..40).map(|i| (d(i), 1024 * 1024)).collect();
        assert_eq!(batches(&big).iter().map(Vec::len).collect::<Vec<_>>(), [16, 16, 8]);
        let dup = vec![(d(1), 1), (d(1), 1)];
        assert_eq!(batches(&dup), [vec![d(1)]]);
    }

    #[test]
    fn backoff_stays_within_its_bound() {
        for attempt in 1..40 {
            assert!(backoff(attempt) <= BACKOFF_CAP);
        }
    }

    #[test]
    fn debug_output_hides_the_key() {
        let c = HttpClient::new(
            "https://api.example.com",
            ClientOptions { api_key: Some("s3cret-key".into()), ..Default::default() },
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
