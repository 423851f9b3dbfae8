//! What `serve` learns about runs from outside the Sync API: webhook deliveries (kept by ID to
//! drop duplicates, and with their body until processed, so one a stop cut off is finished at
//! the next start), the last push seen on each branch, and the reports runs post (contract
//! v1.2, `POST /v1/projects/{project}/runs`).

use std::time::Duration;

use serde::Serialize;

use super::{R, Store, clock, internal, invalid, project_row};
use crate::api::{ReportedConflict, ReportedKey, RunReport};
use crate::model::{validate_kind, validate_name};

/// How long a delivery ID is remembered. GitHub lets a person redeliver a delivery of the last
/// three days; a week covers that with room.
pub const DELIVERY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Reports kept per project; older ones are deleted as new ones arrive.
pub const MAX_RUN_REPORTS_KEPT: i64 = 100;
/// The longest delivery ID accepted (GitHub's and GitLab's are UUIDs).
const MAX_DELIVERY_ID_LEN: usize = 200;
/// Conflicts and deferred keys in one report.
pub const MAX_REPORTED_KEYS: usize = 1000;

/// A webhook delivery, verified, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `github` or `gitlab`.
    pub forge: String,
    pub delivery_id: String,
    /// `workflow_run`, `push`, `Pipeline Hook`, …
    pub event: String,
    pub received_ms: i64,
    pub body: Vec<u8>,
}

/// The last push seen on a branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BranchPush {
    pub forge: String,
    pub repository: String,
    /// As the forge sent it: `refs/heads/main`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The commit the branch moved to.
    pub after: String,
    /// When the push was recorded (RFC 3339).
    pub at: String,
}

/// A run report as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredRunReport {
    pub id: i64,
    pub project: String,
    /// When the platform received it (RFC 3339).
    pub received_at: String,
    #[serde(flatten)]
    pub report: RunReport,
}

/// A report's columns; the lists as JSON text.
pub(crate) struct ReportRow {
    pub id: i64,
    pub received_at: String,
    pub command: String,
    pub outcome: String,
    pub run_url: Option<String>,
    pub git_commit: Option<String>,
    pub platform_commit: Option<String>,
    pub conflicts: String,
    pub deferred: String,
}

fn word(field: &str, value: &str, max: usize) -> R<()> {
    let ok = (1..=max).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{field} must be 1 to {max} characters among a-z, 0-9, '-' and '_', not {value:?}")))
    }
}

fn short(field: &str, value: Option<&str>, max: usize) -> R<()> {
    match value {
        Some(v) if v.is_empty() || v.len() > max || v.chars().any(char::is_control) => {
            Err(invalid(format!("{field} must have 1 to {max} bytes and no control characters")))
        }
        _ => Ok(()),
    }
}

fn check_key(what: &str, kind: &str, name: &str) -> R<()> {
    validate_kind(kind).and_then(|()| validate_name(name)).map_err(|e| invalid(format!("{what} {kind}/{name:?}: {e}")))
}

/// Checks a report against the contract's rules (v1.2): a known form, keys valid by part 1.
fn validate_report(r: &RunReport) -> R<()> {
    word("command", &r.command, 32)?;
    word("outcome", &r.outcome, 64)?;
    short("run_url", r.run_url.as_deref(), 2048)?;
    if let Some(url) = &r.run_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(invalid("run_url must be an http(s) URL"));
    }
    short("git_commit", r.git_commit.as_deref(), 100)?;
    short("platform_commit", r.platform_commit.as_deref(), 100)?;
    if r.conflicts.len() > MAX_REPORTED_KEYS || r.deferred.len() > MAX_REPORTED_KEYS {
        return Err(invalid(format!(
            "a report lists at most {MAX_REPORTED_KEYS} conflicts and {MAX_REPORTED_KEYS} deferred keys; send the first ones"
        )));
    }
    for ReportedConflict { kind, name, .. } in &r.conflicts {
        check_key("conflict", kind, name)?;
    }
    for ReportedKey { kind, name } in &r.deferred {
        check_key("deferred key", kind, name)?;
    }
    Ok(())
}

fn parse_list<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> R<Vec<T>> {
    serde_json::from_str(text).map_err(|e| super::stored(&format!("run report's {what}"), e))
}

fn to_json<T: Serialize>(value: &T) -> R<String> {
    serde_json::to_string(value).map_err(|e| internal(e.to_string()))
}

impl Store {
    /// Records a verified delivery: `false` when its ID was seen before (a duplicate, dropped).
    /// Expired IDs are forgotten as it goes.
    pub fn record_delivery(&self, forge: &str, delivery_id: &str, event: &str, body: &[u8]) -> R<bool> {
        if delivery_id.is_empty()
            || delivery_id.len() > MAX_DELIVERY_ID_LEN
            || !delivery_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(invalid(format!(
                "the delivery ID must have 1 to {MAX_DELIVERY_ID_LEN} visible ASCII characters"
            )));
        }
        let now = super::outbox::now_ms();
        let delivery = Delivery {
            forge: forge.to_owned(),
            delivery_id: delivery_id.to_owned(),
            event: event.to_owned(),
            received_ms: now,
            body: body.to_vec(),
        };
        let expires = now.saturating_add(DELIVERY_TTL.as_millis() as i64);
        self.write(|tx| {
            tx.expire_deliveries(now)?;
            tx.insert_delivery(&delivery, expires)
        })
    }

    /// Deliveries recorded and not yet processed, oldest first.
    pub fn unprocessed_deliveries(&self) -> R<Vec<Delivery>> {
        self.read(|tx| tx.unprocessed_deliveries())
    }

    /// Marks a delivery processed: its body is dropped, its ID kept until it expires.
    pub fn delivery_processed(&self, forge: &str, delivery_id: &str) -> R<()> {
        let at = clock::now_rfc3339();
        self.write(|tx| tx.delivery_processed(forge, delivery_id, &at))
    }

    /// Records that `git_ref` of `repository` moved to `after`.
    pub fn record_push(&self, forge: &str, repository: &str, git_ref: &str, after: &str) -> R<()> {
        let push = BranchPush {
            forge: forge.to_owned(),
            repository: repository.to_owned(),
            git_ref: git_ref.to_owned(),
            after: after.to_owned(),
            at: clock::now_rfc3339(),
        };
        self.write(|tx| tx.put_branch_push(&push))
    }

    /// The last push seen on each branch of `repository` (compared without case), by ref.
    pub fn branch_pushes(&self, forge: &str, repository: &str) -> R<Vec<BranchPush>> {
        self.read(|tx| tx.branch_pushes(forge, repository))
    }

    /// Stores a run's report (contract v1.2); its ID. The project keeps its newest
    /// [`MAX_RUN_REPORTS_KEPT`].
    pub fn add_run_report(&self, project: &str, report: &RunReport) -> R<i64> {
        validate_report(report)?;
        let row = ReportRow {
            id: 0,
            received_at: clock::now_rfc3339(),
            command: report.command.clone(),
            outcome: report.outcome.clone(),
            run_url: report.run_url.clone(),
            git_commit: report.git_commit.clone(),
            platform_commit: report.platform_commit.clone(),
            conflicts: to_json(&report.conflicts)?,
            deferred: to_json(&report.deferred)?,
        };
        self.write(|tx| {
            let p = project_row(tx, project)?;
            let id = tx.insert_run_report(p.pid, &row)?;
            tx.trim_run_reports(p.pid, MAX_RUN_REPORTS_KEPT)?;
            Ok(id)
        })
    }

    /// The project's newest `limit` reports, newest first.
    pub fn run_reports(&self, project: &str, limit: u32) -> R<Vec<StoredRunReport>> {
        self.read(|tx| {
            let p = project_row(tx, project)?;
            let rows = tx.run_reports(p.pid, i64::from(limit))?;
            rows.into_iter()
                .map(|r| {
                    Ok(StoredRunReport {
                        id: r.id,
                        project: p.id.clone(),
                        received_at: r.received_at,
                        report: RunReport {
                            command: r.command,
                            outcome: r.outcome,
                            run_url: r.run_url,
                            git_commit: r.git_commit,
                            platform_commit: r.platform_commit,
                            conflicts: parse_list("conflicts", &r.conflicts)?,
                            deferred: parse_list("deferred keys", &r.deferred)?,
                        },
                    })
                })
                .collect()
        })
    }
}
