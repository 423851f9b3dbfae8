//! GitHub's REST API: commits through the git-data API, pull-request delivery, workflow
//! dispatches and token diagnosis.
//!
//! [`GitHub`] is the one entry point. Every request goes through its client, which counts
//! requests, waits out rate limits, retries only what is safe to repeat and turns error answers
//! into [`GitHubError`]s that say what to do.

mod client;
mod commit;
mod dispatch;
pub mod doctor;
mod errors;
mod pulls;

pub use client::{API_VERSION, DEFAULT_API_URL, GitHub, GitHubOptions, RepoName};
pub use dispatch::DispatchedRun;
pub use errors::{ErrorInfo, ErrorKind, GitHubError, Permission};
pub use pulls::{PrBody, PullRequest, PullRequestSpec, default_pr_branch, render_pr_body};

/// How a pull delivers its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Delivery {
    /// Onto the target branch itself.
    #[default]
    Commit,
    /// Onto defsync's own branch, with a pull request into the target branch.
    PullRequest,
}

/// How a pull makes its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CommitVia {
    /// Locally with git, then `git push`.
    #[default]
    Git,
    /// Through GitHub's git-data API: signed by GitHub, no push credentials needed.
    Api,
}
