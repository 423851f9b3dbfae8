//! The `serve` benchmark: `cargo bench --bench serve` (not run by CI; a release build).
//!
//! For one and two `defsync serve` processes on one store, SQLite and PostgreSQL, it measures
//! commits per second (8 clients, each committing one definition at a time on a project of its
//! own, so none loses a race) and no-op sync reads per second (8 clients, each doing what a
//! no-op sync reads: GET project, GET base, GET the head's manifest, on a project of 100
//! definitions). Clients go to the processes in turn. Each figure is also given as a ratio of
//! the one-process SQLite figure of the same run. PostgreSQL is `DEFSYNC_TEST_POSTGRES` (or the
//! default of `.ci/postgres.sh`), in a scratch schema dropped afterwards; without one, its rows
//! are left out. `DEFSYNC_BENCH_SECONDS` sets each measurement's length (default 3).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_defsync");
const KEY: &str = "bench-key";
const DEFAULT_POSTGRES: &str = "postgres://defsync:defsync@127.0.0.1:5432/defsync";
const CLIENTS: usize = 8;

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `serve` process on `store`, given through the environment so a URL's password stays off
/// the command line.
fn serve(store: &str) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--key", KEY])
        .env("DEFSYNC_STORE", store)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start defsync serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("serve exited before listening").unwrap();
        if let Some(url) = line.strip_prefix("defsync serve: listening on ") {
            break url.trim().to_owned();
        }
    };
    // Keep reading, so the process never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Server(child, url)
}

async fn call(http: &reqwest::Client, method: reqwest::Method, url: String, body: Option<&Value>) -> (u16, Value) {
    let mut req = http.request(method, url).bearer_auth(KEY);
    if let Some(body) = body {
        req = req.json(body);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Commits per second and no-op sync reads per second, through `urls` in turn.
async fn measure(urls: &[String], tag: &str, seconds: f64) -> (f64, f64) {
    let http = reqwest::Client::new();
    let put = reqwest::Method::PUT;
    let post = reqwest::Method::POST;
    // The project the reads sync: 100 definitions.
    let read_project = format!("{tag}-read");
    call(&http, put.clone(), format!("{}/v1/projects/{read_project}", urls[0]), Some(&json!({"name": "read"}))).await;
    let changes: Vec<Value> = (0..100)
        .map(|i| json!({"op": "put", "kind": "workflow", "name": format!("w{i:03}"), "spec": {"steps": [{"n": i}]}}))
        .collect();
    let body = json!({"parent": null, "message": "m", "origin": {"type": "dashboard"}, "changes": changes});
    let (status, _) =
        call(&http, post.clone(), format!("{}/v1/projects/{read_project}/commits", urls[0]), Some(&body)).await;
    assert_eq!(status, 201);

    let run = |work: Arc<dyn Fn(usize, String) -> tokio::task::JoinHandle<u64> + Send + Sync>| {
        let urls = urls.to_vec();
        async move {
            let tasks: Vec<_> = (0..CLIENTS).map(|c| work(c, urls[c % urls.len()].clone())).collect();
            let mut n = 0;
            for t in tasks {
                n += t.await.unwrap();
            }
            n
        }
    };
    let deadline = Duration::from_secs_f64(seconds);

    let commits = Arc::new(AtomicU64::new(0));
    let (http2, tag2, counter) = (http.clone(), tag.to_owned(), commits.clone());
    let started = Instant::now();
    run(Arc::new(move |c, url| {
        let (http, project, counter) = (http2.clone(), format!("{tag2}-c{c}"), counter.clone());
        tokio::spawn(async move {
            call(&http, reqwest::Method::PUT, format!("{url}/v1/projects/{project}"), Some(&json!({"name": "c"})))
                .await;
            let mut parent: Option<String> = None;
            let start = Instant::now();
            let mut i = 0;
            while start.elapsed() < deadline {
                let body = json!({"parent": parent, "message": "m", "origin": {"type": "dashboard"},
                    "changes": [{"op": "put", "kind": "workflow", "name": format!("w{}", i % 50), "spec": {"i": i}}]});
                let (status, commit) =
                    call(&http, reqwest::Method::POST, format!("{url}/v1/projects/{project}/commits"), Some(&body))
                        .await;
                assert_eq!(status, 201, "{commit}");
                parent = commit["id"].as_str().map(str::to_owned);
                counter.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            0
        })
    }))
    .await;
    let commits_per_s = commits.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();

    let (http3, read3) = (http.clone(), read_project.clone());
    let started = Instant::now();
    let syncs = run(Arc::new(move |_, url| {
        let (http, project) = (http3.clone(), read3.clone());
        tokio::spawn(async move {
            let mut n = 0;
            let start = Instant::now();
            while start.elapsed() < deadline {
                let (_, p) = call(&http, reqwest::Method::GET, format!("{url}/v1/projects/{project}"), None).await;
                let head = p["head"]["id"].as_str().unwrap().to_owned();
                let (s1, _) =
                    call(&http, reqwest::Method::GET, format!("{url}/v1/projects/{project}/sync/base"), None).await;
                let (s2, m) = call(
                    &http,
                    reqwest::Method::GET,
                    format!("{url}/v1/projects/{project}/commits/{head}/manifest"),
                    None,
                )
                .await;
                assert_eq!((s1, s2, m["entries"].as_array().map(Vec::len)), (200, 200, Some(100)));
                n += 1;
            }
            n
        })
    }))
    .await;
    (commits_per_s, syncs as f64 / started.elapsed().as_secs_f64())
}

fn main() {
    let seconds: f64 = std::env::var("DEFSYNC_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut stores: Vec<(&str, String)> = vec![("SQLite", dir.path().join("store.db").display().to_string())];

    let postgres = std::env::var("DEFSYNC_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.into());
    let schema = format!("defsync_bench_{}", std::process::id());
    match postgres::Client::connect(&postgres, postgres::NoTls) {
        Ok(mut c) => {
            c.batch_execute(&format!("CREATE SCHEMA {schema}")).unwrap();
            let sep = if postgres.contains('?') { '&' } else { '?' };
            stores.push(("PostgreSQL", format!("{postgres}{sep}options=-c%20search_path%3D{schema}")));
        }
        Err(e) => eprintln!("PostgreSQL left out: {e}; set DEFSYNC_TEST_POSTGRES (`.ci/postgres.sh` starts one)"),
    }

    println!(
        "| store | `serve` processes | commits/s | × SQLite, 1 process | no-op sync reads/s | × SQLite, 1 process |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut baseline = None;
    for (name, store) in &stores {
        for processes in [1, 2] {
            let servers: Vec<Server> = (0..processes).map(|_| serve(store)).collect();
            let urls: Vec<String> = servers.iter().map(|s| s.1.clone()).collect();
            let (commits, syncs) = runtime.block_on(measure(&urls, &format!("p{processes}"), seconds));
            let (c0, s0) = *baseline.get_or_insert((commits, syncs));
            println!("| {name} | {processes} | {commits:.0} | {:.2} | {syncs:.0} | {:.2} |", commits / c0, syncs / s0);
        }
    }
    if stores.len() > 1
        && let Ok(mut c) = postgres::Client::connect(&postgres, postgres::NoTls)
    {
        let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    }
}
