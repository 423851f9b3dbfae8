//! Signed webhooks from the forges, which tell `serve` what became of the runs its dispatches
//! started: `POST /v1/webhooks/github` (`workflow_run`, `push`) and `POST /v1/webhooks/gitlab`
//! (pipeline and push events).
//!
//! A request is checked before anything in it is read: GitHub's `X-Hub-Signature-256` (an
//! HMAC-SHA256 of the raw body, compared in constant time), GitLab's `X-Gitlab-Token` (its
//! SHA-256 compared in constant time). A request that fails is 401 and nothing is recorded.
//! A verified delivery is recorded in the store (its ID drops a replay) and answered 202 at
//! once, well within GitHub's 10 s; the work happens after the answer, in a task that also
//! finishes, at the next start, any delivery a stop cut off.
//!
//! An event is a hint, never the state: for a `workflow_run`, the run is read back from GitHub's
//! API with the dispatch token, and what the API says is recorded on the outbox row that started
//! it (matched by run ID, or by the commit ID in the run's title where GitHub named no run).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::{Answer, AppState, Failure, blocking, json};
use crate::api::ApiError;
use crate::forge::github::webhook::{self as gh, Event as GitHubEvent};
use crate::forge::github::{ErrorKind, GitHub, GitHubOptions, RepoName, WorkflowRun};
use crate::forge::gitlab::webhook::{self as glh, Event as GitLabEvent};
use crate::forge::gitlab::{ErrorKind as GlErrorKind, GitLab, GitLabOptions, Project as GitLabProject, TokenKind};
use crate::output::data;
use crate::server::targets::ForgeKind;
use crate::store::{Delivery, RunStatus, Store};

/// The largest webhook body accepted: workflow_run and pipeline events are a few tens of KiB;
/// a push event lists at most 20 commits. GitHub caps payloads at 25 MB; a larger body is 413.
pub const MAX_WEBHOOK_BODY_BYTES: usize = 4 * 1024 * 1024;

/// How often recorded deliveries are looked for when nothing wakes the task: a delivery whose
/// processing failed for a passing reason (GitHub down, a rate limit) is tried again then.
const RETRY_INTERVAL: Duration = Duration::from_secs(30);

/// What `serve` needs to accept and act on webhooks.
#[derive(Clone, Default)]
pub struct WebhookOptions {
    /// The GitHub webhook's secret (`DEFSYNC_GITHUB_WEBHOOK_SECRET`); `None`: GitHub webhooks
    /// are refused (404).
    pub github_secret: Option<String>,
    /// SHA-256 (hex) of each accepted GitLab webhook token: `DEFSYNC_GITLAB_WEBHOOK_TOKEN_SHA256`
    /// as `webhook-setup` prints it, and that of `DEFSYNC_GITLAB_WEBHOOK_TOKEN`. Empty: GitLab
    /// webhooks are refused (404).
    pub gitlab_token_sha256: Vec<String>,
    /// A token that may read the projects' pipelines (`read_api`): pipelines are read back from
    /// the API. Without one, the event's own status is recorded.
    pub gitlab_read_token: Option<String>,
    /// GitLab's API root, for reading pipelines back.
    pub gitlab_api_url: String,
    /// GitLab projects (path or ID) this server dispatches to, besides those its outbox names.
    pub gitlab_projects: Vec<String>,
}

impl std::fmt::Debug for WebhookOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Field names without "secret": a log search for the word should find no value.
        f.debug_struct("WebhookOptions")
            .field("github", &self.github_secret.as_ref().map(|_| "<hidden>"))
            .field("gitlab_tokens", &self.gitlab_token_sha256.len())
            .field("gitlab_reader", &self.gitlab_read_token.as_ref().map(|_| "<hidden>"))
            .field("gitlab_api_url", &self.gitlab_api_url)
            .field("gitlab_projects", &self.gitlab_projects)
            .finish()
    }
}

impl WebhookOptions {
    pub fn any(&self) -> bool {
        self.github_secret.is_some() || !self.gitlab_token_sha256.is_empty()
    }
}

/// The SHA-256 of a token, in lowercase hex: the form GitLab tokens are configured in.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Reads GitHub runs back, for the one repository this server dispatches to.
pub(super) struct GitHubReader {
    pub client: GitHub,
    pub repository: RepoName,
}

/// The webhook side of a running `serve`.
pub(super) struct Webhooks {
    github_secret: Option<Vec<u8>>,
    /// One per GitHub repository the server dispatches to.
    github: Vec<GitHubReader>,
    gitlab_tokens: Vec<[u8; 32]>,
    gitlab: Option<GitLab>,
    gitlab_projects: Vec<String>,
    wake: Notify,
}

impl Webhooks {
    /// `dispatch` gives the repository and token runs are read with.
    pub(super) fn new(options: &WebhookOptions, dispatch: Option<&super::AutoDispatch>) -> anyhow::Result<Self> {
        let targets = dispatch.map(|d| d.targets.as_slice()).unwrap_or_default();
        let mut github: Vec<GitHubReader> = Vec::new();
        for t in targets.iter().filter(|t| t.forge == ForgeKind::Github) {
            let repository = RepoName::parse(&t.repository)?;
            if github.iter().any(|g| g.repository == repository) {
                continue;
            }
            let client = GitHub::new(GitHubOptions::new(t.token().to_owned(), t.api_url.clone()))?;
            github.push(GitHubReader { client, repository });
        }
        let mut gitlab_projects = options.gitlab_projects.clone();
        gitlab_projects.extend(targets.iter().filter(|t| t.forge == ForgeKind::Gitlab).map(|t| t.repository.clone()));
        if options.github_secret.is_some() && github.is_empty() {
            tracing::warn!(
                "GitHub webhooks are on, but no dispatch is configured: every event is for a repository this server \
                 does not dispatch to, and is ignored. Configure --dispatch-repository and DEFSYNC_DISPATCH_TOKEN"
            );
        }
        let mut gitlab_tokens = Vec::new();
        for (i, h) in options.gitlab_token_sha256.iter().enumerate() {
            let bytes = hex::decode(h.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
            let Some(hash) = bytes else {
                anyhow::bail!(
                    "GitLab webhook token hash #{} is not 64 hex digits: give DEFSYNC_GITLAB_WEBHOOK_TOKEN_SHA256 as \
                     `defsync serve webhook-setup --print` printed it",
                    i + 1
                );
            };
            gitlab_tokens.push(hash);
        }
        let gitlab = match &options.gitlab_read_token {
            Some(token) if !gitlab_tokens.is_empty() => {
                Some(GitLab::new(GitLabOptions::new(token.clone(), TokenKind::Access, options.gitlab_api_url.clone()))?)
            }
            _ => None,
        };
        if !gitlab_tokens.is_empty() && gitlab.is_none() {
            tracing::warn!(
                "GitLab webhooks are on without DEFSYNC_GITLAB_READ_TOKEN: a pipeline's status is taken from the \
                 event itself (sent with the webhook token) rather than read back from GitLab's API"
            );
        }
        Ok(Webhooks {
            github_secret: options.github_secret.as_ref().map(|s| s.as_bytes().to_vec()),
            github,
            gitlab_tokens,
            gitlab,
            gitlab_projects,
            wake: Notify::new(),
        })
    }

    /// Whether `token` is an accepted GitLab webhook token: its SHA-256 against each, with no
    /// comparison stopping early.
    fn gitlab_token_ok(&self, token: &[u8]) -> bool {
        let given: [u8; 32] = Sha256::digest(token).into();
        let mut ok = false;
        for known in &self.gitlab_tokens {
            let diff = given.iter().zip(known).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            ok |= std::hint::black_box(diff) == 0;
        }
        ok
    }

    /// The reader of `repository` when it is one this server dispatches to (GitHub's names
    /// ignore case).
    fn github_reader(&self, repository: &str) -> Option<&GitHubReader> {
        self.github.iter().find(|g| g.repository.to_string().eq_ignore_ascii_case(repository))
    }

    fn knows_github(&self, repository: &str) -> bool {
        self.github_reader(repository).is_some()
    }
}

/// Whether this server dispatches to GitLab project `path` or `id`: configured, or named by a
/// row of its outbox.
async fn knows_gitlab(s: &AppState, hooks: &Webhooks, path: &str, id: u64) -> Result<bool, Failure> {
    let id = id.to_string();
    if hooks.gitlab_projects.iter().any(|p| p.eq_ignore_ascii_case(path) || *p == id) {
        return Ok(true);
    }
    let store = s.store.clone();
    let path = path.to_owned();
    blocking(move || Ok(store.dispatched_to("gitlab", &path)? || store.dispatched_to("gitlab", &id)?)).await
}

fn refused(status: u16, code: &str, message: impl Into<String>) -> Failure {
    Failure(ApiError::new(status, code, message))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

fn answer(status: StatusCode, state: &str, reason: Option<String>) -> Answer {
    let mut body = serde_json::json!({ "status": state });
    if let Some(reason) = reason {
        body["reason"] = reason.into();
    }
    Ok(json(status, &body))
}

/// `POST /v1/webhooks/github`.
pub(super) async fn github(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Answer {
    let Some(hooks) = s.webhooks.as_ref() else {
        return Err(webhooks_off("GitHub", "DEFSYNC_GITHUB_WEBHOOK_SECRET"));
    };
    let Some(secret) = hooks.github_secret.as_deref() else {
        return Err(webhooks_off("GitHub", "DEFSYNC_GITHUB_WEBHOOK_SECRET"));
    };
    // Before anything else is read: an unsigned body is not looked at.
    if let Err(e) = gh::verify_signature(secret, &body, header(&headers, gh::SIGNATURE_HEADER)) {
        tracing::warn!("webhook: GitHub delivery refused: {e}");
        return Err(refused(401, "unauthorized", e.to_string()));
    }
    let (Some(event), Some(delivery)) = (header(&headers, gh::EVENT_HEADER), header(&headers, gh::DELIVERY_HEADER))
    else {
        return Err(refused(400, "bad_request", "a GitHub delivery has X-GitHub-Event and X-GitHub-Delivery headers"));
    };
    match event {
        "ping" => return answer(StatusCode::OK, "pong", None),
        "workflow_run" | "push" => {}
        other => {
            let reason = format!("defsync uses workflow_run and push events, not {other}");
            return answer(StatusCode::ACCEPTED, "ignored", Some(reason));
        }
    }
    let Some(repository) = gh::repository(&body) else {
        return Err(refused(422, "invalid", format!("the {event} event names no repository")));
    };
    if !hooks.knows_github(&repository) {
        // 202, not 404: an organisation's webhook sends every repository's events, and GitHub
        // would list each refusal as a failed delivery.
        tracing::warn!(
            "webhook: GitHub {event} delivery {} for {} ignored: this server dispatches to no such repository",
            data(delivery),
            data(&repository)
        );
        let reason = format!("this server dispatches to no repository {repository}");
        return answer(StatusCode::ACCEPTED, "ignored", Some(reason));
    }
    record(&s, hooks, "github", delivery, event, body).await
}

/// `POST /v1/webhooks/gitlab`.
pub(super) async fn gitlab(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Answer {
    let Some(hooks) = s.webhooks.as_ref().filter(|h| !h.gitlab_tokens.is_empty()) else {
        return Err(webhooks_off("GitLab", "DEFSYNC_GITLAB_WEBHOOK_TOKEN_SHA256"));
    };
    // Before anything else is read.
    let Some(token) = headers.get(glh::TOKEN_HEADER) else {
        tracing::warn!("webhook: GitLab delivery refused: no X-Gitlab-Token");
        return Err(refused(
            401,
            "unauthorized",
            "no X-Gitlab-Token header: give the webhook the secret token `defsync serve webhook-setup --print` printed",
        ));
    };
    if !hooks.gitlab_token_ok(token.as_bytes()) {
        tracing::warn!("webhook: GitLab delivery refused: wrong X-Gitlab-Token");
        return Err(refused(
            401,
            "unauthorized",
            "the X-Gitlab-Token is not this server's: set the webhook's secret token to the one webhook-setup printed",
        ));
    }
    let (Some(event), Some(delivery)) = (header(&headers, glh::EVENT_HEADER), header(&headers, glh::UUID_HEADER))
    else {
        return Err(refused(
            400,
            "bad_request",
            "a GitLab delivery has X-Gitlab-Event and X-Gitlab-Event-UUID headers",
        ));
    };
    if !matches!(event, "Pipeline Hook" | "Push Hook") {
        let reason = format!("defsync uses Pipeline Hook and Push Hook events, not {event}");
        return answer(StatusCode::ACCEPTED, "ignored", Some(reason));
    }
    let Some((path, id)) = glh::project(&body) else {
        return Err(refused(422, "invalid", format!("the {event} event names no project")));
    };
    if !knows_gitlab(&s, hooks, &path, id).await? {
        tracing::warn!(
            "webhook: GitLab {event} delivery {} for {} ignored: this server dispatches to no such project",
            data(delivery),
            data(&path)
        );
        let reason = format!("this server dispatches to no project {path}");
        return answer(StatusCode::ACCEPTED, "ignored", Some(reason));
    }
    record(&s, hooks, "gitlab", delivery, event, body).await
}

/// Records a verified delivery and wakes the task; a replay is answered 200 and dropped.
async fn record(s: &AppState, hooks: &Webhooks, forge: &str, delivery: &str, event: &str, body: Bytes) -> Answer {
    let store = s.store.clone();
    let (f, d, e) = (forge.to_owned(), delivery.to_owned(), event.to_owned());
    let recorded = blocking(move || store.record_delivery(&f, &d, &e, &body)).await?;
    if !recorded {
        tracing::info!("webhook: {forge} delivery {} was received before: dropped", data(delivery));
        return answer(StatusCode::OK, "duplicate", None);
    }
    hooks.wake.notify_one();
    answer(StatusCode::ACCEPTED, "accepted", None)
}

fn webhooks_off(forge: &str, variable: &str) -> Failure {
    refused(404, "not_found", format!("{forge} webhooks are off on this server: set {variable} for `defsync serve`"))
}

/// Starts the task that processes recorded deliveries: those left from before first, then each
/// new one as it is recorded. It returns once `stop` turns true, between two deliveries.
pub(super) fn start(store: Arc<Store>, hooks: Arc<Webhooks>, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut stopping = stop.clone();
        while !*stop.borrow() {
            process_owed(&store, &hooks, &stop).await;
            tokio::select! {
                () = hooks.wake.notified() => {}
                () = tokio::time::sleep(RETRY_INTERVAL) => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
        }
    })
}

/// What became of one delivery.
enum Outcome {
    Done,
    /// A passing failure: the delivery stays recorded and is tried again later.
    Later,
}

async fn process_owed(store: &Arc<Store>, hooks: &Webhooks, stop: &watch::Receiver<bool>) {
    let reader = store.clone();
    let owed = match store_call(move || reader.unprocessed_deliveries()).await {
        Ok(owed) => owed,
        Err(e) => {
            tracing::error!("webhook: cannot read the recorded deliveries: {}", data(&e));
            return;
        }
    };
    for delivery in owed {
        if *stop.borrow() {
            return;
        }
        let outcome = match delivery.forge.as_str() {
            "github" => process_github(store, hooks, &delivery).await,
            "gitlab" => process_gitlab(store, hooks, &delivery).await,
            other => {
                tracing::warn!("webhook: a delivery from an unknown forge {} is dropped", data(other));
                Outcome::Done
            }
        };
        if let Outcome::Done = outcome {
            let store = store.clone();
            let (forge, id) = (delivery.forge.clone(), delivery.delivery_id.clone());
            if let Err(e) = store_call(move || store.delivery_processed(&forge, &id)).await {
                tracing::error!(
                    "webhook: cannot mark delivery {} processed: {}",
                    data(&delivery.delivery_id),
                    data(&e)
                );
            }
        }
    }
}

async fn process_github(store: &Arc<Store>, hooks: &Webhooks, d: &Delivery) -> Outcome {
    let event = match gh::parse(&d.event, &d.body) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("webhook: GitHub delivery {} dropped: {}", data(&d.delivery_id), data(&e));
            return Outcome::Done;
        }
    };
    match event {
        GitHubEvent::WorkflowRun { repository, run_id } => {
            let Some(reader) = hooks.github_reader(&repository) else {
                return Outcome::Done;
            };
            match reader.client.workflow_run(&reader.repository, run_id).await {
                Ok(run) => record_run(store, &reader.repository.to_string(), &run).await,
                Err(e) if matches!(e.kind, ErrorKind::Transport | ErrorKind::Server | ErrorKind::RateLimited) => {
                    tracing::warn!(
                        "webhook: cannot read run {run_id} of {}; trying again in {}s: {}",
                        reader.repository,
                        RETRY_INTERVAL.as_secs(),
                        data(&e.to_string())
                    );
                    Outcome::Later
                }
                Err(e) => {
                    tracing::error!(
                        "webhook: cannot read run {run_id} of {} with the dispatch token, so its status is not \
                         recorded (the token needs Actions: Read): {}",
                        reader.repository,
                        data(&e.to_string())
                    );
                    Outcome::Done
                }
            }
        }
        GitHubEvent::Push { repository, git_ref, after } => {
            record_push(store, "github", repository, git_ref, after).await
        }
        GitHubEvent::Ping | GitHubEvent::Other(_) => Outcome::Done,
    }
}

async fn process_gitlab(store: &Arc<Store>, hooks: &Webhooks, d: &Delivery) -> Outcome {
    let event = match glh::parse(&d.body) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("webhook: GitLab delivery {} dropped: {}", data(&d.delivery_id), data(&e));
            return Outcome::Done;
        }
    };
    match event {
        GitLabEvent::Pipeline { project_id, project_path, pipeline_id, status, url } => {
            let (status, url) = match &hooks.gitlab {
                // The event is a hint: the pipeline as GitLab's API has it now.
                Some(client) => match client.pipeline(&GitLabProject(project_id.to_string()), pipeline_id).await {
                    Ok(p) => (p.status.unwrap_or(status), p.web_url.or(url)),
                    Err(e)
                        if matches!(
                            e.kind,
                            GlErrorKind::Transport | GlErrorKind::Server | GlErrorKind::RateLimited
                        ) =>
                    {
                        tracing::warn!(
                            "webhook: cannot read pipeline {pipeline_id} of {}; trying again later: {}",
                            data(&project_path),
                            data(&e.to_string())
                        );
                        return Outcome::Later;
                    }
                    Err(e) => {
                        tracing::error!(
                            "webhook: cannot read pipeline {pipeline_id} of {} with DEFSYNC_GITLAB_READ_TOKEN (it needs \
                             read_api and the Reporter role), so its status is not recorded: {}",
                            data(&project_path),
                            data(&e.to_string())
                        );
                        return Outcome::Done;
                    }
                },
                None => (status, url),
            };
            let Some(run_status) = gitlab_status(&status) else {
                tracing::info!(
                    "webhook: pipeline {pipeline_id} has status {}, which defsync does not track",
                    data(&status)
                );
                return Outcome::Done;
            };
            let conclusion = run_status.is_final().then_some(status);
            let s2 = store.clone();
            let written = store_call(move || {
                // The lead's dispatch records the project as path or ID: either matches.
                let rows = s2.record_run(
                    "gitlab",
                    &project_path,
                    pipeline_id,
                    run_status,
                    conclusion.as_deref(),
                    url.as_deref(),
                )?;
                if !rows.is_empty() {
                    return Ok(rows);
                }
                s2.record_run(
                    "gitlab",
                    &project_id.to_string(),
                    pipeline_id,
                    run_status,
                    conclusion.as_deref(),
                    url.as_deref(),
                )
            })
            .await;
            log_recorded(written, "pipeline", pipeline_id, run_status)
        }
        GitLabEvent::Push { project_path, git_ref, after } => {
            record_push(store, "gitlab", project_path, git_ref, after).await
        }
        GitLabEvent::Other(_) => Outcome::Done,
    }
}

/// A GitLab pipeline status as the outbox keeps it; `None` for one defsync does not know.
/// Records that a branch moved, from either forge's push event.
async fn record_push(
    store: &Arc<Store>,
    forge: &'static str,
    repository: String,
    git_ref: String,
    after: String,
) -> Outcome {
    let store = store.clone();
    let shown = format!("{repository} {git_ref} moved to {after}");
    match store_call(move || store.record_push(forge, &repository, &git_ref, &after)).await {
        Ok(()) => {
            tracing::info!("webhook: {}", data(&shown));
            Outcome::Done
        }
        Err(e) => {
            tracing::error!("webhook: cannot record that {}: {}", data(&shown), data(&e));
            Outcome::Later
        }
    }
}

pub(super) fn gitlab_status(status: &str) -> Option<RunStatus> {
    Some(match status {
        "created" | "waiting_for_resource" | "preparing" | "pending" | "scheduled" | "manual" => RunStatus::Queued,
        "running" => RunStatus::InProgress,
        "success" => RunStatus::Succeeded,
        "failed" | "canceled" | "canceling" | "skipped" => RunStatus::Failed,
        _ => return None,
    })
}

fn log_recorded(
    written: Result<Vec<crate::store::OutboxEntry>, String>,
    what: &str,
    id: u64,
    status: RunStatus,
) -> Outcome {
    match written {
        Ok(rows) if rows.is_empty() => {
            tracing::info!(
                "webhook: {what} {id} ({}) is no dispatch of this server, or its status is older than the one \
                 recorded: nothing recorded",
                status.as_str()
            );
            Outcome::Done
        }
        Ok(rows) => {
            for r in rows {
                tracing::info!(
                    "run status: project {}, commit {}: {what} {id} {}{}{}",
                    data(&r.project),
                    data(&r.commit_id),
                    status.as_str(),
                    r.run_conclusion.as_deref().map(|c| format!(" ({c})")).unwrap_or_default(),
                    r.run_url.as_deref().map(|u| format!(" {}", data(u))).unwrap_or_default()
                );
            }
            Outcome::Done
        }
        Err(e) => {
            tracing::error!("webhook: cannot record {what} {id}: {}", data(&e));
            Outcome::Later
        }
    }
}

/// A GitHub run's status as the outbox keeps it, with the conclusion kept as GitHub says it.
/// `None` for a status defsync does not know (left as it was).
pub(super) fn github_status(run: &WorkflowRun) -> Option<RunStatus> {
    Some(match run.status.as_deref()? {
        "completed" => match run.conclusion.as_deref() {
            Some("success") => RunStatus::Succeeded,
            // failure, cancelled, timed_out, startup_failure, action_required, stale, skipped,
            // neutral: the pull did not bring the commit to Git.
            _ => RunStatus::Failed,
        },
        "in_progress" => RunStatus::InProgress,
        "queued" | "requested" | "waiting" | "pending" => RunStatus::Queued,
        _ => return None,
    })
}

/// The platform commit ID in a run's title (`defsync pull <project> <commit>`, the pull
/// workflow's `run-name`): `c_` and 26 Crockford base-32 characters.
pub(super) fn commit_in_title(title: &str) -> Option<&str> {
    title.split(|c: char| c.is_whitespace() || c == '(' || c == ')').find(|word| {
        word.len() == 28
            && word.starts_with("c_")
            && word[2..].bytes().all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b))
    })
}

async fn record_run(store: &Arc<Store>, target: &str, run: &WorkflowRun) -> Outcome {
    let Some(status) = github_status(run) else {
        tracing::info!("webhook: run {} has status {:?}, which defsync does not track", run.id, run.status);
        return Outcome::Done;
    };
    let conclusion = run.conclusion.clone();
    let url = run.html_url.clone();
    let commit = run.display_title.as_deref().and_then(commit_in_title).map(str::to_owned);
    let (store2, target2, id) = (store.clone(), target.to_owned(), run.id);
    let written = store_call(move || {
        let rows = store2.record_run("github", &target2, id, status, conclusion.as_deref(), url.as_deref())?;
        if !rows.is_empty() {
            return Ok(rows);
        }
        // GitHub named no run when it took the dispatch: the run's title carries the commit.
        match &commit {
            Some(c) if store2.attach_run("github", &target2, c, id)?.is_some() => {
                store2.record_run("github", &target2, id, status, conclusion.as_deref(), url.as_deref())
            }
            _ => Ok(rows),
        }
    })
    .await;
    log_recorded(written, "run", run.id, status)
}

/// Runs a store call off the async threads (SQLite blocks); the error as text, for the log.
async fn store_call<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the store call failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: &str, conclusion: Option<&str>) -> WorkflowRun {
        WorkflowRun {
            id: 1,
            status: Some(status.into()),
            conclusion: conclusion.map(Into::into),
            html_url: None,
            display_title: None,
            event: None,
        }
    }

    #[test]
    fn github_statuses_map_to_run_status() {
        assert_eq!(github_status(&run("queued", None)), Some(RunStatus::Queued));
        assert_eq!(github_status(&run("waiting", None)), Some(RunStatus::Queued));
        assert_eq!(github_status(&run("in_progress", None)), Some(RunStatus::InProgress));
        assert_eq!(github_status(&run("completed", Some("success"))), Some(RunStatus::Succeeded));
        for c in ["failure", "cancelled", "timed_out", "startup_failure", "skipped"] {
            assert_eq!(github_status(&run("completed", Some(c))), Some(RunStatus::Failed), "{c}");
        }
        assert_eq!(github_status(&run("something_new", None)), None);
    }

    #[test]
    fn gitlab_statuses_map_to_run_status() {
        assert_eq!(gitlab_status("pending"), Some(RunStatus::Queued));
        assert_eq!(gitlab_status("created"), Some(RunStatus::Queued));
        assert_eq!(gitlab_status("running"), Some(RunStatus::InProgress));
        assert_eq!(gitlab_status("success"), Some(RunStatus::Succeeded));
        assert_eq!(gitlab_status("canceled"), Some(RunStatus::Failed));
        assert_eq!(gitlab_status("failed"), Some(RunStatus::Failed));
        assert_eq!(gitlab_status("new-word"), None);
    }

    #[test]
    fn gitlab_tokens_compare_by_hash() {
        let options = WebhookOptions { gitlab_token_sha256: vec![token_sha256("glwt-right")], ..Default::default() };
        let hooks = Webhooks::new(&options, None).unwrap();
        assert!(hooks.gitlab_token_ok(b"glwt-right"));
        for wrong in [&b"glwt-righ"[..], b"glwt-rightt", b"", b"GLWT-RIGHT"] {
            assert!(!hooks.gitlab_token_ok(wrong));
        }
        let bad = WebhookOptions { gitlab_token_sha256: vec!["abc".into()], ..Default::default() };
        assert!(Webhooks::new(&bad, None).map(drop).unwrap_err().to_string().contains("64 hex digits"));
    }

    #[test]
    fn the_commit_is_found_in_the_run_title() {
        let id = "c_01JD7Z3K5X2Q9V8M4N6P0R1S2T";
        assert_eq!(commit_in_title(&format!("defsync pull p1 {id}")), Some(id));
        assert_eq!(commit_in_title(&format!("defsync pull ({id})")), Some(id));
        assert_eq!(commit_in_title("defsync pull"), None);
        assert_eq!(commit_in_title("c_01JD7Z3K5X2Q9V8M4N6P0R1S2"), None, "too short");
        assert_eq!(commit_in_title("c_01JD7Z3K5X2Q9V8M4N6P0R1S2U"), None, "U is not Crockford");
    }
}
