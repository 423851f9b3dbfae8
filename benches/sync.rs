//! The sync benchmark: `cargo bench --bench sync` (not run by CI).
//!
//! For projects of 10,000 and 100,000 definitions (about 880 bytes of YAML each; choose with
//! `DEFSYNC_BENCH_SIZES=1000,10000`) it reports the wall time of no-op `status`, `pull` and
//! `push` against the embedded store and against `defsync serve`, a pull and a push of 1%
//! changes, and a no-op `status` on a platform that keeps no blobs (contract v1.1). Every row
//! shows Git's own cost on the same tree, measured in the same run: `git add -A` into a fresh
//! index (`GIT_INDEX_FILE`), which reads and hashes every file; and the ratio of the two. It
//! keeps the HTTP requests, peak memory and files parsed of each run, and prints a Markdown
//! table; the figures in the README come from it.

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
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    // `DEFSYNC_BENCH_TABLES=first-pull` runs only the first-pull table.
    let tables = std::env::var("DEFSYNC_BENCH_TABLES").unwrap_or_default();
    if tables != "first-pull" {
        println!(
            "| definitions | run | platform | wall ms | `git add -A` ms | ratio | HTTP requests | peak RSS MiB | files parsed | notes |"
        );
        println!("|---:|---|---|---:|---:|---:|---:|---:|---:|---|");
        for &n in &sizes {
            bench(n);
        }
    }
    first_pulls(&sizes);
}

struct Row<'a> {
    n: usize,
    measure: &'a str,
    platform: &'a str,
    wall_ms: f64,
    /// Git's cost on the same tree in the same run, when the row is compared with it.
    git_ms: Option<f64>,
    requests: Option<u64>,
    rss_kib: Option<u64>,
    parsed: Option<u64>,
    notes: String,
}

fn row(r: Row) {
    let dash = || "-".to_owned();
    println!(
        "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
        r.n,
        r.measure,
        r.platform,
        r.wall_ms,
        r.git_ms.map_or_else(dash, |g| format!("{g:.0}")),
        r.git_ms.map_or_else(dash, |g| format!("{:.1}×", r.wall_ms / g)),
        r.requests.map_or_else(dash, |v| v.to_string()),
        r.rss_kib.map_or_else(dash, |v| format!("{:.1}", v as f64 / 1024.0)),
        r.parsed.map_or_else(dash, |v| v.to_string()),
        r.notes
    );
}

/// How many times each no-op run and the Git baseline are repeated; the median is shown.
const REPEAT: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Git's own cost on the tree: `git add -A` into a fresh index, which reads and hashes every
/// file of the work tree, as a no-op sync must at least prove it has. The median of [`REPEAT`].
fn git_add_baseline(work: &Path, gitconfig: &Path) -> f64 {
    let scratch = tempfile::tempdir().unwrap();
    let index = scratch.path().join("index");
    median(
        (0..REPEAT)
            .map(|_| {
                let _ = std::fs::remove_file(&index);
                let start = Instant::now();
                let out = Command::new("git")
                    .current_dir(work)
                    .args(["add", "-A"])
                    .env("GIT_INDEX_FILE", &index)
                    .env("GIT_CONFIG_GLOBAL", gitconfig)
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .output()
                    .unwrap();
                assert!(out.status.success(), "git add -A: {}", String::from_utf8_lossy(&out.stderr));
                start.elapsed().as_secs_f64() * 1000.0
            })
            .collect(),
    )
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

fn record(n: usize, measure: &str, platform: &str, run: &Run, git_ms: Option<f64>) {
    let stats = &run.report["stats"];
    row(Row {
        n,
        measure,
        platform,
        wall_ms: run.wall_ms,
        git_ms,
        requests: stats["http_requests"].as_u64(),
        rss_kib: stats["peak_rss_kib"].as_u64(),
        parsed: stats["files_parsed"].as_u64(),
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
    serve_with(BIN, store)
}

/// `serve` on `store` from the binary `bin`, once it has printed its address.
fn serve_with(bin: &str, store: &Path) -> Server {
    let mut child = Command::new(bin)
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
        git_ms: None,
        requests: None,
        rss_kib: None,
        parsed: None,
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
    record(n, "first pull (writes every file)", "embedded", &first, None);

    let git_ms = git_add_baseline(&work, &gitconfig);
    let server = serve(&store_path);
    for (platform, label) in [(embedded.as_str(), "embedded"), (server.1.as_str(), "serve")] {
        for cmd in ["status", "pull", "push"] {
            let runs: Vec<Run> = (0..REPEAT).map(|_| defsync(&work, &gitconfig, platform, &[cmd])).collect();
            let wall = median(runs.iter().map(|r| r.wall_ms).collect());
            let run = runs.into_iter().find(|r| r.wall_ms == wall).expect("the median is one of the runs");
            record(n, &format!("no-op {cmd}"), label, &run, Some(git_ms));
        }
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
        record(n, &format!("pull of {k} changes (1%)"), label, &r, Some(git_ms));

        for i in 0..k {
            let f = work.join(format!("defs/workflow/flow-{:06}.yaml", i * 100 + 1));
            let text = std::fs::read_to_string(&f).unwrap();
            std::fs::write(&f, text.replacen("enabled: true", "enabled: false", 1)).unwrap();
        }
        git(&work, &gitconfig, &["commit", "--quiet", "-am", "edit 1%"]);
        git(&work, &gitconfig, &["push", "--quiet", "origin", "main"]);
        let r = defsync(&work, &gitconfig, platform, &["push"]);
        record(n, &format!("push of {k} changes (1%)"), label, &r, Some(git_ms));
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

    // A platform that keeps no blobs (contract v1.1): every file is parsed, as before v1.2.
    drop(server);
    let db = rusqlite::Connection::open(&store_path).unwrap();
    db.execute("UPDATE base SET blob = NULL", []).unwrap();
    drop(db);
    let r = defsync(&work, &gitconfig, &embedded, &["status"]);
    record(n, "no-op status, platform without blobs (v1.1)", "embedded", &r, Some(git_ms));
}

/// First pulls (and a pull of 10% changes) next to Git writing the same tree, and what `serve`
/// spends on the reads of a no-op sync. Its own table: every row has the Git baseline measured
/// in the same run and the ratio. `DEFSYNC_BENCH_SERVE_BIN` runs another `defsync` binary as the
/// server (an older build, for a before/after comparison).
fn first_pulls(sizes: &[usize]) {
    println!();
    println!(
        "| definitions | run | platform | wall ms | Git baseline ms | ratio | HTTP requests | peak RSS MiB | notes |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---|");
    for &n in sizes.iter().filter(|&&n| n >= 10_000) {
        first_pull(n);
    }
}

#[allow(clippy::too_many_arguments)] // a table row
fn ratio_row(
    n: usize,
    run: &str,
    platform: &str,
    ms: f64,
    git_ms: f64,
    requests: Option<u64>,
    rss: Option<u64>,
    notes: &str,
) {
    println!(
        "| {n} | {run} | {platform} | {ms:.0} | {git_ms:.0} | {:.2} | {} | {} | {notes} |",
        ms / git_ms,
        requests.map_or("-".into(), |v| v.to_string()),
        rss.map_or("-".into(), |v| format!("{:.1}", v as f64 / 1024.0)),
    );
}

/// Copies the files of `from` below `rel` into `to`, keeping their paths.
fn copy_tree(from: &Path, to: &Path, rel: &str) {
    for e in walkdir::WalkDir::new(from.join(rel)).into_iter().filter_map(Result::ok) {
        let target = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else if e.file_type().is_file() {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// `git add -A && git commit` in `dir`, timed.
fn git_add_commit(dir: &Path, gitconfig: &Path) -> f64 {
    let start = Instant::now();
    git(dir, gitconfig, &["add", "-A"]);
    git(dir, gitconfig, &["commit", "--quiet", "-m", "baseline"]);
    start.elapsed().as_secs_f64() * 1000.0
}

fn first_pull(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let gitconfig = root.join("gitconfig");
    std::fs::write(&gitconfig, "[user]\n\tname = Bench\n\temail = bench@example.com\n[commit]\n\tgpgsign = false\n[init]\n\tdefaultBranch = main\n").unwrap();
    let store_path = root.join("store.db");
    let store = Store::open(&store_path).unwrap();
    store.put_project(PROJECT, "Bench").unwrap();
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
    let origin = root.join("origin.git");
    let work = root.join("work");
    git(root, &gitconfig, &["init", "--quiet", "--bare", origin.to_str().unwrap()]);
    git(root, &gitconfig, &["clone", "--quiet", origin.to_str().unwrap(), work.to_str().unwrap()]);
    std::fs::write(work.join("README.md"), "bench\n").unwrap();
    git(&work, &gitconfig, &["add", "README.md"]);
    git(&work, &gitconfig, &["commit", "--quiet", "-m", "init"]);
    git(&work, &gitconfig, &["push", "--quiet", "origin", "main"]);
    let embedded = store_path.to_str().unwrap().to_owned();

    let first = defsync(&work, &gitconfig, &embedded, &["pull"]);
    assert_eq!(first.report["changes"].as_array().map(Vec::len), Some(n));
    // The baseline: Git adding and committing the very files the pull wrote, in a fresh clone
    // of the same starting point.
    let baseline = root.join("baseline");
    git(root, &gitconfig, &["init", "--quiet", baseline.to_str().unwrap()]);
    copy_tree(&work, &baseline, "defs");
    let git_ms = git_add_commit(&baseline, &gitconfig);
    let stats = &first.report["stats"];
    ratio_row(
        n,
        "first pull (writes every file)",
        "embedded",
        first.wall_ms,
        git_ms,
        stats["http_requests"].as_u64(),
        stats["peak_rss_kib"].as_u64(),
        &format!("{} changes; baseline `git add -A && git commit`", n),
    );

    // 10% changes: a large pull that is not a first pull.
    let k = n / 10;
    dashboard_commit(
        &store,
        (0..k)
            .map(|i| Change::Put {
                kind: "workflow".into(),
                name: format!("flow-{:06}", i * 10),
                spec: spec(i * 10, 2),
                blob: None,
            })
            .collect(),
    );
    let pull = defsync(&work, &gitconfig, &embedded, &["pull"]);
    assert_eq!(pull.report["changes"].as_array().map(Vec::len), Some(k));
    for i in 0..k {
        let rel = format!("defs/workflow/flow-{:06}.yaml", i * 10);
        std::fs::copy(work.join(&rel), baseline.join(&rel)).unwrap();
    }
    let git_ms = git_add_commit(&baseline, &gitconfig);
    let stats = &pull.report["stats"];
    ratio_row(
        n,
        &format!("pull of {k} changes (10%)"),
        "embedded",
        pull.wall_ms,
        git_ms,
        stats["http_requests"].as_u64(),
        stats["peak_rss_kib"].as_u64(),
        "baseline `git add -A && git commit` of the same changes",
    );
    drop(store);
    serve_reads(n, &store_path, &work, &gitconfig);
}

/// A process's CPU time (user + system) in ms and its peak resident memory in KiB, from /proc.
fn process_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let hz = 100.0; // USER_HZ on Linux
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (ticks * 1000.0 / hz, hwm)
}

/// What `serve` spends on the reads of a no-op sync (project, base, the head's manifest) of an
/// `n`-definition project, against the bytes it sends: a first (cold) sync, then warm ones, then
/// a manifest asked for again with `If-None-Match`.
fn serve_reads(n: usize, store_path: &Path, work: &Path, gitconfig: &Path) {
    let bin = std::env::var("DEFSYNC_BENCH_SERVE_BIN").unwrap_or_else(|_| BIN.into());
    let server = serve_with(&bin, store_path);
    let pid = server.0.id();

    // The first sync is the real client: a no-op status, whose reads these are.
    let (cpu0, _) = process_usage(pid);
    let status = defsync(work, gitconfig, &server.1, &["status"]);
    assert_eq!(status.report["stats"]["http_requests"].as_u64(), Some(3));
    let cold_ms = status.wall_ms;
    let (cpu1, cold_hwm) = process_usage(pid);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let http = reqwest::Client::new();
    let get = |path: String, etag: Option<String>| {
        let http = http.clone();
        let url = format!("{}{path}", server.1);
        async move {
            let mut req = http.get(url).bearer_auth(KEY);
            if let Some(etag) = etag {
                req = req.header("if-none-match", etag);
            }
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let etag = res.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
            let body = res.bytes().await.unwrap();
            (status, etag, body)
        }
    };
    let sync = |if_none_match: Option<String>| {
        runtime.block_on(async {
            let (_, _, p) = get(format!("/v1/projects/{PROJECT}"), None).await;
            let p: Value = serde_json::from_slice(&p).unwrap();
            let head = p["head"]["id"].as_str().unwrap().to_owned();
            let (s1, _, base) = get(format!("/v1/projects/{PROJECT}/sync/base"), None).await;
            let (s2, etag, manifest) =
                get(format!("/v1/projects/{PROJECT}/commits/{head}/manifest"), if_none_match).await;
            assert_eq!(s1, 200);
            (s2, etag, p.to_string().len() + base.len() + manifest.len())
        })
    };
    const WARM: usize = 5;
    let t = Instant::now();
    let (s, etag, bytes) = sync(None);
    assert_eq!(s, 200);
    for _ in 1..WARM {
        sync(None);
    }
    let warm_ms = t.elapsed().as_secs_f64() * 1000.0 / WARM as f64;
    let (cpu2, _) = process_usage(pid);
    let t = Instant::now();
    let (s304, _, bytes304) = sync(etag.clone());
    let cached_ms = t.elapsed().as_secs_f64() * 1000.0;
    let (cpu3, hwm) = process_usage(pid);
    let mib = |b: usize| b as f64 / 1048576.0;
    let line = |run: &str, ms: f64, cpu: f64, bytes: usize, hwm: u64, extra: &str| {
        println!(
            "| {n} | {run} | serve | {ms:.0} | - | - | 3 | {:.1} | serve CPU {cpu:.0} ms for {:.1} MiB sent ({:.1} ms/MiB){extra} |",
            hwm as f64 / 1024.0,
            mib(bytes),
            cpu / mib(bytes).max(0.001),
        );
    };
    line("serve: reads of a no-op sync, first (`defsync status`)", cold_ms, cpu1 - cpu0, bytes, cold_hwm, "");
    line("serve: reads of a no-op sync, again", warm_ms, (cpu2 - cpu1) / WARM as f64, bytes, hwm, ", mean of 5");
    line(
        "serve: reads of a no-op sync, manifest `If-None-Match`",
        cached_ms,
        cpu3 - cpu2,
        bytes304,
        hwm,
        &format!(", manifest answered {s304}, ETag {}", etag.as_deref().unwrap_or("none")),
    );
}
