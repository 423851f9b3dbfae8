//! Runs: `pull`, `push`, `status` and `link`, following contract part 4.
//!
//! Each run reads both sides ([`read_platform`], [`scan_commit`]), plans with [`crate::engine::plan`],
//! and only then writes. Every write is a compare-and-swap (the platform commit's `parent`, a
//! fast-forward Git push, `If-Match` on the record); a run that loses re-reads and re-plans.

pub mod guard;
pub mod layout;
mod link;
pub mod plan;
mod pull;
mod push;
pub mod scan;
mod status;

use std::collections::{BTreeMap, HashMap};

pub use guard::DeletionLimit;
pub use link::link;
pub use pull::pull;
pub use push::push;
pub use status::status;

use crate::api::{BaseUpdate, Commit, Direction, ETag, Object, Project, PutSync, SyncRecord};
use crate::digest::Digest;
use crate::engine::plan::{Digests, HasDigest, Item, Preference};
use crate::error::{Error, Result};
use crate::git::{Identity, Oid, Repo};
use crate::model::{Definition, Key};
use crate::platform::{Platform, PlatformError};
use crate::report::{self, CommitRef, FileError, Report, Resolution};

/// How many times a run re-plans after losing a race before it gives up.
pub const MAX_ATTEMPTS: u32 = 5;

/// Everything a run needs to know, resolved from arguments and environment by the CLI.
#[derive(Debug, Clone)]
pub struct Request {
    pub project: String,
    /// The sync root, normalised: `.` or a relative path without `.`/`..` parts.
    pub path: String,
    /// The branch to sync (without `refs/heads/`).
    pub branch: String,
    pub remote: String,
    /// The repository as the record names it: `owner/name`, or a URL without credentials.
    pub repository: String,
    /// `--platform` as messages show it (no credentials), for the commands they suggest.
    pub platform: String,
    pub direction: Direction,
    pub prefer: Preference,
    pub dry_run: bool,
    pub no_push: bool,
    /// The deletion guard: how many of one side's definitions a run may delete.
    pub max_deletions: DeletionLimit,
    /// Let this run delete more than `max_deletions`.
    pub allow_mass_delete: bool,
    /// Pull only: the platform commit that asked for the run.
    pub requested_commit: Option<String>,
    pub author: Option<Identity>,
    pub committer: Option<Identity>,
    pub run_url: Option<String>,
    /// Pull only: onto the branch, or through a pull request.
    pub delivery: crate::forge::github::Delivery,
    /// Pull only: commit with local git and `git push`, or through GitHub's API.
    pub commit_via: crate::forge::github::CommitVia,
    /// Pull-request delivery: defsync's branch, and labels for the pull request.
    pub pr_branch: String,
    pub pr_labels: Vec<String>,
    /// How to reach GitHub's API (token and URL), when a delivery needs it.
    pub github: Option<crate::forge::github::GitHubOptions>,
}

impl Request {
    pub fn git_ref(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }

    fn link_text(&self) -> String {
        link_text(&self.repository, &self.git_ref(), &self.path, self.direction)
    }

    fn new_report(&self, command: &str) -> Report {
        let mut r = Report::new(command);
        r.project = Some(self.project.clone());
        r.requested_commit = self.requested_commit.clone();
        r.repository = Some(self.repository.clone());
        r.git_ref = Some(self.git_ref());
        r.path = Some(self.path.clone());
        r
    }

    /// `path` relative to the sync root, as a path relative to the repository root.
    fn repo_path(&self, rel: &str) -> String {
        if self.path == "." { rel.to_owned() } else { format!("{}/{rel}", self.path) }
    }

    /// The prefix that `scan` puts before sync-root-relative paths in errors.
    fn prefix(&self) -> &str {
        if self.path == "." { "" } else { &self.path }
    }

    /// The deletion guard for a plan in `mode`, out of `of` definitions on the side it writes.
    fn guard(
        &self,
        plan: &crate::engine::plan::Plan,
        mode: crate::engine::plan::Mode,
        of: usize,
    ) -> Option<report::DeletionGuard> {
        guard::check(plan, mode, of, self.max_deletions, self.allow_mass_delete)
    }

    fn put_sync(&self, commit: Option<String>, git_commit: Option<String>, base: Vec<BaseUpdate>) -> PutSync {
        PutSync {
            repository: self.repository.clone(),
            git_ref: self.git_ref(),
            path: self.path.clone(),
            direction: self.direction,
            commit,
            git_commit,
            replace_base: false,
            base,
        }
    }
}

fn link_text(repository: &str, git_ref: &str, path: &str, direction: Direction) -> String {
    format!("repository {repository}, ref {git_ref}, path {path}, direction {}", direction.as_str())
}

/// Refuses `command` on a link whose one-way `direction` never lets it write.
fn refuse_one_way(req: &Request, command: &str, direction: Direction, other: &str) -> Result<()> {
    if req.direction != direction {
        return Ok(());
    }
    let (source, target) = if direction == Direction::GitToPlatform {
        ("the platform", "the branch")
    } else {
        ("the branch", "the platform")
    };
    Err(Error::Config(format!(
        "{command} is refused: project {:?} is linked with direction {}, so {source} never writes to {target}. \
         Use `defsync {other}`, or move the link with `defsync link --direction bidirectional`",
        req.project,
        direction.as_str()
    )))
}

/// Normalises a sync root given by the user: relative, inside the work tree, not in `.git`.
pub fn normalize_path(path: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::Config(format!(
            "sync root {path:?} {why}; give a folder relative to the repository root, such as `platform`"
        ))
    };
    if path.starts_with('/') || path.starts_with('\\') || path.get(1..2) == Some(":") {
        return Err(bad("is absolute"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(bad("leaves the repository"));
                }
            }
            p => parts.push(p),
        }
    }
    if parts.first().is_some_and(|p| p.eq_ignore_ascii_case(".git")) {
        return Err(bad("is inside .git"));
    }
    Ok(if parts.is_empty() { ".".into() } else { parts.join("/") })
}

/// Refuses a sync root that is, or lies below, a symbolic link in the work tree.
fn check_no_symlink_on_path(repo: &Repo, path: &str) -> Result<()> {
    if path == "." {
        return Ok(());
    }
    let mut at = repo.root().to_path_buf();
    for part in path.split('/') {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::Config(format!(
                    "{} is a symbolic link; defsync never reads or writes through a link: make the sync root a real folder",
                    at.strip_prefix(repo.root()).unwrap_or(&at).display()
                )));
            }
            Ok(_) => {}
            Err(_) => return Ok(()), // missing: nothing below it can be a link
        }
    }
    Ok(())
}

/// The platform's side, read consistently: the project and the base with the same `ETag`, and
/// the head's manifest.
#[derive(Debug, Clone)]
pub struct PlatformState {
    pub project: Project,
    pub etag: ETag,
    pub base: Digests,
    pub head: Option<Commit>,
    /// Digest and canonical size of every key at the head.
    pub manifest: BTreeMap<Key, (Digest, u64)>,
}

impl PlatformState {
    pub fn record(&self) -> Option<&SyncRecord> {
        self.project.sync.as_ref()
    }

    fn head_ref(&self) -> Option<CommitRef> {
        self.head.as_ref().map(|c| CommitRef { id: c.id.clone(), seq: c.seq })
    }
}

/// Reads the project, the base and the head's manifest, re-reading until the project and the
/// base carry the same `ETag`.
pub async fn read_platform(platform: &Platform, project: &str) -> Result<PlatformState> {
    for _ in 0..MAX_ATTEMPTS {
        let (proj, etag) = platform.project(project).await?;
        let (base, base_etag) = platform.base(project).await?;
        if etag != base_etag {
            continue; // the record moved between the two reads
        }
        let mut base_digests = Digests::new();
        for e in base.entries {
            base_digests.insert(Key::new(e.kind, e.name), e.digest);
        }
        let mut manifest = BTreeMap::new();
        if let Some(head) = &proj.head {
            let m = platform.manifest(project, &head.id).await?;
            if m.commit.id != head.id {
                return Err(PlatformError::Invalid(format!(
                    "asked for the manifest of {} and got the one of {}",
                    head.id, m.commit.id
                ))
                .into());
            }
            for e in m.entries {
                let key = Key::new(e.kind, e.name);
                if manifest.insert(key.clone(), (e.digest, e.size)).is_some() {
                    return Err(PlatformError::Invalid(format!("the manifest lists {key} twice")).into());
                }
            }
        }
        let head = proj.head.clone();
        return Ok(PlatformState { project: proj, etag, base: base_digests, head, manifest });
    }
    Err(PlatformError::Transport(format!(
        "the sync record of project {project:?} kept changing while it was read; try again"
    ))
    .into())
}

/// What a check of the link found.
#[derive(Debug, PartialEq, Eq)]
enum LinkState {
    Linked,
    /// No record yet: the run links with its own settings first.
    Missing,
}

/// Refuses a run whose link differs from the record's. `any_ref` lets status and dry runs plan
/// on another ref, such as a pull request's.
fn check_link(req: &Request, state: &PlatformState, any_ref: bool) -> Result<LinkState> {
    let Some(rec) = state.record() else {
        return Ok(LinkState::Missing);
    };
    let same = rec.repository == req.repository
        && (any_ref || rec.git_ref == req.git_ref())
        && rec.path == req.path
        && rec.direction == req.direction;
    if same {
        return Ok(LinkState::Linked);
    }
    Err(Error::Config(format!(
        "project {:?} is linked to {}, but this run is for {}. If this run is right, move the link with \
         `{}` (in the action: `command: link`); otherwise fix this run's path, branch or direction",
        req.project,
        link_text(&rec.repository, &rec.git_ref, &rec.path, rec.direction),
        req.link_text(),
        link_command(req),
    )))
}

/// The `defsync link` command that links the project as `req` asks, complete and quoted for a
/// POSIX shell, so it runs as printed from the checkout. The API key stays in the environment.
fn link_command(req: &Request) -> String {
    let mut args = vec!["defsync", "link"];
    if !req.platform.is_empty() {
        args.extend(["--platform", &req.platform]);
    }
    args.extend(["--project", &req.project, "--path", &req.path, "--branch", &req.branch]);
    args.extend(["--direction", req.direction.as_str()]);
    if req.remote != "origin" {
        args.extend(["--remote", &req.remote]);
    }
    args.iter().map(|a| shell_word(a)).collect::<Vec<_>>().join(" ")
}

fn shell_word(s: &str) -> String {
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c));
    if plain { s.to_owned() } else { format!("'{}'", s.replace('\'', "'\\''")) }
}

/// Writes the link for a project that has none, with an empty base.
async fn create_link(platform: &Platform, req: &Request, state: &PlatformState) -> Result<()> {
    let mut body = req.put_sync(None, None, Vec::new());
    body.replace_base = true;
    match platform.put_sync(&req.project, &state.etag, &body).await {
        Ok(_) => Ok(()),
        // Another run linked it first; the caller re-reads and checks that link.
        Err(PlatformError::Api(e)) if e.status == 412 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reads the platform and refuses a run whose link differs from the record's. A project with
/// no link yet is planned as linked with an empty base, and linked by [`first_link`] only once
/// the run has shown it can succeed: a mistyped `--path` must not link the project to it.
async fn ensure_link(platform: &Platform, req: &Request, any_ref: bool) -> Result<PlatformState> {
    let state = read_platform(platform, &req.project).await?;
    check_link(req, &state, any_ref)?;
    Ok(state)
}

/// Links a project that has no link yet to this run's link, with an empty base; returns the
/// state read after it.
async fn first_link(platform: &Platform, req: &Request) -> Result<PlatformState> {
    for _ in 0..MAX_ATTEMPTS {
        let state = read_platform(platform, &req.project).await?;
        if check_link(req, &state, false)? == LinkState::Linked {
            return Ok(state);
        }
        tracing::info!("project {:?} has no link yet: linking it to {}", req.project, req.link_text());
        create_link(platform, req, &state).await?;
    }
    Err(PlatformError::Transport(format!(
        "the sync record of project {:?} kept changing while it was linked; try again",
        req.project
    ))
    .into())
}

/// Links a project that had no link when `state` was read, now that the run succeeded; returns
/// the state read after linking, to record the run on.
async fn link_if_new(platform: &Platform, req: &Request, state: &PlatformState) -> Result<Option<PlatformState>> {
    if state.record().is_some() {
        return Ok(None);
    }
    first_link(platform, req).await.map(Some)
}

/// A definition file in a commit, reduced to what planning needs.
#[derive(Debug, Clone)]
pub struct GitFile {
    /// Relative to the sync root.
    pub path: String,
    pub oid: Oid,
    pub digest: Digest,
}

/// The sync root of one commit.
#[derive(Debug, Default)]
pub struct Tree {
    pub files: BTreeMap<Key, GitFile>,
    /// Every path below the sync root, relative to it (for choosing new paths).
    pub all_paths: Vec<String>,
    pub errors: Vec<FileError>,
}

impl crate::engine::plan::HasDigest for GitFile {
    fn digest(&self) -> &Digest {
        &self.digest
    }
}

/// Scans the sync root of a commit (or tree): the files committed there, never the work tree.
///
/// `known` is an earlier scan of the same run: blobs it already parsed are not read again, so a
/// pull's re-scan of the tree it wrote parses only the files it wrote. At 100,000 files every
/// copy of a path, key or digest costs megabytes, so `known` is consumed and its entries moved
/// into the new scan, and paths are moved rather than cloned.
pub fn scan_commit(repo: &Repo, treeish: &str, req: &Request, known: Option<Tree>) -> Result<Tree> {
    let prefix = if req.path == "." { String::new() } else { format!("{}/", req.path) };
    let mut scan_entries = Vec::new();
    let mut oids: Vec<Oid> = Vec::new();
    let mut ignore_oid = None;
    for e in repo.ls_tree(treeish, &req.path)? {
        let rel = if prefix.is_empty() { Some(e.path.as_str()) } else { e.path.strip_prefix(&prefix) };
        let Some(rel) = rel else {
            // The sync root itself is not a folder here: a link or a file.
            let what = if e.is_symlink() { "a symbolic link" } else { "a file" };
            return Err(Error::Config(format!(
                "the sync root {} is {what} in commit {}; it must be a folder (defsync never follows links)",
                req.path,
                short(treeish)
            )));
        };
        let kind = if e.is_symlink() {
            scan::EntryKind::Symlink
        } else if e.is_file() {
            scan::EntryKind::File
        } else {
            scan::EntryKind::Other
        };
        if rel == ".defsyncignore" && kind == scan::EntryKind::File {
            ignore_oid = Some(e.oid.clone());
        }
        scan_entries.push(scan::Entry { path: rel.to_owned(), kind });
        oids.push(e.oid);
    }
    let ignore_text = match ignore_oid {
        Some(oid) => {
            let blob = repo.read_blobs(&[oid.as_str()])?.pop().unwrap_or_default();
            Some(
                String::from_utf8(blob)
                    .map_err(|_| Error::Config(format!("{prefix}.defsyncignore is not UTF-8 text")))?,
            )
        }
        None => None,
    };
    let selection = scan::select(&scan_entries, ignore_text.as_deref(), req.prefix());
    let index: HashMap<&str, usize> = scan_entries.iter().enumerate().map(|(i, e)| (e.path.as_str(), i)).collect();
    let oid_of = |path: &str| oids[index[path]].as_str();

    // What the earlier scan knows, by object name.
    let mut known: HashMap<Oid, (Key, Digest)> =
        known.map(|t| t.files.into_iter().map(|(k, f)| (f.oid, (k, f.digest))).collect()).unwrap_or_default();
    let mut parsed: HashMap<&str, std::result::Result<(Key, Digest), ()>> = HashMap::new();
    let todo: Vec<&str> = {
        let mut seen = std::collections::HashSet::new();
        selection.files.iter().map(|p| oid_of(p)).filter(|o| !known.contains_key(*o) && seen.insert(*o)).collect()
    };
    let path_of: HashMap<&str, &str> = selection.files.iter().map(|p| (oid_of(p), p.as_str())).collect();
    // Chunks bound the memory held at once; each is parsed in parallel.
    for chunk in todo.chunks(4096) {
        let blobs = repo.read_blobs(chunk)?;
        let batch = scan::parse_files(chunk.iter().map(|o| path_of[o].to_owned()).zip(blobs).collect(), req.prefix());
        let mut found: HashMap<String, (Key, Digest)> =
            batch.files.into_iter().map(|(k, f)| (f.path, (k, f.digest))).collect();
        let mut unsure = Vec::new();
        for oid in chunk {
            match found.remove(path_of[oid]) {
                Some(entry) => {
                    parsed.insert(oid, Ok(entry));
                }
                // A bad file, or a good one that shares its key with another file of the chunk.
                None => unsure.push(*oid),
            }
        }
        if !unsure.is_empty() {
            for (oid, blob) in unsure.iter().zip(repo.read_blobs(&unsure)?) {
                parsed.insert(oid, crate::yaml::parse(&blob).map(|d| (d.key(), d.digest())).map_err(drop));
            }
        }
    }

    // Collect, reporting bad files and keys held by two files.
    let mut tree = Tree { errors: selection.errors, ..Tree::default() };
    let mut shared: BTreeMap<Key, Vec<String>> = BTreeMap::new();
    let mut bad: Vec<&str> = Vec::new();
    for path in &selection.files {
        let oid = oid_of(path);
        // Each known entry is moved out once; a blob at a second path (a copy of a file, and so a
        // duplicate key) is parsed again.
        let entry = match known.remove(oid) {
            Some(entry) => Ok(entry),
            None => match parsed.get(oid) {
                Some(Ok((k, d))) => Ok((k.clone(), d.clone())),
                Some(Err(())) => Err(()),
                None => {
                    let blob = repo.read_blobs(&[oid])?.pop().unwrap_or_default();
                    crate::yaml::parse(&blob).map(|d| (d.key(), d.digest())).map_err(drop)
                }
            },
        };
        let Ok((key, digest)) = entry else {
            bad.push(path);
            continue;
        };
        let file = GitFile { path: path.clone(), oid: oid.to_owned(), digest };
        if let Some(first) = tree.files.get(&key) {
            shared.entry(key).or_insert_with(|| vec![first.path.clone()]).push(file.path);
        } else {
            tree.files.insert(key, file);
        }
    }
    if !bad.is_empty() {
        // Parse the bad files again for their messages; they are few.
        let blobs = repo.read_blobs(&bad.iter().map(|p| oid_of(p)).collect::<Vec<_>>())?;
        let reparsed = scan::parse_files(bad.iter().map(|p| (*p).to_owned()).zip(blobs).collect(), req.prefix());
        tree.errors.extend(reparsed.errors);
    }
    for (key, paths) in shared {
        tree.files.remove(&key);
        let named: Vec<String> = paths.iter().map(|p| req.repo_path(p)).collect();
        for p in &paths {
            tree.errors.push(FileError {
                path: req.repo_path(p),
                line: None,
                column: None,
                message: format!(
                    "{key} is defined in more than one file ({}): keep it in one file and delete or rename the others",
                    named.join(", ")
                ),
            });
        }
    }
    tree.errors.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
    drop(index);
    tree.all_paths = scan_entries.into_iter().map(|e| e.path).collect();
    Ok(tree)
}

/// Reads and parses the definitions of some files of a commit.
fn load_definitions(repo: &Repo, files: &[&GitFile]) -> Result<Vec<Definition>> {
    let blobs = repo.read_blobs(&files.iter().map(|f| f.oid.as_str()).collect::<Vec<_>>())?;
    files
        .iter()
        .zip(blobs)
        .map(|(f, blob)| {
            crate::yaml::parse(&blob)
                .map_err(|e| Error::Other(anyhow::anyhow!("{} changed while it was read: {e}", f.path)))
        })
        .collect()
}

/// Fetches platform objects and checks each against the contract: valid, and with the digest it
/// was asked for. Bad data becomes file errors (`platform:<kind>/<name>`), never files.
async fn fetch_objects(
    platform: &Platform,
    req: &Request,
    state: &PlatformState,
    keys: &[&Key],
) -> Result<(HashMap<Digest, Definition>, Vec<FileError>)> {
    let mut wanted: Vec<(Digest, u64)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for key in keys {
        if let Some((d, size)) = state.manifest.get(*key).filter(|(d, _)| seen.insert(d)) {
            wanted.push((d.clone(), *size));
        }
    }
    let mut out = HashMap::new();
    let mut errors = Vec::new();
    if wanted.is_empty() {
        return Ok((out, errors));
    }
    let answer = platform.batch_get(&req.project, &wanted).await?;
    if !answer.missing.is_empty() {
        return Err(PlatformError::Invalid(format!(
            "the platform lists {} objects in its head but cannot return them (first: {})",
            answer.missing.len(),
            answer.missing[0]
        ))
        .into());
    }
    for Object { digest, kind, name, spec } in answer.objects {
        let def = Definition { kind, name, spec };
        match def.validate() {
            Ok(canonical) if Digest::of_canonical(&canonical) == digest => {
                out.insert(digest, def);
            }
            Ok(_) => errors.push(platform_error(&def, "its content does not match its digest".into())),
            Err(m) => errors.push(platform_error(&def, m)),
        }
    }
    if let Some((d, _)) = wanted.iter().find(|(d, _)| !out.contains_key(d)).filter(|_| errors.is_empty()) {
        return Err(PlatformError::Invalid(format!("the platform did not return object {d}")).into());
    }
    Ok((out, errors))
}

fn platform_error(def: &Definition, message: String) -> FileError {
    FileError {
        path: format!("platform:{}/{}", def.kind, def.name),
        line: None,
        column: None,
        message: format!("the platform sent an invalid definition: {message}"),
    }
}

/// Base updates after a run: every key where the branch and the platform agree and the base
/// differs, plus the deferred keys whose platform side is still what was planned.
fn agreement<G: HasDigest>(
    git: &BTreeMap<Key, G>,
    state: &PlatformState,
    deferred: &[(Key, Option<Digest>, Option<Digest>)],
) -> Vec<BaseUpdate> {
    let platform = |key: &Key| state.manifest.get(key).map(|(d, _)| d);
    let mut updates: BTreeMap<Key, Option<Digest>> = BTreeMap::new();
    let keys: std::collections::BTreeSet<&Key> =
        git.keys().chain(state.manifest.keys()).chain(state.base.keys()).collect();
    for key in keys {
        let g = git.get(key).map(HasDigest::digest);
        if g == platform(key) && state.base.get(key) != g {
            updates.insert(key.clone(), g.cloned());
        }
    }
    for (key, planned_platform, digest) in deferred {
        // A deferred key moves only if neither side moved since the plan; otherwise the next run
        // sees it as the conflict it is.
        if platform(key) == planned_platform.as_ref() && !updates.contains_key(key) {
            updates.insert(key.clone(), digest.clone());
        }
    }
    updates.into_iter().map(|(k, d)| BaseUpdate { kind: k.kind, name: k.name, digest: d }).collect()
}

/// Sends the base of agreeing keys (and deferred keys) with `If-Match`, re-reading on 412.
///
/// `synced` is the platform commit the branch now matches, recorded unless a newer one is.
async fn send_agreement<G: HasDigest>(
    platform: &Platform,
    req: &Request,
    git: &BTreeMap<Key, G>,
    state: &PlatformState,
    deferred: &[(Key, Option<Digest>, Option<Digest>)],
    synced: Option<&Commit>,
    git_commit: Option<&str>,
) -> Result<()> {
    // Re-read only when the record moved; the first attempt uses the caller's state.
    let mut reread: Option<PlatformState> = None;
    for _ in 0..MAX_ATTEMPTS {
        let state = reread.as_ref().unwrap_or(state);
        let updates = agreement(git, state, deferred);
        let record = state.record();
        let record_seq = record.map_or(0, |r| r.seq);
        let commit = synced.filter(|c| c.seq >= record_seq).map(|c| c.id.clone());
        let record_moves = commit.is_some() && record.and_then(|r| r.commit.as_deref()) != commit.as_deref();
        // The Git commit alone is no reason for a request: it moves with the next real update.
        if updates.is_empty() && !record_moves {
            return Ok(());
        }
        let body = req.put_sync(commit, git_commit.map(str::to_owned), updates);
        match platform.put_sync(&req.project, &state.etag, &body).await {
            Ok(_) => return Ok(()),
            Err(PlatformError::Api(e)) if e.status == 412 || e.is("sync_regression") => {
                tracing::info!("the sync record moved; reading it again");
                let fresh = read_platform(platform, &req.project).await?;
                check_link(req, &fresh, false)?;
                reread = Some(fresh);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(PlatformError::Transport(
        "the sync record kept changing; the base was not updated (the next run repairs it)".into(),
    )
    .into())
}

/// Keys both sides changed: unresolved conflicts and the ones a preference resolved.
fn conflict_items(plan: &crate::engine::plan::Plan) -> Vec<&Item> {
    plan.items.iter().filter(|i| i.was_conflict || i.action == crate::engine::plan::Action::Conflict).collect()
}

/// What a run that writes does with a conflicting key, for its report.
fn resolution_of(item: &Item) -> Resolution {
    match item.action {
        crate::engine::plan::Action::Conflict => Resolution::None,
        crate::engine::plan::Action::Defer(_) => Resolution::Deferred,
        _ => Resolution::Written,
    }
}

/// Fills the report's conflicts, with both versions as YAML for people to compare.
fn report_conflicts(
    report: &mut Report,
    repo: &Repo,
    req: &Request,
    items: &[&Item],
    git: &Tree,
    objects: &HashMap<Digest, Definition>,
    resolution: impl Fn(&Item) -> Resolution,
) -> Result<()> {
    let files: Vec<&GitFile> = items.iter().filter_map(|i| git.files.get(&i.key)).collect();
    let blobs = repo.read_blobs(&files.iter().map(|f| f.oid.as_str()).collect::<Vec<_>>())?;
    let texts: HashMap<&str, String> =
        files.iter().zip(blobs).map(|(f, b)| (f.oid.as_str(), String::from_utf8_lossy(&b).into_owned())).collect();
    for item in items {
        let file = git.files.get(&item.key);
        report.conflicts.push(report::Conflict {
            kind: item.key.kind.clone(),
            name: item.key.name.clone(),
            path: file.map(|f| req.repo_path(&f.path)),
            base: item.base.clone(),
            git: item.git.clone(),
            platform: item.platform.clone(),
            resolution: resolution(item),
            git_yaml: file.and_then(|f| texts.get(f.oid.as_str()).cloned()),
            platform_yaml: item.platform.as_ref().and_then(|d| objects.get(d)).map(crate::yaml::render),
        });
    }
    Ok(())
}

fn short(oid: &str) -> &str {
    &oid[..oid.len().min(12)]
}

/// Reports bad files as the run's outcome: nothing is changed on either side.
fn invalid(mut report: Report, errors: Vec<FileError>) -> Report {
    report.errors = errors;
    report.status = report::Status::Invalid;
    report.changes.clear();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_roots_are_normalised_and_stay_in_the_work_tree() {
        for (given, want) in [(".", "."), ("", "."), ("platform/", "platform"), ("./a/../b//c", "b/c"), ("a\\b", "a/b")]
        {
            assert_eq!(normalize_path(given).unwrap(), want, "{given:?}");
        }
        for bad in ["/abs", "\\abs", "C:/x", "..", "a/../../b", ".git", ".GIT/hooks", "./.git/x"] {
            let e = normalize_path(bad).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{bad:?}: {e}");
        }
    }
}
