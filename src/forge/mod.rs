//! Forges: where the repository lives (GitHub now). A forge delivers what the engine decided:
//! a commit through its API, a change request (pull or merge request) opened, updated or
//! closed, the dispatch that starts a pull, and the `doctor` checks of its tokens and rules.
//!
//! The engine takes a forge as a value, `&dyn Forge`, and never asks which one it is: adding a
//! forge adds a module here and a choice in the CLI, and touches nothing in scan, plan or apply.
//! A trait object rather than a generic parameter, because the forge is chosen at run time from
//! arguments and environment, and one copy of the engine serves every forge (the binary's size
//! is a documented figure); each method boxes its future, which costs nothing next to an HTTP
//! round trip and keeps the tree free of an `async-trait` dependency.
//!
//! The values going in and out are plain data, so a newcomer reads what crosses the boundary in
//! this file. The needs of GitLab, the next forge, are written where they bear on a method.

pub mod github;
pub mod gitlab;

use std::future::Future;
use std::pin::Pin;

use crate::error::Result;
use crate::git::TreeEdit;
use crate::report::{Change, CommitRef, Conflict};

/// What a [`Forge`] method returns: a boxed future, so the trait stays usable as `dyn Forge`.
pub type ForgeFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// How a pull delivers its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Delivery {
    /// Onto the target branch itself.
    #[default]
    Commit,
    /// Onto defsync's own branch, with a pull request (GitLab: a merge request) into the target
    /// branch.
    #[value(alias = "merge-request")]
    PullRequest,
}

/// How a pull makes its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CommitVia {
    /// Locally with git, then `git push`.
    #[default]
    Git,
    /// Through the forge's API (GitHub's git-data API, signed by GitHub; GitLab's commits API):
    /// no push credentials needed.
    Api,
}

/// `defsync/<project>`, with characters a branch name cannot hold replaced: defsync's own branch
/// for change-request delivery, on any forge.
pub fn default_pr_branch(project: &str) -> String {
    let clean: String =
        project.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
    format!("defsync/{}", clean.trim_matches('.'))
}

/// One commit the engine built and verified locally, to be made through the forge's API.
#[derive(Debug, Clone, Copy)]
pub struct ApiCommit<'a> {
    /// The branch tip the tree was built on.
    pub parent: &'a str,
    /// The changes to `parent`'s tree, paths relative to the repository root.
    pub edits: &'a [TreeEdit],
    pub message: &'a str,
    pub onto: Onto<'a>,
}

/// Where an [`ApiCommit`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Onto<'a> {
    /// The target branch, and only while it still points at the commit's parent: the
    /// expected-head guard. A branch that moved is [`Committed::BranchMoved`], never an error,
    /// and the engine re-plans on the new tip.
    Branch(&'a str),
    /// defsync's own change-request branch, which always restarts from the parent and may be
    /// replaced. [`Forge::open_or_update_change_request`] then points the branch at the commit.
    ChangeRequestBranch(&'a str),
}

/// The outcome of [`Forge::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// The commit made, by its ID.
    Made(String),
    /// The target branch no longer points at the parent: nothing moved, or, on a forge with no
    /// compare-and-swap (GitLab), the commit landed on a concurrent one that touched none of its
    /// files. Either way the engine re-plans on the new tip, which then holds both.
    BranchMoved,
}

/// What a change request should be: the data its title and description are made from. The forge
/// writes the description, in its own words for the thing ("pull request", "merge request").
#[derive(Debug, Clone, Copy)]
pub struct ChangeRequest<'a> {
    /// The branch the change request merges into.
    pub target_branch: &'a str,
    /// defsync's branch ([`default_pr_branch`]).
    pub branch: &'a str,
    /// The commit the branch must point at.
    pub commit: &'a str,
    pub title: &'a str,
    pub project: &'a str,
    /// The platform commit synced.
    pub platform_commit: Option<&'a CommitRef>,
    /// The commit that asked for the run, when it is not the one synced.
    pub requested_commit: Option<&'a str>,
    pub changes: &'a [Change],
    /// Conflicting keys whose platform version the branch carries; the description explains them.
    pub conflicts: &'a [Conflict],
    /// Labels to add; existing labels stay.
    pub labels: &'a [String],
}

/// An open change request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRequestRef {
    /// The number people use: GitHub's pull-request number; GitLab's MR `iid`, not its `id`.
    pub number: u64,
    pub url: String,
    /// Opened by this call, rather than found open and updated.
    pub created: bool,
}

/// Where the repository lives, and what defsync may ask of it there.
///
/// Every method may fail with a configuration error that says what is missing (a token, a
/// repository name) only when it is called: a dry run, or a pull that writes nothing, needs no
/// token.
pub trait Forge: Send + Sync {
    /// The forge's name for messages: "GitHub", "GitLab".
    fn name(&self) -> &'static str;

    /// Makes `commit` through the forge's API, onto a branch or a change-request branch.
    ///
    /// - GitHub: a tree and a commit through the git-data API, then the ref moved with
    ///   `force: false` (the guard); for a change-request branch no ref moves here.
    /// - GitLab: one `POST /projects/:id/repository/commits` with `actions[]` (create, update,
    ///   delete; at most a few requests for a thousand files, which a test counts). Its commit
    ///   lands on a branch directly, so a change-request branch is written with `start_sha` =
    ///   the parent and `force: true`. The commits API has no compare-and-swap on the branch:
    ///   the guard is built from what it offers (see `shared/gitlab/README.md`) and a moved branch
    ///   is answered as [`Committed::BranchMoved`]. The tree GitLab built is checked against the
    ///   tree verified locally, as GitHub's is.
    fn commit<'a>(&'a self, commit: &'a ApiCommit<'a>) -> ForgeFuture<'a, Committed>;

    /// Points `cr.branch` at `cr.commit` and makes sure exactly one open change request from it
    /// into `cr.target_branch` exists, with this title, a description made from `cr`, and the
    /// labels. Never opens a second one for the same branch.
    ///
    /// GitHub: a pull request. GitLab: a merge request (`source_branch`, `target_branch`,
    /// `iid`), whose labels are set on the MR itself.
    fn open_or_update_change_request<'a>(&'a self, cr: &'a ChangeRequest<'a>) -> ForgeFuture<'a, ChangeRequestRef>;

    /// Closes the open change request from `branch`, if any, and deletes the branch: the
    /// platform equals the target branch again. Returns the closed request's number.
    /// GitLab: `state_event: close` on the MR, then the branch deleted.
    fn close_change_request<'a>(&'a self, branch: &'a str) -> ForgeFuture<'a, Option<u64>>;

    /// Starts the pull on `dispatch.git_ref`, as the platform does after an edit, and returns
    /// the line to show. Never repeated after an unclear outcome: that could start two runs.
    ///
    /// GitHub: `workflow_dispatch` of the pull workflow with `projectId` and `commitId` inputs.
    /// GitLab: `POST /projects/:id/trigger/pipeline` with a trigger token, the ref, and the
    /// project and commit as pipeline variables (or `inputs`).
    fn dispatch<'a>(&'a self, dispatch: &'a Dispatch<'a>) -> ForgeFuture<'a, String>;
}

/// What starts a pull: the platform's project and the commit that asks for it.
#[derive(Debug, Clone, Copy)]
pub struct Dispatch<'a> {
    /// The branch or tag whose pull job runs.
    pub git_ref: &'a str,
    pub project: &'a str,
    pub commit: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pr_branch_names_are_ref_safe() {
        assert_eq!(default_pr_branch("p1"), "defsync/p1");
        assert_eq!(default_pr_branch("a b/c..d"), "defsync/a-b-c..d");
    }
}
