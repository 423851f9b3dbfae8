//! Tests of the GitHub Action contract, since GitHub's runner cannot run here: `action.yml` against
//! the binary's options and outputs, the runtime module under runner-like environments (outputs
//! parsed the way the runner parses them, the job summary, annotations, masking), and the
//! action's own shell steps against a file server on 127.0.0.1, a tampered download included.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use clap::CommandFactory;
use defsync::ci::actions::{self, Runtime};
use defsync::digest::Digest;
use defsync::report::{Change, CommitRef, Conflict, FileError, Op, Report, ReportError, Resolution, Side, Status};
use serde_json::Value;

use crate::support::{BIN, Env};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SECRET: &str = "dsk_live_9f8e7d6c5b4a%secret";

// ---------------------------------------------------------------------------------------------
// The runner's rules, written down from actions/runner (FileCommandManager, ActionCommand)

/// Parses a `$GITHUB_OUTPUT` file as the runner does: blank lines skipped; `name=value` when `=`
/// comes before any `<<`; otherwise `name<<DELIM`, then the value's lines up to a line that is
/// exactly the delimiter, the line break before the delimiter not being part of the value. An
/// empty name or delimiter, a missing delimiter, or a value line without a line break is an error.
fn parse_runner_outputs(text: &str) -> Result<Vec<(String, String)>, String> {
    // Lines with the byte offset after their terminator; the runner on Linux splits on LF only.
    let mut lines: Vec<(&str, usize, bool)> = Vec::new();
    let mut start = 0;
    while start < text.len() {
        match text[start..].find('\n') {
            Some(i) => {
                lines.push((&text[start..start + i], start + i + 1, true));
                start += i + 1;
            }
            None => {
                lines.push((&text[start..], text.len(), false));
                start = text.len();
            }
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (line, _, _) = lines[i];
        i += 1;
        if line.is_empty() {
            continue;
        }
        let eq = line.find('=');
        let heredoc = line.find("<<");
        match (eq, heredoc) {
            (Some(e), h) if h.is_none_or(|h| e < h) => {
                let (name, value) = (&line[..e], &line[e + 1..]);
                if name.is_empty() {
                    return Err(format!("invalid format {line:?}: empty name"));
                }
                out.push((name.to_owned(), value.to_owned()));
            }
            (_, Some(h)) => {
                let (name, delimiter) = (&line[..h], &line[h + 2..]);
                if name.is_empty() || delimiter.is_empty() {
                    return Err(format!("invalid format {line:?}: empty name or delimiter"));
                }
                let value_start = lines[i - 1].1;
                let mut value_end = value_start;
                loop {
                    let Some(&(l, end, has_newline)) = lines.get(i) else {
                        return Err(format!("matching delimiter not found {delimiter:?}"));
                    };
                    i += 1;
                    if l == delimiter {
                        break;
                    }
                    if !has_newline {
                        return Err("EOF marker missing new line".into());
                    }
                    value_end = end - 1;
                }
                out.push((name.to_owned(), text[value_start..value_end].to_owned()));
            }
            _ => return Err(format!("invalid format {line:?}")),
        }
    }
    Ok(out)
}

/// A workflow command as the runner's `ActionCommand.TryParseV2` reads one line.
#[derive(Debug, PartialEq)]
struct WorkflowCommand {
    name: String,
    properties: BTreeMap<String, String>,
    data: String,
}

fn parse_workflow_command(line: &str) -> Option<WorkflowCommand> {
    let message = line.trim_start();
    let rest = message.strip_prefix("::")?;
    let end = rest.find("::")?;
    let info = &rest[..end];
    let (name, props) = info.split_once(' ').unwrap_or((info, ""));
    let mut properties = BTreeMap::new();
    for p in props.trim().split(',').filter(|p| !p.is_empty()) {
        if let Some((k, v)) = p.split_once('=')
            && !v.is_empty()
        {
            let v =
                v.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":").replace("%2C", ",").replace("%25", "%");
            properties.insert(k.to_owned(), v);
        }
    }
    let data = rest[end + 2..].replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%");
    Some(WorkflowCommand { name: name.to_owned(), properties, data })
}

/// Whether the runner would take a line of output as a command, in either syntax.
fn starts_a_command(line: &str) -> bool {
    line.trim_start().starts_with("::") || line.contains("##[")
}

// ---------------------------------------------------------------------------------------------
// action.yml

fn yaml(rel: &str) -> Value {
    let text = std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"));
    serde_saphyr::from_str::<Value>(&text).unwrap_or_else(|e| panic!("parse {rel}: {e}"))
}

/// Every environment variable the binary reads: clap's `env` fallbacks and `actions::ENV_READ`.
fn binary_env() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&defsync::cli::Cli::command(), &mut out);
    out.extend(actions::ENV_READ.iter().map(|s| s.to_string()));
    out
}

/// Inputs consumed by the action's own scripts rather than by the binary, with the variable and
/// the script that reads it.
const SCRIPT_INPUTS: &[(&str, &str, &str)] =
    &[("command", "DEFSYNC_COMMAND", "scripts/run.sh"), ("version", "DEFSYNC_INSTALL_VERSION", "scripts/install.sh")];

fn steps(action: &Value) -> &Vec<Value> {
    action["runs"]["steps"].as_array().expect("runs.steps")
}

/// `(env name, input name)` for every env entry of every step that is exactly `${{ inputs.X }}`.
fn input_env(action: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for step in steps(action) {
        for (name, value) in step["env"].as_object().into_iter().flatten() {
            let v = value.as_str().unwrap_or_default();
            if let Some(input) = v.strip_prefix("${{ inputs.").and_then(|r| r.strip_suffix(" }}")) {
                out.push((name.clone(), input.to_owned()));
            } else {
                assert!(
                    !v.contains("inputs."),
                    "env {name} uses an input in an expression other than a plain reference: {v}"
                );
            }
        }
    }
    out
}

#[test]
fn every_action_input_reaches_an_env_var_that_is_read() {
    let known = binary_env();
    for file in ["action.yml", "pull/action.yml", "push/action.yml"] {
        let action = yaml(file);
        let mapped = input_env(&action);
        let inputs = action["inputs"].as_object().expect("inputs");
        for input in inputs.keys() {
            let envs: Vec<&String> = mapped.iter().filter(|(_, i)| i == input).map(|(e, _)| e).collect();
            if let Some((_, var, script)) = SCRIPT_INPUTS.iter().find(|(i, _, _)| i == input) {
                assert_eq!(envs, vec![var], "{file}: input {input} must reach {script} as {var}");
                let text = std::fs::read_to_string(Path::new(ROOT).join(script)).unwrap();
                assert!(text.contains(var), "{script} does not read {var}");
                continue;
            }
            assert_eq!(envs.len(), 1, "{file}: input {input} must be mapped to exactly one env var, got {envs:?}");
            assert!(
                known.contains(envs[0].as_str()),
                "{file}: input {input} is passed as {}, which the binary does not read (it reads {known:?})",
                envs[0]
            );
        }
        // And nothing maps an input that is not declared.
        for (env, input) in &mapped {
            assert!(inputs.contains_key(input), "{file}: env {env} reads undeclared input {input}");
        }
    }
}

#[test]
fn every_action_output_is_one_the_binary_writes() {
    for file in ["action.yml", "pull/action.yml", "push/action.yml"] {
        let action = yaml(file);
        let outputs = action["outputs"].as_object().expect("outputs");
        let names: BTreeSet<&str> = outputs.keys().map(String::as_str).collect();
        let written: BTreeSet<&str> = actions::OUTPUTS.iter().copied().collect();
        assert_eq!(names, written, "{file}: outputs differ from actions::OUTPUTS");
        for (name, o) in outputs {
            assert_eq!(
                o["value"].as_str(),
                Some(format!("${{{{ steps.run.outputs.{name} }}}}").as_str()),
                "{file}: {name}"
            );
        }
        assert!(steps(&action).iter().any(|s| s["id"] == "run"), "{file}: no step with id run");
    }
}

#[test]
fn wrappers_are_the_action_with_a_fixed_command() {
    let main = yaml("action.yml");
    for cmd in ["pull", "push"] {
        let file = format!("{cmd}/action.yml");
        let w = yaml(&file);
        let mut main_inputs = main["inputs"].as_object().unwrap().clone();
        main_inputs.remove("command");
        assert_eq!(&main_inputs, w["inputs"].as_object().unwrap(), "{file}: inputs");
        assert_eq!(main["outputs"], w["outputs"], "{file}: outputs");
        let run = steps(&w).iter().find(|s| s["id"] == "run").unwrap();
        assert_eq!(run["env"]["DEFSYNC_COMMAND"], cmd, "{file}");
        for step in steps(&w) {
            if let Some(dir) = step["env"]["DEFSYNC_ACTION_DIR"].as_str() {
                assert_eq!(dir, "${{ github.action_path }}/..", "{file}: the scripts are one folder up");
            }
        }
        assert_eq!(steps(&main).len(), steps(&w).len(), "{file}: steps");
    }
}

/// Every workflow and action file this repository ships, for the hygiene checks below.
fn workflow_files() -> Vec<String> {
    let mut out = vec!["action.yml".to_owned(), "pull/action.yml".to_owned(), "push/action.yml".to_owned()];
    for dir in [".github/workflows", "examples/workflows"] {
        let mut names: Vec<String> = std::fs::read_dir(Path::new(ROOT).join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| format!("{dir}/{}", e.unwrap().file_name().to_string_lossy()))
            .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
            .collect();
        names.sort();
        out.extend(names);
    }
    out
}

fn all_steps(doc: &Value) -> Vec<&Value> {
    let mut out: Vec<&Value> = Vec::new();
    if let Some(s) = doc["runs"]["steps"].as_array() {
        out.extend(s);
    }
    for job in doc["jobs"].as_object().into_iter().flatten().map(|(_, j)| j) {
        out.extend(job["steps"].as_array().into_iter().flatten());
    }
    out
}

#[test]
fn no_script_interpolates_an_expression_and_actions_are_pinned() {
    for file in workflow_files() {
        let doc = yaml(&file);
        for step in all_steps(&doc) {
            if let Some(run) = step["run"].as_str() {
                // Script injection: an expression in `run:` is pasted into the script's text.
                assert!(!run.contains("${{"), "{file}: a run: script interpolates an expression: {run}");
            }
            if let Some(uses) = step["uses"].as_str() {
                // The examples name this action for users to pin; the docs say how.
                if uses.starts_with("./") || uses.starts_with("docker://") || uses.starts_with("<owner>/defsync") {
                    continue;
                }
                let (_, reference) = uses.split_once('@').unwrap_or_else(|| panic!("{file}: {uses} has no ref"));
                assert!(
                    reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{file}: {uses} is not pinned by a full commit SHA"
                );
            }
        }
        let text = std::fs::read_to_string(Path::new(ROOT).join(&file)).unwrap();
        for line in
            text.lines().filter(|l| l.trim_start().starts_with("- uses:") || l.trim_start().starts_with("uses:"))
        {
            if line.contains('@') && !line.contains("./") && !line.contains("<owner>") {
                assert!(line.contains("# v"), "{file}: pinned action without a # vX.Y.Z comment: {line}");
            }
        }
    }
}

#[test]
fn workflows_use_least_privilege_and_their_own_concurrency() {
    for file in workflow_files().into_iter().filter(|f| !f.ends_with("action.yml")) {
        let doc = yaml(&file);
        assert!(doc.get("permissions").is_some(), "{file}: no top-level permissions:");
        for (name, job) in doc["jobs"].as_object().unwrap() {
            let runs_defsync = job["steps"].as_array().into_iter().flatten().any(|s| {
                let uses = s["uses"].as_str().unwrap_or_default();
                uses == "./" || uses.contains("/defsync")
            });
            for step in job["steps"].as_array().into_iter().flatten() {
                let uses = step["uses"].as_str().unwrap_or_default();
                if uses.starts_with("actions/checkout@") {
                    // Credentials stay only where defsync itself fetches or pushes with them.
                    let persist = &step["with"]["persist-credentials"];
                    assert!(persist.is_boolean(), "{file}/{name}: checkout must set persist-credentials explicitly");
                    if persist == &Value::Bool(true) {
                        assert!(runs_defsync, "{file}/{name}: persists credentials but does not run defsync");
                    }
                }
            }
        }
    }
    for (file, group_word) in
        [("examples/workflows/defsync-pull.yml", "pull"), ("examples/workflows/defsync-push.yml", "push")]
    {
        let doc = yaml(file);
        let jobs = doc["jobs"].as_object().unwrap();
        let mut groups = Vec::new();
        for (name, job) in jobs {
            let c = &job["concurrency"];
            let group = c["group"].as_str().unwrap_or_else(|| panic!("{file}/{name}: no concurrency group"));
            groups.push(group.to_owned());
            if group.contains(group_word) {
                assert_eq!(
                    c["cancel-in-progress"],
                    Value::Bool(false),
                    "{file}/{name}: a queued sync must not be cancelled"
                );
            }
        }
        assert!(groups.iter().any(|g| g.contains(group_word)), "{file}: no {group_word} group in {groups:?}");
    }
    // Pull and push never share a group: GitHub keeps one pending run per group.
    let pull = yaml("examples/workflows/defsync-pull.yml");
    let push = yaml("examples/workflows/defsync-push.yml");
    let groups = |d: &Value| -> BTreeSet<String> {
        d["jobs"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|j| j["concurrency"]["group"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(groups(&pull).is_disjoint(&groups(&push)));
}

// ---------------------------------------------------------------------------------------------
// The runtime module with runner-like environments

/// A workflow_dispatch payload as GitHub sends it (trimmed of URLs, fields as documented).
const DISPATCH_EVENT: &str = r#"{
  "inputs": { "projectId": "p1", "commitId": "c_01JD3M9Q2W" },
  "ref": "refs/heads/main",
  "repository": {
    "id": 17273051, "node_id": "MDEwOlJlcG9zaXRvcnkxNzI3MzA1MQ==", "name": "integrations",
    "full_name": "acme/integrations", "private": true,
    "owner": { "login": "acme", "id": 6811672, "type": "Organization", "site_admin": false },
    "html_url": "https://github.com/acme/integrations", "default_branch": "main"
  },
  "organization": { "login": "acme", "id": 6811672 },
  "sender": { "login": "defsync-platform[bot]", "id": 41898282, "type": "Bot", "site_admin": false },
  "workflow": ".github/workflows/defsync-pull.yml"
}"#;

struct RunnerEnv {
    dir: tempfile::TempDir,
    vars: HashMap<&'static str, String>,
}

impl RunnerEnv {
    fn new(event_name: &str, event: &str) -> RunnerEnv {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        std::fs::write(dir.path().join("event.json"), event).unwrap();
        std::fs::write(dir.path().join("output"), "").unwrap();
        std::fs::write(dir.path().join("summary"), "").unwrap();
        let vars = HashMap::from([
            ("GITHUB_ACTIONS", "true".to_owned()),
            ("GITHUB_OUTPUT", p("output")),
            ("GITHUB_STEP_SUMMARY", p("summary")),
            ("GITHUB_EVENT_PATH", p("event.json")),
            ("GITHUB_EVENT_NAME", event_name.to_owned()),
            ("GITHUB_REPOSITORY", "acme/integrations".to_owned()),
            ("GITHUB_SHA", "3f1c0d9e8b7a6f5e4d3c2b1a09f8e7d6c5b4a392".to_owned()),
            ("GITHUB_REF", "refs/heads/main".to_owned()),
            ("GITHUB_SERVER_URL", "https://github.com".to_owned()),
            ("GITHUB_RUN_ID", "9876543210".to_owned()),
        ]);
        RunnerEnv { dir, vars }
    }

    fn runtime(&self) -> Runtime {
        Runtime::from_vars(|k| self.vars.get(k).cloned()).expect("GITHUB_ACTIONS=true gives a runtime")
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap()
    }

    fn outputs(&self) -> BTreeMap<String, String> {
        let text = self.read("output");
        let pairs =
            parse_runner_outputs(&text).unwrap_or_else(|e| panic!("the runner would reject the outputs: {e}\n{text}"));
        let map: BTreeMap<String, String> = pairs.iter().cloned().collect();
        assert_eq!(map.len(), pairs.len(), "an output was written twice");
        map
    }
}

fn digest(s: &str) -> Option<Digest> {
    Some(Digest::of_canonical(s))
}

/// A report that holds every hostile thing a name or a server message can hold.
fn hostile_report() -> Report {
    let mut r = Report::new("pull");
    r.status = Status::Conflict;
    r.project = Some("p1".into());
    r.platform_commit = Some(CommitRef { id: "c_01JD3M9Q2W".into(), seq: 42 });
    r.requested_commit = Some("c_01JD3M0000".into());
    r.git_commit = Some("3f1c0d9e8b7a6f5e4d3c2b1a09f8e7d6c5b4a392".into());
    r.repository = Some("acme/integrations".into());
    r.git_ref = Some("refs/heads/main".into());
    r.path = Some("platform".into());
    r.changes = vec![
        Change {
            side: Side::Git,
            op: Op::Add,
            kind: "workflow".into(),
            name: "notify @octocat `now`".into(),
            path: Some("platform/workflow/notify-octocat-now.yaml".into()),
        },
        Change {
            side: Side::Platform,
            op: Op::Update,
            kind: "connection".into(),
            name: "crm | <img src=x onerror=alert(1)>".into(),
            path: Some("platform/connection/crm.yaml".into()),
        },
        Change {
            side: Side::Platform,
            op: Op::Delete,
            kind: "integration".into(),
            name: "::error::injected".into(),
            path: None,
        },
    ];
    r.conflicts = vec![Conflict {
        kind: "workflow".into(),
        name: "``[click](https://evil.example)``".into(),
        path: Some("platform/workflow/click.yaml".into()),
        base: digest("base"),
        git: digest("git"),
        platform: digest("platform"),
        resolution: Resolution::None,
        git_yaml: Some("kind: workflow\nname: x\nspec:\n  steps:\n  - run: echo ```\n  - to: '@octocat'\n".into()),
        platform_yaml: Some(
            "kind: workflow\nname: x\nspec:\n  steps:\n  - run: echo changed\n  - to: '@octocat'\n".into(),
        ),
    }];
    r.errors = vec![FileError {
        path: "platform/bad,file:1.yaml".into(),
        line: Some(3),
        column: Some(7),
        message: "duplicate key \"a\"\n::add-mask::x 100%".into(),
    }];
    r
}

#[test]
fn outputs_parse_the_way_the_runner_parses_them() {
    let env = RunnerEnv::new("workflow_dispatch", DISPATCH_EVENT);
    let report = hostile_report();
    env.runtime().finish_to(&mut Vec::new(), &report).unwrap();
    let out = env.outputs();
    let names: BTreeSet<&str> = out.keys().map(String::as_str).collect();
    assert_eq!(names, actions::OUTPUTS.iter().copied().collect());
    assert_eq!(out["status"], "conflict");
    assert_eq!(out["changed"], "false", "a conflict changes nothing");
    assert_eq!(out["git-commit"], "3f1c0d9e8b7a6f5e4d3c2b1a09f8e7d6c5b4a392");
    assert_eq!(out["platform-commit"], "c_01JD3M9Q2W");
    assert_eq!((out["added"].as_str(), out["updated"].as_str(), out["deleted"].as_str()), ("1", "1", "1"));
    assert_eq!(out["conflicts"], "1");
    let json: Value = serde_json::from_str(&out["report"]).expect("report is JSON");
    assert_eq!(json, serde_json::to_value(&report).unwrap(), "the report output is the whole report");
    assert!(env.read("output").contains("report<<ghadelimiter_"), "multi-line values use the heredoc form");
}

#[test]
fn outputs_of_a_changed_run_and_a_dry_run() {
    let mut r = Report::new("push");
    r.status = Status::Changed;
    r.changes =
        vec![Change { side: Side::Platform, op: Op::Add, kind: "workflow".into(), name: "a".into(), path: None }];
    let env = RunnerEnv::new("push", "{}");
    env.runtime().finish_to(&mut Vec::new(), &r).unwrap();
    assert_eq!(env.outputs()["changed"], "true");
    assert_eq!(env.outputs()["platform-commit"], "");

    r.status = Status::DryRun;
    let env = RunnerEnv::new("pull_request", "{}");
    env.runtime().finish_to(&mut Vec::new(), &r).unwrap();
    assert_eq!(env.outputs()["changed"], "false", "a dry run changes nothing");
    assert_eq!(env.outputs()["added"], "1", "but counts what it would change");
}

#[test]
fn runner_output_parser_follows_the_runner() {
    let ok = "a=1\n\nb<<EOF\nline 1\nline 2\nEOF\nc=x<<y\nd<<E=F\nv\nE=F\ne<<X\nX\n";
    let got = parse_runner_outputs(ok).unwrap();
    let want = [("a", "1"), ("b", "line 1\nline 2"), ("c", "x<<y"), ("d", "v"), ("e", "")];
    assert_eq!(got, want.map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec());
    assert!(parse_runner_outputs("=1\n").is_err());
    assert!(parse_runner_outputs("a<<EOF\nno end\n").is_err());
    assert!(parse_runner_outputs("a<<EOF\nx").is_err());
    assert!(parse_runner_outputs("novalue\n").is_err());
    // A value cannot end a heredoc early: the delimiter is random, and checked against the value.
    let mut text = String::new();
    actions::push_output(&mut text, "report", "x\nEOF\nstatus=hacked\nghadelimiter_\n");
    let got = parse_runner_outputs(&text).unwrap();
    assert_eq!(got, vec![("report".into(), "x\nEOF\nstatus=hacked\nghadelimiter_\n".into())]);
}

#[test]
fn summary_renders_names_as_inert_code() {
    let env = RunnerEnv::new("workflow_dispatch", DISPATCH_EVENT);
    env.runtime().finish_to(&mut Vec::new(), &hostile_report()).unwrap();
    let md = env.read("summary");
    assert!(md.starts_with("## "), "{md}");
    for want in [
        "`p1`",
        "`c_01JD3M9Q2W` (seq 42)",
        "`c_01JD3M0000`",
        "| Git (files would be written to the branch) | 1 | 0 | 0 |",
        "| Platform (definitions would be sent to the project) | 0 | 1 | 1 |",
        "[View this workflow run](https://github.com/acme/integrations/actions/runs/9876543210)",
        "```diff\n--- git\n+++ platform\n",
        "-  - run: echo ```\n+  - run: echo changed\n",
        "### Invalid definitions (1)",
    ] {
        assert!(md.contains(want), "summary lacks {want:?}:\n{md}");
    }
    // Names are in code spans whose fences outgrow the backticks inside them.
    assert!(md.contains("`` notify @octocat `now` ``"), "{md}");
    assert!(md.contains("``` ``[click](https://evil.example)`` ```"), "{md}");
    // In a table cell the pipe is escaped, or it would split the cell.
    assert!(md.contains("`crm \\| <img src=x onerror=alert(1)>`"), "{md}");
    // The diff fence is longer than the ``` inside the YAML.
    assert!(md.contains("````diff\n"), "{md}");
    // Outside code, no @mention, link or HTML from data survives.
    let prose = strip_code(&md);
    for bad in ["@octocat", "](https://evil", "<img", "::error::injected"] {
        assert!(!prose.contains(bad), "{bad:?} outside code:\n{prose}");
    }
}

/// The summary with code spans and fenced blocks removed, following CommonMark's rules for the
/// fences this module writes (the real renderer cannot run here).
fn strip_code(md: &str) -> String {
    let mut out = String::new();
    let mut fence: Option<String> = None;
    for line in md.lines() {
        if let Some(f) = &fence {
            if line.trim_end() == f.as_str() {
                fence = None;
            }
            continue;
        }
        let ticks = line.len() - line.trim_start_matches('`').len();
        // A fence opener's info string has no backticks; otherwise the line is inline code.
        if ticks >= 3 && !line[ticks..].contains('`') {
            fence = Some("`".repeat(ticks));
            continue;
        }
        // Code spans: a run of n backticks up to the next run of exactly n.
        let bytes: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == '`' {
                let n = bytes[i..].iter().take_while(|c| **c == '`').count();
                let mut j = i + n;
                let mut closed = None;
                while j < bytes.len() {
                    if bytes[j] == '`' {
                        let m = bytes[j..].iter().take_while(|c| **c == '`').count();
                        if m == n {
                            closed = Some(j + m);
                            break;
                        }
                        j += m;
                    } else {
                        j += 1;
                    }
                }
                match closed {
                    Some(end) => {
                        out.push_str("CODE");
                        i = end;
                    }
                    None => panic!("unclosed code span in line {line:?}"),
                }
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        out.push('\n');
    }
    assert!(fence.is_none(), "unclosed fence");
    out
}

#[test]
fn summary_stays_under_one_mebibyte_and_says_what_it_left_out() {
    let mut r = hostile_report();
    let name = "n".repeat(190);
    r.changes = (0..60_000)
        .map(|i| Change {
            side: Side::Git,
            op: Op::Add,
            kind: "workflow".into(),
            name: format!("{name}{i}"),
            path: Some(format!("platform/workflow/{i}.yaml")),
        })
        .collect();
    let yaml: String = (0..20_000).map(|i| format!("  key{i}: value {i}\n")).collect();
    r.conflicts = (0..300)
        .map(|i| Conflict {
            kind: "workflow".into(),
            name: format!("c{i}"),
            path: None,
            base: None,
            git: digest("g"),
            platform: digest("p"),
            resolution: Resolution::None,
            git_yaml: Some(format!("spec:\n{yaml}")),
            platform_yaml: Some(format!("spec:\n{}", yaml.replace("value", "other"))),
        })
        .collect();
    r.errors = (0..20_000)
        .map(|i| FileError {
            path: format!("platform/{i}.yaml"),
            line: Some(1),
            column: None,
            message: "m".repeat(2000),
        })
        .collect();
    r.error = Some(ReportError { message: "x\n".repeat(1_000_000), exit_code: 1 });

    let env = RunnerEnv::new("push", "{}");
    // Something earlier in the step already wrote to the summary: the limit is for the file.
    std::fs::write(env.dir.path().join("summary"), "x".repeat(100_000)).unwrap();
    let mut log = Vec::new();
    env.runtime().finish_to(&mut log, &r).unwrap();
    let size = std::fs::metadata(env.dir.path().join("summary")).unwrap().len();
    assert!(size <= actions::SUMMARY_LIMIT as u64, "summary is {size} bytes");
    assert!(size > 900_000, "the budget is used, not wasted: {size}");
    let md = env.read("summary");
    assert!(md.contains("more invalid definitions not shown"), "the cut is counted");
    assert!(md.contains("| Git (files would be written to the branch) | 60000 | 0 | 0 |"), "counts are always whole");
    assert!(
        md.trim_end().ends_with("(https://github.com/acme/integrations/actions/runs/9876543210)"),
        "the link survives"
    );
    strip_code(&md[100_000..]);

    // The report output still fits GitHub's limit, and says it is cut.
    let out = env.outputs();
    assert!(out["report"].len() <= actions::OUTPUT_LIMIT);
    let json: Value = serde_json::from_str(&out["report"]).unwrap();
    assert_eq!(json["truncated"], true);
    assert_eq!(json["status"], "conflict");
    // Annotations are capped; the runner shows only a handful anyway.
    let log = String::from_utf8(log).unwrap();
    assert_eq!(log.lines().count(), 51, "50 annotations and one note");
}

#[test]
fn annotations_are_escaped_as_the_runner_unescapes_them() {
    let report = hostile_report();
    let mut log = Vec::new();
    RunnerEnv::new("push", "{}").runtime().finish_to(&mut log, &report).unwrap();
    let log = String::from_utf8(log).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines[0],
        "::error file=platform/bad%2Cfile%3A1.yaml,line=3,col=7,title=Invalid definition file::duplicate key \"a\"%0A::add-mask::x 100%25"
    );
    let cmd = parse_workflow_command(lines[0]).unwrap();
    assert_eq!(cmd.name, "error");
    assert_eq!(cmd.properties["file"], "platform/bad,file:1.yaml");
    assert_eq!(cmd.properties["line"], "3");
    assert_eq!(cmd.properties["col"], "7");
    assert_eq!(cmd.data, report.errors[0].message);
    // The conflict becomes an annotation on its file, too.
    let conflict = parse_workflow_command(lines[1]).unwrap();
    assert_eq!(conflict.properties["file"], "platform/workflow/click.yaml");
    assert!(conflict.data.contains("prefer-git"));
    assert_eq!(lines.len(), 2);
    // Every line is one command: escaping kept the messages' line breaks out.
    assert!(lines.iter().all(|l| parse_workflow_command(l).is_some()));
}

#[test]
fn platform_errors_and_failed_runs_are_annotated_without_a_file() {
    let mut r = Report::new("push");
    r.status = Status::Error;
    r.errors = vec![FileError {
        path: "platform:workflow/x".into(),
        line: None,
        column: None,
        message: "spec too big".into(),
    }];
    r.error = Some(ReportError { message: "platform: 403 forbidden: key may not write p1".into(), exit_code: 1 });
    let lines = actions::annotations(&r);
    let a = parse_workflow_command(&lines[0]).unwrap();
    assert!(!a.properties.contains_key("file"));
    assert_eq!(a.data, "workflow/x: spec too big");
    let b = parse_workflow_command(&lines[1]).unwrap();
    assert_eq!(b.properties["title"], "defsync push failed");
    assert_eq!(b.data, "platform: 403 forbidden: key may not write p1");
}

#[test]
fn secrets_are_masked_first_and_appear_nowhere() {
    let env = RunnerEnv::new("workflow_dispatch", DISPATCH_EVENT);
    let rt = env.runtime();
    let mut log = Vec::new();
    actions::mask_to(&mut log, SECRET).unwrap();
    actions::mask_to(&mut log, "").unwrap();
    actions::mask_to(&mut log, "line one\nline two").unwrap();
    let masks = String::from_utf8(log.clone()).unwrap();
    let cmds: Vec<WorkflowCommand> = masks.lines().map(|l| parse_workflow_command(l).unwrap()).collect();
    assert_eq!(cmds[0].name, "add-mask");
    assert_eq!(cmds[0].data, SECRET, "the runner must unescape the exact secret");
    assert_eq!(
        cmds.iter().map(|c| c.data.as_str()).collect::<Vec<_>>(),
        [SECRET, "line one\nline two", "line one", "line two"]
    );

    let mut log = Vec::new();
    actions::group_start_to(&mut log, "Pull").unwrap();
    rt.finish_to(&mut log, &hostile_report()).unwrap();
    actions::group_end_to(&mut log).unwrap();
    let log = String::from_utf8(log).unwrap();
    assert!(log.starts_with("::group::Pull\n") && log.ends_with("::endgroup::\n"));
    for (what, text) in [("log", log), ("outputs", env.read("output")), ("summary", env.read("summary"))] {
        assert!(!text.contains(SECRET) && !text.contains("dsk_live"), "the secret is in the {what}");
    }
}

#[test]
fn dispatch_inputs_come_from_the_event_payload() {
    let env = RunnerEnv::new("workflow_dispatch", DISPATCH_EVENT);
    let got = env.runtime().dispatch_inputs().unwrap();
    assert_eq!(got.project_id.as_deref(), Some("p1"));
    assert_eq!(got.commit_id.as_deref(), Some("c_01JD3M9Q2W"));

    // A push event has no inputs, even if a payload happens to carry the key.
    let env = RunnerEnv::new("push", r#"{"inputs": {"projectId": "nope"}, "ref": "refs/heads/main"}"#);
    assert_eq!(env.runtime().dispatch_inputs().unwrap(), actions::DispatchInputs::default());

    // Empty inputs are absent; a non-string is a clear error.
    let env = RunnerEnv::new("workflow_dispatch", r#"{"inputs": {"projectId": "", "commitId": "  "}}"#);
    assert_eq!(env.runtime().dispatch_inputs().unwrap(), actions::DispatchInputs::default());
    let env = RunnerEnv::new("workflow_dispatch", r#"{"inputs": {"projectId": {"a": 1}}}"#);
    let e = env.runtime().dispatch_inputs().unwrap_err().to_string();
    assert!(e.contains("projectId must be a string"), "{e}");

    assert!(Runtime::from_vars(|_| None).is_none(), "outside Actions there is no runtime");
    assert!(Runtime::from_vars(|k| (k == "GITHUB_ACTIONS").then(|| "false".into())).is_none());
}

proptest::proptest! {
    #[test]
    fn escaped_log_lines_never_start_a_command(s in "[ \t\r\n:#\\[\\]a%\u{a0}\u{2028}\u{85}]{0,40}") {
        let escaped = actions::escape_log(&s);
        for line in escaped.split(['\n', '\r']) {
            proptest::prop_assert!(!starts_a_command(line), "{:?} -> {:?}", s, escaped);
        }
    }

    #[test]
    fn escaped_command_data_round_trips(s in "[a-z%:,\r\n=]{0,30}") {
        let line = format!("::error file={},title={}::{}", actions::escape_property(&s), actions::escape_property(&s), actions::escape_data(&s));
        proptest::prop_assert!(!line.contains('\n') && !line.contains('\r'));
        let cmd = parse_workflow_command(&line).unwrap();
        if !s.is_empty() {
            proptest::prop_assert_eq!(&cmd.properties["file"], &s);
        }
        proptest::prop_assert_eq!(cmd.data, s);
    }

    #[test]
    fn code_spans_hold_anything(s in "[`a @|<>\\[\\]()\n ]{0,30}") {
        let span = actions::code_span(&s);
        proptest::prop_assert!(!span.contains('\n'));
        let stripped = strip_code(&span);
        proptest::prop_assert_eq!(stripped.trim_end(), "CODE");
    }
}

// ---------------------------------------------------------------------------------------------
// The action's shell steps, against a file server on 127.0.0.1

/// A minimal HTTP/1.1 file server: GET of a known path is 200 with its bytes, anything else 404.
struct FileServer {
    base: String,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl FileServer {
    fn start() -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let shared = files.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                        break;
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let body = shared.lock().unwrap().get(&path).cloned();
                let (status, body) = match body {
                    Some(b) => ("200 OK", b),
                    None => ("404 Not Found", b"Not Found".to_vec()),
                };
                let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        FileServer { base, files }
    }

    fn put(&self, path: &str, body: &[u8]) {
        self.files.lock().unwrap().insert(path.to_owned(), body.to_vec());
    }

    /// A release as release.yml publishes it: the asset for this machine, SHA256SUMS and
    /// SOURCE_COMMIT.
    fn release(&self, tag: &str, binary: &[u8], commit: &str) {
        let asset = format!("defsync-{}", this_target());
        let sum = sha256_hex(binary);
        let sums = format!("{}  defsync-aarch64-apple-darwin\n{sum}  {asset}\n", "0".repeat(64));
        self.put(&format!("/{tag}/{asset}"), binary);
        self.put(&format!("/{tag}/SHA256SUMS"), sums.as_bytes());
        self.put(&format!("/{tag}/SOURCE_COMMIT"), format!("{commit}\n").as_bytes());
    }
}

fn this_target() -> &'static str {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => "x86_64-unknown-linux-musl",
        ("linux", "aarch64") => "aarch64-unknown-linux-musl",
        ("macos", "x86_64") => "x86_64-apple-darwin",
        ("macos", "aarch64") => "aarch64-apple-darwin",
        _ => "x86_64-pc-windows-msvc.exe",
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    hex::encode(Sha256::digest(bytes))
}

fn cargo_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// A small stand-in binary for download tests: a script that answers `--version`.
fn fake_binary(text: &str) -> Vec<u8> {
    format!("#!/bin/sh\necho \"{text}\"\n").into_bytes()
}

/// Runs one action step: `bash -e -o pipefail -c RUN` with the step's env, as the runner does for
/// `shell: bash`, with a fresh `$GITHUB_OUTPUT`. Returns (exit code, stdout, stderr, outputs).
struct StepRun {
    code: i32,
    stdout: String,
    stderr: String,
    outputs: BTreeMap<String, String>,
}

fn run_step(dir: &Path, script: &str, env: &[(&str, String)], cwd: &Path) -> StepRun {
    let output_file = dir.join(format!("output-{}", crate::support::rand_suffix()));
    std::fs::write(&output_file, "").unwrap();
    let mut cmd = Command::new("bash");
    cmd.args(["--noprofile", "--norc", "-e", "-o", "pipefail", "-c", script]).current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("GITHUB_") || k.starts_with("DEFSYNC_") || k.starts_with("RUNNER_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("GITHUB_OUTPUT", &output_file).env("RUNNER_TEMP", dir).env("GITHUB_ACTIONS", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = std::fs::read_to_string(&output_file).unwrap();
    let outputs = parse_runner_outputs(&text).unwrap_or_else(|e| panic!("{e}: {text}")).into_iter().collect();
    StepRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        outputs,
    }
}

/// The `run:` and the literal env of action.yml's step `id`, so the test runs what the action runs.
fn action_step(id: &str) -> (String, Vec<(String, String)>) {
    let action = yaml("action.yml");
    let step = steps(&action).iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no step {id}")).clone();
    let env =
        step["env"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect();
    (step["run"].as_str().unwrap().to_owned(), env)
}

/// Evaluates the few expression forms action.yml uses, as the runner would for these contexts.
fn eval(expr: &str, ctx: &HashMap<String, String>) -> String {
    let Some(inner) = expr.strip_prefix("${{ ").and_then(|e| e.strip_suffix(" }}")) else {
        // A literal, or a literal with an expression prefix such as "${{ github.action_path }}/..".
        if let Some(rest) = expr.strip_prefix("${{ github.action_path }}") {
            return format!("{}{rest}", ctx["github.action_path"]);
        }
        return expr.to_owned();
    };
    if let Some(end) = inner.find(" }}") {
        // "${{ github.action_path }}/.." handled above; nothing else nests.
        panic!("unexpected expression {inner:?} {end}");
    }
    inner
        .split(" || ")
        .map(|part| ctx.get(part.trim()).cloned().unwrap_or_default())
        .find(|v| !v.is_empty())
        .unwrap_or_default()
}

/// Runs action.yml's install step with the given ref and version input.
fn install_step(tmp: &Path, server: &FileServer, action_ref: &str, version: &str) -> StepRun {
    install_step_with(tmp, server, action_ref, version, &[])
}

/// As [`install_step`], with more environment (set last).
fn install_step_with(
    tmp: &Path,
    server: &FileServer,
    action_ref: &str,
    version: &str,
    extra: &[(&'static str, String)],
) -> StepRun {
    let (run, env) = action_step("install");
    let ctx = HashMap::from([
        ("github.action_path".to_owned(), ROOT.to_owned()),
        ("github.action_ref".to_owned(), action_ref.to_owned()),
        ("github.action_repository".to_owned(), "acme/defsync".to_owned()),
        ("inputs.version".to_owned(), version.to_owned()),
    ]);
    let mut env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), eval(v, &ctx))).collect();
    env.push(("DEFSYNC_DOWNLOAD_BASE", server.base.clone()));
    env.extend(extra.iter().cloned());
    let env: Vec<(&str, String)> = env.into_iter().map(|(k, v)| (leak(k), v)).collect();
    run_step(tmp, &run, &env, tmp)
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn tool_missing(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map_or(true, |o| !o.status.success())
}

#[test]
fn install_downloads_the_release_of_a_version_tag_and_verifies_it() {
    if tool_missing("curl") {
        panic!("the install tests need curl, as every GitHub runner has");
    }
    let server = FileServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let tag = format!("v{}", cargo_version());
    server.release(&tag, &fake_binary("defsync from the release"), &"a".repeat(40));

    // uses: acme/defsync@v0 (the major tag of this source's version).
    let major = format!("v{}", cargo_version().split('.').next().unwrap());
    let r = install_step(tmp.path(), &server, &major, "");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.outputs["mode"], "download");
    assert_eq!(r.outputs["version"], tag);
    let bin = PathBuf::from(&r.outputs["bin"]);
    assert!(bin.starts_with(tmp.path()), "installed under RUNNER_TEMP");
    assert!(r.stdout.contains("defsync from the release"), "the installed binary ran: {}", r.stdout);

    // The exact version input, and a SHA ref whose release was built from that commit.
    assert_eq!(install_step(tmp.path(), &server, "main", &cargo_version()).outputs["mode"], "download");
    assert_eq!(install_step(tmp.path(), &server, &"a".repeat(40), "").outputs["mode"], "download");
}

#[test]
fn install_refuses_a_tampered_download() {
    let server = FileServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let tag = format!("v{}", cargo_version());
    server.release(&tag, &fake_binary("genuine"), &"a".repeat(40));
    // The asset is swapped after SHA256SUMS was written.
    server.put(&format!("/{tag}/defsync-{}", this_target()), &fake_binary("evil: this must never run"));

    let r = install_step(tmp.path(), &server, &tag, "");
    assert_ne!(r.code, 0);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("::error title=defsync install::checksum mismatch"), "{all}");
    assert!(!all.contains("evil: this must never run"), "the tampered file ran");
    assert!(!r.outputs.contains_key("bin") && !r.outputs.contains_key("mode"), "{:?}", r.outputs);
    let leftovers: Vec<_> = walk(tmp.path())
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.windows(4).any(|w| w == b"evil")))
        .collect();
    assert!(leftovers.is_empty(), "the tampered download was kept: {leftovers:?}");

    // A malformed checksum file is refused too, never skipped.
    server.put(&format!("/{tag}/SHA256SUMS"), format!("nothex  defsync-{}\n", this_target()).as_bytes());
    let r = install_step(tmp.path(), &server, &tag, "");
    assert_ne!(r.code, 0, "{}", r.stdout);
}

/// install.sh used fixed names under the temp dir (`defsync-<tag>-<target>`), which another user
/// or an earlier step could have made first; each install now gets a fresh `mktemp -d`.
#[test]
fn install_downloads_into_a_fresh_directory_each_time() {
    let server = FileServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let tag = format!("v{}", cargo_version());
    server.release(&tag, &fake_binary("the release"), &"a".repeat(40));
    let fixed = tmp.path().join(format!("defsync-{tag}-{}", this_target()));
    std::fs::create_dir_all(&fixed).unwrap();
    std::fs::write(fixed.join("defsync"), fake_binary("planted")).unwrap();
    make_executable(&fixed.join("defsync"));

    let first = install_step(tmp.path(), &server, &tag, "");
    let second = install_step(tmp.path(), &server, &tag, "");
    for r in [&first, &second] {
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        let bin = PathBuf::from(&r.outputs["bin"]);
        assert!(bin.starts_with(tmp.path()) && !bin.starts_with(&fixed), "{}", bin.display());
        assert!(r.stdout.contains("the release") && !r.stdout.contains("planted"), "{}", r.stdout);
    }
    assert_ne!(PathBuf::from(&first.outputs["bin"]).parent(), PathBuf::from(&second.outputs["bin"]).parent());
    assert_eq!(std::fs::read(fixed.join("defsync")).unwrap(), fake_binary("planted"), "left alone");
}

#[cfg(unix)]
#[test]
fn install_says_when_curl_is_missing() {
    let server = FileServer::start();
    let tmp = tempfile::tempdir().unwrap();
    server.release(&format!("v{}", cargo_version()), &fake_binary("x"), &"a".repeat(40));
    // A PATH with every tool install.sh uses but curl.
    let bin = tmp.path().join("bin-without-curl");
    std::fs::create_dir(&bin).unwrap();
    let tools = "bash sh env awk sha256sum shasum mktemp cat tr grep dirname uname mkdir rm mv chmod find sort";
    for tool in tools.split(' ') {
        let out = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap();
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && path.starts_with('/') {
            std::os::unix::fs::symlink(path, bin.join(tool)).unwrap();
        }
    }
    let r = install_step_with(
        tmp.path(),
        &server,
        "main",
        &cargo_version(),
        &[("PATH", bin.to_string_lossy().into_owned())],
    );
    assert_ne!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("::error title=defsync install::curl is not installed"), "{}{}", r.stdout, r.stderr);
    assert!(!r.outputs.contains_key("bin"), "{:?}", r.outputs);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn install_builds_from_source_when_no_release_matches() {
    let server = FileServer::start();
    let tmp = tempfile::tempdir().unwrap();
    // A branch, an unreleased commit, `uses: ./` (empty ref), and a tag without a release.
    for r in ["main", &"b".repeat(40), "", "v0"] {
        let run = install_step(tmp.path(), &server, r, "");
        assert_eq!(run.code, 0, "{r}: {}{}", run.stdout, run.stderr);
        assert_eq!(run.outputs["mode"], "build", "{r}");
        let hash = &run.outputs["source-hash"];
        assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "{hash}");
        assert!(run.outputs["build-dir"].starts_with(tmp.path().to_str().unwrap()));
    }
    // A SHA whose release was built from another commit is not that release.
    server.release(&format!("v{}", cargo_version()), &fake_binary("x"), &"a".repeat(40));
    assert_eq!(install_step(tmp.path(), &server, &"b".repeat(40), "").outputs["mode"], "build");

    // An explicit version that does not exist is an error, not a silent build.
    let run = install_step(tmp.path(), &server, "main", "9.9.9");
    assert_ne!(run.code, 0);
    assert!(run.stdout.contains("release v9.9.9 has no binary"), "{}", run.stdout);
    let run = install_step(tmp.path(), &server, "main", "latest; rm -rf /");
    assert_ne!(run.code, 0);
}

#[test]
fn install_build_step_reuses_a_cached_build() {
    // The cache step restores build-dir; with this source's binary in it, no cargo runs.
    let server = FileServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let resolved = install_step(tmp.path(), &server, "main", "");
    let hash = resolved.outputs["source-hash"].clone();
    let build_dir = PathBuf::from(&resolved.outputs["build-dir"]);
    let cached = build_dir.join("bin").join(&hash).join("defsync");
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    std::fs::write(&cached, fake_binary("cached build")).unwrap();
    make_executable(&cached);
    std::fs::create_dir_all(build_dir.join("bin/stale")).unwrap();

    let (run, env) = action_step("build");
    let ctx = HashMap::from([
        ("github.action_path".to_owned(), ROOT.to_owned()),
        ("steps.install.outputs.build-dir".to_owned(), build_dir.to_string_lossy().into_owned()),
    ]);
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (leak(k), eval(v, &ctx))).collect();
    let r = run_step(tmp.path(), &run, &env, tmp.path());
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(PathBuf::from(&r.outputs["bin"]), cached);
    assert!(r.stdout.contains("cached build"));
}

fn make_executable(p: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn install_refuses_plain_http_to_other_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run_step(
        tmp.path(),
        &format!("bash {ROOT}/scripts/install.sh resolve"),
        &[
            ("DEFSYNC_ACTION_DIR", ROOT.to_owned()),
            ("DEFSYNC_INSTALL_VERSION", cargo_version()),
            ("DEFSYNC_DOWNLOAD_BASE", "http://example.com/releases/download".to_owned()),
        ],
        tmp.path(),
    );
    assert_ne!(r.code, 0);
    assert!(r.stdout.contains("refusing to download over anything but https://"), "{}", r.stdout);
}

/// The run step with the action's env, evaluated for `inputs`, running the real binary.
fn run_action(env: &Env, inputs: &[(&str, &str)], extra: &[(&str, String)]) -> StepRun {
    let (run, step_env) = action_step("run");
    let action = yaml("action.yml");
    let mut ctx: HashMap<String, String> = HashMap::from([
        ("github.action_path".to_owned(), ROOT.to_owned()),
        ("steps.install.outputs.bin".to_owned(), BIN.to_owned()),
        ("github.token".to_owned(), "ghs_jobtoken000000000000000000000000000".to_owned()),
    ]);
    for (name, input) in action["inputs"].as_object().unwrap() {
        let default = input["default"].as_str().unwrap_or_default();
        let default = if default == "${{ github.token }}" { ctx["github.token"].clone() } else { default.to_owned() };
        ctx.insert(format!("inputs.{name}"), default);
    }
    for (k, v) in inputs {
        ctx.insert(format!("inputs.{k}"), (*v).to_owned());
    }
    let mut vars: Vec<(&str, String)> = step_env.iter().map(|(k, v)| (leak(k), eval(v, &ctx))).collect();
    vars.extend(extra.iter().cloned());
    vars.push(("GIT_CONFIG_GLOBAL", env.dir.path().join("gitconfig").to_string_lossy().into_owned()));
    vars.push(("GIT_CONFIG_NOSYSTEM", "1".to_owned()));
    run_step(env.dir.path(), &run, &vars, &env.work)
}

#[test]
fn run_step_passes_inputs_as_env_and_drops_empty_ones() {
    let env = Env::new();
    // Empty inputs (branch, commit-id, author...) must not reach clap as "" values.
    let r = run_action(
        &env,
        &[
            ("command", "status"),
            ("platform-url", &env.platform),
            ("api-key", SECRET),
            ("project-id", "p1"),
            ("path", "defs"),
            ("direction", ""),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for text in [&r.stdout, &r.stderr] {
        assert!(!text.contains(SECRET), "the API key was printed");
        for line in text.lines() {
            let is_ours = ["::add-mask::", "::group::", "::endgroup::", "::error ", "::warning"]
                .iter()
                .any(|c| line.starts_with(c));
            assert!(!starts_a_command(line) || is_ours, "unexpected workflow command: {line}");
        }
    }

    // A command outside the four is refused without echoing the input.
    let r = run_action(&env, &[("command", "pull; echo pwned"), ("platform-url", &env.platform)], &[]);
    assert_eq!(r.code, 2);
    assert!(r.stdout.contains("the command input must be pull, push, status, link or doctor"));
    assert!(!r.stdout.contains("pwned") && !r.stderr.contains("pwned"));
}

/// The run step end to end: the real binary, under a runner-like environment with a real
/// workflow_dispatch payload, writes the action's outputs and job summary.
#[test]
fn run_step_writes_the_action_outputs_and_summary() {
    let env = Env::new();
    env.dashboard_put("workflow", "notify", serde_json::json!({"a": 1}));
    let tmp = tempfile::tempdir().unwrap();
    let summary = tmp.path().join("summary");
    let event = tmp.path().join("event.json");
    // The dispatch names the platform commit that asked for the pull: the real head.
    let head = env.run("status", &[]).json()["platform_commit"]["id"].as_str().unwrap().to_owned();
    std::fs::write(&event, DISPATCH_EVENT.replace("c_01JD3M9Q2W", &head)).unwrap();
    let r = run_action(
        &env,
        &[("command", "pull"), ("platform-url", &env.platform), ("api-key", SECRET), ("path", "defs")],
        &[
            ("GITHUB_STEP_SUMMARY", summary.to_string_lossy().into_owned()),
            ("GITHUB_EVENT_PATH", event.to_string_lossy().into_owned()),
            ("GITHUB_EVENT_NAME", "workflow_dispatch".to_owned()),
            ("GITHUB_REPOSITORY", "acme/integrations".to_owned()),
            ("GITHUB_SHA", env.head()),
            ("GITHUB_REF", "refs/heads/main".to_owned()),
        ],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.outputs.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        actions::OUTPUTS.iter().copied().collect()
    );
    assert_eq!(r.outputs["status"], "changed");
    assert_eq!(r.outputs["added"], "1");
    assert_eq!(r.outputs["git-commit"], env.origin_head());
    // The mask comes first, on whichever stream the binary writes its workflow commands to.
    let stream = if r.stdout.contains("::add-mask::") { &r.stdout } else { &r.stderr };
    assert!(stream.lines().next().unwrap_or_default().starts_with("::add-mask::"), "the mask comes first:\n{stream}");
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains("`notify`"), "{md}");
    for text in [&r.stdout, &r.stderr, &md, &r.outputs["report"]] {
        assert!(!text.contains(SECRET));
    }
}

#[test]
fn examples_pass_the_dispatch_inputs_and_the_secret_only_through_with() {
    let pull = yaml("examples/workflows/defsync-pull.yml");
    let on = &pull["on"]["workflow_dispatch"]["inputs"];
    assert!(on.get("projectId").is_some() && on.get("commitId").is_some(), "{on}");
    let text = std::fs::read_to_string(Path::new(ROOT).join("examples/workflows/defsync-pull.yml")).unwrap();
    assert!(text.contains("secrets.DEFSYNC_API_KEY"));
    let mut body = String::new();
    std::fs::File::open(Path::new(ROOT).join("examples/workflows/defsync-push.yml"))
        .unwrap()
        .read_to_string(&mut body)
        .unwrap();
    assert!(body.contains("dry-run: true") || body.contains("dry-run: 'true'"), "the PR check is a dry run");
}
