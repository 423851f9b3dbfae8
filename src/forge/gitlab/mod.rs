//! GitLab's REST API (v4): commits through the commits API, merge-request delivery and the
//! summary note, pipeline triggers and token diagnosis; [`GitLabForge`] is GitLab as the
//! engine's [`crate::forge::Forge`].
//!
//! [`GitLab`] is the one entry point. Every request goes through its client, which counts
//! requests, waits out rate limits, retries only what is safe to repeat and turns error answers
//! into [`GitLabError`]s that say what to do.

mod client;
mod commit;
pub mod doctor;
mod errors;
mod forge;
mod merge_requests;
pub mod pipeline;
pub mod webhook;

pub use client::{DEFAULT_API_URL, GitLab, GitLabOptions, Secret, TokenKind};
pub use commit::{ActionKind, CommitAction, MadeCommit, OntoBranch, Project, actions};
pub use errors::{ErrorKind, GitLabError, Scope};
pub use forge::GitLabForge;
pub use merge_requests::{MergeRequest, MergeRequestSpec, SUMMARY_MARKER, render_mr_description};
pub use pipeline::{PassAs, Pipeline};

/// The variables that may hold a GitLab token, in the order defsync reads them, which a CI
/// runtime masks before anything is printed. `DEFSYNC_GITLAB_TOKEN` wins over `GITLAB_TOKEN`;
/// the job token `CI_JOB_TOKEN` comes last, as it cannot make commits or merge requests.
pub const TOKEN_VARIABLES: &[&str] =
    &["DEFSYNC_GITLAB_TOKEN", "GITLAB_TOKEN", "CI_JOB_TOKEN", "DEFSYNC_GITLAB_TRIGGER_TOKEN"];

/// The token from the environment and its kind: an access token from `DEFSYNC_GITLAB_TOKEN` or
/// `GITLAB_TOKEN`, else the job's `CI_JOB_TOKEN`.
pub fn token_from_env() -> Option<(String, TokenKind)> {
    let var = |n: &str| std::env::var(n).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    var("DEFSYNC_GITLAB_TOKEN")
        .or_else(|| var("GITLAB_TOKEN"))
        .map(|t| (t, TokenKind::Access))
        .or_else(|| var("CI_JOB_TOKEN").map(|t| (t, TokenKind::Job)))
}

/// The API root: `--gitlab-url` when given, else `CI_API_V4_URL` (set in every job), else
/// gitlab.com. A URL given without `/api/v4` gets it.
pub fn api_url(given: Option<&str>) -> String {
    let given = given.map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned);
    let url = given
        .or_else(|| std::env::var("CI_API_V4_URL").ok().filter(|u| !u.trim().is_empty()))
        .unwrap_or_else(|| DEFAULT_API_URL.into());
    let url = url.trim().trim_end_matches('/').to_owned();
    if url.ends_with("/api/v4") { url } else { format!("{url}/api/v4") }
}

/// Writes `markdown` as the one summary note of the merge request a merge-request pipeline runs
/// for, updating it on later runs; `Ok(None)` outside such a pipeline (no
/// `CI_MERGE_REQUEST_IID`). Reads `CI_API_V4_URL`, `CI_PROJECT_ID` and the token as a sync
/// does; a job token cannot write notes, so it needs `GITLAB_TOKEN` with the `api` scope.
pub async fn summary_note_in_job(markdown: &str) -> crate::error::Result<Option<u64>> {
    use crate::error::Error;
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
    let Some(iid) = var("CI_MERGE_REQUEST_IID").and_then(|i| i.trim().parse::<u64>().ok()) else {
        return Ok(None);
    };
    let project = var("CI_MERGE_REQUEST_PROJECT_ID")
        .or_else(|| var("CI_PROJECT_ID"))
        .ok_or_else(|| Error::Config("the merge-request summary note needs CI_PROJECT_ID (a job sets it)".into()))?;
    let (token, kind) = token_from_env().ok_or_else(|| {
        Error::Config("the merge-request summary note needs GITLAB_TOKEN (a token with the `api` scope)".into())
    })?;
    let gl =
        GitLab::new(GitLabOptions::new(token, kind, api_url(None))).map_err(|e| Error::Config(format!("{e:#}")))?;
    let id = gl
        .upsert_summary_note(&Project(project), iid, markdown)
        .await
        .map_err(|e| Error::Other(anyhow::Error::new(e)))?;
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    #[test]
    fn api_urls_get_the_v4_root() {
        assert_eq!(super::api_url(Some("https://gitlab.example.com/")), "https://gitlab.example.com/api/v4");
        assert_eq!(super::api_url(Some("https://gitlab.example.com/api/v4")), "https://gitlab.example.com/api/v4");
    }
}
