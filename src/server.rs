//! `defsync serve`: the Sync API (contract part 3) over HTTP with axum, as a thin layer over the
//! SQLite [`Store`]. Handlers pass the raw request bodies to the store, so validation and
//! idempotency are exactly those of the embedded store.
//!
//! With a dispatch configured, a worker ([`autodispatch`]) also starts the pull workflow on
//! GitHub after every commit whose origin is not `git`.

mod autodispatch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub use autodispatch::AutoDispatch;

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;

use crate::api::{ApiError, ETag, OriginType};
use crate::store::Store;

/// The largest request body accepted. The contract asks for at least 64 MiB; a push splits its
/// commits at 32 MiB.
pub const MAX_BODY_BYTES: usize = 80 * 1024 * 1024;

pub struct ServeOptions {
    pub store: crate::store::StoreLocation,
    pub listen: SocketAddr,
    /// Accepted API keys; never logged.
    pub keys: Vec<String>,
    /// Start the pull workflow after every commit whose origin is not `git`.
    pub dispatch: Option<AutoDispatch>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("store", &self.store)
            .field("listen", &self.listen)
            .field("keys", &format_args!("[{} hidden]", self.keys.len()))
            .field("dispatch", &self.dispatch)
            .finish()
    }
}

/// Runs until SIGINT or SIGTERM, then finishes the requests in flight.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    if options.keys.iter().all(|k| k.is_empty()) {
        anyhow::bail!(
            "no API key: give one with --key <key> (repeatable) or DEFSYNC_SERVER_KEYS=<key1>,<key2>; \
             clients send it as DEFSYNC_API_KEY"
        );
    }
    let location = options.store.clone();
    let store =
        tokio::task::spawn_blocking(move || Store::open_location(&location)).await.context("opening the store")??;
    let store = Arc::new(store);
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
                "dispatch: after every commit not from git, start {} on {} in {} ({} pending from before, {} failed \
                 earlier)",
                crate::output::data(&config.workflow),
                crate::output::data(&config.git_ref),
                config.repository,
                count(crate::store::DispatchState::Pending),
                count(crate::store::DispatchState::Failed)
            );
            let wake = Arc::new(Notify::new());
            let worker = autodispatch::start(store.clone(), config, wake.clone())?;
            (Some(wake), Some(worker))
        }
        None => (None, None),
    };
    let app = build_router(store, &options.keys, wake);
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let addr = listener.local_addr()?;
    // The one line tests and scripts read to learn the port.
    eprintln!("defsync serve: listening on http://{addr}");
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.context("serving");
    if let Some(worker) = worker {
        // A dispatch cut off here stays pending in the outbox and is sent on the next start.
        worker.abort();
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing the requests in flight");
}

struct AppState {
    store: Arc<Store>,
    /// SHA-256 of each accepted key: comparing hashes takes the same time whatever the lengths.
    key_hashes: Vec<[u8; 32]>,
    /// Wakes the dispatch worker after a commit, when there is one.
    wake_dispatcher: Option<Arc<Notify>>,
}

/// The Sync API over `store`, accepting `keys` as bearer tokens.
pub fn router(store: Arc<Store>, keys: &[String]) -> Router {
    build_router(store, keys, None)
}

fn build_router(store: Arc<Store>, keys: &[String], wake_dispatcher: Option<Arc<Notify>>) -> Router {
    let state = Arc::new(AppState {
        store,
        key_hashes: keys.iter().filter(|k| !k.is_empty()).map(|k| Sha256::digest(k.as_bytes()).into()).collect(),
        wake_dispatcher,
    });
    Router::new()
        .route("/v1/projects/{project}", get(get_project).put(put_project))
        .route("/v1/projects/{project}/sync/base", get(get_base))
        .route("/v1/projects/{project}/sync", put(put_sync))
        .route("/v1/projects/{project}/commits", get(list_commits).post(create_commit))
        .route("/v1/projects/{project}/commits/{commit}", get(get_commit))
        .route("/v1/projects/{project}/commits/{commit}/manifest", get(get_manifest))
        .route("/v1/projects/{project}/objects/batch-get", post(batch_get))
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(access_log))
        .with_state(state)
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
    let (base, etag) = blocking(move || store.base(&project)).await?;
    with_etag(json(StatusCode::OK, &base), &etag)
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

async fn get_manifest(State(s): State<Arc<AppState>>, Path((project, commit)): Path<(String, String)>) -> Answer {
    let store = s.store.clone();
    // Serialised on the blocking thread too: a 100,000-entry manifest is megabytes of JSON.
    let body = blocking(move || {
        let manifest = store.manifest(&project, &commit)?;
        serde_json::to_vec(&manifest).map_err(|e| ApiError::new(500, "internal", e.to_string()))
    })
    .await?;
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // A manifest never changes.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    Ok(response)
}

async fn batch_get(State(s): State<Arc<AppState>>, Path(project): Path<String>, body: Bytes) -> Answer {
    let store = s.store.clone();
    let body = blocking(move || {
        let answer = store.batch_get(&project, &body)?;
        serde_json::to_vec(&answer).map_err(|e| ApiError::new(500, "internal", e.to_string()))
    })
    .await?;
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

async fn no_route() -> Failure {
    Failure(ApiError::new(404, "not_found", "no such endpoint of the Sync API (paths start with /v1/projects/)"))
}

/// Every request needs `Authorization: Bearer <key>` with a known key.
async fn authenticate(State(s): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match given {
        Some(key) if key_matches(key.as_bytes(), &s.key_hashes) => next.run(request).await,
        Some(_) => {
            Failure(ApiError::new(401, "unauthorized", "the API key is not known to this platform")).into_response()
        }
        None => Failure(ApiError::new(401, "unauthorized", "no API key: send the header Authorization: Bearer <key>"))
            .into_response(),
    }
}

/// Compares in constant time: every known key is checked, and no comparison stops early.
fn key_matches(given: &[u8], known: &[[u8; 32]]) -> bool {
    let given: [u8; 32] = Sha256::digest(given).into();
    let mut found = 0u8;
    for k in known {
        let diff = given.iter().zip(k).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        found |= u8::from(std::hint::black_box(diff) == 0);
    }
    found == 1
}

/// Gives axum's own error answers (unknown route, wrong method, body over the limit, ...) the
/// contract's JSON form, so clients parse every error the same way.
async fn json_errors(request: Request, next: Next) -> Response {
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

/// One line per request: method, path, status and time. Never headers, which carry the key.
async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::info!(
        "{method} {} {} {:.1}ms",
        crate::output::data(&path),
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly() {
        let known: Vec<[u8; 32]> = ["alpha", "beta"].iter().map(|k| Sha256::digest(k.as_bytes()).into()).collect();
        assert!(key_matches(b"alpha", &known));
        assert!(key_matches(b"beta", &known));
        for wrong in [&b"alph"[..], b"alphaa", b"", b"gamma"] {
            assert!(!key_matches(wrong, &known));
        }
        assert!(!key_matches(b"alpha", &[]));
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
            dispatch: None,
        };
        assert!(!format!("{o:?}").contains("secret"));
    }
}
