//! API keys kept in the store, each with a scope (`read` or `write`), an optional list of the
//! projects it may use, and an optional expiry. `defsync serve keys` manages them.
//!
//! A key is 32 random bytes, shown once when it is created. The store keeps only its SHA-256:
//! the keys are random, so a slow password hash would add nothing but latency to every request.

use std::fmt;

use base64::Engine as _;
use rand::Rng as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{R, Store, clock, invalid, not_found, validate_project_id};
use crate::api::ApiError;

/// Every stored key starts with this, so a leaked one is recognisable by secret scanners.
pub const KEY_PREFIX: &str = "dsk_";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyScope {
    /// Every `GET`, and batch-get.
    Read,
    /// Everything, within its projects.
    Write,
}

impl KeyScope {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Read => "read",
            KeyScope::Write => "write",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(KeyScope::Read),
            "write" => Ok(KeyScope::Write),
            other => Err(format!("unknown key scope {other:?}: use read or write")),
        }
    }
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// Unique among the store's keys, revoked ones included, so the log of who did what stays
    /// unambiguous.
    pub name: String,
    pub scope: KeyScope,
    /// `None`: every project.
    pub projects: Option<Vec<String>>,
    /// Unix seconds after which the key is refused.
    pub expires_unix: Option<i64>,
}

/// A stored key, without its secret (which the store does not have).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredKey {
    pub name: String,
    pub scope: KeyScope,
    pub projects: Option<Vec<String>>,
    pub expires_at: Option<String>,
    #[serde(skip)]
    pub expires_unix: Option<i64>,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// The first characters of the secret, to tell keys apart (`dsk_AbCd…`).
    pub hint: String,
}

/// What a request asks of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl StoredKey {
    /// Whether this key may have `access` to `project` at `now` (Unix seconds); the refusal is
    /// the contract's 401 (expired or revoked: the platform no longer knows it) or 403.
    pub fn authorize(&self, project: Option<&str>, access: Access, now: i64) -> Result<(), ApiError> {
        if self.revoked_at.is_some() {
            return Err(ApiError::new(401, "unauthorized", "this API key was revoked: ask for a new one"));
        }
        if let (Some(until), Some(at)) = (self.expires_unix, &self.expires_at)
            && now >= until
        {
            return Err(ApiError::new(401, "unauthorized", format!("this API key expired at {at}: ask for a new one")));
        }
        if access == Access::Write && self.scope == KeyScope::Read {
            return Err(ApiError::new(
                403,
                "forbidden",
                format!("the API key {:?} is read-only: use a key with the write scope to change anything", self.name),
            ));
        }
        if let (Some(allowed), Some(project)) = (&self.projects, project)
            && !allowed.iter().any(|p| p == project)
        {
            return Err(ApiError::new(
                403,
                "forbidden",
                format!(
                    "the API key {:?} may not use project {project:?}: it is limited to {}",
                    self.name,
                    allowed.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// The stored hash of a secret.
pub fn key_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Checks a new key's fields; the name is shown in logs and errors, so it stays printable.
pub fn validate_new_key(new: &NewKey) -> R<()> {
    let name_ok = (1..=100).contains(&new.name.chars().count())
        && new.name.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | ' '));
    if !name_ok {
        return Err(invalid(format!(
            "key name {:?} is not valid: use 1 to 100 letters, digits, spaces, '.', '_' or '-'",
            new.name
        )));
    }
    if let Some(projects) = &new.projects {
        if projects.is_empty() {
            return Err(invalid("a key's project list, when given, names at least one project"));
        }
        for p in projects {
            validate_project_id(p).map_err(invalid)?;
        }
    }
    Ok(())
}

/// The columns of [`StoredKey`], in the order of [`key_of`], for both backends.
pub(super) const KEY_COLUMNS: &str = "name, scope, projects, expires_unix, created_at, revoked_at, hint";

/// A stored key from the columns of [`KEY_COLUMNS`].
pub(super) fn key_of(
    name: String,
    scope: &str,
    projects: Option<String>,
    expires_unix: Option<i64>,
    created_at: String,
    revoked_at: Option<String>,
    hint: String,
) -> R<StoredKey> {
    Ok(StoredKey {
        name,
        scope: KeyScope::parse(scope).map_err(|e| super::stored("key scope", e))?,
        projects: projects
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|e| super::stored("key project list", e))?,
        expires_at: expires_unix.map(clock::rfc3339),
        expires_unix,
        created_at,
        revoked_at,
        hint,
    })
}

/// A new key's row.
pub(crate) struct KeyRow {
    pub name: String,
    pub hash: String,
    pub scope: &'static str,
    /// A JSON array, or `None` for every project.
    pub projects: Option<String>,
    pub expires_unix: Option<i64>,
    pub created_at: String,
    pub hint: String,
}

impl Store {
    /// Creates a key, and returns it with its secret: the only time the secret exists outside
    /// the client that receives it.
    pub fn create_key(&self, new: &NewKey) -> R<(StoredKey, String)> {
        validate_new_key(new)?;
        let secret = new_secret();
        let row = KeyRow {
            name: new.name.clone(),
            hash: key_hash(&secret),
            scope: new.scope.as_str(),
            projects: new.projects.as_ref().map(|p| serde_json::to_string(p).unwrap_or_default()),
            expires_unix: new.expires_unix,
            created_at: clock::now_rfc3339(),
            hint: format!("{}…", &secret[..KEY_PREFIX.len() + 4]),
        };
        let key = self.write(|tx| {
            if !tx.insert_key(&row)? {
                return Err(ApiError::new(
                    409,
                    "conflict",
                    format!("a key named {:?} exists already (perhaps revoked): choose another name", new.name),
                ));
            }
            tx.key_by_name(&new.name)?.ok_or_else(|| super::internal("the new key is missing from the store"))
        })?;
        Ok((key, secret))
    }

    /// Every key, revoked ones included, oldest first.
    pub fn keys(&self) -> R<Vec<StoredKey>> {
        self.read(|tx| tx.keys())
    }

    /// Revokes the key named `name`; revoking it again changes nothing.
    pub fn revoke_key(&self, name: &str) -> R<StoredKey> {
        let now = clock::now_rfc3339();
        self.write(|tx| {
            tx.revoke_key(name, &now)?;
            tx.key_by_name(name)?
                .ok_or_else(|| not_found(format!("no key named {name:?}: `defsync serve keys list` shows them")))
        })
    }

    /// The stored key whose secret is `secret`, revoked or expired ones included (so the answer
    /// can say why it is refused).
    pub fn key_by_secret(&self, secret: &str) -> R<Option<StoredKey>> {
        let hash = key_hash(secret);
        self.read(|tx| tx.key_by_hash(&hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{Scratch, on_both, on_both_scratch};

    fn new_key(name: &str, scope: KeyScope, projects: Option<&[&str]>) -> NewKey {
        NewKey {
            name: name.into(),
            scope,
            projects: projects.map(|p| p.iter().map(|s| s.to_string()).collect()),
            expires_unix: None,
        }
    }

    #[test]
    fn a_key_is_found_by_its_secret_only_and_its_secret_is_not_stored() {
        on_both_scratch(|scratch| {
            let s = scratch.open();
            let (key, secret) = s.create_key(&new_key("ci", KeyScope::Write, None)).unwrap();
            assert!(secret.starts_with(KEY_PREFIX) && secret.len() == KEY_PREFIX.len() + 43, "{secret}");
            assert!(secret.starts_with(key.hint.trim_end_matches('…')));
            assert_eq!(s.key_by_secret(&secret).unwrap(), Some(key.clone()));
            assert_eq!(s.key_by_secret(&format!("{secret}x")).unwrap(), None);
            assert_eq!(s.keys().unwrap(), vec![key]);
            let needle = &secret[KEY_PREFIX.len()..];
            match scratch {
                Scratch::Sqlite(dir) => {
                    drop(s);
                    let raw = std::fs::read(dir.path().join("nested/store.db")).unwrap();
                    let needle = needle.as_bytes();
                    assert!(!raw.windows(needle.len()).any(|w| w == needle), "the secret is in the store file");
                }
                Scratch::Postgres { .. } => {
                    // No column of the key's row holds the secret, or any 16 characters of it.
                    let probe = &needle[4..20];
                    let sql = format!(
                        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM api_keys WHERE strpos(api_keys::text, '{probe}') > 0)
                         THEN RAISE EXCEPTION 'the secret is in the store'; END IF; END $$"
                    );
                    s.execute_for_test(&sql);
                }
            }
        });
    }

    #[test]
    fn names_are_unique_and_checked() {
        on_both(|s| {
            s.create_key(&new_key("ci", KeyScope::Read, None)).unwrap();
            let e = s.create_key(&new_key("ci", KeyScope::Write, None)).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (409, "conflict"), "{e:?}");
            s.revoke_key("ci").unwrap();
            assert_eq!(s.create_key(&new_key("ci", KeyScope::Write, None)).unwrap_err().status, 409);
            for bad in ["", "a/b", "line\nbreak"] {
                assert_eq!(s.create_key(&new_key(bad, KeyScope::Read, None)).unwrap_err().status, 422, "{bad:?}");
            }
            assert_eq!(s.create_key(&new_key("p", KeyScope::Read, Some(&[]))).unwrap_err().status, 422);
            assert_eq!(s.create_key(&new_key("p", KeyScope::Read, Some(&["a b"]))).unwrap_err().status, 422);
        });
    }

    #[test]
    fn scope_projects_expiry_and_revocation_are_enforced() {
        on_both(|s| {
            let (reader, _) = s.create_key(&new_key("reader", KeyScope::Read, Some(&["p1", "p2"]))).unwrap();
            assert_eq!(reader.authorize(Some("p1"), Access::Read, 0), Ok(()));
            assert_eq!(reader.authorize(None, Access::Read, 0), Ok(()));
            let e = reader.authorize(Some("p1"), Access::Write, 0).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (403, "forbidden"));
            assert!(e.message.contains("read-only"), "{}", e.message);
            let e = reader.authorize(Some("p3"), Access::Read, 0).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (403, "forbidden"));
            assert!(e.message.contains("\"p3\"") && e.message.contains("\"p1\", \"p2\""), "{}", e.message);

            let mut expiring = new_key("temp", KeyScope::Write, None);
            expiring.expires_unix = Some(1_000);
            let (temp, secret) = s.create_key(&expiring).unwrap();
            assert_eq!(temp.authorize(Some("p9"), Access::Write, 999), Ok(()));
            let e = temp.authorize(Some("p9"), Access::Write, 1_000).unwrap_err();
            assert_eq!(e.status, 401);
            assert!(e.message.contains("1970-01-01T00:16:40Z"), "{}", e.message);

            let revoked = s.revoke_key("temp").unwrap();
            assert!(revoked.revoked_at.is_some());
            assert_eq!(s.revoke_key("temp").unwrap().revoked_at, revoked.revoked_at, "revoking twice changes nothing");
            let found = s.key_by_secret(&secret).unwrap().unwrap();
            assert_eq!(found.authorize(Some("p9"), Access::Read, 0).unwrap_err().status, 401);
            assert_eq!(s.revoke_key("nobody").unwrap_err().status, 404);
        });
    }
}
