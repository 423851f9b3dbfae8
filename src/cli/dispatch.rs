//! `defsync dispatch`: start the pull workflow on GitHub, as the platform does after an edit.

use clap::Args;

use crate::error::Result;
use crate::forge::github::{DEFAULT_API_URL, GitHubForge, GitHubOptions};
use crate::forge::{Dispatch, Forge};

#[derive(Debug, Clone, Args)]
pub struct DispatchArgs {
    /// The repository, as owner/name.
    #[arg(long, env = "DEFSYNC_GITHUB_REPOSITORY")]
    pub repository: String,
    /// The workflow file (in .github/workflows) or its ID.
    #[arg(long, env = "DEFSYNC_GITHUB_WORKFLOW", default_value = "defsync-pull.yml")]
    pub workflow: String,
    /// The branch or tag whose workflow file runs.
    #[arg(long = "ref", env = "DEFSYNC_GITHUB_REF", default_value = "main")]
    pub git_ref: String,
    /// A token that may start workflows (`actions: write`; classic tokens: `repo`).
    #[arg(long, env = "DEFSYNC_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: String,
    /// The project ID, passed as the `projectId` input.
    #[arg(long, env = "DEFSYNC_PROJECT")]
    pub project: String,
    /// The platform commit that asks for the run, passed as the `commitId` input.
    #[arg(long, env = "DEFSYNC_COMMIT")]
    pub commit: Option<String>,
    /// GitHub's API root; GitHub Enterprise Server: https://HOST/api/v3.
    #[arg(long, env = "GITHUB_API_URL", default_value = DEFAULT_API_URL)]
    pub github_api_url: String,
}

/// Returns the line to show.
pub async fn run(args: &DispatchArgs) -> Result<String> {
    let options = GitHubOptions::new(args.github_token.clone(), args.github_api_url.clone());
    let forge = GitHubForge::new(Some(options), args.repository.clone()).with_workflow(args.workflow.clone());
    let dispatch = Dispatch { git_ref: &args.git_ref, project: &args.project, commit: args.commit.as_deref() };
    forge.dispatch(&dispatch).await
}
