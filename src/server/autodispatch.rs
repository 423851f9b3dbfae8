//! The worker of `defsync serve` that starts the pull workflow on GitHub after every commit
//! whose origin is not `git`, so an edit in the dashboard becomes a commit in Git.
//!
//! It drains the store's dispatch outbox (see `store/outbox.rs`): rows are written in the
//! commit's own transaction, so a dispatch is owed even if serve dies the moment after; the worker
//! polls for due rows, and is woken right after a commit so the usual latency is one request.
//! Delivery is at least once: a retry after an unclear outcome (a 5xx, a lost connection, a kill
//! mid-request) may start a second run, which is harmless because a pull syncs the head and finds
//! nothing left to write.
//!
//! On shutdown it stops between two dispatches: one being sent finishes (the server waits a
//! bounded time for it), and rows claimed but not sent stay pending for the next start.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::forge::github::{ErrorKind, GitHub, GitHubError, GitHubOptions, RepoName};
use crate::output::data;
use crate::store::{ClaimedDispatch, DispatchFailure, RetryPolicy, SentDispatch, Store};

use super::metrics::Metrics;

/// Where and how `serve` dispatches the pull workflow.
#[derive(Clone)]
pub struct AutoDispatch {
    /// One repository for every project of this server.
    pub repository: RepoName,
    /// The workflow file (in `.github/workflows`) or its ID.
    pub workflow: String,
    /// The branch or tag whose workflow file runs.
    pub git_ref: String,
    /// A token that may start workflows; never logged.
    pub token: String,
    /// GitHub's API root.
    pub api_url: String,
    /// How often the outbox is read when nothing wakes the worker.
    pub poll_interval: Duration,
    pub policy: RetryPolicy,
    /// With webhooks on: a dispatch that started no run within this time is marked
    /// `not_started`. `None` without webhooks, where no run is ever seen.
    pub run_timeout: Option<Duration>,
}

impl std::fmt::Debug for AutoDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoDispatch")
            .field("repository", &self.repository.to_string())
            .field("workflow", &self.workflow)
            .field("git_ref", &self.git_ref)
            .field("token", &"<redacted>")
            .field("api_url", &self.api_url)
            .field("poll_interval", &self.poll_interval)
            .field("policy", &self.policy)
            .field("run_timeout", &self.run_timeout)
            .finish()
    }
}

impl AutoDispatch {
    /// `workflow on ref in owner/name`, for log lines.
    fn target(&self) -> String {
        format!("{} on {} in {}", self.workflow, self.git_ref, self.repository)
    }
}

/// Sets up the GitHub client (failing now, at start-up, on a bad token or URL) and starts the
/// worker. `wake` is notified after each commit; the worker returns once `stop` turns true,
/// between two dispatches.
pub(super) fn start(
    store: Arc<Store>,
    config: AutoDispatch,
    wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<JoinHandle<()>> {
    let github = GitHub::new(GitHubOptions::new(config.token.clone(), config.api_url.clone()))
        .context("the dispatch configuration (--dispatch-token, --github-api-url)")?;
    let worker = Worker { store, github, config, wake, stop, metrics };
    Ok(tokio::spawn(worker.run()))
}

struct Worker {
    store: Arc<Store>,
    github: GitHub,
    config: AutoDispatch,
    wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
}

/// Runs a store call off the async threads: SQLite blocks.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::api::ApiError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the store call failed: {e}")),
    }
}

impl Worker {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn run(self) {
        let mut stop = self.stop.clone();
        let mut last_sweep = tokio::time::Instant::now();
        while !self.stopping() {
            self.round().await;
            if let Some(timeout) = self.config.run_timeout
                && last_sweep.elapsed() >= sweep_interval(timeout)
            {
                last_sweep = tokio::time::Instant::now();
                self.sweep(timeout).await;
            }
            // A commit made during the round left a permit: the next round starts at once.
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
    }

    /// Sends every dispatch due now, one after the other (they share the token's rate limit).
    async fn round(&self) {
        let store = self.store.clone();
        let policy = self.config.policy;
        let claimed = match blocking(move || store.claim_due_dispatches(&policy)).await {
            Ok(c) => c,
            Err(e) => {
                // Nothing is lost: the rows stay pending and the next round reads them again.
                tracing::error!("dispatch: cannot read the outbox: {}", data(&e));
                return;
            }
        };
        let total = claimed.len();
        for (i, d) in claimed.into_iter().enumerate() {
            if self.stopping() {
                tracing::info!(
                    "dispatch: stopping; {} claimed dispatch(es) stay pending and are sent after their backoff on \
                     the next start",
                    total - i
                );
                return;
            }
            self.send(d).await;
        }
    }

    /// Marks `not_started` the dispatches that started no run within `timeout`.
    async fn sweep(&self, timeout: Duration) {
        let store = self.store.clone();
        match blocking(move || store.mark_runs_not_started(timeout)).await {
            Ok(rows) => {
                for r in rows {
                    tracing::warn!(
                        "dispatch: no run started within {}s for project {}, commit {} (sent to {}): {}",
                        timeout.as_secs(),
                        data(&r.project),
                        data(&r.commit_id),
                        data(r.target.as_deref().unwrap_or("?")),
                        crate::store::NOT_STARTED_MESSAGE
                    );
                }
            }
            Err(e) => tracing::error!("dispatch: cannot look for dispatches that started no run: {}", data(&e)),
        }
    }

    async fn send(&self, d: ClaimedDispatch) {
        let c = &self.config;
        let what = format!("project {}, commit {} (seq {})", data(&d.project), data(&d.commit_id), d.seq);
        if !d.coalesced.is_empty() {
            tracing::info!(
                "dispatch: {} earlier commit(s) of project {} need no run of their own ({}): the run for {} pulls \
                 the head, which includes them",
                d.coalesced.len(),
                data(&d.project),
                data(&d.coalesced.join(", ")),
                data(&d.commit_id)
            );
        }
        let inputs = [("projectId", d.project.as_str()), ("commitId", d.commit_id.as_str())];
        let result = self.github.dispatch(&c.repository, &c.workflow, &c.git_ref, &inputs).await;
        let (run_id, run_url) = match result {
            Ok(Some(run)) => {
                let url = run.html_url.as_deref().map(|u| format!(" {u}")).unwrap_or_default();
                tracing::info!("dispatch: started {} for {what}: run {}{}", c.target(), run.id, data(&url));
                (Some(run.id), run.html_url)
            }
            Ok(None) => {
                tracing::info!("dispatch: started {} for {what} (GitHub returned no run ID)", c.target());
                (None, None)
            }
            // A 2xx whose body defsync cannot read: GitHub took the dispatch all the same.
            Err(e) if e.kind == ErrorKind::Protocol && e.status.is_some_and(|s| (200..300).contains(&s)) => {
                tracing::warn!(
                    "dispatch: started {} for {what}, but cannot read GitHub's answer: {}",
                    c.target(),
                    data(&e.to_string())
                );
                (None, None)
            }
            Err(e) => return self.failed(&d, &what, &e).await,
        };
        let store = self.store.clone();
        let target = c.repository.to_string();
        let done = move || {
            let sent = SentDispatch { forge: "github", target: &target, run_id, run_url: run_url.as_deref() };
            store.mark_dispatch_done(d.id, &sent)
        };
        if let Err(e) = blocking(done).await {
            // The row stays pending: it is sent again after its backoff, which starts one more
            // run that finds nothing to pull. Better than losing it.
            tracing::error!("dispatch: started {} for {what}, but cannot record it: {}", c.target(), data(&e));
        }
    }

    async fn failed(&self, d: &ClaimedDispatch, what: &str, e: &GitHubError) {
        let c = &self.config;
        self.metrics.dispatch_failed();
        let permanent = is_permanent(e);
        let message = e.to_string();
        let store = self.store.clone();
        let (id, policy, error) = (d.id, c.policy, message.clone());
        let outcome = blocking(move || store.mark_dispatch_failed(id, &error, permanent, &policy)).await;
        match outcome {
            Ok(DispatchFailure::Retry { attempts, wait }) => tracing::warn!(
                "dispatch: cannot start {} for {what} (attempt {attempts} of {}); retrying in {:.1}s: {}",
                c.target(),
                c.policy.max_attempts,
                wait.as_secs_f64(),
                data(&message)
            ),
            Ok(DispatchFailure::GaveUp { attempts }) => {
                let why = if permanent {
                    "an error that retrying cannot fix".to_owned()
                } else {
                    format!("{attempts} attempts, the most allowed")
                };
                tracing::error!(
                    "dispatch: gave up starting {} for {what} after {why}; it stays in the outbox as failed. \
                     Fix the cause, then make a new commit or run `defsync dispatch` by hand: {}",
                    c.target(),
                    data(&message)
                );
            }
            Err(store_error) => tracing::error!(
                "dispatch: cannot start {} for {what}: {}; and cannot record the failure ({}), so it is retried \
                 after its backoff",
                c.target(),
                data(&message),
                data(&store_error)
            ),
        }
    }
}

/// How often the not-started sweep runs: a quarter of the timeout, at most every 30 s.
fn sweep_interval(timeout: Duration) -> Duration {
    (timeout / 4).min(Duration::from_secs(30))
}

/// Whether GitHub would answer the same however often the dispatch is sent: a bad or
/// under-privileged token (401, 403), an unknown repository or workflow (404), a ref or inputs
/// the workflow refuses (422). Those wait for a person; outages, timeouts and rate limits pass.
fn is_permanent(e: &GitHubError) -> bool {
    match e.kind {
        ErrorKind::Transport | ErrorKind::Server | ErrorKind::RateLimited | ErrorKind::Protocol => false,
        _ => match e.status {
            None | Some(408 | 429) => false,
            Some(s) => s < 500,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::github::ErrorInfo;

    fn err(kind: ErrorKind, status: Option<u16>) -> GitHubError {
        GitHubError {
            kind,
            status,
            info: Box::new(ErrorInfo {
                operation: "start workflow".into(),
                method: "POST".into(),
                path: "/repos/o/r/actions/workflows/w/dispatches".into(),
                message: "m".into(),
                details: vec![],
                documentation_url: None,
                request_id: None,
                hint: None,
            }),
        }
    }

    #[test]
    fn only_answers_a_retry_cannot_change_are_permanent() {
        for (kind, status) in [
            (ErrorKind::Unauthorized, 401),
            (ErrorKind::PermissionDenied, 403),
            (ErrorKind::NotFound, 404),
            (ErrorKind::Rejected, 422),
        ] {
            assert!(is_permanent(&err(kind, Some(status))), "{status}");
        }
        for (kind, status) in [
            (ErrorKind::Server, Some(500)),
            (ErrorKind::Server, Some(503)),
            (ErrorKind::RateLimited, Some(403)),
            (ErrorKind::RateLimited, Some(429)),
            (ErrorKind::Rejected, Some(408)),
            (ErrorKind::Transport, None),
        ] {
            assert!(!is_permanent(&err(kind, status)), "{status:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let config = AutoDispatch {
            repository: RepoName::parse("o/r").unwrap(),
            workflow: "defsync-pull.yml".into(),
            git_ref: "main".into(),
            token: "ghp_secretsecret".into(),
            api_url: "https://api.github.com".into(),
            poll_interval: Duration::from_secs(1),
            policy: RetryPolicy::default(),
            run_timeout: None,
        };
        assert!(!format!("{config:?}").contains("secret"));
    }
}
