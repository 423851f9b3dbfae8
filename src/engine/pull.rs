//! `defsync pull`: bring the platform's head into the branch.

use crate::api::Direction;
use crate::digest::Digest;
use crate::engine::MAX_ATTEMPTS;
use crate::engine::base::send_agreement;
use crate::engine::conflicts::{conflict_items, invalid, report_conflicts, resolution_of};
use crate::engine::layout::Layout;
use crate::engine::link::{ensure_link, link_if_new};
use crate::engine::plan::Item;
use crate::engine::plan::Mode;
use crate::engine::request::{Request, refuse_one_way};
use crate::engine::state::{PlatformState, fetch_objects};
use crate::engine::tree::{Tree, check_no_symlink_on_path, scan_commit};
use crate::error::{Error, Result};
use crate::forge::{ApiCommit, ChangeRequest, ChangeRequestRef, CommitVia, Committed, Delivery, Forge, Onto};
use crate::git::{Oid, Repo};
use crate::git::{PushOutcome, Staged, TreeEdit};
use crate::model::Key;
use crate::platform::{Platform, PlatformError};
use crate::report::PullRequestRef;
use crate::report::{Change, Op, Side, Status};
use crate::report::{FileError, Report};

/// Pulls into the branch. Deliveries through an API or a change request go through `forge`; a
/// commit made with git and pushed needs none of it.
pub async fn pull(repo: &Repo, platform: &Platform, forge: &dyn Forge, req: &Request) -> Result<Report> {
    let mut report = req.new_report("pull");
    refuse_one_way(req, "pull", Direction::GitToPlatform, "push")?;
    check_no_symlink_on_path(repo, &req.path)?;
    let started = std::time::Instant::now();
    let phase = |name: &str| tracing::debug!("{name} at {} ms", started.elapsed().as_millis());
    for attempt in 1..=MAX_ATTEMPTS {
        let tip = if req.dry_run { repo.rev_parse("HEAD")? } else { prepare_checkout(repo, req)? };
        let state = ensure_link(platform, req, req.dry_run).await?;
        if attempt == 1 {
            check_requested_commit(platform, req, &state).await?;
        }
        report.platform_commit = state.head_ref();

        let git = scan_commit(repo, &tip, req, Some(&state.base), None)?;
        if !git.errors.is_empty() {
            return Ok(invalid(report, git.errors));
        }
        let plan =
            crate::engine::plan::plan(Mode::Pull, req.direction, req.prefer, &state.base, &git.files, &state.manifest);

        // The platform's side of every conflict, for the report; what the run writes is fetched
        // later, in batches, as it is staged.
        let conflicts = conflict_items(&plan);
        let needed: Vec<&Key> = conflicts.iter().map(|i| &i.key).collect();
        let (objects, bad) = fetch_objects(platform, req, &state, &needed).await?;
        if !bad.is_empty() {
            return Ok(invalid(report, bad));
        }
        report.conflicts.clear();
        report_conflicts(&mut report, repo, req, &conflicts, &git, &objects, resolution_of)?;
        drop(objects);
        if plan.has_unresolved() {
            report.status = Status::Conflict;
            return Ok(report);
        }

        phase("conflicts read");
        // Before anything is written or any base moves: a platform that answers an empty
        // manifest looks exactly like one whose project was emptied.
        report.deletion_guard = req.guard(&plan, Mode::Pull, git.files.len());
        if report.stopped_by_guard().is_some() {
            report.changes = planned_changes(&plan, &git, req);
            report.status = Status::MassDelete;
            return Ok(report);
        }
        if req.dry_run {
            report.changes = planned_changes(&plan, &git, req);
            report.status = Status::DryRun;
            return Ok(report);
        }
        let deferred: Vec<(Key, Option<Digest>, Option<Digest>)> =
            plan.deferred().map(|(i, d)| (i.key.clone(), i.platform.clone(), d.clone())).collect();

        // Stage what the run writes: fetched, checked and rendered in batches, each written to
        // Git's object store at once, so even a first pull of 100,000 definitions holds only a
        // batch in memory. Deliveries through GitHub's API keep the contents, to send inline.
        let keep_contents = req.commit_via == CommitVia::Api;
        let (staged, api_edits, changes) = match stage(repo, platform, req, &state, &plan, &git, keep_contents).await? {
            Ok(staged) => staged,
            Err(bad) => return Ok(invalid(report, bad)),
        };
        report.changes = changes;
        phase("staged");

        let through_pr = req.delivery == Delivery::PullRequest;
        if staged.is_empty() && through_pr {
            // The platform equals the target branch again: the pull request has nothing left.
            if let Some(number) = forge.close_change_request(&req.pr_branch).await? {
                report.pull_request = Some(PullRequestRef { number, url: None, state: "closed".into() });
            }
            link_if_new(platform, req, &state).await?;
            report.status = Status::InSync;
            return Ok(report);
        }
        if staged.is_empty() {
            // Nothing to write; still repair the base of agreeing keys and record deferrals.
            let linked = link_if_new(platform, req, &state).await?;
            let record = linked.as_ref().unwrap_or(&state);
            send_agreement(platform, req, &git.files, record, &deferred, state.head.as_ref(), Some(&tip)).await?;
            // The branch's tip is what the platform now matches, though nothing was written.
            report.git_commit = Some(tip);
            report.status = if deferred.is_empty() { Status::InSync } else { Status::Changed };
            return Ok(report);
        }

        // Build the tree, then read it back before anything is committed.
        phase("rendered");
        let tree = repo.stage_tree(&tip, &staged)?;
        phase("tree written");
        let written = scan_commit(repo, &tree, req, None, Some(git))?;
        let problems = verify(&plan, &written, &staged, req);
        if !problems.is_empty() {
            return Ok(invalid(report, problems));
        }
        // Verified: what follows needs neither the plan nor the staged paths, and at 100,000
        // definitions the memory they free is what the base update reuses.
        drop((plan, staged));
        let mut written = written;
        written.other_paths = Vec::new();
        let message = commit_message(req, &state, &report.changes);
        phase("verified");
        let commit = match deliver(repo, forge, req, &tip, &tree, &api_edits, &message, &state, &report).await? {
            Delivered::Branch(commit) => commit,
            Delivered::BranchMoved => {
                tracing::info!("branch {} moved while pulling; re-planning on its new tip", req.branch);
                continue;
            }
            Delivered::PullRequest { commit, pr } => {
                // The branch itself did not change, so the base stays as it is: the push that
                // runs when the pull request is merged finds the keys agreeing and records them.
                link_if_new(platform, req, &state).await?;
                report.git_commit = Some(commit);
                report.pull_request = Some(PullRequestRef {
                    number: pr.number,
                    url: Some(pr.url),
                    state: if pr.created { "opened" } else { "updated" }.into(),
                });
                report.status = Status::Changed;
                return Ok(report);
            }
        };
        phase("delivered");
        report.git_commit = Some(commit.clone());
        report.status = Status::Changed;
        let linked = link_if_new(platform, req, &state).await?;
        if req.no_push {
            // The base moves only once the commit has reached the origin.
            return Ok(report);
        }
        let record = linked.as_ref().unwrap_or(&state);
        send_agreement(platform, req, &written.files, record, &deferred, state.head.as_ref(), Some(&commit)).await?;
        return Ok(report);
    }
    Err(Error::Git(format!(
        "branch {:?} kept moving while pulling; gave up after {MAX_ATTEMPTS} attempts. Run the pull again",
        req.branch
    )))
}

enum Delivered {
    /// The commit is on the branch (pushed, or committed locally with `--no-push`).
    Branch(String),
    /// The branch moved under the run: re-plan on its new tip.
    BranchMoved,
    PullRequest {
        commit: String,
        pr: ChangeRequestRef,
    },
}

/// Creates the commit of `tree` on `tip` and delivers it: pushed with git, or through the
/// forge's API, onto the branch or onto defsync's change-request branch.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename these
async fn deliver(
    repo: &Repo,
    forge: &dyn Forge,
    req: &Request,
    tip: &str,
    tree: &str,
    edits: &[TreeEdit],
    message: &str,
    state: &PlatformState,
    report: &Report,
) -> Result<Delivered> {
    let (author, committer) = (req.author.as_ref(), req.committer.as_ref());
    let on_branch_at_tip = || {
        repo.try_rev_parse("HEAD").as_deref() == Some(tip)
            && repo.current_branch().as_deref() == Some(req.branch.as_str())
    };
    match (req.delivery, req.commit_via) {
        (Delivery::Commit, CommitVia::Git) => {
            let commit = repo.commit_tree(tree, tip, message, author, committer)?;
            if !req.no_push
                && repo.remote_url(&req.remote).is_some()
                && let PushOutcome::Rejected(why) = repo.push(&req.remote, &commit, &req.branch)?
            {
                tracing::debug!("push rejected: {why}");
                return Ok(Delivered::BranchMoved);
            }
            // Bring the checkout along when it sat at the tip the commit was built on.
            if on_branch_at_tip() {
                repo.fast_forward(&commit)?;
            }
            Ok(Delivered::Branch(commit))
        }
        (Delivery::Commit, CommitVia::Api) => {
            let commit = ApiCommit { parent: tip, edits, message, onto: Onto::Branch(&req.branch) };
            let sha = match forge.commit(&commit).await? {
                Committed::Made(sha) => sha,
                Committed::BranchMoved => return Ok(Delivered::BranchMoved),
            };
            let at_tip = on_branch_at_tip();
            let fetched = repo.fetch(&req.remote, &req.branch)?;
            if fetched == sha && repo.tree_of(&sha)? != tree {
                return Err(Error::Git(format!(
                    "{} built commit {sha} with another tree than the one defsync verified ({tree}); please report this",
                    forge.name()
                )));
            }
            if at_tip && fetched == sha {
                repo.fast_forward(&sha)?;
            }
            Ok(Delivered::Branch(sha))
        }
        (Delivery::PullRequest, via) => {
            let commit = match via {
                CommitVia::Api => {
                    let commit =
                        ApiCommit { parent: tip, edits, message, onto: Onto::ChangeRequestBranch(&req.pr_branch) };
                    match forge.commit(&commit).await? {
                        Committed::Made(sha) => sha,
                        // defsync's own branch is replaced, never guarded; a forge that says it
                        // moved is re-planned like the target branch.
                        Committed::BranchMoved => return Ok(Delivered::BranchMoved),
                    }
                }
                CommitVia::Git => {
                    let commit = repo.commit_tree(tree, tip, message, author, committer)?;
                    // The pull-request branch is defsync's own: it always restarts from the
                    // target branch's tip, so replacing it loses nothing.
                    repo.push_branch_force(&req.remote, &commit, &req.pr_branch)?;
                    commit
                }
            };
            let title = match &state.head {
                Some(h) => format!("defsync: platform changes to {} (commit {}, seq {})", req.project, h.id, h.seq),
                None => format!("defsync: platform changes to {}", req.project),
            };
            let cr = ChangeRequest {
                target_branch: &req.branch,
                branch: &req.pr_branch,
                commit: &commit,
                title: &title,
                project: &req.project,
                platform_commit: report.platform_commit.as_ref(),
                requested_commit: req.requested_commit.as_deref(),
                changes: &report.changes,
                conflicts: &report.conflicts,
                labels: &req.pr_labels,
            };
            let pr = forge.open_or_update_change_request(&cr).await?;
            Ok(Delivered::PullRequest { commit, pr })
        }
    }
}

/// Fetches the branch and brings the checkout to its tip; returns the tip to plan on.
fn prepare_checkout(repo: &Repo, req: &Request) -> Result<Oid> {
    let dirty = repo.dirty_paths(&req.path)?;
    if !dirty.is_empty() {
        let shown: Vec<&str> = dirty.iter().take(10).map(String::as_str).collect();
        return Err(Error::Config(format!(
            "the sync root {} has uncommitted changes ({}{}): commit or stash them first; a pull never overwrites uncommitted work",
            req.path,
            shown.join(", "),
            if dirty.len() > shown.len() { format!(" and {} more", dirty.len() - shown.len()) } else { String::new() }
        )));
    }
    let head = repo.rev_parse("HEAD")?;
    if repo.remote_url(&req.remote).is_none() {
        if req.no_push {
            return Ok(head);
        }
        return Err(Error::Config(format!(
            "the repository has no remote {:?}: add it, pass --remote, or use --no-push to commit locally",
            req.remote
        )));
    }
    let tip = repo.fetch(&req.remote, &req.branch)?;
    if head == tip {
        return Ok(tip);
    }
    let on_branch = repo.current_branch().as_deref() == Some(req.branch.as_str());
    if repo.is_ancestor(&head, &tip) {
        if on_branch {
            repo.fast_forward(&tip)?;
        }
        return Ok(tip);
    }
    if repo.is_shallow() {
        // Depth-1 history cannot tell "behind" from "diverged". Planning never reads the work
        // tree, and the sync root is clean, so build on the tip and leave the checkout alone.
        tracing::info!("shallow checkout is not at the tip of {}; planning on the tip", req.branch);
        return Ok(tip);
    }
    let how = if repo.is_ancestor(&tip, &head) { "is ahead of" } else { "has diverged from" };
    Err(Error::Config(format!(
        "the checkout {how} {}/{}: push or reset your local commits first, so a pull builds on the branch everyone sees",
        req.remote, req.branch
    )))
}

/// The dispatch's `commitId` must exist; a pull still syncs the head.
async fn check_requested_commit(platform: &Platform, req: &Request, state: &PlatformState) -> Result<()> {
    let Some(requested) = &req.requested_commit else {
        return Ok(());
    };
    if state.head.as_ref().is_some_and(|h| &h.id == requested) {
        return Ok(());
    }
    match platform.commit(&req.project, requested).await {
        Ok(_) => Ok(()),
        Err(PlatformError::Api(e)) if e.status == 404 => Err(Error::Config(format!(
            "commit {requested:?} (the commit that asked for this pull) does not exist in project {:?}: check the dispatch's commitId",
            req.project
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Where a planned write goes, and its report line: the file the key already has, or a new
/// default path.
fn place(
    item: &Item,
    digest: &Option<Digest>,
    git: &Tree,
    layout: &mut Layout,
    req: &Request,
) -> Option<(Change, String)> {
    let existing = git.files.get(&item.key);
    let (op, rel) = match (digest, existing) {
        (None, Some(f)) => (Op::Delete, f.path.clone()),
        (None, None) => return None,
        (Some(_), Some(f)) => (Op::Update, f.path.clone()),
        (Some(_), None) => (Op::Add, layout.place(&item.key)),
    };
    let path = req.repo_path(&rel);
    let change = Change {
        side: Side::Git,
        op,
        kind: item.key.kind.to_string(),
        name: item.key.name.to_string(),
        path: Some(path.clone()),
    };
    Some((change, path))
}

/// The report lines of a plan's writes, for a dry run (nothing is fetched).
fn planned_changes(plan: &crate::engine::plan::Plan, git: &Tree, req: &Request) -> Vec<Change> {
    let mut layout = Layout::new(git.all_paths());
    plan.writes().filter_map(|(item, digest)| place(item, digest, git, &mut layout, req)).map(|(c, _)| c).collect()
}

/// Fetches, checks and renders the plan's writes in batches, writing each batch's files to the
/// object store; returns them staged, with their contents too when `keep_contents`, and the
/// report lines. Invalid platform data is returned as file errors: nothing is committed.
async fn stage(
    repo: &Repo,
    platform: &Platform,
    req: &Request,
    state: &PlatformState,
    plan: &crate::engine::plan::Plan,
    git: &Tree,
    keep_contents: bool,
) -> Result<std::result::Result<(Staged, Vec<TreeEdit>, Vec<Change>), Vec<FileError>>> {
    const BATCH: usize = 1000;
    const PACK_AT: usize = 200;
    let mut layout = Layout::new(git.all_paths());
    let mut staged = Staged::default();
    let mut contents_kept = Vec::new();
    let mut changes = Vec::new();
    let writes: Vec<(&Item, &Option<Digest>)> = plan.writes().collect();
    // A large change goes into one pack through one `git fast-import`; a small one stays loose
    // objects, so frequent small pulls do not pile up tiny packs.
    let mut pack = if writes.len() >= PACK_AT { Some(repo.pack_writer()?) } else { None };
    let mut packed: Vec<String> = Vec::new();
    for batch in writes.chunks(BATCH) {
        let keys: Vec<&Key> = batch.iter().filter(|(_, d)| d.is_some()).map(|(i, _)| &i.key).collect();
        let (objects, bad) = fetch_objects(platform, req, state, &keys).await?;
        if !bad.is_empty() {
            return Ok(Err(bad));
        }
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for (item, digest) in batch {
            let Some((change, path)) = place(item, digest, git, &mut layout, req) else { continue };
            match digest {
                Some(d) => files.push((path.clone(), crate::yaml::render(&objects[d]).into_bytes())),
                None => {
                    if keep_contents {
                        contents_kept.push(TreeEdit::Remove { path: path.clone() });
                    }
                    staged.removes.push(path);
                }
            }
            changes.push(change);
        }
        if let Some(pack) = pack.as_mut() {
            for (path, content) in files {
                pack.add(&content)?;
                if keep_contents {
                    contents_kept.push(TreeEdit::Write { path: path.clone(), content });
                }
                packed.push(path);
            }
            continue;
        }
        let oids = repo.write_blobs(&files.iter().map(|(_, c)| c.as_slice()).collect::<Vec<_>>())?;
        for ((path, content), oid) in files.into_iter().zip(oids) {
            if keep_contents {
                contents_kept.push(TreeEdit::Write { path: path.clone(), content });
            }
            staged.writes.push((path, oid));
        }
    }
    if let Some(pack) = pack {
        // The pack is installed only now, once every batch was fetched, checked and rendered.
        staged.writes = packed.into_iter().zip(pack.finish()?).collect();
    }
    Ok(Ok((staged, contents_kept, changes)))
}

/// Checks the written tree: every key written reads back with the platform's digest at the path
/// it was written to, every deleted key is gone, and no file is bad.
fn verify(plan: &crate::engine::plan::Plan, written: &Tree, staged: &Staged, req: &Request) -> Vec<FileError> {
    let mut problems = written.errors.clone();
    let written_paths: std::collections::HashSet<&str> = staged.writes.iter().map(|(p, _)| p.as_str()).collect();
    for (item, digest) in plan.writes() {
        let found = written.files.get(&item.key);
        let ok = match (digest, found) {
            (Some(d), Some(f)) => &f.digest == d && written_paths.contains(&req.repo_path(&f.path).as_str()),
            (None, None) => true,
            _ => false,
        };
        if !ok {
            let path = found
                .map_or_else(|| format!("platform:{}/{}", item.key.kind, item.key.name), |f| req.repo_path(&f.path));
            problems.push(FileError {
                path,
                line: None,
                column: None,
                message: format!(
                    "{} did not read back as written (is its path ignored by .defsyncignore, or under a dot-folder?); nothing was committed",
                    item.key
                ),
            });
        }
    }
    problems
}

fn commit_message(req: &Request, state: &PlatformState, changes: &[Change]) -> String {
    let head = state.head.as_ref();
    let mut msg = format!(
        "defsync: pull {} from the platform ({} change{})\n\n",
        req.project,
        changes.len(),
        if changes.len() == 1 { "" } else { "s" }
    );
    if let Some(h) = head {
        msg.push_str(&format!("Platform commit {} (seq {}).", h.id, h.seq));
    }
    if let Some(r) = req.requested_commit.as_ref().filter(|r| head.is_none_or(|h| &h.id != *r)) {
        msg.push_str(&format!(" Requested by {r}."));
    }
    msg.push_str("\n\n");
    const SHOWN: usize = 200;
    for c in changes.iter().take(SHOWN) {
        let op = match c.op {
            Op::Add => "add",
            Op::Update => "update",
            Op::Delete => "delete",
        };
        msg.push_str(&format!("- {op} {} {:?}: {}\n", c.kind, c.name, c.path.as_deref().unwrap_or("")));
    }
    if changes.len() > SHOWN {
        msg.push_str(&format!("- and {} more\n", changes.len() - SHOWN));
    }
    msg.push_str(&format!("\nDefsync-Project: {}\n", req.project));
    if let Some(h) = head {
        msg.push_str(&format!("Defsync-Commit: {}\n", h.id));
    }
    msg
}
