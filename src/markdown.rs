//! Markdown for people: the run summary (a GitHub job summary, a GitLab Markdown artifact) and
//! the code spans, cells and fences that keep names and server messages inert in it.

use std::fmt::Write as _;

use crate::report::{Conflict, Op, Report, Resolution, Side, Status};

/// Room kept free for the notes that say what a cut table left out, and the footer.
const SUMMARY_RESERVE: usize = 8 * 1024;

/// Markdown code span that cannot break out, mention or link.
///
/// The fence is one backtick longer than the longest run inside, so no run can close it; line
/// breaks and other control characters are shown escaped, because a blank line would end the
/// paragraph and with it the span.
pub fn code_span(s: &str) -> String {
    let mut body = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => body.push_str("\\n"),
            '\r' => body.push_str("\\r"),
            '\t' => body.push_str("\\t"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(body, "\\u{{{:x}}}", c as u32);
            }
            c => body.push(c),
        }
    }
    if body.is_empty() {
        return "` `".into();
    }
    let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    // CommonMark strips one space from each end when both ends are spaces, so padding both ends
    // keeps the content exact, and keeps a leading or trailing backtick off the fence.
    let all_spaces = body.bytes().all(|b| b == b' ');
    let pad =
        body.starts_with('`') || body.ends_with('`') || (body.starts_with(' ') && body.ends_with(' ') && !all_spaces);
    if pad { format!("{fence} {body} {fence}") } else { format!("{fence}{body}{fence}") }
}

/// A code span for a GFM table cell: the table splits cells on `|` before it sees code spans.
pub fn cell(s: &str) -> String {
    code_span(s).replace('|', "\\|")
}

/// At most `max` characters of `s`, with an ellipsis when cut.
pub(crate) fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]).into(),
        None => s.into(),
    }
}

/// Markdown that grows up to a byte limit, keeping room for the notes that say what was cut.
struct Budget<'a> {
    md: String,
    limit: usize,
    host: &'a Host<'a>,
}

impl Budget<'_> {
    fn fits(&self, more: &str) -> bool {
        self.md.len() + more.len() + SUMMARY_RESERVE <= self.limit
    }

    /// Adds `more` when it fits and says whether it did.
    fn push(&mut self, more: &str) -> bool {
        let ok = self.fits(more);
        if ok {
            self.md.push_str(more);
        }
        ok
    }

    /// Adds `more` unconditionally: only for small, fixed text covered by the reserve.
    fn force(&mut self, more: &str) {
        self.md.push_str(more);
    }

    fn omitted(&mut self, n: usize, what: &str) {
        if n > 0 {
            self.force(&format!(
                "\n_…and {n} more {what} not shown here, to keep the summary under {}; {} has them all._\n",
                self.host.limit_name, self.host.full_report
            ));
        }
    }
}

/// What differs between the places a summary is shown: the wording of its limit, where the whole
/// report is, and the link back to the run.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// Named when a table is cut: "GitHub's 1 MiB limit".
    pub limit_name: &'a str,
    /// Where a reader finds what was cut: "the `report` output".
    pub full_report: &'a str,
    /// The link text and the URL of this run; the URL must be one the runtime built and checked.
    pub run_link: Option<(&'a str, &'a str)>,
}

/// The run summary for a report, at most `limit` bytes.
pub fn summary(report: &Report, host: &Host<'_>, limit: usize) -> String {
    let footer = host.run_link.map(|(text, u)| format!("\n[{text}]({u})\n")).unwrap_or_default();
    let mut b = Budget { md: String::new(), limit: limit.saturating_sub(footer.len()), host };
    // Changes are listed as made only when the run applied them.
    let dry = report.status != Status::Changed;

    let icon = match report.status {
        Status::InSync => "✅",
        Status::Changed => "🔄",
        Status::DryRun => "🔍",
        Status::Conflict => "⚠️",
        Status::MassDelete => "🛑",
        Status::Invalid | Status::Error => "❌",
    };
    let headline = match report.status {
        Status::InSync => "in sync",
        Status::Changed => "changed",
        Status::DryRun => "dry run, nothing was written",
        Status::Conflict => "conflicts, nothing was changed on either side",
        Status::MassDelete => "stopped by the deletion guard, nothing was changed on either side",
        Status::Invalid => "invalid definitions, nothing was changed on either side",
        Status::Error => "failed",
    };
    b.force(&format!("## {icon} defsync {}: {headline}\n\n", code_span(&clip(&report.command, 20))));

    let mut facts = String::new();
    let field = |s: &Option<String>| s.as_deref().map_or("(none)".to_owned(), |v| code_span(&clip(v, 200)));
    let _ = writeln!(facts, "- **Project:** {}", field(&report.project));
    match &report.platform_commit {
        Some(c) => {
            let _ = writeln!(facts, "- **Platform commit:** {} (seq {})", code_span(&clip(&c.id, 200)), c.seq);
        }
        None => facts.push_str("- **Platform commit:** (none)\n"),
    }
    if let Some(r) = &report.requested_commit
        && report.platform_commit.as_ref().is_none_or(|c| &c.id != r)
    {
        let _ = writeln!(
            facts,
            "- **Requested by platform commit:** {} (a pull always syncs the head)",
            code_span(&clip(r, 200))
        );
    }
    let _ = writeln!(facts, "- **Git commit:** {}", field(&report.git_commit));
    if let Some(repo) = &report.repository {
        let _ = write!(facts, "- **Repository:** {}", code_span(&clip(repo, 300)));
        if let Some(r) = &report.git_ref {
            let _ = write!(facts, " at {}", code_span(&clip(r, 300)));
        }
        if let Some(p) = &report.path {
            let _ = write!(facts, ", path {}", code_span(&clip(p, 300)));
        }
        facts.push('\n');
    }
    b.force(&facts);

    if let Some(err) = &report.error {
        b.force("\n### Error\n\n");
        b.force(&fenced(&clip(&err.message, 4000), "text"));
    }

    if let Some(g) = report.deletion_guard.as_ref().filter(|g| g.exceeded) {
        let side = match g.side {
            Side::Git => "Git (files on the branch)",
            Side::Platform => "Platform (definitions in the project)",
        };
        let outcome = match (g.allowed, report.status) {
            (true, _) => "allowed for this run (`allow-mass-delete`)",
            (false, Status::MassDelete) => "**stopped**",
            // A dry run or `status` that found conflicts too: the real run would stop on them first.
            (false, _) => "would stop the run",
        };
        b.force(&format!(
            "\n### Deletion guard\n\n| Side | Deletions | Of | Limit | Outcome |\n|---|---:|---:|---|---|\n\
             | {side} | {} | {} | {}{} | {outcome} |\n\n",
            g.deletions,
            g.of,
            code_span(&clip(&g.limit, 20)),
            g.max_text(),
        ));
        b.force(&fenced(&g.message(report.path.as_deref().map(|p| clip(p, 300)).as_deref()), "text"));
    }

    // Counts by side: always shown, whatever the lists below leave out.
    let verb = if dry { "would be " } else { "" };
    b.force(&format!(
        "\n### Changes\n\n| Side | Added | Updated | Deleted |\n|---|---:|---:|---:|\n\
         | Git (files {verb}written to the branch) | {} | {} | {} |\n\
         | Platform (definitions {verb}sent to the project) | {} | {} | {} |\n",
        report.count(Side::Git, Op::Add),
        report.count(Side::Git, Op::Update),
        report.count(Side::Git, Op::Delete),
        report.count(Side::Platform, Op::Add),
        report.count(Side::Platform, Op::Update),
        report.count(Side::Platform, Op::Delete),
    ));
    if report.conflicts.is_empty() && report.errors.is_empty() && report.changes.is_empty() {
        b.force("\nNothing to change: the branch and the platform agree.\n");
    }

    // Problems before the list of changes: they are what a reader must act on.
    if !report.errors.is_empty() {
        b.force(&format!("\n### Invalid definitions ({})\n\n", report.errors.len()));
        b.force("| File | Line | Column | Problem |\n|---|---:|---:|---|\n");
        let mut shown = 0;
        for e in &report.errors {
            let num = |n: Option<u64>| n.map_or(String::new(), |n| n.to_string());
            let row = format!(
                "| {} | {} | {} | {} |\n",
                cell(&clip(&e.path, 400)),
                num(e.line),
                num(e.column),
                cell(&clip(&e.message, 1000))
            );
            if !b.push(&row) {
                break;
            }
            shown += 1;
        }
        b.omitted(report.errors.len() - shown, "invalid definitions");
    }

    if !report.conflicts.is_empty() {
        b.force(&format!("\n### Conflicts ({})\n\n", report.conflicts.len()));
        b.force(
            "Each key below was changed both in Git and on the platform since they last agreed. \
             The diff goes from the Git version (`-`) to the platform's (`+`).\n",
        );
        let mut shown = 0;
        for c in &report.conflicts {
            if !b.push(&conflict_section(c)) {
                break;
            }
            shown += 1;
        }
        b.omitted(report.conflicts.len() - shown, "conflicts");
        if report.conflicts.iter().any(|c| c.resolution == Resolution::None) {
            b.force(
                "\nTo resolve: edit one side so both agree, or rerun with `on-conflict: prefer-git` or \
                 `on-conflict: prefer-platform`.\n",
            );
        }
    }

    if !report.changes.is_empty() {
        b.force(&format!("\n#### All changes ({})\n\n", report.changes.len()));
        b.force("| Side | Change | Kind | Name | File |\n|---|---|---|---|---|\n");
        let mut shown = 0;
        for c in &report.changes {
            let side = match c.side {
                Side::Git => "Git",
                Side::Platform => "Platform",
            };
            let op = match c.op {
                Op::Add => "add",
                Op::Update => "update",
                Op::Delete => "delete",
            };
            let row = format!(
                "| {side} | {op} | {} | {} | {} |\n",
                cell(&clip(&c.kind, 100)),
                cell(&clip(&c.name, 250)),
                c.path.as_deref().map_or(String::new(), |p| cell(&clip(p, 400)))
            );
            if !b.push(&row) {
                break;
            }
            shown += 1;
        }
        b.omitted(report.changes.len() - shown, "changes");
    }

    let mut md = b.md;
    md.push_str(&footer);
    md
}

/// Longest lines and most lines of one conflict's diff; a definition can be up to 1 MiB.
const DIFF_MAX_LINES: usize = 400;
const DIFF_MAX_LINE_CHARS: usize = 300;

fn conflict_section(c: &Conflict) -> String {
    let mut s = format!("\n#### {} {}\n\n", code_span(&clip(&c.kind, 100)), code_span(&clip(&c.name, 250)));
    if let Some(p) = &c.path {
        let _ = writeln!(s, "- **File:** {}", code_span(&clip(p, 400)));
    }
    let digest =
        |d: &Option<crate::digest::Digest>| d.as_ref().map_or("absent".to_owned(), |d| code_span(&d.short(12)));
    let _ = writeln!(
        s,
        "- **Digests:** base {}, Git {}, platform {}",
        digest(&c.base),
        digest(&c.git),
        digest(&c.platform)
    );
    let resolution = match c.resolution {
        Resolution::None => "not resolved: nothing was changed for this key",
        Resolution::Written => "resolved: the preferred side was written",
        Resolution::Deferred => "resolved: the next run in the other direction carries the preferred side over",
    };
    let _ = writeln!(s, "- **Resolution:** {resolution}\n");
    let Some((note, diff)) = conflict_diff(c) else {
        return s;
    };
    if let Some(note) = note {
        let _ = writeln!(s, "{note}:\n");
    }
    s.push_str(&fenced(&diff, "diff"));
    s
}

/// A conflict's two versions as a unified diff from the Git version (`-`) to the platform's
/// (`+`), with a note when one side deleted the key; `None` when neither version is known. The
/// job summary and the human log both show this one diff.
pub fn conflict_diff(c: &Conflict) -> Option<(Option<&'static str>, String)> {
    match (&c.git_yaml, &c.platform_yaml) {
        (Some(g), Some(p)) => Some((None, line_diff(g, p))),
        (Some(g), None) => Some((Some("Deleted on the platform; the Git version"), prefixed(g, '-'))),
        (None, Some(p)) => Some((Some("Deleted in Git; the platform's version"), prefixed(p, '+'))),
        (None, None) => None,
    }
}

fn prefixed(text: &str, mark: char) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for l in lines.iter().take(DIFF_MAX_LINES) {
        let _ = writeln!(out, "{mark}{}", clip(l, DIFF_MAX_LINE_CHARS));
    }
    if lines.len() > DIFF_MAX_LINES {
        let _ = writeln!(out, "… {} more lines", lines.len() - DIFF_MAX_LINES);
    }
    out
}

/// A line diff of two YAML texts: the common lines around the change kept as context, the
/// differing middle diffed by longest common subsequence when it is small enough.
fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..].iter().rev().zip(b[prefix..].iter().rev()).take_while(|(x, y)| x == y).count();
    let (am, bm) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut ops: Vec<(char, &str)> = Vec::new();
    // Three lines of context, as in a unified diff.
    let skipped_before = prefix.saturating_sub(3);
    ops.extend(a[skipped_before..prefix].iter().map(|l| (' ', *l)));
    if am.len().saturating_mul(bm.len()) <= 4_000_000 {
        ops.extend(lcs_diff(am, bm));
    } else {
        ops.extend(am.iter().map(|l| ('-', *l)));
        ops.extend(bm.iter().map(|l| ('+', *l)));
    }
    let after = &a[a.len() - suffix..];
    ops.extend(after.iter().take(3).map(|l| (' ', *l)));

    let mut out = String::from("--- git\n+++ platform\n");
    if skipped_before > 0 {
        let _ = writeln!(out, "@@ {} @@", lines_word(skipped_before));
    }
    for (mark, line) in ops.iter().take(DIFF_MAX_LINES) {
        let _ = writeln!(out, "{mark}{}", clip(line, DIFF_MAX_LINE_CHARS));
    }
    if ops.len() > DIFF_MAX_LINES {
        let _ = writeln!(out, "… {} more diff lines", ops.len() - DIFF_MAX_LINES);
    }
    if suffix > 3 {
        let _ = writeln!(out, "@@ {} @@", lines_word(suffix - 3));
    }
    out
}

fn lines_word(n: usize) -> String {
    if n == 1 { "1 unchanged line".into() } else { format!("{n} unchanged lines") }
}

fn lcs_diff<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<(char, &'a str)> {
    let (n, m) = (a.len(), b.len());
    // table[i][j]: length of the LCS of a[i..] and b[j..].
    let mut table = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            table[at(i, j)] =
                if a[i] == b[j] { table[at(i + 1, j + 1)] + 1 } else { table[at(i + 1, j)].max(table[at(i, j + 1)]) };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(n + m);
    while i < n && j < m {
        if a[i] == b[j] {
            out.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if table[at(i + 1, j)] >= table[at(i, j + 1)] {
            out.push(('-', a[i]));
            i += 1;
        } else {
            out.push(('+', b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| ('-', *l)));
    out.extend(b[j..].iter().map(|l| ('+', *l)));
    out
}

/// A fenced code block whose fence no line of `body` can close; control characters other than
/// line feeds are shown escaped.
fn fenced(body: &str, info: &str) -> String {
    let body: String = body
        .chars()
        .map(|c| match c {
            '\n' | '\t' => c.to_string(),
            c if c.is_control() => format!("\\u{{{:x}}}", c as u32),
            c => c.to_string(),
        })
        .collect();
    let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    let nl = if body.ends_with('\n') { "" } else { "\n" };
    format!("{fence}{info}\n{body}{nl}{fence}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_hold_backticks_and_cannot_break_out() {
        assert_eq!(code_span("plain"), "`plain`");
        assert_eq!(code_span("a`b"), "``a`b``");
        assert_eq!(code_span("`x``"), "``` `x`` ```");
        assert_eq!(code_span(" a "), "`  a  `");
        assert_eq!(code_span("a\n\n<img src=x>"), "`a\\n\\n<img src=x>`");
        assert_eq!(code_span(""), "` `");
        assert_eq!(cell("a|b"), "`a\\|b`");
    }

    #[test]
    fn diffs_show_what_changed_with_context() {
        let d = line_diff("a\nb\nc\nd\ne\nf\ng\n", "a\nb\nc\nd\nE\nf\ng\n");
        assert_eq!(d, "--- git\n+++ platform\n@@ 1 unchanged line @@\n b\n c\n d\n-e\n+E\n f\n g\n");
    }

    #[test]
    fn fences_outgrow_the_backticks_inside() {
        assert_eq!(fenced("```\nx", "text"), "````text\n```\nx\n````\n");
        assert_eq!(fenced("x\n", "diff"), "```diff\nx\n```\n");
    }

    #[test]
    fn clip_cuts_on_characters() {
        assert_eq!(clip("ééé", 2), "éé…");
        assert_eq!(clip("ab", 2), "ab");
    }
}
