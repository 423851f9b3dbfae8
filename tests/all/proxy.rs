//! A forwarding proxy in front of a real `defsync serve`, to stage races at an exact moment: it
//! runs a hook just before it forwards the first request that matches.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::response::Response;

type Hook = Box<dyn FnOnce() + Send>;

struct Shared {
    upstream: String,
    client: reqwest::Client,
    /// (method, path suffix) that fires the hook.
    trigger: (String, String),
    hook: Mutex<Option<Hook>>,
    fired: AtomicBool,
}

pub struct Proxy {
    pub url: String,
    shared: Arc<Shared>,
    _runtime: tokio::runtime::Runtime,
}

impl Proxy {
    /// Forwards to `upstream`; runs `hook` (blocking) before forwarding the first `method`
    /// request whose path ends with `suffix`.
    pub fn start(upstream: &str, method: &str, suffix: &str, hook: impl FnOnce() + Send + 'static) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            trigger: (method.to_owned(), suffix.to_owned()),
            hook: Mutex::new(Some(Box::new(hook))),
            fired: AtomicBool::new(false),
        });
        let app = axum::Router::new().fallback(forward).with_state(shared.clone());
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Proxy { url: format!("http://{addr}"), shared, _runtime: runtime }
    }

    pub fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::SeqCst)
    }
}

async fn forward(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path_q = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    if method.as_str() == shared.trigger.0 && req.uri().path().ends_with(&shared.trigger.1) {
        let hook = shared.hook.lock().unwrap().take();
        if let Some(hook) = hook {
            tokio::task::spawn_blocking(hook).await.unwrap();
            shared.fired.store(true, Ordering::SeqCst);
        }
    }
    let headers = req.headers().clone();
    let body = to_bytes(req.into_body(), usize::MAX).await.unwrap();
    let mut out = shared.client.request(method, format!("{}{path_q}", shared.upstream));
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    let answer = out.body(body).send().await.unwrap();
    let mut response = Response::builder().status(answer.status());
    for (k, v) in answer.headers() {
        if k != "content-length" && k != "transfer-encoding" {
            response = response.header(k, v);
        }
    }
    response.body(Body::from(answer.bytes().await.unwrap())).unwrap()
}

/// A request as the faulty proxy received it; a fault may change it before it is forwarded.
#[derive(Debug, Clone)]
pub struct FaultRequest {
    pub method: axum::http::Method,
    /// Path and query.
    pub path: String,
    pub headers: axum::http::HeaderMap,
    pub body: axum::body::Bytes,
}

/// An answer on its way back; a fault may change it.
#[derive(Debug, Clone)]
pub struct FaultAnswer {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl FaultAnswer {
    pub fn json(status: u16, body: &serde_json::Value) -> FaultAnswer {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        FaultAnswer { status, headers, body: body.to_string().into_bytes() }
    }

    pub fn value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    pub fn set_value(&mut self, v: &serde_json::Value) {
        self.body = v.to_string().into_bytes();
    }
}

/// Changes a request, or answers it without forwarding (`Some`).
pub type OnRequest = Box<dyn Fn(&mut FaultRequest) -> Option<FaultAnswer> + Send + Sync>;
/// Changes an answer, or asks for another request to be forwarded in its place (`Some`), whose
/// answer is returned as it is.
pub type OnAnswer = Box<dyn Fn(&FaultRequest, &mut FaultAnswer) -> Option<FaultRequest> + Send + Sync>;

struct FaultShared {
    upstream: String,
    client: reqwest::Client,
    on_request: OnRequest,
    on_answer: OnAnswer,
}

/// A proxy in front of a real `defsync serve` that breaks one rule of the contract on purpose.
pub struct FaultProxy {
    pub url: String,
    _runtime: tokio::runtime::Runtime,
}

impl FaultProxy {
    pub fn start(upstream: &str, on_request: OnRequest, on_answer: OnAnswer) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let shared = Arc::new(FaultShared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            on_request,
            on_answer,
        });
        let app = axum::Router::new().fallback(forward_faulty).with_state(shared);
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FaultProxy { url: format!("http://{addr}"), _runtime: runtime }
    }
}

async fn send_upstream(shared: &FaultShared, req: &FaultRequest) -> FaultAnswer {
    let mut out = shared.client.request(req.method.clone(), format!("{}{}", shared.upstream, req.path));
    for (k, v) in &req.headers {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    match out.body(req.body.clone()).send().await {
        Ok(answer) => {
            let status = answer.status().as_u16();
            let mut headers = answer.headers().clone();
            headers.remove("content-length");
            headers.remove("transfer-encoding");
            let body = answer.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            FaultAnswer { status, headers, body }
        }
        Err(e) => FaultAnswer::json(502, &serde_json::json!({"error": {"code": "proxy", "message": e.to_string()}})),
    }
}

async fn forward_faulty(State(shared): State<Arc<FaultShared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let headers = req.headers().clone();
    let body = to_bytes(req.into_body(), usize::MAX).await.unwrap();
    let mut request = FaultRequest { method, path, headers, body };
    let answer = match (shared.on_request)(&mut request) {
        Some(answer) => answer,
        None => {
            let mut answer = send_upstream(&shared, &request).await;
            match (shared.on_answer)(&request, &mut answer) {
                Some(again) => send_upstream(&shared, &again).await,
                None => answer,
            }
        }
    };
    let mut response = Response::builder().status(answer.status);
    for (k, v) in &answer.headers {
        response = response.header(k, v);
    }
    response.body(Body::from(answer.body)).unwrap()
}
