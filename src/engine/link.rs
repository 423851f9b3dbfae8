//! `defsync link`: make or move the link between a project and a repository, ref and path.

use crate::engine::MAX_ATTEMPTS;
use crate::engine::request::{Request, link_text};
use crate::engine::state::{PlatformState, read_platform};
use crate::error::{Error, Result};
use crate::platform::{Platform, PlatformError};
use crate::report::{Report, Status};

/// Writes the record with this run's link and an empty base. With an empty base, the next runs
/// copy keys found on one side only and report keys that differ as conflicts: nothing is lost.
pub async fn link(platform: &Platform, req: &Request) -> Result<Report> {
    let mut report = req.new_report("link");
    for _ in 0..MAX_ATTEMPTS {
        let state = read_platform(platform, &req.project).await?;
        report.platform_commit = state.head_ref();
        if let Some(rec) = state.record() {
            tracing::info!(
                "moving the link of project {:?} from {} to {}",
                req.project,
                link_text(&rec.repository, &rec.git_ref, &rec.path, rec.direction),
                req.link_text()
            );
        }
        if req.dry_run {
            report.status = Status::DryRun;
            return Ok(report);
        }
        let mut body = req.put_sync(None, None, Vec::new());
        body.replace_base = true;
        match platform.put_sync(&req.project, &state.etag, body).await {
            Ok(_) => {
                report.status = Status::Changed;
                return Ok(report);
            }
            Err(PlatformError::Api(e)) if e.status == 412 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(PlatformError::Transport("the sync record kept changing while linking; try again".into()).into())
}

/// What a check of the link found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LinkState {
    Linked,
    /// No record yet: the run links with its own settings first.
    Missing,
}

/// Refuses a run whose link differs from the record's. `any_ref` lets status and dry runs plan
/// on another ref, such as a pull request's.
pub(super) fn check_link(req: &Request, state: &PlatformState, any_ref: bool) -> Result<LinkState> {
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
    match platform.put_sync(&req.project, &state.etag, body).await {
        Ok(_) => Ok(()),
        // Another run linked it first; the caller re-reads and checks that link.
        Err(PlatformError::Api(e)) if e.status == 412 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reads the platform and refuses a run whose link differs from the record's. A project with
/// no link yet is planned as linked with an empty base, and linked by [`first_link`] only once
/// the run has shown it can succeed: a mistyped `--path` must not link the project to it.
pub(super) async fn ensure_link(platform: &Platform, req: &Request, any_ref: bool) -> Result<PlatformState> {
    let state = read_platform(platform, &req.project).await?;
    check_link(req, &state, any_ref)?;
    Ok(state)
}

/// Links a project that has no link yet to this run's link, with an empty base; returns the
/// state read after it.
pub(super) async fn first_link(platform: &Platform, req: &Request) -> Result<PlatformState> {
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
pub(super) async fn link_if_new(
    platform: &Platform,
    req: &Request,
    state: &PlatformState,
) -> Result<Option<PlatformState>> {
    if state.record().is_some() {
        return Ok(None);
    }
    first_link(platform, req).await.map(Some)
}
