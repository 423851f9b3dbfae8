//! The worker of `defsync serve` that starts the pull after every commit whose origin is not
//! `git`, so an edit in the dashboard becomes a commit in Git: the pull workflow on GitHub, or the
//! pull pipeline on GitLab, whichever target serves the project (see `targets.rs`).
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

use crate::output::data;
use crate::store::{ClaimedDispatch, DispatchFailure, RetryPolicy, SentDispatch, Store};

use super::metrics::Metrics;
use super::targets::{Sender, Target};

/// Where and how `serve` dispatches the pull.
#[derive(Debug, Clone)]
pub struct AutoDispatch {
    /// In order: the first that serves a project is that project's.
    pub targets: Vec<Target>,
    /// How often the outbox is read when nothing wakes the worker.
    pub poll_interval: Duration,
    pub policy: RetryPolicy,
    /// With webhooks on: a dispatch that started no run within this time is marked
    /// `not_started`. `None` without webhooks, where no run is ever seen.
    pub run_timeout: Option<Duration>,
}

impl AutoDispatch {
    /// What the start-up log line says the server dispatches to.
    pub fn describe(&self) -> String {
        match self.targets.as_slice() {
            [one] if one.projects.is_empty() => one.describe(),
            many => format!("the first of {} targets that serves the project", many.len()),
        }
    }
}

/// Sets up each target's client (failing now, at start-up, on a bad token, URL or CA file) and
/// starts the worker. `wake` is notified after each commit; the worker returns once `stop` turns true,
/// between two dispatches.
pub(super) fn start(
    store: Arc<Store>,
    config: AutoDispatch,
    wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<JoinHandle<()>> {
    let mut targets = Vec::with_capacity(config.targets.len());
    for target in &config.targets {
        let sender = target.sender().with_context(|| format!("the dispatch target {}", target.describe()))?;
        targets.push((target.clone(), sender));
    }
    let worker = Worker { store, targets, config, wake, stop, metrics };
    Ok(tokio::spawn(worker.run()))
}

struct Worker {
    store: Arc<Store>,
    targets: Vec<(Target, Sender)>,
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
        let Some((target, sender)) = self.targets.iter().find(|(t, _)| t.serves(&d.project)) else {
            let message = format!(
                "no dispatch target serves project {}: add a target whose `projects` match it to the \
                 --dispatch-targets file",
                d.project
            );
            return self.failed(&d, &what, "no target", &message, true).await;
        };
        let started = match sender.start(target, &d.project, &d.commit_id).await {
            Ok(s) => s,
            Err(e) => return self.failed(&d, &what, &target.describe(), &e.message, e.permanent).await,
        };
        match (&started.run_id, &started.note) {
            (Some(id), _) => {
                let url = started.run_url.as_deref().map(|u| format!(" {u}")).unwrap_or_default();
                tracing::info!("dispatch: started {} for {what}: run {id}{}", target.describe(), data(&url));
            }
            (None, Some(note)) => {
                tracing::info!("dispatch: started {} for {what} ({})", target.describe(), data(note));
            }
            (None, None) => tracing::info!("dispatch: started {} for {what}", target.describe()),
        }
        let store = self.store.clone();
        let (run_id, run_url) = (started.run_id, started.run_url);
        let (forge, repository) = (target.forge.as_str(), target.repository.clone());
        let done = move || {
            let sent = SentDispatch { forge, target: &repository, run_id, run_url: run_url.as_deref() };
            store.mark_dispatch_done(d.id, &sent)
        };
        if let Err(e) = blocking(done).await {
            // The row stays pending: it is sent again after its backoff, which starts one more
            // run that finds nothing to pull. Better than losing it.
            tracing::error!("dispatch: started {} for {what}, but cannot record it: {}", target.describe(), data(&e));
        }
    }

    async fn failed(&self, d: &ClaimedDispatch, what: &str, target: &str, message: &str, permanent: bool) {
        let c = &self.config;
        self.metrics.dispatch_failed();
        let store = self.store.clone();
        let (id, policy, error) = (d.id, c.policy, message.to_owned());
        let outcome = blocking(move || store.mark_dispatch_failed(id, &error, permanent, &policy)).await;
        match outcome {
            Ok(DispatchFailure::Retry { attempts, wait }) => tracing::warn!(
                "dispatch: cannot start {target} for {what} (attempt {attempts} of {}); retrying in {:.1}s: {}",
                c.policy.max_attempts,
                wait.as_secs_f64(),
                data(message)
            ),
            Ok(DispatchFailure::GaveUp { attempts }) => {
                let why = if permanent {
                    "an error that retrying cannot fix".to_owned()
                } else {
                    format!("{attempts} attempts, the most allowed")
                };
                tracing::error!(
                    "dispatch: gave up starting {target} for {what} after {why}; it stays in the outbox as failed. \
                     Fix the cause, then make a new commit or run `defsync dispatch` by hand: {}",
                    data(message)
                );
            }
            Err(store_error) => tracing::error!(
                "dispatch: cannot start {target} for {what}: {}; and cannot record the failure ({}), so it is retried \
                 after its backoff",
                data(message),
                data(&store_error)
            ),
        }
    }
}

/// How often the not-started sweep runs: a quarter of the timeout, at most every 30 s.
fn sweep_interval(timeout: Duration) -> Duration {
    (timeout / 4).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::gitlab::PassAs;
    use crate::server::targets::{FlagTarget, ForgeKind};

    #[test]
    fn debug_never_shows_the_token() {
        let target = Target::from_flags(FlagTarget {
            forge: ForgeKind::Github,
            repository: "o/r".into(),
            git_ref: "main".into(),
            workflow: "defsync-pull.yml".into(),
            token: "ghp_secretsecret".into(),
            github_api_url: "https://api.github.com".into(),
            gitlab_url: None,
            gitlab_ca_cert: None,
            pass_as: PassAs::Variables,
        })
        .unwrap();
        let config = AutoDispatch {
            targets: vec![target],
            poll_interval: Duration::from_secs(1),
            policy: RetryPolicy::default(),
            run_timeout: None,
        };
        assert!(!format!("{config:?}").contains("secret"));
        assert_eq!(config.describe(), "defsync-pull.yml on main in o/r");
    }
}
