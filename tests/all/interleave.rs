//! Randomized interleavings (issue 8 §5): dashboard edits, pushes from two Git clones, pull and
//! push runs (some two at once, some killed), 429, 503 and lost responses from a fault proxy, and
//! restarts of `serve`, all from one seed. Each seed ends with a clean pull and push, and checks
//! convergence, that no update was lost, that no Git commit became two platform commits, and that
//! the origin's `main` only moved forward.
//!
//! `DEFSYNC_INTERLEAVE_SEEDS=N` runs N seeds from 1 (default 3; `DEFSYNC_INTERLEAVE_FIRST` moves
//! the start, to split a long run across processes), `DEFSYNC_INTERLEAVE_SEED=S` replays
//! one, `DEFSYNC_INTERLEAVE_STEPS` sets the steps per seed (default 20), and
//! `DEFSYNC_INTERLEAVE_TRACE=1` prints every seed's trace. The operations and the proxy's faults
//! are drawn from the seed, but concurrent processes follow the machine's timing, so a replay
//! makes the same draws and usually, not always, takes the same path.
//!
//! **What "no lost update" means.** Every edit carries a value used once (`{"v": "d7"}` from the
//! dashboard, `a3`/`b3` from the clones). A dashboard edit is *made* when its command succeeds,
//! and its author saw the platform's value of the key; a Git edit is made when the clone's
//! `git push` reaches the origin, and its author saw the origin's value it rebased onto (a clone
//! that loses the race fetches and makes its edits again on the new tip, keeping its own version
//! where both changed a key). An edit *supersedes*
//! the earlier edits of its own side, and those of the other side whose value its author saw. A
//! run with `--on-conflict prefer-git|prefer-platform` (run alone, never killed) that reports a
//! conflict on a key is a person's decision: it supersedes every earlier edit of the key, with the
//! preferred side's version from its report. At the end, each key must hold the value of an edit
//! not superseded (absent if none): the exact one when there is one. Two can remain, one per side,
//! when neither author saw the other's edit and one side came back to the agreed state (say a
//! dashboard put, then a delete, while Git changed the key): the three-way rule of the contract
//! then keeps the side that changed, with no conflict, and either is accepted. Runs that may be
//! killed use `--on-conflict fail`, which changes nothing on a conflict, so no conflict is
//! resolved unseen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use defsync::api::client::{ClientOptions, HttpClient};
use defsync::api::{Change, CreateCommit, Origin, OriginType};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::faults::{FaultProxy, Rates, splitmix};
use crate::server::ServerProcess;
use crate::support::{Env, PROJECT};

const KEY: &str = "interleave-key";
const KEYS: [(&str, &str); 8] = [
    ("workflow", "w0"),
    ("workflow", "w1"),
    ("workflow", "w2"),
    ("workflow", "w3"),
    ("workflow", "w4"),
    ("connection", "c0"),
    ("connection", "c1"),
    ("connection", "c2"),
];
const RATES: Rates = Rates { too_many: 0.05, unavailable: 0.04, lost_response: 0.06, lost_request: 0.02 };
const RETRY_FOR: &str = "30";

type Key = (String, String);

fn key_text(k: &Key) -> String {
    format!("{}/{}", k.0, k.1)
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

#[test]
fn interleave_randomized_runs_converge_without_lost_updates() {
    let seeds: Vec<u64> = match env_u64("DEFSYNC_INTERLEAVE_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("DEFSYNC_INTERLEAVE_FIRST").unwrap_or(1);
            (first..first + env_u64("DEFSYNC_INTERLEAVE_SEEDS").unwrap_or(3)).collect()
        }
    };
    let steps = env_u64("DEFSYNC_INTERLEAVE_STEPS").unwrap_or(20) as usize;
    let mut failed = Vec::new();
    for seed in seeds {
        let trace = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let t = trace.clone();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_seed(seed, steps, t))) {
            Ok(summary) => {
                eprintln!("interleave: seed {seed} ok in {:.1}s: {summary}", started.elapsed().as_secs_f64())
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                eprintln!(
                    "interleave: seed {seed} FAILED: {msg}\n--- trace of seed {seed} ---\n{}\n--- replay with: \
                     DEFSYNC_INTERLEAVE_SEED={seed} DEFSYNC_INTERLEAVE_STEPS={steps} cargo test interleave -- --nocapture",
                    trace.lock().unwrap().join("\n")
                );
                failed.push(seed);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "interleave: failing seeds {failed:?}; replay one with DEFSYNC_INTERLEAVE_SEED=<seed> \
         DEFSYNC_INTERLEAVE_STEPS={steps} cargo test interleave -- --nocapture"
    );
}

/// splitmix64, seeded: the test's only source of choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        (splitmix(&mut self.0) % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (splitmix(&mut self.0) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Dashboard,
    Git,
    /// A run with `--on-conflict prefer-*`: a person's decision on a reported conflict.
    Resolution,
}

/// What the test knows about one key: the edits not superseded yet (`None`: a deletion).
#[derive(Debug, Default)]
struct KeyModel {
    live: Vec<(Side, Option<String>)>,
    history: Vec<String>,
}

impl KeyModel {
    /// Adds an edit whose author saw `seen` on their side. It supersedes the earlier edits of
    /// its side, and those of the other side that had reached it (their value is what the
    /// author saw). A resolution supersedes everything before it.
    fn add(&mut self, side: Side, value: Option<String>, seen: &Option<String>) {
        match side {
            Side::Resolution => self.live.clear(),
            _ => self.live.retain(|(s, v)| *s != side && v != seen),
        }
        self.live.push((side, value));
    }

    /// The values the key may end with.
    fn allowed(&self) -> Vec<Option<String>> {
        let mut v: Vec<Option<String>> = self.live.iter().map(|(_, v)| v.clone()).collect();
        v.dedup();
        if v.is_empty() { vec![None] } else { v }
    }
}

struct RunOutcome {
    id: usize,
    command: &'static str,
    prefer: Option<&'static str>,
    /// `None`: killed.
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

struct GitClone {
    dir: PathBuf,
    tag: char,
    /// Committed, not yet on the origin: (key, value) in order.
    pending: Vec<(Key, Option<String>)>,
}

#[derive(Default, Debug)]
struct Stats {
    runs: usize,
    concurrent: usize,
    killed: usize,
    failed: usize,
    conflicts: usize,
    resolutions: usize,
    dashboard: usize,
    git_pushes: usize,
    rebases: usize,
    restarts: usize,
    /// Keys that ended with edits from both sides that neither saw (either may win).
    concurrent_edits: usize,
}

struct World {
    seed: u64,
    /// Holds the store of `serve`.
    _store: tempfile::TempDir,
    rng: Rng,
    env: Env,
    server: ServerProcess,
    proxy: FaultProxy,
    rt: tokio::runtime::Runtime,
    clones: Vec<GitClone>,
    model: BTreeMap<Key, KeyModel>,
    clock: u64,
    next_value: usize,
    next_run: usize,
    running: Vec<JoinHandle<RunOutcome>>,
    conflict_seen: bool,
    final_phase: bool,
    trace: Arc<Mutex<Vec<String>>>,
    started: Instant,
    stats: Stats,
}

fn run_seed(seed: u64, steps: usize, trace: Arc<Mutex<Vec<String>>>) -> String {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("store.db"), KEY);
    let proxy = FaultProxy::start(&server.url(), seed, RATES);
    let env = Env::on_server(&proxy.url, KEY);
    // A reflog on the bare origin records every move of `main`, by any process, for the
    // fast-forward check at the end.
    env.git_in(&env.origin, &["config", "core.logAllRefUpdates", "always"]);
    // A file that is not a definition keeps the sync root when a clone deletes the last one
    // (push refuses a missing sync root, rightly).
    env.write("defs/README.md", "Definitions\n");
    env.commit_and_push("sync root");
    let b = env.second_clone("clone-b");
    std::fs::create_dir_all(env.dir.path().join("logs")).unwrap();
    std::fs::create_dir_all(env.dir.path().join("template")).unwrap();
    let clones = vec![
        GitClone { dir: env.work.clone(), tag: 'a', pending: Vec::new() },
        GitClone { dir: b, tag: 'b', pending: Vec::new() },
    ];
    let mut w = World {
        seed,
        _store: dir,
        rng: Rng(seed),
        env,
        server,
        proxy,
        rt: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
        clones,
        model: BTreeMap::new(),
        clock: 0,
        next_value: 0,
        next_run: 0,
        running: Vec::new(),
        conflict_seen: false,
        final_phase: false,
        trace,
        started,
        stats: Stats::default(),
    };
    w.log("set up".into());
    w.proxy.set_faults(true);
    for _ in 0..steps {
        w.step();
    }
    w.finish();
    if std::env::var_os("DEFSYNC_INTERLEAVE_TRACE").is_some() {
        eprintln!("{}", w.trace.lock().unwrap().join("\n"));
    }
    let summary = format!("{:?}, proxy {:?}", w.stats, w.proxy.counts());
    summary
}

impl World {
    fn log(&mut self, line: String) {
        self.clock += 1;
        let ms = self.started.elapsed().as_millis();
        self.trace.lock().unwrap().push(format!("[{}] {ms:>6}ms {line}", self.clock));
    }

    fn value(&mut self, prefix: char) -> String {
        self.next_value += 1;
        format!("{prefix}{}", self.next_value)
    }

    /// Records an edit that was made now, by an author who saw `seen` for the key.
    fn made(&mut self, key: &Key, value: Option<String>, side: Side, seen: Option<String>, by: &str) {
        self.log(format!("made {} = {value:?} by {by} (saw {seen:?})", key_text(key)));
        let now = self.clock;
        let m = self.model.entry(key.clone()).or_default();
        m.history.push(format!("[{now}] {by}: {value:?} (saw {seen:?})"));
        m.add(side, value, &seen);
    }

    fn step(&mut self) {
        self.reap(false);
        if self.conflict_seen && self.rng.chance(0.35) {
            return self.resolve();
        }
        let r = self.rng.unit();
        if r < 0.24 {
            self.dashboard_edit();
        } else if r < 0.50 {
            let which = self.rng.below(2);
            self.git_edit(which);
        } else if r < 0.78 {
            if self.running.len() >= 2 {
                self.join_oldest();
            }
            let command = if self.rng.chance(0.5) { "pull" } else { "push" };
            let kill = self.rng.chance(0.3).then(|| Duration::from_millis(self.rng.below(900) as u64));
            let h = self.launch(command, None, kill);
            self.running.push(h);
            if self.running.len() == 2 {
                self.stats.concurrent += 1;
            }
        } else if r < 0.86 {
            let command = if self.rng.chance(0.5) { "pull" } else { "push" };
            let h = self.launch(command, None, None);
            let o = h.join().unwrap();
            self.absorb(o);
        } else if r < 0.92 {
            self.resolve();
        } else if r < 0.95 {
            self.restart_serve();
        } else if !self.running.is_empty() {
            self.join_oldest();
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // ---- runs ----

    /// Starts `defsync <command>` in a fresh clone of the origin, as a CI job would.
    fn launch(
        &mut self,
        command: &'static str,
        prefer: Option<&'static str>,
        kill: Option<Duration>,
    ) -> JoinHandle<RunOutcome> {
        self.next_run += 1;
        let id = self.next_run;
        let root = self.env.dir.path();
        let dir = root.join(format!("run-{id}"));
        // An empty template: no sample hooks, fewer files to write and remove per run.
        let template = format!("--template={}", root.join("template").display());
        self.env
            .git_in(root, &["clone", "--quiet", &template, self.env.origin.to_str().unwrap(), dir.to_str().unwrap()]);
        let mut args = vec![command, "--json", "--retry-for", RETRY_FOR];
        if let Some(p) = prefer {
            args.extend(["--on-conflict", p]);
        }
        let out = root.join(format!("logs/run-{id}.out"));
        let err = root.join(format!("logs/run-{id}.err"));
        let mut cmd = self.env.defsync_command(&dir, &args, &[]);
        cmd.stdout(std::fs::File::create(&out).unwrap()).stderr(std::fs::File::create(&err).unwrap());
        let child = cmd.spawn().expect("spawn defsync");
        self.log(format!(
            "run {id}: {command}{} started{}",
            prefer.map(|p| format!(" --on-conflict {p}")).unwrap_or_default(),
            kill.map(|d| format!(", to be killed after {}ms", d.as_millis())).unwrap_or_default()
        ));
        std::thread::spawn(move || {
            let code = wait_or_kill(child, kill);
            // Removed here, beside the next steps, rather than all at once at the end.
            let _ = std::fs::remove_dir_all(&dir);
            let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
            RunOutcome { id, command, prefer, code, stdout: read(&out), stderr: read(&err) }
        })
    }

    fn join_oldest(&mut self) {
        if !self.running.is_empty() {
            let o = self.running.remove(0).join().unwrap();
            self.absorb(o);
        }
    }

    /// Takes in the runs that finished; with `all`, waits for every one.
    fn reap(&mut self, all: bool) {
        let mut i = 0;
        while i < self.running.len() {
            if all || self.running[i].is_finished() {
                let o = self.running.remove(i).join().unwrap();
                self.absorb(o);
            } else {
                i += 1;
            }
        }
    }

    fn absorb(&mut self, o: RunOutcome) {
        self.stats.runs += 1;
        let what = format!("run {}: {}{}", o.id, o.command, o.prefer.map(|p| format!(" {p}")).unwrap_or_default());
        let Some(code) = o.code else {
            self.stats.killed += 1;
            return self.log(format!("{what} killed"));
        };
        match code {
            0 | 3 => {}
            1 if !self.final_phase && o.prefer.is_none() => {
                self.stats.failed += 1;
                let last = o.stderr.lines().last().unwrap_or_default().to_owned();
                return self.log(format!("{what} exit 1: {last}"));
            }
            _ => panic!("{what} exited {code}\nstdout: {}\nstderr: {}", o.stdout, o.stderr),
        }
        let report: Value = serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("{what}: no JSON report ({e}): {}\n{}", o.stdout, o.stderr));
        let conflicts = report["conflicts"].as_array().cloned().unwrap_or_default();
        let changes: Vec<String> = report["changes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        let f = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                        format!("{} {} {}/{}", f("side"), f("op"), f("kind"), f("name"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.log(format!(
            "{what} exit {code} {}: changes {changes:?}, {} conflict(s)",
            report["status"],
            conflicts.len()
        ));
        if code == 3 {
            assert!(!conflicts.is_empty(), "{what} exited 3 without reporting a conflict: {}", o.stdout);
            self.stats.conflicts += 1;
            self.conflict_seen = true;
        }
        for c in &conflicts {
            let key: Key = (c["kind"].as_str().unwrap().to_owned(), c["name"].as_str().unwrap().to_owned());
            let resolution = c["resolution"].as_str().unwrap_or_default().to_owned();
            let side = match o.prefer {
                Some("prefer-git") => "git_yaml",
                Some("prefer-platform") => "platform_yaml",
                _ => {
                    assert_eq!(resolution, "none", "{what}: a conflict resolved without a preference: {c}");
                    continue;
                }
            };
            assert!(
                resolution == "written" || resolution == "deferred",
                "{what}: conflict on {} not resolved ({resolution}) with {:?}: {c}",
                key_text(&key),
                o.prefer
            );
            let value = c[side].as_str().and_then(|yaml| parse_definition(yaml).2);
            self.log(format!("resolved {} = {value:?} ({resolution}, {side}) by run {}", key_text(&key), o.id));
            let now = self.clock;
            let m = self.model.entry(key).or_default();
            m.history.push(format!("[{now}] run {} resolved ({resolution}) to {value:?}", o.id));
            m.add(Side::Resolution, value, &None);
            self.stats.resolutions += 1;
        }
    }

    /// A person resolves conflicts: one run with a preference, alone (no run in flight, no edit).
    fn resolve(&mut self) {
        self.reap(true);
        let command = if self.rng.chance(0.5) { "pull" } else { "push" };
        let prefer = if self.rng.chance(0.5) { "prefer-git" } else { "prefer-platform" };
        let h = self.launch(command, Some(prefer), None);
        let o = h.join().unwrap();
        let code = o.code;
        self.absorb(o);
        if code == Some(0) {
            self.conflict_seen = false;
        }
    }

    fn restart_serve(&mut self) {
        let pause = Duration::from_millis(self.rng.below(600) as u64);
        self.log(format!("serve killed, restarted after {}ms", pause.as_millis()));
        self.server.kill();
        std::thread::sleep(pause);
        self.server.restart();
        self.proxy.set_upstream(&self.server.url());
        self.stats.restarts += 1;
    }

    // ---- dashboard ----

    fn client(&self, through_proxy: bool) -> HttpClient {
        let url = if through_proxy { self.proxy.url.clone() } else { self.server.url() };
        let options = ClientOptions {
            api_key: Some(KEY.to_owned()),
            timeout: Duration::from_secs(20),
            max_retry_time: Duration::from_secs(30),
            ..Default::default()
        };
        HttpClient::new(&url, options).unwrap()
    }

    fn dashboard_edit(&mut self) {
        self.stats.dashboard += 1;
        let state = self.platform_state();
        let seen = |key: &Key| state.get(key).and_then(|(_, v)| v.clone());
        let present: Vec<Key> = state.keys().cloned().collect();
        let r = self.rng.unit();
        if present.is_empty() || r < 0.6 {
            let (kind, name) = self.rng.pick(&KEYS);
            let key: Key = (kind.to_owned(), name.to_owned());
            let value = self.value('d');
            let file = self.env.dir.path().join(format!("logs/{value}.yaml"));
            std::fs::write(&file, render(&key, &value)).unwrap();
            let run = self.env.defsync_in(
                self.env.dir.path(),
                &["dashboard", "put", file.to_str().unwrap()],
                &[("DEFSYNC_RETRY_FOR", RETRY_FOR)],
            );
            assert_eq!(run.code, 0, "dashboard put {} = {value} failed: {}", key_text(&key), run.stderr);
            self.made(&key, Some(value), Side::Dashboard, seen(&key), "dashboard put");
        } else if r < 0.85 {
            let key = self.rng.pick(&present);
            let run = self.env.defsync_in(
                self.env.dir.path(),
                &["dashboard", "delete", &key.0, &key.1],
                &[("DEFSYNC_RETRY_FOR", RETRY_FOR)],
            );
            if run.code == 0 {
                self.made(&key, None, Side::Dashboard, seen(&key), "dashboard delete");
            } else if !self.platform_state().contains_key(&key) {
                // A push in flight deleted it first: the delete was refused, nothing was made.
                self.log(format!("dashboard delete {} refused, already gone: {}", key_text(&key), run.stderr.trim()));
            } else {
                panic!("dashboard delete {} failed: {}", key_text(&key), run.stderr);
            }
        } else {
            let from = self.rng.pick(&present);
            let free: Vec<Key> = KEYS
                .iter()
                .filter(|(k, n)| *k == from.0 && !present.iter().any(|p| p.0 == *k && p.1 == *n))
                .map(|(k, n)| ((*k).to_owned(), (*n).to_owned()))
                .collect();
            if free.is_empty() {
                return self.log("dashboard rename skipped: no free name".into());
            }
            let to = self.rng.pick(&free);
            self.dashboard_rename(&from, &to);
        }
    }

    /// A rename in the dashboard: one commit deletes the old key and puts the same spec under the
    /// new one. Through the API (and the proxy), re-planned when the head moved.
    fn dashboard_rename(&mut self, from: &Key, to: &Key) {
        let client = self.client(true);
        let seed = self.seed;
        let n = self.next_value;
        let outcome: Result<Option<String>, String> = self.rt.block_on(async {
            for attempt in 0..5 {
                let (project, _) = client.project(PROJECT).await.map_err(|e| e.to_string())?;
                let Some(head) = project.head else { return Ok(None) };
                let manifest = client.manifest(PROJECT, &head.id).await.map_err(|e| e.to_string())?;
                let Some(entry) = manifest.entries.iter().find(|e| e.kind == from.0 && e.name == from.1) else {
                    return Ok(None);
                };
                if manifest.entries.iter().any(|e| e.kind == to.0 && e.name == to.1) {
                    return Ok(None);
                }
                let objects = client
                    .batch_get(PROJECT, &[(entry.digest.clone(), entry.size)])
                    .await
                    .map_err(|e| e.to_string())?;
                let spec = objects.objects[0].spec.clone();
                let value = spec["v"].as_str().map(str::to_owned);
                let body = CreateCommit {
                    parent: Some(head.id.clone()),
                    message: format!("Rename {} to {}", key_text(from), key_text(to)),
                    origin: Origin { kind: OriginType::Dashboard, ..Default::default() },
                    changes: vec![
                        Change::Delete { kind: from.0.clone(), name: from.1.clone() },
                        Change::Put { kind: to.0.clone(), name: to.1.clone(), spec, blob: None },
                    ],
                };
                let key = format!("rename-{seed}-{n}-{attempt}");
                match client.create_commit(PROJECT, serde_json::to_vec(&body).unwrap(), &key).await {
                    Ok(_) => return Ok(value),
                    Err(defsync::platform::PlatformError::Api(e)) if e.is("head_moved") => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
            Err("the head kept moving".to_owned())
        });
        match outcome {
            Ok(Some(value)) => {
                let by = format!("dashboard rename to {}", key_text(to));
                self.made(from, None, Side::Dashboard, Some(value.clone()), &by);
                let by = format!("dashboard rename from {}", key_text(from));
                self.made(to, Some(value), Side::Dashboard, None, &by);
            }
            Ok(None) => self.log(format!("dashboard rename {} skipped: the keys changed", key_text(from))),
            Err(e) => panic!("dashboard rename {} -> {} failed: {e}", key_text(from), key_text(to)),
        }
        self.next_value += 1;
    }

    // ---- Git clones ----

    fn git(&self, dir: &Path, args: &[&str]) -> String {
        self.env.git_in(dir, args)
    }

    fn git_ok(&self, dir: &Path, args: &[&str]) -> bool {
        self.env.git_try(dir, args).status.success()
    }

    fn git_edit(&mut self, which: usize) {
        let dir = self.clones[which].dir.clone();
        let tag = self.clones[which].tag;
        // Often the author edits without fetching first, so pushes race and rebases conflict.
        if self.rng.chance(0.4) {
            self.rebase(which);
        }
        let files = scan_tree(&dir.join(&self.env.path));
        let present: Vec<Key> = files.keys().cloned().collect();
        let r = self.rng.unit();
        let (key, value) = if !present.is_empty() && r < 0.5 {
            let key = self.rng.pick(&present);
            let value = self.value(tag);
            std::fs::write(&files[&key], render(&key, &value)).unwrap();
            (key, Some(value))
        } else if !present.is_empty() && r < 0.7 {
            let key = self.rng.pick(&present);
            std::fs::remove_file(&files[&key]).unwrap();
            (key, None)
        } else {
            let absent: Vec<Key> = KEYS
                .iter()
                .map(|(k, n)| ((*k).to_owned(), (*n).to_owned()))
                .filter(|k| !files.contains_key(k))
                .collect();
            if absent.is_empty() {
                return self.log(format!("clone {tag}: every key exists, no new file"));
            }
            let key = self.rng.pick(&absent);
            let value = self.value(tag);
            let path = dir.join(&self.env.path).join(&key.0).join(format!("{}.yaml", key.1));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, render(&key, &value)).unwrap();
            (key, Some(value))
        };
        self.git(&dir, &["add", "-A"]);
        self.git(&dir, &["commit", "--quiet", "-m", &format!("clone {tag}: {} = {value:?}", key_text(&key))]);
        self.log(format!("clone {tag} committed {} = {value:?}", key_text(&key)));
        self.clones[which].pending.push((key, value));
        if self.rng.chance(0.75) {
            self.push_clone(which);
        }
    }

    /// Brings the clone up to the origin and makes its author's pending edits again on top, key
    /// by key, as one commit: where both changed a key, the author keeps their version (or their
    /// deletion). Done by hand rather than by `git rebase`, whose rename detection pairs these
    /// small, similar files and can carry one key's edit into another key's file.
    fn rebase(&mut self, which: usize) {
        let dir = self.clones[which].dir.clone();
        self.git(&dir, &["fetch", "--quiet", "origin"]);
        let before = self.git(&dir, &["rev-parse", "HEAD"]);
        self.git(&dir, &["reset", "--quiet", "--hard", "origin/main"]);
        let pending = self.clones[which].pending.clone();
        if pending.is_empty() {
            return;
        }
        let root = dir.join(&self.env.path);
        let mut files = scan_tree(&root);
        for (key, value) in &pending {
            match value {
                Some(v) => {
                    let path = files
                        .entry(key.clone())
                        .or_insert_with(|| root.join(&key.0).join(format!("{}.yaml", key.1)))
                        .clone();
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(path, render(key, v)).unwrap();
                }
                None => {
                    if let Some(path) = files.remove(key) {
                        std::fs::remove_file(path).unwrap();
                    }
                }
            }
        }
        self.git(&dir, &["add", "-A"]);
        if !self.git_ok(&dir, &["diff", "--cached", "--quiet"]) {
            let tag = self.clones[which].tag;
            self.git(&dir, &["commit", "--quiet", "-m", &format!("clone {tag}: {} edit(s) made again", pending.len())]);
        }
        if self.git(&dir, &["rev-parse", "HEAD"]) != before {
            self.stats.rebases += 1;
            self.log(format!(
                "clone {}: made its {} pending edit(s) again on the origin's tip",
                self.clones[which].tag,
                pending.len()
            ));
        }
    }

    /// The harness checks itself: the clone's `HEAD` is `origin/main` with its own pending edits
    /// and nothing else (Git's merge machinery must not have moved one key's edit into another
    /// key's file).
    fn check_clone(&self, which: usize) {
        let c = &self.clones[which];
        let mut want: BTreeMap<Key, Option<String>> =
            self.tree_state(&c.dir, "origin/main").into_iter().map(|(k, (_, v, _))| (k, v)).collect();
        for (key, value) in &c.pending {
            match value {
                Some(_) => want.insert(key.clone(), value.clone()),
                None => want.remove(key),
            };
        }
        let have: BTreeMap<Key, Option<String>> =
            self.tree_state(&c.dir, "HEAD").into_iter().map(|(k, (_, v, _))| (k, v)).collect();
        assert_eq!(have, want, "harness: clone {}'s HEAD is not origin/main plus its own edits", c.tag);
    }

    fn push_clone(&mut self, which: usize) {
        let dir = self.clones[which].dir.clone();
        for _ in 0..10 {
            self.check_clone(which);
            // What the author saw: the origin's tip they rebased onto (and, on a conflict, read).
            let upstream = self.tree_state(&dir, "origin/main");
            if self.git_ok(&dir, &["push", "--quiet", "origin", "main"]) {
                self.stats.git_pushes += 1;
                let pending = std::mem::take(&mut self.clones[which].pending);
                let by = format!("git push from clone {}", self.clones[which].tag);
                let mut last: BTreeMap<Key, Option<String>> = BTreeMap::new();
                for (key, value) in pending {
                    let seen = upstream.get(&key).and_then(|(_, v, _)| v.clone());
                    self.made(&key, value.clone(), Side::Git, seen, &by);
                    last.insert(key, value);
                }
                // The harness checks itself: what the clone meant is what the origin now holds.
                let origin = self.origin_state();
                for (key, value) in last {
                    let got = origin.get(&key).map(|(_, v, _)| v.clone());
                    assert_eq!(got, value.map(Some), "{by}: the origin does not hold the clone's {}", key_text(&key));
                }
                return;
            }
            self.log(format!("clone {}: push rejected, rebasing", self.clones[which].tag));
            self.rebase(which);
        }
        panic!("clone {}: could not push after 10 rebases", self.clones[which].tag);
    }

    // ---- both sides, read directly ----

    /// The platform head's definitions: key -> (digest, value). Straight to `serve`, no faults.
    fn platform_state(&self) -> BTreeMap<Key, (String, Option<String>)> {
        let client = self.client(false);
        self.rt.block_on(async {
            let (project, _) = client.project(PROJECT).await.unwrap();
            let Some(head) = project.head else { return BTreeMap::new() };
            let manifest = client.manifest(PROJECT, &head.id).await.unwrap();
            let wanted: Vec<_> = manifest.entries.iter().map(|e| (e.digest.clone(), e.size)).collect();
            let objects = client.batch_get(PROJECT, &wanted).await.unwrap();
            assert!(objects.missing.is_empty(), "the platform misses objects of its head: {:?}", objects.missing);
            manifest
                .entries
                .iter()
                .map(|e| {
                    let o = objects.objects.iter().find(|o| o.digest == e.digest).expect("object");
                    ((e.kind.clone(), e.name.clone()), (e.digest.to_string(), o.spec["v"].as_str().map(str::to_owned)))
                })
                .collect()
        })
    }

    /// The definitions on the origin's `main`: key -> (digest computed here, value, path).
    fn origin_state(&self) -> BTreeMap<Key, (String, Option<String>, String)> {
        self.tree_state(&self.env.origin, "main")
    }

    /// The definitions in commit `rev` of the repository `repo`.
    fn tree_state(&self, repo: &Path, rev: &str) -> BTreeMap<Key, (String, Option<String>, String)> {
        let mut out = BTreeMap::new();
        for path in self.git(repo, &["ls-tree", "-r", "--name-only", rev, "--", &self.env.path]).lines() {
            if !path.ends_with(".yaml") {
                continue;
            }
            let text = self.git(repo, &["show", &format!("{rev}:{path}")]);
            let (kind, name, value) = parse_definition(&text);
            let key = (kind, name);
            let digest = digest(&key, value.as_deref());
            if let Some(other) = out.insert(key.clone(), (digest, value, path.to_owned())) {
                panic!("two files on the origin hold {}: {} and {path}", key_text(&key), other.2);
            }
        }
        out
    }

    // ---- the end of a seed ----

    fn finish(&mut self) {
        self.reap(true);
        // A killed run's Git child may still be pushing; let it land before the checks.
        std::thread::sleep(Duration::from_millis(500));
        self.proxy.set_faults(false);
        self.final_phase = true;
        self.log("final sync: no faults".into());
        let mut quiet = false;
        for _ in 0..6 {
            let pull = self.final_run("pull", "prefer-platform");
            let push = self.final_run("push", "prefer-platform");
            if pull && push {
                quiet = true;
                break;
            }
        }
        assert!(quiet, "seed {}: the final pulls and pushes never came to rest", self.seed);
        self.check();
        self.log("checks passed".into());
    }

    /// One clean run; on a conflict, the deterministic resolution. True when nothing changed.
    fn final_run(&mut self, command: &'static str, prefer: &'static str) -> bool {
        let h = self.launch(command, None, None);
        let o = h.join().unwrap();
        let code = o.code;
        let quiet = code == Some(0)
            && serde_json::from_str::<Value>(&o.stdout)
                .map(|r| r["status"] == json!("in_sync") && r["changes"].as_array().is_none_or(Vec::is_empty))
                .unwrap_or(false);
        self.absorb(o);
        if code == Some(3) {
            let h = self.launch(command, Some(prefer), None);
            let o = h.join().unwrap();
            self.absorb(o);
            return false;
        }
        quiet
    }

    fn check(&mut self) {
        let platform = self.platform_state();
        let origin = self.origin_state();

        // Convergence: the same keys with the same digests on both sides.
        let p: BTreeMap<&Key, &String> = platform.iter().map(|(k, (d, _))| (k, d)).collect();
        let g: BTreeMap<&Key, &String> = origin.iter().map(|(k, (d, _, _))| (k, d)).collect();
        assert_eq!(p, g, "seed {}: not converged: platform head (left) vs origin main (right)", self.seed);

        // No lost update.
        let keys: BTreeSet<Key> = self.model.keys().chain(platform.keys()).cloned().collect();
        let mut lost = Vec::new();
        for key in keys {
            let m = self.model.get(&key);
            let allowed = m.map_or(vec![None], KeyModel::allowed);
            let actual = platform.get(&key).map(|(_, v)| v.clone().expect("a value"));
            if allowed.len() > 1 {
                self.stats.concurrent_edits += 1;
            }
            if !allowed.contains(&actual) {
                let history = m.map(|m| m.history.join("; ")).unwrap_or_default();
                lost.push(format!(
                    "{}: expected one of {allowed:?}, found {actual:?} (history: {history})",
                    key_text(&key)
                ));
            }
        }
        if !lost.is_empty() {
            let history =
                self.git(&self.env.origin, &["log", "--format=%h %s", "--name-status", "main", "--", &self.env.path]);
            panic!("seed {}: lost updates:\n{}\norigin history:\n{history}", self.seed, lost.join("\n"));
        }

        self.check_platform_commits();
        self.check_origin_fast_forward();
    }

    /// Every commit's seq follows its parent's, and no Git commit was sent twice as two
    /// platform commits with the same changes (an Idempotency-Key not honoured).
    fn check_platform_commits(&self) {
        let client = self.client(false);
        self.rt.block_on(async {
            let mut commits = Vec::new();
            loop {
                let page = client.commits(PROJECT, commits.len() as u64, 1000).await.unwrap().commits;
                if page.is_empty() {
                    break;
                }
                commits.extend(page);
            }
            for (i, c) in commits.iter().enumerate() {
                assert_eq!(c.seq, i as u64 + 1, "seed {}: commit seq out of order: {c:?}", self.seed);
                let parent = i.checked_sub(1).map(|j| commits[j].id.clone());
                assert_eq!(c.parent, parent, "seed {}: commit {} has parent {:?}", self.seed, c.id, c.parent);
            }
            let mut by_git: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for (i, c) in commits.iter().enumerate() {
                if c.origin.kind == OriginType::Git {
                    let sha = c.origin.git_commit.clone().expect("a git commit in a git origin");
                    by_git.entry(sha).or_default().push(i);
                }
            }
            for (sha, idx) in by_git.iter().filter(|(_, v)| v.len() > 1) {
                let mut seen = Vec::new();
                for &i in idx {
                    let c = commit_changes(&client, &commits, i).await;
                    assert!(
                        !seen.contains(&c),
                        "seed {}: Git commit {sha} became two platform commits with the same changes {c:?} (seq {:?})",
                        self.seed,
                        idx.iter().map(|&i| commits[i].seq).collect::<Vec<_>>()
                    );
                    seen.push(c);
                }
            }
        });
    }

    /// Each position `main` took on the origin descends from the one before.
    fn check_origin_fast_forward(&self) {
        let origin = &self.env.origin;
        let log = self.git(origin, &["reflog", "show", "--format=%H", "refs/heads/main"]);
        let tips: Vec<&str> = log.lines().rev().collect();
        assert!(tips.len() >= 2, "seed {}: the origin's reflog is missing: {log:?}", self.seed);
        for pair in tips.windows(2) {
            assert!(
                self.git_ok(origin, &["merge-base", "--is-ancestor", pair[0], pair[1]]),
                "seed {}: main moved from {} to {}, which does not descend from it",
                self.seed,
                pair[0],
                pair[1]
            );
        }
    }
}

/// Waits for a run; kills it (SIGKILL) if it is still running after `kill`. `None`: killed.
fn wait_or_kill(mut child: Child, kill: Option<Duration>) -> Option<i32> {
    if let Some(after) = kill {
        let deadline = Instant::now() + after;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.kill().is_ok() {
            let _ = child.wait();
            return None;
        }
    }
    Some(child.wait().unwrap().code().unwrap_or(-1))
}

fn render(key: &Key, value: &str) -> String {
    format!("kind: {}\nname: {}\nspec:\n  v: {value}\n", key.0, key.1)
}

/// Reads a definition this test wrote or a pull rendered: `kind`, `name` and `spec: {v: ...}`
/// and nothing else, so a file of any other shape fails the test instead of being misread.
fn parse_definition(text: &str) -> (String, String, Option<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let field = |line: Option<&&str>, prefix: &str| -> String {
        let v = line.and_then(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("unexpected definition:\n{text}"));
        v.trim().trim_matches(|c| c == '"' || c == '\'').to_owned()
    };
    assert!(lines.len() == 4 && lines[2] == "spec:", "unexpected definition:\n{text}");
    let kind = field(lines.first(), "kind: ");
    let name = field(lines.get(1), "name: ");
    let value = field(lines.get(3), "  v: ");
    (kind, name, Some(value))
}

/// The contract's digest, computed here rather than by defsync: SHA-256 of the JCS form, which
/// for these ASCII strings is `{"kind":..,"name":..,"spec":{"v":..}}` with no white space.
fn digest(key: &Key, value: Option<&str>) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let spec = value.map_or("null".to_owned(), |v| format!("{{\"v\":{}}}", q(v)));
    let jcs = format!("{{\"kind\":{},\"name\":{},\"spec\":{spec}}}", q(&key.0), q(&key.1));
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(jcs.as_bytes())))
}

/// The definition files below a clone's sync root: key -> path.
fn scan_tree(root: &Path) -> BTreeMap<Key, PathBuf> {
    let mut out = BTreeMap::new();
    if !root.exists() {
        return out;
    }
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() && entry.path().extension().is_some_and(|e| e == "yaml") {
            let (kind, name, _) = parse_definition(&std::fs::read_to_string(entry.path()).unwrap());
            out.insert((kind, name), entry.path().to_owned());
        }
    }
    out
}

/// What platform commit `i` changed: (key, new digest or `None` for a delete), from the manifests.
async fn commit_changes(client: &HttpClient, commits: &[defsync::api::Commit], i: usize) -> Vec<(Key, Option<String>)> {
    let entries = |m: defsync::api::Manifest| -> BTreeMap<Key, String> {
        m.entries.into_iter().map(|e| ((e.kind, e.name), e.digest.to_string())).collect()
    };
    let after = entries(client.manifest(PROJECT, &commits[i].id).await.unwrap());
    let before = match i {
        0 => BTreeMap::new(),
        _ => entries(client.manifest(PROJECT, &commits[i - 1].id).await.unwrap()),
    };
    let keys: BTreeSet<&Key> = after.keys().chain(before.keys()).collect();
    keys.into_iter().filter(|k| after.get(*k) != before.get(*k)).map(|k| (k.clone(), after.get(k).cloned())).collect()
}
