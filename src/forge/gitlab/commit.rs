//! Commits through GitLab's commits API (`POST /projects/:id/repository/commits` with
//! `actions[]`), and the branches they land on.
//!
//! GitLab has no compare-and-swap on a branch: a commit lands on whatever the branch points at
//! when GitLab runs it. What guards a pull onto the target branch is in [`GitLab::commit_onto_branch`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::client::{GitLab, Req, Retry, segment};
use super::errors::{ErrorKind, GitLabError};

/// A GitLab project: its numeric ID or its full path (`group/sub/name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project(pub String);

impl Project {
    /// `/projects/<id>`, the path encoded as one segment.
    pub(crate) fn path(&self) -> String {
        format!("/projects/{}", segment(&self.0))
    }
}

impl std::fmt::Display for Project {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of `actions[]`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CommitAction {
    pub action: ActionKind,
    pub file_path: String,
    /// Base64, so any bytes travel; absent for deletions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<&'static str>,
    /// The last commit that changed the file, as the commit was planned: GitLab refuses the
    /// whole commit when the file's last commit on the branch is another one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_commit_id: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Create,
    Update,
    Delete,
}

impl CommitAction {
    pub fn write(kind: ActionKind, path: &str, content: &[u8], last_commit_id: Option<String>) -> Self {
        use base64::Engine as _;
        CommitAction {
            action: kind,
            file_path: path.to_owned(),
            content: Some(base64::engine::general_purpose::STANDARD.encode(content)),
            encoding: Some("base64"),
            last_commit_id,
        }
    }
    pub fn delete(path: &str, last_commit_id: Option<String>) -> Self {
        CommitAction {
            action: ActionKind::Delete,
            file_path: path.to_owned(),
            content: None,
            encoding: None,
            last_commit_id,
        }
    }
}

#[derive(Serialize)]
struct NewCommit<'a> {
    branch: &'a str,
    commit_message: &'a str,
    actions: &'a [CommitAction],
    #[serde(skip_serializing_if = "Option::is_none")]
    start_sha: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    force: bool,
    /// Stats cost GitLab a diff of the whole commit, which nobody reads here.
    stats: bool,
}

/// The commit GitLab made.
#[derive(Debug, Clone, Deserialize)]
pub struct MadeCommit {
    pub id: String,
    #[serde(default)]
    pub parent_ids: Vec<String>,
    #[serde(default)]
    pub web_url: Option<String>,
}

#[derive(Deserialize)]
struct Branch {
    commit: BranchCommit,
}

#[derive(Deserialize)]
struct BranchCommit {
    id: String,
}

#[derive(Serialize)]
struct NewBranch<'a> {
    branch: &'a str,
    #[serde(rename = "ref")]
    git_ref: &'a str,
}

/// What [`GitLab::commit_onto_branch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OntoBranch {
    /// The commit is on the branch, directly on the planned parent.
    Made(String),
    /// The branch was not at the planned parent: nothing was written, or (see the method) the
    /// commit landed on a concurrent one and the run must re-plan on the new tip.
    Moved,
}

impl GitLab {
    /// The commit `branch` points at; `None` when there is no such branch.
    pub async fn branch_head(&self, project: &Project, branch: &str) -> Result<Option<String>, GitLabError> {
        let req = Req::get(
            format!("{}/repository/branches/{}", project.path(), segment(branch)),
            format!("read branch {branch} of {project}"),
        );
        match self.call_json::<Branch>(&req).await {
            Ok(b) => Ok(Some(b.commit.id)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One commit with `actions` on `branch`. With `start_sha`, the commit starts from it and
    /// `force` replaces the branch (defsync's own); without, it goes on the branch's tip.
    /// Never repeated after an unclear outcome: the commit could be made twice.
    pub async fn create_commit(
        &self,
        project: &Project,
        branch: &str,
        message: &str,
        actions: &[CommitAction],
        start_sha: Option<&str>,
        force: bool,
    ) -> Result<MadeCommit, GitLabError> {
        let body = NewCommit { branch, commit_message: message, actions, start_sha, force, stats: false };
        let req = Req::post(
            format!("{}/repository/commits", project.path()),
            &body,
            format!("commit {} file(s) onto {branch} in {project}", actions.len()),
        )
        .retry(Retry::RejectedOnly);
        self.call_json(&req).await
    }

    /// The guarded commit of a pull onto the target branch, in two requests:
    ///
    /// 1. read the branch: when it no longer points at `parent`, nothing is written
    ///    ([`OntoBranch::Moved`]);
    /// 2. commit with `actions[]` on the branch, each update and deletion carrying its file's
    ///    `last_commit_id` (a create fails by itself when the file exists). No `start_sha`:
    ///    GitLab refuses one on an existing branch unless `force` is set, and `force` would throw
    ///    away whatever a concurrent writer pushed.
    ///
    /// Why this is safe though GitLab has no compare-and-swap on the branch: between the two
    /// requests another push can land. If it touched any file this commit writes, GitLab refuses
    /// the whole commit (`last_commit_id`, or the create finding the file), and the answer is
    /// `Moved`: nothing was written. If it touched only other files, the commit lands on top of
    /// it: nothing of it is lost, but the tree is not the one verified. The answer's
    /// `parent_ids` show that, and the answer is `Moved` too, so the run re-plans on the new
    /// tip, which holds both. The window left is a concurrent push that touches other files,
    /// which this handles without losing a commit.
    pub async fn commit_onto_branch(
        &self,
        project: &Project,
        branch: &str,
        parent: &str,
        message: &str,
        actions: &[CommitAction],
    ) -> Result<OntoBranch, GitLabError> {
        match self.branch_head(project, branch).await? {
            Some(head) if head == parent => {}
            Some(_) => return Ok(OntoBranch::Moved),
            None => {
                return Err(GitLabError::missing_branch(project, branch));
            }
        }
        match self.create_commit(project, branch, message, actions, None, false).await {
            Ok(made) if made.parent_ids == [parent] => Ok(OntoBranch::Made(made.id)),
            Ok(made) => {
                tracing::info!(
                    "GitLab made commit {} on {:?}, not on {parent}: {branch} moved meanwhile",
                    made.id,
                    made.parent_ids
                );
                Ok(OntoBranch::Moved)
            }
            Err(e) if e.kind == ErrorKind::FileChanged => match self.branch_head(project, branch).await? {
                Some(now) if now != parent => Ok(OntoBranch::Moved),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Creates `branch` at `sha`.
    pub async fn create_branch(&self, project: &Project, branch: &str, sha: &str) -> Result<(), GitLabError> {
        let req = Req::post(
            format!("{}/repository/branches", project.path()),
            &NewBranch { branch, git_ref: sha },
            format!("create branch {branch} in {project}"),
        );
        self.call(&req).await.map(drop)
    }

    /// Deletes `branch`; `Ok(false)` when it did not exist.
    pub async fn delete_branch(&self, project: &Project, branch: &str) -> Result<bool, GitLabError> {
        let req = Req::delete(
            format!("{}/repository/branches/{}", project.path(), segment(branch)),
            format!("delete branch {branch} of {project}"),
        );
        match self.call(&req).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The `actions[]` of a commit of `edits` onto `parent`: a write is a create or an update as the
/// path exists in `parent`; `last_commits` gives each existing path's last commit.
pub fn actions(
    edits: &[crate::git::TreeEdit],
    existing: &std::collections::HashSet<String>,
    last_commits: Option<&HashMap<String, String>>,
) -> Vec<CommitAction> {
    use crate::git::TreeEdit;
    let last = |p: &str| last_commits.and_then(|m| m.get(p).cloned());
    edits
        .iter()
        .map(|e| match e {
            TreeEdit::Write { path, content } if existing.contains(path) => {
                CommitAction::write(ActionKind::Update, path, content, last(path))
            }
            TreeEdit::Write { path, content } => CommitAction::write(ActionKind::Create, path, content, None),
            TreeEdit::Remove { path } => CommitAction::delete(path, last(path)),
        })
        .collect()
}

impl GitLabError {
    fn missing_branch(project: &Project, branch: &str) -> Self {
        GitLabError {
            kind: ErrorKind::NotFound,
            status: Some(404),
            info: Box::new(super::errors::ErrorInfo {
                operation: format!("commit onto {branch} in {project}"),
                method: "GET".into(),
                path: format!("{}/repository/branches/{}", project.path(), segment(branch)),
                message: "404 Branch Not Found".into(),
                hint: Some(format!("create branch {branch} first, or pass --branch")),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::TreeEdit;

    #[test]
    fn writes_are_creates_or_updates_and_carry_the_guard() {
        let existing = ["a.yaml".to_owned(), "b.yaml".to_owned()].into_iter().collect();
        let last: HashMap<String, String> =
            [("a.yaml".to_owned(), "c1".to_owned()), ("b.yaml".to_owned(), "c2".to_owned())].into_iter().collect();
        let edits = [
            TreeEdit::Write { path: "a.yaml".into(), content: b"x: 1\n".to_vec() },
            TreeEdit::Write { path: "n.yaml".into(), content: b"\xff".to_vec() },
            TreeEdit::Remove { path: "b.yaml".into() },
        ];
        let got = actions(&edits, &existing, Some(&last));
        let json = serde_json::to_value(&got).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"action": "update", "file_path": "a.yaml", "content": "eDogMQo=", "encoding": "base64", "last_commit_id": "c1"},
                {"action": "create", "file_path": "n.yaml", "content": "/w==", "encoding": "base64"},
                {"action": "delete", "file_path": "b.yaml", "last_commit_id": "c2"},
            ])
        );
    }
}
