//! Triggering the pull workflow (`workflow_dispatch`), as the platform does after an edit, and
//! reading back the run it started, as `serve` does when a webhook says the run changed.

use serde::{Deserialize, Serialize};

use super::client::{GitHub, RepoName, Req, Retry, segment};
use super::errors::{GitHubError, Permission};

/// The run a dispatch started, where GitHub says which.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DispatchedRun {
    #[serde(rename = "workflow_run_id")]
    pub id: u64,
    pub html_url: Option<String>,
}

/// A workflow run as `GET /repos/{owner}/{repo}/actions/runs/{run_id}` returns it: the fields
/// `serve` records.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WorkflowRun {
    pub id: u64,
    /// `queued`, `in_progress`, `completed`, `waiting`, `requested`, `pending`.
    pub status: Option<String>,
    /// Once completed: `success`, `failure`, `cancelled`, `timed_out`, `skipped`, …
    pub conclusion: Option<String>,
    pub html_url: Option<String>,
    /// The run's name as shown; the pull workflow's `run-name` puts the commit ID in it.
    pub display_title: Option<String>,
    pub event: Option<String>,
}

#[derive(Serialize)]
struct Dispatch<'a> {
    #[serde(rename = "ref")]
    git_ref: &'a str,
    inputs: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    return_run_details: Option<bool>,
}

impl GitHub {
    /// Starts `workflow` (a file name such as `defsync-pull.yml`, or its ID) on `git_ref` with
    /// these inputs. Returns the run where GitHub reports it (newer versions answer 200 with
    /// `workflow_run_id`); `None` where it answers 204 without one.
    ///
    /// Never repeated after an unclear outcome: that could start two runs.
    pub async fn dispatch(
        &self,
        repo: &RepoName,
        workflow: &str,
        git_ref: &str,
        inputs: &[(&str, &str)],
    ) -> Result<Option<DispatchedRun>, GitHubError> {
        let inputs: serde_json::Map<_, _> =
            inputs.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v))).collect();
        let path = format!("{}/actions/workflows/{}/dispatches", repo.path(), segment(workflow));
        let operation = format!("start workflow {workflow} on {git_ref} in {repo}");
        let body = Dispatch { git_ref, inputs: inputs.clone(), return_run_details: Some(true) };
        let req = Req::post(path.clone(), &body, operation.clone())
            .needs(Permission::ActionsWrite)
            .retry(Retry::RejectedOnly);
        let answer = match self.call(&req).await {
            Ok(a) => a,
            // GitHub Enterprise Server versions that predate the field refuse it: ask without.
            Err(e) if e.status == Some(422) && e.message_contains("return_run_details") => {
                let body = Dispatch { git_ref, inputs, return_run_details: None };
                let req = Req::post(path, &body, operation).needs(Permission::ActionsWrite).retry(Retry::RejectedOnly);
                self.call(&req).await?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if answer.status == 204 || answer.body.trim().is_empty() {
            return Ok(None);
        }
        self.parse::<DispatchedRun>(&req, &answer).map(Some)
    }

    /// Reads workflow run `run_id` of `repo`.
    pub async fn workflow_run(&self, repo: &RepoName, run_id: u64) -> Result<WorkflowRun, GitHubError> {
        let path = format!("{}/actions/runs/{run_id}", repo.path());
        let req = Req::get(path, format!("read workflow run {run_id} in {repo}")).needs(Permission::ActionsRead);
        let answer = self.call(&req).await?;
        self.parse::<WorkflowRun>(&req, &answer)
    }
}
