//! `defsync serve`: the Sync API (contract part 3) over HTTP with axum, as a thin layer over the
//! SQLite [`Store`]. Handlers pass the raw request bodies to the store, so validation and
//! idempotency are exactly those of the embedded store.
//!
//! Every API request is authenticated by a key: a full-access key from `--key`, or a key kept in
//! the store with a scope and a project list, looked up on every request so that a revocation
//! holds from the next request on, in every process sharing the database. `GET /healthz` needs no
//! key; `GET /metrics` needs one unless it has a listen address of its own.
//!
//! With a dispatch configured, a worker ([`autodispatch`]) also starts the pull after every
//! commit whose origin is not `git`: a workflow on GitHub or a pipeline on GitLab, whichever of
//! the [`targets`] serves the project.

mod autodispatch;
pub mod dashboard;
pub mod metrics;
pub mod targets;
mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use autodispatch::AutoDispatch;
pub use webhooks::{MAX_WEBHOOK_BODY_BYTES, WebhookOptions, token_sha256};

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequestParts as _, MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::{Notify, watch};

use crate::api::{ApiError, ETag, OriginType};
use crate::output::data;
use crate::store::{Access, Store};
use metrics::Metrics;

/// The largest request body accepted. The contract asks for at least 64 MiB; a push splits its
/// commits at 32 MiB.
pub const MAX_BODY_BYTES: usize = 80 * 1024 * 1024;

/// How long a stopping server waits for the dispatch worker to finish the dispatch it is
/// sending. GitHub answers a dispatch in about a second; one cut off stays pending in the outbox
/// and is sent on the next start.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The route of `POST` batch-get, which only reads.
const BATCH_GET_ROUTE: &str = "/v1/projects/{project}/objects/batch-get";

pub struct ServeOptions {
    pub store: crate::store::StoreLocation,
    pub listen: SocketAddr,
    /// Full-access API keys (`--key`, `DEFSYNC_SERVER_KEYS`); never logged.
    pub keys: Vec<String>,
    /// Where `keys` came from (`--key`, `DEFSYNC_SERVER_KEYS`), for the start-up warning.
    pub keys_from: Vec<&'static str>,
    /// Start the pull workflow after every commit whose origin is not `git`.
    pub dispatch: Option<AutoDispatch>,
    /// Serve `GET /metrics` without a key on this address, and not on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// Log lines are JSON objects: the listening line is one too.
    pub json_logs: bool,
    /// Serve the web dashboard at `/` (`None`: no dashboard).
    pub dashboard: Option<dashboard::DashboardOptions>,
    /// Signed webhooks from the forges, for run status.
    pub webhooks: WebhookOptions,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("store", &self.store)
            .field("listen", &self.listen)
            .field("keys", &format_args!("[{} hidden]", self.keys.len()))
            .field("keys_from", &self.keys_from)
            .field("dispatch", &self.dispatch)
            .field("metrics_listen", &self.metrics_listen)
            .field("json_logs", &self.json_logs)
            .field("dashboard", &self.dashboard)
            .field("webhooks", &self.webhooks)
            .finish()
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Runs until SIGINT or SIGTERM. Then it accepts no new connection, finishes the requests in
/// flight, and lets the dispatch worker finish the dispatch it is sending (for at most
/// [`WORKER_STOP_TIMEOUT`]).
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let location = options.store.clone();
    let store =
        tokio::task::spawn_blocking(move || Store::open_location(&location)).await.context("opening the store")??;
    let store = Arc::new(store);
    let stored_keys = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.keys())
            .await?
            .map_err(|e| anyhow::anyhow!("reading the keys: {e}"))?
    };
    let now = unix_now();
    let active = stored_keys.iter().filter(|k| k.authorize(None, Access::Read, now).is_ok()).count();
    let keys: Vec<String> = options.keys.into_iter().filter(|k| !k.is_empty()).collect();
    let keys_from = options.keys_from;
    if keys.is_empty() && active == 0 {
        return Err(crate::error::Error::Config(
            "defsync serve needs an API key, and the store has none that is active: create one with \
             `defsync serve keys create --name <name> --scope write` (it prints the secret once), or give a \
             full-access key with --key <key> (repeatable) or DEFSYNC_SERVER_KEYS=<key1>,<key2>; clients then \
             send it as DEFSYNC_API_KEY"
                .into(),
        )
        .into());
    }
    let metrics = Arc::new(Metrics::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let hooks = if options.webhooks.any() {
        Some(Arc::new(
            webhooks::Webhooks::new(&options.webhooks, options.dispatch.as_ref())
                .context("the webhook configuration")?,
        ))
    } else {
        None
    };
    let (wake, worker) = match options.dispatch {
        Some(config) => {
            // On before the first request, so no commit goes without its dispatch.
            store.set_dispatch_outbox(true);
            let reader = store.clone();
            let counts = tokio::task::spawn_blocking(move || reader.dispatch_counts())
                .await
                .context("reading the dispatch outbox")?
                .map_err(|e| anyhow::anyhow!("reading the dispatch outbox: {e}"))?;
            let count = |state| counts.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n);
            tracing::info!(
                "dispatch: after every commit not from git, start {} ({} pending from before, {} failed earlier)",
                data(&config.describe()),
                count(crate::store::DispatchState::Pending),
                count(crate::store::DispatchState::Failed)
            );
            let wake = Arc::new(Notify::new());
            let worker = autodispatch::start(store.clone(), config, wake.clone(), stop_rx.clone(), metrics.clone())?;
            (Some(wake), Some(worker))
        }
        None => (None, None),
    };
    let state = Arc::new(AppState {
        store,
        key_hashes: keys.iter().map(|k| Sha256::digest(k.as_bytes()).into()).collect(),
        wake_dispatcher: wake,
        metrics,
        dashboard: options.dashboard.map(dashboard::Dashboard::new),
        webhooks: hooks.clone(),
        manifests: ManifestCache::new(MANIFEST_CACHE_BYTES),
    });
    // Deliveries recorded before a stop are processed now, then each as it arrives.
    let hook_task = hooks.map(|h| webhooks::start(state.store.clone(), h, stop_rx.clone()));
    let app = build_router(state.clone(), options.metrics_listen.is_none());
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let metrics_server = match options.metrics_listen {
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} for metrics"))?;
            let addr = listener.local_addr()?;
            announce(options.json_logs, &format!("defsync serve: metrics on http://{addr}/metrics"));
            let app = Router::new().route("/metrics", get(get_metrics)).with_state(state);
            let stop = stop_rx.clone();
            Some(tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stopped(stop)).await }))
        }
        None => None,
    };
    let signal = shutdown_signal()?;
    tokio::spawn(async move {
        signal.await;
        let _ = stop_tx.send(true);
    });
    let addr = listener.local_addr()?;
    // The one line tests and scripts read to learn the port.
    announce(options.json_logs, &format!("defsync serve: listening on http://{addr}"));
    // After the listening line, which scripts read first.
    if !keys.is_empty() {
        tracing::warn!(
            "{} API key(s) from {} may read and write every project, with no expiry. Prefer keys with a scope \
             and a project list, kept hashed in the store: `defsync serve keys create --name <name> --scope \
             read|write [--project <id>]`, then drop {}",
            keys.len(),
            keys_from.join(" and "),
            keys_from.join(" and ")
        );
    }
    tracing::info!("{active} active key(s) in the store");
    let served = axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx)).await.context("serving");
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    if let Some(task) = hook_task {
        // A delivery being processed is recorded: cut off, it is processed at the next start.
        let abort = task.abort_handle();
        if tokio::time::timeout(WORKER_STOP_TIMEOUT, task).await.is_err() {
            abort.abort();
        }
    }
    if let Some(worker) = worker {
        // The worker saw the same signal and stops between two dispatches.
        let abort = worker.abort_handle();
        match tokio::time::timeout(WORKER_STOP_TIMEOUT, worker).await {
            Ok(_) => tracing::info!("dispatch: the worker stopped"),
            Err(_) => {
                abort.abort();
                tracing::warn!(
                    "dispatch: the worker did not stop within {}s; the dispatch it was sending stays pending in \
                     the outbox and is sent on the next start",
                    WORKER_STOP_TIMEOUT.as_secs()
                );
            }
        }
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Prints a line that scripts read: plain on stderr, or one JSON log line.
fn announce(json_logs: bool, line: &str) {
    if json_logs {
        tracing::info!("{line}");
    } else {
        eprintln!("{line}");
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed now, before the listening line is
/// printed, so a signal sent as soon as it appears stops the server gracefully, not by default.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let (mut interrupt, mut terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        )
    };
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: no new connections; finishing the requests in flight");
    })
}

struct AppState {
    store: Arc<Store>,
    /// SHA-256 of each full-access key: comparing hashes takes the same time whatever the lengths.
    key_hashes: Vec<[u8; 32]>,
    /// Wakes the dispatch worker after a commit, when there is one.
    wake_dispatcher: Option<Arc<Notify>>,
    metrics: Arc<Metrics>,
    /// The web dashboard's sessions and settings, when it is served.
    dashboard: Option<dashboard::Dashboard>,
    /// Webhooks, when a secret is configured.
    webhooks: Option<Arc<webhooks::Webhooks>>,
    manifests: ManifestCache,
}

/// How many bytes of serialised manifests a `serve` process keeps: a 100,000-definition
/// manifest is about 13 MiB.
const MANIFEST_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The Sync API over `store`, accepting `keys` (full access) and the store's own keys as bearer
/// tokens, with `/metrics` behind a key.
pub fn router(store: Arc<Store>, keys: &[String]) -> Router {
    let state = Arc::new(AppState {
        store,
        key_hashes: keys.iter().filter(|k| !k.is_empty()).map(|k| Sha256::digest(k.as_bytes()).into()).collect(),
        wake_dispatcher: None,
        metrics: Arc::new(Metrics::new()),
        dashboard: None,
        webhooks: None,
        manifests: ManifestCache::new(MANIFEST_CACHE_BYTES),
    });
    build_router(state, true)
}

fn build_router(state: Arc<AppState>, metrics_behind_key: bool) -> Router {
    let mut api = Router::new()
        .route("/v1/projects/{project}", get(get_project).put(put_project))
        .route("/v1/projects/{project}/sync/base", get(get_base))
        .route("/v1/projects/{project}/sync", put(put_sync))
        .route("/v1/projects/{project}/commits", get(list_commits).post(create_commit))
        .route("/v1/projects/{project}/commits/{commit}", get(get_commit))
        .route("/v1/projects/{project}/commits/{commit}/manifest", get(get_manifest))
        .route(BATCH_GET_ROUTE, post(batch_get))
        .route("/v1/projects/{project}/dispatches", get(list_dispatches))
        .route("/v1/projects/{project}/runs", get(list_run_reports).post(post_run_report));
    if metrics_behind_key {
        api = api.route("/metrics", get(get_metrics));
    }
    let api = api
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    // Outside the key check: a forge signs its deliveries instead.
    let hooks = Router::new()
        .route("/v1/webhooks/github", post(webhooks::github))
        .route("/v1/webhooks/gitlab", post(webhooks::gitlab))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BODY_BYTES));
    let mut app =
        Router::new().route("/healthz", get(healthz)).merge(hooks).merge(api).layer(middleware::from_fn(json_errors));
    if state.dashboard.is_some() {
        // Outside the API's key check and JSON errors: the pages have a login and HTML errors.
        app = app.merge(dashboard::routes());
    }
    app.layer(middleware::from_fn_with_state(state.clone(), access_log)).with_state(state)
}

/// An error answer in the contract's form.
struct Failure(ApiError);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self.0.body())).into_response();
        if let Some(secs) = self.0.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

type Answer = Result<Response, Failure>;

/// Runs a store call off the async threads: SQLite blocks.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(Failure),
        Err(e) => Err(Failure(ApiError::new(500, "internal", format!("the request failed inside the server: {e}")))),
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    (status, axum::Json(value)).into_response()
}

fn with_etag(mut response: Response, etag: &ETag) -> Answer {
    let value = HeaderValue::from_str(&etag.0)
        .map_err(|_| Failure(ApiError::new(500, "internal", "the entity tag is not a valid header value")))?;
    response.headers_mut().insert(header::ETAG, value);
    Ok(response)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Failure> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| Failure(ApiError::new(422, "invalid", format!("the {name} header is not visible ASCII")))),
    }
}

async fn get_project(State(s): State<Arc<AppState>>, Path(project): Path<String>) -> Answer {
    let store = s.store.clone();
    let (p, etag) = blocking(move || store.project(&project)).await?;
    with_etag(json(StatusCode::OK, &p), &etag)
}

async fn put_project(State(s): State<Arc<AppState>>, Path(project): Path<String>, body: Bytes) -> Answer {
    let req: crate::api::PutProject = serde_json::from_slice(&body)
        .map_err(|e| Failure(ApiError::new(422, "invalid", format!("the body must be {{\"name\": string}}: {e}"))))?;
    let store = s.store.clone();
    let (p, created) = blocking(move || store.put_project(&project, &req.name)).await?;
    Ok(json(if created { StatusCode::CREATED } else { StatusCode::OK }, &p))
}

async fn get_base(State(s): State<Arc<AppState>>, Path(project): Path<String>) -> Answer {
    let store = s.store.clone();
    let (base, etag) = blocking(move || store.base_json(&project)).await?;
    let mut response = Response::new(Body::new(ChunkBody::new(base.into_chunks().into_iter().map(Bytes::from))));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    with_etag(response, &etag)
}

async fn put_sync(
    State(s): State<Arc<AppState>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let if_match = header_str(&headers, "if-match")?.map(str::to_owned);
    let store = s.store.clone();
    let (record, etag) = blocking(move || store.put_sync(&project, if_match.as_deref(), &body)).await?;
    with_etag(json(StatusCode::OK, &record), &etag)
}

/// `after_seq` and `limit` from the query string; anything else is ignored.
fn commits_query(query: Option<&str>) -> Result<(u64, u32), Failure> {
    let mut after_seq = 0;
    let mut limit = 0;
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || Failure(ApiError::new(422, "invalid", format!("{k} must be a non-negative integer, not {v:?}")));
        match k {
            "after_seq" => after_seq = v.parse().map_err(|_| bad())?,
            "limit" => limit = v.parse().map_err(|_| bad())?,
            _ => {}
        }
    }
    Ok((after_seq, limit))
}

async fn list_commits(State(s): State<Arc<AppState>>, Path(project): Path<String>, RawQuery(q): RawQuery) -> Answer {
    let (after_seq, limit) = commits_query(q.as_deref())?;
    let store = s.store.clone();
    let commits = blocking(move || store.commits(&project, after_seq, limit)).await?;
    Ok(json(StatusCode::OK, &commits))
}

async fn create_commit(
    State(s): State<Arc<AppState>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let key = header_str(&headers, "idempotency-key")?.map(str::to_owned);
    let store = s.store.clone();
    let commit = blocking(move || store.create_commit(&project, &body, key.as_deref())).await?;
    s.metrics.commit(match commit.origin.kind {
        OriginType::Dashboard => "dashboard",
        OriginType::Git => "git",
        OriginType::Api => "api",
    });
    if let Some(wake) = &s.wake_dispatcher
        && commit.origin.kind != OriginType::Git
    {
        // The row is already committed; this only saves the worker's poll interval.
        wake.notify_one();
    }
    Ok(json(StatusCode::CREATED, &commit))
}

async fn get_commit(State(s): State<Arc<AppState>>, Path((project, commit)): Path<(String, String)>) -> Answer {
    let store = s.store.clone();
    let commit = blocking(move || store.commit(&project, &commit)).await?;
    Ok(json(StatusCode::OK, &commit))
}

/// A manifest's entity tag: its commit's ID, which names it for ever.
fn manifest_etag(commit: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("\"{commit}\"")).ok()
}

/// Whether an `If-None-Match` header names `etag` (weak comparison, as RFC 9110 asks for this
/// header) or is `*`.
fn none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().unwrap_or_default();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours))
}

async fn get_manifest(
    State(s): State<Arc<AppState>>,
    Path((project, commit)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let etag = manifest_etag(&commit);
    let key = (project, commit);
    let cached = s.manifests.get(&key);
    let revalidated = etag.as_ref().is_some_and(|e| none_match(&headers, e));
    let body = match cached {
        Some(body) => Some(body),
        None if revalidated => {
            // Only whether the commit exists: a 304 never builds the manifest.
            let store = s.store.clone();
            let (project, commit) = key.clone();
            blocking(move || store.commit(&project, &commit)).await?;
            None
        }
        None => {
            let store = s.store.clone();
            let (project, commit) = key.clone();
            // Serialised on the blocking thread too: a 100,000-entry manifest is megabytes of JSON.
            let body = blocking(move || store.manifest_json(&project, &commit)).await?;
            let body: ManifestBody = body.into_chunks().into_iter().map(Bytes::from).collect();
            s.manifests.put(key, body.clone());
            Some(body)
        }
    };
    let mut response = match body {
        Some(_) if revalidated => Response::new(Body::empty()),
        Some(body) => Response::new(Body::new(ChunkBody::new(body.iter().cloned()))),
        None => Response::new(Body::empty()),
    };
    if revalidated {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
    } else {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    // A manifest never changes.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

async fn batch_get(State(s): State<Arc<AppState>>, Path(project): Path<String>, body: Bytes) -> Answer {
    let store = s.store.clone();
    // Written object by object: only one definition's spec is ever a parsed value.
    let body = blocking(move || store.batch_get_json(&project, &body)).await?;
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// `GET /v1/projects/{project}/dispatches`: the project's outbox rows, oldest first, with the
/// status of the run each started (an extension of `serve`, for operators and tests).
async fn list_dispatches(State(s): State<Arc<AppState>>, Path(project): Path<String>) -> Answer {
    let store = s.store.clone();
    let rows = blocking(move || {
        store.project(&project)?;
        store.dispatch_outbox(Some(&project))
    })
    .await?;
    let rows: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id,
                "commit": r.commit_id,
                "seq": r.seq,
                "created_at": r.created_at,
                "state": r.state.as_str(),
                "attempts": r.attempts,
                "last_error": r.last_error,
                "done_at": r.done_at,
                "coalesced_into": r.coalesced_into,
                "forge": r.forge,
                "target": r.target,
                "run_id": r.run_id,
                "run_url": r.run_url,
                "run_status": r.run_status.map(|s| s.as_str()),
                "run_conclusion": r.run_conclusion,
                "run_updated_at": r.run_updated_at,
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "dispatches": rows })))
}

/// `POST /v1/projects/{project}/runs` (contract v1.2): a run's report, 201 with its ID.
async fn post_run_report(State(s): State<Arc<AppState>>, Path(project): Path<String>, body: Bytes) -> Answer {
    use crate::store::MAX_RUN_REPORT_BYTES;
    if body.len() > MAX_RUN_REPORT_BYTES {
        return Err(Failure(ApiError::new(
            413,
            "payload_too_large",
            format!(
                "the run report is over this platform's limit of {} MiB: leave out conflicts until it fits",
                MAX_RUN_REPORT_BYTES / (1024 * 1024)
            ),
        )));
    }
    let store = s.store.clone();
    let id = blocking(move || {
        store.project(&project)?;
        let report: crate::api::RunReport =
            crate::store::strict::parse(&body).map_err(|e| ApiError::new(422, "invalid", e))?;
        store.add_run_report(&project, &report)
    })
    .await?;
    Ok(json(StatusCode::CREATED, &serde_json::json!({ "id": id })))
}

/// `GET /v1/projects/{project}/runs?limit=N`: the newest reports first (at most 100 are kept).
async fn list_run_reports(
    State(s): State<Arc<AppState>>,
    Path(project): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let (_, limit) = commits_query(q.as_deref())?;
    let limit = if limit == 0 { 20 } else { limit.min(crate::store::MAX_RUN_REPORTS_KEPT as u32) };
    let store = s.store.clone();
    let reports = blocking(move || store.run_reports(&project, limit)).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "runs": reports })))
}

/// A serialised manifest, in the chunks it was written in.
type ManifestBody = Arc<[Bytes]>;

/// Serialised manifests by project and commit, the least recently used dropped first once they
/// hold more than their budget of bytes. Manifests never change, so an entry is never stale.
struct ManifestCache {
    budget: usize,
    inner: std::sync::Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    used: usize,
    clock: u64,
    entries: std::collections::HashMap<(String, String), (ManifestBody, u64)>,
}

impl ManifestCache {
    fn new(budget: usize) -> Self {
        ManifestCache { budget, inner: std::sync::Mutex::new(CacheInner::default()) }
    }

    fn get(&self, key: &(String, String)) -> Option<ManifestBody> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.clock += 1;
        let now = inner.clock;
        let (body, used) = inner.entries.get_mut(key)?;
        *used = now;
        Some(body.clone())
    }

    fn put(&self, key: (String, String), body: ManifestBody) {
        let size = |b: &[Bytes]| b.iter().map(Bytes::len).sum::<usize>();
        if size(&body) > self.budget {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.clock += 1;
        let now = inner.clock;
        inner.used += size(&body);
        if let Some((old, _)) = inner.entries.insert(key, (body, now)) {
            inner.used -= size(&old);
        }
        while inner.used > self.budget {
            // A linear scan: the budget holds few large manifests, and many small ones are cheap.
            let Some(oldest) = inner.entries.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some((old, _)) = inner.entries.remove(&oldest) {
                inner.used -= size(&old);
            }
        }
    }
}

/// An answer written as [`crate::store::Chunks`], sent a chunk at a time, with its length
/// known up front. A chunk is freed once sent, unless the manifest cache holds it too.
struct ChunkBody {
    chunks: std::collections::VecDeque<Bytes>,
    left: u64,
}

impl ChunkBody {
    fn new(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        let chunks: std::collections::VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let left = chunks.iter().map(|c| c.len() as u64).sum();
        ChunkBody { chunks, left }
    }
}

impl http_body::Body for ChunkBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let chunk = self.chunks.pop_front();
        if let Some(c) = &chunk {
            self.left -= c.len() as u64;
        }
        std::task::Poll::Ready(chunk.map(|c| Ok(http_body::Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

async fn no_route() -> Failure {
    Failure(ApiError::new(404, "not_found", "no such endpoint of the Sync API (paths start with /v1/projects/)"))
}

/// `GET /healthz`: whether the store answers. No key, and no secret in the answer: a load
/// balancer or an orchestrator calls it.
async fn healthz(State(s): State<Arc<AppState>>) -> Response {
    let store = s.store.clone();
    match blocking(move || store.ping()).await {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        Err(Failure(e)) => {
            let reason = redact_userinfo(&format!("the store does not answer: {}", e.message));
            tracing::warn!("health check failed: {}", data(&reason));
            json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"status": "unavailable", "reason": reason}))
        }
    }
}

/// Hides the user and password of any `scheme://user:password@host` in `text`: a store's error
/// may quote its connection URL.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        let authority_end = after.find(|c: char| c == '/' || c.is_whitespace()).unwrap_or(after.len());
        match after[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &after[at..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// `GET /metrics`, in the OpenMetrics text format.
async fn get_metrics(State(s): State<Arc<AppState>>) -> Answer {
    let (store, m) = (s.store.clone(), s.metrics.clone());
    let text = blocking(move || m.encode(&store)).await?;
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
    Ok(response)
}

/// Who made a request, for the access log: a stored key's name, or `--key #N` for the N-th
/// full-access key. Never the key itself.
#[derive(Clone)]
struct KeyName(String);

/// What a request needs of its key: `GET` and batch-get read, everything else writes. A request
/// that matches no route reads, so it gets its 404 whatever the key.
fn access_needed(method: &Method, route: Option<&str>) -> Access {
    match route {
        None => Access::Read,
        Some(_) if method == Method::GET || method == Method::HEAD => Access::Read,
        Some(BATCH_GET_ROUTE) => Access::Read,
        Some(_) => Access::Write,
    }
}

/// Every API request needs `Authorization: Bearer <key>` with a key that may do what the request
/// does, on its project.
async fn authenticate(State(s): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|v| v.trim().to_owned());
    let Some(secret) = given else {
        return Failure(ApiError::new(401, "unauthorized", "no API key: send the header Authorization: Bearer <key>"))
            .into_response();
    };
    if let Some(n) = key_index(secret.as_bytes(), &s.key_hashes) {
        let mut response = next.run(request).await;
        response.extensions_mut().insert(KeyName(format!("--key #{}", n + 1)));
        return response;
    }
    let (mut parts, body) = request.into_parts();
    let route = parts.extensions.get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let access = access_needed(&parts.method, route.as_deref());
    let project = Path::<HashMap<String, String>>::from_request_parts(&mut parts, &())
        .await
        .ok()
        .and_then(|Path(mut params)| params.remove("project"));
    let store = s.store.clone();
    // Looked up on every request, so a revocation holds from the next request on, in every
    // process; the lookup is one indexed read.
    let found = match blocking(move || store.key_by_secret(&secret)).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let Some(key) = found else {
        return Failure(ApiError::new(401, "unauthorized", "the API key is not known to this platform"))
            .into_response();
    };
    let name = KeyName(key.name.clone());
    let mut response = match key.authorize(project.as_deref(), access, unix_now()) {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
        Err(refusal) => Failure(refusal).into_response(),
    };
    response.extensions_mut().insert(name);
    response
}

/// Which full-access key `given` is, in constant time: every known key is checked, and no
/// comparison stops early.
fn key_index(given: &[u8], known: &[[u8; 32]]) -> Option<usize> {
    let given: [u8; 32] = Sha256::digest(given).into();
    let mut found = None;
    for (i, k) in known.iter().enumerate() {
        let diff = given.iter().zip(k).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if std::hint::black_box(diff) == 0 {
            found = Some(i);
        }
    }
    found
}

/// Gives axum's own error answers (unknown route, wrong method, body over the limit, ...) the
/// contract's JSON form, so clients parse every error the same way.
async fn json_errors(request: Request, next: Next) -> Response {
    let webhook = request.uri().path().starts_with("/v1/webhooks/");
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint of the Sync API".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this endpoint does not take that method".into()),
        StatusCode::PAYLOAD_TOO_LARGE if webhook => (
            "payload_too_large",
            format!("the webhook body is over this server's limit of {} MiB", MAX_WEBHOOK_BODY_BYTES / (1024 * 1024)),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            format!("the request body is over this platform's limit of {} MiB", MAX_BODY_BYTES / (1024 * 1024)),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "send the body as application/json".into()),
        s if s.is_server_error() => ("internal", format!("the server failed ({s})")),
        s => ("bad_request", format!("the request was refused ({s})")),
    };
    let mut out = Failure(ApiError::new(status.as_u16(), code, message)).into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

/// One line per request: method, route, path, status, time and the key's name, never a header
/// (they carry the key). Feeds the request metrics too.
async fn access_log(State(s): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // The template, never the raw path, so the metrics keep one series per route.
    let route = request.extensions().get::<MatchedPath>().map_or("(none)", |m| m.as_str()).to_owned();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let key = response.extensions().get::<KeyName>().map_or("-", |k| k.0.as_str());
    s.metrics.request(method.as_str(), &route, status, elapsed);
    tracing::info!(
        method = %method,
        route = %route,
        path = %data(&path),
        status,
        duration_ms = (elapsed.as_secs_f64() * 10_000.0).round() / 10.0,
        key = %data(key),
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly() {
        let known: Vec<[u8; 32]> = ["alpha", "beta"].iter().map(|k| Sha256::digest(k.as_bytes()).into()).collect();
        assert_eq!(key_index(b"alpha", &known), Some(0));
        assert_eq!(key_index(b"beta", &known), Some(1));
        for wrong in [&b"alph"[..], b"alphaa", b"", b"gamma"] {
            assert_eq!(key_index(wrong, &known), None);
        }
        assert_eq!(key_index(b"alpha", &[]), None);
    }

    #[test]
    fn reads_and_writes_are_told_apart_by_route_and_method() {
        let project = Some("/v1/projects/{project}");
        assert_eq!(access_needed(&Method::GET, project), Access::Read);
        assert_eq!(access_needed(&Method::PUT, project), Access::Write);
        assert_eq!(access_needed(&Method::POST, Some("/v1/projects/{project}/commits")), Access::Write);
        assert_eq!(access_needed(&Method::PUT, Some("/v1/projects/{project}/sync")), Access::Write);
        assert_eq!(access_needed(&Method::POST, Some(BATCH_GET_ROUTE)), Access::Read);
        assert_eq!(access_needed(&Method::DELETE, project), Access::Write);
        assert_eq!(access_needed(&Method::POST, None), Access::Read, "no route: the answer is a 404");
    }

    #[test]
    fn health_reasons_never_show_a_password() {
        assert_eq!(
            redact_userinfo("cannot connect to postgres://app:s3cret@db:5432/defsync: refused"),
            "cannot connect to postgres://***@db:5432/defsync: refused"
        );
        assert_eq!(redact_userinfo("see https://example.com/a@b"), "see https://example.com/a@b");
        assert_eq!(redact_userinfo("no url here"), "no url here");
    }

    #[test]
    fn commit_queries_parse() {
        assert_eq!(commits_query(None).ok(), Some((0, 0)));
        assert_eq!(commits_query(Some("after_seq=5&limit=20&x=y")).ok(), Some((5, 20)));
        assert!(commits_query(Some("limit=-1")).is_err());
    }

    #[test]
    fn options_never_show_keys() {
        let o = ServeOptions {
            store: crate::store::StoreLocation::Sqlite("s.db".into()),
            listen: "127.0.0.1:0".parse().unwrap(),
            keys: vec!["secret".into()],
            keys_from: vec!["--key"],
            dispatch: None,
            metrics_listen: None,
            json_logs: false,
            dashboard: None,
            webhooks: WebhookOptions {
                github_secret: Some("hooksecret".into()),
                gitlab_read_token: Some("glpat-secret".into()),
                ..Default::default()
            },
        };
        assert!(!format!("{o:?}").contains("secret"));
    }
}
