//! What a run is asked to do: the [`Request`] the CLI resolves, and the checks on it that need
//! no I/O.

use crate::api::{BaseUpdate, Direction, PutSync};
use crate::engine::guard::{self, DeletionLimit};
use crate::engine::plan::Preference;
use crate::error::{Error, Result};
use crate::git::Identity;
use crate::report::{self, Report};

/// Everything a run needs to know, resolved from arguments and environment by the CLI.
#[derive(Debug, Clone)]
pub struct Request {
    pub project: String,
    /// The sync root, normalised: `.` or a relative path without `.`/`..` parts.
    pub path: String,
    /// The branch to sync (without `refs/heads/`).
    pub branch: String,
    pub remote: String,
    /// The repository as the record names it: `owner/name`, or a URL without credentials.
    pub repository: String,
    /// `--platform` as messages show it (no credentials), for the commands they suggest.
    pub platform: String,
    pub direction: Direction,
    pub prefer: Preference,
    pub dry_run: bool,
    pub no_push: bool,
    /// The deletion guard: how many of one side's definitions a run may delete.
    pub max_deletions: DeletionLimit,
    /// Let this run delete more than `max_deletions`.
    pub allow_mass_delete: bool,
    /// Pull only: the platform commit that asked for the run.
    pub requested_commit: Option<String>,
    /// Who a pull's local commit names; `None` leaves it to git's configuration.
    pub author: Option<Identity>,
    pub committer: Option<Identity>,
    pub run_url: Option<String>,
    /// Pull only: onto the branch, or through a pull request.
    pub delivery: crate::forge::Delivery,
    /// Pull only: commit with local git and `git push`, or through the forge's API.
    pub commit_via: crate::forge::CommitVia,
    /// Pull-request delivery: defsync's branch, and labels for the pull request.
    pub pr_branch: String,
    pub pr_labels: Vec<String>,
}

impl Request {
    pub fn git_ref(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }

    pub(super) fn link_text(&self) -> String {
        link_text(&self.repository, &self.git_ref(), &self.path, self.direction)
    }

    pub(super) fn new_report(&self, command: &str) -> Report {
        let mut r = Report::new(command);
        r.project = Some(self.project.clone());
        r.requested_commit = self.requested_commit.clone();
        r.repository = Some(self.repository.clone());
        r.git_ref = Some(self.git_ref());
        r.path = Some(self.path.clone());
        r
    }

    /// `path` relative to the sync root, as a path relative to the repository root.
    pub(super) fn repo_path(&self, rel: &str) -> String {
        if self.path == "." { rel.to_owned() } else { format!("{}/{rel}", self.path) }
    }

    /// The prefix that `scan` puts before sync-root-relative paths in errors.
    pub(super) fn prefix(&self) -> &str {
        if self.path == "." { "" } else { &self.path }
    }

    /// The deletion guard for a plan in `mode`, out of `of` definitions on the side it writes.
    pub(super) fn guard(
        &self,
        plan: &crate::engine::plan::Plan,
        mode: crate::engine::plan::Mode,
        of: usize,
    ) -> Option<report::DeletionGuard> {
        guard::check(plan, mode, of, self.max_deletions, self.allow_mass_delete)
    }

    pub(super) fn put_sync(
        &self,
        commit: Option<String>,
        git_commit: Option<String>,
        base: Vec<BaseUpdate>,
    ) -> PutSync {
        PutSync {
            repository: self.repository.clone(),
            git_ref: self.git_ref(),
            path: self.path.clone(),
            direction: self.direction,
            commit,
            git_commit,
            replace_base: false,
            base,
        }
    }
}

pub(super) fn link_text(repository: &str, git_ref: &str, path: &str, direction: Direction) -> String {
    format!("repository {repository}, ref {git_ref}, path {path}, direction {}", direction.as_str())
}

/// Refuses `command` on a link whose one-way `direction` never lets it write.
pub(super) fn refuse_one_way(req: &Request, command: &str, direction: Direction, other: &str) -> Result<()> {
    if req.direction != direction {
        return Ok(());
    }
    let (source, target) = if direction == Direction::GitToPlatform {
        ("the platform", "the branch")
    } else {
        ("the branch", "the platform")
    };
    Err(Error::Config(format!(
        "{command} is refused: project {:?} is linked with direction {}, so {source} never writes to {target}. \
         Use `defsync {other}`, or move the link with `defsync link --direction bidirectional`",
        req.project,
        direction.as_str()
    )))
}

/// Normalises a sync root given by the user: relative, inside the work tree, not in `.git`.
pub fn normalize_path(path: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::Config(format!(
            "sync root {path:?} {why}; give a folder relative to the repository root, such as `platform`"
        ))
    };
    if path.starts_with('/') || path.starts_with('\\') || path.get(1..2) == Some(":") {
        return Err(bad("is absolute"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(bad("leaves the repository"));
                }
            }
            p => parts.push(p),
        }
    }
    if parts.first().is_some_and(|p| p.eq_ignore_ascii_case(".git")) {
        return Err(bad("is inside .git"));
    }
    Ok(if parts.is_empty() { ".".into() } else { parts.join("/") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_roots_are_normalised_and_stay_in_the_work_tree() {
        for (given, want) in [(".", "."), ("", "."), ("platform/", "platform"), ("./a/../b//c", "b/c"), ("a\\b", "a/b")]
        {
            assert_eq!(normalize_path(given).unwrap(), want, "{given:?}");
        }
        for bad in ["/abs", "\\abs", "C:/x", "..", "a/../../b", ".git", ".GIT/hooks", "./.git/x"] {
            let e = normalize_path(bad).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{bad:?}: {e}");
        }
    }
}
