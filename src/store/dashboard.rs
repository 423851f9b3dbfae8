//! Read-only views of the store for the web dashboard (`server::dashboard`): the project list,
//! each definition with the commit that last changed it, pages of history with each commit's
//! changes, and the sync state (keys ahead on the platform, keys deferred by a conflict
//! preference). Nothing here writes.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::{R, Store, head, internal, parse_digest, project_row, stored};
use crate::api::{Commit, SyncRecord};
use crate::digest::Digest;
use crate::model::Definition;

/// A project in the dashboard's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectSummary {
    pub id: String,
    pub name: String,
    pub head_seq: u64,
}

/// What a commit did to a key, or what the platform holds that Git does not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeOp {
    Added,
    Modified,
    Deleted,
}

impl ChangeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Added => "added",
            ChangeOp::Modified => "modified",
            ChangeOp::Deleted => "deleted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CommitChange {
    pub kind: String,
    pub name: String,
    pub op: ChangeOp,
}

/// A definition at the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionRow {
    pub kind: String,
    pub name: String,
    pub digest: Digest,
    /// The commit that last changed it (put it as it is now).
    pub changed_by: Option<Commit>,
}

/// Commits newest first, each with its changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub commits: Vec<(Commit, Vec<CommitChange>)>,
    /// `before` of the next (older) page, when there is one.
    pub older: Option<u64>,
}

/// Where the platform stands against the linked branch, as far as the platform can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncView {
    /// The link and where the two sides last met; `None`: never linked.
    pub record: Option<SyncRecord>,
    /// Keys whose platform version differs from their base: changed here since the two sides
    /// last agreed on them, not yet in Git. The next pull carries them over (or reports a
    /// conflict, if Git changed them too).
    pub ahead: Vec<CommitChange>,
    /// Keys whose base is a digest the platform never held. Only a deferred conflict sets such
    /// a base (contract part 4, v1.1): a push with `--on-conflict prefer-platform` records Git's
    /// version as the base, so the next pull writes the platform's version over Git's.
    pub deferred: Vec<CommitChange>,
}

impl Store {
    /// Every project, by ID.
    pub fn project_list(&self) -> R<Vec<ProjectSummary>> {
        let rows = self.read(|tx| tx.projects())?;
        Ok(rows.into_iter().map(|p| ProjectSummary { id: p.id, name: p.name, head_seq: p.head_seq as u64 }).collect())
    }

    /// The head's definitions in manifest order, each with the commit that last changed it.
    pub fn definitions(&self, project: &str) -> R<Vec<DefinitionRow>> {
        self.read(|tx| {
            let p = project_row(tx, project)?;
            let entries = tx.manifest(p.pid, None)?;
            let since: HashMap<(String, String), i64> =
                tx.live_since(p.pid)?.into_iter().map(|(k, n, s)| ((k, n), s)).collect();
            let mut commits: HashMap<i64, Option<Commit>> = HashMap::new();
            let mut rows = Vec::with_capacity(entries.len());
            for e in entries {
                let changed_by = match since.get(&(e.kind.clone(), e.name.clone())) {
                    Some(&seq) => match commits.get(&seq) {
                        Some(c) => c.clone(),
                        None => {
                            let c = tx.commit_by_seq(p.pid, seq)?;
                            commits.insert(seq, c.clone());
                            c
                        }
                    },
                    None => None,
                };
                rows.push(DefinitionRow { kind: e.kind, name: e.name, digest: e.digest, changed_by });
            }
            Ok(rows)
        })
    }

    /// One definition at the head, with the head commit (the parent an edit must name);
    /// `None` in the first place when the head has no such key.
    pub fn definition(&self, project: &str, kind: &str, name: &str) -> R<(Option<Definition>, Option<Commit>)> {
        self.read(|tx| {
            let p = project_row(tx, project)?;
            let head = head(tx, &p)?;
            let Some(digest) = tx.live_digests(p.pid, &[(kind, name)])?.pop().flatten() else {
                return Ok((None, head));
            };
            let (kind, name, spec, _) =
                tx.object(p.pid, &digest)?.ok_or_else(|| internal(format!("the object {digest} is missing")))?;
            let spec: Value = serde_json::from_str(&spec).map_err(|e| stored("spec", e))?;
            Ok((Some(Definition { kind, name, spec }), head))
        })
    }

    /// Up to `limit` commits older than seq `before` (from the head when `None`), newest first,
    /// with their changes.
    pub fn history(&self, project: &str, before: Option<u64>, limit: u32) -> R<HistoryPage> {
        let limit = i64::from(limit.max(1));
        self.read(|tx| {
            let p = project_row(tx, project)?;
            let top = before.map_or(p.head_seq, |b| (b as i64 - 1).min(p.head_seq));
            if top < 1 {
                return Ok(HistoryPage { commits: Vec::new(), older: None });
            }
            let lo = (top - limit + 1).max(1);
            let commits = tx.commits_after(p.pid, lo - 1, (top - lo + 1) as u32)?;
            let mut changes: BTreeMap<i64, BTreeMap<(String, String), ChangeOp>> = BTreeMap::new();
            for (kind, name, from, to) in tx.entries_touched(p.pid, lo, top)? {
                if (lo..=top).contains(&from) {
                    let op =
                        changes.entry(from).or_default().entry((kind.clone(), name.clone())).or_insert(ChangeOp::Added);
                    if *op == ChangeOp::Deleted {
                        *op = ChangeOp::Modified;
                    }
                }
                if let Some(to) = to.filter(|t| (lo..=top).contains(t)) {
                    // Closed and opened by one commit: the key changed; closed only: deleted.
                    let op = changes.entry(to).or_default().entry((kind, name)).or_insert(ChangeOp::Deleted);
                    if *op == ChangeOp::Added {
                        *op = ChangeOp::Modified;
                    }
                }
            }
            let mut page: Vec<(Commit, Vec<CommitChange>)> = commits
                .into_iter()
                .map(|c| {
                    let list = changes
                        .remove(&(c.seq as i64))
                        .unwrap_or_default()
                        .into_iter()
                        .map(|((kind, name), op)| CommitChange { kind, name, op })
                        .collect();
                    (c, list)
                })
                .collect();
            page.reverse();
            Ok(HistoryPage { commits: page, older: (lo > 1).then_some(lo as u64) })
        })
    }

    /// The link, the keys ahead on the platform and the keys deferred by a conflict preference.
    pub fn sync_view(&self, project: &str) -> R<SyncView> {
        self.read(|tx| {
            let p = project_row(tx, project)?;
            let record = tx.record(p.pid)?.map(|r| r.record);
            if record.is_none() {
                return Ok(SyncView { record, ahead: Vec::new(), deferred: Vec::new() });
            }
            let mut base: BTreeMap<(String, String), String> =
                tx.base(p.pid)?.into_iter().map(|b| ((b.kind, b.name), b.digest.to_string())).collect();
            let (mut ahead, mut deferred) = (Vec::new(), Vec::new());
            for e in tx.manifest(p.pid, None)? {
                let key = (e.kind, e.name);
                let digest = e.digest.to_string();
                let op = match base.remove(&key) {
                    None => ChangeOp::Added,
                    Some(b) if b == digest => continue,
                    Some(b) if tx.object(p.pid, &b)?.is_none() => {
                        deferred.push(CommitChange { kind: key.0, name: key.1, op: ChangeOp::Modified });
                        continue;
                    }
                    Some(_) => ChangeOp::Modified,
                };
                ahead.push(CommitChange { kind: key.0, name: key.1, op });
            }
            for ((kind, name), b) in base {
                parse_digest(&b)?;
                if tx.object(p.pid, &b)?.is_none() {
                    deferred.push(CommitChange { kind, name, op: ChangeOp::Deleted });
                } else {
                    ahead.push(CommitChange { kind, name, op: ChangeOp::Deleted });
                }
            }
            ahead.sort();
            deferred.sort();
            Ok(SyncView { record, ahead, deferred })
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::api::ETag;

    const P: &str = "p1";

    fn commit(s: &Store, origin: &str, changes: Value) -> Commit {
        let parent = s.project(P).unwrap().0.head.map(|h| h.id);
        let origin = match origin {
            "git" => json!({"type": "git", "repository": "acme/defs", "ref": "refs/heads/main", "path": "defs"}),
            other => json!({"type": other}),
        };
        let body = json!({"parent": parent, "message": "m", "origin": origin, "changes": changes});
        s.create_commit(P, &serde_json::to_vec(&body).unwrap(), None).unwrap()
    }

    fn put(kind: &str, name: &str, v: i64) -> Value {
        json!({"op": "put", "kind": kind, "name": name, "spec": {"v": v}})
    }

    fn ops(changes: &[CommitChange]) -> Vec<String> {
        changes.iter().map(|c| format!("{} {}/{}", c.op.as_str(), c.kind, c.name)).collect()
    }

    #[test]
    fn history_pages_list_each_commits_changes_newest_first() {
        super::super::tests::on_both(|s| {
            s.put_project(P, "One").unwrap();
            commit(&s, "dashboard", json!([put("w", "a", 1), put("w", "b", 1)]));
            commit(&s, "api", json!([put("w", "a", 2), {"op": "delete", "kind": "w", "name": "b"}]));
            let c3 = commit(&s, "dashboard", json!([put("w", "b", 3)]));

            let page = s.history(P, None, 2).unwrap();
            let seqs: Vec<u64> = page.commits.iter().map(|(c, _)| c.seq).collect();
            assert_eq!(seqs, [3, 2]);
            assert_eq!(ops(&page.commits[0].1), ["added w/b"]);
            assert_eq!(ops(&page.commits[1].1), ["modified w/a", "deleted w/b"]);
            assert_eq!(page.older, Some(2));
            let older = s.history(P, page.older, 2).unwrap();
            assert_eq!(older.commits.len(), 1);
            assert_eq!(ops(&older.commits[0].1), ["added w/a", "added w/b"]);
            assert_eq!(older.older, None);

            let defs = s.definitions(P).unwrap();
            let last: Vec<(String, u64)> =
                defs.iter().map(|d| (d.name.clone(), d.changed_by.as_ref().unwrap().seq)).collect();
            assert_eq!(last, [("a".to_owned(), 2), ("b".to_owned(), 3)]);
            assert_eq!(defs[1].changed_by.as_ref().unwrap().id, c3.id);
            assert_eq!(s.project_list().unwrap()[0], ProjectSummary { id: P.into(), name: "One".into(), head_seq: 3 });
        });
    }

    #[test]
    fn keys_ahead_and_keys_deferred_by_a_push_are_told_apart() {
        super::super::tests::on_both(|s| {
            s.put_project(P, "One").unwrap();
            assert!(s.sync_view(P).unwrap().record.is_none());
            let c = commit(
                &s,
                "dashboard",
                json!([put("w", "same", 1), put("w", "edited", 1), put("w", "gone", 1), put("w", "deferred", 1)]),
            );
            let digest = |name: &str, v: i64| {
                Definition { kind: "w".into(), name: name.into(), spec: json!({"v": v}) }.digest().to_string()
            };
            let base: Vec<Value> = ["same", "edited", "gone", "deferred"]
                .iter()
                .map(|n| json!({"kind": "w", "name": n, "digest": digest(n, 1)}))
                .collect();
            let link = json!({"repository": "acme/defs", "ref": "refs/heads/main", "path": "defs",
                "direction": "bidirectional", "commit": c.id, "replace_base": true, "base": base});
            let (_, etag) = s.put_sync(P, Some(&ETag::none().0), &serde_json::to_vec(&link).unwrap()).unwrap();
            commit(
                &s,
                "dashboard",
                json!([put("w", "edited", 2), put("w", "new", 1), {"op": "delete", "kind": "w", "name": "gone"}]),
            );
            // A push that preferred the platform recorded Git's version, which the platform never held.
            let deferral = json!({"repository": "acme/defs", "ref": "refs/heads/main", "path": "defs",
                "direction": "bidirectional", "base": [{"kind": "w", "name": "deferred", "digest": digest("deferred", 99)}]});
            s.put_sync(P, Some(&etag.0), &serde_json::to_vec(&deferral).unwrap()).unwrap();

            let view = s.sync_view(P).unwrap();
            assert_eq!(view.record.unwrap().repository, "acme/defs");
            assert_eq!(ops(&view.ahead), ["modified w/edited", "deleted w/gone", "added w/new"]);
            assert_eq!(ops(&view.deferred), ["modified w/deferred"]);
        });
    }
}
