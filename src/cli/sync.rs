//! `pull`, `push`, `status` and `link`: they share their options, so one file turns those into a
//! [`Request`] for the core.

use crate::api::Direction;
use crate::cli::{DirectionArg, OnConflict, PlatformArgs, SyncArgs};
use crate::error::{Error, Result};
use crate::git::{Identity, Repo};
use crate::plan::Preference;
use crate::platform::{Location, Platform};
use crate::report::Report;
use crate::sync::{self, Request};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Pull,
    Push,
    Status,
    Link,
}

pub async fn run(which: Which, args: &SyncArgs) -> Result<Report> {
    let started = std::time::Instant::now();
    let repo = Repo::discover(&std::env::current_dir().map_err(|e| Error::Config(e.to_string()))?)?
        .with_auth(crate::git::GitHubAuth::from_env(args.github_token.as_deref()));
    let platform = open_platform(&args.platform)?;
    let req = request(which, args, &repo)?;
    tracing::debug!(?req, "request");
    let mut report = match which {
        Which::Pull => sync::pull(&repo, &platform, &req).await,
        Which::Push => sync::push(&repo, &platform, &req).await,
        Which::Status => sync::status(&repo, &platform, &req).await,
        Which::Link => sync::link(&platform, &req).await,
    }?;
    report.stats = Some(crate::report::Stats {
        http_requests: platform.requests(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        peak_rss_kib: crate::report::Stats::peak_rss_kib(),
    });
    Ok(report)
}

pub fn open_platform(args: &PlatformArgs) -> Result<Platform> {
    let location = location(args)?;
    let options = crate::api::client::ClientOptions {
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        allow_insecure_http: args.allow_insecure_http,
        max_retry_time: std::time::Duration::from_secs(args.retry_for),
        ..Default::default()
    };
    if let Location::Store(path) = &location
        && !path.exists()
    {
        return Err(Error::Config(format!(
            "no store at {}: give --platform an http(s):// URL or the path of an existing store \
             (create one with `defsync dashboard create-project`)",
            path.display()
        )));
    }
    Platform::open(&location, options).map_err(|e| Error::Config(format!("{e:#}")))
}

/// Where `--platform` points; it is required by every command that talks to a platform.
pub fn location(args: &PlatformArgs) -> Result<Location> {
    let given = args.platform.as_deref().filter(|p| !p.is_empty()).ok_or_else(|| {
        Error::Config(
            "no platform: pass --platform or set DEFSYNC_PLATFORM (an http(s):// URL, or the path of a store; \
             the action's platform-url input)"
                .into(),
        )
    })?;
    Ok(Location::parse(given))
}

pub fn project(args: &PlatformArgs) -> Result<String> {
    args.project.clone().filter(|p| !p.is_empty()).ok_or_else(|| {
        Error::Config("no project: pass --project or set DEFSYNC_PROJECT (the action's project-id input)".into())
    })
}

fn request(which: Which, args: &SyncArgs, repo: &Repo) -> Result<Request> {
    let project = project(&args.platform)?;
    let path = sync::normalize_path(&args.path)?;
    let lenient = which == Which::Status || args.dry_run;
    let branch = match branch(args, repo) {
        Some(b) => b,
        None if lenient => "HEAD".into(),
        None => {
            return Err(Error::Config(
                "cannot tell which branch to sync (HEAD is detached): pass --branch or set DEFSYNC_BRANCH".into(),
            ));
        }
    };
    let identity = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(Identity::parse).transpose();
    if which != Which::Pull && args.commit.as_deref().is_some_and(|c| !c.is_empty()) {
        tracing::debug!("--commit only applies to pull; ignored");
    }
    Ok(Request {
        project: project.clone(),
        path,
        branch,
        remote: args.remote.clone(),
        repository: repository_name(repo, &args.remote),
        direction: match args.direction {
            DirectionArg::Bidirectional => Direction::Bidirectional,
            DirectionArg::GitToPlatform => Direction::GitToPlatform,
            DirectionArg::PlatformToGit => Direction::PlatformToGit,
        },
        prefer: preference(which, args)?,
        dry_run: args.dry_run,
        no_push: args.no_push,
        requested_commit: if which == Which::Pull { args.commit.clone().filter(|c| !c.is_empty()) } else { None },
        author: identity(&args.author)?,
        committer: identity(&args.committer)?,
        run_url: run_url(),
        delivery: args.delivery,
        commit_via: args.commit_via,
        pr_branch: args
            .pr_branch
            .clone()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| crate::github::default_pr_branch(&project)),
        pr_labels: args.pr_labels.iter().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect(),
        github: args
            .github_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| crate::github::GitHubOptions::new(t, args.github_api_url.clone())),
    })
}

/// `--on-conflict`, whose default depends on the delivery.
fn preference(which: Which, args: &SyncArgs) -> Result<Preference> {
    let pr = which == Which::Pull && args.delivery == crate::github::Delivery::PullRequest;
    Ok(match (args.on_conflict, pr) {
        // On a pull-request branch the platform's version overwrites nothing on the target
        // branch, and both versions stay visible in the pull request.
        (None | Some(OnConflict::PullRequest), true) => Preference::Platform,
        (None | Some(OnConflict::Fail), _) => Preference::Fail,
        (Some(OnConflict::PullRequest), false) => {
            return Err(Error::Config(
                "--on-conflict pull-request goes with pull --delivery pull-request; use fail, prefer-git or prefer-platform".into(),
            ));
        }
        (Some(OnConflict::PreferGit), _) => Preference::Git,
        (Some(OnConflict::PreferPlatform), _) => Preference::Platform,
    })
}

/// `--branch`, the checked-out branch, or the branch a workflow runs on.
fn branch(args: &SyncArgs, repo: &Repo) -> Option<String> {
    let given = args.branch.clone().filter(|b| !b.is_empty());
    let from_ref = || std::env::var("GITHUB_REF").ok().and_then(|r| r.strip_prefix("refs/heads/").map(str::to_owned));
    given
        .map(|b| b.strip_prefix("refs/heads/").map(str::to_owned).unwrap_or(b))
        .or_else(|| repo.current_branch())
        .or_else(from_ref)
}

/// The repository as the record names it: `GITHUB_REPOSITORY`, the `owner/name` of a GitHub
/// remote, or the remote's URL without credentials.
pub fn repository_name(repo: &Repo, remote: &str) -> String {
    if let Ok(r) = std::env::var("GITHUB_REPOSITORY")
        && !r.is_empty()
    {
        return r;
    }
    match repo.remote_url(remote) {
        Some(url) => normalize_remote(&url),
        None => format!("file://{}", repo.root().display()),
    }
}

/// `owner/name` for GitHub URLs; otherwise the URL with any credentials removed.
pub fn normalize_remote(url: &str) -> String {
    let github = ["https://github.com/", "http://github.com/", "ssh://git@github.com/", "git@github.com:"];
    if let Some(path) = url.strip_prefix("file://") {
        return path.to_owned(); // `file:///x` and `/x` are the same origin
    }
    let stripped = strip_credentials(url);
    for prefix in github {
        if let Some(rest) = stripped.strip_prefix(prefix) {
            let rest = rest.trim_end_matches('/');
            return rest.strip_suffix(".git").unwrap_or(rest).to_owned();
        }
    }
    stripped
}

fn strip_credentials(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = if scheme == "ssh" { authority } else { host };
        if path.is_empty() { format!("{scheme}://{host}") } else { format!("{scheme}://{host}/{path}") }
    } else {
        url.to_owned()
    }
}

fn run_url() -> Option<String> {
    let server = std::env::var("GITHUB_SERVER_URL").ok()?;
    let repo = std::env::var("GITHUB_REPOSITORY").ok()?;
    let run = std::env::var("GITHUB_RUN_ID").ok()?;
    Some(format!("{server}/{repo}/actions/runs/{run}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_name_the_repository_without_credentials() {
        assert_eq!(normalize_remote("https://github.com/acme/integrations.git"), "acme/integrations");
        assert_eq!(normalize_remote("git@github.com:acme/integrations.git"), "acme/integrations");
        assert_eq!(normalize_remote("https://x-access-token:ghs_secret@github.com/acme/i"), "acme/i");
        assert_eq!(normalize_remote("https://user:pw@git.example.com/a/b.git"), "https://git.example.com/a/b.git");
        assert_eq!(normalize_remote("/srv/git/origin.git"), "/srv/git/origin.git");
    }
}
