//! Robustness: no authenticated request is ever answered with a redirect, which a client that
//! followed it would send the key along with.

use reqwest::Method;

use super::context::{Auth, Cx};
use super::{Outcome, check};

pub async fn no_redirect(cx: &Cx) -> Outcome {
    let p = cx.project().await?;
    // Paths that web frameworks like to "fix" with a redirect.
    let probes = [
        (Method::GET, "/".to_owned()),
        (Method::GET, "/v1".to_owned()),
        (Method::GET, "/v1/".to_owned()),
        (Method::GET, format!("/v1/projects/{p}/")),
        (Method::GET, format!("/v1/projects//{p}")),
        (Method::GET, format!("/v1/projects/{p}/commits/")),
        (Method::GET, format!("/v1/projects/{p}/sync/base/")),
        (Method::GET, format!("/V1/projects/{p}")),
        (Method::POST, format!("/v1/projects/{p}/commits/")),
        (Method::POST, format!("/v1/projects/{p}/objects/batch-get/")),
    ];
    for (method, path) in probes {
        let body = (method == Method::POST).then(|| b"{}".to_vec());
        cx.send(method, &path, Auth::Key, &[], body).await?;
    }
    let redirects = cx.redirects();
    check!(
        redirects.is_empty(),
        "{} authenticated request(s) in this run were answered with a redirect: {}",
        redirects.len(),
        redirects.join("; ")
    );
    Ok(())
}
