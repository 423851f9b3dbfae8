//! `defsync conformance` against a real `defsync serve`: every rule passes; and, behind a small
//! faulty proxy that breaks one rule at a time, the check fails naming that rule while unrelated
//! rules still pass.

use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};

use crate::proxy::{FaultAnswer, FaultProxy, FaultRequest, OnAnswer, OnRequest};
use crate::server::ServerProcess;
use crate::support::BIN;

const KEY: &str = "conformance-test-key";

struct Outcome {
    code: i32,
    report: Value,
    stderr: String,
}

impl Outcome {
    fn status(&self, id: &str) -> String {
        let rule = self.report["rules"].as_array().and_then(|r| r.iter().find(|r| r["id"] == id));
        let rule = rule.unwrap_or_else(|| panic!("rule {id} is not in the report: {}", self.stderr));
        rule["status"].as_str().unwrap_or_default().to_owned()
    }

    /// Asserts the exit status 5, that `broken` failed (and is named on stderr), and that every
    /// rule in `intact` passed.
    #[track_caller]
    fn fails_only(&self, broken: &[&str], intact: &[&str]) {
        assert_eq!(self.code, 5, "a broken rule must give exit 5: {}", self.stderr);
        for id in broken {
            assert_eq!(self.status(id), "fail", "{id} must fail: {}", self.stderr);
            assert!(self.stderr.contains(&format!("✗ {id}")), "stderr must name {id}: {}", self.stderr);
        }
        for id in intact {
            assert_eq!(self.status(id), "pass", "{id} must still pass: {}", self.stderr);
        }
    }
}

/// Runs `defsync conformance --json` with the key in the environment, as the docs say.
fn conformance(url: &str, args: &[&str]) -> Outcome {
    conformance_with_key(url, KEY, args)
}

fn conformance_with_key(url: &str, key: &str, args: &[&str]) -> Outcome {
    let mut cmd = Command::new(BIN);
    cmd.args(["conformance", "--platform", url, "--json"]).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("DEFSYNC_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("DEFSYNC_API_KEY", key);
    let out = cmd.output().expect("run defsync conformance");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    Outcome { code: out.status.code().unwrap_or(-1), report, stderr }
}

fn pass_request() -> OnRequest {
    Box::new(|_| None)
}

fn pass_answer() -> OnAnswer {
    Box::new(|_, _| None)
}

/// A scratch `serve` with a faulty proxy in front; runs the rules of `only`.
fn against_fault(on_request: OnRequest, on_answer: OnAnswer, only: &[&str]) -> Outcome {
    let (_dir, server) = ServerProcess::scratch(KEY);
    let proxy = FaultProxy::start(&server.url(), on_request, on_answer);
    let args: Vec<String> = only.iter().map(|o| format!("--only={o}")).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    conformance(&proxy.url, &args)
}

fn is_commit_post(r: &FaultRequest) -> bool {
    r.method == "POST" && r.path.ends_with("/commits")
}

#[test]
fn every_rule_passes_against_serve() {
    let (_dir, server) = ServerProcess::scratch(KEY);
    every_rule_passes(&server.url(), KEY);
}

/// Runs every rule against `url` and checks that each passes, with evidence, touching only
/// the run's scratch projects and never showing `key`. The PostgreSQL tests run it too.
pub(crate) fn every_rule_passes(url: &str, key: &str) {
    let started = Instant::now();
    let out = conformance_with_key(url, key, &[]);
    eprintln!("defsync conformance, every rule, debug build: {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = &out.report;
    assert_eq!(r["schema_version"], 1);
    let rules = r["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), defsync::conformance::RULES.len());
    for rule in rules {
        assert_eq!(rule["status"], "pass", "{rule:#}");
        assert!(rule["section"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(rule["evidence"].as_array().is_some_and(|e| !e.is_empty()), "{rule:#}");
    }
    assert_eq!(r["summary"], json!({"passed": rules.len(), "failed": 0, "skipped": 0}));
    assert!(out.stderr.contains(&format!("{} passed, 0 failed", rules.len())), "{}", out.stderr);
    // The key is a secret: never in the report, never on stderr.
    assert!(!out.stderr.contains(key) && !r.to_string().contains(key));
    // Only scratch projects were touched, and they are named after the run.
    let prefix = r["scratch_prefix"].as_str().unwrap();
    assert!(prefix.starts_with("conformance-"));
    for rule in rules {
        for line in rule["evidence"].as_array().unwrap() {
            let line = line.as_str().unwrap();
            let path = line.split(' ').nth(1).unwrap_or_default();
            if let Some(rest) = path.strip_prefix("/v1/projects/") {
                assert!(
                    rest.trim_start_matches('/').starts_with(prefix),
                    "a request outside the scratch projects: {line}"
                );
            }
        }
    }
}

#[test]
fn an_unreachable_server_or_a_refused_key_is_exit_2() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let out = conformance(&url, &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("cannot reach the server"), "{}", out.stderr);

    let (_dir, server) = ServerProcess::scratch("another-key");
    let out = conformance(&server.url(), &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("refused the API key (401)"), "{}", out.stderr);
    assert!(!out.stderr.contains(KEY));

    let out = conformance(&server.url(), &["--only", "no.such_rule"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--only no.such_rule"), "{}", out.stderr);
}

#[test]
fn a_server_that_lets_requests_without_a_key_in_fails_auth_no_key() {
    // The proxy adds the key to requests that have none, as a gateway with a default key would.
    let out = against_fault(
        Box::new(|r| {
            if !r.headers.contains_key("authorization") {
                r.headers.insert("authorization", format!("Bearer {KEY}").parse().unwrap());
            }
            None
        }),
        pass_answer(),
        &["auth", "commits.create"],
    );
    out.fails_only(&["auth.no_key"], &["auth.wrong_key", "commits.create"]);
}

#[test]
fn a_server_that_takes_any_key_fails_auth_wrong_key() {
    let out = against_fault(
        Box::new(|r| {
            if r.headers.contains_key("authorization") {
                r.headers.insert("authorization", format!("Bearer {KEY}").parse().unwrap());
            }
            None
        }),
        pass_answer(),
        &["auth", "commits.create"],
    );
    out.fails_only(&["auth.wrong_key"], &["auth.no_key", "commits.create"]);
}

#[test]
fn a_server_without_etags_fails_record_etag() {
    let out = against_fault(
        pass_request(),
        Box::new(|_, a| {
            a.headers.remove("etag");
            None
        }),
        &["record.etag", "commits.chain", "reads.batch_get"],
    );
    out.fails_only(&["record.etag"], &["commits.chain", "reads.batch_get"]);
}

#[test]
fn a_server_that_answers_500_for_head_moved_fails_commits_head_moved() {
    let out = against_fault(
        pass_request(),
        Box::new(|_, a| {
            if a.status == 409 && a.value().pointer("/error/code") == Some(&json!("head_moved")) {
                *a = FaultAnswer::json(500, &json!({"error": {"code": "internal", "message": "conflict"}}));
            }
            None
        }),
        &["commits.head_moved", "commits.chain", "record.etag"],
    );
    out.fails_only(&["commits.head_moved"], &["commits.chain", "record.etag"]);
}

#[test]
fn a_head_moved_without_the_head_fails_commits_head_moved() {
    let out = against_fault(
        pass_request(),
        Box::new(|_, a| {
            let mut v = a.value();
            if a.status == 409 && v["error"]["code"] == "head_moved" {
                v["error"].as_object_mut().unwrap().remove("head");
                a.set_value(&v);
            }
            None
        }),
        &["commits.head_moved", "commits.invalid_delete"],
    );
    out.fails_only(&["commits.head_moved"], &["commits.invalid_delete"]);
}

#[test]
fn a_manifest_out_of_order_fails_reads_manifest_order() {
    // Entries in reverse order: what a server that sorts by UTF-16 or case-folded names gets
    // wrong, made certain.
    let out = against_fault(
        pass_request(),
        Box::new(|r, a| {
            if r.path.ends_with("/manifest") && a.status == 200 {
                let mut v = a.value();
                v["entries"].as_array_mut().unwrap().reverse();
                a.set_value(&v);
            }
            None
        }),
        &["reads.manifest_order", "reads.batch_get", "commits.create"],
    );
    out.fails_only(&["reads.manifest_order"], &["reads.batch_get", "commits.create"]);
}

#[test]
fn a_wrong_manifest_size_fails_reads_manifest_size_and_the_vectors() {
    let out = against_fault(
        pass_request(),
        Box::new(|r, a| {
            if r.path.ends_with("/manifest") && a.status == 200 {
                let mut v = a.value();
                for e in v["entries"].as_array_mut().unwrap() {
                    e["size"] = json!(e["size"].as_u64().unwrap() + 1);
                }
                a.set_value(&v);
            }
            None
        }),
        &["reads.manifest_size", "part1.vectors", "reads.manifest_order"],
    );
    out.fails_only(&["reads.manifest_size", "part1.vectors"], &["reads.manifest_order"]);
}

#[test]
fn a_manifest_that_ignores_if_none_match_fails_reads_manifest_etag() {
    // A server that sends an ETag but answers every revalidation whole.
    let out = against_fault(
        Box::new(|r| {
            r.headers.remove("if-none-match");
            None
        }),
        pass_answer(),
        &["reads.manifest_etag", "reads.manifest_order"],
    );
    out.fails_only(&["reads.manifest_etag"], &["reads.manifest_order"]);
    assert!(out.stderr.contains("304"), "{}", out.stderr);
}

#[test]
fn a_manifest_etag_that_changes_fails_and_none_is_skipped() {
    // A tag that differs on every answer: a cache could never revalidate.
    let n = std::sync::atomic::AtomicU64::new(0);
    let out = against_fault(
        pass_request(),
        Box::new(move |r, a| {
            if r.path.ends_with("/manifest") && a.headers.contains_key("etag") {
                let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                a.headers.insert("etag", format!("\"v{i}\"").parse().unwrap());
            }
            None
        }),
        &["reads.manifest_etag", "reads.manifest_size"],
    );
    out.fails_only(&["reads.manifest_etag"], &["reads.manifest_size"]);

    // No ETag at all is a v1.1 platform: skipped, and the run passes.
    let out = against_fault(
        pass_request(),
        Box::new(|r, a| {
            if r.path.ends_with("/manifest") {
                a.headers.remove("etag");
            }
            None
        }),
        &["reads.manifest_etag", "reads.manifest_order"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status("reads.manifest_etag"), "skip", "{}", out.stderr);
    assert_eq!(out.status("reads.manifest_order"), "pass", "{}", out.stderr);
}

#[test]
fn a_server_that_ignores_the_idempotency_key_fails_idempotency_replay() {
    let out = against_fault(
        Box::new(|r| {
            r.headers.remove("idempotency-key");
            None
        }),
        pass_answer(),
        &["idempotency.replay", "commits.create", "commits.head_moved"],
    );
    out.fails_only(&["idempotency.replay"], &["commits.create", "commits.head_moved"]);
}

#[test]
fn a_redirect_to_an_authenticated_request_fails_robustness_no_redirect() {
    // A framework's "helpful" trailing-slash redirect.
    let out = against_fault(
        Box::new(|r| {
            let path = r.path.split('?').next().unwrap_or_default();
            (path.len() > 1 && path.ends_with('/')).then(|| {
                let mut a = FaultAnswer::json(307, &json!({}));
                a.headers.insert("location", path.trim_end_matches('/').parse().unwrap());
                a
            })
        }),
        pass_answer(),
        &["robustness", "auth.no_key"],
    );
    out.fails_only(&["robustness.no_redirect"], &["auth.no_key"]);
    assert!(out.stderr.contains("307"), "{}", out.stderr);
}

#[test]
fn invalid_without_details_fails_the_invalid_rules() {
    let out = against_fault(
        pass_request(),
        Box::new(|_, a| {
            let mut v = a.value();
            if a.status == 422 && v["error"]["code"] == "invalid" {
                v["error"].as_object_mut().unwrap().remove("details");
                a.set_value(&v);
            }
            None
        }),
        &["commits.invalid_key", "commits.invalid_delete", "commits.empty_commit", "commits.link_mismatch"],
    );
    out.fails_only(
        &["commits.invalid_key", "commits.invalid_delete"],
        &["commits.empty_commit", "commits.link_mismatch"],
    );
}

#[test]
fn a_server_that_rebases_commits_fails_concurrency_one_winner() {
    // On 409 head_moved the proxy sends the commit again on the new head, so every racer "wins".
    let out = against_fault(
        pass_request(),
        Box::new(|r, a| {
            let head = a.value().pointer("/error/head/id").cloned()?;
            if !(is_commit_post(r) && a.status == 409) {
                return None;
            }
            let mut body: Value = serde_json::from_slice(&r.body).ok()?;
            body["parent"] = head;
            let mut again = r.clone();
            again.body = body.to_string().into();
            Some(again)
        }),
        &["concurrency", "commits.create"],
    );
    out.fails_only(&["concurrency.one_winner"], &["commits.create"]);
}

#[test]
fn a_gateway_that_answers_200_to_a_large_body_fails_limits_body_413() {
    // As if a 413 were turned into 200: the proxy answers bodies over 70 MiB itself.
    let out = against_fault(
        Box::new(|r| (r.body.len() > 70 << 20).then(|| FaultAnswer::json(200, &json!({})))),
        pass_answer(),
        &["limits.body_413", "auth.no_key"],
    );
    out.fails_only(&["limits.body_413"], &["auth.no_key"]);
}

#[test]
fn a_gateway_with_a_32_mib_limit_fails_limits_body_64mib() {
    let out = against_fault(
        Box::new(|r| {
            (r.body.len() > 32 << 20).then(|| {
                let mut a = FaultAnswer::json(413, &json!({}));
                a.headers.insert("content-type", "text/html".parse().unwrap());
                a.body = b"<html>413 Request Entity Too Large</html>".to_vec();
                a
            })
        }),
        pass_answer(),
        &["limits.body_64mib", "auth.wrong_key"],
    );
    out.fails_only(&["limits.body_64mib"], &["auth.wrong_key"]);
}
