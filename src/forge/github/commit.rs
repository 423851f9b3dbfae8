//! Commits through GitHub's git-data API, and the refs that point at them.
//!
//! A commit costs a fixed handful of requests however many files change: the parent's tree is
//! read once, changed files travel inline as tree entries against `base_tree` (deletions as
//! `"sha": null`), and only a very large change is split, each create-tree building on the
//! previous one. The commit carries no author or committer, so GitHub makes it as the token's
//! identity and signs it ("Verified"), which rulesets requiring signed commits accept.

use serde::{Deserialize, Serialize};

use super::client::{GitHub, RepoName, Req, ref_path};
use super::errors::{GitHubError, Permission};
use crate::git::TreeEdit;

#[derive(Deserialize)]
struct Sha {
    sha: String,
}

#[derive(Deserialize)]
struct GitCommit {
    tree: Sha,
}

#[derive(Deserialize)]
struct GitRef {
    object: Sha,
}

/// One entry of a create-tree request. `sha: Some(None)` is sent as `"sha": null`, which
/// deletes the path; octocrab's typed builder cannot say that.
#[derive(Serialize)]
struct NewEntry<'a> {
    path: &'a str,
    mode: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha: Option<Option<String>>,
}

#[derive(Serialize)]
struct NewTree<'a> {
    base_tree: &'a str,
    tree: &'a [NewEntry<'a>],
}

#[derive(Serialize)]
struct NewCommit<'a> {
    message: &'a str,
    tree: &'a str,
    parents: [&'a str; 1],
}

#[derive(Serialize)]
struct NewBlob {
    content: String,
    encoding: &'static str,
}

#[derive(Serialize)]
struct UpdateRef<'a> {
    sha: &'a str,
    force: bool,
}

#[derive(Serialize)]
struct CreateRef<'a> {
    #[serde(rename = "ref")]
    name: String,
    sha: &'a str,
}

/// A rough upper bound of a create-tree body's bytes besides its entries.
const TREE_OVERHEAD: usize = 128;

impl GitHub {
    /// Creates a commit on `parent` whose tree is `parent`'s tree with `edits` applied, and
    /// returns its SHA. No ref moves. Paths are relative to the repository root.
    ///
    /// Requests: one to read the parent, one create-tree per `max_tree_request_bytes` of
    /// changes (one blob request for each file that is not UTF-8 or too large to inline), one
    /// to create the commit.
    pub async fn create_commit(
        &self,
        repo: &RepoName,
        parent: &str,
        edits: &[TreeEdit],
        message: &str,
    ) -> Result<String, GitHubError> {
        let parent_commit: GitCommit = self
            .call_json(&Req::get(
                format!("{}/git/commits/{}", repo.path(), super::client::segment(parent)),
                format!("read commit {parent} in {repo}"),
            ))
            .await?;
        let mut tree = parent_commit.tree.sha;

        // Files that cannot travel inline become blobs first.
        let inline_limit = self.options().max_tree_request_bytes / 2;
        let mut blobs: Vec<Option<String>> = Vec::with_capacity(edits.len());
        for edit in edits {
            let blob = match edit {
                TreeEdit::Write { path, content }
                    if std::str::from_utf8(content).is_err() || content.len() > inline_limit =>
                {
                    Some(self.create_blob(repo, path, content).await?)
                }
                _ => None,
            };
            blobs.push(blob);
        }
        let entries: Vec<NewEntry<'_>> = edits
            .iter()
            .zip(blobs)
            .map(|(edit, blob)| match (edit, blob) {
                (TreeEdit::Write { path, .. }, Some(sha)) => {
                    NewEntry { path, mode: "100644", kind: "blob", content: None, sha: Some(Some(sha)) }
                }
                (TreeEdit::Write { path, content }, None) => NewEntry {
                    path,
                    mode: "100644",
                    kind: "blob",
                    content: Some(std::str::from_utf8(content).expect("checked above")),
                    sha: None,
                },
                (TreeEdit::Remove { path }, _) => {
                    NewEntry { path, mode: "100644", kind: "blob", content: None, sha: Some(None) }
                }
            })
            .collect();

        for chunk in chunks(&entries, self.options().max_tree_request_bytes, self.options().max_tree_entries) {
            let body = NewTree { base_tree: &tree, tree: chunk };
            let created: Sha = self
                .call_json(
                    &Req::post(format!("{}/git/trees", repo.path()), &body, format!("create a tree in {repo}"))
                        .needs(Permission::ContentsWrite),
                )
                .await?;
            tree = created.sha;
        }

        // No author or committer: GitHub then signs the commit as the token's identity.
        let commit = NewCommit { message, tree: &tree, parents: [parent] };
        let created: Sha = self
            .call_json(
                &Req::post(format!("{}/git/commits", repo.path()), &commit, format!("create a commit in {repo}"))
                    .needs(Permission::ContentsWrite),
            )
            .await?;
        Ok(created.sha)
    }

    async fn create_blob(&self, repo: &RepoName, path: &str, content: &[u8]) -> Result<String, GitHubError> {
        use base64::Engine as _;
        let body = NewBlob { content: base64::engine::general_purpose::STANDARD.encode(content), encoding: "base64" };
        let created: Sha = self
            .call_json(
                &Req::post(format!("{}/git/blobs", repo.path()), &body, format!("upload {path} to {repo}"))
                    .needs(Permission::ContentsWrite),
            )
            .await?;
        Ok(created.sha)
    }

    /// Moves `refs/heads/<branch>` from `expected_old` to `new` (a descendant of it) with
    /// `force: false`, GitHub's fast-forward check. `Ok(false)` when the branch moved
    /// meanwhile: fetch, re-plan and try again.
    ///
    /// Safe to retry: a repeat of an update that landed finds the branch at `new`, which
    /// counts as success.
    pub async fn update_branch(
        &self,
        repo: &RepoName,
        branch: &str,
        expected_old: &str,
        new: &str,
    ) -> Result<bool, GitHubError> {
        let req = Req::patch(
            format!("{}/git/refs/heads/{}", repo.path(), ref_path(branch)),
            &UpdateRef { sha: new, force: false },
            format!("move branch {branch} of {repo} to {new}"),
        )
        .needs(Permission::ContentsWrite);
        match self.call(&req).await {
            Ok(_) => Ok(true),
            // GitHub says "Update is not a fast forward" when the branch moved, and sometimes
            // "Reference update failed" for the same race; the latter also means a rule
            // refused it. Where the branch is now tells them apart.
            Err(e)
                if e.status == Some(422)
                    && (e.message_contains("not a fast forward") || e.message_contains("reference update failed")) =>
            {
                match self.branch_sha(repo, branch).await? {
                    Some(now) if now == new => Ok(true),
                    Some(now) if now == expected_old => Err(e),
                    _ => Ok(false),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The commit `refs/heads/<branch>` points at; `None` when there is no such branch.
    pub async fn branch_sha(&self, repo: &RepoName, branch: &str) -> Result<Option<String>, GitHubError> {
        let req = Req::get(
            format!("{}/git/ref/heads/{}", repo.path(), ref_path(branch)),
            format!("read branch {branch} of {repo}"),
        );
        match self.call_json::<GitRef>(&req).await {
            Ok(r) => Ok(Some(r.object.sha)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Points `refs/heads/<branch>` at `sha`, creating the branch or moving it with force. Only
    /// for defsync's own branches.
    pub async fn set_branch(&self, repo: &RepoName, branch: &str, sha: &str) -> Result<(), GitHubError> {
        let current = self.branch_sha(repo, branch).await?;
        if current.as_deref() == Some(sha) {
            return Ok(());
        }
        if current.is_none() {
            let req = Req::post(
                format!("{}/git/refs", repo.path()),
                &CreateRef { name: format!("refs/heads/{branch}"), sha },
                format!("create branch {branch} in {repo}"),
            )
            .needs(Permission::ContentsWrite);
            match self.call(&req).await {
                Ok(_) => return Ok(()),
                // Created meanwhile (or by our own earlier attempt): move it instead.
                Err(e) if e.status == Some(422) && e.message_contains("already exists") => {}
                Err(e) => return Err(e),
            }
        }
        let req = Req::patch(
            format!("{}/git/refs/heads/{}", repo.path(), ref_path(branch)),
            &UpdateRef { sha, force: true },
            format!("move branch {branch} of {repo}"),
        )
        .needs(Permission::ContentsWrite);
        self.call(&req).await.map(|_| ())
    }

    /// Deletes `refs/heads/<branch>`; `Ok(false)` when it did not exist.
    pub async fn delete_branch(&self, repo: &RepoName, branch: &str) -> Result<bool, GitHubError> {
        let req = Req::delete(
            format!("{}/git/refs/heads/{}", repo.path(), ref_path(branch)),
            format!("delete branch {branch} of {repo}"),
        )
        .needs(Permission::ContentsWrite);
        match self.call(&req).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() || (e.status == Some(422) && e.message_contains("does not exist")) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Splits entries so each create-tree body stays under `max_bytes` and `max_entries`.
fn chunks<'e, 'a>(entries: &'e [NewEntry<'a>], max_bytes: usize, max_entries: usize) -> Vec<&'e [NewEntry<'a>]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, TREE_OVERHEAD);
    for (i, entry) in entries.iter().enumerate() {
        let len = serde_json::to_string(entry).map(|s| s.len() + 1).unwrap_or(0);
        if i > start && (size + len > max_bytes || i - start >= max_entries.max(1)) {
            out.push(&entries[start..i]);
            start = i;
            size = TREE_OVERHEAD;
        }
        size += len;
    }
    if start < entries.len() {
        out.push(&entries[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletions_are_sent_as_sha_null() {
        let e = NewEntry { path: "a.yaml", mode: "100644", kind: "blob", content: None, sha: Some(None) };
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"path":"a.yaml","mode":"100644","type":"blob","sha":null}"#);
        let w = NewEntry { path: "b.yaml", mode: "100644", kind: "blob", content: Some("x: 1\n"), sha: None };
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"path":"b.yaml","mode":"100644","type":"blob","content":"x: 1\n"}"#
        );
    }

    #[test]
    fn chunks_respect_size_and_count() {
        let content = "x".repeat(100);
        let names: Vec<String> = (0..50).map(|i| format!("d/{i}.yaml")).collect();
        let entries: Vec<NewEntry<'_>> = names
            .iter()
            .map(|p| NewEntry { path: p, mode: "100644", kind: "blob", content: Some(&content), sha: None })
            .collect();
        assert_eq!(chunks(&entries, 1 << 20, 5_000).len(), 1);
        let small = chunks(&entries, 1_000, 5_000);
        assert!(small.len() > 5);
        assert_eq!(small.iter().map(|c| c.len()).sum::<usize>(), 50);
        assert_eq!(chunks(&entries, 1 << 20, 10).len(), 5);
        assert!(chunks(&[], 1_000, 10).is_empty());
    }
}
