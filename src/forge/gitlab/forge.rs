//! GitLab as a [`Forge`]: the engine's deliveries through GitLab's REST API.

use std::collections::HashSet;

use super::client::{GitLab, GitLabOptions, Secret};
use super::commit::{OntoBranch, Project, actions};
use super::errors::GitLabError;
use super::merge_requests::{MergeRequestSpec, render_mr_description};
use super::pipeline::PassAs;
use crate::error::{Error, Result};
use crate::forge::github::PrBody;
use crate::forge::{ApiCommit, ChangeRequest, ChangeRequestRef, Committed, Dispatch, Forge, ForgeFuture, Onto};
use crate::git::{Repo, TreeEdit};

/// The project on GitLab, the token and API root to reach it when a run has them, and the
/// checkout the commits are planned in.
#[derive(Debug, Clone)]
pub struct GitLabForge {
    options: Option<GitLabOptions>,
    project: String,
    /// The checkout: which files exist in the parent and which commit last changed each, for the
    /// commits API's `actions[]` and its `last_commit_id` guard.
    repo: Option<Repo>,
    /// Adds `[skip ci]` to the message of pull commits onto the target branch.
    skip_ci: bool,
    /// A pipeline trigger token, for dispatches.
    trigger_token: Option<Secret>,
    pass_as: PassAs,
}

impl GitLabForge {
    /// `project` is GitLab's numeric ID or the full path (`group/sub/name`); `options` is `None`
    /// when no token was given, which only the deliveries through the API mind.
    pub fn new(options: Option<GitLabOptions>, project: impl Into<String>, repo: Option<Repo>) -> Self {
        GitLabForge {
            options,
            project: project.into(),
            repo,
            skip_ci: false,
            trigger_token: None,
            pass_as: PassAs::Variables,
        }
    }

    /// Pull commits made through the API carry `[skip ci]`, so they start no pipeline.
    pub fn skip_ci(mut self, skip: bool) -> Self {
        self.skip_ci = skip;
        self
    }

    /// Dispatches trigger the pipeline with this trigger token, passing the values as `pass_as`.
    pub fn with_trigger(mut self, token: impl Into<String>, pass_as: PassAs) -> Self {
        self.trigger_token = Some(Secret::new(token));
        self.pass_as = pass_as;
        self
    }

    fn project(&self) -> Result<Project> {
        let p = self.project.trim().trim_matches('/');
        if p.is_empty() {
            return Err(Error::Config(
                "GitLab delivery needs the project: pass --gitlab-project or set CI_PROJECT_ID (a job sets it)".into(),
            ));
        }
        Ok(Project(p.to_owned()))
    }

    /// The client and project a delivery through the API needs.
    fn client(&self) -> Result<(GitLab, Project)> {
        let options = self.options.clone().ok_or_else(|| {
            Error::Config(
                "this delivery uses GitLab's API and needs a token with the `api` scope: set GITLAB_TOKEN (or \
                 DEFSYNC_GITLAB_TOKEN) to a project access token; a CI/CD job token cannot make commits or merge requests"
                    .into(),
            )
        })?;
        let gl = GitLab::new(options).map_err(|e| Error::Config(format!("{e:#}")))?;
        Ok((gl, self.project()?))
    }

    fn repo(&self) -> Result<&Repo> {
        self.repo.as_ref().ok_or_else(|| Error::Other(anyhow::anyhow!("a GitLab API commit needs the checkout")))
    }

    /// The paths of `edits` that exist in `parent`.
    fn existing(&self, parent: &str, edits: &[TreeEdit]) -> Result<HashSet<String>> {
        let repo = self.repo()?;
        let dirs: std::collections::BTreeSet<&str> = edits
            .iter()
            .map(|e| match e {
                TreeEdit::Write { path, .. } | TreeEdit::Remove { path } => {
                    path.rsplit_once('/').map_or(".", |(d, _)| d)
                }
            })
            .collect();
        let mut out = HashSet::new();
        for dir in dirs {
            if !repo.tree_has_path(parent, dir) {
                continue;
            }
            out.extend(repo.ls_tree(parent, dir)?.into_iter().map(|e| e.path));
        }
        Ok(out)
    }
}

fn gl_error(e: GitLabError) -> Error {
    Error::Other(anyhow::anyhow!("{e}"))
}

fn edit_path(e: &TreeEdit) -> &str {
    match e {
        TreeEdit::Write { path, .. } | TreeEdit::Remove { path } => path,
    }
}

impl Forge for GitLabForge {
    fn name(&self) -> &'static str {
        "GitLab"
    }

    fn commit<'a>(&'a self, c: &'a ApiCommit<'a>) -> ForgeFuture<'a, Committed> {
        Box::pin(async move {
            let (gl, project) = self.client()?;
            let existing = self.existing(c.parent, c.edits)?;
            match c.onto {
                Onto::Branch(branch) => {
                    let guarded: Vec<&str> = c.edits.iter().map(edit_path).filter(|p| existing.contains(*p)).collect();
                    let last = self.repo()?.last_commits(c.parent, &guarded)?;
                    let actions = actions(c.edits, &existing, Some(&last));
                    let message = if self.skip_ci { skip_ci_message(c.message) } else { c.message.to_owned() };
                    match gl
                        .commit_onto_branch(&project, branch, c.parent, &message, &actions)
                        .await
                        .map_err(gl_error)?
                    {
                        OntoBranch::Made(sha) => Ok(Committed::Made(sha)),
                        OntoBranch::Moved => Ok(Committed::BranchMoved),
                    }
                }
                Onto::ChangeRequestBranch(branch) => {
                    // defsync's own branch restarts from the parent and is replaced: `start_sha`
                    // with `force`, and no per-file guard. Its pipeline is the review's check, so
                    // no `[skip ci]`.
                    let actions = actions(c.edits, &existing, None);
                    let made = gl
                        .create_commit(&project, branch, c.message, &actions, Some(c.parent), true)
                        .await
                        .map_err(gl_error)?;
                    if made.parent_ids != [c.parent] {
                        return Err(Error::Other(anyhow::anyhow!(
                            "GitLab made commit {} on {:?}, not on {} as asked with start_sha; please report this",
                            made.id,
                            made.parent_ids,
                            c.parent
                        )));
                    }
                    Ok(Committed::Made(made.id))
                }
            }
        })
    }

    fn open_or_update_change_request<'a>(&'a self, cr: &'a ChangeRequest<'a>) -> ForgeFuture<'a, ChangeRequestRef> {
        Box::pin(async move {
            let (gl, project) = self.client()?;
            let description = render_mr_description(&PrBody {
                project: cr.project,
                platform_commit: cr.platform_commit,
                requested_commit: cr.requested_commit,
                target_branch: cr.target_branch,
                changes: cr.changes,
                conflicts: cr.conflicts,
            });
            let spec = MergeRequestSpec {
                target_branch: cr.target_branch,
                source_branch: cr.branch,
                commit: cr.commit,
                title: cr.title,
                description: &description,
                labels: cr.labels,
            };
            let mr = gl.open_or_update_mr(&project, &spec).await.map_err(gl_error)?;
            Ok(ChangeRequestRef { number: mr.iid, url: mr.web_url, created: mr.created })
        })
    }

    fn close_change_request<'a>(&'a self, branch: &'a str) -> ForgeFuture<'a, Option<u64>> {
        Box::pin(async move {
            let (gl, project) = self.client()?;
            gl.close_mr_and_delete_branch(&project, branch).await.map_err(gl_error)
        })
    }

    fn dispatch<'a>(&'a self, d: &'a Dispatch<'a>) -> ForgeFuture<'a, String> {
        Box::pin(async move {
            let project = self.project()?;
            let token = self.trigger_token.clone().ok_or_else(|| {
                Error::Config(
                    "a GitLab dispatch needs a pipeline trigger token: set DEFSYNC_GITLAB_TRIGGER_TOKEN (Settings → CI/CD → \
                     Pipeline trigger tokens)"
                        .into(),
                )
            })?;
            let mut options =
                self.options.clone().ok_or_else(|| Error::Config("a GitLab dispatch needs --gitlab-url".into()))?;
            options.token = token.clone();
            options.token_kind = super::client::TokenKind::Trigger;
            let gl = GitLab::new(options).map_err(|e| Error::Config(format!("{e:#}")))?;
            let mut values = vec![("project", d.project)];
            if let Some(c) = d.commit.filter(|c| !c.is_empty()) {
                values.push(("commit", c));
            }
            let pipeline = gl
                .trigger_pipeline(&project, token.expose(), d.git_ref, &values, self.pass_as)
                .await
                .map_err(|e| Error::Other(anyhow::Error::new(e)))?;
            let started = format!("started pipeline {} on {} in {project}", pipeline.id, d.git_ref);
            Ok(match pipeline.web_url {
                Some(url) => format!("{started}: {url}"),
                None => started,
            })
        })
    }
}

/// `message` with GitLab's `[skip ci]` on its subject line, which makes GitLab start no pipeline
/// for the push that brings the commit.
fn skip_ci_message(message: &str) -> String {
    if message.contains("[skip ci]") || message.contains("[ci skip]") {
        return message.to_owned();
    }
    match message.split_once('\n') {
        Some((subject, rest)) => format!("{subject} [skip ci]\n{rest}"),
        None => format!("{message} [skip ci]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_ci_goes_on_the_subject_once() {
        assert_eq!(skip_ci_message("defsync: pull\n\nbody"), "defsync: pull [skip ci]\n\nbody");
        assert_eq!(skip_ci_message("one"), "one [skip ci]");
        assert_eq!(skip_ci_message("x [skip ci]"), "x [skip ci]");
    }
}
