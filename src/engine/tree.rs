//! The branch's side of a run: the sync root of one commit, scanned from Git's objects (never
//! the work tree).

use std::collections::{BTreeMap, HashMap};

use crate::digest::Digest;
use crate::engine::layout::default_path;
use crate::engine::packed::PackedMap;
use crate::engine::request::Request;
use crate::engine::scan;
use crate::engine::state::BaseValue;
use crate::error::{Error, Result};
use crate::git::{ObjectId, Repo};
use crate::model::{Definition, Key};
use crate::report::FileError;

/// Refuses a sync root that is, or lies below, a symbolic link in the work tree.
pub(super) fn check_no_symlink_on_path(repo: &Repo, path: &str) -> Result<()> {
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

/// A definition file in a commit, reduced to what planning needs.
#[derive(Debug, Clone)]
pub struct GitFile {
    /// Relative to the sync root.
    pub path: String,
    pub oid: ObjectId,
    pub digest: Digest,
}

/// The sync root of one commit.
#[derive(Debug, Default)]
pub struct Tree {
    pub files: BTreeMap<Key, GitFile>,
    /// The paths below the sync root, relative to it, that are not the path of a file in
    /// `files`: each path is held once, and [`Tree::all_paths`] gives them all.
    pub other_paths: Vec<String>,
    pub errors: Vec<FileError>,
}

impl Tree {
    /// Every path below the sync root, relative to it (for choosing new paths).
    pub fn all_paths(&self) -> impl Iterator<Item = &str> {
        self.files.values().map(|f| f.path.as_str()).chain(self.other_paths.iter().map(String::as_str))
    }
}

impl crate::engine::plan::HasDigest for GitFile {
    fn digest(&self) -> &Digest {
        &self.digest
    }
}

/// Scans the sync root of a commit (or tree): the files committed there, never the work tree.
///
/// `base` is the platform's base: a file that sits at its key's default path with the blob the
/// base recorded for that key is not parsed, because its content is byte for byte the content
/// whose key and digest the base holds (contract v1.2, "Blob proofs"). Every other file is
/// parsed: a blob at another path, a file changed since, a key whose base has no blob.
///
/// `known` is an earlier scan of the same run: blobs it already parsed are not read again, so a
/// pull's re-scan of the tree it wrote parses only the files it wrote. At 100,000 files every
/// copy of a path, key or digest costs megabytes, so `known` is consumed and its entries moved
/// into the new scan, and paths are moved rather than cloned.
pub fn scan_commit(
    repo: &Repo,
    treeish: &str,
    req: &Request,
    base: Option<&BTreeMap<Key, BaseValue>>,
    known: Option<Tree>,
) -> Result<Tree> {
    let prefix = if req.path == "." { String::new() } else { format!("{}/", req.path) };
    let mut scan_entries = Vec::new();
    let mut oids: Vec<ObjectId> = Vec::new();
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
            ignore_oid = ObjectId::from_hex(&e.oid);
        }
        // The path's own allocation, without the prefix: 100,000 paths are not copied.
        let cut = e.path.len() - rel.len();
        let mut path = e.path;
        path.drain(..cut);
        scan_entries.push(scan::Entry { path, kind });
        oids.push(
            ObjectId::from_hex(&e.oid)
                .ok_or_else(|| Error::Git(format!("git ls-tree gave the object name {:?}", e.oid)))?,
        );
    }
    let ignore_text = match ignore_oid {
        Some(oid) => {
            let blob = repo.read_blobs(&[oid])?.pop().unwrap_or_default();
            Some(
                String::from_utf8(blob)
                    .map_err(|_| Error::Config(format!("{prefix}.defsyncignore is not UTF-8 text")))?,
            )
        }
        None => None,
    };
    let mut selection = scan::select(&scan_entries, ignore_text.as_deref(), req.prefix());
    let index: HashMap<&str, usize> = scan_entries.iter().enumerate().map(|(i, e)| (e.path.as_str(), i)).collect();
    let oid_of = |path: &str| oids[index[path]];

    // Files whose content the base proves, by entry: the base's own key and digest, borrowed.
    // The proof is the object ID Git itself computed for the committed bytes at that path, and
    // the file must also be a selected definition (not ignored, not under a dot-folder).
    let mut proven: Vec<Option<(&Key, &Digest)>> = vec![None; scan_entries.len()];
    for (key, value) in base.into_iter().flatten() {
        let Some(blob) = &value.blob else { continue };
        let path = default_path(key);
        let Some(&i) = index.get(path.as_str()) else { continue };
        if oids[i] == *blob && selection.files.binary_search(&path).is_ok() {
            proven[i] = Some((key, &value.digest));
        }
    }
    let is_proven = |path: &str| proven[index[path]].is_some();

    // What the earlier scan knows, by object name.
    let mut known: HashMap<ObjectId, (Key, Digest)> =
        known.map(|t| t.files.into_iter().map(|(k, f)| (f.oid, (k, f.digest))).collect()).unwrap_or_default();
    let mut parsed: HashMap<ObjectId, std::result::Result<(Key, Digest), ()>> = HashMap::new();
    let todo: Vec<ObjectId> = {
        let mut seen = std::collections::HashSet::new();
        selection
            .files
            .iter()
            .filter(|p| !is_proven(p))
            .map(|p| oid_of(p))
            .filter(|o| !known.contains_key(o) && seen.insert(*o))
            .collect()
    };
    let path_of: HashMap<ObjectId, &str> =
        selection.files.iter().filter(|p| !is_proven(p)).map(|p| (oid_of(p), p.as_str())).collect();
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
                    parsed.insert(*oid, Ok(entry));
                }
                // A bad file, or a good one that shares its key with another file of the chunk.
                None => unsure.push(*oid),
            }
        }
        if !unsure.is_empty() {
            for (oid, blob) in unsure.iter().zip(repo.read_blobs(&unsure)?) {
                parsed.insert(*oid, scan::parse_counted(&blob).map(|d| (d.key(), d.digest())).map_err(drop));
            }
        }
    }
    drop(path_of);

    // Collect, reporting bad files and keys held by two files. The selected paths are moved
    // into the tree, not copied.
    let mut files = PackedMap::default();
    // Which entries' paths the files hold; the others are kept as `other_paths`.
    let mut in_files = vec![false; scan_entries.len()];
    let mut shared: BTreeMap<Key, Vec<String>> = BTreeMap::new();
    let mut bad: Vec<String> = Vec::new();
    for path in std::mem::take(&mut selection.files) {
        let i = index[path.as_str()];
        let oid = oids[i];
        // Each known entry is moved out once; a blob at a second path (a copy of a file, and so a
        // duplicate key) is parsed again.
        let entry = match proven[i].take().map(|(k, d)| (k.clone(), d.clone())).or_else(|| known.remove(&oid)) {
            Some(entry) => Ok(entry),
            None => match parsed.get(&oid) {
                Some(Ok((k, d))) => Ok((k.clone(), d.clone())),
                Some(Err(())) => Err(()),
                None => {
                    let blob = repo.read_blobs(&[oid])?.pop().unwrap_or_default();
                    scan::parse_counted(&blob).map(|d| (d.key(), d.digest())).map_err(drop)
                }
            },
        };
        let Ok((key, digest)) = entry else {
            bad.push(path);
            continue;
        };
        let file = GitFile { path, oid, digest };
        match files.insert_new(key, file) {
            Ok(()) => in_files[i] = true,
            Err((key, file)) => {
                let first = files.get(&key).map(|f: &GitFile| f.path.clone()).unwrap_or_default();
                shared.entry(key).or_insert_with(|| vec![first]).push(file.path);
            }
        }
    }
    let mut tree = Tree { files: files.finish(), errors: selection.errors, ..Tree::default() };
    if !bad.is_empty() {
        // Parse the bad files again for their messages; they are few.
        let blobs = repo.read_blobs(&bad.iter().map(|p| oid_of(p)).collect::<Vec<_>>())?;
        let reparsed = scan::parse_files(bad.into_iter().zip(blobs).collect(), req.prefix());
        tree.errors.extend(reparsed.errors);
    }
    for (key, paths) in shared {
        if let Some(first) = tree.files.remove(&key) {
            in_files[index[first.path.as_str()]] = false;
        }
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
    tree.other_paths = scan_entries.into_iter().zip(in_files).filter(|(_, held)| !held).map(|(e, _)| e.path).collect();
    Ok(tree)
}

/// Reads and parses the definitions of some files of a commit.
pub(super) fn load_definitions(repo: &Repo, files: &[&GitFile]) -> Result<Vec<Definition>> {
    let blobs = repo.read_blobs(&files.iter().map(|f| f.oid).collect::<Vec<_>>())?;
    files
        .iter()
        .zip(blobs)
        .map(|(f, blob)| {
            scan::parse_counted(&blob)
                .map_err(|e| Error::Other(anyhow::anyhow!("{} changed while it was read: {e}", f.path)))
        })
        .collect()
}

pub(super) fn short(oid: &str) -> &str {
    &oid[..oid.len().min(12)]
}
