//! The sync benchmark: `cargo bench --bench sync` (not run by CI).
//!
//! For projects of 1,000, 10,000 and 100,000 definitions (about 1 KiB of YAML each; choose with
//! `DEFSYNC_BENCH_SIZES=1000,10000`) it reports scan and digest throughput, the wall time of
//! no-op `status`, `pull` and `push` against the embedded store and against `defsync serve`, a
//! pull and a push of 1% changes, the HTTP requests each makes, and peak memory. It prints a
//! Markdown table; the figures in the README come from it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use defsync::api::{Change, CreateCommit, Origin, OriginType};
use defsync::store::Store;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_defsync");
const PROJECT: &str = "bench";
const KEY: &str = "bench-key";

fn main() {
    let sizes: Vec<usize> = std::env::var("DEFSYNC_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!("| definitions | measure | platform | wall ms | HTTP requests | peak RSS MiB | notes |");
    println!("|---:|---|---|---:|---:|---:|---|");
    for n in sizes {
        bench(n);
    }
}

struct Row<'a> {
    n: usize,
    measure: &'a str,
    platform: &'a str,
    wall_ms: f64,
    requests: Option<u64>,
    rss_kib: Option<u64>,
    notes: String,
}

fn row(r: Row) {
    println!(
        "| {} | {} | {} | {:.0} | {} | {} | {} |",
        r.n,
        r.measure,
        r.platform,
        r.wall_ms,
        r.requests.map_or("-".into(), |v| v.to_string()),
        r.rss_kib.map_or("-".into(), |v| format!("{:.1}", v as f64 / 1024.0)),
        r.notes
    );
}

fn spec(i: usize, version: usize) -> Value {
    json!({
        "trigger": {"type": "event", "event": format!("record.updated.{}", i % 17)},
        "enabled": true,
        "retries": (i % 5) as u64,
        "version": version as u64,
        "steps": [
            {"id": "fetch", "action": "http.get", "url": format!("https://api.example.com/items/{i}")},
            {"id": "transform", "action": "code.run", "source": "export default function run(input) {\n  return input.items.filter((x) => x.enabled).map((x) => ({ id: x.id, name: x.name }));\n}\n"},
            {"id": "notify", "action": "slack.post_message", "channel": "#alerts", "text": format!("Item {i} changed; see the dashboard for details of what changed and who changed it.")},
        ],
        "description": "A generated definition for the benchmark. ".repeat(6),
    })
}

fn dashboard_commit(store: &Store, changes: Vec<Change>) {
    for chunk in changes.chunks(5000) {
        let (p, _) = store.project(PROJECT).unwrap();
        let body = CreateCommit {
            parent: p.head.map(|h| h.id),
            message: "bench".into(),
            origin: Origin { kind: OriginType::Dashboard, ..Default::default() },
            changes: chunk.to_vec(),
        };
        store.create_commit(PROJECT, &serde_json::to_vec(&body).unwrap(), None).unwrap();
    }
}

fn git(dir: &Path, gitconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", gitconfig)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Run {
    wall_ms: f64,
    report: Value,
}

fn defsync(work: &Path, gitconfig: &Path, platform: &str, args: &[&str]) -> Run {
    let start = Instant::now();
    let out = Command::new(BIN)
        .current_dir(work)
        .args(args)
        .arg("--json")
        .env("GIT_CONFIG_GLOBAL", gitconfig)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("DEFSYNC_PLATFORM", platform)
        .env("DEFSYNC_PROJECT", PROJECT)
        .env("DEFSYNC_PATH", "defs")
        .env("DEFSYNC_API_KEY", KEY)
        .env("DEFSYNC_LOG", "warn")
        .output()
        .unwrap();
    let wall_ms = start.elapsed().as_secs_f64() * 1000.0;
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{args:?} failed: {report}");
    Run { wall_ms, report }
}

fn record(n: usize, measure: &str, platform: &str, run: &Run) {
    let stats = &run.report["stats"];
    row(Row {
        n,
        measure,
        platform,
        wall_ms: run.wall_ms,
        requests: stats["http_requests"].as_u64(),
        rss_kib: stats["peak_rss_kib"].as_u64(),
        notes: format!(
            "status {}, {} changes",
            run.report["status"],
            run.report["changes"].as_array().map_or(0, Vec::len)
        ),
    });
}

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(store: &Path) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg(store)
        .args(["--key", KEY])
        .env("DEFSYNC_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(at) = line.find("http://") {
            break line[at..].trim().to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server(child, url)
}

fn bench(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let gitconfig = root.join("gitconfig");
    std::fs::write(&gitconfig, "[user]\n\tname = Bench\n\temail = bench@example.com\n[commit]\n\tgpgsign = false\n[init]\n\tdefaultBranch = main\n").unwrap();
    let store_path = root.join("store.db");
    let store = Store::open(&store_path).unwrap();
    store.put_project(PROJECT, "Bench").unwrap();
    let t = Instant::now();
    dashboard_commit(
        &store,
        (0..n)
            .map(|i| Change::Put {
                kind: "workflow".into(),
                name: format!("flow-{i:06}"),
                spec: spec(i, 1),
                blob: None,
            })
            .collect(),
    );
    let setup_ms = t.elapsed().as_secs_f64() * 1000.0;
    row(Row {
        n,
        measure: "platform setup (dashboard commits)",
        platform: "store",
        wall_ms: setup_ms,
        requests: None,
        rss_kib: None,
        notes: String::new(),
    });

    let origin = root.join("origin.git");
    let work: PathBuf = root.join("work");
    git(root, &gitconfig, &["init", "--quiet", "--bare", origin.to_str().unwrap()]);
    git(root, &gitconfig, &["clone", "--quiet", origin.to_str().unwrap(), work.to_str().unwrap()]);
    std::fs::write(work.join("README.md"), "bench\n").unwrap();
    git(&work, &gitconfig, &["add", "README.md"]);
    git(&work, &gitconfig, &["commit", "--quiet", "-m", "init"]);
    git(&work, &gitconfig, &["push", "--quiet", "origin", "main"]);
    let embedded = store_path.to_str().unwrap().to_owned();

    let first = defsync(&work, &gitconfig, &embedded, &["pull"]);
    record(n, "first pull (writes every file)", "embedded", &first);

    // Scan and digest throughput: a no-op status is dominated by reading and parsing every file.
    let bytes: u64 = walkdir::WalkDir::new(work.join("defs"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    let status = defsync(&work, &gitconfig, &embedded, &["status"]);
    let secs = status.wall_ms / 1000.0;
    row(Row {
        n,
        measure: "scan + digest (no-op status)",
        platform: "embedded",
        wall_ms: status.wall_ms,
        requests: status.report["stats"]["http_requests"].as_u64(),
        rss_kib: status.report["stats"]["peak_rss_kib"].as_u64(),
        notes: format!(
            "{:.0} files/s, {:.1} MiB/s, {:.0} bytes/file",
            n as f64 / secs,
            bytes as f64 / 1048576.0 / secs,
            bytes as f64 / n as f64
        ),
    });
    for cmd in ["pull", "push"] {
        let r = defsync(&work, &gitconfig, &embedded, &[cmd]);
        record(n, &format!("no-op {cmd}"), "embedded", &r);
    }

    let server = serve(&store_path);
    for cmd in ["status", "pull", "push"] {
        let r = defsync(&work, &gitconfig, &server.1, &[cmd]);
        record(n, &format!("no-op {cmd}"), "serve", &r);
    }

    // 1% changes, on each platform.
    let k = (n / 100).max(1);
    for (round, platform) in [(2usize, embedded.as_str()), (3, server.1.as_str())] {
        let label = if platform == embedded { "embedded" } else { "serve" };
        dashboard_commit(
            &store,
            (0..k)
                .map(|i| Change::Put {
                    kind: "workflow".into(),
                    name: format!("flow-{:06}", i * 100),
                    spec: spec(i * 100, round),
                    blob: None,
                })
                .collect(),
        );
        let r = defsync(&work, &gitconfig, platform, &["pull"]);
        record(n, &format!("pull of {k} changes (1%)"), label, &r);

        for i in 0..k {
            let f = work.join(format!("defs/workflow/flow-{:06}.yaml", i * 100 + 1));
            let text = std::fs::read_to_string(&f).unwrap();
            std::fs::write(&f, text.replacen("enabled: true", "enabled: false", 1)).unwrap();
        }
        git(&work, &gitconfig, &["commit", "--quiet", "-am", "edit 1%"]);
        git(&work, &gitconfig, &["push", "--quiet", "origin", "main"]);
        let r = defsync(&work, &gitconfig, platform, &["push"]);
        record(n, &format!("push of {k} changes (1%)"), label, &r);
        if round == 2 {
            // Undo the push's edits in Git so the next round's edits are changes again.
            for i in 0..k {
                let f = work.join(format!("defs/workflow/flow-{:06}.yaml", i * 100 + 1));
                let text = std::fs::read_to_string(&f).unwrap();
                std::fs::write(&f, text.replacen("enabled: false", "enabled: true", 1)).unwrap();
            }
            git(&work, &gitconfig, &["commit", "--quiet", "-am", "undo"]);
            git(&work, &gitconfig, &["push", "--quiet", "origin", "main"]);
            defsync(&work, &gitconfig, platform, &["push"]);
        }
    }
}
