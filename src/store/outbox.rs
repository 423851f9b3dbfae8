//! The dispatch outbox: a durable queue of pull-workflow dispatches, one row per commit whose
//! origin is not `git`, written in the commit's own transaction. `defsync serve`'s worker claims
//! due rows, sends them, and marks them done or failed, so a dispatch survives a crash or a
//! GitHub outage and is never lost silently.
//!
//! A row moves `pending` → `done` (sent), `coalesced` (a newer commit's dispatch of the same
//! project covered it: a pull always syncs the head) or `failed` (given up, with the reason).
//! Rows are never deleted.
//!
//! Once sent, a row also follows its run (issue 11): signed webhooks from the forge tie it to
//! the run it started, by run ID, and record the run's status as the forge reports it when
//! read back. A status only moves forward (queued → in progress → succeeded or failed); a row
//! whose dispatch started no run within a set time is `not_started`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{ApiError, R, Store, clock, internal, not_found, project_row};

/// How the worker spaces and limits its attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failure; it doubles after each further one.
    pub backoff_base: Duration,
    /// The longest wait between two attempts.
    pub backoff_cap: Duration,
    /// Attempts before a dispatch that keeps failing is given up (state `failed`).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 5 s doubling up to 10 min, 25 attempts: about three hours of retrying, long enough to
    /// ride out most GitHub incidents.
    fn default() -> Self {
        RetryPolicy { backoff_base: Duration::from_secs(5), backoff_cap: Duration::from_secs(600), max_attempts: 25 }
    }
}

impl RetryPolicy {
    /// The wait after `attempts` attempts have failed (`attempts` ≥ 1).
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.backoff_base.saturating_mul(1u32 << doublings).min(self.backoff_cap)
    }
}

/// Where a row of the outbox stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchState {
    /// Not sent yet, or to be tried again at `next_attempt_ms`.
    Pending,
    /// GitHub accepted the dispatch.
    Done,
    /// A newer commit's dispatch of the same project covered it.
    Coalesced,
    /// Given up: a permanent error, or too many attempts. `last_error` says why.
    Failed,
}

impl DispatchState {
    pub fn as_str(self) -> &'static str {
        match self {
            DispatchState::Pending => "pending",
            DispatchState::Done => "done",
            DispatchState::Coalesced => "coalesced",
            DispatchState::Failed => "failed",
        }
    }

    pub(super) fn parse(s: &str) -> R<Self> {
        Ok(match s {
            "pending" => DispatchState::Pending,
            "done" => DispatchState::Done,
            "coalesced" => DispatchState::Coalesced,
            "failed" => DispatchState::Failed,
            other => return Err(super::stored("dispatch state", format!("{other:?}"))),
        })
    }
}

/// One row of the outbox, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub project: String,
    pub commit_id: String,
    pub seq: u64,
    pub created_at: String,
    pub state: DispatchState,
    pub attempts: u32,
    /// Unix milliseconds; meaningful while pending.
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    pub done_at: Option<String>,
    /// The workflow run GitHub started, where it said.
    pub run_id: Option<u64>,
    pub run_url: Option<String>,
    /// For a coalesced row: the commit whose dispatch covered it.
    pub coalesced_into: Option<String>,
    /// `github` or `gitlab`: where the dispatch went; `None` until sent.
    pub forge: Option<String>,
    /// The repository `owner/name` or GitLab project path or ID the dispatch went to.
    pub target: Option<String>,
    /// What became of the run, from the forge's webhooks; `None` until something is known.
    pub run_status: Option<RunStatus>,
    /// The forge's own word for how the run ended (`failure`, `timed_out`, `cancelled`, …).
    pub run_conclusion: Option<String>,
    /// When the run status was last recorded (RFC 3339).
    pub run_updated_at: Option<String>,
}

/// What became of the run a dispatch started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    Queued,
    InProgress,
    Succeeded,
    Failed,
    /// No run appeared within the set time after the dispatch; the common cause is a workflow
    /// file missing or misnamed on the ref.
    NotStarted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::InProgress => "in_progress",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::NotStarted => "not_started",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RunStatus::Queued,
            "in_progress" => RunStatus::InProgress,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "not_started" => RunStatus::NotStarted,
            _ => return None,
        })
    }

    /// Whether the run has ended (or never began).
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed | RunStatus::NotStarted)
    }

    /// The order statuses move in. `not_started` is a guess made on a timer, so anything the
    /// forge says about a real run later replaces it.
    fn rank(self) -> u8 {
        match self {
            RunStatus::NotStarted => 0,
            RunStatus::Queued => 1,
            RunStatus::InProgress => 2,
            RunStatus::Succeeded | RunStatus::Failed => 3,
        }
    }

    /// Whether a row at `self` may move to `next`: forward only, since webhooks arrive in any
    /// order (a late `in_progress` after `completed` is ignored). The same status again is
    /// taken, for a run URL or conclusion learnt late.
    pub fn may_become(self, next: RunStatus) -> bool {
        next.rank() > self.rank() || next == self
    }
}

/// Where a dispatch went, for [`Store::mark_dispatch_done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentDispatch<'a> {
    /// `github` or `gitlab`.
    pub forge: &'a str,
    /// The repository `owner/name`, or the GitLab project path or ID.
    pub target: &'a str,
    /// The run (GitHub) or pipeline (GitLab) the forge said it started.
    pub run_id: Option<u64>,
    pub run_url: Option<&'a str>,
}

/// The message of a row marked `not_started`.
pub const NOT_STARTED_MESSAGE: &str = "the forge accepted the dispatch, but no run started: the common cause is a \
     workflow file missing or misnamed on the ref (check the workflow name and the ref serve dispatches to)";

/// A dispatch the worker is to send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDispatch {
    pub id: i64,
    pub project: String,
    pub commit_id: String,
    pub seq: u64,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Older pending commits of the project that this dispatch covers, now `coalesced`.
    pub coalesced: Vec<String>,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchFailure {
    /// Tried again after `wait`.
    Retry { attempts: u32, wait: Duration },
    /// Given up: the row is `failed`.
    GaveUp { attempts: u32 },
}

fn invalid_run_id(run_id: u64) -> ApiError {
    super::invalid(format!("run ID {run_id} is out of range"))
}

/// A due row of the outbox: `(id, pid, project, seq, commit_id, attempts)`.
pub(super) type DueRow = (i64, i64, String, i64, String, i64);

pub(super) fn now_ms() -> i64 {
    clock::unix_now_millis() as i64
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The columns of [`OutboxEntry`], in its order, for both backends.
pub(super) const ENTRY_COLUMNS: &str = "o.id, p.id, o.commit_id, o.seq, o.created_at, o.state, o.attempts,
     o.next_attempt_ms, o.last_error, o.done_at, o.run_id, o.run_url, o.coalesced_into, o.forge, o.target,
     o.run_status, o.run_conclusion, o.run_updated_at";

/// A row of either backend, read by column number.
pub(super) trait EntryRow {
    fn int(&self, i: usize) -> R<i64>;
    fn opt_int(&self, i: usize) -> R<Option<i64>>;
    fn text(&self, i: usize) -> R<String>;
    fn opt_text(&self, i: usize) -> R<Option<String>>;
}

/// An outbox row from the columns of [`ENTRY_COLUMNS`].
pub(super) fn entry_from(r: &dyn EntryRow) -> R<OutboxEntry> {
    let run_status = match r.opt_text(15)? {
        None => None,
        Some(s) => Some(RunStatus::parse(&s).ok_or_else(|| super::stored("run status", format!("{s:?}")))?),
    };
    Ok(OutboxEntry {
        id: r.int(0)?,
        project: r.text(1)?,
        commit_id: r.text(2)?,
        seq: r.int(3)? as u64,
        created_at: r.text(4)?,
        state: DispatchState::parse(&r.text(5)?)?,
        attempts: r.int(6)? as u32,
        next_attempt_ms: r.int(7)?,
        last_error: r.opt_text(8)?,
        done_at: r.opt_text(9)?,
        run_id: r.opt_int(10)?.map(|n| n as u64),
        run_url: r.opt_text(11)?,
        coalesced_into: r.opt_text(12)?,
        forge: r.opt_text(13)?,
        target: r.opt_text(14)?,
        run_status,
        run_conclusion: r.opt_text(16)?,
        run_updated_at: r.opt_text(17)?,
    })
}

impl Store {
    /// Turns the outbox on (`defsync serve` with a dispatch configured) or off (the default):
    /// while on, every commit whose origin is not `git` queues a dispatch of the pull workflow.
    pub fn set_dispatch_outbox(&self, on: bool) {
        self.outbox.store(on, Ordering::Relaxed);
    }

    /// Claims the dispatches due now: for each project, the newest due pending commit. Older
    /// pending commits of that project become `coalesced` into it, since one pull brings the
    /// head. Each claimed row counts an attempt and is scheduled for its retry before it is
    /// sent, so a process killed mid-request tries again after the backoff, and a second
    /// worker on the same store does not send it meanwhile.
    pub fn claim_due_dispatches(&self, policy: &RetryPolicy) -> R<Vec<ClaimedDispatch>> {
        self.claim_due_dispatches_at(now_ms(), policy)
    }

    pub(super) fn claim_due_dispatches_at(&self, now: i64, policy: &RetryPolicy) -> R<Vec<ClaimedDispatch>> {
        self.write(|tx| {
            let due = tx.due_dispatches(now)?;
            let done_at = clock::rfc3339(now / 1000);
            let mut claimed = Vec::with_capacity(due.len());
            for (id, pid, project, seq, commit_id, attempts) in due {
                let coalesced = tx.coalesce_dispatches(pid, id, seq, &done_at, &commit_id)?;
                let attempt = u32::try_from(attempts).unwrap_or(u32::MAX).saturating_add(1);
                // The lease: until then no worker, in this process or another, claims it again.
                tx.schedule_dispatch(id, attempt, now.saturating_add(millis(policy.backoff(attempt))))?;
                claimed.push(ClaimedDispatch { id, project, commit_id, seq: seq as u64, attempt, coalesced });
            }
            Ok(claimed)
        })
    }

    /// Records that the forge accepted the dispatch of row `id`: where it went, and the run
    /// where the forge said.
    pub fn mark_dispatch_done(&self, id: i64, sent: &SentDispatch<'_>) -> R<()> {
        let now = now_ms();
        let done_at = clock::rfc3339(now / 1000);
        let found = self.write(|tx| tx.dispatch_done(id, &done_at, now, sent))?;
        if !found {
            return Err(internal(format!("no dispatch {id} in the outbox")));
        }
        Ok(())
    }

    /// Records what the forge says of run `run_id` on the rows whose dispatch to `forge` and
    /// `target` (compared without case: GitHub's names are not case-sensitive) started it. A
    /// status never goes back (see [`RunStatus::may_become`]). Returns the rows updated.
    pub fn record_run(
        &self,
        forge: &str,
        target: &str,
        run_id: u64,
        status: RunStatus,
        conclusion: Option<&str>,
        run_url: Option<&str>,
    ) -> R<Vec<OutboxEntry>> {
        let run_id = i64::try_from(run_id).map_err(|_| invalid_run_id(run_id))?;
        let at = clock::now_rfc3339();
        self.write(|tx| {
            let mut updated = Vec::new();
            for row in tx.outbox_by_run(forge, target, run_id)? {
                if row.run_status.is_some_and(|current| !current.may_become(status)) {
                    continue;
                }
                tx.set_run_status(row.id, status, conclusion, run_url, &at)?;
                updated.extend(tx.outbox_row(row.id)?);
            }
            Ok(updated)
        })
    }

    /// Ties run `run_id` to the dispatch of `commit_id` to `forge`/`target` that has no run yet
    /// (the forge's answer to the dispatch named none). Returns the row, if one matched.
    pub fn attach_run(&self, forge: &str, target: &str, commit_id: &str, run_id: u64) -> R<Option<OutboxEntry>> {
        let run_id = i64::try_from(run_id).map_err(|_| invalid_run_id(run_id))?;
        self.write(|tx| match tx.attach_run(forge, target, commit_id, run_id)? {
            Some(id) => tx.outbox_row(id),
            None => Ok(None),
        })
    }

    /// Marks `not_started` the rows sent more than `timeout` ago that no run was tied to.
    /// Returns them.
    pub fn mark_runs_not_started(&self, timeout: Duration) -> R<Vec<OutboxEntry>> {
        self.mark_runs_not_started_at(now_ms(), timeout)
    }

    pub(super) fn mark_runs_not_started_at(&self, now: i64, timeout: Duration) -> R<Vec<OutboxEntry>> {
        let at = clock::rfc3339(now / 1000);
        self.write(|tx| {
            let ids = tx.awaiting_run(now.saturating_sub(millis(timeout)))?;
            let mut rows = Vec::with_capacity(ids.len());
            for id in ids {
                tx.set_run_status(id, RunStatus::NotStarted, None, None, &at)?;
                tx.set_dispatch_error(id, NOT_STARTED_MESSAGE)?;
                rows.extend(tx.outbox_row(id)?);
            }
            Ok(rows)
        })
    }

    /// "Sync now": queues a dispatch of the project's head. A pending row for the head already
    /// is the answer (its ID); an older pending one is coalesced into the new row when claimed.
    /// 404 for an unknown project, 422 for one with no commit or a server with no dispatch.
    pub fn queue_dispatch(&self, project: &str) -> R<i64> {
        if !self.outbox.load(Ordering::Relaxed) {
            return Err(ApiError::new(
                422,
                "dispatch_off",
                "this server dispatches no pull workflow: start `defsync serve` with a dispatch configured \
                 (--dispatch-repository, --dispatch-workflow and DEFSYNC_DISPATCH_TOKEN)",
            ));
        }
        let now = now_ms();
        self.write(|tx| {
            let p = project_row(tx, project)?;
            let Some(head) = super::head(tx, &p)? else {
                return Err(ApiError::new(
                    422,
                    "no_head",
                    format!("project {project:?} has no commit yet: there is nothing to sync"),
                ));
            };
            if let Some(id) = tx.pending_dispatch(p.pid, p.head_seq)? {
                return Ok(id);
            }
            tx.enqueue_dispatch(p.pid, &head, now)
        })
    }

    /// Puts a `failed` row back to `pending`, due now, with its attempts reset. 404 for an
    /// unknown row, 409 for one that is not `failed`.
    pub fn retry_dispatch(&self, id: i64) -> R<()> {
        let now = now_ms();
        self.write(|tx| {
            let row = tx.outbox_row(id)?.ok_or_else(|| not_found(format!("no dispatch {id} in the outbox")))?;
            if row.state != DispatchState::Failed {
                return Err(ApiError::new(
                    409,
                    "not_failed",
                    format!(
                        "dispatch {id} is {}, not failed: only a failed dispatch can be retried",
                        row.state.as_str()
                    ),
                ));
            }
            tx.reset_dispatch(id, now)
        })
    }

    /// One row of the outbox.
    pub fn dispatch_entry(&self, id: i64) -> R<Option<OutboxEntry>> {
        self.read(|tx| tx.outbox_row(id))
    }

    /// Records a failed attempt of row `id`. A `permanent` error (one a retry cannot fix), or
    /// the policy's last attempt, gives the dispatch up: the row becomes `failed`, keeping
    /// `error`. Otherwise it is tried again after the backoff.
    pub fn mark_dispatch_failed(
        &self,
        id: i64,
        error: &str,
        permanent: bool,
        policy: &RetryPolicy,
    ) -> R<DispatchFailure> {
        self.mark_dispatch_failed_at(now_ms(), id, error, permanent, policy)
    }

    pub(super) fn mark_dispatch_failed_at(
        &self,
        now: i64,
        id: i64,
        error: &str,
        permanent: bool,
        policy: &RetryPolicy,
    ) -> R<DispatchFailure> {
        self.write(|tx| {
            let attempts =
                tx.dispatch_attempts(id)?.ok_or_else(|| internal(format!("no dispatch {id} in the outbox")))?;
            let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
            if permanent || attempts >= policy.max_attempts {
                tx.dispatch_failed(id, error, &clock::rfc3339(now / 1000))?;
                Ok(DispatchFailure::GaveUp { attempts })
            } else {
                // From now, not from the claim: the request itself may have taken minutes.
                let wait = policy.backoff(attempts);
                tx.dispatch_retry(id, error, now.saturating_add(millis(wait)))?;
                Ok(DispatchFailure::Retry { attempts, wait })
            }
        })
    }

    /// The outbox, oldest first: every row, or those of one project.
    pub fn dispatch_outbox(&self, project: Option<&str>) -> R<Vec<OutboxEntry>> {
        self.read(|tx| tx.outbox(project))
    }

    /// How many rows are in each state, for the log line at start-up.
    pub fn dispatch_counts(&self) -> R<Vec<(DispatchState, u64)>> {
        let counts = self.read(|tx| tx.outbox_counts())?;
        counts.into_iter().map(|(state, n)| Ok((DispatchState::parse(&state)?, n as u64))).collect()
    }
}
