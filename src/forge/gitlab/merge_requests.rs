//! Merge-request delivery: a pull's commit goes onto defsync's own branch, and one merge request
//! per project carries it into the target branch; and the one summary note a merge-request
//! pipeline keeps up to date.
//!
//! There is never a second MR for the same source branch: an open one is found by its
//! `source_branch` and updated. Opening an MR is not safe to repeat, so after an unclear outcome
//! defsync looks for it before anything else.

use serde::{Deserialize, Serialize};

use super::client::{GitLab, Req, Retry, segment};
use super::commit::Project;
use super::errors::{ErrorKind, GitLabError};

/// An open merge request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRequest {
    /// The `iid`: the number people see (`!12`), not the instance-wide `id`.
    pub iid: u64,
    pub web_url: String,
    /// Opened by this call, rather than found open and updated.
    pub created: bool,
}

/// What the MR should be.
#[derive(Debug, Clone)]
pub struct MergeRequestSpec<'a> {
    pub target_branch: &'a str,
    /// defsync's branch, e.g. `defsync/<project>`.
    pub source_branch: &'a str,
    /// The commit the source branch must point at.
    pub commit: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    /// Labels to add; existing labels stay.
    pub labels: &'a [String],
}

#[derive(Deserialize)]
struct Mr {
    iid: u64,
    web_url: String,
}

#[derive(Serialize)]
struct NewMr<'a> {
    source_branch: &'a str,
    target_branch: &'a str,
    title: &'a str,
    description: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    labels: &'a [String],
    /// Merging deletes defsync's branch, as closing it does.
    remove_source_branch: bool,
}

#[derive(Serialize, Default)]
struct EditMr<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_branch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    add_labels: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_event: Option<&'a str>,
}

#[derive(Deserialize)]
struct Note {
    id: u64,
    body: String,
}

#[derive(Serialize)]
struct NoteBody<'a> {
    body: &'a str,
}

/// The hidden line that marks defsync's summary note in a merge request.
pub const SUMMARY_MARKER: &str = "<!-- defsync:summary -->";

/// GitLab refuses notes longer than this many characters.
const MAX_NOTE_CHARS: usize = 1_000_000;

impl GitLab {
    /// Points `spec.source_branch` at `spec.commit` and makes sure one open MR from it into
    /// `spec.target_branch` exists with this title, description and labels.
    ///
    /// Requests: 3 (read the branch, find the MR, open or edit it), 5 when the branch must be
    /// moved first.
    pub async fn open_or_update_mr(
        &self,
        project: &Project,
        spec: &MergeRequestSpec<'_>,
    ) -> Result<MergeRequest, GitLabError> {
        self.set_branch(project, spec.source_branch, spec.commit).await?;
        match self.open_mrs(project, spec.source_branch).await?.into_iter().next() {
            Some(found) => {
                let edit = EditMr {
                    title: Some(spec.title),
                    description: Some(spec.description),
                    target_branch: Some(spec.target_branch),
                    add_labels: (!spec.labels.is_empty()).then_some(spec.labels),
                    state_event: None,
                };
                let req = Req::put(
                    format!("{}/merge_requests/{}", project.path(), found.iid),
                    &edit,
                    format!("update merge request !{} in {project}", found.iid),
                );
                self.call(&req).await?;
                Ok(MergeRequest { iid: found.iid, web_url: found.web_url, created: false })
            }
            None => self.create_mr(project, spec).await,
        }
    }

    /// Points defsync's own `branch` at `sha`. The commits API already left it there; a branch
    /// someone moved meanwhile is replaced, as GitLab has no way to move a branch but to delete
    /// and create it.
    async fn set_branch(&self, project: &Project, branch: &str, sha: &str) -> Result<(), GitLabError> {
        match self.branch_head(project, branch).await? {
            Some(head) if head == sha => Ok(()),
            Some(_) => {
                self.delete_branch(project, branch).await?;
                self.create_branch(project, branch, sha).await
            }
            None => self.create_branch(project, branch, sha).await,
        }
    }

    async fn create_mr(&self, project: &Project, spec: &MergeRequestSpec<'_>) -> Result<MergeRequest, GitLabError> {
        let body = NewMr {
            source_branch: spec.source_branch,
            target_branch: spec.target_branch,
            title: spec.title,
            description: spec.description,
            labels: spec.labels,
            remove_source_branch: true,
        };
        let req = Req::post(
            format!("{}/merge_requests", project.path()),
            &body,
            format!("open a merge request in {project}"),
        )
        .retry(Retry::RejectedOnly);
        match self.call_json::<Mr>(&req).await {
            Ok(m) => Ok(MergeRequest { iid: m.iid, web_url: m.web_url, created: true }),
            // The request may have landed although the answer did not, or a concurrent run
            // opened it ("Another open merge request already exists for this source branch").
            Err(e) if matches!(e.kind, ErrorKind::Transport | ErrorKind::Server | ErrorKind::Conflict) => {
                match self.open_mrs(project, spec.source_branch).await?.into_iter().next() {
                    Some(m) => Ok(MergeRequest { iid: m.iid, web_url: m.web_url, created: true }),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Open MRs whose source is `branch` of this project.
    async fn open_mrs(&self, project: &Project, branch: &str) -> Result<Vec<Mr>, GitLabError> {
        self.call_json(&Req::get(
            format!("{}/merge_requests?state=opened&source_branch={}&per_page=100", project.path(), segment(branch)),
            format!("look for an open merge request from {branch} in {project}"),
        ))
        .await
    }

    /// Closes the open MR from `source_branch`, if any, and deletes the branch: the platform and
    /// the target branch agree again. Returns the closed MR's iid.
    pub async fn close_mr_and_delete_branch(
        &self,
        project: &Project,
        source_branch: &str,
    ) -> Result<Option<u64>, GitLabError> {
        let mut closed = None;
        for mr in self.open_mrs(project, source_branch).await? {
            let edit = EditMr { state_event: Some("close"), ..Default::default() };
            let req = Req::put(
                format!("{}/merge_requests/{}", project.path(), mr.iid),
                &edit,
                format!("close merge request !{} in {project}", mr.iid),
            );
            self.call(&req).await?;
            closed.get_or_insert(mr.iid);
        }
        self.delete_branch(project, source_branch).await?;
        Ok(closed)
    }

    /// Writes `markdown` as defsync's summary note on MR `iid`: the note that carries
    /// [`SUMMARY_MARKER`] is edited, so each pipeline updates one note rather than adding
    /// another. Returns the note's ID.
    pub async fn upsert_summary_note(&self, project: &Project, iid: u64, markdown: &str) -> Result<u64, GitLabError> {
        let mut body = format!("{SUMMARY_MARKER}\n{markdown}");
        if body.chars().count() > MAX_NOTE_CHARS {
            body = body.chars().take(MAX_NOTE_CHARS - 100).collect();
            body.push_str("\n\n… (cut to GitLab's note size limit; the full summary is the job's artifact)");
        }
        let notes = format!("{}/merge_requests/{iid}/notes", project.path());
        // Oldest first, so the first marked note is the one kept; pages until it is found.
        let mut page = 1;
        let existing = loop {
            let list: Vec<Note> = self
                .call_json(&Req::get(
                    format!("{notes}?sort=asc&order_by=created_at&per_page=100&page={page}"),
                    format!("read the notes of merge request !{iid} in {project}"),
                ))
                .await?;
            if let Some(n) = list.iter().find(|n| n.body.starts_with(SUMMARY_MARKER)) {
                break Some(n.id);
            }
            if list.len() < 100 {
                break None;
            }
            page += 1;
        };
        let operation = format!("write the summary note on merge request !{iid} in {project}");
        match existing {
            Some(id) => {
                self.call(&Req::put(format!("{notes}/{id}"), &NoteBody { body: &body }, operation)).await?;
                Ok(id)
            }
            None => {
                let req = Req::post(notes, &NoteBody { body: &body }, operation).retry(Retry::RejectedOnly);
                Ok(self.call_json::<Note>(&req).await?.id)
            }
        }
    }
}

/// The Markdown description of a merge-request delivery: the pull-request body, in GitLab's
/// words.
pub fn render_mr_description(b: &crate::forge::github::PrBody<'_>) -> String {
    crate::forge::github::render_pr_body(b).replace("pull request", "merge request")
}
