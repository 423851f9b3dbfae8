//! The platform a run talks to: a remote one over HTTP, or the embedded SQLite store opened
//! in-process. Both give the same answers, because the server is a thin layer over the store.

use std::path::PathBuf;

use crate::api::client::{ClientOptions, HttpClient};
use crate::api::{
    ApiError, Base, BatchGetResponse, Commit, Commits, CreateCommit, ETag, Manifest, Project, PutSync, SyncRecord,
};
use crate::digest::Digest;
use crate::engine::state::{BaseMap, ManifestMap};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The platform answered with an error status.
    #[error("{0}{hint}", hint = hint(.0))]
    Api(ApiError),
    /// The platform could not be reached, or did not answer in time, after every retry.
    #[error("{0}")]
    Transport(String),
    /// The platform answered with data that breaks the contract.
    #[error("the platform sent invalid data: {0}")]
    Invalid(String),
    /// The platform sent definitions that break contract part 1 in a way that stops the whole
    /// answer from being read (nested beyond any limit): exit 4, like an invalid definition.
    #[error("the platform sent an invalid definition: {0}")]
    InvalidDefinition(String),
}

impl From<ApiError> for PlatformError {
    fn from(e: ApiError) -> Self {
        PlatformError::Api(e)
    }
}

impl PlatformError {
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            PlatformError::Api(e) => Some(e),
            _ => None,
        }
    }
}

/// What to do next, for the statuses a person can act on.
fn hint(e: &ApiError) -> &'static str {
    match e.status {
        401 => " (check the API key: DEFSYNC_API_KEY or the action's api-key input)",
        403 => {
            " (the API key may not do this here: push and pull need a key with write access to this project, \
             while a read-only key is enough for status and dry runs)"
        }
        404 if e.code == "not_found" => " (check the project ID and the platform URL)",
        413 => " (the request is over the platform's size limit)",
        _ => "",
    }
}

pub type Result<T> = std::result::Result<T, PlatformError>;

/// Where a platform is: an `http(s)://` URL, or the path of an embedded store.
#[derive(Debug, Clone)]
pub enum Location {
    Url(String),
    Store(PathBuf),
}

impl Location {
    /// An `http(s)://` URL (the scheme in any case), or a store path. Any other `scheme://` is a
    /// mistake, never a path: `HTTPS:/x` must not become a file.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let scheme = s.split_once("://").filter(|(scheme, _)| {
            scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        });
        match scheme {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => {
                let scheme = scheme.to_ascii_lowercase();
                Ok(Location::Url(format!("{scheme}://{}", rest.trim_end_matches('/'))))
            }
            Some((scheme, _)) => Err(format!(
                "--platform has the scheme {scheme:?}: give an http:// or https:// URL, or the path of a store"
            )),
            None => Ok(Location::Store(PathBuf::from(s))),
        }
    }
}

pub enum Platform {
    Http(HttpClient),
    Embedded(Store),
}

impl Platform {
    pub fn open(location: &Location, options: ClientOptions) -> anyhow::Result<Self> {
        Ok(match location {
            Location::Url(url) => Platform::Http(HttpClient::new(url, options)?),
            Location::Store(path) => Platform::Embedded(Store::open(path)?),
        })
    }

    /// HTTP requests sent so far (0 for the embedded store), for reports and benchmarks.
    pub fn requests(&self) -> u64 {
        match self {
            Platform::Http(c) => c.requests(),
            Platform::Embedded(_) => 0,
        }
    }

    pub async fn project(&self, project: &str) -> Result<(Project, ETag)> {
        match self {
            Platform::Http(c) => c.project(project).await,
            Platform::Embedded(s) => Ok(s.project(project)?),
        }
    }

    pub async fn put_project(&self, project: &str, name: &str) -> Result<(Project, bool)> {
        match self {
            Platform::Http(c) => c.put_project(project, name).await,
            Platform::Embedded(s) => Ok(s.put_project(project, name)?),
        }
    }

    pub async fn base(&self, project: &str) -> Result<(Base, ETag)> {
        match self {
            Platform::Http(c) => c.base(project).await,
            Platform::Embedded(s) => Ok(s.base(project)?),
        }
    }

    /// The base as the planner holds it: read straight into a map over HTTP, never as a list
    /// of 100,000 entries first.
    pub async fn base_map(&self, project: &str) -> Result<(BaseMap, ETag)> {
        match self {
            Platform::Http(c) => c.base_as(project).await,
            Platform::Embedded(s) => {
                let (base, etag) = s.base(project)?;
                Ok((BaseMap::from_entries(base.entries), etag))
            }
        }
    }

    /// A manifest as the planner holds it, read like [`Platform::base_map`].
    pub async fn manifest_map(&self, project: &str, commit: &str) -> Result<ManifestMap> {
        match self {
            Platform::Http(c) => c.manifest_as(project, commit).await,
            Platform::Embedded(s) => Ok(ManifestMap::from_manifest(s.manifest(project, commit)?)),
        }
    }

    pub async fn commits(&self, project: &str, after_seq: u64, limit: u32) -> Result<Commits> {
        match self {
            Platform::Http(c) => c.commits(project, after_seq, limit).await,
            Platform::Embedded(s) => Ok(s.commits(project, after_seq, limit)?),
        }
    }

    pub async fn commit(&self, project: &str, commit: &str) -> Result<Commit> {
        match self {
            Platform::Http(c) => c.commit(project, commit).await,
            Platform::Embedded(s) => Ok(s.commit(project, commit)?),
        }
    }

    pub async fn manifest(&self, project: &str, commit: &str) -> Result<Manifest> {
        match self {
            Platform::Http(c) => c.manifest(project, commit).await,
            Platform::Embedded(s) => Ok(s.manifest(project, commit)?),
        }
    }

    /// Fetches objects by digest, in batches the contract allows (the HTTP client splits them).
    pub async fn batch_get(&self, project: &str, digests: &[(Digest, u64)]) -> Result<BatchGetResponse> {
        match self {
            Platform::Http(c) => c.batch_get(project, digests).await,
            Platform::Embedded(s) => {
                // The same batches as over HTTP: the store enforces the contract's limits too.
                let mut all = BatchGetResponse { objects: Vec::new(), missing: Vec::new() };
                for batch in crate::api::client::batches(digests) {
                    let body =
                        serde_json::to_vec(&crate::api::BatchGetRequest { digests: batch }).expect("serialisable");
                    let part = s.batch_get(project, &body)?;
                    all.objects.extend(part.objects);
                    all.missing.extend(part.missing);
                }
                Ok(all)
            }
        }
    }

    /// Creates a commit. `idempotency_key` is sent on every attempt of the same planned commit.
    pub async fn create_commit(&self, project: &str, req: &CreateCommit, idempotency_key: &str) -> Result<Commit> {
        let body = to_json_exact(req);
        match self {
            Platform::Http(c) => c.create_commit(project, body, idempotency_key).await,
            Platform::Embedded(s) => Ok(s.create_commit(project, &body, Some(idempotency_key))?),
        }
    }

    /// Sends a run's report (contract v1.2). A platform without the endpoint answers 404 or
    /// 405, which the caller takes as "not supported".
    pub async fn post_run_report(&self, project: &str, report: &crate::api::RunReport) -> Result<()> {
        match self {
            Platform::Http(c) => c.post_run_report(project, serde_json::to_vec(report).expect("serialisable")).await,
            Platform::Embedded(s) => s.add_run_report(project, report).map(drop).map_err(Into::into),
        }
    }

    /// Sends `req`, which is dropped once serialised: a base of 100,000 entries is held once, as
    /// the body, while it is sent.
    pub async fn put_sync(&self, project: &str, if_match: &ETag, req: PutSync) -> Result<(SyncRecord, ETag)> {
        let body = to_json_exact(&req);
        drop(req);
        match self {
            Platform::Http(c) => c.put_sync(project, if_match, body).await,
            Platform::Embedded(s) => Ok(s.put_sync(project, Some(&if_match.0), &body)?),
        }
    }
}

/// `value` as JSON in a buffer of exactly its length. A body of 100,000 entries is tens of MiB,
/// and a buffer grown by doubling may hold nearly twice that.
fn to_json_exact<T: serde::Serialize>(value: &T) -> Vec<u8> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("serialisable");
    let mut body = Vec::with_capacity(count.0);
    serde_json::to_writer(&mut body, value).expect("serialisable");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_are_sized_exactly() {
        let value = serde_json::json!({"entries": (0..1000).map(|i| format!("entry {i}")).collect::<Vec<_>>()});
        let body = to_json_exact(&value);
        assert_eq!(body, serde_json::to_vec(&value).unwrap());
        assert_eq!(body.capacity(), body.len());
    }

    #[test]
    fn platform_schemes_are_http_or_https_in_any_case() {
        assert!(matches!(Location::parse("HTTPS://x.example/").unwrap(), Location::Url(u) if u == "https://x.example"));
        assert!(
            matches!(Location::parse("Http://127.0.0.1:1").unwrap(), Location::Url(u) if u == "http://127.0.0.1:1")
        );
        assert!(matches!(Location::parse("./store.db").unwrap(), Location::Store(_)));
        assert!(matches!(Location::parse("C:\\defsync\\store.db").unwrap(), Location::Store(_)));
        for bad in ["ftp://x", "htps://x", "file:///tmp/store.db"] {
            assert!(Location::parse(bad).unwrap_err().contains("http:// or https://"), "{bad}");
        }
    }
}
