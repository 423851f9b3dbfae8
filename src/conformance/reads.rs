//! Reads: manifest order and sizes, single commits, batch-get with its limits, and commit paging.

use serde_json::{Value, json};

use super::context::{Answer, Auth, Cx, delete, digest, put};
use super::{Outcome, Verdict, check};

/// One canonical form just under 1 MiB: a string spec of this many bytes.
pub const BIG_SPEC_BYTES: usize = 1_040_000;

async fn fetch(cx: &Cx, p: &str, digests: &[String]) -> Result<Answer, Verdict> {
    cx.post(&format!("/v1/projects/{p}/objects/batch-get"), &json!({"digests": digests})).await
}

/// A refusal of a batch that is too large: the contract names no code, so 413 or 422 with the
/// contract's error body.
fn expect_refused(a: &Answer, what: &str) -> Outcome {
    check!(a.status == 413 || a.status == 422, "{what}: expected 413 or 422, got {}", a.summary());
    super::context::check_error_shape(a)
}

pub async fn manifest_order(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    // UTF-8 byte order differs from UTF-16 order (U+FF61 against an astral emoji), from case-folded
    // order ("B" before "a") and from kind-blind order.
    let keys = [
        ("b", "a"),
        ("a", "\u{1F600}"),
        ("a", "\u{FF61}"),
        ("a-b", "z"),
        ("a", "a b"),
        ("a", "é"),
        ("a", "a"),
        ("a", "B"),
        ("ab", "0"),
        ("a", "a/b"),
    ];
    let changes: Vec<Value> = keys.iter().map(|(k, n)| put(k, n, json!(1))).collect();
    let c = Cx::id(&cx.commit(&p, None, json!(changes)).await?)?;
    let mut want: Vec<(String, String)> = keys.iter().map(|(k, n)| ((*k).to_owned(), (*n).to_owned())).collect();
    want.sort(); // String's order is the order of UTF-8 bytes.
    let got: Vec<(String, String)> = cx.manifest(&p, &c).await?.into_iter().map(|e| (e.0, e.1)).collect();
    check!(
        got == want,
        "manifest entries must be sorted by kind, then name, by UTF-8 bytes: want {want:?}, got {got:?}"
    );
    let base: Vec<Value> =
        keys.iter().map(|(k, n)| json!({"kind": k, "name": n, "digest": digest(k, n, &json!(1))})).collect();
    let body = json!({"repository": "example/conformance", "ref": "refs/heads/main", "path": ".",
        "direction": "bidirectional", "commit": c, "replace_base": true, "base": base});
    cx.put_sync(&p, "\"none\"", &body).await?.expect(200, "PUT /sync")?;
    let got: Vec<(String, String)> = cx.base(&p).await?.0.into_iter().map(|e| (e.0, e.1)).collect();
    check!(got == want, "base entries must be sorted like a manifest: want {want:?}, got {got:?}");
    Ok(())
}

pub async fn manifest_size(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let defs = [
        ("workflow", "ascii", json!({"b": [1, 2.5, true, null], "a": "x"})),
        ("workflow", "ünïcödé \u{1F600}", json!({"text": "é\u{1F600}\n\t\"", "n": 1e21, "f": 1.50})),
        ("setting", "empty", json!(null)),
    ];
    let changes: Vec<Value> = defs.iter().map(|(k, n, s)| put(k, n, s.clone())).collect();
    let c = Cx::id(&cx.commit(&p, None, json!(changes)).await?)?;
    let m = cx.manifest(&p, &c).await?;
    for (k, n, s) in &defs {
        let canonical = crate::digest::canonical_definition(k, n, s);
        let e = m.iter().find(|e| e.0 == *k && e.1 == *n);
        let Some(e) = e else { return Err(Verdict::Fail(format!("{k}/{n} is missing from the manifest: {m:?}"))) };
        check!(
            e.2 == digest(k, n, s),
            "{k}/{n}: the manifest's digest {} is not the definition's {}",
            e.2,
            digest(k, n, s)
        );
        check!(
            e.3 == canonical.len() as u64,
            "{k}/{n}: size must be the canonical form's length in bytes, {}, not {}",
            canonical.len(),
            e.3
        );
    }
    Ok(())
}

pub async fn commit_get(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let c1 = cx.commit(&p, None, json!([put("workflow", "w", json!(1))])).await?;
    let c2 = cx.commit(&p, Some(&Cx::id(&c1)?), json!([put("workflow", "w", json!(2))])).await?;
    for c in [c1, c2] {
        let a = cx.get(&format!("/v1/projects/{p}/commits/{}", Cx::id(&c)?)).await?;
        a.expect(200, "GET a commit")?;
        check!(a.json == c, "GET of a commit must answer it as created: {c} became {}", a.text);
    }
    Ok(())
}

/// Whether `tag` is an entity tag as RFC 9110 writes one: `"…"` or `W/"…"`, with no quote or
/// control character inside.
fn is_entity_tag(tag: &str) -> bool {
    let opaque = tag.strip_prefix("W/").unwrap_or(tag);
    opaque.len() >= 2
        && opaque.starts_with('"')
        && opaque.ends_with('"')
        && opaque[1..opaque.len() - 1].bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
}

/// v1.2: a manifest may carry an entity tag. A platform that sends none is skipped (clients and
/// caches then fetch manifests whole); one that sends one must keep it for its commit, give
/// another commit another, and answer `If-None-Match` with it by 304 and no body.
pub async fn manifest_etag(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let c1 = Cx::id(&cx.commit(&p, None, json!([put("workflow", "w", json!(1))])).await?)?;
    let c2 = Cx::id(&cx.commit(&p, Some(&c1), json!([put("workflow", "w", json!(2))])).await?)?;
    let path = |c: &str| format!("/v1/projects/{p}/commits/{c}/manifest");
    let first = cx.get(&path(&c1)).await?;
    first.expect(200, "GET the manifest")?;
    let Some(tag) = first.etag().map(str::to_owned) else {
        return Err(Verdict::Skip(
            "the platform sends no ETag with manifests (optional in v1.2): clients fetch them whole".into(),
        ));
    };
    check!(is_entity_tag(&tag), "a manifest's ETag must be an entity tag (\"…\" or W/\"…\"), got {tag}");
    let again = cx.get(&path(&c1)).await?;
    again.expect(200, "GET the manifest again")?;
    check!(
        again.etag() == Some(tag.as_str()) && again.json == first.json,
        "a manifest never changes: the same commit's manifest must come with the same ETag ({tag}) and body, got {:?}",
        again.etag()
    );
    let other = cx.get(&path(&c2)).await?;
    other.expect(200, "GET another commit's manifest")?;
    let other_tag = other.etag().map(str::to_owned);
    check!(other_tag.as_deref() != Some(tag.as_str()), "two commits' manifests have the same ETag {tag}");
    let revalidate = |commit: String, tag: String| async move {
        cx.send(reqwest::Method::GET, &path(&commit), Auth::Key, &[("if-none-match", &tag)], None).await
    };
    let a = revalidate(c1.clone(), tag.clone()).await?;
    check!(
        a.status == 304 && a.text.is_empty(),
        "GET of a manifest with If-None-Match: {tag} (its own ETag) must be 304 with no body, got {}",
        a.summary()
    );
    if let Some(other_tag) = other_tag {
        let a = revalidate(c1.clone(), other_tag.clone()).await?;
        a.expect(200, &format!("GET of a manifest with If-None-Match: {other_tag} (another commit's ETag)"))?;
        check!(
            a.json == first.json,
            "a manifest revalidated with another ETag must be answered whole: {}",
            a.summary()
        );
    }
    // A 304 must not vouch for a commit that does not exist.
    let a = revalidate("c_missing".into(), "*".into()).await?;
    a.expect_error(404, "not_found", "GET of an unknown commit's manifest with If-None-Match: *")?;
    Ok(())
}

/// The objects of a batch-get answer by digest, each checked against its own digest.
fn objects(a: &Answer) -> Result<Vec<(String, Value)>, Verdict> {
    let list = a
        .json
        .get("objects")
        .and_then(Value::as_array)
        .ok_or_else(|| Verdict::Fail(format!("batch-get answered no \"objects\" array: {}", a.summary())))?;
    let mut out = Vec::new();
    for o in list {
        let d = o.get("digest").and_then(Value::as_str).unwrap_or_default();
        let (k, n) = (o.get("kind").and_then(Value::as_str), o.get("name").and_then(Value::as_str));
        let (Some(k), Some(n), Some(spec)) = (k, n, o.get("spec")) else {
            return Err(Verdict::Fail(format!("a batch-get object lacks kind, name or spec: {o}")));
        };
        check!(digest(k, n, spec) == d, "batch-get object {k}/{n} does not match its digest {d}");
        out.push((d.to_owned(), spec.clone()));
    }
    Ok(out)
}

fn missing(a: &Answer) -> Vec<String> {
    a.json
        .get("missing")
        .and_then(Value::as_array)
        .map(|m| m.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

pub async fn batch_get(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let (sa, sb) = (json!({"steps": ["é", 1.5]}), json!([null, {"z": 1, "a": 2}]));
    cx.commit(&p, None, json!([put("workflow", "a", sa.clone()), put("connection", "b", sb.clone())])).await?;
    let (da, db) = (digest("workflow", "a", &sa), digest("connection", "b", &sb));
    let unknown = format!("sha256:{}", "0f".repeat(32));
    let a = fetch(cx, &p, &[da.clone(), unknown.clone(), db.clone()]).await?;
    a.expect(200, "batch-get")?;
    let mut got: Vec<String> = objects(&a)?.into_iter().map(|o| o.0).collect();
    got.sort();
    let mut want = vec![da, db];
    want.sort();
    check!(got == want, "batch-get must answer both objects it holds: want {want:?}, got {got:?}");
    check!(missing(&a) == [unknown.clone()], "batch-get must list {unknown} in \"missing\": {}", a.summary());
    Ok(())
}

pub async fn batch_get_any_commit(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let c1 =
        Cx::id(&cx.commit(&p, None, json!([put("workflow", "a", json!(1)), put("workflow", "b", json!(1))])).await?)?;
    let c2 = Cx::id(&cx.commit(&p, Some(&c1), json!([put("workflow", "a", json!(2))])).await?)?;
    cx.commit(&p, Some(&c2), json!([delete("workflow", "a"), delete("workflow", "b")])).await?;
    let want =
        [digest("workflow", "a", &json!(1)), digest("workflow", "a", &json!(2)), digest("workflow", "b", &json!(1))];
    let a = fetch(cx, &p, &want).await?;
    a.expect(200, "batch-get of definitions of older commits")?;
    let got: Vec<String> = objects(&a)?.into_iter().map(|o| o.0).collect();
    for d in &want {
        check!(got.contains(d), "{d} belongs to an earlier commit and must be fetchable: {}", a.summary());
    }
    Ok(())
}

pub async fn batch_get_limits(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    cx.commit(&p, None, json!([put("workflow", "w", json!(1))])).await?;
    let real = digest("workflow", "w", &json!(1));
    let mut digests: Vec<String> = vec![real.clone()];
    digests.extend((1..1000u32).map(|i| format!("sha256:{i:064x}")));
    let a = fetch(cx, &p, &digests).await?;
    a.expect(200, "batch-get of 1000 digests")?;
    check!(objects(&a)?.len() == 1 && missing(&a).len() == 999, "1000 digests: want 1 object and 999 missing");
    digests.push(format!("sha256:{:064x}", 1000));
    expect_refused(&fetch(cx, &p, &digests).await?, "batch-get of 1001 digests")
}

pub async fn batch_get_bytes(cx: &Cx) -> Outcome {
    let (p, digests) = match cx.big_project() {
        Some(big) => big,
        None => {
            let p = cx.project().await?;
            let spec = json!("x".repeat(BIG_SPEC_BYTES));
            let names: Vec<String> = (0..17).map(|i| format!("big-{i:02}")).collect();
            let changes: Vec<Value> = names.iter().map(|n| put("blob", n, spec.clone())).collect();
            cx.commit(&p, None, json!(changes)).await?;
            let digests = names.iter().map(|n| digest("blob", n, &spec)).collect();
            (p, digests)
        }
    };
    check!(digests.len() >= 17, "the checker needs 17 definitions of about 1 MB");
    let a = fetch(cx, &p, &digests[..16]).await?;
    a.expect(200, "batch-get of 16 definitions of about 1 MB (just under 16 MiB)")?;
    check!(objects(&a)?.len() == 16, "batch-get of 16 objects under 16 MiB must answer all 16");
    expect_refused(&fetch(cx, &p, &digests[..17]).await?, "batch-get of 17 definitions of about 1 MB (over 16 MiB)")
}

fn seqs(a: &Answer) -> Vec<u64> {
    a.json
        .get("commits")
        .and_then(Value::as_array)
        .map(|c| c.iter().map(|c| c.get("seq").and_then(Value::as_u64).unwrap_or(0)).collect())
        .unwrap_or_default()
}

pub async fn commits_paging(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let mut parent: Option<String> = None;
    let mut ids = Vec::new();
    for i in 1..=101u64 {
        let c = cx.commit(&p, parent.as_deref(), json!([put("workflow", "w", json!(i))])).await?;
        parent = Some(Cx::id(&c)?);
        ids.push(parent.clone().unwrap_or_default());
    }
    let cases: [(&str, Vec<u64>); 6] = [
        ("", (1..=100).collect()),
        ("?after_seq=0&limit=2", vec![1, 2]),
        ("?after_seq=2&limit=3", vec![3, 4, 5]),
        ("?after_seq=100", vec![101]),
        ("?after_seq=101", vec![]),
        ("?after_seq=0&limit=1000", (1..=101).collect()),
    ];
    for (query, want) in cases {
        let a = cx.get(&format!("/v1/projects/{p}/commits{query}")).await?;
        a.expect(200, "list commits")?;
        let got = seqs(&a);
        check!(got == want, "commits{query}: want seqs {}, got {got:?}", short(&want));
        // Each listed commit is the one created with that seq.
        let listed: Vec<&str> =
            a.json["commits"].as_array().into_iter().flatten().filter_map(|c| c["id"].as_str()).collect();
        let expected: Vec<&str> = want.iter().map(|s| ids[*s as usize - 1].as_str()).collect();
        check!(listed == expected, "commits{query}: the ids are not those of the commits with those seqs");
    }
    Ok(())
}

fn short(v: &[u64]) -> String {
    match v {
        [] => "[]".into(),
        [a] => format!("[{a}]"),
        [a, .., b] if v.len() > 4 => format!("[{a}..={b}]"),
        _ => format!("{v:?}"),
    }
}
