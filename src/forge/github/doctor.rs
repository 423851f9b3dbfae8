//! What `defsync doctor` asks GitHub: the token's kind and scopes or permissions, access to the
//! repository, the target branch's rules, and whether Actions may open pull requests.
//!
//! Each check gives a result and, when something is missing, the fix. A check that GitHub will
//! not answer for this token says "unknown" and why, rather than guessing.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::client::{GitHub, RepoName, Req, ref_path};
use super::errors::{ErrorKind, GitHubError, Permission};
use crate::forge::{CommitVia, Delivery};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// Works, but worth knowing.
    Warn,
    /// Something a configured feature needs is missing.
    Fail,
    /// GitHub will not tell this token.
    Unknown,
    /// The check could not run, or does not apply; the result says why. Never an "ok".
    Skipped,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Warn => "warn",
            Outcome::Fail => "FAIL",
            Outcome::Unknown => "unknown",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One row of the doctor's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    pub outcome: Outcome,
    pub result: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn new(check: &str, outcome: Outcome, result: impl Into<String>) -> Self {
        Check { check: check.into(), outcome, result: result.into(), fix: None }
    }
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// The table: check → result → fix.
pub fn render_table(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.check.chars().count()).max().unwrap_or(0).max(5);
    let mut out = String::new();
    let _ = writeln!(out, "{:<width$}  {:<7}  result / fix", "check", "status");
    for c in checks {
        let _ = writeln!(out, "{:<width$}  {:<7}  {}", c.check, c.outcome.label(), crate::output::data(&c.result));
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "{:<width$}  {:<7}  fix: {}", "", "", crate::output::data(fix));
        }
    }
    out
}

/// The kind of a GitHub token, from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `ghp_`: a classic personal access token, with scopes.
    Classic,
    /// `github_pat_`: a fine-grained personal access token, with permissions.
    FineGrained,
    /// `ghs_`: a GitHub App installation token; a workflow's `GITHUB_TOKEN` is one too.
    Installation,
    /// `gho_`: an OAuth app's user token, with scopes.
    OAuth,
    /// `ghu_`: a GitHub App's user-to-server token.
    AppUser,
    Unknown,
}

impl TokenKind {
    pub fn of(token: &str) -> Self {
        let t = token.trim();
        if t.starts_with("ghp_") {
            TokenKind::Classic
        } else if t.starts_with("github_pat_") {
            TokenKind::FineGrained
        } else if t.starts_with("ghs_") {
            TokenKind::Installation
        } else if t.starts_with("gho_") {
            TokenKind::OAuth
        } else if t.starts_with("ghu_") {
            TokenKind::AppUser
        } else {
            TokenKind::Unknown
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            TokenKind::Classic => "classic personal access token (ghp_), scoped",
            TokenKind::FineGrained => "fine-grained personal access token (github_pat_), with permissions",
            TokenKind::Installation => {
                "GitHub App installation token (ghs_); a workflow's GITHUB_TOKEN is one, with the job's `permissions:`"
            }
            TokenKind::OAuth => "OAuth app token (gho_), scoped",
            TokenKind::AppUser => "GitHub App user token (ghu_), with the app's permissions",
            TokenKind::Unknown => "unrecognised format (older 40-hex tokens have no prefix)",
        }
    }

    fn has_scopes(self) -> bool {
        matches!(self, TokenKind::Classic | TokenKind::OAuth | TokenKind::Unknown)
    }
}

/// What the sync is configured to do, so only what it needs can fail.
#[derive(Debug, Clone)]
pub struct Needs<'a> {
    pub repo: &'a RepoName,
    /// The target branch; `None` for the repository's default branch.
    pub branch: Option<&'a str>,
    pub delivery: Delivery,
    pub commit_via: CommitVia,
    /// Whether the sync writes to GitHub at all (a platform-to-Git or bidirectional link).
    pub writes: bool,
}

#[derive(Deserialize)]
struct User {
    login: String,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
    default_branch: String,
    #[serde(default)]
    private: bool,
    permissions: Option<RepoPermissions>,
}

#[derive(Deserialize)]
struct RepoPermissions {
    #[serde(default)]
    push: bool,
    #[serde(default)]
    pull: bool,
    #[serde(default)]
    admin: bool,
}

#[derive(Deserialize)]
struct Branch {
    commit: BranchCommit,
    #[serde(default)]
    protected: bool,
}

#[derive(Deserialize)]
struct BranchCommit {
    sha: String,
}

#[derive(Deserialize)]
struct Rule {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct WorkflowPermissions {
    can_approve_pull_request_reviews: bool,
}

#[derive(Deserialize)]
struct Tree {
    tree: Vec<TreeItem>,
}

#[derive(Deserialize, Serialize)]
struct TreeItem {
    path: String,
    mode: String,
    #[serde(rename = "type")]
    kind: String,
    sha: String,
}

/// Runs every GitHub check in order; a check that cannot run because an earlier one failed is
/// left out.
pub async fn check_github(gh: &GitHub, token_kind: TokenKind, needs: &Needs<'_>) -> Vec<Check> {
    // The API row says ok only once the API has answered.
    let api_url = gh.options().api_url.clone();
    let answered = |out: &mut Vec<Check>| out.insert(0, Check::new("GitHub API", Outcome::Ok, api_url.clone()));
    let not_answered = |out: &mut Vec<Check>, e: &GitHubError| {
        out.insert(
            0,
            Check::new("GitHub API", Outcome::Fail, format!("could not reach {api_url}: {}", e.message()))
                .fix("check --github-api-url (GITHUB_API_URL) and the network"),
        );
        out.push(Check::new("repository and permissions", Outcome::Skipped, "could not check: the API did not answer"));
    };
    let unreachable =
        |e: &GitHubError| matches!(e.kind, ErrorKind::Transport | ErrorKind::Server | ErrorKind::Protocol);
    let mut out = Vec::new();
    let kind_outcome = if token_kind == TokenKind::Unknown { Outcome::Warn } else { Outcome::Ok };
    out.push(Check::new("token type", kind_outcome, token_kind.describe()));

    // Who the token is, and its scopes. Installation tokens cannot read /user.
    if token_kind != TokenKind::Installation {
        match gh.call(&Req::get("/user".into(), "read the token's user")).await {
            Ok(answer) => {
                let login = gh
                    .parse::<User>(&Req::get("/user".into(), "read the token's user"), &answer)
                    .map(|u| u.login)
                    .unwrap_or_else(|_| "?".into());
                out.push(Check::new("token user", Outcome::Ok, login));
                if token_kind.has_scopes() {
                    out.push(scopes_check(answer.header("x-oauth-scopes"), needs));
                }
            }
            Err(e) if e.kind == ErrorKind::Unauthorized => {
                answered(&mut out);
                out.push(failed("token", &e));
                return out;
            }
            Err(e) if unreachable(&e) => {
                not_answered(&mut out, &e);
                return out;
            }
            Err(e) => out.push(Check::new("token user", Outcome::Unknown, e.message().to_owned())),
        }
    }

    let repo_req = Req::get(needs.repo.path(), format!("read repository {}", needs.repo));
    let repo: Repository = match gh.call(&repo_req).await {
        Ok(answer) => match gh.parse(&repo_req, &answer) {
            Ok(r) => r,
            Err(e) => {
                answered(&mut out);
                out.push(failed("repository read access", &e));
                return out;
            }
        },
        Err(e) if unreachable(&e) => {
            not_answered(&mut out, &e);
            return out;
        }
        Err(e) => {
            answered(&mut out);
            out.push(failed("repository read access", &e));
            return out;
        }
    };
    answered(&mut out);
    let visibility = if repo.private { "private" } else { "public" };
    out.push(Check::new("repository read access", Outcome::Ok, format!("{} ({visibility})", repo.full_name)));

    let branch = needs.branch.unwrap_or(&repo.default_branch).to_owned();
    let branch_req = Req::get(
        format!("{}/branches/{}", needs.repo.path(), ref_path(&branch)),
        format!("read branch {branch} of {}", needs.repo),
    );
    let branch_info: Option<Branch> = match gh.call_json(&branch_req).await {
        Ok(b) => Some(b),
        Err(e) => {
            out.push(failed("target branch", &e).fix(format!("create branch {branch} or pass --branch")));
            None
        }
    };

    out.push(write_check(gh, &repo, branch_info.as_ref(), needs).await);
    if let Some(b) = &branch_info {
        out.extend(rules_checks(gh, &branch, b, needs).await);
    }
    if needs.delivery == Delivery::PullRequest && needs.writes {
        out.push(actions_pr_check(gh, token_kind, needs).await);
    }
    out
}

fn failed(check: &str, e: &GitHubError) -> Check {
    let mut result = match e.status {
        Some(s) => format!("{s} {}", e.message()),
        None => e.message().to_owned(),
    };
    if let Some(id) = &e.info.request_id {
        let _ = write!(result, " [request {id}]");
    }
    let c = Check::new(check, Outcome::Fail, result);
    match &e.info.hint {
        Some(h) => c.fix(h.clone()),
        None => c,
    }
}

fn scopes_check(header: Option<&str>, needs: &Needs<'_>) -> Check {
    let scopes: Vec<&str> = header.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let shown = if scopes.is_empty() { "(none)".to_owned() } else { scopes.join(", ") };
    let has = |s: &str| scopes.contains(&s);
    if needs.writes && !has("repo") && !has("public_repo") {
        return Check::new("token scopes", Outcome::Fail, shown)
            .fix("give the token the `repo` scope (`public_repo` for a public repository)");
    }
    Check::new("token scopes", Outcome::Ok, shown)
}

/// Write access: the repository's `permissions` where GitHub reports them; otherwise a probe
/// that writes nothing visible (a create-tree that rebuilds an existing tree).
async fn write_check(gh: &GitHub, repo: &Repository, branch: Option<&Branch>, needs: &Needs<'_>) -> Check {
    let name = "repository write access";
    let missing = if needs.writes { Outcome::Fail } else { Outcome::Warn };
    let fix = "add `contents: write` to the workflow's `permissions:` (or grant \"Contents: Read and write\" to the \
               app or fine-grained token; classic tokens: the `repo` scope)";
    if let Some(p) = &repo.permissions {
        let role = if p.admin {
            "admin"
        } else if p.push {
            "write"
        } else if p.pull {
            "read"
        } else {
            "none"
        };
        return if p.push {
            Check::new(name, Outcome::Ok, format!("yes (role: {role})"))
        } else {
            Check::new(name, missing, format!("no (role: {role})")).fix(fix)
        };
    }
    let Some(branch) = branch else {
        return Check::new(name, Outcome::Unknown, "the token's permissions are not reported and no branch to probe");
    };
    match probe_write(gh, needs.repo, &branch.commit.sha).await {
        Ok(Some(true)) => Check::new(name, Outcome::Ok, "yes (a create-tree probe that changes nothing succeeded)"),
        Ok(Some(false)) => Check::new(name, missing, "no (a create-tree probe was refused)").fix(fix),
        Ok(None) => {
            Check::new(name, Outcome::Unknown, "the token's permissions are not reported; nothing to probe with")
        }
        Err(e) => Check::new(name, Outcome::Unknown, format!("probe failed: {}", e.message())),
    }
}

/// `Some(true)` when a create-tree that rebuilds the tip's tree is allowed.
async fn probe_write(gh: &GitHub, repo: &RepoName, commit: &str) -> Result<Option<bool>, GitHubError> {
    #[derive(Deserialize)]
    struct Commit {
        tree: Sha,
    }
    #[derive(Deserialize)]
    struct Sha {
        sha: String,
    }
    #[derive(Serialize)]
    struct NewTree<'a> {
        base_tree: &'a str,
        tree: [&'a TreeItem; 1],
    }
    let c: Commit =
        gh.call_json(&Req::get(format!("{}/git/commits/{commit}", repo.path()), "read the branch tip")).await?;
    let tree: Tree =
        gh.call_json(&Req::get(format!("{}/git/trees/{}", repo.path(), c.tree.sha), "read the tip's tree")).await?;
    let Some(item) = tree.tree.iter().find(|i| i.kind == "blob") else {
        return Ok(None);
    };
    let req = Req::post(
        format!("{}/git/trees", repo.path()),
        &NewTree { base_tree: &c.tree.sha, tree: [item] },
        "probe write access",
    )
    .needs(Permission::ContentsWrite);
    match gh.call(&req).await {
        Ok(_) => Ok(Some(true)),
        Err(e) if matches!(e.status, Some(403 | 404)) => Ok(Some(false)),
        Err(e) => Err(e),
    }
}

/// The branch's rules (rulesets) and classic protection, against the configured delivery.
async fn rules_checks(gh: &GitHub, branch: &str, info: &Branch, needs: &Needs<'_>) -> Vec<Check> {
    let mut out = Vec::new();
    let req = Req::get(
        format!("{}/rules/branches/{}", needs.repo.path(), ref_path(branch)),
        format!("read the rules of branch {branch}"),
    );
    let rules: Vec<Rule> = match gh.call_json(&req).await {
        Ok(r) => r,
        Err(e) => {
            out.push(Check::new("branch rules", Outcome::Unknown, format!("cannot read them: {}", e.message())));
            return out;
        }
    };
    let kinds: Vec<&str> = rules.iter().map(|r| r.kind.as_str()).collect();
    let has = |k: &str| kinds.contains(&k);
    let direct = needs.delivery == Delivery::Commit && needs.writes;
    let blocks_push =
        has("pull_request") || has("update") || has("required_status_checks") || has("required_deployments");
    let shown = if kinds.is_empty() { "none".to_owned() } else { kinds.join(", ") };
    let title = format!("rules of {branch}");
    if blocks_push && direct {
        out.push(
            Check::new(&title, Outcome::Fail, format!("{shown}: a direct push to {branch} is refused"))
                .fix("deliver through a pull request (`--delivery pull-request`), or let the token bypass the ruleset"),
        );
    } else if has("required_signatures") && needs.commit_via == CommitVia::Git && direct {
        out.push(
            Check::new(&title, Outcome::Fail, format!("{shown}: commits must be signed; git pushes unsigned ones"))
                .fix("use `--commit-via api`: GitHub signs the commits it creates"),
        );
    } else {
        let note = if blocks_push { " (pull-request delivery is fine)" } else { "" };
        out.push(Check::new(&title, Outcome::Ok, format!("{shown}{note}")));
    }
    if info.protected {
        // Classic protection is not among the rules, and its details need an admin's token.
        let outcome = if direct { Outcome::Warn } else { Outcome::Ok };
        let c = Check::new(&format!("protection of {branch}"), outcome, "classic branch protection is on");
        out.push(if direct {
            c.fix("if it requires reviews or status checks, use `--delivery pull-request`")
        } else {
            c
        });
    }
    out
}

async fn actions_pr_check(gh: &GitHub, token_kind: TokenKind, needs: &Needs<'_>) -> Check {
    let name = "Actions may open PRs";
    let req = Req::get(
        format!("{}/actions/permissions/workflow", needs.repo.path()),
        "read the repository's workflow permissions",
    )
    .needs(Permission::AdministrationRead);
    let setting = "Settings → Actions → General → Workflow permissions → \"Allow GitHub Actions to create and \
                   approve pull requests\"";
    match gh.call_json::<WorkflowPermissions>(&req).await {
        Ok(p) if p.can_approve_pull_request_reviews => Check::new(name, Outcome::Ok, "yes"),
        Ok(_) => {
            // The setting binds a workflow's GITHUB_TOKEN only.
            let outcome = if token_kind == TokenKind::Installation { Outcome::Fail } else { Outcome::Ok };
            Check::new(name, outcome, "no (binds a workflow's GITHUB_TOKEN only)").fix(format!("turn on {setting}"))
        }
        Err(e) => Check::new(
            name,
            Outcome::Unknown,
            format!(
                "GitHub answered {} (reading the setting needs administration access, which a GITHUB_TOKEN cannot have)",
                e.status.map(|s| s.to_string()).unwrap_or_else(|| e.message().to_owned())
            ),
        )
        .fix(format!("check {setting}")),
    }
}
