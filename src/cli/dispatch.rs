//! `defsync dispatch`: start the pull workflow on GitHub or the pull pipeline on GitLab, as the
//! platform does after an edit.

use clap::Args;

use crate::cli::ForgeArg;
use crate::error::{Error, Result};
use crate::forge::github::{DEFAULT_API_URL, GitHubForge, GitHubOptions};
use crate::forge::gitlab::{GitLabForge, GitLabOptions, PassAs, TokenKind};
use crate::forge::{Dispatch, Forge};

#[derive(Debug, Clone, Args)]
pub struct DispatchArgs {
    /// Where the repository lives [default: gitlab inside a GitLab CI/CD job, else github].
    #[arg(long, env = "DEFSYNC_FORGE", value_enum)]
    pub forge: Option<ForgeArg>,
    /// GitHub: the repository, as owner/name.
    #[arg(long, env = "DEFSYNC_GITHUB_REPOSITORY")]
    pub repository: Option<String>,
    /// GitHub: the workflow file (in .github/workflows) or its ID.
    #[arg(long, env = "DEFSYNC_GITHUB_WORKFLOW", default_value = "defsync-pull.yml")]
    pub workflow: String,
    /// The branch or tag whose workflow file (GitHub) or pipeline (GitLab) runs.
    #[arg(long = "ref", env = "DEFSYNC_GITHUB_REF", default_value = "main")]
    pub git_ref: String,
    /// GitHub: a token that may start workflows (`actions: write`; classic tokens: `repo`).
    #[arg(long, env = "DEFSYNC_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,
    /// The project ID, passed as the `projectId` input (GitHub) or as DEFSYNC_PROJECT_ID /
    /// `project-id` (GitLab).
    #[arg(long, env = "DEFSYNC_PROJECT")]
    pub project: String,
    /// The platform commit that asks for the run, passed as the `commitId` input (GitHub) or as
    /// DEFSYNC_COMMIT_ID / `commit-id` (GitLab).
    #[arg(long, env = "DEFSYNC_COMMIT")]
    pub commit: Option<String>,
    /// GitHub's API root; GitHub Enterprise Server: https://HOST/api/v3.
    #[arg(long, env = "GITHUB_API_URL", default_value = DEFAULT_API_URL)]
    pub github_api_url: String,
    /// GitLab: the project, by numeric ID or full path (group/sub/name) [default: CI_PROJECT_ID].
    #[arg(long, env = "DEFSYNC_GITLAB_PROJECT")]
    pub gitlab_project: Option<String>,
    /// GitLab's API root, https://HOST/api/v4 [default: CI_API_V4_URL, else gitlab.com].
    #[arg(long, env = "DEFSYNC_GITLAB_URL")]
    pub gitlab_url: Option<String>,
    /// GitLab: pass the project and commit as pipeline variables or as the component's inputs.
    #[arg(long, env = "DEFSYNC_GITLAB_PASS_AS", value_enum, default_value = "variables")]
    pub pass_as: PassAs,
    /// GitLab: a PEM file of CA certificates to trust besides the system's.
    #[arg(long, env = "DEFSYNC_GITLAB_CA_CERT", value_name = "FILE")]
    pub gitlab_ca_cert: Option<std::path::PathBuf>,
}

/// Returns the line to show. GitLab's pipeline trigger token is read from
/// `DEFSYNC_GITLAB_TRIGGER_TOKEN` only: a command line would show it to every user of the machine.
pub async fn run(args: &DispatchArgs) -> Result<String> {
    let dispatch = Dispatch { git_ref: &args.git_ref, project: &args.project, commit: args.commit.as_deref() };
    match ForgeArg::resolve(args.forge) {
        ForgeArg::Github => {
            let repository = args.repository.clone().filter(|r| !r.is_empty()).ok_or_else(|| {
                Error::Config("a GitHub dispatch needs --repository owner/name (or DEFSYNC_GITHUB_REPOSITORY)".into())
            })?;
            let token = args
                .github_token
                .clone()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| Error::Config("a GitHub dispatch needs a token: set DEFSYNC_GITHUB_TOKEN".into()))?;
            let options = GitHubOptions::new(token, args.github_api_url.clone());
            let forge = GitHubForge::new(Some(options), repository).with_workflow(args.workflow.clone());
            forge.dispatch(&dispatch).await
        }
        ForgeArg::Gitlab => {
            let token = std::env::var("DEFSYNC_GITLAB_TRIGGER_TOKEN").ok().filter(|t| !t.trim().is_empty()).ok_or_else(
                || {
                    Error::Config(
                        "a GitLab dispatch needs a pipeline trigger token: set DEFSYNC_GITLAB_TRIGGER_TOKEN (the project's \
                         Settings → CI/CD → Pipeline trigger tokens)"
                            .into(),
                    )
                },
            )?;
            let project = args
                .gitlab_project
                .clone()
                .or_else(|| std::env::var("CI_PROJECT_ID").ok())
                .filter(|p| !p.trim().is_empty())
                .ok_or_else(|| {
                    Error::Config("a GitLab dispatch needs --gitlab-project (an ID or group/name)".into())
                })?;
            let mut options = GitLabOptions::new(
                token.clone(),
                TokenKind::Trigger,
                crate::forge::gitlab::api_url(args.gitlab_url.as_deref()),
            );
            options.ca_cert = args.gitlab_ca_cert.clone();
            let forge = GitLabForge::new(Some(options), project, None).with_trigger(token, args.pass_as);
            forge.dispatch(&dispatch).await
        }
    }
}
