//! `defsync doctor`: check everything a sync needs, and print check → result → fix.
//!
//! It reads the same environment as a sync (`DEFSYNC_*`, `GITHUB_*`), so running it as a step
//! just before the sync checks exactly what the sync will use. Secrets are never shown: not the
//! API key, not the token, not the checkout's credential header.

use std::path::Path;
use std::process::Command;

use clap::Args;

use crate::cli::{DirectionArg, PlatformArgs};
use crate::forge::github::doctor::{Check, Needs, Outcome, TokenKind, check_github, render_table};
use crate::forge::github::{DEFAULT_API_URL, GitHub, GitHubOptions, RepoName};
use crate::forge::{CommitVia, Delivery};

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// The platform, its key and the project, exactly as a sync takes them.
    #[command(flatten)]
    pub platform: PlatformArgs,
    /// The repository, as owner/name (default: GITHUB_REPOSITORY).
    #[arg(long, env = "DEFSYNC_GITHUB_REPOSITORY")]
    pub repository: Option<String>,
    /// The target branch (default: the repository's default branch).
    #[arg(long, env = "DEFSYNC_BRANCH")]
    pub branch: Option<String>,
    /// The GitHub token the sync uses (default: GITHUB_TOKEN).
    #[arg(long, env = "DEFSYNC_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,
    /// GitHub's API root; GitHub Enterprise Server: https://HOST/api/v3.
    #[arg(long, env = "GITHUB_API_URL", default_value = DEFAULT_API_URL)]
    pub github_api_url: String,
    /// How pulls deliver their commit.
    #[arg(long, env = "DEFSYNC_DELIVERY", value_enum, default_value = "commit")]
    pub delivery: Delivery,
    /// How pulls make their commit.
    #[arg(long, env = "DEFSYNC_COMMIT_VIA", value_enum, default_value = "git")]
    pub commit_via: CommitVia,
    /// The direction of the link; `git-to-platform` never writes to GitHub.
    #[arg(long, env = "DEFSYNC_DIRECTION", value_enum, default_value = "bidirectional")]
    pub direction: DirectionArg,
    /// Print the checks as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// The forge, and on GitLab where to reach it; the token is read from GITLAB_TOKEN (or
    /// DEFSYNC_GITLAB_TOKEN, else CI_JOB_TOKEN).
    #[command(flatten)]
    pub gitlab: crate::cli::GitLabArgs,
}

/// Returns the process exit status: 1 when something a configured feature needs is missing.
pub async fn run(args: &DoctorArgs) -> i32 {
    let mut checks = platform_checks(args).await;
    checks.extend(git_checks(args, Path::new(".")));
    match crate::cli::ForgeArg::resolve(args.gitlab.forge) {
        crate::cli::ForgeArg::Github => checks.extend(github_checks(args).await),
        crate::cli::ForgeArg::Gitlab => checks.extend(gitlab_checks(args).await),
    }
    if args.json {
        match serde_json::to_string_pretty(&checks) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("error: cannot write the JSON: {e}"),
        }
    } else {
        print!("{}", render_table(&checks));
    }
    let failures = checks.iter().filter(|c| c.outcome == Outcome::Fail).count();
    if failures == 0 {
        crate::error::exit::OK
    } else {
        eprintln!("doctor: {failures} check(s) failed");
        crate::error::exit::FAILURE
    }
}

async fn platform_checks(args: &DoctorArgs) -> Vec<Check> {
    let Some(platform) = args.platform.platform.clone().filter(|p| !p.is_empty()) else {
        return vec![
            Check::new("platform", Outcome::Fail, "not configured").fix("pass --platform or set DEFSYNC_PLATFORM"),
        ];
    };
    let mut out = Vec::new();
    let opened = match crate::cli::sync::open_platform(&args.platform) {
        Ok(p) => p,
        Err(e) => {
            out.push(Check::new("platform", Outcome::Fail, e.to_string()));
            return out;
        }
    };
    out.push(Check::new("platform", Outcome::Ok, platform_location(&platform)));
    let key =
        if args.platform.api_key.as_deref().is_some_and(|k| !k.is_empty()) { "set (not shown)" } else { "not set" };
    out.push(Check::new("platform API key", Outcome::Ok, key));
    let Some(project) = args.platform.project.clone().filter(|p| !p.is_empty()) else {
        out.push(Check::new("project", Outcome::Fail, "not configured").fix("pass --project or set DEFSYNC_PROJECT"));
        return out;
    };
    match opened.project(&project).await {
        Ok((p, _)) => {
            let head = match &p.head {
                Some(c) => format!("head {} (seq {})", c.id, c.seq),
                None => "no commits yet".into(),
            };
            out.push(Check::new("project access", Outcome::Ok, format!("{} {:?}, {head}", p.id, p.name)));
        }
        Err(e) => out.push(
            Check::new("project access", Outcome::Fail, e.to_string())
                .fix("check the project ID and that the API key may read it"),
        ),
    }
    out
}

/// The platform's address without any credentials a URL might carry.
fn platform_location(platform: &str) -> String {
    match platform.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map(|(_, host)| host).unwrap_or(rest);
            format!("{scheme}://{rest}")
        }
        None => format!("store {platform}"),
    }
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn git_checks(args: &DoctorArgs, dir: &Path) -> Vec<Check> {
    let writes_git = args.direction != DirectionArg::GitToPlatform;
    let mut out = Vec::new();
    if git(dir, &["rev-parse", "--is-inside-work-tree"]).as_deref() != Some("true") {
        out.push(
            Check::new("checkout", Outcome::Fail, "not inside a Git work tree")
                .fix("run defsync in the repository's checkout (actions/checkout)"),
        );
        return out;
    }
    out.push(Check::new("checkout", Outcome::Ok, "a Git work tree"));
    let depth = match git(dir, &["rev-parse", "--is-shallow-repository"]).as_deref() {
        Some("true") => "shallow (fine: defsync fetches the tip it needs)",
        Some(_) => "full history",
        None => "unknown",
    };
    out.push(Check::new("checkout depth", Outcome::Ok, depth));

    // Only the names of the keys are read back: their values are credentials.
    let keys: Vec<String> = git(dir, &["config", "--name-only", "--get-regexp", r"^http\..*\.extraheader$"])
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let helper = git(dir, &["config", "--get", "credential.helper"]).is_some_and(|h| !h.is_empty());
    let needs_push = writes_git && args.commit_via == CommitVia::Git;
    let origin = git(dir, &["remote", "get-url", "origin"]);
    let unchecked = origin.as_deref().and_then(credentials_unchecked);
    let gitlab = crate::cli::ForgeArg::resolve(args.gitlab.forge) == crate::cli::ForgeArg::Gitlab;
    let token = if gitlab {
        crate::forge::gitlab::token_from_env().is_some()
    } else {
        args.github_token.as_deref().is_some_and(|t| !t.is_empty())
    };
    let check = if token && origin.as_deref().is_some_and(|u| u.to_ascii_lowercase().starts_with("https://")) {
        Check::new(
            "push credentials",
            Outcome::Ok,
            format!(
                "a {} token is given: defsync hands it to its own git fetch and push through the environment (value not shown)",
                if gitlab { "GitLab" } else { "GitHub" }
            ),
        )
    } else if !keys.is_empty() {
        Check::new(
            "push credentials",
            Outcome::Ok,
            format!("{} is set (as actions/checkout does; value not shown)", keys.join(", ")),
        )
    } else if helper {
        Check::new("push credentials", Outcome::Ok, "a credential helper is configured")
    } else if let Some(why) = unchecked {
        Check::new("push credentials", Outcome::Skipped, why)
    } else if needs_push {
        Check::new("push credentials", Outcome::Fail, "no http.<server>.extraheader and no credential helper").fix(
            "give defsync a token that may push (the action's github-token input, or DEFSYNC_GITHUB_TOKEN, with `permissions: contents: write`), or use `--commit-via api`",
        )
    } else {
        Check::new("push credentials", Outcome::Ok, "none (not needed: commits go through the API)")
    };
    out.push(check);
    out
}

/// Why the push credentials of an origin are not checked, for origins that take none over HTTP:
/// a local path needs none, and SSH keys are the SSH agent's business.
fn credentials_unchecked(url: &str) -> Option<&'static str> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        None
    } else if lower.contains("://")
        || url.split_once(':').is_some_and(|(host, _)| host.len() > 1 && !host.contains('/'))
    {
        Some("not checked: the origin is not reached over HTTP(S) (SSH keys and such are not visible here)")
    } else {
        Some("not needed: the origin is a local path")
    }
}

async fn github_checks(args: &DoctorArgs) -> Vec<Check> {
    let token = args
        .github_token
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| std::env::var("GITHUB_TOKEN").ok().filter(|t| !t.is_empty()));
    let writes_git = args.direction != DirectionArg::GitToPlatform;
    let token_needed = writes_git && (args.commit_via == CommitVia::Api || args.delivery == Delivery::PullRequest);
    let Some(token) = token else {
        let outcome = if token_needed { Outcome::Fail } else { Outcome::Ok };
        let c = Check::new("GitHub token", outcome, "not configured");
        return vec![if token_needed {
            c.fix("pass --github-token or set DEFSYNC_GITHUB_TOKEN (e.g. to ${{ github.token }})")
        } else {
            c.fix("optional with --commit-via git and --delivery commit; set it to check permissions and branch rules")
        }];
    };
    let repository = args
        .repository
        .clone()
        .filter(|r| !r.is_empty())
        .or_else(|| std::env::var("GITHUB_REPOSITORY").ok().filter(|r| !r.is_empty()));
    let Some(repository) = repository else {
        return vec![
            Check::new("GitHub repository", Outcome::Fail, "not configured")
                .fix("pass --repository owner/name or set DEFSYNC_GITHUB_REPOSITORY"),
        ];
    };
    let repo = match RepoName::parse(&repository) {
        Ok(r) => r,
        Err(e) => return vec![Check::new("GitHub repository", Outcome::Fail, e.to_string())],
    };
    let mut options = GitHubOptions::new(token.clone(), args.github_api_url.clone());
    // A doctor answers now or says it could not: no long rate-limit waits.
    options.retries = 1;
    options.max_rate_limit_wait = std::time::Duration::from_secs(5);
    let gh = match GitHub::new(options) {
        Ok(g) => g,
        Err(e) => return vec![Check::new("GitHub client", Outcome::Fail, format!("{e:#}"))],
    };
    let needs = Needs {
        repo: &repo,
        branch: args.branch.as_deref().filter(|b| !b.is_empty()),
        delivery: args.delivery,
        commit_via: args.commit_via,
        writes: writes_git,
    };
    check_github(&gh, TokenKind::of(&token), &needs).await
}

/// The GitLab rows: the instance, the token, the role, the branch's protection.
async fn gitlab_checks(args: &DoctorArgs) -> Vec<Check> {
    use crate::forge::gitlab::{GitLab, Project, doctor};
    let writes = args.direction != DirectionArg::GitToPlatform;
    let api_needed = writes && (args.commit_via == CommitVia::Api || args.delivery == Delivery::PullRequest);
    let Some(mut options) = crate::cli::sync::gitlab_options(&args.gitlab) else {
        let c = Check::new("GitLab token", if api_needed { Outcome::Fail } else { Outcome::Ok }, "not configured");
        return vec![if api_needed {
            c.fix("set GITLAB_TOKEN (a masked CI/CD variable) to a project access token with the `api` scope")
        } else {
            c.fix("optional with --commit-via git and --delivery commit; set GITLAB_TOKEN to check scopes and branch rules")
        }];
    };
    let project = crate::cli::sync::gitlab_project(&args.gitlab, "");
    if project.is_empty() {
        return vec![
            Check::new("GitLab project", Outcome::Fail, "not configured")
                .fix("pass --gitlab-project (an ID or group/name) or run inside a job (CI_PROJECT_ID)"),
        ];
    }
    // A doctor answers now or says it could not.
    options.retries = 1;
    options.max_rate_limit_wait = std::time::Duration::from_secs(5);
    let url_source = if args.gitlab.gitlab_url.as_deref().is_some_and(|u| !u.is_empty()) {
        "--gitlab-url"
    } else if std::env::var("CI_API_V4_URL").is_ok_and(|u| !u.is_empty()) {
        "CI_API_V4_URL"
    } else {
        "the default; pass --gitlab-url for a self-managed instance"
    };
    let gl = match GitLab::new(options) {
        Ok(g) => g,
        Err(e) => return vec![Check::new("GitLab client", Outcome::Fail, format!("{e:#}"))],
    };
    let project = Project(project);
    let today = doctor::today();
    let needs = doctor::Needs {
        project: &project,
        branch: args.branch.as_deref().filter(|b| !b.is_empty()),
        delivery: args.delivery,
        commit_via: args.commit_via,
        writes,
        url_source,
        today: &today,
    };
    doctor::check_gitlab(&gl, &needs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_urls_lose_their_credentials() {
        assert_eq!(platform_location("https://u:p@example.com/x"), "https://example.com/x");
        assert_eq!(platform_location("/tmp/s.db"), "store /tmp/s.db");
    }

    #[test]
    fn push_credentials_of_local_and_ssh_origins_are_not_judged() {
        assert_eq!(credentials_unchecked("https://github.com/a/b"), None);
        assert!(credentials_unchecked("/srv/origin.git").unwrap().contains("local path"));
        assert!(credentials_unchecked("git@github.com:a/b.git").unwrap().contains("SSH"));
    }
}
