//! Authentication and the error body: every request carries a key, and every error answer has
//! the contract's form.

use reqwest::Method;
use serde_json::{Value, json};

use super::context::{Auth, Cx, Request, check_error_shape, put};
use super::{Outcome, check};

/// Every endpoint, once without a key (or with `auth`), must be 401 and write nothing.
async fn refused_everywhere(cx: &Cx, auth: Auth) -> Outcome {
    let p = cx.project().await?;
    let c = cx.commit(&p, None, json!([put("workflow", "w", json!(1))])).await?;
    let id = Cx::id(&c)?;
    let (_, tag) = cx.project_state(&p).await?;
    let tag = tag.unwrap_or_else(|| "\"none\"".into());
    let fresh = format!("{}-never", cx.scratch_prefix());
    let commit_body = json!({"parent": id, "message": "m", "origin": {"type": "dashboard"},
        "changes": [put("workflow", "w", json!(2))]});
    let sync_body = json!({"repository": "a/b", "ref": "refs/heads/main", "path": ".", "direction": "bidirectional",
        "base": []});
    let requests: Vec<Request> = vec![
        (Method::GET, format!("/v1/projects/{p}"), None, vec![]),
        (Method::GET, format!("/v1/projects/{p}/sync/base"), None, vec![]),
        (Method::GET, format!("/v1/projects/{p}/commits"), None, vec![]),
        (Method::GET, format!("/v1/projects/{p}/commits/{id}"), None, vec![]),
        (Method::GET, format!("/v1/projects/{p}/commits/{id}/manifest"), None, vec![]),
        (
            Method::POST,
            format!("/v1/projects/{p}/objects/batch-get"),
            Some(json!({"digests": []}).to_string().into_bytes()),
            vec![],
        ),
        (Method::POST, format!("/v1/projects/{p}/commits"), Some(commit_body.to_string().into_bytes()), vec![]),
        (
            Method::PUT,
            format!("/v1/projects/{p}/sync"),
            Some(sync_body.to_string().into_bytes()),
            vec![("if-match", tag.as_str())],
        ),
        (
            Method::PUT,
            format!("/v1/projects/{fresh}"),
            Some(json!({"name": "must not exist"}).to_string().into_bytes()),
            vec![],
        ),
    ];
    for (method, path, body, headers) in requests {
        let a = cx.send(method, &path, auth, &headers, body).await?;
        a.expect_error(401, "unauthorized", "a request without a valid key")?;
    }
    let (after, tag_after) = cx.project_state(&p).await?;
    check!(
        after.pointer("/head/id").and_then(Value::as_str) == Some(id.as_str()),
        "a refused commit moved the head: {after}"
    );
    check!(after.get("sync").is_none_or(Value::is_null), "a refused PUT /sync wrote the record: {after}");
    check!(tag_after.unwrap_or_else(|| "\"none\"".into()) == tag, "a refused PUT /sync changed the ETag");
    let a = cx.get(&format!("/v1/projects/{fresh}")).await?;
    a.expect_error(404, "not_found", "a project created without a valid key must not exist")?;
    Ok(())
}

pub async fn no_key(cx: &Cx) -> Outcome {
    refused_everywhere(cx, Auth::None).await
}

pub async fn wrong_key(cx: &Cx) -> Outcome {
    refused_everywhere(cx, Auth::Wrong).await
}

/// Error answers of several kinds, each checked for the contract's body.
pub async fn error_shape(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let mut answers = vec![
        cx.send(Method::GET, &format!("/v1/projects/{p}"), Auth::None, &[], None).await?,
        cx.get(&format!("/v1/projects/{p}/commits/c_nope")).await?,
        cx.try_commit(&p, None, json!([put("Bad Kind", "x", json!(1))])).await?,
    ];
    let c = cx.commit(&p, None, json!([put("workflow", "w", json!(1))])).await?;
    answers.push(cx.try_commit(&p, None, json!([put("workflow", "w", json!(2))])).await?);
    answers.push(
        cx.put_sync(
            &p,
            "\"stale\"",
            &json!({"repository": "a/b", "ref": "refs/heads/main", "path": ".",
        "direction": "bidirectional", "commit": Cx::id(&c)?, "base": []}),
        )
        .await?,
    );
    for a in &answers {
        check!(a.status >= 400, "expected an error answer, got {}", a.summary());
        check_error_shape(a)?;
    }
    Ok(())
}
