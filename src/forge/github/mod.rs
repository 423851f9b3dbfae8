//! GitHub's REST API: commits through the git-data API, pull-request delivery, workflow
//! dispatches and token diagnosis; [`GitHubForge`] is GitHub as the engine's [`crate::forge::Forge`].
//!
//! [`GitHub`] is the one entry point. Every request goes through its client, which counts
//! requests, waits out rate limits, retries only what is safe to repeat and turns error answers
//! into [`GitHubError`]s that say what to do.

mod client;
mod commit;
mod dispatch;
pub mod doctor;
mod errors;
mod forge;
mod pulls;
pub mod webhook;

pub use client::{API_VERSION, DEFAULT_API_URL, GitHub, GitHubOptions, RepoName};
pub use dispatch::{DispatchedRun, WorkflowRun};
pub use errors::{ErrorInfo, ErrorKind, GitHubError, Permission};
pub use forge::GitHubForge;
pub use pulls::{PrBody, PullRequest, PullRequestSpec, render_pr_body};

/// The variables that may hold a GitHub token, which a CI runtime masks before anything is
/// printed.
pub const TOKEN_VARIABLES: &[&str] = &["DEFSYNC_GITHUB_TOKEN", "GITHUB_TOKEN"];
