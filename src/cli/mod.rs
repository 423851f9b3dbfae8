//! The command line: one file per subcommand, each turning its arguments into a core request.

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod conformance;
pub mod dashboard;
pub mod demo;
pub mod dispatch;
pub mod doctor;
pub mod healthcheck;
pub mod keys;
pub mod serve;
pub mod sync;
pub mod webhook_setup;

#[derive(Debug, Parser)]
#[command(
    name = "defsync",
    version,
    about = "Keep a platform's project definitions and a Git repository in sync, both ways",
    after_help = "Exit status: 0 success, 1 failure (network, platform, git), 2 usage or configuration error \
                  or a run stopped by the deletion guard (--max-deletions), 3 conflicts found, 4 invalid definitions, 5 a conformance rule failed."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring the platform's head into the branch: write files, commit and push.
    Pull(PullArgs),
    /// Send the origin's tip of the branch (what `git push` put there) to the platform as one commit.
    Push(PushArgs),
    /// Show what a pull and a push would change; change nothing.
    Status(StatusArgs),
    /// Make or move the link between the project and this repository, ref and path.
    Link(LinkArgs),
    /// Run the reference platform: the Sync API on SQLite.
    Serve(serve::ServeArgs),
    /// Edit a project as its dashboard would: create it, put or delete definitions.
    Dashboard(dashboard::DashboardArgs),
    /// Run a complete round trip on a scratch store and repository, explaining each step.
    Demo(demo::DemoArgs),
    /// Trigger the pull workflow on GitHub or the pull pipeline on GitLab (for the platform side).
    Dispatch(dispatch::DispatchArgs),
    /// Check everything a sync needs: platform, key, forge token, permissions, branch rules.
    Doctor(doctor::DoctorArgs),
    /// Check a running Sync API server against every rule of the contract (for platform teams).
    Conformance(conformance::ConformanceArgs),
}

/// Where the platform is and which project; shared by every command that talks to one.
#[derive(Debug, Clone, Args)]
pub struct PlatformArgs {
    /// The platform: an http(s):// URL, or the path of an existing SQLite store.
    #[arg(long, env = "DEFSYNC_PLATFORM")]
    pub platform: Option<String>,
    /// The platform API key. Prefer the DEFSYNC_API_KEY environment variable: other users of
    /// the machine can read a command line, and shells keep it in their history.
    #[arg(long, env = "DEFSYNC_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The project ID on the platform.
    #[arg(long, env = "DEFSYNC_PROJECT")]
    pub project: Option<String>,
    /// Allow plain http:// to hosts other than loopback (the API key travels in clear text).
    #[arg(long, env = "DEFSYNC_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,
    /// How long, in seconds, to keep retrying a platform that is unreachable, rate-limited or
    /// unavailable before giving up.
    #[arg(long, env = "DEFSYNC_RETRY_FOR", default_value_t = 120, value_name = "SECONDS")]
    pub retry_for: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    Bidirectional,
    GitToPlatform,
    PlatformToGit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OnConflict {
    /// Change nothing, report every conflict, exit 3.
    #[default]
    Fail,
    /// Keep the Git version of conflicting keys.
    PreferGit,
    /// Keep the platform's version of conflicting keys.
    PreferPlatform,
    /// Pull with pull-request delivery only (its default): put the platform's version of each
    /// conflicting key on the pull-request branch, explained in its body; nothing on the target
    /// branch is overwritten.
    PullRequest,
}

/// What to sync with what: the options of every sync command (`pull`, `push`, `status`, `link`).
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    #[command(flatten)]
    pub platform: PlatformArgs,
    /// The sync root, relative to the repository root.
    #[arg(long, env = "DEFSYNC_PATH", default_value = ".")]
    pub path: String,
    /// The branch to sync (default: the current branch).
    #[arg(long, env = "DEFSYNC_BRANCH")]
    pub branch: Option<String>,
    /// The direction of the link.
    #[arg(long, env = "DEFSYNC_DIRECTION", value_enum, default_value = "bidirectional")]
    pub direction: DirectionArg,
    /// The Git remote to fetch from and push to.
    #[arg(long, env = "DEFSYNC_REMOTE", default_value = "origin")]
    pub remote: String,
    /// Print one JSON report on stdout.
    #[arg(long)]
    pub json: bool,
    /// A GitHub token. defsync's own `git fetch` and `git push` send it to an https origin on
    /// the GitHub server (through the environment, never a command line), so a checkout needs
    /// no persisted credentials; deliveries through GitHub's API use it too. Prefer the
    /// DEFSYNC_GITHUB_TOKEN environment variable (the action sets it): other users of the
    /// machine can read a command line.
    #[arg(long, env = "DEFSYNC_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,
    #[command(flatten)]
    pub gitlab: GitLabArgs,
}

/// Where the repository lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ForgeArg {
    Github,
    Gitlab,
}

impl ForgeArg {
    /// The forge given, else GitLab inside a GitLab CI/CD job (`GITLAB_CI=true`), else GitHub.
    pub fn resolve(given: Option<ForgeArg>) -> ForgeArg {
        given.unwrap_or_else(|| {
            if std::env::var("GITLAB_CI").as_deref() == Ok("true") { ForgeArg::Gitlab } else { ForgeArg::Github }
        })
    }
}

/// The forge and, on GitLab, where to reach it. GitLab's token is read from the environment
/// only (`DEFSYNC_GITLAB_TOKEN`, else `GITLAB_TOKEN`, else the job's `CI_JOB_TOKEN`), never from
/// a command line.
#[derive(Debug, Clone, Default, Args)]
pub struct GitLabArgs {
    /// Where the repository lives [default: gitlab inside a GitLab CI/CD job (GITLAB_CI=true),
    /// else github].
    #[arg(long, env = "DEFSYNC_FORGE", value_enum)]
    pub forge: Option<ForgeArg>,
    /// GitLab's API root, https://HOST/api/v4 [default: CI_API_V4_URL inside a job, else
    /// https://gitlab.com/api/v4].
    #[arg(long, env = "DEFSYNC_GITLAB_URL")]
    pub gitlab_url: Option<String>,
    /// The GitLab project, by numeric ID or full path (group/sub/name) [default: CI_PROJECT_ID,
    /// else the origin's path].
    #[arg(long, env = "DEFSYNC_GITLAB_PROJECT")]
    pub gitlab_project: Option<String>,
    /// A PEM file of CA certificates to trust for GitLab besides the system's: a self-managed
    /// instance whose certificate a private CA signed.
    #[arg(long, env = "DEFSYNC_GITLAB_CA_CERT", value_name = "FILE")]
    pub gitlab_ca_cert: Option<std::path::PathBuf>,
}

/// The deletion guard's options, for the commands that may delete (`pull`, `push`) and for
/// `status`, which predicts them.
#[derive(Debug, Clone, Default, Args)]
pub struct GuardArgs {
    /// The deletion guard: stop a pull or push that would delete more than this many of one
    /// side's definitions, changing nothing (exit 2). A count (`20`) or a share (`50%`); a share
    /// applies only when that side holds at least 10 definitions.
    #[arg(long, env = "DEFSYNC_MAX_DELETIONS", default_value = "50%", value_name = "N|P%")]
    pub max_deletions: crate::engine::DeletionLimit,
    /// Let this run delete more than --max-deletions allows: after moving or emptying the sync
    /// root, or emptying the project, on purpose.
    #[arg(long, env = "DEFSYNC_ALLOW_MASS_DELETE")]
    pub allow_mass_delete: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub guard: GuardArgs,
    /// The platform commit that asked for this run. A pull always syncs the head.
    #[arg(long, env = "DEFSYNC_COMMIT")]
    pub commit: Option<String>,
    /// What to do with keys changed on both sides [default: fail, or pull-request with
    /// pull-request delivery].
    #[arg(long, env = "DEFSYNC_ON_CONFLICT", value_enum)]
    pub on_conflict: Option<OnConflict>,
    /// Plan and report, write nothing.
    #[arg(long, env = "DEFSYNC_DRY_RUN")]
    pub dry_run: bool,
    /// Commit, but do not push the commit to the origin.
    #[arg(long, env = "DEFSYNC_NO_PUSH")]
    pub no_push: bool,
    /// Deliver onto the branch (commit) or through a pull request.
    #[arg(long, env = "DEFSYNC_DELIVERY", value_enum, default_value = "commit")]
    pub delivery: crate::forge::Delivery,
    /// Make the commit with local git and push it, or through GitHub's API (signed by GitHub,
    /// as some branch rules require).
    #[arg(long, env = "DEFSYNC_COMMIT_VIA", value_enum, default_value = "git")]
    pub commit_via: crate::forge::CommitVia,
    /// Pull-request delivery: defsync's branch [default: defsync/<project>].
    #[arg(long, env = "DEFSYNC_PR_BRANCH")]
    pub pr_branch: Option<String>,
    /// Pull-request delivery: labels to add, comma-separated.
    #[arg(long, env = "DEFSYNC_PR_LABELS", value_delimiter = ',')]
    pub pr_labels: Vec<String>,
    /// GitHub's API root (GitHub Enterprise Server: https://HOST/api/v3).
    #[arg(long, env = "GITHUB_API_URL", default_value = crate::forge::github::DEFAULT_API_URL)]
    pub github_api_url: String,
    /// Commit author for pull commits, as "Name <email>".
    #[arg(long, env = "DEFSYNC_AUTHOR")]
    pub author: Option<String>,
    /// Committer for pull commits, as "Name <email>".
    #[arg(long, env = "DEFSYNC_COMMITTER")]
    pub committer: Option<String>,
    /// GitLab: start no pipeline for pull commits onto the branch (`git push -o ci.skip`, or
    /// `[skip ci]` in an API commit's message). The push pipeline would be a no-op anyway.
    #[arg(long, env = "DEFSYNC_CI_SKIP")]
    pub ci_skip: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub guard: GuardArgs,
    /// What to do with keys changed on both sides.
    #[arg(long, env = "DEFSYNC_ON_CONFLICT", value_enum)]
    pub on_conflict: Option<OnConflict>,
    /// Plan and report, write nothing.
    #[arg(long, env = "DEFSYNC_DRY_RUN")]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub guard: GuardArgs,
    /// Show conflicts as a run with this setting would resolve them.
    #[arg(long, env = "DEFSYNC_ON_CONFLICT", value_enum)]
    pub on_conflict: Option<OnConflict>,
}

#[derive(Debug, Clone, Args)]
pub struct LinkArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Say what the link would be, write nothing.
    #[arg(long, env = "DEFSYNC_DRY_RUN")]
    pub dry_run: bool,
}

/// Every sync command's options in one value, as the core's request is built from them; an
/// option a command does not take has its default.
#[derive(Debug, Clone)]
pub struct SyncArgs {
    pub platform: PlatformArgs,
    pub commit: Option<String>,
    pub path: String,
    pub branch: Option<String>,
    pub direction: DirectionArg,
    pub on_conflict: Option<OnConflict>,
    pub dry_run: bool,
    pub no_push: bool,
    pub guard: GuardArgs,
    pub json: bool,
    pub remote: String,
    pub delivery: crate::forge::Delivery,
    pub commit_via: crate::forge::CommitVia,
    pub pr_branch: Option<String>,
    pub pr_labels: Vec<String>,
    pub github_token: Option<String>,
    pub github_api_url: String,
    pub author: Option<String>,
    pub committer: Option<String>,
    pub gitlab: GitLabArgs,
    pub ci_skip: bool,
}

impl From<TargetArgs> for SyncArgs {
    fn from(t: TargetArgs) -> Self {
        SyncArgs {
            platform: t.platform,
            commit: None,
            path: t.path,
            branch: t.branch,
            direction: t.direction,
            on_conflict: None,
            dry_run: false,
            no_push: false,
            guard: GuardArgs::default(),
            json: t.json,
            remote: t.remote,
            delivery: Default::default(),
            commit_via: Default::default(),
            pr_branch: None,
            pr_labels: Vec::new(),
            github_token: t.github_token,
            github_api_url: crate::forge::github::DEFAULT_API_URL.into(),
            author: None,
            committer: None,
            gitlab: t.gitlab,
            ci_skip: false,
        }
    }
}

impl From<PullArgs> for SyncArgs {
    fn from(a: PullArgs) -> Self {
        SyncArgs {
            commit: a.commit,
            on_conflict: a.on_conflict,
            dry_run: a.dry_run,
            no_push: a.no_push,
            guard: a.guard,
            delivery: a.delivery,
            commit_via: a.commit_via,
            pr_branch: a.pr_branch,
            pr_labels: a.pr_labels,
            github_api_url: a.github_api_url,
            author: a.author,
            committer: a.committer,
            ci_skip: a.ci_skip,
            ..a.target.into()
        }
    }
}

impl From<PushArgs> for SyncArgs {
    fn from(a: PushArgs) -> Self {
        SyncArgs { on_conflict: a.on_conflict, dry_run: a.dry_run, guard: a.guard, ..a.target.into() }
    }
}

impl From<StatusArgs> for SyncArgs {
    fn from(a: StatusArgs) -> Self {
        SyncArgs { on_conflict: a.on_conflict, guard: a.guard, ..a.target.into() }
    }
}

impl From<LinkArgs> for SyncArgs {
    fn from(a: LinkArgs) -> Self {
        SyncArgs { dry_run: a.dry_run, ..a.target.into() }
    }
}

/// Runs a command and returns the process exit status.
pub fn run(cli: Cli) -> i32 {
    init_logging(match &cli.command {
        Command::Serve(args) => args.log_format,
        _ => serve::LogFormat::Text,
    });
    // A sync run is one sequence of requests and Git commands (its YAML is parsed on threads of
    // its own): one thread serves it, and every allocation comes from one arena. On worker
    // threads, the bodies read would fill arenas of their own, which glibc keeps: at 100,000
    // definitions, about 10 MiB more at the peak.
    let one_thread = matches!(cli.command, Command::Pull(_) | Command::Push(_) | Command::Status(_) | Command::Link(_));
    let mut builder = if one_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return crate::error::exit::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Pull(args) => sync_command(sync::Which::Pull, &args.into()).await,
            Command::Push(args) => sync_command(sync::Which::Push, &args.into()).await,
            Command::Status(args) => sync_command(sync::Which::Status, &args.into()).await,
            Command::Link(args) => sync_command(sync::Which::Link, &args.into()).await,
            Command::Serve(args) => match (args.log_format, serve::run(args).await) {
                (_, Ok(())) => crate::error::exit::OK,
                (format, Err(e)) => {
                    let message = crate::output::data(&format!("{e:#}"));
                    // With JSON logs, the last line is a JSON object too.
                    if format == serve::LogFormat::Json {
                        tracing::error!("{message}");
                    } else {
                        eprintln!("error: {message}");
                    }
                    e.downcast_ref::<crate::error::Error>().map_or(crate::error::exit::FAILURE, |e| e.exit_code())
                }
            },
            Command::Dashboard(args) => one_line(dashboard::run(&args).await),
            Command::Demo(args) => demo::run(&args).await,
            Command::Dispatch(args) => one_line(dispatch::run(&args).await),
            Command::Doctor(args) => doctor::run(&args).await,
            Command::Conformance(args) => conformance::run(&args).await,
        }
    })
}

/// Prints a command's one-line outcome, or its error, and returns the exit status.
fn one_line(result: crate::error::Result<String>) -> i32 {
    match result {
        Ok(line) => {
            eprintln!("{}", crate::output::data(&line));
            crate::error::exit::OK
        }
        Err(e) => {
            eprintln!("error: {}", crate::output::data(&e.to_string()));
            e.exit_code()
        }
    }
}

async fn sync_command(which: sync::Which, args: &SyncArgs) -> i32 {
    sync::command(which, args, crate::ci::detect().as_ref()).await
}

/// Logs go to stderr; `DEFSYNC_LOG` sets the filter (default `info`). JSON logs (`serve
/// --log-format json`) are one object per line, with a timestamp and the event's fields at the
/// top level, as log collectors expect.
fn init_logging(format: serve::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEFSYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if format == serve::LogFormat::Json {
        let _ = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
