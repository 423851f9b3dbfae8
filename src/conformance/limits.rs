//! Body limits: at least 64 MiB accepted, and 413 `payload_too_large` beyond the server's own
//! limit, found by probing upward.

use reqwest::Method;
use serde_json::{Value, json};

use super::context::{Auth, Cx, check_error_shape, put};
use super::reads::BIG_SPEC_BYTES;
use super::{Outcome, Verdict, check};

const MIB: u64 = 1024 * 1024;

pub async fn body_64mib(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let spec = json!("x".repeat(BIG_SPEC_BYTES));
    // 65 definitions of about 1 MB: a body just over 64 MiB.
    let changes: Vec<Value> = (0..65).map(|i| put("blob", &format!("big-{i:02}"), spec.clone())).collect();
    let body = json!({"parent": null, "message": "defsync conformance: 64 MiB", "origin": {"type": "api"}, "changes": changes})
        .to_string()
        .into_bytes();
    check!(body.len() as u64 > 64 * MIB, "the checker built a body of only {} bytes", body.len());
    let a = cx.send(Method::POST, &format!("/v1/projects/{p}/commits"), Auth::Key, &[], Some(body)).await?;
    a.expect(201, "a commit body of more than 64 MiB, which every platform must accept")?;
    let m = cx.manifest(&p, &Cx::id(&a.json)?).await?;
    check!(m.len() == 65, "the 64 MiB commit must hold its 65 definitions, not {}", m.len());
    cx.set_big_project(p, m.into_iter().map(|e| e.2).collect());
    Ok(())
}

/// A commit body of exactly `size` bytes whose one definition is over 1 MiB: a server that
/// takes the size answers 422 and writes nothing.
fn probe_body(size: u64) -> Vec<u8> {
    let head = br#"{"parent":null,"message":"defsync conformance: size probe","origin":{"type":"api"},"changes":[{"op":"put","kind":"blob","name":"size-probe","spec":""#;
    let tail = br#""}]}"#;
    let mut body = Vec::with_capacity(size as usize);
    body.extend_from_slice(head);
    body.resize(size as usize - tail.len(), b'x');
    body.extend_from_slice(tail);
    body
}

pub async fn body_413(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let mut size = 72 * MIB;
    let mut accepted = 64 * MIB;
    loop {
        if size > cx.max_body() {
            return Err(Verdict::Skip(format!(
                "the server took bodies up to {} MiB without a 413; raise --max-body (now {} MiB) to probe further",
                accepted / MIB,
                cx.max_body() / MIB
            )));
        }
        // A server may answer 413 and close the connection before it reads the body; the client,
        // still writing, can then see the connection broken instead of the answer (HTTP/1.1
        // allows both sides this race). The same probe is sent again, at most three times.
        let mut tries = 1;
        let a = loop {
            match cx
                .send(Method::POST, &format!("/v1/projects/{p}/commits"), Auth::Key, &[], Some(probe_body(size)))
                .await
            {
                Ok(a) => break a,
                Err(Verdict::Fail(_)) if tries < 3 => tries += 1,
                Err(e) => return Err(e),
            }
        };
        if a.status == 413 {
            check!(a.code() == Some("payload_too_large"), "413 must carry the code payload_too_large: {}", a.summary());
            check_error_shape(&a)?;
            cx.note(format!("the server's limit is between {} and {} MiB", accepted / MIB, size / MIB));
            break;
        }
        check!(
            a.status == 422,
            "a {} MiB body with one definition over 1 MiB must be 413 (over the limit) or 422 invalid, not {}",
            size / MIB,
            a.summary()
        );
        accepted = size;
        size = if size < 128 * MIB { size + 32 * MIB } else { size * 2 };
    }
    check!(cx.head(&p).await?.is_none(), "a size probe made a commit");
    Ok(())
}
