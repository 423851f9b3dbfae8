//! Reading the sync root's definition files into a manifest, reporting every bad file
//! (contract part 2, "Which files are definitions" and "What a definition file holds").

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::digest::Digest;
use crate::model::{Definition, Key};
use crate::report::FileError;
use crate::yaml;

/// What a path in a tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Symlink,
    /// A submodule or anything else that is not a regular file.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the sync root, `/`-separated.
    pub path: String,
    pub kind: EntryKind,
}

/// Which entries are definition files, and the errors of entries that may not be there.
#[derive(Debug, Default)]
pub struct Selection {
    /// Paths relative to the sync root.
    pub files: Vec<String>,
    pub errors: Vec<FileError>,
}

/// The name of the ignore file at the sync root.
pub const IGNORE_FILE: &str = ".defsyncignore";

/// Picks the definition files below the sync root (contract part 2, "Which files are
/// definitions"). `defsyncignore` is the text of `<sync root>/.defsyncignore`, if any. Symlinks
/// are errors. `prefix` is the sync root relative to the repository, prepended to error paths.
pub fn select(entries: &[Entry], defsyncignore: Option<&str>, prefix: &str) -> Selection {
    let mut selection = Selection::default();
    let ignore = defsyncignore.map(|text| build_ignore(text, prefix, &mut selection.errors));
    for entry in entries {
        let path = entry.path.trim_start_matches("./").trim_start_matches('/');
        if entry.kind == EntryKind::Symlink {
            // Reported wherever it is, ignored or not: nothing is ever read through a link.
            selection.errors.push(FileError {
                path: repo_path(prefix, path),
                line: None,
                column: None,
                message:
                    "this is a symbolic link, and defsync never follows links: replace it with a regular file or folder"
                        .into(),
            });
            continue;
        }
        if !is_definition_name(path) || in_dot_folder(path) {
            continue;
        }
        if ignore.as_ref().is_some_and(|i| i.matched_path_or_any_parents(path, false).is_ignore()) {
            continue;
        }
        if entry.kind == EntryKind::Other {
            selection.errors.push(FileError {
                path: repo_path(prefix, path),
                line: None,
                column: None,
                message: format!(
                    "this is not a regular file (a submodule?) but has a definition file's name: rename it, or list it in {IGNORE_FILE}"
                ),
            });
            continue;
        }
        selection.files.push(path.to_owned());
    }
    selection.files.sort();
    selection.files.dedup();
    sort_errors(&mut selection.errors);
    selection
}

fn build_ignore(text: &str, prefix: &str, errors: &mut Vec<FileError>) -> Gitignore {
    // Root `.`: paths are matched as given, relative to the sync root, never looked up on disk.
    let mut builder = GitignoreBuilder::new(".");
    for (i, line) in text.lines().enumerate() {
        if let Err(e) = builder.add_line(None, line) {
            errors.push(FileError {
                path: repo_path(prefix, IGNORE_FILE),
                line: Some(i as u64 + 1),
                column: None,
                message: format!("this pattern is not valid gitignore syntax ({e}): fix or remove it"),
            });
        }
    }
    builder.build().unwrap_or_else(|e| {
        errors.push(FileError {
            path: repo_path(prefix, IGNORE_FILE),
            line: None,
            column: None,
            message: format!("the patterns cannot be used ({e}): fix them"),
        });
        Gitignore::empty()
    })
}

fn is_definition_name(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

/// Files under a folder (below the root) whose name starts with `.` are not definitions.
fn in_dot_folder(path: &str) -> bool {
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop();
    parts.iter().any(|p| p.starts_with('.') && *p != ".")
}

/// `path` (relative to the sync root) relative to the repository root.
pub fn repo_path(prefix: &str, path: &str) -> String {
    let prefix = prefix.trim_start_matches("./").trim_matches('/');
    if prefix.is_empty() || prefix == "." { path.to_owned() } else { format!("{prefix}/{path}") }
}

fn sort_errors(errors: &mut [FileError]) {
    errors.sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
}

#[derive(Debug, Clone)]
pub struct ScannedFile {
    /// Relative to the sync root.
    pub path: String,
    pub definition: Definition,
    pub digest: Digest,
}

#[derive(Debug, Default)]
pub struct Scan {
    pub files: BTreeMap<Key, ScannedFile>,
    pub errors: Vec<FileError>,
}

/// Parses files (path relative to the sync root, content). Every bad file is reported, and two
/// files holding one key are both named. `prefix` as in [`select`].
pub fn parse_files(mut files: Vec<(String, Vec<u8>)>, prefix: &str) -> Scan {
    // Results do not depend on the order given, nor on which thread parsed what.
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let results = parse_parallel(&files);

    let mut scan = Scan::default();
    let mut holders: HashMap<Key, Vec<usize>> = HashMap::new();
    let mut parsed: Vec<Option<(Definition, Digest)>> = Vec::with_capacity(files.len());
    for (i, ((path, _), result)) in files.iter().zip(results).enumerate() {
        match result {
            Ok(found) => {
                holders.entry(found.0.key()).or_default().push(i);
                parsed.push(Some(found));
            }
            Err(e) => {
                scan.errors.push(FileError {
                    path: repo_path(prefix, path),
                    line: e.line,
                    column: e.column,
                    message: e.message,
                });
                parsed.push(None);
            }
        }
    }
    for (key, indexes) in holders {
        if indexes.len() == 1 {
            let i = indexes[0];
            let (definition, digest) = parsed[i].take().expect("each file is parsed once");
            scan.files.insert(key, ScannedFile { path: files[i].0.clone(), definition, digest });
            continue;
        }
        // Neither file is used: which one holds the truth is for a person to decide.
        for &i in &indexes {
            let others: Vec<String> =
                indexes.iter().filter(|&&j| j != i).map(|&j| format!("`{}`", repo_path(prefix, &files[j].0))).collect();
            scan.errors.push(FileError {
                path: repo_path(prefix, &files[i].0),
                line: None,
                column: None,
                message: format!(
                    "the definition {key} is also in {}: a definition may live in one file only; delete or change one of them",
                    others.join(", ")
                ),
            });
        }
    }
    sort_errors(&mut scan.errors);
    scan
}

type Parsed = Result<(Definition, Digest), yaml::ParseError>;

/// Definition files this process parsed: reported in a run's stats, so a run's cost is seen to
/// follow what changed (contract v1.2's blob proofs spare the rest).
static FILES_PARSED: AtomicU64 = AtomicU64::new(0);

/// How many definition files this process has parsed so far.
pub fn files_parsed() -> u64 {
    FILES_PARSED.load(Ordering::Relaxed)
}

/// Parses one definition file's bytes, counted in [`files_parsed`].
pub fn parse_counted(text: &[u8]) -> Result<Definition, yaml::ParseError> {
    FILES_PARSED.fetch_add(1, Ordering::Relaxed);
    yaml::parse(text)
}

fn parse_one(text: &[u8]) -> Parsed {
    FILES_PARSED.fetch_add(1, Ordering::Relaxed);
    let (definition, canonical) = yaml::parse_with_canonical_on_big_stack(text)?;
    let digest = Digest::of_canonical(&canonical);
    Ok((definition, digest))
}

/// Parses on every available core. Workers take files one by one from a shared counter, so one
/// large file does not hold up a whole slice.
fn parse_parallel(files: &[(String, Vec<u8>)]) -> Vec<Parsed> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(files.len().div_ceil(16)).max(1);
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((_, text)) = files.get(i) else { break };
            done.push((i, parse_one(text)));
        }
        done
    };
    let mut results: Vec<Option<Parsed>> = (0..files.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|n| {
                std::thread::Builder::new()
                    .name(format!("defsync-scan-{n}"))
                    // Enough for the deepest file the parser's budget admits.
                    .stack_size(yaml::PARSE_STACK_BYTES)
                    .spawn_scoped(scope, work)
            })
            .collect();
        // A thread that could not start leaves its share to the others (or to the loop below).
        for handle in handles.into_iter().flatten() {
            let done = handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            for (i, result) in done {
                results[i] = Some(result);
            }
        }
    });
    // Anything no thread took (every spawn failed) is parsed here, on the caller's thread.
    results
        .into_iter()
        .zip(files)
        .map(|(r, (_, text))| {
            r.unwrap_or_else(|| {
                FILES_PARSED.fetch_add(1, Ordering::Relaxed);
                let (definition, canonical) = yaml::parse_with_canonical(text)?;
                Ok((definition, Digest::of_canonical(&canonical)))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry { path: path.into(), kind }
    }

    #[test]
    fn selects_definition_files() {
        let entries = [
            entry("a.yaml", EntryKind::File),
            entry("b.yml", EntryKind::File),
            entry("c.json", EntryKind::File),
            entry(".github/workflows/x.yaml", EntryKind::File),
            entry("sub/.hidden/y.yaml", EntryKind::File),
            entry("vendor/z.yaml", EntryKind::File),
            entry("keep/k.yaml", EntryKind::File),
            entry("drafts/d.yaml", EntryKind::File),
            entry("link.yaml", EntryKind::Symlink),
            entry("dir-link", EntryKind::Symlink),
            entry("module.yaml", EntryKind::Other),
        ];
        let sel = select(&entries, Some("vendor/\n*.yml\ndrafts\n"), "platform");
        assert_eq!(sel.files, ["a.yaml", "keep/k.yaml"]);
        let paths: Vec<&str> = sel.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["platform/dir-link", "platform/link.yaml", "platform/module.yaml"]);
        assert_eq!(select(&entries, None, ".").errors[0].path, "dir-link");
    }

    #[test]
    fn two_files_with_one_key_are_both_reported() {
        let file = |name: &str| format!("kind: workflow\nname: {name}\n").into_bytes();
        let scan = parse_files(
            vec![
                ("b.yaml".into(), file("x")),
                ("a.yaml".into(), file("x")),
                ("c.yaml".into(), file("y")),
                ("d.yaml".into(), b"kind: [".to_vec()),
            ],
            "",
        );
        assert_eq!(scan.files.len(), 1);
        let paths: Vec<&str> = scan.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a.yaml", "b.yaml", "d.yaml"]);
        assert!(scan.errors[0].message.contains("`b.yaml`"), "{:?}", scan.errors[0]);
    }
}
