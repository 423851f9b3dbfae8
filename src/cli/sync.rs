//! `pull`, `push`, `status` and `link`: they share most options, so one file turns them into a
//! [`Request`] for the core.

use crate::api::Direction;
use crate::ci::Event;
use crate::cli::{DirectionArg, ForgeArg, GitLabArgs, OnConflict, PlatformArgs, SyncArgs};
use crate::engine::plan::Preference;
use crate::engine::{self, Request};
use crate::error::{Error, Result};
use crate::git::{Identity, Repo};
use crate::platform::{Location, Platform};
use crate::report::Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Pull,
    Push,
    Status,
    Link,
}

/// Runs a sync command in `runtime` and returns the process exit status.
pub async fn command(which: Which, args: &SyncArgs, runtime: &dyn crate::ci::Runtime) -> i32 {
    let command = match which {
        Which::Pull => "pull",
        Which::Push => "push",
        Which::Status => "status",
        Which::Link => "link",
    };
    // Mask secrets before anything else is printed, then take the project and commit from the
    // event when they are not given.
    let mut stderr = std::io::stderr();
    let secrets = [args.platform.api_key.clone()]
        .into_iter()
        .chain(crate::forge::github::TOKEN_VARIABLES.iter().map(|v| std::env::var(v).ok()))
        .chain(crate::forge::gitlab::TOKEN_VARIABLES.iter().map(|v| std::env::var(v).ok()));
    for secret in secrets.flatten() {
        let _ = runtime.mask(&mut stderr, &secret);
    }
    let event = runtime.event();
    let mut args = args.clone();
    if args.platform.project.as_deref().is_none_or(str::is_empty) && event.project.is_some() {
        args.platform.project = event.project.clone();
    }
    if args.commit.as_deref().is_none_or(str::is_empty) && event.commit.is_some() {
        args.commit = event.commit.clone();
    }
    let _ = runtime.group_start(&mut stderr, &format!("defsync {command}"));
    let args = &args;
    let result = run(which, args, &event).await;
    let _ = runtime.group_end(&mut stderr);
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            let mut report = Report::new(command);
            report.project = args.platform.project.clone();
            report.status = crate::report::Status::Error;
            report.error = Some(crate::report::ReportError { message: e.to_string(), exit_code: e.exit_code() });
            eprintln!("error: {}", crate::output::data(&e.to_string()));
            report
        }
    };
    if report.status != crate::report::Status::Error {
        eprint!("{}", crate::output::human(&report));
        if which != Which::Link {
            post_run_report(args, &event, &report).await;
        }
    }
    if let Err(e) = runtime.finish(&mut stderr, &report) {
        eprintln!("error: cannot write the step's outputs or summary: {}", crate::output::data(&format!("{e:#}")));
    }
    if let Some(markdown) = runtime.change_request_summary(&report) {
        summary_on_change_request(args, &markdown).await;
    }
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("error: cannot write the JSON report: {e}"),
        }
    }
    report.exit_code()
}

/// Sends the run's outcome, conflicts (both versions) and deferred keys to the platform
/// (contract v1.2, `POST /v1/projects/{project}/runs`), for its "conflicts reported by the last
/// runs". Best effort: a platform without the endpoint (404, 405) is told once and left alone,
/// and no failure here changes the run's result.
async fn post_run_report(args: &SyncArgs, event: &Event, report: &Report) {
    use std::sync::atomic::{AtomicBool, Ordering};
    // A platform that does not take reports is not asked again by this process.
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return;
    }
    let Some(project) = report.project.clone().or_else(|| args.platform.project.clone()) else {
        return;
    };
    let body = run_report(report, event.run_url.clone());
    let platform = match open_platform(&args.platform) {
        Ok(p) => p,
        Err(_) => return,
    };
    match platform.post_run_report(&project, &body).await {
        Ok(()) => tracing::debug!("run report sent"),
        Err(e) if e.api().is_some_and(|a| matches!(a.status, 404 | 405)) => {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            eprintln!("defsync: the platform takes no run reports (contract v1.2 is optional); none sent");
        }
        // A read key (the pull-request check's) may not write: the run reports nothing, quietly.
        Err(e) if e.api().is_some_and(|a| a.status == 403) => {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            eprintln!("defsync: the API key may not write, so no run report was sent");
        }
        Err(e) => {
            eprintln!("warning: cannot send the run report to the platform: {}", crate::output::data(&e.to_string()))
        }
    }
}

/// The report of contract v1.2 for `report`, each side's spec read back from the YAML the run
/// showed. Conflicts are left out from the last until the body fits the limit.
pub fn run_report(report: &Report, run_url: Option<String>) -> crate::api::RunReport {
    use crate::api::{ReportedConflict, ReportedKey, RunReport};
    let spec =
        |yaml: &Option<String>| yaml.as_deref().and_then(|y| crate::yaml::parse(y.as_bytes()).ok()).map(|d| d.spec);
    let mut conflicts: Vec<ReportedConflict> = report
        .conflicts
        .iter()
        .take(crate::store::MAX_REPORTED_KEYS)
        .map(|c| ReportedConflict {
            kind: c.kind.clone(),
            name: c.name.clone(),
            git: spec(&c.git_yaml),
            platform: spec(&c.platform_yaml),
        })
        .collect();
    let deferred = report
        .conflicts
        .iter()
        .filter(|c| c.resolution == crate::report::Resolution::Deferred)
        .take(crate::store::MAX_REPORTED_KEYS)
        .map(|c| ReportedKey { kind: c.kind.clone(), name: c.name.clone() })
        .collect();
    let mut out = RunReport {
        command: report.command.clone(),
        outcome: report.status.as_str().to_owned(),
        run_url,
        git_commit: report.git_commit.clone(),
        platform_commit: report.platform_commit.as_ref().map(|c| c.id.clone()),
        conflicts: Vec::new(),
        deferred,
    };
    while !conflicts.is_empty() {
        out.conflicts = conflicts.clone();
        if serde_json::to_vec(&out).map_or(0, |b| b.len()) <= crate::store::MAX_RUN_REPORT_BYTES {
            break;
        }
        conflicts.pop();
        out.conflicts.clear();
    }
    out
}

/// Posts the run's summary on the change request the pipeline checks, through the forge. A
/// summary that cannot be posted never fails the run: the summary file has it too.
async fn summary_on_change_request(args: &SyncArgs, markdown: &str) {
    if ForgeArg::resolve(args.gitlab.forge) != ForgeArg::Gitlab {
        return;
    }
    if !matches!(crate::forge::gitlab::token_from_env(), Some((_, crate::forge::gitlab::TokenKind::Access))) {
        eprintln!(
            "defsync: the summary is not posted on the merge request: that needs GITLAB_TOKEN (a token with the \
             `api` scope), and the job token cannot write notes; it is in the summary file"
        );
        return;
    }
    match crate::forge::gitlab::summary_note_in_job(markdown).await {
        Ok(Some(note)) => eprintln!("defsync: the summary is note {note} on the merge request"),
        Ok(None) => {}
        Err(e) => {
            eprintln!("warning: cannot post the summary on the merge request: {}", crate::output::data(&e.to_string()))
        }
    }
}

/// Runs a sync command: resolves the request from `args` and the CI `event`, picks the forge, and
/// hands both to the engine.
pub async fn run(which: Which, args: &SyncArgs, event: &Event) -> Result<Report> {
    let started = std::time::Instant::now();
    let kind = ForgeArg::resolve(args.gitlab.forge);
    let repo = Repo::discover(&std::env::current_dir().map_err(|e| Error::Config(e.to_string()))?)?;
    let repo = match kind {
        ForgeArg::Github => repo.with_auth(crate::git::GitHubAuth::from_env(args.github_token.as_deref())),
        ForgeArg::Gitlab => repo.with_auth(gitlab_git_auth(&args.gitlab)),
    };
    let repo = match (kind, args.ci_skip) {
        (_, false) => repo,
        (ForgeArg::Gitlab, true) => repo.with_push_options(vec!["ci.skip".into()]),
        (ForgeArg::Github, true) => {
            return Err(Error::Config(
                "--ci-skip is for GitLab; on GitHub, pushes made with the workflow's GITHUB_TOKEN start no workflows"
                    .into(),
            ));
        }
    };
    let platform = open_platform(&args.platform)?;
    let req = request(which, args, &repo, event)?;
    tracing::debug!(?req, "request");
    let forge = forge(kind, args, &req, &repo);
    let mut report = match which {
        Which::Pull => engine::pull(&repo, &platform, forge.as_ref(), &req).await,
        Which::Push => engine::push(&repo, &platform, &req).await,
        Which::Status => engine::status(&repo, &platform, &req).await,
        Which::Link => engine::link(&platform, &req).await,
    }?;
    if req.branch == DETACHED {
        // No branch was synced, so name what was checked out: in a workflow, the event's ref.
        report.git_ref = Some(event.checked_ref.clone().unwrap_or_else(|| DETACHED.into()));
    }
    report.stats = Some(crate::report::Stats {
        http_requests: platform.requests(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        peak_rss_kib: crate::report::Stats::peak_rss_kib(),
        files_parsed: crate::engine::scan::files_parsed(),
    });
    Ok(report)
}

/// The forge the repository lives on.
fn forge(kind: ForgeArg, args: &SyncArgs, req: &Request, repo: &Repo) -> Box<dyn crate::forge::Forge> {
    match kind {
        ForgeArg::Github => {
            let options = args
                .github_token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(|t| crate::forge::github::GitHubOptions::new(t, args.github_api_url.clone()));
            Box::new(crate::forge::github::GitHubForge::new(options, req.repository.clone()))
        }
        ForgeArg::Gitlab => {
            let options = gitlab_options(&args.gitlab);
            let project = gitlab_project(&args.gitlab, &req.repository);
            Box::new(crate::forge::gitlab::GitLabForge::new(options, project, Some(repo.clone())).skip_ci(args.ci_skip))
        }
    }
}

/// GitLab's client options from the arguments and the token in the environment.
pub fn gitlab_options(args: &GitLabArgs) -> Option<crate::forge::gitlab::GitLabOptions> {
    let (token, kind) = crate::forge::gitlab::token_from_env()?;
    let mut options = crate::forge::gitlab::GitLabOptions::new(
        token,
        kind,
        crate::forge::gitlab::api_url(args.gitlab_url.as_deref()),
    );
    options.ca_cert = args.gitlab_ca_cert.clone();
    Some(options)
}

/// The GitLab project: `--gitlab-project`, else the job's `CI_PROJECT_ID`, else the path of
/// the repository as the link names it (`group/sub/name`, or the path of a self-managed URL).
pub fn gitlab_project(args: &GitLabArgs, repository: &str) -> String {
    let given = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    given(args.gitlab_project.clone()).or_else(|| given(std::env::var("CI_PROJECT_ID").ok())).unwrap_or_else(|| {
        match repository.split_once("://") {
            Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p).to_owned(),
            None => repository.to_owned(),
        }
    })
}

/// How `git fetch` and `git push` authenticate to an https origin on the GitLab instance: the
/// token as `Authorization: Basic` (user `oauth2`, or `gitlab-ci-token` for the job token),
/// through the environment like the GitHub header.
fn gitlab_git_auth(args: &GitLabArgs) -> Option<crate::git::GitHubAuth> {
    let (token, kind) = crate::forge::gitlab::token_from_env()?;
    let server = std::env::var("CI_SERVER_URL").ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| {
        let api = crate::forge::gitlab::api_url(args.gitlab_url.as_deref());
        api.strip_suffix("/api/v4").unwrap_or(&api).to_owned()
    });
    crate::git::GitHubAuth::gitlab(&token, kind == crate::forge::gitlab::TokenKind::Job, &server)
}

/// The branch of a run that syncs none: status or a dry run on a detached checkout.
const DETACHED: &str = "HEAD";

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
             the action's or the GitLab component's platform-url input)"
                .into(),
        )
    })?;
    Location::parse(given).map_err(Error::Config)
}

pub fn project(args: &PlatformArgs) -> Result<String> {
    args.project.clone().filter(|p| !p.is_empty()).ok_or_else(|| {
        Error::Config(
            "no project: pass --project or set DEFSYNC_PROJECT (the action's or the GitLab component's project-id \
             input; a GitLab pipeline trigger sets DEFSYNC_PROJECT_ID)"
                .into(),
        )
    })
}

fn request(which: Which, args: &SyncArgs, repo: &Repo, event: &Event) -> Result<Request> {
    let project = project(&args.platform)?;
    let path = engine::normalize_path(&args.path)?;
    let lenient = which == Which::Status || args.dry_run;
    let branch = match branch(args, repo, event) {
        Some(b) => b,
        None if lenient => DETACHED.into(),
        None => {
            return Err(Error::Config(
                "cannot tell which branch to sync (HEAD is detached): pass --branch or set DEFSYNC_BRANCH".into(),
            ));
        }
    };
    let identity = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(Identity::parse).transpose();
    Ok(Request {
        project: project.clone(),
        path,
        branch,
        remote: args.remote.clone(),
        repository: repository_of(repo, &args.remote, event),
        platform: args.platform.platform.as_deref().map(shown_platform).unwrap_or_default(),
        direction: match args.direction {
            DirectionArg::Bidirectional => Direction::Bidirectional,
            DirectionArg::GitToPlatform => Direction::GitToPlatform,
            DirectionArg::PlatformToGit => Direction::PlatformToGit,
        },
        prefer: preference(which, args)?,
        dry_run: args.dry_run,
        no_push: args.no_push,
        // Only pull takes --commit, but a workflow_dispatch event fills it for every command.
        max_deletions: args.guard.max_deletions,
        allow_mass_delete: args.guard.allow_mass_delete,
        requested_commit: if which == Which::Pull { args.commit.clone().filter(|c| !c.is_empty()) } else { None },
        author: identity(&args.author)?.or_else(|| event.identity.clone()),
        committer: identity(&args.committer)?.or_else(|| event.identity.clone()),
        run_url: event.run_url.clone(),
        delivery: args.delivery,
        commit_via: args.commit_via,
        pr_branch: args
            .pr_branch
            .clone()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| crate::forge::default_pr_branch(&project)),
        pr_labels: args.pr_labels.iter().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect(),
    })
}

/// `--on-conflict`, whose default depends on the delivery.
fn preference(which: Which, args: &SyncArgs) -> Result<Preference> {
    let pr = which == Which::Pull && args.delivery == crate::forge::Delivery::PullRequest;
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

/// `--branch`, the checked-out branch, or the branch the CI event is on.
fn branch(args: &SyncArgs, repo: &Repo, event: &Event) -> Option<String> {
    let given = args.branch.clone().filter(|b| !b.is_empty());
    given
        .map(|b| b.strip_prefix("refs/heads/").map(str::to_owned).unwrap_or(b))
        .or_else(|| repo.current_branch())
        .or_else(|| event.branch.clone())
}

/// The repository as the record names it: as the CI runtime names it, or the remote's URL
/// normalised by [`normalize_remote`]. Both in lower case, as GitHub names ignore case: a run
/// in a workflow and one in a local clone name the repository alike.
fn repository_of(repo: &Repo, remote: &str, event: &Event) -> String {
    match &event.repository {
        Some(r) => r.to_lowercase(),
        None => remote_name(repo, remote),
    }
}

/// [`repository_of`] for a run in this process's CI runtime.
pub fn repository_name(repo: &Repo, remote: &str) -> String {
    repository_of(repo, remote, &crate::ci::detect().event())
}

/// The remote's URL normalised by [`normalize_remote`], or the work tree's path without one.
fn remote_name(repo: &Repo, remote: &str) -> String {
    match repo.remote_url(remote) {
        Some(url) => normalize_remote(&url, repo.root()),
        None => repo.root().display().to_string(),
    }
}

/// One name for every way of writing the same remote, so that two clones of one origin are one
/// repository to the link: `owner/name` (`group/sub/name`) for GitHub and GitLab, whose names
/// ignore case; other URLs without credentials or user, scheme and host in lower case; local
/// paths absolute (relative ones are relative to the repository's root, as Git reads them). A
/// trailing `.git` and `/` never count.
pub fn normalize_remote(url: &str, root: &std::path::Path) -> String {
    let url = url.trim();
    let trim = |s: &str| {
        let s = s.trim_end_matches('/');
        s.strip_suffix(".git").unwrap_or(s).trim_end_matches('/').to_owned()
    };
    let (scheme, host, path) = if let Some((scheme, rest)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "file" {
            return local_path(rest, root);
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        (scheme, authority.rsplit_once('@').map_or(authority, |(_, h)| h).to_ascii_lowercase(), path.to_owned())
    } else if let Some((authority, path)) = scp_like(url) {
        ("ssh".to_owned(), authority.rsplit_once('@').map_or(authority, |(_, h)| h).to_ascii_lowercase(), path)
    } else {
        return local_path(url, root);
    };
    let path = trim(path.trim_start_matches('/'));
    let bare_host = host.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok()).map_or(&*host, |(h, _)| h);
    if ["github.com", "www.github.com", "gitlab.com", "www.gitlab.com"].contains(&bare_host) && path.contains('/') {
        return path.to_lowercase();
    }
    if path.is_empty() { format!("{scheme}://{host}") } else { format!("{scheme}://{host}/{path}") }
}

/// `[user@]host:path`, Git's scp-like syntax, which a local path is not: Git reads a name with a
/// slash before the first colon as a path.
fn scp_like(url: &str) -> Option<(&str, String)> {
    let (authority, path) = url.split_once(':')?;
    if authority.is_empty() || authority.contains('/') || authority.len() == 1 {
        return None; // a path, or a Windows drive letter
    }
    Some((authority, path.to_owned()))
}

/// An absolute, lexically normal form of a local remote, without a trailing `.git` or `/`.
fn local_path(path: &str, root: &std::path::Path) -> String {
    let given = std::path::Path::new(path);
    let joined = if given.is_absolute() { given.to_path_buf() } else { root.join(given) };
    // The real path where it exists, so `/srv/x` and a link to it are one origin; lexical
    // clean-up otherwise.
    let resolved = joined.canonicalize().unwrap_or_else(|_| {
        let mut out = std::path::PathBuf::new();
        for part in joined.components() {
            match part {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                p => out.push(p),
            }
        }
        out
    });
    let text = resolved.to_string_lossy();
    let text = text.trim_end_matches('/');
    text.strip_suffix(".git").unwrap_or(text).to_owned()
}

/// `--platform` as a message may print it: a URL without credentials, a store path as given.
fn shown_platform(platform: &str) -> String {
    match platform.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            match path {
                Some(p) => format!("{scheme}://{host}/{p}"),
                None => format!("{scheme}://{host}"),
            }
        }
        None => platform.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_name_the_repository_without_credentials() {
        let root = std::path::Path::new("/srv/work");
        let n = |url: &str| normalize_remote(url, root);
        for github in [
            "https://github.com/acme/integrations.git",
            "https://github.com/Acme/Integrations/",
            "git@github.com:acme/integrations.git",
            "ssh://git@github.com/acme/integrations",
            "https://x-access-token:ghs_secret@github.com/acme/integrations",
        ] {
            assert_eq!(n(github), "acme/integrations", "{github}");
        }
        assert_eq!(n("git@gitlab.com:group/sub/name.git"), "group/sub/name");
        assert_eq!(n("https://oauth2:glpat-x@GitLab.com/group/sub/name.git/"), "group/sub/name");
        assert_eq!(n("https://user:pw@Git.Example.com/a/B.git"), "https://git.example.com/a/B");
        assert_eq!(n("git@git.example.com:a/b.git"), "ssh://git.example.com/a/b");
        // Local origins: absolute, wherever the remote was written from.
        for local in ["/srv/git/origin.git", "/srv/git/origin.git/", "file:///srv/git/origin.git", "../git/origin.git"]
        {
            assert_eq!(n(local), "/srv/git/origin", "{local}");
        }
    }

    #[test]
    fn platform_urls_are_shown_without_credentials() {
        assert_eq!(shown_platform("https://u:p@example.com/x"), "https://example.com/x");
        assert_eq!(shown_platform("/tmp/s.db"), "/tmp/s.db");
    }
}
