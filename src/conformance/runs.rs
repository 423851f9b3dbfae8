//! Run reports (contract v1.2, optional): a platform that offers `POST /runs` stores a valid
//! report and refuses a bad one; one that does not offer it answers 404 or 405, and the rule is
//! skipped, not failed.

use serde_json::json;

use super::context::Cx;
use super::{Outcome, Verdict, check};

pub async fn report(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    let path = format!("/v1/projects/{p}/runs");
    let report = json!({
        "command": "pull", "outcome": "conflict", "git_commit": "0123abc", "platform_commit": null,
        "conflicts": [{"kind": "workflow", "name": "a b/ü", "git": {"n": 1}, "platform": null}],
        "deferred": [{"kind": "workflow", "name": "other"}]
    });
    let a = cx.post(&path, &report).await?;
    if matches!(a.status, 404 | 405) {
        return Err(Verdict::Skip(format!(
            "the platform does not take run reports ({}): they are optional in contract v1.2",
            a.summary()
        )));
    }
    a.expect(201, "POST /runs with a valid report")?;
    let bad = json!({"command": "pull", "outcome": "conflict",
                     "conflicts": [{"kind": "Not A Kind", "name": "x", "git": null, "platform": null}]});
    let a = cx.post(&path, &bad).await?;
    check!(a.status == 422, "a report whose conflict has an invalid kind must be 422 invalid, got {}", a.summary());
    super::context::check_error_shape(&a)?;
    let missing = format!("{}-missing", cx.scratch_prefix());
    let a = cx.post(&format!("/v1/projects/{missing}/runs"), &report).await?;
    check!(a.status == 404, "a report for an unknown project must be 404, got {}", a.summary());
    Ok(())
}
