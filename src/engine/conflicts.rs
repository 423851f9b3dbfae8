//! What a run reports when it changes nothing: conflicting keys, with both versions for people
//! to compare, and invalid files.

use std::collections::HashMap;

use crate::digest::Digest;
use crate::engine::plan::{Action, Item, Plan};
use crate::engine::request::Request;
use crate::engine::tree::{GitFile, Tree};
use crate::error::Result;
use crate::git::Repo;
use crate::model::Definition;
use crate::report::{self, FileError, Report, Resolution};

/// Keys both sides changed: unresolved conflicts and the ones a preference resolved.
pub(super) fn conflict_items(plan: &Plan) -> Vec<&Item> {
    plan.items.iter().filter(|i| i.was_conflict || i.action == Action::Conflict).collect()
}

/// What a run that writes does with a conflicting key, for its report.
pub(super) fn resolution_of(item: &Item) -> Resolution {
    match item.action {
        Action::Conflict => Resolution::None,
        Action::Defer(_) => Resolution::Deferred,
        _ => Resolution::Written,
    }
}

/// Fills the report's conflicts, with both versions as YAML for people to compare.
pub(super) fn report_conflicts(
    report: &mut Report,
    repo: &Repo,
    req: &Request,
    items: &[&Item],
    git: &Tree,
    objects: &HashMap<Digest, Definition>,
    resolution: impl Fn(&Item) -> Resolution,
) -> Result<()> {
    let files: Vec<&GitFile> = items.iter().filter_map(|i| git.files.get(&i.key)).collect();
    let blobs = repo.read_blobs(&files.iter().map(|f| f.oid).collect::<Vec<_>>())?;
    let texts: HashMap<crate::git::ObjectId, String> =
        files.iter().zip(blobs).map(|(f, b)| (f.oid, String::from_utf8_lossy(&b).into_owned())).collect();
    for item in items {
        let file = git.files.get(&item.key);
        report.conflicts.push(report::Conflict {
            kind: item.key.kind.to_string(),
            name: item.key.name.to_string(),
            path: file.map(|f| req.repo_path(&f.path)),
            base: item.base.clone(),
            git: item.git.clone(),
            platform: item.platform.clone(),
            resolution: resolution(item),
            git_yaml: file.and_then(|f| texts.get(&f.oid).cloned()),
            platform_yaml: item.platform.as_ref().and_then(|d| objects.get(d)).map(crate::yaml::render),
        });
    }
    Ok(())
}

/// Reports bad files as the run's outcome: nothing is changed on either side.
pub(super) fn invalid(mut report: Report, errors: Vec<FileError>) -> Report {
    report.errors = errors;
    report.status = report::Status::Invalid;
    report.changes.clear();
    report
}
