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
