//! Starting the pull pipeline with a pipeline trigger token (`POST
//! /projects/:id/trigger/pipeline`), as the platform does after an edit, and reading a pipeline
//! back (`GET /projects/:id/pipelines/:pipeline_id`) when a pipeline event says it changed.

use serde::{Deserialize, Serialize};

use super::client::{GitLab, Req, Retry};
use super::commit::Project;
use super::errors::{GitLabError, Scope};

/// The pipeline a trigger started.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Pipeline {
    pub id: u64,
    #[serde(default)]
    pub web_url: Option<String>,
    /// `created`, `pending`, `running`, `success`, `failed`, `canceled`, `skipped`, `manual`, …
    #[serde(default)]
    pub status: Option<String>,
}

/// The pipeline variable that names the project to pull (`variables[DEFSYNC_PROJECT_ID]`): the
/// trigger's side of what `ci::gitlab` reads, so the two cannot drift apart.
pub const PROJECT_VARIABLE: &str = "DEFSYNC_PROJECT_ID";
/// The pipeline variable that names the platform commit that asked for the pull.
pub const COMMIT_VARIABLE: &str = "DEFSYNC_COMMIT_ID";

/// How the project and commit reach the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PassAs {
    /// Pipeline variables [`PROJECT_VARIABLE`] and [`COMMIT_VARIABLE`], which defsync's GitLab
    /// CI runtime reads: works with any pipeline.
    #[default]
    Variables,
    /// Pipeline inputs `project-id` and `commit-id`, the component's `spec:inputs` (GitLab
    /// refuses inputs a pipeline does not declare).
    Inputs,
}

#[derive(Serialize)]
struct Trigger<'a> {
    token: &'a str,
    // The OpenAPI description leaves `ref` out of the body; GitLab's trigger docs make it a
    // required field of the same request (`--form ref=main`), and GitLab reads JSON and form
    // bodies alike.
    #[serde(rename = "ref")]
    git_ref: &'a str,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    variables: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    inputs: serde_json::Map<String, serde_json::Value>,
}

impl GitLab {
    /// Starts a pipeline on `git_ref` with the trigger token `token` and the project and commit
    /// as variables or inputs. Never repeated after an unclear outcome: that could start two
    /// pipelines.
    pub async fn trigger_pipeline(
        &self,
        project: &Project,
        token: &str,
        git_ref: &str,
        values: &[(&str, &str)],
        pass_as: PassAs,
    ) -> Result<Pipeline, GitLabError> {
        let mut variables = serde_json::Map::new();
        let mut inputs = serde_json::Map::new();
        for (key, value) in values {
            match pass_as {
                PassAs::Variables => {
                    let name = match *key {
                        "project" => PROJECT_VARIABLE,
                        "commit" => COMMIT_VARIABLE,
                        other => other,
                    };
                    variables.insert(name.into(), (*value).into());
                }
                PassAs::Inputs => {
                    inputs.insert(format!("{key}-id"), (*value).into());
                }
            }
        }
        let body = Trigger { token, git_ref, variables, inputs };
        let req = Req::post(
            format!("{}/trigger/pipeline", project.path()),
            &body,
            format!("trigger a pipeline on {git_ref} in {project}"),
        )
        .retry(Retry::RejectedOnly);
        self.call_json(&req).await
    }

    /// Reads pipeline `id` of `project` (a `read_api` token suffices).
    pub async fn pipeline(&self, project: &Project, id: u64) -> Result<Pipeline, GitLabError> {
        let req = Req::get(format!("{}/pipelines/{id}", project.path()), format!("read pipeline {id} of {project}"))
            .needs(Scope::ReadApi);
        self.call_json(&req).await
    }
}
