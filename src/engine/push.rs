//! `defsync push`: send the branch tip's changed definitions to the platform.

use crate::api::Direction;
use crate::api::{Change as ApiChange, Commit, CreateCommit, Origin, OriginType};
use crate::digest::Digest;
use crate::engine::MAX_ATTEMPTS;
use crate::engine::base::{proof, send_agreement};
use crate::engine::conflicts::{conflict_items, invalid, report_conflicts, resolution_of};
use crate::engine::link::{check_link, ensure_link, first_link};
use crate::engine::plan::Item;
use crate::engine::plan::Mode;
use crate::engine::request::{Request, refuse_one_way};
use crate::engine::state::{PlatformState, fetch_objects, read_platform};
use crate::engine::tree::{GitFile, load_definitions, scan_commit, short};
use crate::error::{Error, Result};
use crate::git::Repo;
use crate::model::Key;
use crate::platform::{Platform, PlatformError};
use crate::report::{Change, Op, Side, Status};
use crate::report::{CommitRef, Report};

/// A push whose body would exceed this is split into several commits (contract: 32 MiB).
pub const MAX_COMMIT_BODY: usize = 32 * 1024 * 1024;

pub async fn push(repo: &Repo, platform: &Platform, req: &Request) -> Result<Report> {
    let mut report = req.new_report("push");
    refuse_one_way(req, "push", Direction::PlatformToGit, "pull")?;
    for _attempt in 1..=MAX_ATTEMPTS {
        // Read the platform first, then fetch the tip. Every Git commit the platform has synced
        // was on the origin before this read, so the tip fetched after it holds it too. The other
        // way round, a tip fetched before a colleague's push could be planned against a platform
        // that already holds that push, and would send back what it deleted or changed.
        let state = ensure_link(platform, req, req.dry_run).await?;
        // Plan on the fetched tip, never on the work tree or an older checkout: an old or re-run
        // push workflow therefore never sends old content.
        let tip = if req.dry_run || repo.remote_url(&req.remote).is_none() {
            repo.rev_parse("HEAD")?
        } else {
            let tip = repo.fetch(&req.remote, &req.branch)?;
            refuse_unpushed(repo, req, &tip)?;
            tip
        };
        report.platform_commit = state.head_ref();
        if !repo.tree_has_path(&tip, &req.path) {
            return Err(Error::Config(format!(
                "the sync root {} does not exist in commit {} of branch {}: check `path`. If the folder was moved, \
                 move the link with `defsync link --path <new folder>`; a push never takes a missing sync root \
                 as a wish to delete every definition",
                req.path,
                short(&tip),
                req.branch
            )));
        }
        let git = scan_commit(repo, &tip, req, Some(&state.base), None)?;
        if !git.errors.is_empty() {
            return Ok(invalid(report, git.errors));
        }
        let plan =
            crate::engine::plan::plan(Mode::Push, req.direction, req.prefer, &state.base, &git.files, &state.manifest);

        let conflicts = conflict_items(&plan);
        if !conflicts.is_empty() {
            let keys: Vec<&Key> = conflicts.iter().map(|i| &i.key).collect();
            let (objects, _) = fetch_objects(platform, req, &state, &keys).await?;
            report.conflicts.clear();
            report_conflicts(&mut report, repo, req, &conflicts, &git, &objects, resolution_of)?;
        }
        if plan.has_unresolved() {
            report.status = Status::Conflict;
            return Ok(report);
        }

        let sends: Vec<(&Item, &Option<Digest>)> = plan.sends().collect();
        let puts: Vec<&GitFile> = sends.iter().filter_map(|(i, d)| d.as_ref().map(|_| &git.files[&i.key])).collect();
        let mut definitions = load_definitions(repo, &puts)?.into_iter();
        let mut changes = Vec::with_capacity(sends.len());
        report.changes.clear();
        for (item, digest) in &sends {
            let (change, op, path) = match digest {
                Some(_) => {
                    let def = definitions.next().expect("one definition per put");
                    let file = &git.files[&item.key];
                    let op = if item.platform.is_some() { Op::Update } else { Op::Add };
                    // The commit sets this key's base to the file's digest: record the proof.
                    let blob = proof(&item.key, file, &file.digest);
                    (
                        ApiChange::Put { kind: def.kind, name: def.name, spec: def.spec, blob },
                        op,
                        Some(file.path.clone()),
                    )
                }
                None => (
                    ApiChange::Delete { kind: item.key.kind.to_string(), name: item.key.name.to_string() },
                    Op::Delete,
                    None,
                ),
            };
            changes.push(change);
            report.changes.push(Change {
                side: Side::Platform,
                op,
                kind: item.key.kind.to_string(),
                name: item.key.name.to_string(),
                path: path.map(|p| req.repo_path(&p)),
            });
        }
        // Before anything is sent or any base moves: a branch that lost its sync root looks
        // exactly like one that deletes every definition.
        report.deletion_guard = req.guard(&plan, Mode::Push, state.manifest.len());
        if report.stopped_by_guard().is_some() {
            report.status = Status::MassDelete;
            return Ok(report);
        }
        if req.dry_run {
            report.status = Status::DryRun;
            return Ok(report);
        }
        if state.record().is_none() {
            // The run can succeed: link the project now (a git commit needs the link), then plan
            // again on the linked state.
            first_link(platform, req).await?;
            continue;
        }

        // A push that prefers the platform defers: the base moves to Git's digest (contract
        // v1.1 allows a digest the platform never saw), so the next pull sees only the platform
        // changed and writes its version to Git.
        let deferred: Vec<(Key, Option<Digest>, Option<Digest>)> =
            plan.deferred().map(|(i, d)| (i.key.clone(), i.platform.clone(), d.clone())).collect();
        if !changes.is_empty() {
            let origin = Origin {
                kind: OriginType::Git,
                repository: Some(req.repository.clone()),
                git_ref: Some(req.git_ref()),
                path: Some(req.path.clone()),
                git_commit: Some(tip.clone()),
                run_url: req.run_url.clone(),
            };
            match send_commits(platform, req, &state, origin, &tip, changes).await? {
                Sent::All(head) => report.platform_commit = Some(CommitRef { id: head.id, seq: head.seq }),
                Sent::HeadMoved => {
                    tracing::info!("the platform's head moved; re-planning against the new head");
                    continue;
                }
            }
        }
        if report.changes.is_empty() {
            // Nothing was sent, so the state read is current (a 412 re-reads it): repairs,
            // deferrals and missing blob proofs go out on it, or nothing does.
            send_agreement(platform, req, &git.files, &state, &deferred, None, None).await?;
        } else if !plan.repairs.is_empty() || !deferred.is_empty() {
            let state = read_platform(platform, &req.project).await?;
            check_link(req, &state, false)?;
            send_agreement(platform, req, &git.files, &state, &deferred, None, None).await?;
        }
        report.status = if report.changes.is_empty() && plan.deferred().next().is_none() {
            Status::InSync
        } else {
            Status::Changed
        };
        // The platform now holds this commit's definitions, whether or not this run sent any.
        report.git_commit = Some(tip);
        return Ok(report);
    }
    Err(Error::Other(anyhow::anyhow!(
        "the platform's head kept moving while pushing; gave up after {MAX_ATTEMPTS} attempts. Run the push again"
    )))
}

/// Refuses a push while the local branch has commits in the sync root that the origin lacks: a
/// push sends the origin's tip, so they would be left out without a word.
fn refuse_unpushed(repo: &Repo, req: &Request, tip: &str) -> Result<()> {
    let Some(local) = repo.try_rev_parse(&format!("refs/heads/{}", req.branch)) else {
        return Ok(()); // no local branch of that name: nothing of its own to forget
    };
    if repo.is_shallow() {
        // A depth-1 clone cannot tell an older commit from an unpushed one, and is a fresh CI
        // checkout with no commits of its own.
        return Ok(());
    }
    let missing = repo.count_commits(tip, &local, &req.path)?;
    if missing == 0 {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{missing} commit{s} on {branch} {are} not on {remote}/{branch}; defsync push sends what the origin has: \
         git push first (`git push {remote} {branch}`), then run defsync push again",
        s = if missing == 1 { "" } else { "s" },
        are = if missing == 1 { "is" } else { "are" },
        branch = req.branch,
        remote = req.remote,
    )))
}

enum Sent {
    All(Box<Commit>),
    HeadMoved,
}

/// Sends the changes as one commit, or as several in order when they exceed
/// [`MAX_COMMIT_BODY`]; each has the previous as its parent. The per-key base makes every step
/// safe, so a crash in between leaves a correct partial push that the next run completes.
async fn send_commits(
    platform: &Platform,
    req: &Request,
    state: &PlatformState,
    origin: Origin,
    tip: &str,
    changes: Vec<ApiChange>,
) -> Result<Sent> {
    let batches = split_by_size(changes, MAX_COMMIT_BODY);
    let total = batches.len();
    let mut parent = state.head.as_ref().map(|c| c.id.clone());
    let mut last = None;
    for (i, batch) in batches.into_iter().enumerate() {
        let part = if total > 1 { format!(" (part {} of {total})", i + 1) } else { String::new() };
        let body = CreateCommit {
            parent: parent.clone(),
            message: format!("Sync from {}@{}{part}", req.repository, short(tip)),
            origin: origin.clone(),
            changes: batch,
        };
        // A new key for each planned commit; the client resends the same key on retries.
        let key = format!("defsync-{:032x}", rand::random::<u128>());
        match platform.create_commit(&req.project, &body, &key).await {
            Ok(commit) => {
                parent = Some(commit.id.clone());
                last = Some(commit);
            }
            Err(PlatformError::Api(e)) if e.is("head_moved") => return Ok(Sent::HeadMoved),
            Err(PlatformError::Api(e)) if e.is("invalid") => {
                return Err(Error::Other(anyhow::anyhow!(
                    "the platform refused the push as invalid: {}{}",
                    e.message,
                    e.extra.get("details").map(|d| format!(" {d}")).unwrap_or_default()
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Sent::All(Box::new(last.expect("at least one batch"))))
}

fn split_by_size(changes: Vec<ApiChange>, limit: usize) -> Vec<Vec<ApiChange>> {
    // Leave room for the message and origin around the change list.
    let budget = limit.saturating_sub(64 * 1024);
    let mut batches: Vec<Vec<ApiChange>> = vec![Vec::new()];
    let mut size = 0;
    for change in changes {
        let len = serde_json::to_vec(&change).map_or(0, |v| v.len()) + 1;
        if size + len > budget && !batches.last().expect("non-empty").is_empty() {
            batches.push(Vec::new());
            size = 0;
        }
        size += len;
        batches.last_mut().expect("non-empty").push(change);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_pushes_split_in_order() {
        let changes: Vec<ApiChange> = (0..10)
            .map(|i| ApiChange::Put {
                kind: "k".into(),
                name: format!("n{i}"),
                spec: serde_json::json!("x".repeat(100)),
                blob: None,
            })
            .collect();
        let batches = split_by_size(changes, 64 * 1024 + 400);
        assert!(batches.len() > 1);
        let names: Vec<&str> = batches.iter().flatten().map(|c| c.name()).collect();
        assert_eq!(names, (0..10).map(|i| format!("n{i}")).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| !b.is_empty()));
    }
}
