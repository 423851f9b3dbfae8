//! What went wrong talking to GitLab, and what to do about it.
//!
//! GitLab's own message is kept verbatim next to the HTTP status. The hint translates the
//! answers people meet in pipelines (a token without the `api` scope, a Developer on a protected
//! branch, an expired token, a private CA) into the change that fixes them; the README's
//! "Troubleshooting on GitLab" is keyed by these texts.

use std::fmt;

/// A token scope an operation needs, as GitLab names it on the token's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Reads through the API.
    ReadApi,
    /// Writes through the API: commits, branches, merge requests, notes.
    Api,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::ReadApi => "read_api",
            Scope::Api => "api",
        }
    }
}

/// What kind of failure, so a caller can react without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 401: the token is invalid, expired or revoked.
    Unauthorized,
    /// 403 `insufficient_scope`: the token lacks a scope (often `api`).
    InsufficientScope,
    /// 403: the role does not allow it.
    Forbidden,
    /// The branch is protected against this role's pushes.
    BranchProtected,
    /// 404: not there, or not visible to this token.
    NotFound,
    /// 400 from the commits API because a file changed meanwhile (`last_commit_id`), or a file
    /// to create exists: the branch may have moved.
    FileChanged,
    /// 409: a conflicting state, such as a merge request that already exists.
    Conflict,
    /// 429 still in force after the waits allowed.
    RateLimited,
    /// Another 4xx.
    Rejected,
    /// 5xx after every retry.
    Server,
    /// No answer: connection, TLS or timeout, after every retry.
    Transport,
    /// An answer defsync cannot read.
    Protocol,
}

/// A failed GitLab request.
#[derive(Debug, Clone, thiserror::Error)]
pub struct GitLabError {
    pub kind: ErrorKind,
    /// The HTTP status; `None` when no answer came.
    pub status: Option<u16>,
    pub info: Box<ErrorInfo>,
}

/// What GitLab said, and what to do.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub operation: String,
    pub method: String,
    /// The path relative to the API root, with its query.
    pub path: String,
    /// GitLab's `message` (or `error_description`), or the transport error.
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for GitLabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.info;
        write!(f, "GitLab: cannot {}: ", i.operation)?;
        match self.status {
            Some(s) => write!(f, "{} {} answered {s} {:?}", i.method, i.path, i.message)?,
            None => write!(f, "{} {} failed: {}", i.method, i.path, i.message)?,
        }
        if let Some(hint) = &i.hint {
            write!(f, ". {hint}")?;
        }
        Ok(())
    }
}

/// GitLab's `message` is a string, an array, or an object of field → messages.
fn flatten(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(flatten).collect::<Vec<_>>().join("; "),
        serde_json::Value::Object(o) => {
            o.iter().map(|(k, v)| format!("{k} {}", flatten(v))).collect::<Vec<_>>().join("; ")
        }
        other => other.to_string(),
    }
}

impl GitLabError {
    pub fn message(&self) -> &str {
        &self.info.message
    }

    pub fn hint(&self) -> Option<&str> {
        self.info.hint.as_deref()
    }

    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    pub(crate) fn answer(req: &super::client::Req, status: u16, body: &str) -> Self {
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
        let message = parsed
            .get("message")
            .map(flatten)
            .or_else(|| {
                let e = parsed.get("error").map(flatten)?;
                Some(match parsed.get("error_description").map(flatten) {
                    Some(d) => format!("{e}: {d}"),
                    None => e,
                })
            })
            .unwrap_or_else(|| {
                let text: String = body.chars().take(200).collect();
                if text.trim().is_empty() { "(no message)".into() } else { text }
            });
        GitLabError {
            kind: ErrorKind::Rejected,
            status: Some(status),
            info: Box::new(ErrorInfo {
                operation: req.operation.clone(),
                method: req.method.to_string(),
                path: req.path.clone(),
                message,
                hint: None,
            }),
        }
    }

    pub(crate) fn transport(req: &super::client::Req, message: String, api_url: &str) -> Self {
        let lower = message.to_ascii_lowercase();
        let hint = if lower.contains("certificate") || lower.contains("unknownissuer") || lower.contains("tls") {
            format!(
                "the TLS connection to {api_url} failed. A self-managed instance whose certificate a private CA signed \
                 needs that CA: pass --gitlab-ca-cert FILE (or set DEFSYNC_GITLAB_CA_CERT, or SSL_CERT_FILE to a bundle \
                 that includes it); never turn verification off"
            )
        } else {
            format!(
                "GitLab at {api_url} did not answer{}; check the network and the API URL (--gitlab-url, CI_API_V4_URL)",
                if req.retry == super::client::Retry::Safe {
                    " after every retry"
                } else {
                    " (not retried: repeating could act twice)"
                }
            )
        };
        GitLabError {
            kind: ErrorKind::Transport,
            status: None,
            info: Box::new(ErrorInfo {
                operation: req.operation.clone(),
                method: req.method.to_string(),
                path: req.path.clone(),
                message,
                hint: Some(hint),
            }),
        }
    }

    /// Classifies an error answer and adds the hint. `scope` is what the operation needs.
    pub(crate) fn classify(mut self, scope: Option<Scope>) -> Self {
        let text = self.info.message.to_ascii_lowercase();
        let status = self.status.unwrap_or(0);
        let (kind, hint): (ErrorKind, Option<String>) = if status == 401 {
            let why = if text.contains("expired") {
                "the GitLab token has expired"
            } else if text.contains("revoked") {
                "the GitLab token was revoked"
            } else {
                "the GitLab token is invalid, expired or revoked"
            };
            (
                ErrorKind::Unauthorized,
                Some(format!(
                    "{why}: create a new project access token (Settings → Access tokens) and update the GITLAB_TOKEN \
                     CI/CD variable; `defsync doctor --forge gitlab` shows a token's expiry"
                )),
            )
        } else if status == 403 && text.contains("insufficient_scope") {
            let needed = scope.unwrap_or(Scope::Api).name();
            (
                ErrorKind::InsufficientScope,
                Some(format!(
                    "the token lacks the `{needed}` scope. `write_repository` allows `git push` but not API commits or \
                     merge requests, which need `api`: give the token the `api` scope, or deliver with \
                     `--commit-via git --delivery commit`"
                )),
            )
        } else if text.contains("protected branch") || text.contains("not allowed to push into this branch") {
            (
                ErrorKind::BranchProtected,
                Some(
                    "the branch is protected and this token's role may not push to it (a Developer cannot push to a \
                     protected branch by default): deliver through a merge request (`--delivery pull-request`), or \
                     allow the role (or the token's bot user) to push in Settings → Repository → Protected branches"
                        .into(),
                ),
            )
        } else if status == 400
            && (text.contains("has changed since")
                || text.contains("file has changed")
                || text.contains("already exists")
                || text.contains("doesn't exist")
                || text.contains("does not exist"))
        {
            (ErrorKind::FileChanged, Some("the branch changed meanwhile: run again to re-plan on its new tip".into()))
        } else if status == 403 {
            (
                ErrorKind::Forbidden,
                Some(format!(
                    "the token's role on the project does not allow this{}: pull commits and merge requests need at \
                     least Developer (Maintainer to push to a protected branch); a CI/CD job token reaches only a few \
                     endpoints, so set GITLAB_TOKEN to a project access token",
                    scope.map(|s| format!(" (or it lacks the `{}` scope)", s.name())).unwrap_or_default()
                )),
            )
        } else if status == 404 {
            (
                ErrorKind::NotFound,
                Some(
                    "check the project (--gitlab-project, CI_PROJECT_ID) and the branch; GitLab also answers 404 for a \
                     private project the token cannot see, and to a job token outside its allowlist"
                        .into(),
                ),
            )
        } else if status == 409 {
            (ErrorKind::Conflict, None)
        } else if status == 429 {
            (
                ErrorKind::RateLimited,
                Some("GitLab's rate limit is exhausted beyond the waits allowed; run again later".into()),
            )
        } else if status >= 500 {
            (ErrorKind::Server, Some("GitLab failed; check the instance's status page and run again".into()))
        } else {
            (ErrorKind::Rejected, None)
        };
        self.kind = kind;
        self.info.hint = hint;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::client::Req;
    use super::*;

    fn err(status: u16, body: &str) -> GitLabError {
        let req = Req::post("/projects/1/repository/commits".into(), &serde_json::json!({}), "create a commit on main");
        GitLabError::answer(&req, status, body).classify(req.scope)
    }

    #[test]
    fn insufficient_scope_names_api_over_write_repository() {
        let e = err(
            403,
            r#"{"error":"insufficient_scope","error_description":"The request requires higher privileges than provided by the access token.","scope":"api"}"#,
        );
        assert_eq!(e.kind, ErrorKind::InsufficientScope);
        let text = e.to_string();
        assert!(text.contains("`write_repository` allows `git push` but not API commits"), "{text}");
        assert!(text.contains("403"), "{text}");
    }

    #[test]
    fn a_protected_branch_suggests_merge_request_delivery() {
        let e = err(403, r#"{"message":"You are not allowed to push into this branch"}"#);
        assert_eq!(e.kind, ErrorKind::BranchProtected);
        assert!(e.to_string().contains("--delivery pull-request"));
    }

    #[test]
    fn an_expired_token_says_so() {
        let e = err(
            401,
            r#"{"error":"invalid_token","error_description":"Token is expired. You can either do re-authorization or token refresh."}"#,
        );
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert!(e.to_string().contains("the GitLab token has expired"), "{e}");
    }

    #[test]
    fn an_unknown_issuer_points_at_the_ca_options() {
        let req = Req::get("/projects/1".into(), "read project 1");
        let e = GitLabError::transport(
            &req,
            "error sending request: invalid peer certificate: UnknownIssuer".into(),
            "https://gitlab.internal/api/v4",
        );
        assert_eq!(e.kind, ErrorKind::Transport);
        assert!(e.to_string().contains("--gitlab-ca-cert"), "{e}");
    }

    #[test]
    fn object_messages_are_flattened() {
        let e = err(400, r#"{"message":{"base":["A file with this name already exists"]}}"#);
        assert_eq!(e.message(), "base A file with this name already exists");
        assert_eq!(e.kind, ErrorKind::FileChanged);
    }
}
