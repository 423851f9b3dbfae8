//! The platform's side of a run: read consistently, and its objects fetched and checked against
//! the contract before any of them is written anywhere.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};

use crate::api::{Commit, ETag, Object, Project, SyncRecord};
use crate::digest::Digest;
use crate::engine::MAX_ATTEMPTS;
use crate::engine::packed::PackedMap;
use crate::engine::plan::HasDigest;
use crate::engine::request::Request;
use crate::error::Result;
use crate::git::ObjectId;
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
    pub blob: Option<ObjectId>,
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
        let (base, base_etag) = platform.base_map(project).await?;
        if etag != base_etag {
            continue; // the record moved between the two reads
        }
        let mut manifest = BTreeMap::new();
        if let Some(head) = &proj.head {
            let m = platform.manifest_map(project, &head.id).await?;
            if m.commit.id != head.id {
                return Err(PlatformError::Invalid(format!(
                    "asked for the manifest of {} and got the one of {}",
                    head.id, m.commit.id
                ))
                .into());
            }
            if let Some(key) = m.entries.twice {
                return Err(PlatformError::Invalid(format!("the manifest lists {key} twice")).into());
            }
            manifest = m.entries.map;
        }
        let base_digests = base.entries;
        let head = proj.head.clone();
        return Ok(PlatformState { project: proj, etag, base: base_digests, head, manifest });
    }
    Err(PlatformError::Transport(format!(
        "the sync record of project {project:?} kept changing while it was read; try again"
    ))
    .into())
}

/// `GET /sync/base`, read entry by entry into the planner's map: at 100,000 keys a list of
/// entries, then a map, would hold every key twice.
#[derive(Debug, Default, Deserialize)]
pub struct BaseMap {
    #[serde(deserialize_with = "base_entries")]
    pub entries: BTreeMap<Key, BaseValue>,
}

impl BaseMap {
    pub fn from_entries(entries: Vec<crate::api::BaseEntry>) -> Self {
        let mut map = PackedMap::default();
        for e in entries {
            map.insert(
                Key::new(e.kind, e.name),
                BaseValue { digest: e.digest, blob: e.blob.as_deref().and_then(ObjectId::from_hex) },
            );
        }
        BaseMap { entries: map.finish() }
    }
}

/// A manifest, read like [`BaseMap`].
#[derive(Debug, Deserialize)]
pub struct ManifestMap {
    pub commit: Commit,
    #[serde(deserialize_with = "manifest_entries")]
    pub entries: ManifestEntries,
}

/// A manifest's entries by key; `twice` is a key the platform listed twice (an error).
#[derive(Debug, Default)]
pub struct ManifestEntries {
    pub map: BTreeMap<Key, (Digest, u64)>,
    pub twice: Option<Key>,
}

/// [`ManifestEntries`] while they are read.
#[derive(Debug, Default)]
struct ManifestBuild {
    map: PackedMap<Key, (Digest, u64)>,
    twice: Option<Key>,
}

impl ManifestBuild {
    fn add(&mut self, key: Key, digest: Digest, size: u64) {
        if let Err((key, _)) = self.map.insert_new(key, (digest, size)) {
            self.twice.get_or_insert(key);
        }
    }

    fn finish(self) -> ManifestEntries {
        ManifestEntries { map: self.map.finish(), twice: self.twice }
    }
}

impl ManifestMap {
    pub fn from_manifest(m: crate::api::Manifest) -> Self {
        let mut entries = ManifestBuild::default();
        for e in m.entries {
            entries.add(Key::new(e.kind, e.name), e.digest, e.size);
        }
        ManifestMap { commit: m.commit, entries: entries.finish() }
    }
}

/// One entry as sent; names borrow from the body where they have no escapes.
#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    digest: Cow<'a, str>,
    #[serde(borrow, default)]
    blob: Option<Cow<'a, str>>,
    #[serde(default)]
    size: u64,
}

impl RawEntry<'_> {
    fn key_and_digest<E: serde::de::Error>(&self) -> std::result::Result<(Key, Digest), E> {
        let digest = Digest::parse(&self.digest).map_err(E::custom)?;
        Ok((Key::new(self.kind.as_ref(), self.name.as_ref()), digest))
    }
}

/// Reads a JSON array entry by entry, handing each to `add`.
fn each_entry<'de, D, T>(
    d: D,
    add: impl FnMut(&mut T, RawEntry<'_>) -> std::result::Result<(), String>,
) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default,
{
    struct Entries<T, F>(F, std::marker::PhantomData<T>);
    impl<'de, T: Default, F: FnMut(&mut T, RawEntry<'_>) -> std::result::Result<(), String>> Visitor<'de>
        for Entries<T, F>
    {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of entries")
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> std::result::Result<T, A::Error> {
            let mut out = T::default();
            while let Some(e) = seq.next_element::<RawEntry<'de>>()? {
                (self.0)(&mut out, e).map_err(serde::de::Error::custom)?;
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Entries(add, std::marker::PhantomData))
}

fn base_entries<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<BTreeMap<Key, BaseValue>, D::Error> {
    each_entry(d, |map: &mut PackedMap<Key, BaseValue>, e| {
        let (key, digest) = e.key_and_digest::<serde_json::Error>().map_err(|e| e.to_string())?;
        // A blob that is not an object ID proves nothing: it is dropped, and the file parsed.
        let blob = e.blob.as_deref().and_then(ObjectId::from_hex);
        map.insert(key, BaseValue { digest, blob });
        Ok(())
    })
    .map(PackedMap::finish)
}

fn manifest_entries<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<ManifestEntries, D::Error> {
    each_entry(d, |entries: &mut ManifestBuild, e| {
        let (key, digest) = e.key_and_digest::<serde_json::Error>().map_err(|e| e.to_string())?;
        entries.add(key, digest, e.size);
        Ok(())
    })
    .map(ManifestBuild::finish)
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
