//! Moving the base after a run: the keys on which both sides now agree (the rule is
//! [`crate::engine::plan::agreement`]), sent with `If-Match` and re-read when the record moved.

use std::collections::BTreeMap;

use crate::api::{BaseUpdate, Commit};
use crate::digest::Digest;
use crate::engine::MAX_ATTEMPTS;
use crate::engine::link::check_link;
use crate::engine::plan::HasDigest;
use crate::engine::request::Request;
use crate::engine::state::{PlatformState, read_platform};
use crate::error::Result;
use crate::model::Key;
use crate::platform::{Platform, PlatformError};

/// The base updates for a run, from the rule in [`crate::engine::plan::agreement`].
fn agreement<G: HasDigest>(
    git: &BTreeMap<Key, G>,
    state: &PlatformState,
    deferred: &[(Key, Option<Digest>, Option<Digest>)],
) -> Vec<BaseUpdate> {
    crate::engine::plan::agreement(git, &state.base, &state.manifest, deferred)
        .into_iter()
        .map(|(k, d)| BaseUpdate { kind: k.kind, name: k.name, digest: d })
        .collect()
}

/// Sends the base of agreeing keys (and deferred keys) with `If-Match`, re-reading on 412.
///
/// `synced` is the platform commit the branch now matches, recorded unless a newer one is.
pub(super) async fn send_agreement<G: HasDigest>(
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
