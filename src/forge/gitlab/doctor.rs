//! What `defsync doctor --forge gitlab` asks GitLab: the instance, the token's type, scopes and
//! expiry, the role on the project, the target branch's protection, and whether the job token
//! may push.
//!
//! Each check gives a result and, when something is missing, the fix, keyed to the failures
//! people meet: `write_repository` without `api`, a Developer on a protected branch, an expired
//! token, a private CA.

use serde::Deserialize;

use super::client::{GitLab, Req, TokenKind, segment};
use super::commit::Project;
use super::errors::{ErrorKind, GitLabError};
use crate::forge::github::doctor::{Check, Outcome};
use crate::forge::{CommitVia, Delivery};

/// What the sync is configured to do, which decides what the token needs.
#[derive(Debug, Clone, Copy)]
pub struct Needs<'a> {
    pub project: &'a Project,
    /// The target branch; `None` for the project's default branch.
    pub branch: Option<&'a str>,
    pub delivery: Delivery,
    pub commit_via: CommitVia,
    /// Whether pulls write to Git at all (not with `git-to-platform`).
    pub writes: bool,
    /// Where the API URL came from, for the instance row.
    pub url_source: &'a str,
    /// Today, `YYYY-MM-DD`, to judge the expiry.
    pub today: &'a str,
}

#[derive(Deserialize)]
struct SelfToken {
    id: u64,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    revoked: Option<bool>,
}

#[derive(Deserialize)]
struct ListedToken {
    id: u64,
}

#[derive(Deserialize)]
struct ProjectInfo {
    #[serde(default)]
    path_with_namespace: Option<String>,
    #[serde(default)]
    default_branch: Option<String>,
    #[serde(default)]
    permissions: Option<Permissions>,
    #[serde(default)]
    ci_push_repository_for_job_token_allowed: Option<bool>,
}

#[derive(Deserialize)]
struct Permissions {
    project_access: Option<Access>,
    group_access: Option<Access>,
}

#[derive(Deserialize)]
struct Access {
    access_level: Level,
}

/// GitLab documents access levels as numbers; its OpenAPI description types them as strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Level {
    Number(u32),
    Text(String),
}

impl Level {
    fn value(&self) -> u32 {
        match self {
            Level::Number(n) => *n,
            Level::Text(s) => s.parse().unwrap_or(0),
        }
    }
}

#[derive(Deserialize)]
struct ProtectedBranch {
    #[serde(default)]
    push_access_levels: Vec<PushLevel>,
}

#[derive(Deserialize)]
struct PushLevel {
    access_level: Option<u32>,
    #[serde(default)]
    user_id: Option<u64>,
    #[serde(default)]
    group_id: Option<u64>,
    #[serde(default)]
    deploy_key_id: Option<u64>,
}

/// GitLab's role names by access level.
pub fn role_name(level: u32) -> &'static str {
    match level {
        0 => "no access",
        5 => "Minimal access",
        10 => "Guest",
        15 => "Planner",
        20 => "Reporter",
        30 => "Developer",
        40 => "Maintainer",
        50 => "Owner",
        _ => "a custom role",
    }
}

fn failed(check: &str, e: &GitLabError) -> Check {
    let mut c = Check::new(
        check,
        Outcome::Fail,
        format!("{}: {}", e.status.map_or("no answer".into(), |s| s.to_string()), e.message()),
    );
    if let Some(h) = e.hint() {
        c = c.fix(h);
    }
    c
}

/// Runs the GitLab checks for `needs` with the client's token.
pub async fn check_gitlab(gl: &GitLab, needs: &Needs<'_>) -> Vec<Check> {
    let mut out =
        vec![Check::new("GitLab instance", Outcome::Ok, format!("{} ({})", gl.server_url(), needs.url_source))];
    let api_needed = needs.writes && (needs.commit_via == CommitVia::Api || needs.delivery == Delivery::PullRequest);
    let push_needed = needs.writes && needs.commit_via == CommitVia::Git;
    let kind = gl.options().token_kind;
    let mut token_id = None;
    if kind == TokenKind::Job {
        let c = Check::new(
            "GitLab token",
            if api_needed { Outcome::Fail } else { Outcome::Warn },
            "CI_JOB_TOKEN (a CI/CD job token)",
        );
        out.push(if api_needed {
            c.fix(
                "a job token cannot make API commits or merge requests: set GITLAB_TOKEN (a masked CI/CD variable) to a project \
                 access token with the `api` scope and the Developer role (Maintainer to commit onto a protected branch)",
            )
        } else {
            c.fix("a project access token (GITLAB_TOKEN) is what defsync documents; a job token only fetches and, where allowed, pushes")
        });
    } else {
        match gl.call_json::<SelfToken>(&Req::get("/personal_access_tokens/self".into(), "read the token")).await {
            Err(e) if e.kind == ErrorKind::Transport => {
                out.push(failed("GitLab instance", &e));
                return out;
            }
            Err(e) => {
                out.push(failed("GitLab token", &e));
                if e.kind == ErrorKind::Unauthorized {
                    return out;
                }
            }
            Ok(t) => {
                token_id = Some(t.id);
                let state = if t.revoked == Some(true) {
                    "revoked"
                } else if t.active == Some(false) {
                    "inactive"
                } else {
                    "active"
                };
                out.push(Check::new(
                    "token scopes",
                    scope_outcome(&t.scopes, api_needed, push_needed),
                    format!("{} ({state})", if t.scopes.is_empty() { "none".into() } else { t.scopes.join(", ") }),
                ));
                let last = out.len() - 1;
                if out[last].outcome == Outcome::Fail {
                    out[last] = out[last].clone().fix(if api_needed {
                        "`write_repository` allows `git push` but not API commits or merge requests, which need `api`: \
                         create a token with the `api` scope (or use --commit-via git --delivery commit)"
                    } else {
                        "`git push` needs `write_repository` (or `api`): create a token with it"
                    });
                }
                out.push(expiry(t.expires_at.as_deref(), needs.today));
            }
        }
    }

    let project: ProjectInfo =
        match gl.call_json(&Req::get(needs.project.path(), format!("read project {}", needs.project))).await {
            Ok(p) => p,
            // A job token reaches few endpoints; where it cannot read the project, say what is
            // unknown rather than fail.
            Err(e) if kind == TokenKind::Job && matches!(e.status, Some(401 | 403 | 404)) => {
                out.push(Check::new("role on the project", Outcome::Unknown, "a job token may not read the project"));
                ProjectInfo {
                    path_with_namespace: None,
                    default_branch: None,
                    permissions: None,
                    ci_push_repository_for_job_token_allowed: None,
                }
            }
            Err(e) => {
                out.push(failed("project access", &e));
                return out;
            }
        };
    let level = project.permissions.as_ref().map(|p| {
        let l = |a: &Option<Access>| a.as_ref().map_or(0, |a| a.access_level.value());
        l(&p.project_access).max(l(&p.group_access))
    });
    let name = project.path_with_namespace.clone().unwrap_or_else(|| needs.project.0.clone());
    match level {
        Some(level) => {
            let outcome = if needs.writes && level < 30 { Outcome::Fail } else { Outcome::Ok };
            let c = Check::new("role on the project", outcome, format!("{} ({level}) on {name}", role_name(level)));
            out.push(if outcome == Outcome::Fail {
                c.fix(
                    "pull commits and merge requests need at least Developer: give the token's bot (or user) that role",
                )
            } else {
                c
            });
        }
        None if kind == TokenKind::Job => {}
        None => out.push(Check::new("role on the project", Outcome::Unknown, format!("GitLab did not say for {name}"))),
    }

    // Whether the token is the project's own access token: only a Maintainer may list them.
    if let Some(id) = token_id {
        let listed: Result<Vec<ListedToken>, _> = gl
            .call_json(&Req::get(format!("{}/access_tokens", needs.project.path()), "list the project's access tokens"))
            .await;
        let kind = match listed {
            Ok(list) if list.iter().any(|t| t.id == id) => "a project access token of this project".to_owned(),
            Ok(_) => "a personal or group access token".to_owned(),
            Err(_) => {
                "a personal, group or project access token (listing the project's tokens needs Maintainer)".to_owned()
            }
        };
        out.push(Check::new("token type", Outcome::Ok, kind));
    }

    let branch = needs.branch.map(str::to_owned).or(project.default_branch.clone()).unwrap_or_else(|| "main".into());
    if needs.writes && needs.delivery == Delivery::Commit && level.is_some() {
        let req = Req::get(
            format!("{}/protected_branches/{}", needs.project.path(), segment(&branch)),
            format!("read the protection of {branch}"),
        );
        match gl.call_json::<ProtectedBranch>(&req).await {
            Err(e) if e.is_not_found() => {
                out.push(Check::new("branch protection", Outcome::Ok, format!("{branch} is not protected")))
            }
            Err(e) => out.push(failed("branch protection", &e)),
            Ok(p) => {
                let roles: Vec<u32> = p
                    .push_access_levels
                    .iter()
                    .filter(|l| l.user_id.is_none() && l.group_id.is_none() && l.deploy_key_id.is_none())
                    .filter_map(|l| l.access_level)
                    .collect();
                let least = roles.iter().copied().filter(|l| *l > 0).min();
                let who = least.map_or("no role".to_owned(), |l| format!("{}s and above", role_name(l)));
                let allowed = match (least, level) {
                    (Some(least), Some(level)) => level >= least,
                    _ => false,
                };
                let c = Check::new(
                    "branch protection",
                    if allowed { Outcome::Ok } else { Outcome::Fail },
                    format!("{branch} is protected: {who} may push"),
                );
                out.push(if allowed {
                    c
                } else {
                    c.fix(format!(
                        "the token's role may not push to {branch} (a Developer cannot push to a protected branch): deliver \
                         through a merge request (`--delivery merge-request`), or allow the role in Settings → Repository → \
                         Protected branches, or use a Maintainer's token"
                    ))
                });
            }
        }
    }

    if push_needed && kind == TokenKind::Job {
        let c = match project.ci_push_repository_for_job_token_allowed {
            Some(true) => {
                Check::new("job token may push", Outcome::Ok, "\"Allow Git push requests to the repository\" is on")
            }
            Some(false) => {
                Check::new("job token may push", Outcome::Fail, "\"Allow Git push requests to the repository\" is off")
            }
            None => {
                Check::new("job token may push", Outcome::Unknown, "GitLab does not show the setting to this token")
            }
        };
        out.push(if c.outcome == Outcome::Ok {
            c
        } else {
            c.fix(
                "a job token may push only on GitLab 17.2 and later, when a Maintainer turns on Settings → CI/CD → Job \
                 token permissions → \"Allow Git push requests to the repository\"; or set GITLAB_TOKEN to a project access \
                 token with `write_repository`",
            )
        });
    }
    out
}

fn scope_outcome(scopes: &[String], api_needed: bool, push_needed: bool) -> Outcome {
    let has = |s: &str| scopes.iter().any(|x| x == s);
    if api_needed && !has("api") {
        return Outcome::Fail;
    }
    if push_needed && !has("write_repository") && !has("api") {
        return Outcome::Fail;
    }
    Outcome::Ok
}

/// The expiry row: fail when expired, warn within 14 days or without an expiry date.
fn expiry(expires_at: Option<&str>, today: &str) -> Check {
    // GitLab answers a date; its OpenAPI description says date-time: the day is what counts.
    match expires_at.map(|d| d.get(..10).unwrap_or(d)) {
        None => Check::new("token expiry", Outcome::Warn, "never expires")
            .fix("prefer a token with an expiry date, renewed on a schedule"),
        Some(date) if date < today => Check::new("token expiry", Outcome::Fail, format!("expired on {date}"))
            .fix("create a new token and update the GITLAB_TOKEN CI/CD variable"),
        Some(date) => {
            let soon = days_between(today, date).is_some_and(|d| d <= 14);
            let c = Check::new(
                "token expiry",
                if soon { Outcome::Warn } else { Outcome::Ok },
                format!("expires on {date}"),
            );
            if soon { c.fix("renew the token before it expires; pulls fail with 401 afterwards") } else { c }
        }
    }
}

/// Days from `a` to `b`, both `YYYY-MM-DD`.
fn days_between(a: &str, b: &str) -> Option<i64> {
    fn days(d: &str) -> Option<i64> {
        let mut p = d.get(..10)?.split('-').map(|x| x.parse::<i64>().ok());
        let (y, m, d) = (p.next()??, p.next()??, p.next()??);
        // Days from civil (Howard Hinnant's algorithm).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(era * 146_097 + doe - 719_468)
    }
    Some(days(b)? - days(a)?)
}

/// Today as `YYYY-MM-DD` (UTC).
pub fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_rows() {
        assert_eq!(expiry(Some("2026-01-01"), "2026-02-01").outcome, Outcome::Fail);
        assert_eq!(expiry(Some("2026-02-10"), "2026-02-01").outcome, Outcome::Warn);
        assert_eq!(expiry(Some("2027-02-10"), "2026-02-01").outcome, Outcome::Ok);
        assert_eq!(expiry(None, "2026-02-01").outcome, Outcome::Warn);
        assert_eq!(days_between("2024-02-28", "2024-03-01"), Some(2));
        assert_eq!(today().len(), 10);
    }

    #[test]
    fn write_repository_alone_cannot_deliver_through_the_api() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(scope_outcome(&s(&["write_repository"]), true, false), Outcome::Fail);
        assert_eq!(scope_outcome(&s(&["write_repository"]), false, true), Outcome::Ok);
        assert_eq!(scope_outcome(&s(&["api"]), true, true), Outcome::Ok);
    }
}
