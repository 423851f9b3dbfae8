//! Pull-request delivery: a pull's commit goes onto defsync's own branch, and one pull request
//! per project carries it into the target branch.
//!
//! There is never a second PR for the same branch: an open one is found by its head and
//! updated. Opening a PR is not safe to repeat, so after an unclear outcome defsync looks for
//! the PR before anything else.

use crate::ci::actions::{cell, code_span};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::client::{GitHub, RepoName, Req, Retry, segment};
use super::errors::{ErrorKind, GitHubError, Permission};
use crate::report::{Change, Conflict, Op};

/// An open pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    pub url: String,
    /// Opened by this call, rather than found open and updated.
    pub created: bool,
}

/// What the PR should be.
#[derive(Debug, Clone)]
pub struct PullRequestSpec<'a> {
    /// The target branch.
    pub base: &'a str,
    /// defsync's branch, e.g. `defsync/<project>` ([`crate::forge::default_pr_branch`]).
    pub head_branch: &'a str,
    /// The commit the head branch must point at (made with `create_commit` on the base's tip).
    pub commit: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    /// Labels to add; existing labels stay.
    pub labels: &'a [String],
}

#[derive(Deserialize)]
struct Pull {
    number: u64,
    html_url: String,
}

#[derive(Serialize)]
struct NewPull<'a> {
    title: &'a str,
    head: &'a str,
    base: &'a str,
    body: &'a str,
    maintainer_can_modify: bool,
}

#[derive(Serialize)]
struct EditPull<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a str>,
}

#[derive(Serialize)]
struct Labels<'a> {
    labels: &'a [String],
}

/// GitHub refuses PR bodies longer than this many characters.
const MAX_BODY_CHARS: usize = 65_536;

impl GitHub {
    /// Points `spec.head_branch` at `spec.commit` and makes sure one open PR from it into
    /// `spec.base` exists with this title, body and labels.
    ///
    /// Requests: 3 to 5 (read and set the branch, find the PR, open or edit it, add labels).
    pub async fn open_or_update_pr(
        &self,
        repo: &RepoName,
        spec: &PullRequestSpec<'_>,
    ) -> Result<PullRequest, GitHubError> {
        self.set_branch(repo, spec.head_branch, spec.commit).await?;
        let pr = match self.open_pulls(repo, spec.head_branch).await?.into_iter().next() {
            Some(found) => {
                let edit =
                    EditPull { title: Some(spec.title), body: Some(spec.body), base: Some(spec.base), state: None };
                let req = Req::patch(
                    format!("{}/pulls/{}", repo.path(), found.number),
                    &edit,
                    format!("update pull request #{} in {repo}", found.number),
                )
                .needs(Permission::PullRequestsWrite);
                self.call(&req).await?;
                PullRequest { number: found.number, url: found.html_url, created: false }
            }
            None => self.create_pull(repo, spec).await?,
        };
        if !spec.labels.is_empty() {
            // Adding labels is a set union: safe to repeat.
            let req = Req::post(
                format!("{}/issues/{}/labels", repo.path(), pr.number),
                &Labels { labels: spec.labels },
                format!("label pull request #{} in {repo}", pr.number),
            )
            .needs(Permission::IssuesWrite);
            self.call(&req).await?;
        }
        Ok(pr)
    }

    async fn create_pull(&self, repo: &RepoName, spec: &PullRequestSpec<'_>) -> Result<PullRequest, GitHubError> {
        let body = NewPull {
            title: spec.title,
            head: spec.head_branch,
            base: spec.base,
            body: spec.body,
            maintainer_can_modify: false,
        };
        let req = Req::post(format!("{}/pulls", repo.path()), &body, format!("open a pull request in {repo}"))
            .needs(Permission::PullRequestsWrite)
            .retry(Retry::RejectedOnly);
        match self.call_json::<Pull>(&req).await {
            Ok(p) => Ok(PullRequest { number: p.number, url: p.html_url, created: true }),
            // The request may have landed although the answer did not, or a concurrent run
            // opened it: look before trying again.
            Err(e)
                if matches!(e.kind, ErrorKind::Transport | ErrorKind::Server)
                    || (e.status == Some(422) && e.message_contains("already exists")) =>
            {
                match self.open_pulls(repo, spec.head_branch).await?.into_iter().next() {
                    Some(p) => Ok(PullRequest { number: p.number, url: p.html_url, created: true }),
                    None if e.kind == ErrorKind::Transport || e.kind == ErrorKind::Server => {
                        let p: Pull = self.call_json(&req).await?;
                        Ok(PullRequest { number: p.number, url: p.html_url, created: true })
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Open PRs whose head is `branch` of this repository.
    async fn open_pulls(&self, repo: &RepoName, branch: &str) -> Result<Vec<Pull>, GitHubError> {
        let head = format!("{}:{branch}", repo.owner);
        self.call_json(&Req::get(
            format!("{}/pulls?state=open&head={}&per_page=100", repo.path(), segment(&head)),
            format!("look for an open pull request from {branch} in {repo}"),
        ))
        .await
    }

    /// Closes the open PR from `head_branch`, if any, and deletes the branch: the platform and
    /// the target branch agree again. Returns the closed PR's number.
    pub async fn close_pr_and_delete_branch(
        &self,
        repo: &RepoName,
        head_branch: &str,
    ) -> Result<Option<u64>, GitHubError> {
        let mut closed = None;
        for pr in self.open_pulls(repo, head_branch).await? {
            let edit = EditPull { title: None, body: None, base: None, state: Some("closed") };
            let req = Req::patch(
                format!("{}/pulls/{}", repo.path(), pr.number),
                &edit,
                format!("close pull request #{} in {repo}", pr.number),
            )
            .needs(Permission::PullRequestsWrite);
            self.call(&req).await?;
            closed.get_or_insert(pr.number);
        }
        self.delete_branch(repo, head_branch).await?;
        Ok(closed)
    }
}

/// What a pull request's body tells.
#[derive(Debug, Clone)]
pub struct PrBody<'a> {
    pub project: &'a str,
    /// The platform commit synced, `id` and `seq`.
    pub platform_commit: Option<&'a crate::report::CommitRef>,
    /// The commit that asked for the run, when it is not the one synced.
    pub requested_commit: Option<&'a str>,
    pub target_branch: &'a str,
    pub changes: &'a [Change],
    /// Conflicting keys whose platform version this PR carries.
    pub conflicts: &'a [Conflict],
}

/// The Markdown body of a pull-request delivery. Names are in code spans, so they can neither
/// mention people nor make links.
pub fn render_pr_body(b: &PrBody<'_>) -> String {
    let mut out = String::new();
    let _ = write!(out, "defsync brings project {} from the platform", code_span(b.project));
    if let Some(c) = b.platform_commit {
        let _ = write!(out, " at commit {} (seq {})", code_span(&c.id), c.seq);
    }
    let _ = writeln!(out, " into {}.", code_span(b.target_branch));
    if let Some(r) = b.requested_commit
        && b.platform_commit.is_none_or(|c| c.id != r)
    {
        let _ = writeln!(out, "\nRequested by platform commit {}.", code_span(r));
    }
    if !b.conflicts.is_empty() {
        let _ = writeln!(
            out,
            "\n### Conflicts\n\n{} changed in both Git and on the platform. This branch carries the platform's \
             version of each: merging takes it; to keep Git's version, push it to this branch before merging, or \
             close this pull request and push from Git.\n",
            if b.conflicts.len() == 1 {
                "One definition was".to_owned()
            } else {
                format!("{} definitions were", b.conflicts.len())
            }
        );
        out.push_str("| kind | name | file | Git | platform |\n|---|---|---|---|---|\n");
        for c in b.conflicts {
            let digest = |d: &Option<crate::digest::Digest>| match d {
                Some(d) => cell(&d.short(12)),
                None => "deleted".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                cell(&c.kind),
                cell(&c.name),
                c.path.as_deref().map(cell).unwrap_or_default(),
                digest(&c.git),
                digest(&c.platform)
            );
        }
    }
    if !b.changes.is_empty() {
        let _ = writeln!(out, "\n### Changes\n\n| change | kind | name | file |\n|---|---|---|---|");
        let mut rows = String::new();
        for (i, c) in b.changes.iter().enumerate() {
            let op = match c.op {
                Op::Add => "add",
                Op::Update => "update",
                Op::Delete => "delete",
            };
            let row = format!(
                "| {op} | {} | {} | {} |\n",
                cell(&c.kind),
                cell(&c.name),
                c.path.as_deref().map(cell).unwrap_or_default()
            );
            if out.len() + rows.len() + row.len() > MAX_BODY_CHARS - 200 {
                let _ = writeln!(rows, "\n… and {} more changes.", b.changes.len() - i);
                break;
            }
            rows.push_str(&row);
        }
        out.push_str(&rows);
    }
    out.push_str("\n<sub>Opened by defsync. It updates this pull request while the platform changes, and closes it once the branch and the platform agree.</sub>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_change_lists_are_cut_to_githubs_limit() {
        let changes: Vec<Change> = (0..5_000)
            .map(|i| Change {
                side: crate::report::Side::Git,
                op: Op::Update,
                kind: "dashboard".into(),
                name: format!("name-{i}"),
                path: Some(format!("defs/dashboard/name-{i}.yaml")),
            })
            .collect();
        let body = render_pr_body(&PrBody {
            project: "p1",
            platform_commit: None,
            requested_commit: None,
            target_branch: "main",
            changes: &changes,
            conflicts: &[],
        });
        assert!(body.chars().count() <= MAX_BODY_CHARS, "{}", body.len());
        assert!(body.contains("more changes"));
    }
}
