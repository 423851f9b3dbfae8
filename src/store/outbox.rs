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

use rusqlite::{Connection, Row, TransactionBehavior, params};

use super::{R, Store, clock, internal};
use crate::api::Commit;

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

    fn parse(s: &str) -> rusqlite::Result<Self> {
        Ok(match s {
            "pending" => DispatchState::Pending,
            "done" => DispatchState::Done,
            "coalesced" => DispatchState::Coalesced,
            "failed" => DispatchState::Failed,
            other => {
                return Err(super::conversion_error(std::io::Error::other(format!(
                    "unknown dispatch state {other:?}"
                ))));
            }
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

/// Queues the dispatch of `commit`; called inside `create_commit`'s transaction.
pub(super) fn enqueue(conn: &Connection, pid: i64, commit: &Commit) -> R<()> {
    conn.prepare_cached(
        "INSERT INTO dispatch_outbox (pid, commit_id, seq, created_at, state, attempts, next_attempt_ms)
         VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5)",
    )?
    .execute(params![pid, commit.id, commit.seq as i64, commit.created_at, now_ms()])?;
    Ok(())
}

fn now_ms() -> i64 {
    clock::unix_now_millis() as i64
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

const ENTRY_COLUMNS: &str = "o.id, p.id, o.commit_id, o.seq, o.created_at, o.state, o.attempts, o.next_attempt_ms,
     o.last_error, o.done_at, o.run_id, o.run_url, o.coalesced_into";

fn entry_from_row(r: &Row) -> rusqlite::Result<OutboxEntry> {
    Ok(OutboxEntry {
        id: r.get(0)?,
        project: r.get(1)?,
        commit_id: r.get(2)?,
        seq: r.get::<_, i64>(3)? as u64,
        created_at: r.get(4)?,
        state: DispatchState::parse(&r.get::<_, String>(5)?)?,
        attempts: r.get::<_, i64>(6)? as u32,
        next_attempt_ms: r.get(7)?,
        last_error: r.get(8)?,
        done_at: r.get(9)?,
        run_id: r.get::<_, Option<i64>>(10)?.map(|n| n as u64),
        run_url: r.get(11)?,
        coalesced_into: r.get(12)?,
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
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let due: Vec<(i64, i64, String, i64, String, i64)> = tx
            .prepare_cached(
                "SELECT o.id, o.pid, p.id, o.seq, o.commit_id, o.attempts
                 FROM dispatch_outbox o JOIN projects p ON p.pid = o.pid
                 WHERE o.state = 'pending' AND o.next_attempt_ms <= ?1
                   AND o.seq = (SELECT MAX(seq) FROM dispatch_outbox
                                WHERE pid = o.pid AND state = 'pending' AND next_attempt_ms <= ?1)
                 ORDER BY o.next_attempt_ms, o.id",
            )?
            .query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let done_at = clock::rfc3339(now / 1000);
        let mut claimed = Vec::with_capacity(due.len());
        for (id, pid, project, seq, commit_id, attempts) in due {
            let coalesced: Vec<String> = tx
                .prepare_cached(
                    "UPDATE dispatch_outbox SET state = 'coalesced', done_at = ?3, coalesced_into = ?4
                     WHERE pid = ?1 AND state = 'pending' AND seq < ?2 RETURNING commit_id",
                )?
                .query_map(params![pid, seq, done_at, commit_id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let attempt = u32::try_from(attempts).unwrap_or(u32::MAX).saturating_add(1);
            tx.prepare_cached("UPDATE dispatch_outbox SET attempts = ?2, next_attempt_ms = ?3 WHERE id = ?1")?
                .execute(params![id, attempt, now.saturating_add(millis(policy.backoff(attempt)))])?;
            claimed.push(ClaimedDispatch { id, project, commit_id, seq: seq as u64, attempt, coalesced });
        }
        tx.commit()?;
        Ok(claimed)
    }

    /// Records that GitHub accepted the dispatch of row `id`, with the run where it said.
    pub fn mark_dispatch_done(&self, id: i64, run_id: Option<u64>, run_url: Option<&str>) -> R<()> {
        let conn = self.lock();
        let n = conn
            .prepare_cached(
                "UPDATE dispatch_outbox SET state = 'done', done_at = ?2, run_id = ?3, run_url = ?4, last_error = NULL
                 WHERE id = ?1",
            )?
            .execute(params![id, clock::now_rfc3339(), run_id.map(|n| n as i64), run_url])?;
        if n == 0 {
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
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let attempts: i64 = tx
            .prepare_cached("SELECT attempts FROM dispatch_outbox WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .map_err(|_| internal(format!("no dispatch {id} in the outbox")))?;
        let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
        let outcome = if permanent || attempts >= policy.max_attempts {
            tx.prepare_cached(
                "UPDATE dispatch_outbox SET state = 'failed', last_error = ?2, done_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, error, clock::rfc3339(now / 1000)])?;
            DispatchFailure::GaveUp { attempts }
        } else {
            // From now, not from the claim: the request itself may have taken minutes.
            let wait = policy.backoff(attempts);
            tx.prepare_cached("UPDATE dispatch_outbox SET last_error = ?2, next_attempt_ms = ?3 WHERE id = ?1")?
                .execute(params![id, error, now.saturating_add(millis(wait))])?;
            DispatchFailure::Retry { attempts, wait }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// The outbox, oldest first: every row, or those of one project.
    pub fn dispatch_outbox(&self, project: Option<&str>) -> R<Vec<OutboxEntry>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM dispatch_outbox o JOIN projects p ON p.pid = o.pid
             WHERE ?1 IS NULL OR p.id = ?1 ORDER BY o.id"
        ))?;
        Ok(stmt.query_map([project], entry_from_row)?.collect::<rusqlite::Result<_>>()?)
    }

    /// How many rows are in each state, for the log line at start-up.
    pub fn dispatch_counts(&self) -> R<Vec<(DispatchState, u64)>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT state, count(*) FROM dispatch_outbox GROUP BY state ORDER BY state")?;
        Ok(stmt
            .query_map([], |r| Ok((DispatchState::parse(&r.get::<_, String>(0)?)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<rusqlite::Result<_>>()?)
    }
}
