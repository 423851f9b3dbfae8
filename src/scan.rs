//! Reading the sync root's definition files into a manifest, reporting every bad file.
//! STUB: to be implemented.

use std::collections::BTreeMap;

use crate::digest::Digest;
use crate::model::{Definition, Key};
use crate::report::FileError;

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

/// Picks the definition files below the sync root (contract part 2, "Which files are
/// definitions"). `defsyncignore` is the text of `<sync root>/.defsyncignore`, if any. Symlinks
/// are errors. `prefix` is the sync root relative to the repository, prepended to error paths.
pub fn select(_entries: &[Entry], _defsyncignore: Option<&str>, _prefix: &str) -> Selection {
    unimplemented!()
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
pub fn parse_files(_files: Vec<(String, Vec<u8>)>, _prefix: &str) -> Scan {
    unimplemented!()
}
