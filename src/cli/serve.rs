//! `defsync serve`: run the reference platform, the Sync API on a SQLite or PostgreSQL store, and
//! optionally dispatch the pull (a GitHub workflow or a GitLab pipeline) after every commit that did
//! not come from Git. Its
//! subcommands (`keys`, `healthcheck`) live in files of their own and share [`StoreArgs`].

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};

use crate::forge::github::DEFAULT_API_URL;
use crate::forge::gitlab::PassAs;
use crate::server::dashboard::DashboardOptions;
use crate::server::targets::{FlagTarget, ForgeKind, Target, read_targets_file};
use crate::server::{AutoDispatch, ServeOptions, WebhookOptions, serve};
use crate::store::{RetryPolicy, StoreLocation};

const DISPATCH: &str = "Dispatching the pull (on when a repository and a token are given, or a targets file)";

/// The store `serve` and `serve keys` work on: one definition, so both read it alike.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// The store to serve: a SQLite file (created, with its folders, if missing), or a
    /// PostgreSQL database as postgres://USER@HOST:PORT/DATABASE, for several `serve` processes
    /// behind one load balancer. Give its password in PGPASSWORD rather than in the URL.
    #[arg(long, env = "DEFSYNC_STORE", hide_env_values = true, default_value = ".defsync/store.db",
          value_parser = StoreParser)]
    pub store: StoreLocation,
}

impl StoreArgs {
    /// Opens the store (a blocking call).
    pub fn open(&self) -> anyhow::Result<crate::store::Store> {
        crate::store::Store::open_location(&self.store)
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, for people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ServeCommand {
    /// Create, list and revoke the API keys kept in the store, each with a scope.
    Keys(super::keys::KeysArgs),
    /// Ask a running `serve` whether it is healthy (GET /healthz); exit 0 if so, 1 if not. For a
    /// container's HEALTHCHECK.
    Healthcheck(super::healthcheck::HealthcheckArgs),
    /// Print what to enter on GitHub and GitLab for run status: the webhook URLs, the events to
    /// select, and a newly generated secret for each (shown once).
    WebhookSetup(super::webhook_setup::WebhookSetupArgs),
}

#[derive(Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServeArgs {
    #[command(subcommand)]
    pub command: Option<ServeCommand>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The address to listen on (port 0 picks a free one; the address is printed on start).
    #[arg(long, env = "DEFSYNC_LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// An API key that clients may send as `Authorization: Bearer <key>`; repeat for several.
    /// Keys given in DEFSYNC_SERVER_KEYS (comma-separated) are accepted too.
    #[arg(long = "key", value_name = "KEY")]
    pub keys: Vec<String>,
    /// API keys from the environment, comma-separated (merged with --key).
    #[arg(
        long = "server-keys",
        env = "DEFSYNC_SERVER_KEYS",
        hide_env_values = true,
        value_delimiter = ',',
        hide = true
    )]
    pub env_keys: Vec<String>,
    /// Log lines as text or as JSON objects (one per line, with the access log's method, route,
    /// status, duration and key name as fields).
    #[arg(long, env = "DEFSYNC_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Serve GET /metrics on this address too, without a key (and not on --listen). Without it,
    /// /metrics is on --listen and needs a key of any scope.
    #[arg(long, env = "DEFSYNC_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Do not serve the web dashboard at / (it is on by default, behind a login with an API key).
    #[arg(long, env = "DEFSYNC_NO_DASHBOARD")]
    pub no_dashboard: bool,
    /// The URL people open the dashboard at, such as https://defsync.example.com. An https URL
    /// marks the session cookie Secure; without one, it is Secure unless --listen is a loopback
    /// address (plain http://127.0.0.1 in development).
    #[arg(long, env = "DEFSYNC_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// The web root that the dashboard links repositories and commits under
    /// (URL/OWNER/NAME/commit/SHA).
    #[arg(long, env = "DEFSYNC_GIT_WEB_URL", default_value = "https://github.com", value_name = "URL")]
    pub git_web_url: String,

    /// After every commit whose origin is not `git` (a dashboard or API edit), start the pull in
    /// this repository: on GitHub `owner/name`, whose pull workflow gets the inputs projectId and
    /// commitId; on GitLab the project's full path or ID, whose pipeline gets DEFSYNC_PROJECT_ID and
    /// DEFSYNC_COMMIT_ID. Every project's dispatches go to it; for several repositories, use
    /// --dispatch-targets. Failed dispatches are retried with backoff and logged; they are kept in
    /// the store, so a restart resumes them.
    #[arg(long, env = "DEFSYNC_DISPATCH_REPOSITORY", value_name = "REPOSITORY", help_heading = DISPATCH)]
    pub dispatch_repository: Option<String>,
    /// The forge of --dispatch-repository.
    #[arg(long, env = "DEFSYNC_DISPATCH_FORGE", value_enum, default_value = "github", help_heading = DISPATCH)]
    pub dispatch_forge: ForgeKind,
    /// GitHub: the workflow file (in .github/workflows) or its ID.
    #[arg(long, env = "DEFSYNC_DISPATCH_WORKFLOW", default_value = "defsync-pull.yml", help_heading = DISPATCH)]
    pub dispatch_workflow: String,
    /// The branch or tag whose workflow file (GitHub) or pipeline (GitLab) runs.
    #[arg(long, env = "DEFSYNC_DISPATCH_REF", default_value = "main", help_heading = DISPATCH)]
    pub dispatch_ref: String,
    /// GitHub: a token that may start workflows in the repository (Actions: Read and write;
    /// classic tokens: `repo`). GitLab: the project's pipeline trigger token. Never printed.
    #[arg(long, env = "DEFSYNC_DISPATCH_TOKEN", hide_env_values = true, value_name = "TOKEN", help_heading = DISPATCH)]
    pub dispatch_token: Option<String>,
    /// GitHub's API root; GitHub Enterprise Server: https://HOST/api/v3.
    #[arg(long, env = "GITHUB_API_URL", default_value = DEFAULT_API_URL, help_heading = DISPATCH)]
    pub github_api_url: String,
    /// GitLab's instance or API root (https://HOST or https://HOST/api/v4) [default: gitlab.com].
    #[arg(long, env = "DEFSYNC_GITLAB_URL", value_name = "URL", help_heading = DISPATCH)]
    pub gitlab_url: Option<String>,
    /// GitLab: a PEM file of CA certificates to trust besides the system's (a private CA).
    #[arg(long, env = "DEFSYNC_GITLAB_CA_CERT", value_name = "FILE", help_heading = DISPATCH)]
    pub gitlab_ca_cert: Option<std::path::PathBuf>,
    /// GitLab: pass the project and commit as pipeline variables or as the component's inputs.
    #[arg(long, env = "DEFSYNC_DISPATCH_PASS_AS", value_enum, default_value = "variables", help_heading = DISPATCH)]
    pub dispatch_pass_as: PassAs,
    /// A YAML file of dispatch targets, for projects in several repositories or on both forges:
    /// the first target whose `projects` patterns match a project is that project's. Each target
    /// names the environment variable that holds its token (see the README).
    #[arg(long, env = "DEFSYNC_DISPATCH_TARGETS", value_name = "FILE", help_heading = DISPATCH,
          conflicts_with = "dispatch_repository")]
    pub dispatch_targets: Option<std::path::PathBuf>,
    /// How often, in milliseconds, the outbox is read when no commit wakes the worker.
    #[arg(long, env = "DEFSYNC_DISPATCH_POLL_MS", default_value_t = 1000, hide = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub dispatch_poll_ms: u64,
    /// The wait, in milliseconds, after a first failed dispatch; it doubles after each failure.
    #[arg(long, env = "DEFSYNC_DISPATCH_BACKOFF_MS", default_value_t = 5000, hide = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub dispatch_backoff_ms: u64,
    /// The longest wait, in milliseconds, between two attempts of one dispatch.
    #[arg(long, env = "DEFSYNC_DISPATCH_BACKOFF_MAX_MS", default_value_t = 600_000, hide = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub dispatch_backoff_max_ms: u64,
    /// Attempts before a dispatch that keeps failing is given up (and logged as failed).
    #[arg(long, env = "DEFSYNC_DISPATCH_MAX_ATTEMPTS", default_value_t = 25, hide = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub dispatch_max_attempts: u32,
    /// With webhooks on (DEFSYNC_GITHUB_WEBHOOK_SECRET set): a dispatch whose run has not
    /// appeared after this long is marked "not started"; the common cause is a workflow file
    /// missing or misnamed on the ref. A number with a unit: 90s, 10m, 1h.
    #[arg(long, env = "DEFSYNC_DISPATCH_RUN_TIMEOUT", default_value = "10m", value_name = "DURATION",
          value_parser = parse_duration, help_heading = DISPATCH)]
    pub dispatch_run_timeout: Duration,
}

/// `500ms`, `90s`, `10m`, `1h`; a bare number is seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 =
        number.parse().map_err(|_| format!("{s:?} is not a duration: give a number with a unit, as 90s or 10m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?} has an unknown unit {unit:?}: use ms, s, m or h")),
    };
    if d.is_zero() {
        return Err("the duration must be above zero".into());
    }
    Ok(d)
}

/// Parses `--store` with an error of its own: clap's would quote the value, and a URL's password
/// with it.
#[derive(Clone)]
struct StoreParser;

impl clap::builder::TypedValueParser for StoreParser {
    type Value = StoreLocation;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<StoreLocation, clap::Error> {
        use clap::error::ErrorKind;
        let value = value.to_str().ok_or_else(|| clap::Error::raw(ErrorKind::InvalidUtf8, "--store is not UTF-8\n"))?;
        StoreLocation::parse(value).map_err(|e| clap::Error::raw(ErrorKind::ValueValidation, format!("--store: {e}\n")))
    }
}

/// Keys are secrets: they never appear in debug output.
impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeArgs")
            .field("command", &self.command)
            .field("store", &self.store.store)
            .field("listen", &self.listen)
            .field("keys", &format_args!("[{} hidden]", self.keys.len() + self.env_keys.len()))
            .field("log_format", &self.log_format)
            .field("metrics_listen", &self.metrics_listen)
            .field("dispatch_repository", &self.dispatch_repository)
            .field("dispatch_forge", &self.dispatch_forge)
            .field("dispatch_targets", &self.dispatch_targets)
            .field("dispatch_workflow", &self.dispatch_workflow)
            .field("dispatch_ref", &self.dispatch_ref)
            .field("dispatch_token", &self.dispatch_token.as_ref().map(|_| "<hidden>"))
            .field("github_api_url", &self.github_api_url)
            .field("no_dashboard", &self.no_dashboard)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl ServeArgs {
    /// Every key given, trimmed, without empty ones and duplicates.
    fn all_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for k in self.keys.iter().chain(&self.env_keys).map(|k| k.trim()).filter(|k| !k.is_empty()) {
            if !keys.iter().any(|have| have == k) {
                keys.push(k.to_owned());
            }
        }
        keys
    }

    /// The dispatch settings: `None` when neither a repository nor a token nor a targets file is
    /// given. A repository without a token, or a token without a repository, is an error, as a
    /// half-configured dispatch would silently do nothing.
    fn dispatch(&self) -> anyhow::Result<Option<AutoDispatch>> {
        let targets = match &self.dispatch_targets {
            Some(path) => {
                if given(&self.dispatch_token).is_some() {
                    bail!(
                        "--dispatch-token (or DEFSYNC_DISPATCH_TOKEN) is given with --dispatch-targets, whose targets \
                         name their own token variables (`token_env`): unset it"
                    );
                }
                read_targets_file(path, |name| std::env::var(name).ok())?
            }
            None => match self.flag_target()? {
                Some(target) => vec![target],
                None => return Ok(None),
            },
        };
        Ok(Some(AutoDispatch {
            targets,
            poll_interval: Duration::from_millis(self.dispatch_poll_ms),
            policy: RetryPolicy {
                backoff_base: Duration::from_millis(self.dispatch_backoff_ms),
                backoff_cap: Duration::from_millis(self.dispatch_backoff_max_ms.max(self.dispatch_backoff_ms)),
                max_attempts: self.dispatch_max_attempts,
            },
            run_timeout: None,
        }))
    }

    /// The one target given by flags, if any.
    fn flag_target(&self) -> anyhow::Result<Option<Target>> {
        let what = match self.dispatch_forge {
            ForgeKind::Github => "a token that may start workflows in it (Actions: Read and write)",
            ForgeKind::Gitlab => "the project's pipeline trigger token (Settings → CI/CD → Pipeline trigger tokens)",
        };
        let (repository, token) = match (given(&self.dispatch_repository), given(&self.dispatch_token)) {
            (None, None) => return Ok(None),
            (Some(r), Some(t)) => (r, t),
            (Some(r), None) => bail!(
                "--dispatch-repository is {r:?}, but no token to dispatch with: give --dispatch-token or set \
                 DEFSYNC_DISPATCH_TOKEN to {what}"
            ),
            (None, Some(_)) => bail!(
                "a dispatch token is given, but no repository to dispatch to: give --dispatch-repository \
                 <{}> or set DEFSYNC_DISPATCH_REPOSITORY",
                match self.dispatch_forge {
                    ForgeKind::Github => "owner/name",
                    ForgeKind::Gitlab => "group/project",
                }
            ),
        };
        if self.dispatch_workflow.trim().is_empty() || self.dispatch_ref.trim().is_empty() {
            bail!("--dispatch-workflow and --dispatch-ref must not be empty");
        }
        Target::from_flags(FlagTarget {
            forge: self.dispatch_forge,
            repository,
            git_ref: self.dispatch_ref.clone(),
            workflow: self.dispatch_workflow.clone(),
            token,
            github_api_url: self.github_api_url.clone(),
            gitlab_url: self.gitlab_url.clone(),
            gitlab_ca_cert: self.gitlab_ca_cert.clone(),
            pass_as: self.dispatch_pass_as,
        })
        .map(Some)
    }
}

/// A flag's value, trimmed, when it is given and not empty.
fn given(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

impl ServeArgs {
    /// The dashboard's settings; `None` with --no-dashboard.
    fn dashboard(&self) -> Result<Option<DashboardOptions>, String> {
        if self.no_dashboard {
            return Ok(None);
        }
        let secure_cookies = match self.public_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            Some(u) if u.starts_with("https://") => true,
            Some(u) if u.starts_with("http://") => false,
            Some(u) => {
                return Err(format!("--public-url {u:?} must start with https:// (or http:// for a local test)"));
            }
            None => !self.listen.ip().is_loopback(),
        };
        let git_web_url = self.git_web_url.trim().trim_end_matches('/').to_owned();
        if !(git_web_url.starts_with("https://") || git_web_url.starts_with("http://")) {
            return Err(format!("--git-web-url {git_web_url:?} must be an http(s) URL, such as https://github.com"));
        }
        Ok(Some(DashboardOptions { secure_cookies, git_web_url }))
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    match args.command {
        Some(ServeCommand::Keys(keys)) => return super::keys::run(&keys),
        Some(ServeCommand::Healthcheck(check)) => return super::healthcheck::run(&check).await,
        Some(ServeCommand::WebhookSetup(setup)) => return super::webhook_setup::run(&setup),
        None => {}
    }
    let keys = args.all_keys();
    let mut keys_from = Vec::new();
    if args.keys.iter().any(|k| !k.trim().is_empty()) {
        keys_from.push("--key");
    }
    if args.env_keys.iter().any(|k| !k.trim().is_empty()) {
        keys_from.push("DEFSYNC_SERVER_KEYS");
    }
    // Configuration errors are typed, so they exit 2 like every other configuration error.
    let config = |e: String| anyhow::Error::from(crate::error::Error::Config(e));
    let dashboard = args.dashboard().map_err(config)?;
    let mut dispatch = args.dispatch().map_err(|e| config(format!("{e:#}")))?;
    let webhooks = webhook_options_from_env();
    if webhooks.any()
        && let Some(d) = dispatch.as_mut()
    {
        d.run_timeout = Some(args.dispatch_run_timeout);
    }
    serve(ServeOptions {
        store: args.store.store,
        listen: args.listen,
        keys,
        keys_from,
        dispatch,
        metrics_listen: args.metrics_listen,
        json_logs: args.log_format == LogFormat::Json,
        dashboard,
        webhooks,
    })
    .await
}

/// The webhook secrets, from the environment only: a secret on a command line shows in `ps`.
/// HMAC needs the GitHub secret itself, so it cannot be kept hashed.
fn webhook_options_from_env() -> WebhookOptions {
    let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let mut gitlab_token_sha256: Vec<String> = var("DEFSYNC_GITLAB_WEBHOOK_TOKEN_SHA256")
        .map(|h| h.split(',').map(|h| h.trim().to_owned()).collect())
        .unwrap_or_default();
    if let Some(token) = var("DEFSYNC_GITLAB_WEBHOOK_TOKEN") {
        gitlab_token_sha256.push(crate::server::token_sha256(&token));
    }
    WebhookOptions {
        github_secret: var("DEFSYNC_GITHUB_WEBHOOK_SECRET"),
        gitlab_token_sha256,
        gitlab_read_token: var("DEFSYNC_GITLAB_READ_TOKEN"),
        gitlab_api_url: crate::forge::gitlab::api_url(var("DEFSYNC_GITLAB_URL").as_deref()),
        gitlab_projects: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn keys_merge_and_stay_hidden() {
        let cli = Cli::parse_from(["serve", "--key", "a", "--key", " b ", "--server-keys", "c,,a"]);
        assert_eq!(cli.args.all_keys(), ["a", "b", "c"]);
        let shown = format!("{:?}", cli.args);
        assert!(!shown.contains("\"a\"") && shown.contains("hidden"), "{shown}");
    }

    #[test]
    fn a_postgres_store_never_shows_its_password() {
        let cli = Cli::parse_from(["serve", "--store", "postgresql://app:s3cret@db.internal/defs"]);
        assert!(matches!(cli.args.store.store, StoreLocation::Postgres(_)));
        let shown = format!("{:?}", cli.args);
        assert!(shown.contains("postgres://app@db.internal") && !shown.contains("s3cret"), "{shown}");
        let e = Cli::try_parse_from(["serve", "--store", "postgres://app:s3cret@db.internal/defs?sslmode=verify-full"])
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode") && !e.contains("s3cret"), "{e}");
        let cli = Cli::parse_from(["serve"]);
        assert_eq!(cli.args.store.store, StoreLocation::Sqlite(".defsync/store.db".into()));
    }

    #[test]
    fn the_session_cookie_is_secure_outside_loopback() {
        let parse = |args: &[&str]| Cli::parse_from([&["serve"], args].concat()).args.dashboard().unwrap();
        assert!(!parse(&[]).unwrap().secure_cookies, "127.0.0.1 by default");
        assert!(parse(&["--listen", "0.0.0.0:8787"]).unwrap().secure_cookies);
        assert!(parse(&["--public-url", "https://d.example.com"]).unwrap().secure_cookies);
        assert!(!parse(&["--listen", "0.0.0.0:8787", "--public-url", "http://10.0.0.5:8787"]).unwrap().secure_cookies);
        assert!(parse(&["--no-dashboard"]).is_none());
        assert!(Cli::parse_from(["serve", "--public-url", "ftp://x"]).args.dashboard().is_err());
    }

    #[test]
    fn dispatch_needs_both_a_repository_and_a_token() {
        let parse = |args: &[&str]| Cli::parse_from([&["serve", "--key", "k"], args].concat()).args.dispatch();
        assert!(parse(&[]).unwrap().is_none());
        assert!(parse(&["--dispatch-repository", "", "--dispatch-token", ""]).unwrap().is_none());
        let e = parse(&["--dispatch-repository", "octo/defs"]).unwrap_err().to_string();
        assert!(e.contains("no token") && e.contains("DEFSYNC_DISPATCH_TOKEN"), "{e}");
        let e = parse(&["--dispatch-token", "ghp_x"]).unwrap_err().to_string();
        assert!(e.contains("no repository") && e.contains("--dispatch-repository"), "{e}");
        assert!(parse(&["--dispatch-repository", "octo", "--dispatch-token", "t"]).is_err());

        let d = parse(&["--dispatch-repository", "octo/defs", "--dispatch-token", "ghp_secret"]).unwrap().unwrap();
        let t = &d.targets[0];
        assert_eq!(
            (d.targets.len(), t.forge, t.repository.as_str(), t.workflow.as_str(), t.git_ref.as_str()),
            (1, ForgeKind::Github, "octo/defs", "defsync-pull.yml", "main")
        );
        assert_eq!(d.policy, RetryPolicy::default());
        assert_eq!(d.poll_interval, Duration::from_secs(1));
        let cli = Cli::parse_from(["serve", "--dispatch-repository", "octo/defs", "--dispatch-token", "ghp_secret"]);
        assert!(!format!("{:?}", cli.args).contains("ghp_secret"));
    }

    #[test]
    fn a_gitlab_dispatch_takes_a_project_path_and_the_instance() {
        let parse = |args: &[&str]| Cli::parse_from([&["serve", "--key", "k"], args].concat()).args.dispatch();
        let d = parse(&[
            "--dispatch-forge",
            "gitlab",
            "--dispatch-repository",
            "acme/platform/defs",
            "--dispatch-token",
            "glptt-x",
            "--gitlab-url",
            "https://gitlab.example.com",
            "--dispatch-pass-as",
            "inputs",
        ])
        .unwrap()
        .unwrap();
        let t = &d.targets[0];
        assert_eq!((t.forge, t.repository.as_str()), (ForgeKind::Gitlab, "acme/platform/defs"));
        assert_eq!((t.api_url.as_str(), t.pass_as), ("https://gitlab.example.com/api/v4", PassAs::Inputs));
        let e = parse(&["--dispatch-forge", "gitlab", "--dispatch-repository", "g/p"]).unwrap_err().to_string();
        assert!(e.contains("trigger token"), "{e}");
        // The targets file names its own token variables: a global token would be ignored.
        let e = parse(&["--dispatch-targets", "t.yml", "--dispatch-token", "x"]).unwrap_err().to_string();
        assert!(e.contains("token_env"), "{e}");
        assert!(
            Cli::try_parse_from(["serve", "--dispatch-targets", "t.yml", "--dispatch-repository", "o/r"]).is_err(),
            "a targets file and a flag target are exclusive"
        );
    }

    #[test]
    fn run_timeouts_parse_with_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10 days").unwrap_err().contains("unit"));
        assert!(parse_duration("soon").is_err());
        let cli = Cli::parse_from(["serve"]);
        assert_eq!(cli.args.dispatch_run_timeout, Duration::from_secs(600));
    }
}
