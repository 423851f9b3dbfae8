//! GitLab webhook deliveries: the headers and the few fields `serve` reads from an authenticated
//! body. GitLab does not sign bodies: it sends the webhook's secret token in `X-Gitlab-Token`,
//! which `serve` compares (by SHA-256, in constant time) with the one configured.

use serde::Deserialize;

/// The webhook's secret token, as configured on GitLab.
pub const TOKEN_HEADER: &str = "x-gitlab-token";
/// `Pipeline Hook`, `Push Hook`, …
pub const EVENT_HEADER: &str = "x-gitlab-event";
/// A UUID per delivery (a retry of the same event keeps it).
pub const UUID_HEADER: &str = "x-gitlab-event-uuid";

/// What `serve` uses of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A pipeline changed status. The status is the event's own; read the pipeline back where a
    /// token allows.
    Pipeline { project_id: u64, project_path: String, pipeline_id: u64, status: String, url: Option<String> },
    /// A branch moved.
    Push { project_path: String, git_ref: String, after: String },
    /// Any other event: not used.
    Other(String),
}

#[derive(Deserialize)]
struct ProjectRef {
    id: u64,
    path_with_namespace: String,
    #[serde(default)]
    web_url: Option<String>,
}

#[derive(Deserialize)]
struct Kind {
    object_kind: Option<String>,
    project: Option<ProjectRef>,
}

#[derive(Deserialize)]
struct PipelineAttributes {
    id: u64,
    status: String,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
struct PipelineEvent {
    project: ProjectRef,
    object_attributes: PipelineAttributes,
}

#[derive(Deserialize)]
struct PushEvent {
    project: ProjectRef,
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
}

/// The project (`group/name` path and numeric ID) an event is about, if it names one.
pub fn project(body: &[u8]) -> Option<(String, u64)> {
    let p = serde_json::from_slice::<Kind>(body).ok()?.project?;
    Some((p.path_with_namespace, p.id))
}

/// The fields of an event that `serve` uses, by its `object_kind`. Only call it on an
/// authenticated body.
pub fn parse(body: &[u8]) -> Result<Event, String> {
    let bad = |what: &str, e: serde_json::Error| format!("the {what} event's body is not what GitLab sends: {e}");
    let kind = serde_json::from_slice::<Kind>(body).map_err(|e| bad("GitLab", e))?.object_kind.unwrap_or_default();
    Ok(match kind.as_str() {
        "pipeline" => {
            let e: PipelineEvent = serde_json::from_slice(body).map_err(|e| bad("pipeline", e))?;
            // Older GitLab versions send no pipeline URL; it is the project's URL and the ID.
            let url = e
                .object_attributes
                .url
                .or_else(|| e.project.web_url.as_ref().map(|w| format!("{w}/-/pipelines/{}", e.object_attributes.id)));
            Event::Pipeline {
                project_id: e.project.id,
                project_path: e.project.path_with_namespace,
                pipeline_id: e.object_attributes.id,
                status: e.object_attributes.status,
                url,
            }
        }
        "push" => {
            let e: PushEvent = serde_json::from_slice(body).map_err(|e| bad("push", e))?;
            Event::Push { project_path: e.project.path_with_namespace, git_ref: e.git_ref, after: e.after }
        }
        other => Event::Other(other.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_to_what_serve_uses() {
        let pipeline = br#"{"object_kind":"pipeline","object_attributes":{"id":31,"status":"running"},
            "project":{"id":7,"path_with_namespace":"group/defs","web_url":"https://gitlab.example/group/defs"}}"#;
        assert_eq!(
            parse(pipeline),
            Ok(Event::Pipeline {
                project_id: 7,
                project_path: "group/defs".into(),
                pipeline_id: 31,
                status: "running".into(),
                url: Some("https://gitlab.example/group/defs/-/pipelines/31".into()),
            })
        );
        assert_eq!(project(pipeline), Some(("group/defs".into(), 7)));
        let push = br#"{"object_kind":"push","ref":"refs/heads/main","after":"abc","project":{"id":7,"path_with_namespace":"group/defs"}}"#;
        assert_eq!(
            parse(push),
            Ok(Event::Push {
                project_path: "group/defs".into(),
                git_ref: "refs/heads/main".into(),
                after: "abc".into()
            })
        );
        assert_eq!(parse(br#"{"object_kind":"issue"}"#), Ok(Event::Other("issue".into())));
        assert!(parse(br#"{"object_kind":"pipeline"}"#).unwrap_err().contains("pipeline"));
    }
}
