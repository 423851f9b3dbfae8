//! `defsync conformance`: check a running Sync API server against contract part 3 and report
//! each rule as pass, fail or skip, with the evidence.

use std::time::Duration;

use clap::Args;

use crate::conformance::{Options, RULES, Report, RuleResult, Status};
use crate::error::exit;
use crate::output::data;

#[derive(Debug, Clone, Args)]
pub struct ConformanceArgs {
    /// The server's base URL, such as http://127.0.0.1:8787.
    #[arg(long, env = "DEFSYNC_PLATFORM", required_unless_present = "list")]
    pub platform: Option<String>,
    /// An API key that may create projects and write them. Prefer the DEFSYNC_API_KEY
    /// environment variable: other users of the machine can read a command line.
    #[arg(long, env = "DEFSYNC_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print one JSON document on stdout (the lines for people still go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Check only this rule (`commits.head_moved`) or group (`commits`); repeatable.
    #[arg(long, value_name = "RULE", value_delimiter = ',')]
    pub only: Vec<String>,
    /// The largest body, in MiB, sent while probing upward for the server's 413.
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(72..))]
    pub max_body: u64,
    /// Commits sent at once on one parent in the concurrency rule.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..=64))]
    pub parallel: u64,
    /// The longest, in seconds, one request may take (the 64 MiB commit is the slowest).
    #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Allow plain http:// to hosts other than loopback (the API key travels in clear text).
    #[arg(long, env = "DEFSYNC_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,
    /// List the rules with their contract sections, and check nothing.
    #[arg(long)]
    pub list: bool,
}

/// Runs the check and returns the exit status: 0 every rule passed (skips allowed), 5 a rule
/// failed, 2 bad usage or an unreachable server.
pub async fn run(args: &ConformanceArgs) -> i32 {
    if args.list {
        for r in RULES {
            println!("{:<32} {}  [contract {}]", r.id, r.summary, r.section);
        }
        return exit::OK;
    }
    let options = Options {
        platform: args.platform.clone().unwrap_or_default(),
        api_key: args.api_key.clone().unwrap_or_default(),
        only: args.only.clone(),
        max_body: args.max_body * 1024 * 1024,
        parallel: args.parallel as usize,
        timeout: Duration::from_secs(args.timeout),
        allow_insecure_http: args.allow_insecure_http,
    };
    let report = match crate::conformance::run(&options, |r| eprint!("{}", line(r))).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {}", data(&e.to_string()));
            return exit::USAGE;
        }
    };
    eprintln!("{}", summary(&report));
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("error: cannot write the JSON report: {e}");
                return exit::FAILURE;
            }
        }
    }
    if report.passed() { exit::OK } else { exit::NONCONFORMING }
}

/// One rule for people: a mark, the id and what it checks; the reason and evidence under a
/// failure or skip.
fn line(r: &RuleResult) -> String {
    let mark = match r.status {
        Status::Pass => "✓",
        Status::Fail => "✗",
        Status::Skip => "-",
    };
    let mut out = format!("{mark} {:<32} {} ({} ms)\n", r.id, r.summary, r.duration_ms);
    if let Some(reason) = &r.reason {
        let label = if r.status == Status::Skip { "skipped" } else { "failed" };
        out.push_str(&format!("    {label}: {}\n", data(reason)));
        out.push_str(&format!("    contract: {}\n", r.section));
    }
    if r.status == Status::Fail {
        for e in &r.evidence {
            out.push_str(&format!("    | {}\n", data(e)));
        }
    }
    out
}

fn summary(report: &Report) -> String {
    let s = &report.summary;
    let mut out = format!(
        "defsync conformance: {} passed, {} failed, {} skipped against {} (scratch projects {}-*)",
        s.passed, s.failed, s.skipped, report.platform, report.scratch_prefix
    );
    let failed: Vec<&str> = report.rules.iter().filter(|r| r.status == Status::Fail).map(|r| r.id).collect();
    let skipped: Vec<&str> = report.rules.iter().filter(|r| r.status == Status::Skip).map(|r| r.id).collect();
    if !failed.is_empty() {
        out.push_str(&format!("\nfailed: {}", failed.join(", ")));
    }
    if !skipped.is_empty() {
        out.push_str(&format!("\nskipped: {}", skipped.join(", ")));
    }
    out
}
