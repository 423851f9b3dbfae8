//! The platform's side of a run: read consistently, and its objects fetched and checked against
//! the contract before any of them is written anywhere.

use std::collections::{BTreeMap, HashMap};

use crate::api::{Commit, ETag, Object, Project, SyncRecord};
use crate::digest::Digest;
use crate::engine::MAX_ATTEMPTS;
use crate::engine::plan::HasDigest;
use crate::engine::request::Request;
use crate::error::Result;
use crate::git::Oid;
use crate::model::{Definition, Key};
use crate::platform::{Platform, PlatformError};
use crate::report::{CommitRef, FileError};

/// The platform's side, read consistently: the project and the base with the same `ETag`, and
/// the head's manifest.
#[derive(Debug, Clone)]
pub struct PlatformState {
    pub project: Project,
    pub etag: ETag,
    pub base: BTreeMap<Key, BaseValue>,
    pub head: Option<Commit>,
    /// Digest and canonical size of every key at the head.
    pub manifest: BTreeMap<Key, (Digest, u64)>,
}

impl PlatformState {
    pub fn record(&self) -> Option<&SyncRecord> {
        self.project.sync.as_ref()
    }

    pub(super) fn head_ref(&self) -> Option<CommitRef> {
        self.head.as_ref().map(|c| CommitRef { id: c.id.clone(), seq: c.seq })
    }
}

/// A key's base: the agreed digest, and the blob that proves it when the platform kept one
/// (contract v1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseValue {
    pub digest: Digest,
    /// The blob ID of the file at the key's default path that held the agreed content.
    pub blob: Option<Oid>,
}

impl HasDigest for BaseValue {
    fn digest(&self) -> &Digest {
        &self.digest
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
        let mut base_digests = BTreeMap::new();
        for e in base.entries {
            // A blob that is not an object ID proves nothing: it is dropped, and the file parsed.
            let blob = e.blob.filter(|b| is_oid(b));
            base_digests.insert(Key::new(e.kind, e.name), BaseValue { digest: e.digest, blob });
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

fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Fetches platform objects and checks each against the contract: valid, and with the digest it
/// was asked for. Bad data becomes file errors (`platform:<kind>/<name>`), never files.
pub(super) async fn fetch_objects(
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

pub(super) fn platform_error(def: &Definition, message: String) -> FileError {
    FileError {
        path: format!("platform:{}/{}", def.kind, def.name),
        line: None,
        column: None,
        message: format!("the platform sent an invalid definition: {message}"),
    }
}
