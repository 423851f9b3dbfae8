//! Moving the base after a run: the keys on which both sides now agree (the rule is
//! [`crate::engine::plan::agreement`]), sent with `If-Match` and re-read when the record moved.

use std::collections::BTreeMap;

use crate::api::{BaseUpdate, Commit};
use crate::digest::Digest;
use crate::engine::MAX_ATTEMPTS;
use crate::engine::layout::default_path;
use crate::engine::link::check_link;
use crate::engine::request::Request;
use crate::engine::state::{PlatformState, read_platform};
use crate::engine::tree::GitFile;
use crate::error::Result;
use crate::model::Key;
use crate::platform::{Platform, PlatformError};

/// The base updates for a run, from the rule in [`crate::engine::plan::agreement`], each with
/// the blob that proves it when there is one (contract v1.2).
///
/// Blobs the base lacks or has out of date, on keys that already agree, are sent too, but only
/// to a platform that evidently keeps blobs (its base has at least one): a platform that drops
/// them would otherwise be sent every key on every run.
fn agreement(
    git: &BTreeMap<Key, GitFile>,
    state: &PlatformState,
    deferred: &[(Key, Option<Digest>, Option<Digest>)],
) -> Vec<BaseUpdate> {
    let mut updates: Vec<BaseUpdate> = crate::engine::plan::agreement(git, &state.base, &state.manifest, deferred)
        .into_iter()
        .map(|(k, d)| {
            let blob = d.as_ref().and_then(|d| git.get(&k).and_then(|f| proof(&k, f, d)));
            BaseUpdate { kind: k.kind.to_string(), name: k.name.into(), digest: d, blob }
        })
        .collect();
    if state.base.values().any(|v| v.blob.is_some()) {
        let sent: std::collections::HashSet<(&str, &str)> =
            updates.iter().map(|u| (u.kind.as_str(), u.name.as_str())).collect();
        let mut refresh = Vec::new();
        for (key, file) in git {
            let Some(base) = state.base.get(key) else { continue };
            if base.blob == Some(file.oid)
                || base.digest != file.digest
                || state.manifest.get(key).is_none_or(|(d, _)| *d != file.digest)
                || sent.contains(&(key.kind.as_str(), &*key.name))
            {
                continue;
            }
            if let Some(blob) = proof(key, file, &file.digest) {
                refresh.push(BaseUpdate {
                    kind: key.kind.to_string(),
                    name: key.name.to_string(),
                    digest: Some(file.digest.clone()),
                    blob: Some(blob),
                });
            }
        }
        updates.extend(refresh);
    }
    updates
}

/// The blob that proves `digest` for `key`: the file's own, when the file holds exactly that
/// digest and sits at the key's default path. A deferred pull's base (the platform's digest,
/// which the file does not hold) gets none.
pub(super) fn proof(key: &Key, file: &GitFile, digest: &Digest) -> Option<String> {
    (file.digest == *digest && file.path == default_path(key)).then(|| file.oid.to_hex())
}

/// Sends the base of agreeing keys (and deferred keys) with `If-Match`, re-reading on 412.
///
/// `synced` is the platform commit the branch now matches, recorded unless a newer one is.
pub(super) async fn send_agreement(
    platform: &Platform,
    req: &Request,
    git: &BTreeMap<Key, GitFile>,
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
        match platform.put_sync(&req.project, &state.etag, body).await {
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
