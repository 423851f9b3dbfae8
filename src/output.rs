//! What people read: a run's report as log lines on stderr.
//!
//! Names and server messages are data. They are quoted, and control characters are escaped, so
//! no line can start a GitHub Actions workflow command (`::`).

use std::fmt::Write as _;

use crate::report::{Op, Report, Resolution, Side, Status};

/// Escapes text that came from outside (names, server messages) for one log line: control
/// characters are escaped, and a leading `::` or a `##[` cannot start a runner command.
pub fn data(s: &str) -> String {
    crate::ci::actions::escape_log(s)
}

/// The report as lines for people.
pub fn human(report: &Report) -> String {
    let mut out = String::new();
    let project = report.project.as_deref().unwrap_or("?");
    let _ = write!(out, "defsync {}: project {}", report.command, data(project));
    if let Some(c) = &report.platform_commit {
        let _ = write!(out, ", platform commit {} (seq {})", data(&c.id), c.seq);
    }
    if let Some(r) = &report.requested_commit
        && report.platform_commit.as_ref().is_none_or(|c| &c.id != r)
    {
        let _ = write!(out, ", requested by {}", data(r));
    }
    out.push('\n');
    for c in &report.changes {
        let side = match c.side {
            Side::Git => "git",
            Side::Platform => "platform",
        };
        let op = match c.op {
            Op::Add => "add",
            Op::Update => "update",
            Op::Delete => "delete",
        };
        let _ = write!(out, "  {side:<8} {op:<6} {} {:?}", c.kind, c.name);
        if let Some(p) = &c.path {
            let _ = write!(out, "  {}", data(p));
        }
        out.push('\n');
    }
    for c in &report.conflicts {
        let resolution = match c.resolution {
            Resolution::None => "not resolved",
            Resolution::Written => "resolved: preferred side written",
            Resolution::Deferred => "resolved: deferred to the next run in the other direction",
        };
        let short =
            |d: &Option<crate::digest::Digest>| d.as_ref().map_or("absent".to_owned(), |d| d.short(12).to_owned());
        let _ = writeln!(
            out,
            "  conflict {} {:?}{}: base {}, git {}, platform {} ({resolution})",
            c.kind,
            c.name,
            c.path.as_deref().map(|p| format!(" in {}", data(p))).unwrap_or_default(),
            short(&c.base),
            short(&c.git),
            short(&c.platform),
        );
        if let Some((note, diff)) = crate::ci::actions::conflict_diff(c) {
            if let Some(note) = note {
                let _ = writeln!(out, "    {note}:");
            }
            for line in diff.lines() {
                let _ = writeln!(out, "    {}", data(line));
            }
        }
    }
    for e in &report.errors {
        let at = match (e.line, e.column) {
            (Some(l), Some(c)) => format!(":{l}:{c}"),
            (Some(l), None) => format!(":{l}"),
            _ => String::new(),
        };
        let _ = writeln!(out, "  error    {}{at}: {}", data(&e.path), data(&e.message));
    }
    if let Some(g) = report.deletion_guard.as_ref().filter(|g| g.exceeded) {
        let _ = writeln!(out, "  guard    {}", data(&g.message(report.path.as_deref())));
    }
    let _ = write!(out, "result: {}", report.status.as_str());
    match report.status {
        Status::Conflict => out.push_str(
            " (nothing was changed on either side; edit one side so they agree, or rerun with --on-conflict prefer-git or prefer-platform)",
        ),
        Status::Invalid => out.push_str(" (nothing was changed on either side; fix the files above)"),
        Status::DryRun => out.push_str(" (nothing was written)"),
        Status::MassDelete => out.push_str(" (nothing was changed on either side; see the guard line above)"),
        _ => {}
    }
    if let Some(g) = &report.git_commit {
        let _ = write!(out, ", git commit {}", &g[..g.len().min(12)]);
    }
    out.push('\n');
    if report.status == Status::DryRun {
        out.push_str(&would_change(report));
    }
    out
}

/// What a dry run or `status` found to do, side by side, and the command that would do it.
fn would_change(report: &Report) -> String {
    let mut out = String::new();
    for (side, command, what, place) in
        [(Side::Git, "pull", "file", "in the branch"), (Side::Platform, "push", "definition", "on the platform")]
    {
        let counts = [(Op::Add, "add"), (Op::Update, "update"), (Op::Delete, "delete")]
            .into_iter()
            .map(|(op, verb)| (report.count(side, op), verb))
            .filter(|(n, _)| *n > 0)
            .map(|(n, verb)| format!("{verb} {n} {what}{}", if n == 1 { "" } else { "s" }))
            .collect::<Vec<_>>();
        if !counts.is_empty() {
            let _ = writeln!(out, "  `defsync {command}` would {} {place}", counts.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_cannot_start_a_workflow_command() {
        assert_eq!(data("a\n::error::x"), "a\\n::error::x");
        // The runner trims leading white space before it looks for `::`.
        assert!(!data("  ::set-output name=x::y").trim_start().starts_with("::"));
        assert!(!data("x ##[error]y").contains("##["));
    }
}
