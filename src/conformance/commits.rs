//! Creating commits: 201 and chaining, the 404s, `head_moved`, the kinds of 422 and atomicity.

use reqwest::Method;
use serde_json::{Value, json};

use super::context::{Auth, Cx, Request, delete, expect_details_name, put};
use super::{Outcome, check};

pub const REPOSITORY: &str = "example/conformance";
pub const REF: &str = "refs/heads/main";
pub const PATH: &str = "defs";

/// A `git` origin as a push sends it.
pub fn git_origin(repository: &str, git_ref: &str, path: &str) -> Value {
    json!({"type": "git", "repository": repository, "ref": git_ref, "path": path,
        "git_commit": "3f1c0e5ad2b0a4e7c9b1f0a3d5e7c9b1f0a3d5e7", "run_url": "https://ci.example/runs/1"})
}

pub async fn not_found(cx: &Cx) -> Outcome {
    let missing = format!("{}-missing", cx.scratch_prefix());
    let batch = Some(json!({"digests": []}).to_string().into_bytes());
    let commit = Some(
        json!({"parent": null, "message": "m", "origin": {"type": "dashboard"},
            "changes": [put("workflow", "w", json!(1))]})
        .to_string()
        .into_bytes(),
    );
    let sync = Some(
        json!({"repository": REPOSITORY, "ref": REF, "path": PATH, "direction": "bidirectional", "base": []})
            .to_string()
            .into_bytes(),
    );
    let on_missing_project: Vec<Request> = vec![
        (Method::GET, format!("/v1/projects/{missing}"), None, vec![]),
        (Method::GET, format!("/v1/projects/{missing}/sync/base"), None, vec![]),
        (Method::GET, format!("/v1/projects/{missing}/commits"), None, vec![]),
        (Method::GET, format!("/v1/projects/{missing}/commits/c_missing"), None, vec![]),
        (Method::GET, format!("/v1/projects/{missing}/commits/c_missing/manifest"), None, vec![]),
        (Method::POST, format!("/v1/projects/{missing}/objects/batch-get"), batch, vec![]),
        (Method::POST, format!("/v1/projects/{missing}/commits"), commit, vec![]),
        (Method::PUT, format!("/v1/projects/{missing}/sync"), sync, vec![("if-match", "\"none\"")]),
    ];
    for (method, path, body, headers) in on_missing_project {
        cx.send(method, &path, Auth::Key, &headers, body).await?.expect_error(404, "not_found", "no such project")?;
    }
    let p = cx.project().await?;
    cx.commit(&p, None, json!([put("workflow", "w", json!(1))])).await?;
    for path in [format!("/v1/projects/{p}/commits/c_missing"), format!("/v1/projects/{p}/commits/c_missing/manifest")]
    {
        cx.get(&path).await?.expect_error(404, "not_found", "no such commit")?;
    }
    Ok(())
}

pub async fn create(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let (before, _) = cx.project_state(&p).await?;
    check!(before.get("id").and_then(Value::as_str) == Some(p.as_str()), "GET the project: \"id\" is not {p:?}");
    check!(before.get("name").is_some_and(Value::is_string), "GET the project: no string \"name\"");
    check!(before.get("head").is_some_and(Value::is_null), "a new project's head must be null: {before}");
    check!(before.get("sync").is_some_and(Value::is_null), "a new project's sync must be null: {before}");
    let body = json!({"parent": null, "message": "first commit", "origin": {"type": "api"},
        "changes": [put("workflow", "w", json!({"a": 1}))]});
    let a = cx.post(&format!("/v1/projects/{p}/commits"), &body).await?;
    a.expect(201, "the first commit, with parent null")?;
    let c = &a.json;
    check!(c.get("id").and_then(Value::as_str).is_some_and(|s| !s.is_empty()), "the commit has no \"id\": {c}");
    check!(c.get("seq").and_then(Value::as_u64) == Some(1), "the first commit's seq must be 1: {c}");
    check!(c.get("parent").is_some_and(Value::is_null), "the first commit's parent must be null: {c}");
    check!(c.get("message").and_then(Value::as_str) == Some("first commit"), "the message was not kept: {c}");
    check!(c.pointer("/origin/type").and_then(Value::as_str) == Some("api"), "the origin was not kept: {c}");
    check!(c.get("created_at").is_some_and(Value::is_string), "the commit has no \"created_at\" string: {c}");
    Ok(())
}

pub async fn chain(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let mut parent: Option<String> = None;
    for i in 1..=3u64 {
        let c = cx.commit(&p, parent.as_deref(), json!([put("workflow", "w", json!(i))])).await?;
        let id = Cx::id(&c)?;
        check!(c.get("seq").and_then(Value::as_u64) == Some(i), "commit {i} must have seq {i}: {c}");
        check!(
            c.get("parent").and_then(Value::as_str) == parent.as_deref(),
            "commit {i} must have the parent sent ({parent:?}): {c}"
        );
        let (state, _) = cx.project_state(&p).await?;
        check!(state.get("head") == Some(&c), "the project's head is not the commit just made: {state} vs {c}");
        parent = Some(id);
    }
    Ok(())
}

pub async fn head_moved(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let c1 = Cx::id(&cx.commit(&p, None, json!([put("workflow", "w", json!(1))])).await?)?;
    let c2 = cx.commit(&p, Some(&c1), json!([put("workflow", "w", json!(2))])).await?;
    let c2id = Cx::id(&c2)?;
    for stale in [Some(c1.as_str()), None, Some("c_not_a_commit")] {
        let a =
            cx.try_commit(&p, stale, json!([put("workflow", "w", json!(3)), put("workflow", "x", json!(3))])).await?;
        a.expect_error(409, "head_moved", &format!("a commit on parent {stale:?} while the head is {c2id}"))?;
        let head = a.json.pointer("/error/head");
        check!(
            head.and_then(|h| h.get("id")).and_then(Value::as_str) == Some(c2id.as_str()),
            "409 head_moved must carry \"head\": the current head commit ({c2id}): {}",
            a.summary()
        );
        check!(head == Some(&c2), "the \"head\" of 409 head_moved is not the head commit as created: {}", a.summary());
    }
    check!(cx.head(&p).await?.as_deref() == Some(c2id.as_str()), "a refused commit moved the head");
    let m = cx.manifest(&p, &c2id).await?;
    check!(m.len() == 1 && m[0].1 == "w", "a refused commit changed the head's manifest: {m:?}");
    Ok(())
}

/// One commit that must be 422 `invalid` with details naming `(kind, name)`.
pub async fn expect_invalid(cx: &Cx, p: &str, parent: Option<&str>, change: Value, kind: &str, name: &str) -> Outcome {
    let a = cx.try_commit(p, parent, json!([change])).await?;
    a.expect_error(422, "invalid", &format!("a change to {{kind {kind:?}, name {name:?}}} that breaks part 1"))?;
    expect_details_name(&a, kind, name)
}

pub async fn invalid_key(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    expect_invalid(cx, &p, None, put("Workflow", "w", json!(1)), "Workflow", "w").await?;
    expect_invalid(cx, &p, None, put("workflow", " w", json!(1)), "workflow", " w").await?;
    check!(cx.head(&p).await?.is_none(), "a refused commit made a head");
    Ok(())
}

pub async fn invalid_spec(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    expect_invalid(cx, &p, None, put("workflow", "big", json!(9_007_199_254_740_992u64)), "workflow", "big").await?;
    check!(cx.head(&p).await?.is_none(), "a refused commit made a head");
    Ok(())
}

pub async fn invalid_delete(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let c = Cx::id(&cx.commit(&p, None, json!([put("workflow", "w", json!(1))])).await?)?;
    expect_invalid(cx, &p, Some(&c), delete("workflow", "not-there"), "workflow", "not-there").await?;
    check!(cx.head(&p).await?.as_deref() == Some(c.as_str()), "a refused commit moved the head");
    Ok(())
}

pub async fn empty_commit(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let c = Cx::id(&cx.commit(&p, None, json!([put("workflow", "w", json!({"a": [1, 2]}))])).await?)?;
    // The same definition again, written another way (1.0 for 1): the same digest.
    let a = cx.try_commit(&p, Some(&c), json!([put("workflow", "w", json!({"a": [1.0, 2]}))])).await?;
    a.expect_error(422, "empty_commit", "a put of a definition as it already is")?;
    let a = cx.try_commit(&p, Some(&c), json!([])).await?;
    a.expect_error(422, "empty_commit", "a commit with no changes")?;
    check!(cx.head(&p).await?.as_deref() == Some(c.as_str()), "an empty commit moved the head");
    Ok(())
}

pub async fn link_mismatch(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let c = Cx::id(&cx.commit(&p, None, json!([put("workflow", "w", json!(1))])).await?)?;
    let link = json!({"repository": REPOSITORY, "ref": REF, "path": PATH, "direction": "bidirectional",
        "commit": c, "git_commit": "3f1c0e5ad2b0a4e7c9b1f0a3d5e7c9b1f0a3d5e7", "replace_base": true, "base": []});
    cx.put_sync(&p, "\"none\"", &link).await?.expect(200, "PUT /sync to link the project")?;
    for (repository, git_ref, path) in
        [("example/other", REF, PATH), (REPOSITORY, "refs/heads/other", PATH), (REPOSITORY, REF, "other")]
    {
        let body = json!({"parent": c, "message": "m", "origin": git_origin(repository, git_ref, path),
            "changes": [put("workflow", "w", json!(2))]});
        let a = cx.post(&format!("/v1/projects/{p}/commits"), &body).await?;
        a.expect_error(
            422,
            "link_mismatch",
            &format!(
                "a git commit from {repository} {git_ref} {path} while the record links {REPOSITORY} {REF} {PATH}"
            ),
        )?;
    }
    check!(cx.head(&p).await?.as_deref() == Some(c.as_str()), "a refused commit moved the head");
    let body = json!({"parent": c, "message": "m", "origin": git_origin(REPOSITORY, REF, PATH),
        "changes": [put("workflow", "w", json!(2))]});
    cx.post(&format!("/v1/projects/{p}/commits"), &body).await?.expect(201, "a git commit from the linked branch")?;
    Ok(())
}

pub async fn atomic(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let c =
        Cx::id(&cx.commit(&p, None, json!([put("workflow", "a", json!(1)), put("workflow", "b", json!(1))])).await?)?;
    let before = cx.manifest(&p, &c).await?;
    let bad_last = [
        json!([
            put("workflow", "a", json!(2)),
            delete("workflow", "b"),
            put("workflow", "c", json!(1)),
            put("Bad Kind", "x", json!(1))
        ]),
        json!([put("workflow", "a", json!(2)), put("workflow", "c", json!(1)), delete("workflow", "missing")]),
        json!([put("workflow", "c", json!(1)), put("workflow", "a", json!(9_007_199_254_740_992u64))]),
    ];
    for changes in bad_last {
        let a = cx.try_commit(&p, Some(&c), changes).await?;
        a.expect_error(422, "invalid", "a commit with one bad change among good ones")?;
        check!(cx.head(&p).await?.as_deref() == Some(c.as_str()), "a refused commit moved the head");
        let after = cx.manifest(&p, &c).await?;
        check!(after == before, "a refused commit changed the head's manifest: {before:?} became {after:?}");
    }
    let c2 = cx.commit(&p, Some(&c), json!([put("workflow", "c", json!(1))])).await?;
    check!(
        c2.get("seq").and_then(Value::as_u64) == Some(2),
        "after refused commits, the next one must have seq 2: {c2}"
    );
    let m = cx.manifest(&p, &Cx::id(&c2)?).await?;
    let names: Vec<&str> = m.iter().map(|e| e.1.as_str()).collect();
    check!(names == ["a", "b", "c"], "a refused commit left something behind: the next manifest is {m:?}");
    check!(m[0].2 == before[0].2, "a refused commit changed workflow/a: {m:?}");
    Ok(())
}
