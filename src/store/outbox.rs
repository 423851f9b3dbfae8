//! The dispatch outbox: a durable queue of pull-workflow dispatches, one row per commit whose
//! origin is not `git`, written in the commit's own transaction. `defsync serve`'s worker claims
//! due rows, sends them, and marks them done or failed, so a dispatch survives a crash or a
//! GitHub outage and is never lost silently.
//!
//! A row moves `pending` → `done` (sent), `coalesced` (a newer commit's dispatch of the same
//! project covered it: a pull always syncs the head) or `failed` (given up, with the reason).
//! Rows are never deleted.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{R, Store, clock, internal};

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
}

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
     o.next_attempt_ms, o.last_error, o.done_at, o.run_id, o.run_url, o.coalesced_into";

/// An outbox row from the columns of [`ENTRY_COLUMNS`].
#[allow(clippy::too_many_arguments)] // one per column, named
pub(super) fn entry_of(
    id: i64,
    project: String,
    commit_id: String,
    seq: i64,
    created_at: String,
    state: &str,
    attempts: i64,
    next_attempt_ms: i64,
    last_error: Option<String>,
    done_at: Option<String>,
    run_id: Option<i64>,
    run_url: Option<String>,
    coalesced_into: Option<String>,
) -> R<OutboxEntry> {
    Ok(OutboxEntry {
        id,
        project,
        commit_id,
        seq: seq as u64,
        created_at,
        state: DispatchState::parse(state)?,
        attempts: attempts as u32,
        next_attempt_ms,
        last_error,
        done_at,
        run_id: run_id.map(|n| n as u64),
        run_url,
        coalesced_into,
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
                let coalesced = tx.coalesce_dispatches(pid, seq, &done_at, &commit_id)?;
                let attempt = u32::try_from(attempts).unwrap_or(u32::MAX).saturating_add(1);
                // The lease: until then no worker, in this process or another, claims it again.
                tx.schedule_dispatch(id, attempt, now.saturating_add(millis(policy.backoff(attempt))))?;
                claimed.push(ClaimedDispatch { id, project, commit_id, seq: seq as u64, attempt, coalesced });
            }
            Ok(claimed)
        })
    }

    /// Records that GitHub accepted the dispatch of row `id`, with the run where it said.
    pub fn mark_dispatch_done(&self, id: i64, run_id: Option<u64>, run_url: Option<&str>) -> R<()> {
        let done_at = clock::now_rfc3339();
        let found = self.write(|tx| tx.dispatch_done(id, &done_at, run_id.map(|n| n as i64), run_url))?;
        if !found {
            return Err(internal(format!("no dispatch {id} in the outbox")));
        }
        Ok(())
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
