//! The outcome of a run: one value that becomes the `--json` object, the human log, the Action's
//! outputs and its job summary.

use serde::Serialize;

use crate::digest::Digest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InSync,
    Changed,
    Conflict,
    Invalid,
    DryRun,
    /// The run would delete more of one side's definitions than `--max-deletions` allows; nothing
    /// was changed on either side (see `deletion_guard`).
    MassDelete,
    /// The run failed (network, platform, Git, configuration); see `error`.
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InSync => "in_sync",
            Status::Changed => "changed",
            Status::Conflict => "conflict",
            Status::Invalid => "invalid",
            Status::DryRun => "dry_run",
            Status::MassDelete => "mass_delete",
            Status::Error => "error",
        }
    }
}

/// The side a change is made to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Git,
    Platform,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Add,
    Update,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub side: Side,
    pub op: Op,
    pub kind: String,
    pub name: String,
    /// The file, relative to the repository root, with `/` separators.
    pub path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// Nothing was changed for this key.
    None,
    /// The preferred side was written by this run.
    Written,
    /// The base was moved so the next run in the other direction carries the preferred side.
    Deferred,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub kind: String,
    pub name: String,
    pub path: Option<String>,
    pub base: Option<Digest>,
    pub git: Option<Digest>,
    pub platform: Option<Digest>,
    pub resolution: Resolution,
    /// Both versions rendered as YAML (`None` where that side does not have the key), so a
    /// person can see what differs.
    pub git_yaml: Option<String>,
    pub platform_yaml: Option<String>,
}

/// A bad file or a bad definition from the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileError {
    /// Relative to the repository root; for platform data, `platform:<kind>/<name>`.
    pub path: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

/// The deletion guard's count for the side a run deletes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletionGuard {
    /// The side that would lose definitions: `git` (a pull deletes files) or `platform` (a push
    /// sends deletes).
    pub side: Side,
    /// Deletions planned on that side; those that resolve a conflict are not counted.
    pub deletions: usize,
    /// Definitions that side holds before the run.
    pub of: usize,
    /// `--max-deletions` as given: a count (`20`) or a share (`50%`).
    pub limit: String,
    /// The most deletions the limit allows out of `of`; `null` when a share does not apply
    /// because the side holds fewer than 10 definitions.
    pub max: Option<u64>,
    /// More deletions than `max`.
    pub exceeded: bool,
    /// Whether the run may make them: not exceeded, or `--allow-mass-delete`. When false, the run
    /// changed nothing (a dry run or `status`: the real run would stop).
    pub allowed: bool,
}

impl DeletionGuard {
    /// ` (at most N)` for a share, whose count depends on the side's size; empty otherwise.
    pub fn max_text(&self) -> String {
        match self.max {
            Some(m) if self.limit.ends_with('%') => format!(" (at most {m})"),
            _ => String::new(),
        }
    }

    /// What the guard found, why it probably happened and how to let the run through; for logs,
    /// annotations and the job summary. `path` is the sync root.
    pub fn message(&self, path: Option<&str>) -> String {
        let (verb, whose, cause) = match self.side {
            Side::Git => (
                "A pull",
                "definition files on the branch",
                "the platform answered an empty or partial project (a platform fault, or a dashboard \
                 commit that deleted them): check the project on the platform"
                    .to_owned(),
            ),
            Side::Platform => (
                "A push",
                "definitions on the platform",
                format!(
                    "the sync root {} was moved, deleted or emptied in Git, or `path` points at the wrong \
                     folder: check the branch's last commits",
                    path.map_or_else(|| "?".to_owned(), |p| format!("`{p}`"))
                ),
            ),
        };
        let max = self.max_text();
        if !self.exceeded {
            return format!(
                "{verb} deletes {} of the {} {whose}, within --max-deletions {}{max}.",
                self.deletions, self.of, self.limit
            );
        }
        let mut msg = format!(
            "{verb} would delete {} of the {} {whose}, more than --max-deletions {}{max} allows. ",
            self.deletions, self.of, self.limit
        );
        if self.allowed {
            msg.push_str("They were allowed for this run by --allow-mass-delete.");
        } else {
            msg.push_str(&format!(
                "Nothing was changed on either side. The likely cause: {cause}. If the deletions are \
                 intended, rerun with --allow-mass-delete (the action's input `allow-mass-delete: true`, \
                 or DEFSYNC_ALLOW_MASS_DELETE=true), or raise --max-deletions."
            ));
        }
        msg
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitRef {
    pub id: String,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportError {
    pub message: String,
    pub exit_code: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub command: String,
    pub status: Status,
    pub project: Option<String>,
    pub platform_commit: Option<CommitRef>,
    pub requested_commit: Option<String>,
    pub git_commit: Option<String>,
    pub changes: Vec<Change>,
    pub conflicts: Vec<Conflict>,
    pub errors: Vec<FileError>,
    /// Set when `status` is `error`.
    pub error: Option<ReportError>,
    /// The link of the run, `owner/name` and ref, for summaries.
    pub repository: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub path: Option<String>,
    /// What the run cost, for people chasing slow runs and for the benchmark.
    pub stats: Option<Stats>,
    /// Pull-request delivery: the pull request opened or updated (or closed, when `state` says).
    pub pull_request: Option<PullRequestRef>,
    /// The deletion guard's count, when the run plans deletions (`status`: the side that would
    /// stop its run, or else the one with more deletions).
    pub deletion_guard: Option<DeletionGuard>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PullRequestRef {
    pub number: u64,
    pub url: Option<String>,
    /// `opened`, `updated` or `closed`.
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// HTTP requests sent to the platform (0 with the embedded store).
    pub http_requests: u64,
    pub elapsed_ms: u64,
    /// The process's peak resident memory, where the system tells it (Linux).
    pub peak_rss_kib: Option<u64>,
    /// Definition files parsed: the changed ones, and any the base's blobs do not prove.
    pub files_parsed: u64,
}

impl Stats {
    /// Peak resident memory of this process, from `/proc/self/status` (`VmHWM`).
    pub fn peak_rss_kib() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Report {
    pub fn new(command: &str) -> Self {
        Report {
            command: command.into(),
            status: Status::InSync,
            project: None,
            platform_commit: None,
            requested_commit: None,
            git_commit: None,
            changes: Vec::new(),
            conflicts: Vec::new(),
            errors: Vec::new(),
            error: None,
            repository: None,
            git_ref: None,
            path: None,
            stats: None,
            pull_request: None,
            deletion_guard: None,
        }
    }

    /// The process exit status this report stands for (see `error::exit`).
    pub fn exit_code(&self) -> i32 {
        match self.status {
            Status::InSync | Status::Changed | Status::DryRun => {
                // A dry run that found conflicts or invalid files still says so in its status
                // code, so a pull-request check fails where the real run would.
                if !self.errors.is_empty() {
                    crate::error::exit::INVALID
                } else if self.conflicts.iter().any(|c| c.resolution == Resolution::None) {
                    crate::error::exit::CONFLICT
                } else {
                    crate::error::exit::OK
                }
            }
            Status::Conflict => crate::error::exit::CONFLICT,
            Status::Invalid => crate::error::exit::INVALID,
            // Like a refused link: the run needs another setting (`--allow-mass-delete`).
            Status::MassDelete => crate::error::exit::USAGE,
            Status::Error => self.error.as_ref().map_or(crate::error::exit::FAILURE, |e| e.exit_code),
        }
    }

    /// The deletion guard's count when it stops (or, for a dry run, would stop) the run.
    pub fn stopped_by_guard(&self) -> Option<&DeletionGuard> {
        self.deletion_guard.as_ref().filter(|g| !g.allowed)
    }

    pub fn count(&self, side: Side, op: Op) -> usize {
        self.changes.iter().filter(|c| c.side == side && c.op == op).count()
    }
}
