//! The GitHub Actions runtime contract: step outputs, the job summary, annotations, masking,
//! log groups and the `workflow_dispatch` event, active when `GITHUB_ACTIONS=true`.
//!
//! Everything here treats names and server messages as data: in workflow commands they are
//! escaped the way the runner unescapes them, in Markdown they sit in code spans or fenced blocks,
//! and no log line we produce can start a workflow command.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::report::{Op, Report, Resolution, Side, Status};

/// Output names the binary writes (the test checks `action.yml` against this).
pub const OUTPUTS: &[&str] =
    &["status", "changed", "git-commit", "platform-commit", "added", "updated", "deleted", "conflicts", "report"];

/// Environment variables the binary reads besides clap's.
pub const ENV_READ: &[&str] = &[
    "GITHUB_ACTIONS",
    "GITHUB_OUTPUT",
    "GITHUB_STEP_SUMMARY",
    "GITHUB_EVENT_PATH",
    "GITHUB_EVENT_NAME",
    "GITHUB_SERVER_URL",
    "GITHUB_REPOSITORY",
    "GITHUB_RUN_ID",
    "GITHUB_REF",
    "GITHUB_HEAD_REF",
    "GITHUB_WORKSPACE",
    "DEFSYNC_LOG",
];

/// GitHub refuses a step summary over 1 MiB (and then shows none of it).
pub const SUMMARY_LIMIT: usize = 1024 * 1024;

/// GitHub's documented limit for one output value; the `report` output is shrunk to fit.
pub const OUTPUT_LIMIT: usize = 1_000_000;

/// The runner shows at most 10 error annotations per step and 50 per job; more only add noise.
const MAX_ANNOTATIONS: usize = 50;

/// Where the runner wants this step's files, read once from the environment.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    ambient: crate::ci::Event,
    output: Option<PathBuf>,
    summary: Option<PathBuf>,
    event_path: Option<PathBuf>,
    event_name: Option<String>,
    run_url: Option<String>,
    checked_ref: Option<String>,
}

/// GitHub's variables that 1.0 honoured whenever they were set, in Actions or not: the branch
/// (`GITHUB_REF`), the repository and the run's URL.
pub fn ambient(var: &impl Fn(&str) -> Option<String>) -> crate::ci::Event {
    let run_url = || {
        let (server, repo, run) = (var("GITHUB_SERVER_URL")?, var("GITHUB_REPOSITORY")?, var("GITHUB_RUN_ID")?);
        Some(format!("{server}/{repo}/actions/runs/{run}"))
    };
    crate::ci::Event {
        branch: var("GITHUB_REF").and_then(|r| r.strip_prefix("refs/heads/").map(str::to_owned)),
        repository: var("GITHUB_REPOSITORY").filter(|r| !r.is_empty()),
        run_url: run_url(),
        ..Default::default()
    }
}

/// What a `workflow_dispatch` asked for (its `projectId` and `commitId` inputs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchInputs {
    pub project_id: Option<String>,
    pub commit_id: Option<String>,
}

impl Runtime {
    /// Some when GITHUB_ACTIONS == "true".
    pub fn from_env() -> Option<Runtime> {
        Runtime::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`Runtime::from_env`], reading variables through `var`, so tests and other front ends
    /// need not change the process environment.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<Runtime> {
        if var("GITHUB_ACTIONS").as_deref() != Some("true") {
            return None;
        }
        let path = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Some(Runtime {
            ambient: ambient(&var),
            output: path("GITHUB_OUTPUT"),
            summary: path("GITHUB_STEP_SUMMARY"),
            event_path: path("GITHUB_EVENT_PATH"),
            event_name: var("GITHUB_EVENT_NAME").filter(|v| !v.is_empty()),
            run_url: run_url(
                var("GITHUB_SERVER_URL").as_deref(),
                var("GITHUB_REPOSITORY").as_deref(),
                var("GITHUB_RUN_ID").as_deref(),
            ),
            checked_ref: checked_ref(var("GITHUB_EVENT_NAME").as_deref(), var("GITHUB_HEAD_REF"), var("GITHUB_REF")),
        })
    }

    /// The ref this workflow run checked out, for reports. A pull request's checkout is a
    /// detached merge commit, so its branch is named from the event instead.
    pub fn checked_ref(&self) -> Option<&str> {
        self.checked_ref.as_deref()
    }

    /// The link to this workflow run, when the runner told us enough to build it.
    pub fn run_url(&self) -> Option<&str> {
        self.run_url.as_deref()
    }

    /// Prints ::add-mask:: for a secret (no-op for empty strings). Called first, before any output.
    pub fn mask(&self, secret: &str) {
        let _ = mask_to(&mut std::io::stdout().lock(), secret);
    }

    /// projectId and commitId from a workflow_dispatch event payload, if any.
    pub fn dispatch_inputs(&self) -> Result<DispatchInputs> {
        // Other events carry no `inputs`; a `push` payload must not be mistaken for a dispatch.
        if self.event_name.as_deref().is_some_and(|n| n != "workflow_dispatch") {
            return Ok(DispatchInputs::default());
        }
        match &self.event_path {
            Some(path) => dispatch_inputs_from(path),
            None => Ok(DispatchInputs::default()),
        }
    }

    pub fn group_start(&self, title: &str) {
        let _ = group_start_to(&mut std::io::stdout().lock(), title);
    }

    pub fn group_end(&self) {
        let _ = group_end_to(&mut std::io::stdout().lock());
    }

    /// Writes the outputs, the job summary and the annotations for a finished run.
    pub fn finish(&self, report: &Report) -> Result<()> {
        self.finish_to(&mut std::io::stdout().lock(), report)
    }

    /// [`Runtime::finish`] with the annotations written to `log` instead of stdout. The runner
    /// reads workflow commands from stderr as well, which keeps stdout clean for `--json`.
    pub fn finish_to(&self, log: &mut dyn Write, report: &Report) -> Result<()> {
        // Annotations first: if a file cannot be written, the problems are still visible.
        for line in annotations(report) {
            writeln!(log, "{line}").context("cannot write annotations")?;
        }
        log.flush().ok();
        if let Some(path) = &self.output {
            let mut text = String::new();
            for (name, value) in outputs(report) {
                push_output(&mut text, name, &value);
            }
            append(path, &text).with_context(|| format!("cannot write the step outputs to {}", path.display()))?;
        }
        if let Some(path) = &self.summary {
            // The limit is for the whole file, which earlier commands of the step may have filled.
            let used = std::fs::metadata(path).map(|m| m.len() as usize).unwrap_or(0);
            let limit = SUMMARY_LIMIT.saturating_sub(used);
            let md = summary(report, self.run_url.as_deref(), limit);
            append(path, &md).with_context(|| format!("cannot write the job summary to {}", path.display()))?;
        }
        Ok(())
    }
}

impl crate::ci::Runtime for Runtime {
    fn event(&self) -> crate::ci::Event {
        let inputs = self.dispatch_inputs().unwrap_or_else(|e| {
            tracing::warn!("cannot read the workflow_dispatch event: {}", crate::output::data(&format!("{e:#}")));
            DispatchInputs::default()
        });
        crate::ci::Event {
            project: inputs.project_id,
            commit: inputs.commit_id,
            checked_ref: self.checked_ref.clone(),
            identity: Some(crate::git::Identity::github_actions_bot()),
            ..self.ambient.clone()
        }
    }

    fn mask(&self, log: &mut dyn Write, secret: &str) -> std::io::Result<()> {
        mask_to(log, secret)
    }

    fn group_start(&self, log: &mut dyn Write, title: &str) -> std::io::Result<()> {
        group_start_to(log, title)
    }

    fn group_end(&self, log: &mut dyn Write) -> std::io::Result<()> {
        group_end_to(log)
    }

    fn finish(&self, log: &mut dyn Write, report: &Report) -> Result<()> {
        self.finish_to(log, report)
    }
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(text.as_bytes())?;
    f.flush()
}

/// The pull request's head branch for `pull_request` events (`GITHUB_REF` is then only
/// `refs/pull/<n>/merge`), else `GITHUB_REF`.
fn checked_ref(event: Option<&str>, head_ref: Option<String>, git_ref: Option<String>) -> Option<String> {
    let pr = event.is_some_and(|e| e == "pull_request" || e == "pull_request_target");
    let head = head_ref.filter(|h| pr && !h.is_empty()).map(|h| format!("refs/heads/{h}"));
    head.or_else(|| git_ref.filter(|r| !r.is_empty()))
}

/// `$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID`, when all three look like
/// what the runner sets; the link goes into Markdown, so nothing else is let through.
fn run_url(server: Option<&str>, repository: Option<&str>, run_id: Option<&str>) -> Option<String> {
    let server = server?.trim_end_matches('/');
    let repository = repository?;
    let run_id = run_id?;
    let url_ok = (server.starts_with("https://") || server.starts_with("http://"))
        && server.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~:/%".contains(&b));
    let mut parts = repository.split('/');
    let repo_ok = parts.clone().count() == 2
        && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)));
    let run_ok = !run_id.is_empty() && run_id.bytes().all(|b| b.is_ascii_digit());
    (url_ok && repo_ok && run_ok).then(|| format!("{server}/{repository}/actions/runs/{run_id}"))
}

/// Reads `.inputs.projectId` and `.inputs.commitId` from an event payload.
pub fn dispatch_inputs_from(path: &Path) -> Result<DispatchInputs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the workflow event payload {} (GITHUB_EVENT_PATH)", path.display()))?;
    let event: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("the workflow event payload {} is not JSON (GITHUB_EVENT_PATH)", path.display()))?;
    let input = |name: &str| -> Result<Option<String>> {
        match event.get("inputs").and_then(|i| i.get(name)) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
            Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => anyhow::bail!(
                "the workflow_dispatch input {name} must be a string, not {}: dispatch the workflow with \
                 \"inputs\": {{\"{name}\": \"...\"}}",
                match other {
                    serde_json::Value::Bool(_) => "a boolean",
                    serde_json::Value::Array(_) => "an array",
                    _ => "an object",
                }
            ),
        }
    };
    Ok(DispatchInputs { project_id: input("projectId")?, commit_id: input("commitId")? })
}

/// Registers a secret with the runner, which then hides it in every later log line.
pub fn mask_to(out: &mut dyn Write, secret: &str) -> std::io::Result<()> {
    if secret.is_empty() {
        return Ok(());
    }
    writeln!(out, "::add-mask::{}", escape_data(secret))?;
    // The runner masks line by line, so a secret spanning lines is also masked piece by piece.
    if secret.contains(['\n', '\r']) {
        for part in secret.split(['\n', '\r']).map(str::trim).filter(|p| !p.is_empty()) {
            writeln!(out, "::add-mask::{}", escape_data(part))?;
        }
    }
    out.flush()
}

pub fn group_start_to(out: &mut dyn Write, title: &str) -> std::io::Result<()> {
    writeln!(out, "::group::{}", escape_data(title))?;
    out.flush()
}

pub fn group_end_to(out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "::endgroup::")?;
    out.flush()
}

// ---------------------------------------------------------------------------------------------
// Escaping

/// Workflow-command data escaping: the inverse of the runner's `UnescapeData`.
pub fn escape_data(s: &str) -> String {
    // `%` first, so the escapes added for CR and LF are not escaped again.
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Workflow-command property escaping: the inverse of the runner's `UnescapeProperty`.
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Makes a log line safe: no line of the result can start a workflow command.
///
/// The runner splits output on CR and LF, trims leading white space and looks for `::`; it also
/// still honours the legacy `##[command]` form anywhere in a line. Control characters are shown
/// as `\n`, `\u{1b}` and so on, a leading `::` becomes `\u{3a}:`, and `##[` becomes `##\u{5b}`.
pub fn escape_log(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // U+2028/2029 are not controls, but some viewers break lines on them.
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            '[' if out.ends_with("##") => out.push_str("\\u{5b}"),
            c => out.push(c),
        }
    }
    let lead = out.len() - out.trim_start().len();
    if out[lead..].starts_with("::") {
        out.replace_range(lead..lead + 1, "\\u{3a}");
    }
    out
}

use crate::markdown::clip;
pub use crate::markdown::{cell, code_span, conflict_diff};

// ---------------------------------------------------------------------------------------------
// Outputs

/// The step outputs for a report, in [`OUTPUTS`] order.
pub fn outputs(report: &Report) -> Vec<(&'static str, String)> {
    let count = |op: Op| (report.count(Side::Git, op) + report.count(Side::Platform, op)).to_string();
    // Only a run that applied its plan changed anything: a dry run, `status`, or a run stopped
    // by conflicts or invalid files lists changes it did not make.
    let changed = report.status == Status::Changed && !report.changes.is_empty();
    vec![
        ("status", report.status.as_str().to_owned()),
        ("changed", changed.to_string()),
        ("git-commit", report.git_commit.clone().unwrap_or_default()),
        ("platform-commit", report.platform_commit.as_ref().map(|c| c.id.clone()).unwrap_or_default()),
        ("added", count(Op::Add)),
        ("updated", count(Op::Update)),
        ("deleted", count(Op::Delete)),
        ("conflicts", report.conflicts.len().to_string()),
        ("report", report_json(report)),
    ]
}

/// The JSON report for the `report` output: whole when it fits GitHub's limit; otherwise without
/// the conflicting versions' texts; otherwise only the counts, marked `"truncated": true`.
pub fn report_json(report: &Report) -> String {
    let full = serde_json::to_string_pretty(report).unwrap_or_default();
    if full.len() <= OUTPUT_LIMIT {
        return full;
    }
    let mut slim = report.clone();
    for c in &mut slim.conflicts {
        c.git_yaml = None;
        c.platform_yaml = None;
    }
    let mut value = serde_json::to_value(&slim).unwrap_or_default();
    value["truncated"] = true.into();
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    if text.len() <= OUTPUT_LIMIT {
        return text;
    }
    let count = |side, op| report.count(side, op);
    let minimal = serde_json::json!({
        "command": report.command,
        "status": report.status,
        "project": report.project,
        "platform_commit": report.platform_commit,
        "requested_commit": report.requested_commit,
        "git_commit": report.git_commit,
        "error": report.error.as_ref().map(|e| serde_json::json!({
            "message": clip(&e.message, 10_000),
            "exit_code": e.exit_code,
        })),
        "truncated": true,
        "counts": {
            "git": {"add": count(Side::Git, Op::Add), "update": count(Side::Git, Op::Update), "delete": count(Side::Git, Op::Delete)},
            "platform": {"add": count(Side::Platform, Op::Add), "update": count(Side::Platform, Op::Update), "delete": count(Side::Platform, Op::Delete)},
            "conflicts": report.conflicts.len(),
            "errors": report.errors.len(),
        },
    });
    serde_json::to_string_pretty(&minimal).unwrap_or_default()
}

/// Appends one output in the form the runner parses: `name=value` for one line, otherwise
/// `name<<DELIM`, the value, and the delimiter alone on a line. The delimiter is random, so a
/// value cannot end the block early and smuggle in other outputs.
pub fn push_output(text: &mut String, name: &str, value: &str) {
    if !value.contains(['\n', '\r']) {
        let _ = writeln!(text, "{name}={value}");
        return;
    }
    let delimiter = loop {
        let d = format!("ghadelimiter_{:032x}", rand::random::<u128>());
        if !value.contains(&d) {
            break d;
        }
    };
    let _ = write!(text, "{name}<<{delimiter}\n{value}\n{delimiter}\n");
}

// ---------------------------------------------------------------------------------------------
// Annotations

/// Workflow commands that annotate each invalid file, each unresolved conflict and a failed run.
pub fn annotations(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for e in &report.errors {
        if let Some(on_platform) = e.path.strip_prefix("platform:") {
            out.push(format!(
                "::error title={}::{}",
                escape_property("Invalid definition on the platform"),
                escape_data(&format!("{on_platform}: {}", e.message))
            ));
            continue;
        }
        let mut props = format!("file={}", escape_property(&e.path));
        if let Some(line) = e.line {
            let _ = write!(props, ",line={line}");
            if let Some(col) = e.column {
                let _ = write!(props, ",col={col}");
            }
        }
        let _ = write!(props, ",title={}", escape_property("Invalid definition file"));
        out.push(format!("::error {props}::{}", escape_data(&e.message)));
    }
    for c in report.conflicts.iter().filter(|c| c.resolution == Resolution::None) {
        let mut props = String::new();
        if let Some(p) = &c.path {
            let _ = write!(props, "file={},", escape_property(p));
        }
        let _ = write!(props, "title={}", escape_property("Conflict"));
        let message = format!(
            "{} {:?} was changed in Git and on the platform; nothing was changed on either side. \
             Make the two agree, or rerun with on-conflict prefer-git or prefer-platform.",
            c.kind, c.name
        );
        out.push(format!("::error {props}::{}", escape_data(&message)));
    }
    if let Some(g) = report.stopped_by_guard() {
        out.push(format!(
            "::error title={}::{}",
            escape_property("Mass deletion stopped"),
            escape_data(&g.message(report.path.as_deref()))
        ));
    }
    if let Some(err) = &report.error {
        let title = format!("defsync {} failed", report.command);
        out.push(format!("::error title={}::{}", escape_property(&title), escape_data(&err.message)));
    }
    if out.len() > MAX_ANNOTATIONS {
        let left = out.len() - MAX_ANNOTATIONS;
        out.truncate(MAX_ANNOTATIONS);
        out.push(format!("::warning::{left} more problems were not annotated; the job summary lists them"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Job summary

/// The job summary for a report, at most `limit` bytes (GitHub allows [`SUMMARY_LIMIT`]).
pub fn summary(report: &Report, run_url: Option<&str>, limit: usize) -> String {
    let host = crate::markdown::Host {
        limit_name: "GitHub's 1 MiB limit",
        full_report: "the `report` output",
        run_link: run_url.map(|u| ("View this workflow run", u)),
    };
    crate::markdown::summary(report, &host, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_and_properties_escape_as_the_runner_unescapes() {
        assert_eq!(escape_data("50% a\r\nb"), "50%25 a%0D%0Ab");
        assert_eq!(escape_data("%0A"), "%250A");
        assert_eq!(escape_property("a:b,c%\n"), "a%3Ab%2Cc%25%0A");
    }

    #[test]
    fn log_lines_cannot_start_commands() {
        assert_eq!(escape_log("::error::x"), "\\u{3a}:error::x");
        assert_eq!(escape_log("  \u{a0}::warning::x"), "  \u{a0}\\u{3a}:warning::x");
        assert_eq!(escape_log("ok\n::add-mask::x"), "ok\\n::add-mask::x");
        assert_eq!(escape_log("x ##[set-output name=a]b"), "x ##\\u{5b}set-output name=a]b");
        assert_eq!(escape_log("a: b::c"), "a: b::c");
    }

    #[test]
    fn a_pull_request_check_names_its_head_branch() {
        let (head, merge) = (Some("feature/x".to_owned()), Some("refs/pull/7/merge".to_owned()));
        assert_eq!(
            checked_ref(Some("pull_request"), head.clone(), merge.clone()).as_deref(),
            Some("refs/heads/feature/x")
        );
        assert_eq!(checked_ref(Some("pull_request_target"), head, merge).as_deref(), Some("refs/heads/feature/x"));
        let main = Some("refs/heads/main".to_owned());
        assert_eq!(checked_ref(Some("push"), Some(String::new()), main.clone()).as_deref(), Some("refs/heads/main"));
        assert_eq!(checked_ref(Some("pull_request"), Some(String::new()), main).as_deref(), Some("refs/heads/main"));
        assert_eq!(checked_ref(None, None, None), None);
    }

    #[test]
    fn run_url_is_built_only_from_plausible_parts() {
        let url = run_url(Some("https://github.com"), Some("acme/x"), Some("42"));
        assert_eq!(url.as_deref(), Some("https://github.com/acme/x/actions/runs/42"));
        assert_eq!(run_url(Some("https://github.com"), Some("acme/x)[y](z"), Some("42")), None);
        assert_eq!(run_url(Some("javascript:alert(1)"), Some("acme/x"), Some("42")), None);
        assert_eq!(run_url(Some("https://github.com"), Some("acme/x"), Some("4 2")), None);
    }

    #[test]
    fn multi_line_outputs_use_a_fresh_random_delimiter() {
        let mut a = String::new();
        push_output(&mut a, "report", "{\n}");
        let mut b = String::new();
        push_output(&mut b, "report", "{\n}");
        assert!(a.starts_with("report<<ghadelimiter_"));
        assert_ne!(a, b);
        let mut c = String::new();
        push_output(&mut c, "status", "in_sync");
        assert_eq!(c, "status=in_sync\n");
    }
}
