//! `defsync dispatch`: start the pull workflow on GitHub, as the platform does after an edit.

use clap::Args;

use crate::error::{Error, Result};
use crate::forge::github::{DEFAULT_API_URL, GitHub, GitHubOptions, RepoName};

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
    let repo = RepoName::parse(&args.repository).map_err(|e| Error::Config(format!("--repository: {e}")))?;
    let gh = GitHub::new(GitHubOptions::new(args.github_token.clone(), args.github_api_url.clone()))
        .map_err(|e| Error::Config(format!("{e:#}")))?;
    let mut inputs = vec![("projectId", args.project.as_str())];
    if let Some(c) = args.commit.as_deref().filter(|c| !c.is_empty()) {
        inputs.push(("commitId", c));
    }
    let run = gh
        .dispatch(&repo, &args.workflow, &args.git_ref, &inputs)
        .await
        .map_err(|e| Error::Other(anyhow::Error::new(e)))?;
    let started = format!("started {} on {} in {repo}", args.workflow, args.git_ref);
    Ok(match run {
        Some(r) => match r.html_url {
            Some(url) => format!("{started}: run {} {url}", r.id),
            None => format!("{started}: run {}", r.id),
        },
        None => format!("{started}; GitHub returned no run ID (it answered 204, as versions before run details do)"),
    })
}
