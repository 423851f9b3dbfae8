//! GitHub as a [`Forge`]: the engine's deliveries through GitHub's REST API.

use super::{GitHub, GitHubError, GitHubOptions, PrBody, PullRequestSpec, RepoName, render_pr_body};
use crate::error::{Error, Result};
use crate::forge::{ApiCommit, ChangeRequest, ChangeRequestRef, Committed, Dispatch, Forge, ForgeFuture, Onto};

/// The repository on GitHub, and the token and API root to reach it, when a run has them.
#[derive(Debug, Clone)]
pub struct GitHubForge {
    options: Option<GitHubOptions>,
    repository: String,
    /// The pull workflow a dispatch starts (a file name in `.github/workflows`, or its ID).
    workflow: String,
}

impl GitHubForge {
    /// `repository` as the link names it (`owner/name` on GitHub); `options` is `None` when no
    /// token was given, which only the deliveries through the API mind.
    pub fn new(options: Option<GitHubOptions>, repository: impl Into<String>) -> Self {
        GitHubForge { options, repository: repository.into(), workflow: "defsync-pull.yml".into() }
    }

    /// Dispatches start `workflow` rather than `defsync-pull.yml`.
    pub fn with_workflow(mut self, workflow: impl Into<String>) -> Self {
        self.workflow = workflow.into();
        self
    }

    /// The client and repository a delivery through the API needs.
    fn client(&self) -> Result<(GitHub, RepoName)> {
        let options = self.options.clone().ok_or_else(|| {
            Error::Config(
                "this delivery uses GitHub's API and needs a token: pass --github-token or set DEFSYNC_GITHUB_TOKEN (the action's github-token input)".into(),
            )
        })?;
        let name = RepoName::parse(&self.repository).map_err(|e| {
            Error::Config(format!("{e:#}: GitHub delivery needs the repository as owner/name (set GITHUB_REPOSITORY)"))
        })?;
        let gh = GitHub::new(options).map_err(|e| Error::Config(format!("{e:#}")))?;
        Ok((gh, name))
    }
}

fn gh_error(e: GitHubError) -> Error {
    Error::Other(anyhow::anyhow!("GitHub: {e}"))
}

impl Forge for GitHubForge {
    fn name(&self) -> &'static str {
        "GitHub"
    }

    fn commit<'a>(&'a self, c: &'a ApiCommit<'a>) -> ForgeFuture<'a, Committed> {
        Box::pin(async move {
            let (gh, name) = self.client()?;
            // No author or committer: GitHub then signs the commit as the token's bot.
            let sha = gh.create_commit(&name, c.parent, c.edits, c.message).await.map_err(gh_error)?;
            match c.onto {
                Onto::Branch(branch) => {
                    if !gh.update_branch(&name, branch, c.parent, &sha).await.map_err(gh_error)? {
                        return Ok(Committed::BranchMoved);
                    }
                }
                // open_or_update_pr points the branch at the commit.
                Onto::ChangeRequestBranch(_) => {}
            }
            Ok(Committed::Made(sha))
        })
    }

    fn open_or_update_change_request<'a>(&'a self, cr: &'a ChangeRequest<'a>) -> ForgeFuture<'a, ChangeRequestRef> {
        Box::pin(async move {
            let (gh, name) = self.client()?;
            let body = render_pr_body(&PrBody {
                project: cr.project,
                platform_commit: cr.platform_commit,
                requested_commit: cr.requested_commit,
                target_branch: cr.target_branch,
                changes: cr.changes,
                conflicts: cr.conflicts,
            });
            let spec = PullRequestSpec {
                base: cr.target_branch,
                head_branch: cr.branch,
                commit: cr.commit,
                title: cr.title,
                body: &body,
                labels: cr.labels,
            };
            let pr = gh.open_or_update_pr(&name, &spec).await.map_err(gh_error)?;
            Ok(ChangeRequestRef { number: pr.number, url: pr.url, created: pr.created })
        })
    }

    fn close_change_request<'a>(&'a self, branch: &'a str) -> ForgeFuture<'a, Option<u64>> {
        Box::pin(async move {
            let (gh, name) = self.client()?;
            gh.close_pr_and_delete_branch(&name, branch).await.map_err(gh_error)
        })
    }

    fn dispatch<'a>(&'a self, d: &'a Dispatch<'a>) -> ForgeFuture<'a, String> {
        Box::pin(async move {
            let repo = RepoName::parse(&self.repository).map_err(|e| Error::Config(format!("--repository: {e}")))?;
            let options = self.options.clone().ok_or_else(|| {
                Error::Config("a dispatch needs a GitHub token: pass --github-token or set DEFSYNC_GITHUB_TOKEN".into())
            })?;
            let gh = GitHub::new(options).map_err(|e| Error::Config(format!("{e:#}")))?;
            let mut inputs = vec![("projectId", d.project)];
            if let Some(c) = d.commit.filter(|c| !c.is_empty()) {
                inputs.push(("commitId", c));
            }
            let run = gh
                .dispatch(&repo, &self.workflow, d.git_ref, &inputs)
                .await
                .map_err(|e| Error::Other(anyhow::Error::new(e)))?;
            let started = format!("started {} on {} in {repo}", self.workflow, d.git_ref);
            Ok(match run {
                Some(r) => match r.html_url {
                    Some(url) => format!("{started}: run {} {url}", r.id),
                    None => format!("{started}: run {}", r.id),
                },
                None => {
                    format!("{started}; GitHub returned no run ID (it answered 204, as versions before run details do)")
                }
            })
        })
    }
}
