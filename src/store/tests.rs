//! Unit tests of the store's transactional rules: every answer of contract part 3, and that a
//! refused request writes nothing. Each runs on both backends: SQLite, then PostgreSQL in a
//! scratch schema of its own (see [`Scratch`]), so the rules are proven on each.

use std::io::Write as _;
use std::sync::Once;

use serde_json::{Value, json};

use super::*;

const P: &str = "p1";

/// Where the PostgreSQL tests run when `DEFSYNC_TEST_POSTGRES` is unset (`.ci/postgres.sh`
/// creates it).
pub(super) const DEFAULT_TEST_POSTGRES: &str = "postgres://defsync:defsync@127.0.0.1:5432/defsync";

/// The database for the PostgreSQL tests: `DEFSYNC_TEST_POSTGRES`, which must answer, or else
/// the default URL if something answers there. `None`: skip them (said once).
fn test_postgres() -> Option<String> {
    static SKIPPED: Once = Once::new();
    let (url, required) = match std::env::var("DEFSYNC_TEST_POSTGRES") {
        Ok(url) if !url.trim().is_empty() => (url, true),
        _ => (DEFAULT_TEST_POSTGRES.to_owned(), false),
    };
    match ::postgres::Client::connect(&url, ::postgres::NoTls) {
        Ok(_) => Some(url),
        Err(e) if required => panic!("DEFSYNC_TEST_POSTGRES is set but PostgreSQL does not answer there: {e}"),
        Err(_) => {
            SKIPPED.call_once(|| {
                // Straight to stderr: the harness would hide a captured line of a passing test.
                let _ = writeln!(
                    std::io::stderr(),
                    "PostgreSQL tests skipped: set DEFSYNC_TEST_POSTGRES={DEFAULT_TEST_POSTGRES} (or another \
                     database; `.ci/postgres.sh` starts one) to run them"
                );
            });
            None
        }
    }
}

/// A place for one test's store, removed afterwards: a temporary folder, or a PostgreSQL schema
/// of its own (so tests run in parallel on one database).
pub(super) enum Scratch {
    Sqlite(tempfile::TempDir),
    Postgres { base: String, schema: String },
}

impl Scratch {
    fn postgres() -> Option<Scratch> {
        let base = test_postgres()?;
        let schema = format!("defsync_test_{}", clock::new_salt());
        let mut client = ::postgres::Client::connect(&base, ::postgres::NoTls).unwrap();
        client.batch_execute(&format!("CREATE SCHEMA {schema}")).unwrap();
        Some(Scratch::Postgres { base, schema })
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            Scratch::Sqlite(_) => "SQLite",
            Scratch::Postgres { .. } => "PostgreSQL",
        }
    }

    pub(super) fn location(&self) -> StoreLocation {
        match self {
            Scratch::Sqlite(dir) => StoreLocation::Sqlite(dir.path().join("nested/store.db")),
            Scratch::Postgres { base, schema } => {
                let sep = if base.contains('?') { '&' } else { '?' };
                StoreLocation::parse(&format!("{base}{sep}options=-c%20search_path%3D{schema}")).unwrap()
            }
        }
    }

    /// Opens (again) the store of this scratch place.
    pub(super) fn open(&self) -> Store {
        Store::open_location(&self.location()).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Scratch::Postgres { base, schema } = self
            && let Ok(mut client) = ::postgres::Client::connect(base, ::postgres::NoTls)
        {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
}

/// Runs `test` in a fresh scratch place of each backend: SQLite, then PostgreSQL when one is
/// reachable.
pub(super) fn on_both_scratch(test: impl Fn(&Scratch)) {
    let sqlite = Scratch::Sqlite(tempfile::tempdir().unwrap());
    for scratch in std::iter::once(sqlite).chain(Scratch::postgres()) {
        // Shown with a failure: which backend broke the rule.
        eprintln!("-- on {}", scratch.name());
        test(&scratch);
    }
}

/// Runs `test` on a fresh store of each backend, with project `p1`.
pub(super) fn on_both(test: impl Fn(Store)) {
    on_both_scratch(|scratch| {
        let s = scratch.open();
        s.put_project(P, "Project one").unwrap();
        test(s)
    })
}

#[test]
fn a_store_answers_a_ping() {
    on_both(|s| {
        s.ping().unwrap();
    });
}

fn put(kind: &str, name: &str, spec: Value) -> Value {
    json!({"op": "put", "kind": kind, "name": name, "spec": spec})
}

fn delete(kind: &str, name: &str) -> Value {
    json!({"op": "delete", "kind": kind, "name": name})
}

fn dashboard() -> Value {
    json!({"type": "dashboard"})
}

fn git_origin() -> Value {
    json!({"type": "git", "repository": "acme/defs", "ref": "refs/heads/main", "path": "platform", "git_commit": "abc"})
}

fn body(parent: Option<&str>, origin: Value, changes: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"parent": parent, "message": "m", "origin": origin, "changes": changes})).unwrap()
}

fn head_id(s: &Store) -> Option<String> {
    s.project(P).unwrap().0.head.map(|c| c.id)
}

/// Commits on the current head.
fn commit(s: &Store, origin: Value, changes: Vec<Value>) -> R<Commit> {
    s.create_commit(P, &body(head_id(s).as_deref(), origin, changes), None)
}

fn link(s: &Store) -> ETag {
    let (_, etag) = s.project(P).unwrap();
    let req = json!({"repository": "acme/defs", "ref": "refs/heads/main", "path": "platform",
                     "direction": "bidirectional", "replace_base": true, "base": []});
    s.put_sync(P, Some(&etag.0), &serde_json::to_vec(&req).unwrap()).unwrap().1
}

fn manifest_keys(s: &Store, commit: &str) -> Vec<(String, String, u64)> {
    s.manifest(P, commit).unwrap().entries.into_iter().map(|e| (e.kind, e.name, e.size)).collect()
}

fn digest_of(kind: &str, name: &str, spec: Value) -> Digest {
    Definition { kind: kind.into(), name: name.into(), spec }.digest()
}

#[test]
fn projects_are_created_renamed_and_checked() {
    on_both(|s| {
        let (p, created) = s.put_project(P, "Renamed").unwrap();
        assert!(!created);
        assert_eq!((p.id.as_str(), p.name.as_str(), p.head, p.sync), ("p1", "Renamed", None, None));
        assert!(s.put_project("p2", "Two").unwrap().1);
        for bad in ["", "a/b", "..", "with space", &"x".repeat(101)] {
            assert_eq!(s.put_project(bad, "x").unwrap_err().code, "invalid", "{bad:?}");
        }
        let e = s.project("nope").unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (404, "not_found"));
        assert_eq!(s.project(P).unwrap().1, ETag::none());
        let (base, etag) = s.base(P).unwrap();
        assert!(base.entries.is_empty());
        assert_eq!(etag, ETag::none());
        assert_eq!(s.commit(P, "c_x").unwrap_err().status, 404);
        assert_eq!(s.manifest(P, "c_x").unwrap_err().status, 404);
        assert_eq!(s.commits("nope", 0, 10).unwrap_err().status, 404);
        assert_eq!(s.batch_get("nope", br#"{"digests": []}"#).unwrap_err().status, 404);
        assert_eq!(s.create_commit("nope", b"{}", None).unwrap_err().status, 404);
        assert_eq!(s.put_sync("nope", Some("\"none\""), b"{}").unwrap_err().status, 404);
    });
}

#[test]
fn commits_chain_and_manifests_are_versioned() {
    on_both(|s| {
        let c1 = commit(
            &s,
            dashboard(),
            vec![put("workflow", "b", json!(1)), put("workflow", "a", json!({"z": 1, "a": 2}))],
        )
        .unwrap();
        assert_eq!((c1.seq, c1.parent.as_deref()), (1, None));
        assert!(c1.id.starts_with("c_") && c1.id.len() == 28);
        let c2 = commit(&s, dashboard(), vec![delete("workflow", "b"), put("connection", "crm", json!(null))]).unwrap();
        assert_eq!((c2.seq, c2.parent.as_deref()), (2, Some(c1.id.as_str())));
        let c3 = commit(&s, dashboard(), vec![put("workflow", "a", json!({"z": 2}))]).unwrap();

        let size = |k: &str, n: &str, spec: Value| {
            Definition { kind: k.into(), name: n.into(), spec }.canonical().len() as u64
        };
        assert_eq!(
            manifest_keys(&s, &c1.id),
            [
                ("workflow".into(), "a".into(), size("workflow", "a", json!({"z": 1, "a": 2}))),
                ("workflow".into(), "b".into(), size("workflow", "b", json!(1)))
            ]
        );
        let m2: Vec<_> = manifest_keys(&s, &c2.id).into_iter().map(|(k, n, _)| format!("{k}/{n}")).collect();
        assert_eq!(m2, ["connection/crm", "workflow/a"]);
        let m3 = s.manifest(P, &c3.id).unwrap();
        assert_eq!(m3.commit, c3);
        assert_eq!(m3.entries[1].digest, digest_of("workflow", "a", json!({"z": 2})));

        // Every version stays fetchable, exactly as sent (key order kept), and unknown ones are missing.
        let old = digest_of("workflow", "a", json!({"z": 1, "a": 2}));
        let unknown = digest_of("workflow", "never", json!(0));
        let req = json!({"digests": [old, unknown, old]});
        let got = s.batch_get(P, &serde_json::to_vec(&req).unwrap()).unwrap();
        assert_eq!(got.missing, [unknown]);
        assert_eq!(got.objects.len(), 1);
        assert_eq!(serde_json::to_string(&got.objects[0].spec).unwrap(), r#"{"z":1,"a":2}"#);

        let list = s.commits(P, 0, 0).unwrap().commits;
        assert_eq!(list.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(s.commits(P, 1, 1).unwrap().commits, std::slice::from_ref(&c2));
        assert_eq!(s.commits(P, 3, 5000).unwrap().commits, []);
        assert_eq!(s.commit(P, &c2.id).unwrap(), c2);
        assert_eq!(s.project(P).unwrap().0.head, Some(c3));
    });
}

#[test]
fn manifests_sort_by_utf8_bytes() {
    on_both(|s| {
        let names = ["b", "B", "é", "a/b", "a b", "Z", "ä"];
        let c = commit(&s, dashboard(), names.iter().map(|n| put("workflow", n, json!(1))).collect()).unwrap();
        let got: Vec<String> = manifest_keys(&s, &c.id).into_iter().map(|(_, n, _)| n).collect();
        let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        want.sort(); // Rust's str order is by UTF-8 bytes.
        assert_eq!(got, want);
    });
}

#[test]
fn a_stale_parent_is_head_moved_with_the_head_and_writes_nothing() {
    on_both(|s| {
        let c1 = commit(&s, dashboard(), vec![put("workflow", "a", json!(1))]).unwrap();
        let e =
            s.create_commit(P, &body(None, dashboard(), vec![put("workflow", "b", json!(1))]), Some("k1")).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (409, "head_moved"));
        assert_eq!(e.extra["head"], serde_json::to_value(&c1).unwrap());
        let e = s
            .create_commit(P, &body(Some("c_other"), dashboard(), vec![put("workflow", "b", json!(1))]), None)
            .unwrap_err();
        assert_eq!(e.code, "head_moved");
        assert_eq!(s.project(P).unwrap().0.head.unwrap(), c1);
        // A non-201 answer is not stored: the same key works once the parent is right.
        let c2 = s
            .create_commit(P, &body(Some(&c1.id), dashboard(), vec![put("workflow", "b", json!(1))]), Some("k1"))
            .unwrap();
        assert_eq!(c2.seq, 2);
    });
}

#[test]
fn invalid_changes_are_all_listed_and_nothing_is_written() {
    on_both(|s| {
        commit(&s, dashboard(), vec![put("workflow", "a", json!(1))]).unwrap();
        let e = commit(
            &s,
            dashboard(),
            vec![
                put("Bad Kind", "x", json!(1)),
                put("workflow", " padded", json!(1)),
                put("workflow", "big", json!(9007199254740992_u64)),
                delete("workflow", "never-existed"),
                put("workflow", "twice", json!(1)),
                delete("workflow", "twice"),
                put("workflow", "fine", json!(1)),
            ],
        )
        .unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (422, "invalid"));
        let details = e.extra["details"].as_array().unwrap();
        let names: Vec<&str> = details.iter().map(|d| d["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["x", " padded", "big", "twice", "never-existed"], "{details:#?}");
        assert!(details.iter().all(|d| d["kind"].is_string() && d["message"].is_string()));
        assert_eq!(s.project(P).unwrap().0.head.unwrap().seq, 1);
        assert_eq!(s.commits(P, 0, 100).unwrap().commits.len(), 1);
    });
}

#[test]
fn malformed_bodies_are_invalid() {
    on_both(|s| {
        for b in
            [&b"not json"[..], b"{}", br#"{"parent": null, "message": "m", "origin": {"type": "x"}, "changes": []}"#]
        {
            let e = s.create_commit(P, b, None).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (422, "invalid"));
        }
        // A duplicate key in a spec would otherwise be stored as something the sender did not mean.
        let dup = br#"{"parent": null, "message": "m", "origin": {"type": "api"},
                   "changes": [{"op": "put", "kind": "w", "name": "a", "spec": {"x": 1, "x": 2}}]}"#;
        assert!(s.create_commit(P, dup, None).unwrap_err().message.contains("duplicate key"));
        let e = s.create_commit(P, &body(None, json!({"type": "git", "repository": "r"}), vec![]), None).unwrap_err();
        assert_eq!(e.code, "invalid");
        assert!(e.message.contains("origin.ref"), "{e}");
    });
}

#[test]
fn a_commit_that_changes_nothing_is_empty_commit() {
    on_both(|s| {
        let e = commit(&s, dashboard(), vec![]).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (422, "empty_commit"));
        commit(&s, dashboard(), vec![put("workflow", "a", json!({"x": 1}))]).unwrap();
        let e = commit(&s, dashboard(), vec![put("workflow", "a", json!({"x": 1.0}))]).unwrap_err();
        assert_eq!(e.code, "empty_commit");
        // Unchanged puts next to a real change contribute nothing, and are allowed.
        let c = commit(&s, dashboard(), vec![put("workflow", "a", json!({"x": 1})), put("workflow", "b", json!(2))])
            .unwrap();
        assert_eq!(c.seq, 2);
    });
}

#[test]
fn idempotent_retries_get_the_first_answer_and_write_nothing() {
    on_both(|s| {
        let b = body(None, dashboard(), vec![put("workflow", "a", json!(1))]);
        let first = s.create_commit(P, &b, Some("key-1")).unwrap();
        let again = s.create_commit(P, &b, Some("key-1")).unwrap();
        assert_eq!(first, again);
        assert_eq!(s.commits(P, 0, 100).unwrap().commits.len(), 1);
        let other = body(None, dashboard(), vec![put("workflow", "a", json!(2))]);
        let e = s.create_commit(P, &other, Some("key-1")).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (422, "idempotency_key_reused"));
        // Keys are per project.
        s.put_project("p2", "Two").unwrap();
        assert_eq!(s.create_commit("p2", &b, Some("key-1")).unwrap().seq, 1);
        // An expired key is forgotten: the retry is then judged like any request (here: head moved).
        s.execute_for_test("UPDATE idempotency SET created_unix = created_unix - 90000");
        assert_eq!(s.create_commit(P, &b, Some("key-1")).unwrap_err().code, "head_moved");
        assert_eq!(s.create_commit(P, &b, Some("")).unwrap_err().code, "invalid");
    });
}

#[test]
fn git_commits_need_the_link() {
    on_both(|s| {
        let e = commit(&s, git_origin(), vec![put("workflow", "a", json!(1))]).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (422, "link_mismatch"));
        assert!(e.message.contains("not linked") && e.message.contains("defsync link"), "{e}");
        link(&s);
        let mut other = git_origin();
        other["path"] = json!("elsewhere");
        let e = commit(&s, other, vec![put("workflow", "a", json!(1))]).unwrap_err();
        assert_eq!(e.code, "link_mismatch");
        assert!(e.message.contains("elsewhere") && e.message.contains("platform"), "{e}");
        assert!(s.project(P).unwrap().0.head.is_none());
    });
}

#[test]
fn git_commits_move_the_record_and_the_base_of_their_keys_only() {
    on_both(|s| {
        let tag0 = link(&s);
        commit(&s, dashboard(), vec![put("workflow", "dash", json!(1)), put("workflow", "gone", json!(1))]).unwrap();
        // A dashboard commit leaves the record and base alone.
        assert_eq!(s.project(P).unwrap().1, tag0);
        let c = commit(&s, git_origin(), vec![put("workflow", "a", json!(1)), delete("workflow", "gone")]).unwrap();
        let (p, tag1) = s.project(P).unwrap();
        assert_ne!(tag1, tag0);
        let rec = p.sync.unwrap();
        assert_eq!((rec.commit.as_deref(), rec.seq, rec.git_commit.as_deref()), (Some(c.id.as_str()), 2, Some("abc")));
        let (base, tag) = s.base(P).unwrap();
        assert_eq!(tag, tag1);
        assert_eq!(
            base.entries,
            [BaseEntry {
                kind: "workflow".into(),
                name: "a".into(),
                digest: digest_of("workflow", "a", json!(1)),
                blob: None
            }]
        );
    });
}

#[test]
fn put_sync_follows_the_contract() {
    on_both(|s| {
        let c1 = commit(&s, dashboard(), vec![put("workflow", "a", json!(1))]).unwrap();
        let c2 = commit(&s, dashboard(), vec![put("workflow", "b", json!(1))]).unwrap();
        let da = digest_of("workflow", "a", json!(1));
        let db = digest_of("workflow", "b", json!(1));
        let req = |commit: Option<&str>, replace: bool, base: Value| {
            serde_json::to_vec(&json!({"repository": "acme/defs", "ref": "refs/heads/main", "path": ".",
            "direction": "bidirectional", "commit": commit, "git_commit": "g1", "replace_base": replace, "base": base}))
            .unwrap()
        };
        // If-Match is required, and "none" matches only while there is no record.
        let e = s.put_sync(P, None, &req(None, false, json!([]))).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (412, "precondition_failed"));
        assert_eq!(s.put_sync(P, Some("\"other\""), &req(None, false, json!([]))).unwrap_err().status, 412);
        let (rec, t1) = s
            .put_sync(
                P,
                Some("\"none\""),
                &req(Some(&c2.id), false, json!([{"kind": "workflow", "name": "a", "digest": da}])),
            )
            .unwrap();
        assert_eq!((rec.seq, rec.commit.as_deref(), rec.git_commit.as_deref()), (2, Some(c2.id.as_str()), Some("g1")));
        assert_eq!(s.project(P).unwrap().1, t1);
        assert_eq!(s.put_sync(P, Some("\"none\""), &req(None, false, json!([]))).unwrap_err().status, 412);

        // The record never goes back.
        let e = s.put_sync(P, Some(&t1.0), &req(Some(&c1.id), false, json!([]))).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (409, "sync_regression"));
        let e = s.put_sync(P, Some(&t1.0), &req(Some("c_nope"), false, json!([]))).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (404, "not_found"));
        // Contract v1.1: 422 `invalid` is only for a malformed digest or key.
        for bad in [json!("sha256:ABC"), json!(format!("sha1:{}", "0".repeat(64))), json!(7)] {
            let e = s
                .put_sync(P, Some(&t1.0), &req(None, false, json!([{"kind": "workflow", "name": "x", "digest": bad}])))
                .unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (422, "invalid"), "{bad}");
        }
        let e = s
            .put_sync(P, Some(&t1.0), &req(None, false, json!([{"kind": "Bad Kind", "name": "x", "digest": null}])))
            .unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (422, "invalid"));
        assert_eq!(e.extra["details"][0]["kind"], "Bad Kind");
        assert_eq!(s.project(P).unwrap().1, t1, "refused requests change nothing");

        // Absent commit keeps the record's; null removes a key; entries are applied per key.
        let (rec, t2) = s
            .put_sync(
                P,
                Some(&t1.0),
                &req(
                    None,
                    false,
                    json!([{"kind": "workflow", "name": "b", "digest": db},
                                                            {"kind": "workflow", "name": "a", "digest": null}]),
                ),
            )
            .unwrap();
        assert_ne!(t2, t1);
        assert_eq!((rec.seq, rec.commit.as_deref()), (2, Some(c2.id.as_str())));
        let names: Vec<String> = s.base(P).unwrap().0.entries.into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["b"]);
        // replace_base empties the base first.
        let (_, t3) = s
            .put_sync(P, Some(&t2.0), &req(None, true, json!([{"kind": "workflow", "name": "a", "digest": da}])))
            .unwrap();
        let (base, tag) = s.base(P).unwrap();
        assert_eq!(tag, t3);
        assert_eq!(base.entries.len(), 1);
        assert_eq!(base.entries[0].name, "a");

        let bad = br#"{"repository": "", "ref": "r", "path": ".", "direction": "bidirectional"}"#;
        assert_eq!(s.put_sync(P, Some(&t3.0), bad).unwrap_err().code, "invalid");
        let bad = br#"{"repository": "a", "ref": "r", "path": ".", "direction": "sideways"}"#;
        assert_eq!(s.put_sync(P, Some(&t3.0), bad).unwrap_err().code, "invalid");
    });
}

#[test]
fn batch_get_limits() {
    on_both(|s| {
        let digests: Vec<Digest> = (0..1001).map(|i| digest_of("w", &i.to_string(), json!(i))).collect();
        let e = s.batch_get(P, &serde_json::to_vec(&json!({"digests": digests})).unwrap()).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (422, "invalid"));
        let ok = s.batch_get(P, &serde_json::to_vec(&json!({"digests": &digests[..1000]})).unwrap()).unwrap();
        assert_eq!(ok.missing.len(), 1000);
        assert_eq!(s.batch_get(P, br#"{"digests": ["sha256:zz"]}"#).unwrap_err().code, "invalid");
    });
}

#[test]
fn stores_survive_reopening() {
    on_both_scratch(|scratch| {
        let c = {
            let s = scratch.open();
            s.put_project(P, "x").unwrap();
            commit(&s, dashboard(), vec![put("workflow", "a", json!(1))]).unwrap()
        };
        let s = scratch.open();
        assert_eq!(s.project(P).unwrap().0.head, Some(c));
    });
}

/// Large projects: a first commit of 10,000 puts, then a 1000-change commit on top, and the
/// 10,000-entry manifests of both. How fast is the benchmark's business (`cargo bench`), not a
/// test's: a timed test fails on a busy machine and proves nothing on an idle one.
#[test]
fn large_commits_and_manifests_are_whole() {
    on_both(|s| {
        let spec = |i: usize| json!({"steps": [{"id": i, "run": "notify", "with": {"channel": "#deals", "n": i}}]});
        commit(&s, dashboard(), (0..10_000).map(|i| put("workflow", &format!("w-{i:05}"), spec(i))).collect()).unwrap();
        let c = commit(
            &s,
            dashboard(),
            (0..1000).map(|i| put("workflow", &format!("w-{:05}", i * 7), spec(i + 1))).collect(),
        )
        .unwrap();
        let head = s.manifest(P, &c.id).unwrap().entries;
        assert_eq!(head.len(), 10_000);
        for e in &head {
            let n: usize = e.name[2..].parse().unwrap();
            let want = if n.is_multiple_of(7) && n < 7000 { spec(n / 7 + 1) } else { spec(n) };
            assert_eq!(e.digest, digest_of("workflow", &e.name, want), "{}", e.name);
        }
        let first_id = s.commits(P, 0, 1).unwrap().commits[0].id.clone();
        assert_eq!(s.manifest(P, &first_id).unwrap().entries.len(), 10_000);
    });
}

/// The scale the schema is designed for: 100,000 definitions. Ignored by default (it takes a
/// while in debug builds); run with `cargo test --release --lib store -- --ignored`.
#[test]
#[ignore]
fn a_hundred_thousand_definitions() {
    on_both_scratch(|scratch| {
        let s = scratch.open();
        s.put_project(P, "Project one").unwrap();
        let spec = |i: usize| json!({"steps": [{"id": i, "run": "notify", "with": {"channel": "#deals", "n": i}}]});
        let t = std::time::Instant::now();
        for chunk in 0..10 {
            let changes =
                (0..10_000).map(|i| put("workflow", &format!("w-{:06}", chunk * 10_000 + i), spec(i))).collect();
            commit(&s, dashboard(), changes).unwrap();
        }
        let setup = t.elapsed();
        let t = std::time::Instant::now();
        let c = commit(
            &s,
            dashboard(),
            (0..1000).map(|i| put("workflow", &format!("w-{:06}", i * 97), spec(i + 1))).collect(),
        )
        .unwrap();
        let change = t.elapsed();
        let t = std::time::Instant::now();
        assert_eq!(s.manifest(P, &c.id).unwrap().entries.len(), 100_000);
        let head_manifest = t.elapsed();
        let t = std::time::Instant::now();
        let tenth = s.commits(P, 9, 1).unwrap().commits[0].id.clone();
        assert_eq!(s.manifest(P, &tenth).unwrap().entries.len(), 100_000);
        let old_manifest = t.elapsed();
        eprintln!(
            "setup {setup:?}, 1000-change commit {change:?}, head manifest {head_manifest:?}, old manifest {old_manifest:?}"
        );
        // The bound is SQLite's; PostgreSQL's figures depend on the network too.
        if !cfg!(debug_assertions) && matches!(scratch, Scratch::Sqlite(_)) {
            assert!(
                change.as_secs_f64() < 1.0 && head_manifest.as_secs_f64() < 1.0 && old_manifest.as_secs_f64() < 1.0
            );
        }
    });
}

// The dispatch outbox.

/// Runs `test` on a fresh store of each backend, with project `p1` and the outbox on.
fn on_both_outbox(test: impl Fn(Store)) {
    on_both(|s| {
        s.set_dispatch_outbox(true);
        test(s)
    })
}

fn policy() -> RetryPolicy {
    RetryPolicy { backoff_base: Duration::from_secs(5), backoff_cap: Duration::from_secs(600), max_attempts: 3 }
}

fn states(s: &Store) -> Vec<(String, DispatchState)> {
    s.dispatch_outbox(Some(P)).unwrap().into_iter().map(|e| (e.commit_id, e.state)).collect()
}

const FAR: i64 = i64::MAX / 2;

#[test]
fn backoff_doubles_up_to_the_cap() {
    let p = RetryPolicy::default();
    let secs: Vec<u64> = (1..=10).map(|n| p.backoff(n).as_secs()).collect();
    assert_eq!(secs, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
    assert_eq!(p.backoff(u32::MAX), Duration::from_secs(600));
}

#[test]
fn only_commits_not_from_git_queue_a_dispatch_and_only_when_enabled() {
    on_both(|s| {
        commit(&s, dashboard(), vec![put("workflow", "off", json!(1))]).unwrap();
        assert!(s.dispatch_outbox(None).unwrap().is_empty(), "the outbox is off by default");

        s.set_dispatch_outbox(true);
        let c = commit(&s, dashboard(), vec![put("workflow", "a", json!(1))]).unwrap();
        link(&s);
        commit(&s, git_origin(), vec![put("workflow", "b", json!(1))]).unwrap();
        let api = commit(&s, json!({"type": "api"}), vec![put("workflow", "c", json!(1))]).unwrap();
        let rows = s.dispatch_outbox(Some(P)).unwrap();
        assert_eq!(rows.iter().map(|r| r.commit_id.as_str()).collect::<Vec<_>>(), [c.id.as_str(), api.id.as_str()]);
        let first = &rows[0];
        assert_eq!(
            (first.project.as_str(), first.seq, first.state, first.attempts),
            (P, c.seq, DispatchState::Pending, 0)
        );
        assert_eq!(first.created_at, c.created_at);
        assert!(s.dispatch_outbox(Some("other")).unwrap().is_empty());
    });
}

#[test]
fn an_idempotent_replay_queues_no_second_dispatch() {
    on_both_outbox(|s| {
        let b = body(None, dashboard(), vec![put("workflow", "a", json!(1))]);
        let first = s.create_commit(P, &b, Some("k1")).unwrap();
        let again = s.create_commit(P, &b, Some("k1")).unwrap();
        assert_eq!(first, again);
        assert_eq!(s.dispatch_outbox(None).unwrap().len(), 1);
    });
}

#[test]
fn a_refused_commit_queues_nothing() {
    on_both_outbox(|s| {
        commit(&s, dashboard(), vec![put("workflow", "a", json!(1))]).unwrap();
        // Stale parent: 409, and no row.
        let stale = body(None, dashboard(), vec![put("workflow", "b", json!(1))]);
        assert_eq!(s.create_commit(P, &stale, None).unwrap_err().status, 409);
        assert_eq!(s.dispatch_outbox(None).unwrap().len(), 1);
    });
}

#[test]
fn a_claim_takes_the_newest_commit_and_coalesces_the_older_ones() {
    on_both_outbox(|s| {
        s.put_project("p2", "Two").unwrap();
        let a = commit(&s, dashboard(), vec![put("workflow", "a", json!(1))]).unwrap();
        let b = commit(&s, dashboard(), vec![put("workflow", "b", json!(1))]).unwrap();
        let c = commit(&s, dashboard(), vec![put("workflow", "c", json!(1))]).unwrap();
        let other =
            s.create_commit("p2", &body(None, dashboard(), vec![put("workflow", "x", json!(1))]), None).unwrap();

        let claimed = s.claim_due_dispatches(&policy()).unwrap();
        assert_eq!(claimed.len(), 2, "{claimed:?}");
        let mine = claimed.iter().find(|d| d.project == P).unwrap();
        assert_eq!((mine.commit_id.as_str(), mine.attempt), (c.id.as_str(), 1));
        assert_eq!(mine.coalesced, [a.id.clone(), b.id.clone()]);
        let theirs = claimed.iter().find(|d| d.project == "p2").unwrap();
        assert_eq!((theirs.commit_id.as_str(), theirs.coalesced.len()), (other.id.as_str(), 0));
        let rows = s.dispatch_outbox(Some(P)).unwrap();
        assert_eq!(rows[0].coalesced_into.as_deref(), Some(c.id.as_str()));
        assert!(rows[0].done_at.is_some());
        assert_eq!(
            states(&s),
            [
                (a.id, DispatchState::Coalesced),
                (b.id, DispatchState::Coalesced),
                (c.id.clone(), DispatchState::Pending)
            ]
        );

        // Claimed rows are scheduled for their retry: not claimed again before it.
        assert!(s.claim_due_dispatches(&policy()).unwrap().is_empty());

        s.mark_dispatch_done(mine.id, &sent(Some(42), Some("https://github.com/o/r/actions/runs/42"))).unwrap();
        let row = s.dispatch_outbox(Some(P)).unwrap().pop().unwrap();
        assert_eq!((row.state, row.run_id, row.last_error), (DispatchState::Done, Some(42), None));
        assert!(s.claim_due_dispatches_at(FAR, &policy()).unwrap().iter().all(|d| d.project != P));
    });
}

#[test]
fn failures_back_off_then_give_up_and_stay_queryable() {
    on_both_outbox(|s| {
        let c = commit(&s, dashboard(), vec![put("workflow", "a", json!(1))]).unwrap();
        let p = policy();
        let t0 = clock::unix_now_millis() as i64 + 1000;
        let d = s.claim_due_dispatches_at(t0, &p).unwrap().pop().unwrap();
        assert_eq!(d.attempt, 1);
        let out = s.mark_dispatch_failed_at(t0, d.id, "503 unavailable", false, &p).unwrap();
        assert_eq!(out, DispatchFailure::Retry { attempts: 1, wait: Duration::from_secs(5) });
        let row = s.dispatch_outbox(Some(P)).unwrap().pop().unwrap();
        assert_eq!(
            (row.state, row.last_error.as_deref(), row.next_attempt_ms),
            (DispatchState::Pending, Some("503 unavailable"), t0 + 5000)
        );

        // Not due before the backoff, due after it.
        assert!(s.claim_due_dispatches_at(t0 + 4999, &p).unwrap().is_empty());
        let d = s.claim_due_dispatches_at(t0 + 5000, &p).unwrap().pop().unwrap();
        assert_eq!(d.attempt, 2);
        let out = s.mark_dispatch_failed_at(t0 + 5000, d.id, "502", false, &p).unwrap();
        assert_eq!(out, DispatchFailure::Retry { attempts: 2, wait: Duration::from_secs(10) });

        // The third attempt is the policy's last.
        let d = s.claim_due_dispatches_at(t0 + 15_000, &p).unwrap().pop().unwrap();
        assert_eq!(d.attempt, 3);
        let out = s.mark_dispatch_failed_at(t0 + 15_000, d.id, "500 again", false, &p).unwrap();
        assert_eq!(out, DispatchFailure::GaveUp { attempts: 3 });
        let row = s.dispatch_outbox(Some(P)).unwrap().pop().unwrap();
        assert_eq!(
            (row.commit_id, row.state, row.last_error.as_deref()),
            (c.id, DispatchState::Failed, Some("500 again"))
        );
        assert!(row.done_at.is_some());
        assert!(s.claim_due_dispatches_at(FAR, &p).unwrap().is_empty(), "a failed row is never claimed again");
        assert_eq!(s.dispatch_counts().unwrap(), [(DispatchState::Failed, 1)]);
    });
}

#[test]
fn a_permanent_error_gives_up_at_once() {
    on_both_outbox(|s| {
        commit(&s, dashboard(), vec![put("workflow", "a", json!(1))]).unwrap();
        let d = s.claim_due_dispatches(&policy()).unwrap().pop().unwrap();
        let out = s.mark_dispatch_failed(d.id, "404 workflow not found", true, &policy()).unwrap();
        assert_eq!(out, DispatchFailure::GaveUp { attempts: 1 });
        assert_eq!(s.dispatch_outbox(None).unwrap()[0].state, DispatchState::Failed);
    });
}

/// A new commit while an older one is backing off takes over its dispatch: the older one is
/// coalesced, and the new one is sent at once rather than after the backoff.
#[test]
fn a_newer_commit_takes_over_a_dispatch_that_is_backing_off() {
    on_both_outbox(|s| {
        let a = commit(&s, dashboard(), vec![put("workflow", "a", json!(1))]).unwrap();
        let d = s.claim_due_dispatches(&policy()).unwrap().pop().unwrap();
        s.mark_dispatch_failed(d.id, "503", false, &policy()).unwrap();
        let b = commit(&s, dashboard(), vec![put("workflow", "b", json!(1))]).unwrap();
        let d = s.claim_due_dispatches(&policy()).unwrap().pop().unwrap();
        assert_eq!((d.commit_id.as_str(), d.attempt, d.coalesced.clone()), (b.id.as_str(), 1, vec![a.id.clone()]));
        assert_eq!(states(&s), [(a.id, DispatchState::Coalesced), (b.id, DispatchState::Pending)]);
    });
}

/// The outbox lives in the file: pending rows are there after reopening, as after a crash.
#[test]
fn pending_dispatches_survive_reopening() {
    on_both_scratch(|scratch| {
        let c = {
            let s = scratch.open();
            s.set_dispatch_outbox(true);
            s.put_project(P, "x").unwrap();
            commit(&s, dashboard(), vec![put("workflow", "a", json!(1))]).unwrap()
        };
        let s = scratch.open();
        let d = s.claim_due_dispatches(&policy()).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].commit_id, c.id);
    });
}

// Run status, webhook deliveries, branch pushes and run reports (issue 11).

fn sent(run_id: Option<u64>, run_url: Option<&'static str>) -> SentDispatch<'static> {
    SentDispatch { forge: "github", target: "Acme/Defs", run_id, run_url }
}

/// A commit, claimed and sent: the row's ID.
fn sent_row(s: &Store, name: &str, run_id: Option<u64>) -> (Commit, i64) {
    let c = commit(s, dashboard(), vec![put("workflow", name, json!(1))]).unwrap();
    let d = s.claim_due_dispatches(&policy()).unwrap().pop().unwrap();
    s.mark_dispatch_done(d.id, &sent(run_id, None)).unwrap();
    (c, d.id)
}

#[test]
fn a_sent_dispatch_knows_its_forge_and_target() {
    on_both_outbox(|s| {
        let (_, id) = sent_row(&s, "a", Some(7));
        let row = s.dispatch_entry(id).unwrap().unwrap();
        assert_eq!(
            (row.forge.as_deref(), row.target.as_deref(), row.run_id),
            (Some("github"), Some("Acme/Defs"), Some(7))
        );
        assert_eq!((row.run_status, row.run_conclusion, row.run_updated_at), (None, None, None));
        assert!(s.dispatched_to("github", "acme/defs").unwrap());
        assert!(!s.dispatched_to("gitlab", "acme/defs").unwrap());
        assert!(!s.dispatched_to("github", "acme/other").unwrap());
    });
}

#[test]
fn run_status_moves_forward_only() {
    on_both_outbox(|s| {
        let (_, id) = sent_row(&s, "a", Some(7));
        let url = Some("https://github.com/Acme/Defs/actions/runs/7");
        // The target compares without case; another forge or repository matches nothing.
        let rows = s.record_run("github", "acme/defs", 7, RunStatus::Queued, None, url).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].id, rows[0].run_status, rows[0].run_url.as_deref()), (id, Some(RunStatus::Queued), url));
        assert!(rows[0].run_updated_at.is_some());
        assert!(s.record_run("gitlab", "acme/defs", 7, RunStatus::Failed, None, None).unwrap().is_empty());
        assert!(s.record_run("github", "acme/other", 7, RunStatus::Failed, None, None).unwrap().is_empty());
        assert!(s.record_run("github", "acme/defs", 8, RunStatus::Failed, None, None).unwrap().is_empty());

        s.record_run("github", "Acme/Defs", 7, RunStatus::InProgress, None, None).unwrap();
        let done = s.record_run("github", "Acme/Defs", 7, RunStatus::Failed, Some("timed_out"), None).unwrap();
        assert_eq!(
            (done[0].run_status, done[0].run_conclusion.as_deref()),
            (Some(RunStatus::Failed), Some("timed_out"))
        );
        // A late in_progress (webhooks arrive in any order) is ignored, as is another ending.
        assert!(s.record_run("github", "Acme/Defs", 7, RunStatus::InProgress, None, None).unwrap().is_empty());
        assert!(
            s.record_run("github", "Acme/Defs", 7, RunStatus::Succeeded, Some("success"), None).unwrap().is_empty()
        );
        let row = s.dispatch_entry(id).unwrap().unwrap();
        assert_eq!(
            (row.run_status, row.run_conclusion.as_deref(), row.run_url.as_deref()),
            (Some(RunStatus::Failed), Some("timed_out"), url)
        );
    });
}

#[test]
fn a_run_without_id_is_attached_by_commit_then_followed() {
    on_both_outbox(|s| {
        let (c, id) = sent_row(&s, "a", None);
        assert!(s.attach_run("github", "acme/defs", "c_unknown", 9).unwrap().is_none());
        assert!(s.attach_run("gitlab", "acme/defs", &c.id, 9).unwrap().is_none());
        let row = s.attach_run("github", "acme/defs", &c.id, 9).unwrap().unwrap();
        assert_eq!((row.id, row.run_id), (id, Some(9)));
        // Once attached, it is not attached to another run.
        assert!(s.attach_run("github", "acme/defs", &c.id, 10).unwrap().is_none());
        let rows = s.record_run("github", "acme/defs", 9, RunStatus::Succeeded, Some("success"), None).unwrap();
        assert_eq!(rows[0].run_status, Some(RunStatus::Succeeded));
    });
}

#[test]
fn a_dispatch_with_no_run_is_not_started_after_the_timeout() {
    on_both_outbox(|s| {
        let (_, waiting) = sent_row(&s, "a", None);
        let (_, with_run) = sent_row(&s, "b", Some(5));
        let now = clock::unix_now_millis() as i64;
        let timeout = Duration::from_secs(600);
        assert!(s.mark_runs_not_started_at(now, timeout).unwrap().is_empty(), "not before the timeout");
        let rows = s.mark_runs_not_started_at(now + 601_000, timeout).unwrap();
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [waiting]);
        assert_eq!(rows[0].run_status, Some(RunStatus::NotStarted));
        assert!(rows[0].last_error.as_deref().unwrap().contains("workflow file missing or misnamed"));
        assert!(s.mark_runs_not_started_at(now + 999_000, timeout).unwrap().is_empty(), "marked once");
        assert_eq!(s.dispatch_entry(with_run).unwrap().unwrap().run_status, None);
        // The run appears after all (late, or started by hand): the guess gives way, message and all.
        let c = s.dispatch_entry(waiting).unwrap().unwrap().commit_id;
        s.attach_run("github", "acme/defs", &c, 77).unwrap().unwrap();
        let rows = s.record_run("github", "acme/defs", 77, RunStatus::InProgress, None, None).unwrap();
        assert_eq!((rows[0].run_status, rows[0].last_error.as_deref()), (Some(RunStatus::InProgress), None));
    });
}

#[test]
fn sync_now_queues_the_head_once_and_coalesces() {
    on_both(|s| {
        assert_eq!(s.queue_dispatch(P).unwrap_err().code, "dispatch_off");
        s.set_dispatch_outbox(true);
        assert_eq!(s.queue_dispatch("nope").unwrap_err().status, 404);
        let e = s.queue_dispatch(P).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (422, "no_head"));

        let (c, first) = sent_row(&s, "a", Some(1));
        let again = s.queue_dispatch(P).unwrap();
        assert_ne!(again, first, "a done row is not reused: Sync now dispatches again");
        assert_eq!(s.queue_dispatch(P).unwrap(), again, "a pending row of the head is the answer");
        let d = s.claim_due_dispatches(&policy()).unwrap();
        assert_eq!(d.iter().map(|d| (d.id, d.commit_id.clone())).collect::<Vec<_>>(), [(again, c.id.clone())]);
    });
}

#[test]
fn a_failed_dispatch_can_be_retried_and_only_then() {
    on_both_outbox(|s| {
        let c = commit(&s, dashboard(), vec![put("workflow", "a", json!(1))]).unwrap();
        let d = s.claim_due_dispatches(&policy()).unwrap().pop().unwrap();
        assert_eq!(s.retry_dispatch(d.id).unwrap_err().status, 409, "pending, not failed");
        s.mark_dispatch_failed(d.id, "404 workflow", true, &policy()).unwrap();
        assert_eq!(s.retry_dispatch(999_999).unwrap_err().status, 404);
        s.retry_dispatch(d.id).unwrap();
        let row = s.dispatch_entry(d.id).unwrap().unwrap();
        assert_eq!((row.state, row.attempts, row.done_at), (DispatchState::Pending, 0, None));
        let again = s.claim_due_dispatches(&policy()).unwrap().pop().unwrap();
        assert_eq!((again.id, again.commit_id, again.attempt), (d.id, c.id, 1));
    });
}

/// Two pending rows of one commit (a retried row and Sync now) go out as one dispatch.
#[test]
fn two_pending_rows_of_one_commit_are_sent_once() {
    on_both_outbox(|s| {
        commit(&s, dashboard(), vec![put("workflow", "a", json!(1))]).unwrap();
        let d = s.claim_due_dispatches(&policy()).unwrap().pop().unwrap();
        s.mark_dispatch_failed(d.id, "404", true, &policy()).unwrap();
        let now = s.queue_dispatch(P).unwrap();
        s.retry_dispatch(d.id).unwrap();
        let claimed = s.claim_due_dispatches(&policy()).unwrap();
        assert_eq!(claimed.len(), 1, "{claimed:?}");
        assert_eq!(claimed[0].id, d.id.max(now));
        let states: Vec<DispatchState> = s.dispatch_outbox(None).unwrap().iter().map(|r| r.state).collect();
        assert_eq!(states, [DispatchState::Coalesced, DispatchState::Pending]);
    });
}

#[test]
fn deliveries_are_deduplicated_and_kept_until_processed() {
    on_both_scratch(|scratch| {
        {
            let s = scratch.open();
            assert!(s.record_delivery("github", "d-1", "push", b"{}").unwrap());
            assert!(!s.record_delivery("github", "d-1", "push", b"{\"other\":1}").unwrap(), "a replay");
            assert!(s.record_delivery("gitlab", "d-1", "Pipeline Hook", b"[]").unwrap(), "IDs are per forge");
            assert_eq!(s.record_delivery("github", "", "push", b"{}").unwrap_err().status, 422);
            assert_eq!(s.record_delivery("github", "a b", "push", b"{}").unwrap_err().status, 422);
        }
        // Reopened, as after a crash between recording and processing.
        let s = scratch.open();
        let owed = s.unprocessed_deliveries().unwrap();
        assert_eq!(owed.len(), 2);
        assert_eq!(
            (owed[0].forge.as_str(), owed[0].event.as_str(), owed[0].body.as_slice()),
            ("github", "push", &b"{}"[..])
        );
        s.delivery_processed("github", "d-1").unwrap();
        assert_eq!(s.unprocessed_deliveries().unwrap().len(), 1);
        assert!(!s.record_delivery("github", "d-1", "push", b"{}").unwrap(), "still a replay once processed");
        // Expired and processed: forgotten.
        s.execute_for_test("UPDATE webhook_deliveries SET expires_ms = 0");
        assert!(s.record_delivery("github", "d-1", "push", b"{}").unwrap());
        assert!(!s.record_delivery("gitlab", "d-1", "Pipeline Hook", b"[]").unwrap(), "owed work never expires");
    });
}

#[test]
fn the_last_push_of_each_branch_is_kept() {
    on_both(|s| {
        s.record_push("github", "Acme/Defs", "refs/heads/main", "aaa").unwrap();
        s.record_push("github", "Acme/Defs", "refs/heads/main", "bbb").unwrap();
        s.record_push("github", "Acme/Defs", "refs/heads/dev", "ccc").unwrap();
        s.record_push("gitlab", "Acme/Defs", "refs/heads/main", "ddd").unwrap();
        let pushes = s.branch_pushes("github", "acme/defs").unwrap();
        let seen: Vec<(&str, &str)> = pushes.iter().map(|p| (p.git_ref.as_str(), p.after.as_str())).collect();
        assert_eq!(seen, [("refs/heads/dev", "ccc"), ("refs/heads/main", "bbb")]);
    });
}

fn report(outcome: &str) -> crate::api::RunReport {
    serde_json::from_value(json!({
        "command": "pull", "outcome": outcome, "run_url": "https://github.com/o/r/actions/runs/1",
        "git_commit": "abc", "platform_commit": "c_1",
        "conflicts": [{"kind": "workflow", "name": "a <b>", "git": {"x": 1}, "platform": null}],
        "deferred": [{"kind": "workflow", "name": "d"}]
    }))
    .unwrap()
}

#[test]
fn run_reports_are_kept_newest_first_and_checked() {
    on_both(|s| {
        assert_eq!(s.add_run_report("nope", &report("ok")).unwrap_err().status, 404);
        let first = s.add_run_report(P, &report("ok")).unwrap();
        let second = s.add_run_report(P, &report("conflict")).unwrap();
        let got = s.run_reports(P, 10).unwrap();
        assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), [second, first]);
        assert_eq!(got[0].report, report("conflict"));
        assert_eq!(got[0].report.conflicts[0].platform, None);
        assert_eq!(s.run_reports(P, 1).unwrap().len(), 1);

        let mut bad = report("ok");
        bad.conflicts[0].kind = "Bad Kind".into();
        assert_eq!(s.add_run_report(P, &bad).unwrap_err().status, 422);
        let mut bad = report("ok");
        bad.command = "pull; rm".into();
        assert_eq!(s.add_run_report(P, &bad).unwrap_err().status, 422);
        let mut bad = report("ok");
        bad.run_url = Some("javascript:alert(1)".into());
        assert_eq!(s.add_run_report(P, &bad).unwrap_err().status, 422);

        for _ in 0..MAX_RUN_REPORTS_KEPT {
            s.add_run_report(P, &report("ok")).unwrap();
        }
        let kept = s.run_reports(P, 1000).unwrap();
        assert_eq!(kept.len() as i64, MAX_RUN_REPORTS_KEPT);
        assert!(kept.iter().all(|r| r.id > second), "the oldest are gone");
    });
}

#[test]
fn json_answers_over_many_chunks_equal_the_serialised_values() {
    // Enough entries for a manifest and a base of several chunks each, and an older manifest
    // (the history query) beside the head's.
    on_both(|s| {
        let names: Vec<String> = (0..4000).map(|i| format!("w-{i:05} \"ü\"")).collect();
        let c1 = commit(&s, dashboard(), names.iter().map(|n| put("workflow", n, json!(1))).collect()).unwrap();
        let c2 = commit(&s, dashboard(), vec![put("workflow", "w-00000 \"ü\"", json!(2))]).unwrap();
        for c in [&c1, &c2] {
            let chunks = s.manifest_json(P, &c.id).unwrap();
            assert!(chunks.len() > 2 * 256 * 1024, "{}", chunks.len());
            assert_eq!(chunks.concat(), serde_json::to_vec(&s.manifest(P, &c.id).unwrap()).unwrap());
        }
        let t = link(&s);
        let base: Vec<Value> = names
            .iter()
            .map(|n| json!({"kind": "workflow", "name": n, "digest": digest_of("workflow", n, json!(1)), "blob": "a".repeat(40)}))
            .collect();
        let req = json!({"repository": "acme/defs", "ref": "refs/heads/main", "path": "platform",
            "direction": "bidirectional", "commit": c1.id, "base": base});
        s.put_sync(P, Some(&t.0), &serde_json::to_vec(&req).unwrap()).unwrap();
        let (chunks, etag) = s.base_json(P).unwrap();
        let (base, etag2) = s.base(P).unwrap();
        assert_eq!(etag, etag2);
        assert!(chunks.len() > 256 * 1024, "{}", chunks.len());
        assert_eq!(chunks.concat(), serde_json::to_vec(&base).unwrap());
    });
}
