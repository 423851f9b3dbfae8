//! `defsync conformance`: a black-box check of a running Sync API server against every rule of
//! contract part 3, over HTTP only, on scratch projects it creates itself.
//!
//! Each [`Rule`] has a stable id (`group.name`) and names the contract section it checks. The
//! runner runs the selected rules one after another (a rule may send requests in parallel) and
//! collects a [`Report`]: pass, fail or skip per rule, with the exchanges as evidence.

mod auth;
mod commits;
mod concurrency;
mod context;
mod definitions;
mod idempotency;
mod limits;
mod reads;
mod record;
mod robustness;
mod runs;

use std::time::Duration;

use serde::Serialize;

pub use context::Cx;

/// The version of the `--json` document; bumped when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// What to check, and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server's base URL.
    pub platform: String,
    /// Never printed; sent only as `Authorization: Bearer`.
    pub api_key: String,
    /// Rule ids or group names (`auth`, `commits.head_moved`); empty means every rule.
    pub only: Vec<String>,
    /// The largest body sent when probing for the server's 413, in bytes.
    pub max_body: u64,
    /// Parallel commits in the concurrency rule.
    pub parallel: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Allow plain `http://` to hosts other than loopback.
    pub allow_insecure_http: bool,
}

/// One rule of contract part 3.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rule {
    /// Stable: scripts select and read rules by it.
    pub id: &'static str,
    /// The contract section the rule checks.
    pub section: &'static str,
    /// What a conforming server does, in one line.
    pub summary: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// Why a rule did not pass.
#[derive(Debug)]
pub enum Verdict {
    Fail(String),
    Skip(String),
}

/// A rule's outcome: `Ok` is a pass.
pub type Outcome = Result<(), Verdict>;

/// Fails the rule with a message unless `cond` holds.
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::conformance::Verdict::Fail(format!($($msg)+)));
        }
    };
}
pub(crate) use check;

/// One rule's result in the report.
#[derive(Debug, Clone, Serialize)]
pub struct RuleResult {
    pub id: &'static str,
    pub section: &'static str,
    pub summary: &'static str,
    pub status: Status,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The exchanges the rule made: method, path, status and the relevant part of the answer.
    pub evidence: Vec<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// The whole run: the `--json` document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool: &'static str,
    pub contract: &'static str,
    pub platform: String,
    /// The prefix of every scratch project this run created.
    pub scratch_prefix: String,
    pub rules: Vec<RuleResult>,
    pub summary: Summary,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.summary.failed == 0
    }
}

/// Declares every rule once: the table [`RULES`] and the dispatch from id to check.
macro_rules! rules {
    ($($id:literal, $section:literal, $summary:literal => $check:path;)+) => {
        /// Every rule, in the order they run.
        pub const RULES: &[Rule] = &[$(Rule { id: $id, section: $section, summary: $summary }),+];

        async fn dispatch(id: &str, cx: &Cx) -> Outcome {
            match id {
                $($id => $check(cx).await,)+
                other => Err(Verdict::Fail(format!("no check is registered for rule {other}"))),
            }
        }
    };
}

rules! {
    "auth.no_key", "3 (every request carries Authorization; 401 unauthorized)",
        "a request without a key is 401 unauthorized, and writes nothing" => auth::no_key;
    "auth.wrong_key", "3 (401 unauthorized)",
        "a request with a key the server does not know is 401 unauthorized, and writes nothing" => auth::wrong_key;
    "errors.shape", "3 (every error body is {\"error\": {\"code\", \"message\"}})",
        "error answers carry the contract's error body" => auth::error_shape;
    "commits.not_found", "3 (status codes: 404 not_found)",
        "an unknown project or commit is 404 not_found on every endpoint" => commits::not_found;
    "commits.create", "3 (creating a commit: 201)",
        "the first commit (parent null) is 201 with seq 1, the parent sent, the message and origin" => commits::create;
    "commits.chain", "3 (objects: seq is the parent's + 1)",
        "each commit's seq is its parent's + 1, and the project's head is the newest commit" => commits::chain;
    "commits.head_moved", "3 (creating a commit: 409 head_moved)",
        "a stale parent is 409 head_moved with the current head, and writes nothing" => commits::head_moved;
    "commits.invalid_key", "3 (creating a commit: 422 invalid) and 1",
        "a put whose kind or name breaks part 1 is 422 invalid with details naming it" => commits::invalid_key;
    "commits.invalid_spec", "3 (creating a commit: 422 invalid) and 1",
        "a put whose spec is not I-JSON is 422 invalid with details naming it" => commits::invalid_spec;
    "commits.invalid_delete", "3 (creating a commit: 422 invalid)",
        "a delete of a key that does not exist is 422 invalid with details naming it" => commits::invalid_delete;
    "commits.empty_commit", "3 (creating a commit: 422 empty_commit)",
        "changes that change nothing are 422 empty_commit" => commits::empty_commit;
    "commits.link_mismatch", "3 (creating a commit: 422 link_mismatch)",
        "a git origin whose repository, ref or path differs from the record's is 422 link_mismatch" => commits::link_mismatch;
    "commits.atomic", "3 (creating a commit: atomic)",
        "a commit with one bad change writes nothing at all" => commits::atomic;
    "idempotency.replay", "3 (creating a commit: Idempotency-Key)",
        "the same Idempotency-Key and body returns the first 201 again and writes nothing more" => idempotency::replay;
    "idempotency.reused", "3 (creating a commit: Idempotency-Key)",
        "the same Idempotency-Key with another body is 422 idempotency_key_reused" => idempotency::reused;
    "idempotency.failure_not_stored", "3 (creating a commit: Idempotency-Key)",
        "an answer other than 201 is not stored: the key can be used again" => idempotency::failure_not_stored;
    "record.etag", "3 (the entity tag)",
        "GET of the project and of the base carry the same ETag, \"none\" with no record" => record::etag;
    "record.if_match", "3 (updating the record and the base: 200, 412)",
        "PUT /sync with the current ETag is 200 with a new ETag; a stale If-Match is 412 and writes nothing" => record::if_match;
    "record.sync_regression", "3 (updating the record: 409 sync_regression)",
        "PUT /sync with a commit older than the record's is 409 sync_regression" => record::sync_regression;
    "record.commit_not_found", "3 (updating the record: 404)",
        "PUT /sync naming a commit that does not exist is 404" => record::commit_not_found;
    "record.replace_base", "3 (updating the record and the base: replace_base)",
        "base applies as a change list; replace_base empties the base first" => record::replace_base;
    "record.base_digests", "3 (updating the record: 422 invalid; v1.1 base digests)",
        "any well-formed digest is accepted in base; a malformed digest or key is 422 invalid" => record::base_digests;
    "record.git_commit", "3 (creating a commit: origin git)",
        "a git commit sets the record's commit, seq and git_commit and the base of exactly its keys" => record::git_commit;
    "record.other_origin", "3 (creating a commit: origin git only)",
        "a commit whose origin is not git leaves the record and the base alone" => record::other_origin;
    "record.base_blob", "3 (v1.2: blob proofs, updating the base)",
        "PUT /sync stores each base entry's blob with its digest, drops it when the digest is set without one, and refuses a malformed one" => record::base_blob;
    "record.git_commit_blob", "3 (v1.2: blob proofs, creating a commit)",
        "a git commit sets each put key's base blob to the put's, or none; other origins leave blobs alone" => record::git_commit_blob;
    "reads.manifest_order", "3 (manifest: sorted by kind, then name, by UTF-8 bytes)",
        "manifest and base entries are sorted by kind, then name, comparing UTF-8 bytes" => reads::manifest_order;
    "reads.manifest_size", "3 (manifest: size)",
        "a manifest entry's size is the byte length of the definition's canonical form" => reads::manifest_size;
    "reads.manifest_etag", "3 (v1.2: manifest ETag and If-None-Match; skipped without an ETag)",
        "a manifest's ETag is the same for its commit and another for another; If-None-Match with it is 304 with no body" => reads::manifest_etag;
    "reads.commit_get", "3 (GET a commit)",
        "GET of a commit answers the commit as created" => reads::commit_get;
    "reads.batch_get", "3 (batch-get: objects and missing)",
        "batch-get answers the objects it holds and lists the other digests in missing" => reads::batch_get;
    "reads.batch_get_any_commit", "3 (batch-get: any commit of the project)",
        "a definition of any earlier commit can be fetched, even after it was deleted or changed" => reads::batch_get_any_commit;
    "reads.batch_get_limits", "3 (batch-get: at most 1000 digests)",
        "1000 digests are answered; 1001 are refused" => reads::batch_get_limits;
    "reads.commits_paging", "3 (commits?after_seq=N&limit=M)",
        "commits come in ascending seq after after_seq, at most limit, 100 by default" => reads::commits_paging;
    "part1.vectors", "1 (digests; vectors.json)",
        "every definition of the test vectors is accepted and stored as sent: its digest, size and spec" => definitions::vectors;
    "part1.kind", "1 (kind)",
        "kinds outside ^[a-z][a-z0-9-]{0,62}$ are 422 invalid; the longest valid one is accepted" => definitions::kind;
    "part1.name", "1 (name)",
        "names that are empty, over 200 characters, hold control characters or edge white space are 422 invalid" => definitions::name;
    "part1.ijson", "1 (spec: I-JSON)",
        "integers beyond ±(2^53−1), duplicate keys and invalid Unicode are 422 invalid; the limits themselves pass" => definitions::ijson;
    "part1.depth", "1 (spec: at most 64 levels, v1.1)",
        "a spec nested 64 levels is accepted and 65 levels is 422 invalid" => definitions::depth;
    "part1.size", "1 (the canonical form is at most 1 MiB)",
        "a definition of 1 MiB is accepted and one byte more is 422 invalid" => definitions::size;
    "limits.body_64mib", "3 (413: at least 64 MiB must be accepted)",
        "a commit body of more than 64 MiB is accepted" => limits::body_64mib;
    "reads.batch_get_bytes", "3 (batch-get: at most 16 MiB of canonical forms)",
        "16 MiB of canonical forms are answered; more are refused" => reads::batch_get_bytes;
    "limits.body_413", "3 (413 payload_too_large)",
        "a body over the server's own limit is 413 payload_too_large" => limits::body_413;
    "concurrency.one_winner", "3 (creating a commit: parent must equal the head) and 4 (concurrency)",
        "of N parallel commits on one parent exactly one wins; the others are 409 head_moved" => concurrency::one_winner;
    "robustness.no_redirect", "3 (clients never follow redirects)",
        "no authenticated request is ever answered with a redirect" => robustness::no_redirect;
    "runs.report", "3 (v1.2 run reports: optional; skipped on 404 or 405)",
        "POST /runs stores a valid report (201), refuses an invalid key (422) and an unknown project (404)" => runs::report;
}

/// Why the run could not start: bad options or an unreachable server (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// The rules `only` selects: exact ids, or group names before the dot.
pub fn select(only: &[String]) -> Result<Vec<Rule>, SetupError> {
    if only.is_empty() {
        return Ok(RULES.to_vec());
    }
    for o in only {
        let known = RULES.iter().any(|r| r.id == o || r.id.split('.').next() == Some(o.as_str()));
        if !known {
            return Err(SetupError(format!(
                "--only {o}: no such rule or group; see docs/conformance.md for the rule ids (groups: {})",
                groups().join(", ")
            )));
        }
    }
    Ok(RULES
        .iter()
        .filter(|r| only.iter().any(|o| r.id == o || r.id.split('.').next() == Some(o.as_str())))
        .copied()
        .collect())
}

fn groups() -> Vec<&'static str> {
    let mut g: Vec<&str> = RULES.iter().filter_map(|r| r.id.split('.').next()).collect();
    g.dedup();
    g
}

/// Runs the selected rules against the server; `progress` sees each result as it comes.
pub async fn run(options: &Options, mut progress: impl FnMut(&RuleResult)) -> Result<Report, SetupError> {
    let rules = select(&options.only)?;
    let cx = Cx::new(options)?;
    cx.reachable().await?;
    let mut results = Vec::with_capacity(rules.len());
    for rule in rules {
        cx.begin_rule();
        let started = std::time::Instant::now();
        let outcome = dispatch(rule.id, &cx).await;
        let (status, reason) = match outcome {
            Ok(()) => (Status::Pass, None),
            Err(Verdict::Fail(m)) => (Status::Fail, Some(m)),
            Err(Verdict::Skip(m)) => (Status::Skip, Some(m)),
        };
        let result = RuleResult {
            id: rule.id,
            section: rule.section,
            summary: rule.summary,
            status,
            reason,
            evidence: cx.take_evidence(),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        progress(&result);
        results.push(result);
    }
    let count = |s| results.iter().filter(|r| r.status == s).count();
    let summary = Summary { passed: count(Status::Pass), failed: count(Status::Fail), skipped: count(Status::Skip) };
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        tool: concat!("defsync ", env!("CARGO_PKG_VERSION")),
        contract: "1.2",
        platform: cx.base_url().to_owned(),
        scratch_prefix: cx.scratch_prefix().to_owned(),
        rules: results,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_are_unique_and_well_formed() {
        let mut ids: Vec<&str> = RULES.iter().map(|r| r.id).collect();
        for id in &ids {
            let (group, name) = id.split_once('.').expect("group.name");
            assert!(!group.is_empty() && !name.is_empty(), "{id}");
            assert!(id.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_' || c.is_ascii_digit()), "{id}");
        }
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "duplicate rule ids");
    }

    #[test]
    fn only_selects_ids_and_groups() {
        let ids = |only: &[&str]| -> Vec<&str> {
            select(&only.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap().iter().map(|r| r.id).collect()
        };
        assert_eq!(ids(&["auth.no_key"]), ["auth.no_key"]);
        assert_eq!(ids(&["auth"]), ["auth.no_key", "auth.wrong_key"]);
        assert!(select(&["nope".into()]).is_err());
        assert!(select(&["auth.no".into()]).is_err());
        assert_eq!(ids(&[]).len(), RULES.len());
    }

    #[test]
    fn the_docs_list_every_rule() {
        let docs = include_str!("../../docs/conformance.md");
        for r in RULES {
            assert!(docs.contains(&format!("`{}`", r.id)), "docs/conformance.md does not list {}", r.id);
        }
    }
}
