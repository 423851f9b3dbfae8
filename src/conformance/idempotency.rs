//! The `Idempotency-Key` header: a retry of the same body returns the first 201; another body is
//! refused; an answer other than 201 is not stored.

use reqwest::Method;
use serde_json::{Value, json};

use super::context::{Answer, Auth, Cx, put};
use super::{Outcome, check};

async fn post_with_key(cx: &Cx, p: &str, key: &str, body: &[u8]) -> Result<Answer, super::Verdict> {
    cx.send(
        Method::POST,
        &format!("/v1/projects/{p}/commits"),
        Auth::Key,
        &[("idempotency-key", key)],
        Some(body.to_vec()),
    )
    .await
}

fn key(cx: &Cx, n: u32) -> String {
    format!("{}-key-{n}-{:016x}", cx.scratch_prefix(), rand::random::<u64>())
}

fn body(parent: Option<&str>, changes: Value) -> Vec<u8> {
    json!({"parent": parent, "message": "idempotent", "origin": {"type": "api"}, "changes": changes})
        .to_string()
        .into_bytes()
}

pub async fn replay(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let k = key(cx, 1);
    let b = body(None, json!([put("workflow", "w", json!(1))]));
    let first = post_with_key(cx, &p, &k, &b).await?;
    first.expect(201, "a first commit with an Idempotency-Key")?;
    for _ in 0..2 {
        let again = post_with_key(cx, &p, &k, &b).await?;
        again.expect(201, "the same Idempotency-Key and body again")?;
        check!(
            again.json == first.json,
            "the retry must answer the first 201's commit: first {}, retry {}",
            first.text,
            again.text
        );
    }
    let a = cx.get(&format!("/v1/projects/{p}/commits")).await?;
    a.expect(200, "list the commits")?;
    let n = a.json.get("commits").and_then(Value::as_array).map_or(0, Vec::len);
    check!(n == 1, "retries with one Idempotency-Key must write one commit, not {n}: {}", a.summary());
    Ok(())
}

pub async fn reused(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let k = key(cx, 2);
    let first = post_with_key(cx, &p, &k, &body(None, json!([put("workflow", "w", json!(1))]))).await?;
    first.expect(201, "a first commit with an Idempotency-Key")?;
    let id = Cx::id(&first.json)?;
    let other = body(Some(&id), json!([put("workflow", "w", json!(2))]));
    let a = post_with_key(cx, &p, &k, &other).await?;
    a.expect_error(422, "idempotency_key_reused", "the same Idempotency-Key with another body")?;
    check!(cx.head(&p).await?.as_deref() == Some(id.as_str()), "a refused commit moved the head");
    Ok(())
}

pub async fn failure_not_stored(cx: &Cx) -> Outcome {
    // A 404 (no project yet) with a key, then the same key and body once the project exists.
    let p = format!("{}-later", cx.scratch_prefix());
    let k = key(cx, 3);
    let b = body(None, json!([put("workflow", "w", json!(1))]));
    post_with_key(cx, &p, &k, &b).await?.expect(404, "a commit to a project that does not exist yet")?;
    let created = cx
        .send(
            Method::PUT,
            &format!("/v1/projects/{p}"),
            Auth::Key,
            &[],
            Some(
                json!({"name": format!("defsync conformance scratch project {p} (safe to delete)")})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await?;
    check!(created.status == 201 || created.status == 200, "cannot create a scratch project: {}", created.summary());
    let a = post_with_key(cx, &p, &k, &b).await?;
    a.expect(201, "the same Idempotency-Key and body after a 404: a 404 must not be stored")?;
    let id = Cx::id(&a.json)?;

    // A 422 with a key, then the same key with a good body: the 422 must not hold the key.
    let k = key(cx, 4);
    let bad = body(Some(&id), json!([put("Bad Kind", "x", json!(1))]));
    post_with_key(cx, &p, &k, &bad).await?.expect(422, "an invalid commit with an Idempotency-Key")?;
    let good = body(Some(&id), json!([put("workflow", "w", json!(2))]));
    let a = post_with_key(cx, &p, &k, &good).await?;
    a.expect(201, "the key of a refused (422) commit used again with a good body: a 422 must not be stored")?;

    // A 409 with a key, then the same key with the parent brought up to date.
    let k = key(cx, 5);
    let stale = body(Some(&id), json!([put("workflow", "w", json!(3))]));
    post_with_key(cx, &p, &k, &stale).await?.expect(409, "a commit on a stale parent")?;
    let fresh_parent = Cx::id(&a.json)?;
    let fixed = body(Some(&fresh_parent), json!([put("workflow", "w", json!(3))]));
    let a = post_with_key(cx, &p, &k, &fixed).await?;
    a.expect(201, "the key of a refused (409) commit used again on the current head: a 409 must not be stored")?;
    Ok(())
}
