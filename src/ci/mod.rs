//! CI runtimes: what runs defsync (GitHub Actions, GitLab CI/CD, or none). A runtime supplies the event's
//! inputs and shows a finished run the way its users expect: outputs, the summary, annotations,
//! log groups and masked secrets.
//!
//! The engine never sees a runtime: the CLI reads the [`Event`] into the engine's request, and
//! hands the engine's [`Report`] to [`Runtime::finish`]. A trait object, `&dyn Runtime`, since
//! the runtime is found in the environment at run time ([`detect`]); its methods are
//! synchronous, as they only write local files and log lines.

pub mod actions;
pub mod gitlab;
pub mod local;

use std::io::Write;

use crate::git::Identity;
use crate::report::Report;

/// What the event that started the run says, as plain data; every field is optional, and the
/// command line wins over it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The project the event asks to sync (a `workflow_dispatch` input; on GitLab a pipeline
    /// variable or a pipeline `inputs` entry: both forms are to be read).
    pub project: Option<String>,
    /// The platform commit that asked for the run.
    pub commit: Option<String>,
    /// The branch the run is on, without `refs/heads/`, when the checkout does not say.
    pub branch: Option<String>,
    /// The ref to name in reports when no branch was synced: a pull request's head branch
    /// rather than its detached merge commit (GitLab: the MR's source branch).
    pub checked_ref: Option<String>,
    /// The repository as the runner names it (`owner/name`; GitLab: the project path).
    pub repository: Option<String>,
    /// The link to this run, recorded in the platform commits a push makes.
    pub run_url: Option<String>,
    /// Who commits when no author or committer is given (GitHub Actions: its bot).
    pub identity: Option<Identity>,
}

/// A CI runtime. Writes go to `log`, which the CLI makes stderr so that stdout stays clean for
/// `--json`; a runtime that needs files (step outputs, reports) writes them itself.
pub trait Runtime {
    /// The event's inputs. A part of the event that cannot be read is left out with a warning:
    /// the command line may still give what it would have said.
    fn event(&self) -> Event;

    /// Hides `secret` in every later log line. Called first, before anything else is printed.
    /// GitLab has no such command: its masking is a project setting, so a GitLab runtime keeps
    /// secrets out of what it writes instead.
    fn mask(&self, log: &mut dyn Write, secret: &str) -> std::io::Result<()>;

    /// Opens a collapsible log group (Actions: `::group::`; GitLab: `section_start`).
    fn group_start(&self, log: &mut dyn Write, title: &str) -> std::io::Result<()>;

    /// Closes the group [`Runtime::group_start`] opened (GitLab: `section_end`, same name).
    fn group_end(&self, log: &mut dyn Write) -> std::io::Result<()>;

    /// Shows a finished run: outputs, summary and annotations. Secrets never appear in any.
    ///
    /// - Actions: step outputs, the job summary, `::error` annotations.
    /// - GitLab CI: outputs as a `dotenv` report, the JSON report as an artifact, invalid files
    ///   as a Code Quality report, the summary as a Markdown artifact and, in merge request
    ///   pipelines, one MR note that each run updates (that note goes through the forge).
    fn finish(&self, log: &mut dyn Write, report: &Report) -> anyhow::Result<()>;

    /// The summary to show on the change request this run checks, with no secret in it, for the
    /// forge to post (GitLab: one MR note that each run edits); `None` when the run checks no
    /// change request, or when [`Runtime::finish`] already shows it there (Actions).
    fn change_request_summary(&self, _report: &Report) -> Option<String> {
        None
    }
}

/// The runtime this process runs in: GitHub Actions when `GITHUB_ACTIONS=true`, GitLab CI/CD
/// when `GITLAB_CI=true`, else none.
pub fn detect() -> Box<dyn Runtime> {
    detect_from(|name| std::env::var(name).ok())
}

/// [`detect`], reading variables through `var`.
pub fn detect_from(var: impl Fn(&str) -> Option<String>) -> Box<dyn Runtime> {
    if let Some(rt) = actions::Runtime::from_vars(&var) {
        return Box::new(rt);
    }
    if let Some(rt) = gitlab::Runtime::from_vars(&var) {
        return Box::new(rt);
    }
    Box::new(local::Local::from_vars(&var))
}
