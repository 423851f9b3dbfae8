//! The GitLab CI/CD runtime, active when `GITLAB_CI=true`: the event from predefined and pipeline
//! variables, and a finished run as report files that a job declares as artifacts (a `dotenv`
//! report, the JSON report, a Code Quality report and a Markdown summary), with log groups as
//! collapsible sections.
//!
//! GitLab has no command that masks a value at run time (masking is a property of a CI/CD
//! variable), so this runtime remembers every secret it is told of, and the secret-bearing
//! variables it knows, and scrubs them from every file before writing it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};

use crate::report::{Report, Resolution};

/// The variable that names the report directory; a relative path is relative to the working
/// directory, where GitLab starts a job's script: `CI_PROJECT_DIR`, the path artifacts are
/// relative to. (gitlab-ci-local's shell executor sets `CI_PROJECT_DIR` to a docker path it does
/// not run in, so the variable itself is not read.)
pub const REPORT_DIR_VAR: &str = "DEFSYNC_REPORT_DIR";
/// The report directory when [`REPORT_DIR_VAR`] is not set.
pub const DEFAULT_REPORT_DIR: &str = "defsync-reports";

/// The files written into the report directory, as the templates declare them.
pub const DOTENV_FILE: &str = "defsync.env";
pub const REPORT_FILE: &str = "defsync-report.json";
pub const CODEQUALITY_FILE: &str = "gl-code-quality-report.json";
pub const SUMMARY_FILE: &str = "defsync-summary.md";

/// The pipeline variables a trigger sets to ask for a pull (the platform's
/// `POST /projects/:id/trigger/pipeline` with `variables[DEFSYNC_PROJECT_ID]=...`). The
/// component's `project-id` and `commit-id` inputs reach the binary as `DEFSYNC_PROJECT` and
/// `DEFSYNC_COMMIT` instead, which win over these.
pub use crate::forge::gitlab::pipeline::{COMMIT_VARIABLE as COMMIT_VAR, PROJECT_VARIABLE as PROJECT_VAR};

/// The `dotenv` variables, in order: the Action's outputs but `report` (multi-line values are
/// refused by GitLab; the JSON report is an artifact of its own).
pub const DOTENV_NAMES: &[&str] = &[
    "DEFSYNC_STATUS",
    "DEFSYNC_CHANGED",
    "DEFSYNC_GIT_COMMIT",
    "DEFSYNC_PLATFORM_COMMIT",
    "DEFSYNC_ADDED",
    "DEFSYNC_UPDATED",
    "DEFSYNC_DELETED",
    "DEFSYNC_CONFLICTS",
];

/// GitLab rejects a `dotenv` report over 5 KB on upload.
pub const DOTENV_LIMIT: usize = 5 * 1024;

/// The summary is an artifact, not a page GitLab renders inline; the Actions limit keeps it
/// readable all the same.
pub const SUMMARY_LIMIT: usize = 1024 * 1024;

/// Variables that hold secrets in a GitLab job, scrubbed from every file even when the CLI does
/// not pass them to [`crate::ci::Runtime::mask`].
pub const SECRET_VARS: &[&str] = &[
    "DEFSYNC_API_KEY",
    "DEFSYNC_GITLAB_TOKEN",
    "GITLAB_TOKEN",
    "DEFSYNC_GITHUB_TOKEN",
    "GITHUB_TOKEN",
    "CI_JOB_TOKEN",
    "CI_REGISTRY_PASSWORD",
    "CI_DEPLOY_PASSWORD",
    "CI_DEPENDENCY_PROXY_PASSWORD",
];

/// What a secret is replaced with, as GitLab shows masked variables.
const MASKED: &str = "[MASKED]";

/// A GitLab job, as its variables describe it.
#[derive(Debug, Default)]
pub struct Runtime {
    event: crate::ci::Event,
    dir: PathBuf,
    secrets: Mutex<Vec<String>>,
    sections: Mutex<Vec<String>>,
    clock: Option<u64>,
    /// A merge request pipeline (`CI_MERGE_REQUEST_IID`): the summary also goes on the MR.
    merge_request: bool,
}

impl Runtime {
    /// Some when `GITLAB_CI == "true"`, reading variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<Runtime> {
        if var("GITLAB_CI").as_deref() != Some("true") {
            return None;
        }
        let nonempty = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let secrets = SECRET_VARS.iter().filter_map(|v| var(v)).filter(|s| !s.is_empty()).collect();
        Some(Runtime {
            event: event(&nonempty),
            dir: PathBuf::from(nonempty(REPORT_DIR_VAR).unwrap_or_else(|| DEFAULT_REPORT_DIR.to_owned())),
            secrets: Mutex::new(secrets),
            sections: Mutex::new(Vec::new()),
            clock: None,
            merge_request: nonempty("CI_MERGE_REQUEST_IID").is_some(),
        })
    }

    /// The directory the report files go to.
    pub fn report_dir(&self) -> &Path {
        &self.dir
    }

    /// Fixes the clock of the section markers, for tests that compare log text.
    pub fn with_clock(self, unix: u64) -> Self {
        Runtime { clock: Some(unix), ..self }
    }

    fn now(&self) -> u64 {
        self.clock.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
        })
    }

    /// `text` with every secret this runtime knows replaced by `[MASKED]`, in its raw form and in
    /// the escaped form JSON gives it.
    pub fn scrub(&self, text: &str) -> String {
        let secrets = self.secrets.lock().map(|s| s.clone()).unwrap_or_default();
        let mut out = text.to_owned();
        // Longest first, so a secret that contains another is replaced whole.
        let mut forms: Vec<String> = secrets
            .iter()
            .flat_map(|s| {
                let json = serde_json::to_string(s).unwrap_or_default();
                let json = json.trim_matches('"').to_owned();
                [s.clone(), json]
            })
            .filter(|s| !s.is_empty())
            .collect();
        forms.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for s in forms {
            out = out.replace(&s, MASKED);
        }
        out
    }

    /// The Markdown summary of a finished run, for the summary file and the MR note.
    fn summary(&self, report: &Report) -> String {
        let host = crate::markdown::Host {
            limit_name: "the summary's 1 MiB limit",
            full_report: &format!("the JSON report ({REPORT_FILE})"),
            run_link: self.event.run_url.as_deref().map(|u| ("View this job", u)),
        };
        crate::markdown::summary(report, &host, SUMMARY_LIMIT)
    }

    /// Writes the four report files for a finished run; returns their paths.
    pub fn write_reports(&self, report: &Report) -> Result<Vec<PathBuf>> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the report directory {} ({REPORT_DIR_VAR})", dir.display()))?;
        let meta = std::fs::symlink_metadata(dir)
            .with_context(|| format!("cannot read the report directory {}", dir.display()))?;
        if !meta.is_dir() {
            anyhow::bail!(
                "the report directory {} is a symbolic link or not a directory, and defsync never writes through \
                 links: set {REPORT_DIR_VAR} to a plain directory",
                dir.display()
            );
        }
        let files = [
            (DOTENV_FILE, dotenv(report)),
            (REPORT_FILE, serde_json::to_string_pretty(report).context("cannot render the JSON report")? + "\n"),
            (CODEQUALITY_FILE, codequality(report)),
            (SUMMARY_FILE, self.summary(report)),
        ];
        let mut written = Vec::new();
        for (name, text) in files {
            let path = dir.join(name);
            write_new(&path, &self.scrub(&text)).with_context(|| format!("cannot write {}", path.display()))?;
            written.push(path);
        }
        Ok(written)
    }
}

impl crate::ci::Runtime for Runtime {
    fn event(&self) -> crate::ci::Event {
        self.event.clone()
    }

    fn change_request_summary(&self, report: &Report) -> Option<String> {
        self.merge_request.then(|| self.scrub(&self.summary(report)))
    }

    fn mask(&self, _log: &mut dyn Write, secret: &str) -> std::io::Result<()> {
        if !secret.is_empty()
            && let Ok(mut s) = self.secrets.lock()
            && !s.iter().any(|k| k == secret)
        {
            s.push(secret.to_owned());
        }
        Ok(())
    }

    fn group_start(&self, log: &mut dyn Write, title: &str) -> std::io::Result<()> {
        let name = {
            let mut sections = self.sections.lock().map_err(|_| std::io::Error::other("section stack poisoned"))?;
            let name = section_name(title, sections.len());
            sections.push(name.clone());
            name
        };
        section_start_to(log, self.now(), &name, title)
    }

    fn group_end(&self, log: &mut dyn Write) -> std::io::Result<()> {
        let name = self.sections.lock().ok().and_then(|mut s| s.pop());
        match name {
            Some(name) => section_end_to(log, self.now(), &name),
            None => Ok(()),
        }
    }

    fn finish(&self, log: &mut dyn Write, report: &Report) -> Result<()> {
        let written = self.write_reports(report)?;
        let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        writeln!(log, "defsync: reports written: {}", crate::output::data(&names.join(", ")))
            .context("cannot write to the log")?;
        Ok(())
    }
}

/// The event, from variables read through `var` (trimmed, empty ones absent).
fn event(var: &impl Fn(&str) -> Option<String>) -> crate::ci::Event {
    let mr_source = var("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME");
    // CI_COMMIT_BRANCH is set in branch pipelines only: not in merge request or tag pipelines.
    let branch = var("CI_COMMIT_BRANCH");
    let checked_ref = match (&mr_source, &branch, var("CI_COMMIT_TAG")) {
        (Some(source), _, _) => Some(format!("refs/heads/{source}")),
        (None, Some(b), _) => Some(format!("refs/heads/{b}")),
        (None, None, Some(tag)) => Some(format!("refs/tags/{tag}")),
        (None, None, None) => var("CI_COMMIT_REF_NAME"),
    };
    crate::ci::Event {
        project: var(PROJECT_VAR),
        commit: var(COMMIT_VAR),
        branch,
        checked_ref,
        repository: var("CI_PROJECT_PATH").filter(|p| plausible_path(p)),
        run_url: var("CI_JOB_URL").or_else(|| var("CI_PIPELINE_URL")).filter(|u| plausible_url(u)),
        identity: Some(identity(var("CI_SERVER_HOST").as_deref())),
    }
}

/// Who commits a pull when no author or committer is given: GitLab has no bot of its own, so a
/// `noreply` address on the instance, never a person's.
fn identity(host: Option<&str>) -> crate::git::Identity {
    let host = host
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b)))
        .unwrap_or("gitlab.invalid");
    crate::git::Identity { name: "defsync (GitLab CI)".into(), email: format!("noreply@{host}") }
}

/// `group/sub/name` with the characters GitLab allows in paths; it goes into Markdown.
fn plausible_path(p: &str) -> bool {
    p.contains('/')
        && p.split('/').all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)))
}

/// An http(s) URL without characters that could end a Markdown link.
fn plausible_url(u: &str) -> bool {
    (u.starts_with("https://") || u.starts_with("http://"))
        && u.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~:/%?=&#".contains(&b))
}

/// Replaces `path` with `text`: written to a new file beside it, then renamed over it, so a
/// symbolic link at `path` is replaced, never followed.
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".defsync-").tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.flush()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Log sections

/// A section name GitLab accepts (letters, digits, `_`, `.`, `-`), unique in the job's log.
fn section_name(title: &str, depth: usize) -> String {
    let slug: String = title
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' { c } else { '_' })
        .take(40)
        .collect();
    format!("defsync_{depth}_{slug}")
}

/// Opens a collapsible section: `ESC[0Ksection_start:<unix>:<name>[collapsed=true]\r ESC[0K<title>`.
pub fn section_start_to(out: &mut dyn Write, unix: u64, name: &str, title: &str) -> std::io::Result<()> {
    // The title is data: escaped so it can carry no control character, and so no marker.
    write!(out, "\x1b[0Ksection_start:{unix}:{name}[collapsed=true]\r\x1b[0K{}\n", crate::output::data(title))?;
    out.flush()
}

/// Closes the section `name`: `ESC[0Ksection_end:<unix>:<name>\r ESC[0K`.
pub fn section_end_to(out: &mut dyn Write, unix: u64, name: &str) -> std::io::Result<()> {
    write!(out, "\x1b[0Ksection_end:{unix}:{name}\r\x1b[0K\n")?;
    out.flush()
}

// ---------------------------------------------------------------------------------------------
// Reports

/// The `dotenv` report: `NAME=value` lines in [`DOTENV_NAMES`] order. A value that GitLab's
/// format cannot hold (spaces, quotes, line breaks, anything but a plain token) is left empty
/// rather than mangled; the JSON report has it.
pub fn dotenv(report: &Report) -> String {
    let outputs = crate::ci::actions::outputs(report);
    let value = |name: &str| outputs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()).unwrap_or("");
    let mut text = String::new();
    for (var, output) in DOTENV_NAMES.iter().zip([
        "status",
        "changed",
        "git-commit",
        "platform-commit",
        "added",
        "updated",
        "deleted",
        "conflicts",
    ]) {
        let v = value(output);
        let v = if v.len() <= 256 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+@".contains(&b)) {
            v
        } else {
            ""
        };
        text.push_str(var);
        text.push('=');
        text.push_str(v);
        text.push('\n');
    }
    text
}

/// The Code Quality report: one finding per invalid definition and per unresolved conflict,
/// as GitLab's `codequality` format wants them (always a JSON array, `[]` when all is well, so
/// the merge request widget can compare it with the target branch's).
pub fn codequality(report: &Report) -> String {
    let sync_root = report.path.as_deref().filter(|p| !p.is_empty()).unwrap_or(".");
    let mut findings = Vec::new();
    for e in &report.errors {
        // A definition the platform sent has no file: the finding goes on the sync root.
        let (path, description) = match e.path.strip_prefix("platform:") {
            Some(key) => (sync_root.to_owned(), format!("{key} (on the platform): {}", e.message)),
            None => (e.path.clone(), e.message.clone()),
        };
        let line = e.line.unwrap_or(1).max(1);
        findings.push(finding("defsync-invalid-definition", "major", &description, &path, line, &e.path));
    }
    for c in report.conflicts.iter().filter(|c| c.resolution == Resolution::None) {
        let path = c.path.clone().unwrap_or_else(|| sync_root.to_owned());
        let description = format!(
            "{} {:?} was changed in Git and on the platform; nothing was changed on either side. Make the two \
             agree, or rerun with on-conflict prefer-git or prefer-platform.",
            c.kind, c.name
        );
        let digests = |d: &Option<crate::digest::Digest>| d.as_ref().map_or("absent".to_owned(), |d| d.to_string());
        let identity = format!("{}/{}|{}|{}", c.kind, c.name, digests(&c.git), digests(&c.platform));
        findings.push(finding("defsync-conflict", "critical", &description, &path, 1, &identity));
    }
    let mut text = serde_json::to_string_pretty(&findings).unwrap_or_else(|_| "[]".into());
    text.push('\n');
    text
}

/// One finding; its fingerprint hashes the check, the finding's identity and its message, so the
/// same problem keeps the same fingerprint from run to run and across jobs.
fn finding(check: &str, severity: &str, description: &str, path: &str, line: u64, identity: &str) -> serde_json::Value {
    let mut h = Sha256::new();
    for part in [check, identity, description] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let fingerprint = hex::encode(&h.finalize()[..16]);
    serde_json::json!({
        "description": crate::markdown::clip(description, 2000),
        "check_name": check,
        "fingerprint": fingerprint,
        "severity": severity,
        "location": { "path": path, "lines": { "begin": line } },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_names_are_safe_and_unique_per_depth() {
        assert_eq!(section_name("defsync pull", 0), "defsync_0_defsync_pull");
        assert_eq!(section_name("a\u{1b}[0Kb", 1), "defsync_1_a__0Kb");
    }

    #[test]
    fn run_urls_and_paths_are_checked_before_they_reach_markdown() {
        assert!(plausible_url("https://gitlab.example.com/acme/x/-/jobs/42"));
        assert!(!plausible_url("https://x/)[y](javascript:z"));
        assert!(!plausible_url("javascript:alert(1)"));
        assert!(plausible_path("acme/sub/x.y"));
        assert!(!plausible_path("acme"));
        assert!(!plausible_path("acme/x)[y"));
    }
}
