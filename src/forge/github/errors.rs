//! What went wrong talking to GitHub, and what to do about it.
//!
//! GitHub's own message is kept verbatim, next to the HTTP status, the documentation link and
//! the request ID GitHub support asks for. The hint translates the few answers people meet in
//! workflows (a missing `permissions:` entry, branch protection, the Actions PR setting, an
//! expired token) into the change that fixes them.

use std::fmt;

/// A token permission an operation needs, named as a workflow's `permissions:` block names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read the repository, its refs and objects.
    ContentsRead,
    /// Create blobs, trees, commits; move and delete refs.
    ContentsWrite,
    /// Open, edit and close pull requests.
    PullRequestsWrite,
    /// Add labels to a pull request (labels live on the issue side).
    IssuesWrite,
    /// Trigger a workflow (`workflow_dispatch`).
    ActionsWrite,
    /// Read workflow runs.
    ActionsRead,
    /// Read the repository's Actions settings; needs an administrator's token.
    AdministrationRead,
}

impl Permission {
    /// The entry of a workflow's `permissions:` block.
    pub fn workflow_entry(self) -> &'static str {
        match self {
            Permission::ContentsRead => "contents: read",
            Permission::ContentsWrite => "contents: write",
            Permission::PullRequestsWrite => "pull-requests: write",
            Permission::IssuesWrite => "issues: write",
            Permission::ActionsWrite => "actions: write",
            Permission::ActionsRead => "actions: read",
            Permission::AdministrationRead => "administration: read",
        }
    }

    /// The same permission as GitHub Apps and fine-grained tokens show it.
    pub fn fine_grained(self) -> &'static str {
        match self {
            Permission::ContentsRead => "Contents: Read-only",
            Permission::ContentsWrite => "Contents: Read and write",
            Permission::PullRequestsWrite => "Pull requests: Read and write",
            Permission::IssuesWrite => "Issues: Read and write",
            Permission::ActionsWrite => "Actions: Read and write",
            Permission::ActionsRead => "Actions: Read-only",
            Permission::AdministrationRead => "Administration: Read-only",
        }
    }
}

/// What kind of failure, so a caller can react without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 401: the token is invalid, expired or revoked.
    Unauthorized,
    /// 403: the token lacks a permission or scope.
    PermissionDenied,
    /// Files under `.github/workflows` need the `workflows` permission (`workflow` scope).
    WorkflowsPermission,
    /// Branch protection or a ruleset refused the ref update.
    BranchProtected,
    /// The repository does not let GitHub Actions create pull requests.
    ActionsCannotCreatePullRequests,
    /// 404: not there, or not visible to this token.
    NotFound,
    /// A primary or secondary rate limit, still in force after the waits allowed.
    RateLimited,
    /// 422 "Update is not a fast forward": the branch moved.
    NotFastForward,
    /// Another 4xx.
    Rejected,
    /// 5xx after every retry.
    Server,
    /// No answer: connection, TLS or timeout, after every retry.
    Transport,
    /// An answer defsync cannot read.
    Protocol,
}

/// A failed GitHub request.
#[derive(Debug, Clone, thiserror::Error)]
pub struct GitHubError {
    pub kind: ErrorKind,
    /// The HTTP status; `None` when no answer came.
    pub status: Option<u16>,
    /// The rest, boxed so results stay small.
    pub info: Box<ErrorInfo>,
}

/// What GitHub said, and what to do.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    /// What defsync was doing, e.g. "create a tree in octo/repo".
    pub operation: String,
    pub method: String,
    /// The path relative to the API root, with its query.
    pub path: String,
    /// GitHub's `message`, or the transport error.
    pub message: String,
    /// GitHub's `errors` details, each rendered as one line.
    pub details: Vec<String>,
    pub documentation_url: Option<String>,
    /// `x-github-request-id`, for GitHub support.
    pub request_id: Option<String>,
    /// What to do about it.
    pub hint: Option<String>,
}

impl fmt::Display for GitHubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.info;
        write!(f, "GitHub: cannot {}: ", i.operation)?;
        match self.status {
            Some(s) => write!(f, "{} {} answered {s} {:?}", i.method, i.path, i.message)?,
            None => write!(f, "{} {} failed: {}", i.method, i.path, i.message)?,
        }
        if !i.details.is_empty() {
            write!(f, " ({})", i.details.join("; "))?;
        }
        if let Some(url) = &i.documentation_url {
            write!(f, " [docs: {url}]")?;
        }
        if let Some(id) = &i.request_id {
            write!(f, " [request {id}]")?;
        }
        if let Some(hint) = &i.hint {
            write!(f, ". {hint}")?;
        }
        Ok(())
    }
}

impl GitHubError {
    /// GitHub's message (or the transport error).
    pub fn message(&self) -> &str {
        &self.info.message
    }

    /// What to do about it.
    pub fn hint(&self) -> Option<&str> {
        self.info.hint.as_deref()
    }

    pub fn documentation_url(&self) -> Option<&str> {
        self.info.documentation_url.as_deref()
    }

    pub fn request_id(&self) -> Option<&str> {
        self.info.request_id.as_deref()
    }

    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    /// The message without its status, lowercased, for matching GitHub's wording.
    fn lower(&self) -> String {
        let mut s = self.info.message.to_ascii_lowercase();
        for d in &self.info.details {
            s.push(' ');
            s.push_str(&d.to_ascii_lowercase());
        }
        s
    }

    pub(crate) fn message_contains(&self, needle: &str) -> bool {
        self.lower().contains(&needle.to_ascii_lowercase())
    }

    /// Classifies an error answer and adds the hint. `permission` is what the operation needs.
    pub(crate) fn classify(mut self, permission: Option<Permission>) -> Self {
        let text = self.lower();
        let status = self.status.unwrap_or(0);
        let (kind, hint) = if status == 401 {
            (
                ErrorKind::Unauthorized,
                Some(
                    "the GitHub token is invalid or has expired (GitHub answers 401 \"Bad credentials\"). \
                     A workflow's GITHUB_TOKEN and an app installation token expire when the job ends or \
                     after an hour; a personal access token may have expired or been revoked: create a new \
                     one and update the secret"
                        .to_owned(),
                ),
            )
        } else if text.contains("refusing to allow") && text.contains("workflow") {
            (
                ErrorKind::WorkflowsPermission,
                Some(
                    "the commit changes files under .github/workflows, which needs the `workflows` permission \
                     (a GitHub App) or the `workflow` scope (a personal access token). A workflow's \
                     GITHUB_TOKEN can never have it: keep definitions out of .github/workflows (move the sync \
                     path), or give defsync a token that has it"
                        .to_owned(),
                ),
            )
        } else if text.contains("github actions is not permitted to create or approve pull requests") {
            (
                ErrorKind::ActionsCannotCreatePullRequests,
                Some(
                    "allow it in the repository (or organization) settings: Settings → Actions → General → \
                     Workflow permissions → \"Allow GitHub Actions to create and approve pull requests\"; or \
                     give defsync a token of a GitHub App or a person"
                        .to_owned(),
                ),
            )
        } else if text.contains("gh006")
            || text.contains("gh013")
            || text.contains("protected branch")
            || text.contains("repository rule violations")
            || text.contains("reference update failed")
        {
            (
                ErrorKind::BranchProtected,
                Some(
                    "branch protection or a ruleset refuses direct updates of this branch: deliver through a \
                     pull request (`--delivery pull-request`), or let the token bypass the rule"
                        .to_owned(),
                ),
            )
        } else if status == 422 && text.contains("not a fast forward") {
            (ErrorKind::NotFastForward, Some("the branch moved meanwhile: run again to re-plan on its new tip".into()))
        } else if status == 403 && text.contains("resource not accessible by") {
            let hint = match permission {
                Some(p) => format!(
                    "the token lacks the `{}` permission: add `{}` to the workflow's or job's `permissions:` \
                     block; for a GitHub App or a fine-grained token, grant \"{}\"{}",
                    p.workflow_entry(),
                    p.workflow_entry(),
                    p.fine_grained(),
                    if p == Permission::AdministrationRead {
                        " (a workflow's GITHUB_TOKEN cannot have it)"
                    } else {
                        ""
                    }
                ),
                None => "the token lacks a permission this request needs; see the documentation link".into(),
            };
            (ErrorKind::PermissionDenied, Some(hint))
        } else if status == 403 || status == 404 && permission.is_some() && self.info.method != "GET" {
            // GitHub answers 404, not 403, to a classic token without the `repo` scope writing to
            // a private repository, so a write's 404 is more often a scope than a typo.
            let hint = match permission {
                Some(p) => format!(
                    "the token may lack the `{}` permission (classic tokens: the `repo` scope; for dispatches \
                     also `workflow`), or the repository does not exist",
                    p.workflow_entry()
                ),
                None => "the token may lack a permission or scope".into(),
            };
            (if status == 403 { ErrorKind::PermissionDenied } else { ErrorKind::NotFound }, Some(hint))
        } else if status == 404 {
            (
                ErrorKind::NotFound,
                Some(
                    "check the owner/name and the branch; GitHub also answers 404 for a private repository the \
                     token cannot read"
                        .into(),
                ),
            )
        } else if status == 409 && text.contains("empty") {
            (ErrorKind::Rejected, Some("the repository is empty: push a first commit to it".into()))
        } else if status >= 500 {
            (ErrorKind::Server, Some("GitHub failed; see https://www.githubstatus.com and run again".into()))
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
    use super::*;

    fn err(status: u16, message: &str) -> GitHubError {
        GitHubError {
            kind: ErrorKind::Rejected,
            status: Some(status),
            info: Box::new(ErrorInfo {
                operation: "update refs/heads/main in o/r".into(),
                method: "PATCH".into(),
                path: "/repos/o/r/git/refs/heads/main".into(),
                message: message.into(),
                details: vec![],
                documentation_url: Some("https://docs.github.com/rest".into()),
                request_id: Some("0000:1".into()),
                hint: None,
            }),
        }
    }

    #[test]
    fn missing_permission_names_the_permissions_entry() {
        let e = err(403, "Resource not accessible by integration").classify(Some(Permission::PullRequestsWrite));
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
        let text = e.to_string();
        assert!(text.contains("pull-requests: write"), "{text}");
        assert!(text.contains("403"), "{text}");
        assert!(text.contains("request 0000:1"), "{text}");
    }

    #[test]
    fn gh006_suggests_pull_request_delivery() {
        let e = err(422, "Protected branch update failed for refs/heads/main. (GH006)")
            .classify(Some(Permission::ContentsWrite));
        assert_eq!(e.kind, ErrorKind::BranchProtected);
        assert!(e.to_string().contains("--delivery pull-request"));
    }

    #[test]
    fn workflow_files_need_the_workflows_permission() {
        let e = err(
            422,
            "refusing to allow a GitHub App to create or update workflow `.github/workflows/a.yml` without `workflows` permission",
        )
        .classify(Some(Permission::ContentsWrite));
        assert_eq!(e.kind, ErrorKind::WorkflowsPermission);
    }

    #[test]
    fn actions_pr_setting_is_named() {
        let e = err(403, "GitHub Actions is not permitted to create or approve pull requests.")
            .classify(Some(Permission::PullRequestsWrite));
        assert_eq!(e.kind, ErrorKind::ActionsCannotCreatePullRequests);
        assert!(e.to_string().contains("Allow GitHub Actions to create and approve pull requests"));
    }

    #[test]
    fn bad_credentials_says_expired_or_invalid() {
        let e = err(401, "Bad credentials").classify(None);
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert!(e.to_string().contains("invalid or has expired"));
    }
}
