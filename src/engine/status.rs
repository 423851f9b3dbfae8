//! `defsync status`: what a pull and a push would change. Writes nothing.

use crate::api::Direction;
use crate::engine::conflicts::{conflict_items, invalid, report_conflicts};
use crate::engine::link::ensure_link;
use crate::engine::plan::Mode;
use crate::engine::request::Request;
use crate::engine::state::fetch_objects;
use crate::engine::tree::{check_no_symlink_on_path, scan_commit};
use crate::error::Result;
use crate::git::Repo;
use crate::model::Key;
use crate::platform::Platform;
use crate::report::{Change, Op, Side, Status};
use crate::report::{Report, Resolution};

/// Plans both directions on the checked-out commit. Never refused for running on another ref,
/// so a check on a pull request shows what merging it would push.
pub async fn status(repo: &Repo, platform: &Platform, req: &Request) -> Result<Report> {
    let mut report = req.new_report("status");
    check_no_symlink_on_path(repo, &req.path)?;
    let head = repo.rev_parse("HEAD")?;
    let state = ensure_link(platform, req, true).await?;
    report.platform_commit = state.head_ref();
    let git = scan_commit(repo, &head, req, Some(&state.base), None)?;
    if !git.errors.is_empty() {
        return Ok(invalid(report, git.errors));
    }
    let (g, p) = (&git.files, &state.manifest);
    let pull = crate::engine::plan::plan(Mode::Pull, req.direction, req.prefer, &state.base, g, p);
    let push = crate::engine::plan::plan(Mode::Push, req.direction, req.prefer, &state.base, g, p);

    let conflicts = conflict_items(&pull);
    if !conflicts.is_empty() {
        let keys: Vec<&Key> = conflicts.iter().map(|i| &i.key).collect();
        let (objects, _) = fetch_objects(platform, req, &state, &keys).await?;
        report_conflicts(&mut report, repo, req, &conflicts, &git, &objects, |_| Resolution::None)?;
    }
    let mut layout = crate::engine::layout::Layout::new(git.all_paths());
    if req.direction != Direction::GitToPlatform {
        for (item, digest) in pull.writes() {
            let existing = git.files.get(&item.key);
            let op = match (digest, existing) {
                (None, _) => Op::Delete,
                (Some(_), Some(_)) => Op::Update,
                (Some(_), None) => Op::Add,
            };
            let rel = existing.map_or_else(|| layout.place(&item.key), |f| f.path.clone());
            report.changes.push(change(req, Side::Git, op, &item.key, Some(rel)));
        }
    }
    if req.direction != Direction::PlatformToGit {
        for (item, digest) in push.sends() {
            let op = match (digest, &item.platform) {
                (None, _) => Op::Delete,
                (Some(_), Some(_)) => Op::Update,
                (Some(_), None) => Op::Add,
            };
            let rel = git.files.get(&item.key).map(|f| f.path.clone());
            report.changes.push(change(req, Side::Platform, op, &item.key, rel));
        }
    }
    // Each direction's guard, as its run would count it; the report keeps the one that would
    // stop a run (the larger when both would), else the larger count.
    let pull_guard = (req.direction != Direction::GitToPlatform).then(|| req.guard(&pull, Mode::Pull, g.len()));
    let push_guard = (req.direction != Direction::PlatformToGit).then(|| req.guard(&push, Mode::Push, p.len()));
    report.deletion_guard = pull_guard
        .flatten()
        .into_iter()
        .chain(push_guard.flatten())
        .max_by_key(|guard| (!guard.allowed, guard.deletions));
    report.status = if pull.has_unresolved() {
        Status::Conflict
    } else if report.stopped_by_guard().is_some() {
        Status::MassDelete
    } else if report.changes.is_empty() {
        Status::InSync
    } else {
        Status::DryRun
    };
    Ok(report)
}

fn change(req: &Request, side: Side, op: Op, key: &Key, rel: Option<String>) -> Change {
    Change { side, op, kind: key.kind.to_string(), name: key.name.to_string(), path: rel.map(|r| req.repo_path(&r)) }
}
