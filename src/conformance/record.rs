//! The sync record and the base: the shared `ETag`, `If-Match`, `sync_regression`,
//! `replace_base`, v1.1 base digests, the base a `git` commit sets, and v1.2 base blobs.

use serde_json::{Value, json};

use super::commits::{PATH, REF, REPOSITORY, git_origin};
use super::context::{Cx, delete, digest, put};
use super::{Outcome, Verdict, check};

const NONE: &str = "\"none\"";
const GIT_COMMIT: &str = "3f1c0e5ad2b0a4e7c9b1f0a3d5e7c9b1f0a3d5e7";

fn link(commit: Option<&str>, replace_base: bool, base: Value) -> Value {
    let mut v = json!({"repository": REPOSITORY, "ref": REF, "path": PATH, "direction": "bidirectional",
        "git_commit": GIT_COMMIT, "replace_base": replace_base, "base": base});
    if let Some(c) = commit {
        v["commit"] = json!(c);
    }
    v
}

fn entry(kind: &str, name: &str, spec: Value) -> Value {
    json!({"kind": kind, "name": name, "digest": digest(kind, name, &spec)})
}

/// The project's and the base's tags, which must be present and equal.
async fn tags(cx: &Cx, p: &str) -> Result<String, Verdict> {
    let (_, project_tag) = cx.project_state(p).await?;
    let (_, base_tag) = cx.base(p).await?;
    let Some(project_tag) = project_tag else {
        return Err(Verdict::Fail("GET of the project has no ETag header".into()));
    };
    check!(
        base_tag.as_deref() == Some(project_tag.as_str()),
        "the base's ETag {base_tag:?} differs from the project's {project_tag:?}: they share one tag"
    );
    Ok(project_tag)
}

/// A `PUT /sync` that must be 200 with a new ETag that reads back; returns the tag.
async fn put_ok(cx: &Cx, p: &str, tag: &str, body: &Value) -> Result<String, Verdict> {
    let a = cx.put_sync(p, tag, body).await?;
    a.expect(200, "PUT /sync with the current If-Match")?;
    let Some(new) = a.etag().map(str::to_owned) else {
        return Err(Verdict::Fail(format!("200 to PUT /sync without an ETag header: {}", a.summary())));
    };
    check!(new != tag, "PUT /sync changed the record but answered the old ETag {tag}");
    let read = tags(cx, p).await?;
    check!(read == new, "PUT /sync answered ETag {new}, but GET answers {read}");
    Ok(new)
}

async fn base_map(cx: &Cx, p: &str) -> Result<Vec<(String, String, String)>, Verdict> {
    Ok(cx.base(p).await?.0)
}

fn triples(v: &[Value]) -> Vec<(String, String, String)> {
    let s = |e: &Value, k: &str| e[k].as_str().unwrap_or_default().to_owned();
    v.iter().map(|e| (s(e, "kind"), s(e, "name"), s(e, "digest"))).collect()
}

pub async fn etag(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let t0 = tags(cx, &p).await?;
    check!(t0 == NONE, "with no record the ETag must be \"none\" (quotes included), not {t0}");
    let (entries, _) = cx.base(&p).await?;
    check!(entries.is_empty(), "with no record the base must be empty: {entries:?}");
    let c = Cx::id(&cx.commit(&p, None, json!([put("workflow", "w", json!(1))])).await?)?;
    let t1 = put_ok(cx, &p, NONE, &link(Some(&c), true, json!([]))).await?;
    // A git commit changes the record and the base: a new tag, the same on both.
    let body = json!({"parent": c, "message": "m", "origin": git_origin(REPOSITORY, REF, PATH),
        "changes": [put("workflow", "w", json!(2))]});
    cx.post(&format!("/v1/projects/{p}/commits"), &body).await?.expect(201, "a git commit")?;
    let t2 = tags(cx, &p).await?;
    check!(t2 != t1, "a git commit changed the record and the base but not the ETag ({t1})");
    Ok(())
}

pub async fn if_match(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let c = Cx::id(&cx.commit(&p, None, json!([put("workflow", "w", json!(1))])).await?)?;
    let t1 = put_ok(cx, &p, NONE, &link(Some(&c), true, json!([entry("workflow", "w", json!(1))]))).await?;
    let (record, _) = cx.project_state(&p).await?;
    let stale = link(Some(&c), true, json!([]));
    for tag in [NONE, "\"not-a-tag\""] {
        cx.put_sync(&p, tag, &stale).await?.expect_error(
            412,
            "precondition_failed",
            "PUT /sync with a stale If-Match",
        )?;
    }
    let (after, _) = cx.project_state(&p).await?;
    check!(after.get("sync") == record.get("sync"), "a 412 changed the record: {record} became {after}");
    check!(base_map(cx, &p).await?.len() == 1, "a 412 changed the base");
    check!(tags(cx, &p).await? == t1, "a 412 changed the ETag");
    let t2 = put_ok(cx, &p, &t1, &link(None, false, json!([]))).await?;
    cx.put_sync(&p, &t1, &stale).await?.expect_error(412, "precondition_failed", "PUT /sync with an older ETag")?;
    check!(tags(cx, &p).await? == t2, "a 412 changed the ETag");
    Ok(())
}

pub async fn sync_regression(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let c1 = Cx::id(&cx.commit(&p, None, json!([put("workflow", "w", json!(1))])).await?)?;
    let c2 = Cx::id(&cx.commit(&p, Some(&c1), json!([put("workflow", "w", json!(2))])).await?)?;
    let t = put_ok(cx, &p, NONE, &link(Some(&c2), true, json!([]))).await?;
    let a = cx.put_sync(&p, &t, &link(Some(&c1), false, json!([]))).await?;
    a.expect_error(409, "sync_regression", "PUT /sync with a commit older than the record's")?;
    let (state, _) = cx.project_state(&p).await?;
    check!(state.pointer("/sync/seq").and_then(Value::as_u64) == Some(2), "the record's seq went down: {state}");
    // No commit: the record's commit stays as it is.
    put_ok(cx, &p, &t, &link(None, false, json!([]))).await?;
    let (state, _) = cx.project_state(&p).await?;
    check!(
        state.pointer("/sync/commit").and_then(Value::as_str) == Some(c2.as_str())
            && state.pointer("/sync/seq").and_then(Value::as_u64) == Some(2),
        "PUT /sync without a commit must keep the record's commit and seq: {state}"
    );
    Ok(())
}

pub async fn commit_not_found(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    cx.commit(&p, None, json!([put("workflow", "w", json!(1))])).await?;
    let a = cx.put_sync(&p, NONE, &link(Some("c_missing"), true, json!([]))).await?;
    a.expect_error(404, "not_found", "PUT /sync naming a commit that does not exist")?;
    check!(tags(cx, &p).await? == NONE, "a refused PUT /sync wrote the record");
    Ok(())
}

pub async fn replace_base(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let c =
        Cx::id(&cx.commit(&p, None, json!([put("workflow", "a", json!(1)), put("workflow", "b", json!(1))])).await?)?;
    let (a, b, x) =
        (entry("workflow", "a", json!(1)), entry("workflow", "b", json!(1)), entry("workflow", "x", json!(7)));
    let t = put_ok(cx, &p, NONE, &link(Some(&c), true, json!([a, b]))).await?;
    check!(base_map(cx, &p).await? == triples(&[a.clone(), b.clone()]), "the base is not the one sent");
    let t =
        put_ok(cx, &p, &t, &link(None, false, json!([{"kind": "workflow", "name": "b", "digest": null}, x]))).await?;
    let got = base_map(cx, &p).await?;
    check!(
        got == triples(&[a.clone(), x.clone()]),
        "replace_base false must apply base as a change list (b removed, x added, a kept): {got:?}"
    );
    let t = put_ok(cx, &p, &t, &link(None, true, json!([b]))).await?;
    let got = base_map(cx, &p).await?;
    check!(got == triples(std::slice::from_ref(&b)), "replace_base true must empty the base before applying: {got:?}");
    put_ok(cx, &p, &t, &link(None, true, json!([]))).await?;
    let got = base_map(cx, &p).await?;
    check!(got.is_empty(), "replace_base true with no entries must leave an empty base: {got:?}");
    Ok(())
}

pub async fn base_digests(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let c = Cx::id(&cx.commit(&p, None, json!([put("workflow", "a", json!(1))])).await?)?;
    // v1.1: a well-formed digest of nothing the platform holds.
    let unknown = format!("sha256:{}", "ab".repeat(32));
    let t = put_ok(cx, &p, NONE, &link(Some(&c), true, json!([{"kind": "workflow", "name": "a", "digest": unknown}])))
        .await?;
    let got = base_map(cx, &p).await?;
    check!(
        got == [("workflow".to_owned(), "a".to_owned(), unknown.clone())],
        "v1.1: a well-formed digest the platform does not hold must be stored in the base: {got:?}"
    );
    let bad: [(&str, &str, Value); 6] = [
        ("workflow", "a", json!(format!("sha256:{}", "AB".repeat(32)))),
        ("workflow", "a", json!(format!("sha256:{}", "ab".repeat(31)))),
        ("workflow", "a", json!(format!("md5:{}", "ab".repeat(32)))),
        ("workflow", "a", json!(42)),
        ("Workflow", "a", json!(unknown)),
        ("workflow", "", json!(unknown)),
    ];
    for (kind, name, d) in bad {
        let body = link(None, false, json!([{"kind": kind, "name": name, "digest": d}]));
        let a = cx.put_sync(&p, &t, &body).await?;
        a.expect_error(422, "invalid", &format!("PUT /sync with base entry {{{kind:?}, {name:?}, {d}}}"))?;
    }
    check!(tags(cx, &p).await? == t, "a refused PUT /sync changed the ETag");
    Ok(())
}

pub async fn git_commit(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let c1 = Cx::id(&cx.commit(&p, None, json!(["a", "b", "c", "d"].map(|n| put("workflow", n, json!(1))))).await?)?;
    let base = json!(["a", "b", "c"].map(|n| entry("workflow", n, json!(1))));
    let t = put_ok(cx, &p, NONE, &link(Some(&c1), true, base)).await?;
    let body = json!({"parent": c1, "message": "from git", "origin": git_origin(REPOSITORY, REF, PATH),
        "changes": [put("workflow", "b", json!(2)), delete("workflow", "c"), put("workflow", "e", json!(1))]});
    let a = cx.post(&format!("/v1/projects/{p}/commits"), &body).await?;
    a.expect(201, "a git commit from the linked branch")?;
    let c2 = Cx::id(&a.json)?;
    let got = base_map(cx, &p).await?;
    let want = triples(&[
        entry("workflow", "a", json!(1)),
        entry("workflow", "b", json!(2)),
        entry("workflow", "e", json!(1)),
    ]);
    check!(
        got == want,
        "a git commit must set the base of exactly its keys (b and e to their new digests, c removed) and leave \
         a alone, and d out: want {want:?}, got {got:?}"
    );
    let (state, _) = cx.project_state(&p).await?;
    let sync = state.get("sync").cloned().unwrap_or_default();
    check!(
        sync.get("commit").and_then(Value::as_str) == Some(c2.as_str())
            && sync.get("seq").and_then(Value::as_u64) == Some(2)
            && sync.get("git_commit").and_then(Value::as_str) == Some(GIT_COMMIT),
        "a git commit must set the record's commit ({c2}), seq (2) and git_commit: {sync}"
    );
    check!(tags(cx, &p).await? != t, "a git commit changed the record but not the ETag");
    Ok(())
}

pub async fn other_origin(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let c1 = Cx::id(&cx.commit(&p, None, json!([put("workflow", "a", json!(1))])).await?)?;
    put_ok(cx, &p, NONE, &link(Some(&c1), true, json!([entry("workflow", "a", json!(1))]))).await?;
    let (before, _) = cx.project_state(&p).await?;
    let base_before = base_map(cx, &p).await?;
    let mut parent = c1;
    for origin in ["dashboard", "api"] {
        let body = json!({"parent": parent, "message": "m", "origin": {"type": origin},
            "changes": [put("workflow", "a", json!(origin)), put("workflow", origin, json!(1))]});
        let a = cx.post(&format!("/v1/projects/{p}/commits"), &body).await?;
        a.expect(201, &format!("a commit with origin {origin}"))?;
        parent = Cx::id(&a.json)?;
        let (after, _) = cx.project_state(&p).await?;
        check!(after.get("sync") == before.get("sync"), "a {origin} commit changed the record: {after}");
        let base = base_map(cx, &p).await?;
        check!(base == base_before, "a {origin} commit changed the base: {base_before:?} became {base:?}");
    }
    Ok(())
}

/// The base's blobs (contract v1.2), by name; an entry without one maps to `None`.
async fn blobs(cx: &Cx, p: &str) -> Result<Vec<(String, Option<String>)>, Verdict> {
    let a = cx.get(&format!("/v1/projects/{p}/sync/base")).await?;
    a.expect(200, "GET the base")?;
    let entries = a.json.get("entries").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(entries
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap_or_default().to_owned();
            (name, e.get("blob").and_then(Value::as_str).map(str::to_owned))
        })
        .collect())
}

const BLOB_A: &str = "0123456789abcdef0123456789abcdef01234567";
const BLOB_B: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn with_blob(mut entry: Value, blob: &str) -> Value {
    entry["blob"] = json!(blob);
    entry
}

/// v1.2: a platform that keeps no blobs at all is a v1.1 platform, still correct (clients parse
/// every file): skipped. One that keeps them must keep each with its digest and drop it with it.
pub async fn base_blob(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let c = Cx::id(&cx.commit(&p, None, json!(["a", "b"].map(|n| put("workflow", n, json!(1))))).await?)?;
    let base = json!([
        with_blob(entry("workflow", "a", json!(1)), BLOB_A),
        with_blob(entry("workflow", "b", json!(1)), BLOB_B)
    ]);
    let t = put_ok(cx, &p, NONE, &link(Some(&c), true, base)).await?;
    let got = blobs(cx, &p).await?;
    if got.iter().all(|(_, b)| b.is_none()) {
        return Err(Verdict::Skip(
            "the platform keeps no base blobs (contract v1.1): clients parse every file, as v1.1 allows".into(),
        ));
    }
    let want = |a: Option<&str>, b: Option<&str>| {
        vec![("a".to_owned(), a.map(str::to_owned)), ("b".to_owned(), b.map(str::to_owned))]
    };
    check!(got == want(Some(BLOB_A), Some(BLOB_B)), "PUT /sync must store each entry's blob as sent: {got:?}");
    // A new digest without a blob must drop the old blob: it proved the old digest only.
    let t = put_ok(cx, &p, &t, &link(None, false, json!([entry("workflow", "a", json!(2))]))).await?;
    let got = blobs(cx, &p).await?;
    check!(
        got == want(None, Some(BLOB_B)),
        "a base entry set without a blob must have none (its old blob proved another digest): {got:?}"
    );
    for bad in [json!("0123"), json!(BLOB_A.to_uppercase()), json!(42), json!(format!("{BLOB_A}zz"))] {
        let mut e = entry("workflow", "a", json!(1));
        e["blob"] = bad.clone();
        let a = cx.put_sync(&p, &t, &link(None, false, json!([e]))).await?;
        a.expect_error(422, "invalid", &format!("PUT /sync with base blob {bad}"))?;
    }
    check!(tags(cx, &p).await? == t, "a refused PUT /sync changed the ETag");
    Ok(())
}

/// v1.2: a git commit's `put` sets its key's base blob (none when the put has none); other
/// origins leave the base, blobs included, alone.
pub async fn git_commit_blob(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let c1 = Cx::id(&cx.commit(&p, None, json!(["a", "b"].map(|n| put("workflow", n, json!(1))))).await?)?;
    let base = json!([
        with_blob(entry("workflow", "a", json!(1)), BLOB_A),
        with_blob(entry("workflow", "b", json!(1)), BLOB_A)
    ]);
    put_ok(cx, &p, NONE, &link(Some(&c1), true, base)).await?;
    if blobs(cx, &p).await?.iter().all(|(_, b)| b.is_none()) {
        return Err(Verdict::Skip("the platform keeps no base blobs (contract v1.1)".into()));
    }
    let body = json!({"parent": c1, "message": "from git", "origin": git_origin(REPOSITORY, REF, PATH),
        "changes": [with_blob(put("workflow", "a", json!(2)), BLOB_B), put("workflow", "b", json!(2))]});
    let a = cx.post(&format!("/v1/projects/{p}/commits"), &body).await?;
    a.expect(201, "a git commit whose put carries a blob")?;
    let c2 = Cx::id(&a.json)?;
    let got = blobs(cx, &p).await?;
    let want = vec![("a".to_owned(), Some(BLOB_B.to_owned())), ("b".to_owned(), None)];
    check!(
        got == want,
        "a git commit must set each put key's base blob to the put's (none when it has none): want {want:?}, got {got:?}"
    );
    let body = json!({"parent": c2, "message": "m", "origin": {"type": "dashboard"},
        "changes": [with_blob(put("workflow", "a", json!(3)), BLOB_A)]});
    let a = cx.post(&format!("/v1/projects/{p}/commits"), &body).await?;
    a.expect(201, "a dashboard commit with a blob")?;
    let c3 = Cx::id(&a.json)?;
    let after = blobs(cx, &p).await?;
    check!(after == want, "a dashboard commit changed the base's blobs: {want:?} became {after:?}");
    let body = json!({"parent": c3, "message": "m", "origin": git_origin(REPOSITORY, REF, PATH),
        "changes": [with_blob(put("workflow", "a", json!(4)), "not-a-blob")]});
    let a = cx.post(&format!("/v1/projects/{p}/commits"), &body).await?;
    a.expect_error(422, "invalid", "a git commit whose put has a malformed blob")?;
    Ok(())
}
