//! The rules of part 1 on the server side: the test vectors are stored exactly as sent, and
//! keys, names and I-JSON limits are enforced with 422 `invalid`.

use reqwest::Method;
use serde_json::{Value, json};

use super::commits::expect_invalid;
use super::context::{Auth, Cx, expect_details_name, put};
use super::{Outcome, Verdict, check};

/// The contract's test vectors, vendored in the repository (tests/contract/vectors.json).
const VECTORS: &str = include_str!("../../tests/contract/vectors.json");

/// The canonical form's limit.
const MAX_CANONICAL: usize = 1024 * 1024;

/// Sends a commit whose `changes` are given as raw JSON texts, byte for byte.
async fn raw_commit(cx: &Cx, p: &str, changes: &[String]) -> Result<super::context::Answer, Verdict> {
    let body = format!(
        r#"{{"parent":null,"message":"defsync conformance","origin":{{"type":"api"}},"changes":[{}]}}"#,
        changes.join(",")
    );
    cx.send(Method::POST, &format!("/v1/projects/{p}/commits"), Auth::Key, &[], Some(body.into_bytes())).await
}

pub async fn vectors(cx: &Cx) -> Outcome {
    let v: Value =
        serde_json::from_str(VECTORS).map_err(|e| Verdict::Fail(format!("the embedded vectors do not parse: {e}")))?;
    let defs = v["definitions"].as_array().cloned().unwrap_or_default();
    check!(!defs.is_empty(), "the embedded vectors hold no definitions");
    let p = cx.project().await?;
    // The spec is sent as parsed from the vectors (numbers correctly rounded, as written again by
    // serde_json), not as the canonical text: a canonical form may hold an integer literal beyond
    // 2^53 (`1e16` is written `10000000000000000`), which a server must refuse in a request.
    let changes: Vec<Value> = defs
        .iter()
        .map(|d| put(d["kind"].as_str().unwrap_or_default(), d["name"].as_str().unwrap_or_default(), d["spec"].clone()))
        .collect();
    let a = cx.try_commit(&p, None, json!(changes)).await?;
    a.expect(201, "a commit of every definition of the test vectors")?;
    let c = Cx::id(&a.json)?;
    let m = cx.manifest(&p, &c).await?;
    let mut digests = Vec::new();
    for d in &defs {
        let (title, kind, name) = (d["title"].as_str().unwrap_or("?"), d["kind"].as_str(), d["name"].as_str());
        let (want_digest, canonical) =
            (d["digest"].as_str().unwrap_or_default(), d["canonical"].as_str().unwrap_or(""));
        let e = m.iter().find(|e| Some(e.0.as_str()) == kind && Some(e.1.as_str()) == name);
        let Some(e) = e else { return Err(Verdict::Fail(format!("vector {title:?}: not in the manifest"))) };
        check!(e.2 == want_digest, "vector {title:?}: the manifest's digest is {}, the vector's {want_digest}", e.2);
        check!(
            e.3 == canonical.len() as u64,
            "vector {title:?}: size is {}, the canonical form's length is {}",
            e.3,
            canonical.len()
        );
        digests.push(want_digest.to_owned());
    }
    let a = cx.post(&format!("/v1/projects/{p}/objects/batch-get"), &json!({"digests": digests})).await?;
    a.expect(200, "batch-get of every vector")?;
    let objects = a.json["objects"].as_array().cloned().unwrap_or_default();
    for d in &defs {
        let title = d["title"].as_str().unwrap_or("?");
        let o = objects.iter().find(|o| o["digest"] == d["digest"]);
        let Some(o) = o else { return Err(Verdict::Fail(format!("vector {title:?}: batch-get did not answer it"))) };
        let canonical = crate::digest::canonical_definition(
            o["kind"].as_str().unwrap_or_default(),
            o["name"].as_str().unwrap_or_default(),
            &o["spec"],
        );
        check!(
            canonical == d["canonical"].as_str().unwrap_or_default(),
            "vector {title:?}: batch-get answered a spec whose canonical form is {canonical}, not the vector's"
        );
    }
    Ok(())
}

pub async fn kind(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let too_long = format!("a{}", "b".repeat(63));
    for bad in ["Workflow", "1abc", "", "-a", "a_b", "a b", "wörk", too_long.as_str()] {
        expect_invalid(cx, &p, None, put(bad, "n", json!(1)), bad, "n").await?;
    }
    let longest = format!("a{}", "-".repeat(62));
    let a = cx.try_commit(&p, None, json!([put(&longest, "n", json!(1)), put("a", "n", json!(1))])).await?;
    a.expect(201, "kinds of 63 and of 1 characters, which part 1 allows")?;
    Ok(())
}

pub async fn name(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let (ascii_201, wide_201) = ("x".repeat(201), "é".repeat(201));
    let bad = [
        "",
        ascii_201.as_str(),
        wide_201.as_str(),
        "a\u{0}b",
        "a\u{1f}",
        "a\u{7f}",
        "a\u{85}b",
        "a\u{9f}",
        " lead",
        "trail ",
        "\tlead",
        "\u{a0}lead",
        "trail\u{3000}",
    ];
    for n in bad {
        expect_invalid(cx, &p, None, put("workflow", n, json!(1)), "workflow", n).await?;
    }
    let (emoji_200, x_200) = ("\u{1F600}".repeat(200), "x".repeat(200));
    let good = [emoji_200.as_str(), x_200.as_str(), "a/../b .c", "../../etc/passwd", "inner\u{a0}space", "a"];
    let changes: Vec<Value> = good.iter().map(|n| put("workflow", n, json!(1))).collect();
    cx.try_commit(&p, None, json!(changes))
        .await?
        .expect(201, "names that part 1 allows (200 characters, slashes, dots)")?;
    Ok(())
}

pub async fn ijson(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    for (name, spec) in [("above", json!(9_007_199_254_740_992u64)), ("below", json!(-9_007_199_254_740_992i64))] {
        expect_invalid(cx, &p, None, put("workflow", name, json!({"n": [spec]})), "workflow", name).await?;
    }
    // Refused in the body's own syntax, so a server may refuse the whole body: 422 invalid, with
    // details where it names the key.
    let raw = [
        ("duplicate key", r#"{"op":"put","kind":"workflow","name":"dup","spec":{"a":1,"a":2}}"#),
        ("nested duplicate key", r#"{"op":"put","kind":"workflow","name":"dup","spec":[{"b":{"c":1,"c":1}}]}"#),
        ("lone surrogate", r#"{"op":"put","kind":"workflow","name":"sur","spec":"\ud800"}"#),
        ("number beyond a double", r#"{"op":"put","kind":"workflow","name":"inf","spec":1e400}"#),
        ("integer beyond 64 bits", r#"{"op":"put","kind":"workflow","name":"wide","spec":18446744073709551616}"#),
    ];
    for (what, change) in raw {
        let a = raw_commit(cx, &p, &[change.to_owned()]).await?;
        a.expect_error(422, "invalid", &format!("a spec with a {what}"))?;
        if a.json.pointer("/error/details").is_some_and(|d| d.as_array().is_some_and(|d| !d.is_empty())) {
            let name = serde_json::from_str::<Value>(change).ok();
            if let Some(n) = name.as_ref().and_then(|v| v["name"].as_str()) {
                expect_details_name(&a, "workflow", n)?;
            }
        }
    }
    check!(cx.head(&p).await?.is_none(), "a refused commit made a head");
    let edge = r#"{"op":"put","kind":"workflow","name":"edge","spec":[9007199254740991,-9007199254740991,1e300,100000000000000000000.0,1E+16,"\ud83d\ude00"]}"#;
    raw_commit(cx, &p, &[edge.to_owned()]).await?.expect(201, "a spec at the limits of I-JSON")?;
    Ok(())
}

fn nested(levels: usize) -> Value {
    let mut v = json!(1);
    for i in 0..levels {
        v = if i % 2 == 0 { json!([v]) } else { json!({"k": v}) };
    }
    v
}

pub async fn depth(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    expect_invalid(cx, &p, None, put("workflow", "deep", nested(65)), "workflow", "deep").await?;
    cx.try_commit(&p, None, json!([put("workflow", "deep", nested(64))]))
        .await?
        .expect(201, "a spec 64 levels deep")?;
    Ok(())
}

/// A string spec that makes the canonical form of `blob/<name>` exactly `total` bytes.
pub fn spec_of_size(name: &str, total: usize) -> Value {
    let overhead = crate::digest::canonical_definition("blob", name, &json!("")).len();
    json!("x".repeat(total - overhead))
}

pub async fn size(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let over = spec_of_size("over", MAX_CANONICAL + 1);
    expect_invalid(cx, &p, None, put("blob", "over", over), "blob", "over").await?;
    let at = spec_of_size("at", MAX_CANONICAL);
    let c = Cx::id(&cx.commit(&p, None, json!([put("blob", "at", at)])).await?)?;
    let m = cx.manifest(&p, &c).await?;
    check!(
        m.first().map(|e| e.3) == Some(MAX_CANONICAL as u64),
        "a definition of exactly 1 MiB must be stored with size {MAX_CANONICAL}: {m:?}"
    );
    Ok(())
}
