//! `defsync link`: make or move the link between a project and a repository, ref and path.

use super::*;
use crate::report::Status;

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
        match platform.put_sync(&req.project, &state.etag, &body).await {
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
