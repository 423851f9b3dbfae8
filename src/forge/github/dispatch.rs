//! Triggering the pull workflow (`workflow_dispatch`), as the platform does after an edit.

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
}
