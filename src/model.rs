//! Definitions, their keys, and the validation rules of contract part 1.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::{self, Digest};

/// The largest integer magnitude I-JSON allows (2^53 − 1).
pub const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;
/// The largest canonical form a definition may have (1 MiB).
pub const MAX_CANONICAL_BYTES: usize = 1024 * 1024;

/// A definition's identity within a project: `(kind, name)`.
///
/// Ordered by kind, then name, both by UTF-8 bytes, which is the manifest order of the contract.
/// A run holds three maps keyed by every definition (base, manifest, files): the kind is shared
/// ([`Kind`]) and the name kept at its length, so a key costs one small allocation, not two.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    pub kind: Kind,
    pub name: Box<str>,
}

impl Key {
    pub fn new(kind: impl AsRef<str>, name: impl Into<Box<str>>) -> Self {
        Key { kind: Kind::new(kind.as_ref()), name: name.into() }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:?}", self.kind, self.name)
    }
}

/// A definition kind: a string that every key of that kind shares. A project has a handful of
/// kinds and up to hundreds of thousands of keys; each key holds a reference, not a copy.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kind(Arc<str>);

impl Kind {
    /// The shared string for `kind`. Keys are mostly made in kind order (manifests, the base and
    /// sorted trees list one kind after another), so the last kind is tried before the table.
    pub fn new(kind: &str) -> Self {
        static KINDS: Mutex<BTreeSet<Arc<str>>> = Mutex::new(BTreeSet::new());
        thread_local! {
            static LAST: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
        }
        LAST.with_borrow_mut(|last| {
            if let Some(k) = last.as_ref().filter(|k| ***k == *kind) {
                return Kind(k.clone());
            }
            let mut kinds = KINDS.lock().unwrap_or_else(PoisonError::into_inner);
            let k = match kinds.get(kind) {
                Some(k) => k.clone(),
                None => {
                    let k: Arc<str> = Arc::from(kind);
                    kinds.insert(k.clone());
                    k
                }
            };
            *last = Some(k.clone());
            Kind(k)
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Kind {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for Kind {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let kind = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(Kind::new(&kind))
    }
}

/// One definition: what is synced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub spec: Value,
}

impl Definition {
    pub fn key(&self) -> Key {
        Key::new(&self.kind, self.name.as_str())
    }

    /// The RFC 8785 canonical form of `{"kind", "name", "spec"}`.
    pub fn canonical(&self) -> String {
        digest::canonical_definition(&self.kind, &self.name, &self.spec)
    }

    pub fn digest(&self) -> Digest {
        Digest::of_canonical(&self.canonical())
    }

    /// Checks every rule of contract part 1, returning the canonical form on success so callers
    /// do not serialise twice.
    pub fn validate(&self) -> Result<String, String> {
        validate_kind(&self.kind)?;
        validate_name(&self.name)?;
        validate_spec(&self.spec, 0)?;
        let canonical = self.canonical();
        if canonical.len() > MAX_CANONICAL_BYTES {
            return Err(format!(
                "the canonical form is {} bytes; at most {MAX_CANONICAL_BYTES} are allowed",
                canonical.len()
            ));
        }
        Ok(canonical)
    }
}

/// `kind` must match `^[a-z][a-z0-9-]{0,62}$`.
pub fn validate_kind(kind: &str) -> Result<(), String> {
    let mut chars = kind.chars();
    let ok = matches!(chars.next(), Some('a'..='z'))
        && kind.len() <= 63
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "kind {kind:?} is not valid: it must match ^[a-z][a-z0-9-]{{0,62}}$ (lower case letters, digits and '-', starting with a letter)"
        ))
    }
}

/// `name`: 1 to 200 scalar values, no control characters, no leading or trailing white space.
pub fn validate_name(name: &str) -> Result<(), String> {
    let count = name.chars().count();
    if count == 0 {
        return Err("name is empty: a definition needs a name of 1 to 200 characters".into());
    }
    if count > 200 {
        return Err(format!("name is {count} characters long; at most 200 are allowed"));
    }
    if let Some(c) = name.chars().find(|c| is_control(*c)) {
        return Err(format!("name {name:?} holds the control character U+{:04X}, which is not allowed", c as u32));
    }
    if name.trim() != name {
        return Err(format!("name {name:?} has leading or trailing white space"));
    }
    Ok(())
}

/// The message for a spec nested deeper than [`MAX_DEPTH`], the same on every side.
pub fn too_deep() -> String {
    format!("spec is nested more than {MAX_DEPTH} levels deep (arrays and objects): flatten it")
}

fn is_control(c: char) -> bool {
    matches!(c as u32, 0x00..=0x1F | 0x7F..=0x9F)
}

/// How many levels a spec may nest (contract v1.1): each array or object opens one. Every side
/// applies the same limit, so nothing is accepted on one side and refused on the other; it also
/// keeps a whole request body within serde_json's recursion limit of 128.
pub const MAX_DEPTH: usize = 64;

/// `spec` must be I-JSON: finite numbers, integers within ±(2^53 − 1), at most [`MAX_DEPTH`]
/// levels of arrays and objects. `depth` is the number of arrays and objects around `value`.
pub fn validate_spec(value: &Value, depth: usize) -> Result<(), String> {
    if matches!(value, Value::Array(_) | Value::Object(_)) && depth >= MAX_DEPTH {
        return Err(too_deep());
    }
    match value {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                if u > MAX_SAFE_INTEGER {
                    return Err(format!(
                        "integer {u} is beyond ±(2^53−1), which JSON cannot carry exactly; quote it as a string"
                    ));
                }
            } else if let Some(i) = n.as_i64() {
                if i.unsigned_abs() > MAX_SAFE_INTEGER {
                    return Err(format!(
                        "integer {i} is beyond ±(2^53−1), which JSON cannot carry exactly; quote it as a string"
                    ));
                }
            } else if !n.as_f64().is_some_and(f64::is_finite) {
                return Err(format!("number {n} is not finite"));
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| validate_spec(v, depth + 1)),
        Value::Object(map) => map.values().try_for_each(|v| validate_spec(v, depth + 1)),
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_their_kind_and_order_by_kind_then_name() {
        let a = Key::new("workflow", "b");
        let b = Key::new(String::from("workflow"), "a");
        assert!(Arc::ptr_eq(&a.kind.0, &b.kind.0), "one kind, one string");
        // Another thread has its own last kind but the same table.
        let c = std::thread::spawn(|| Key::new("workflow", "c")).join().unwrap();
        assert!(Arc::ptr_eq(&a.kind.0, &c.kind.0));
        let mut keys = [Key::new("zeta", "a"), a.clone(), Key::new("connection", "z"), b.clone()];
        keys.sort();
        let shown: Vec<String> = keys.iter().map(ToString::to_string).collect();
        assert_eq!(shown, [r#"connection/"z""#, r#"workflow/"a""#, r#"workflow/"b""#, r#"zeta/"a""#]);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"kind":"workflow","name":"b"}"#);
        assert_eq!(serde_json::from_str::<Key>(&json).unwrap(), a);
        assert_eq!(a.kind, "workflow");
    }

    #[test]
    fn kinds() {
        assert!(validate_kind("workflow").is_ok());
        assert!(validate_kind("a").is_ok());
        assert!(validate_kind(&format!("a{}", "b".repeat(62))).is_ok());
        assert!(validate_kind(&format!("a{}", "b".repeat(63))).is_err());
        for bad in ["", "Workflow", "1abc", "-a", "work flow", "wörk"] {
            assert!(validate_kind(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(validate_name("Slack / Notify ../../etc").is_ok());
        assert!(validate_name(&"é".repeat(200)).is_ok());
        for bad in ["", " x", "x ", "a\u{0}b", "a\u{85}b", "a\nb"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"x".repeat(201)).is_err());
    }

    #[test]
    fn integers_beyond_i_json_are_refused() {
        let ok: Value = serde_json::json!({"a": 9007199254740991_u64, "b": -9007199254740991_i64});
        assert!(validate_spec(&ok, 0).is_ok());
        let big: Value = serde_json::json!({"a": 9007199254740992_u64});
        assert!(validate_spec(&big, 0).is_err());
        let neg: Value = serde_json::json!([-9007199254740992_i64]);
        assert!(validate_spec(&neg, 0).is_err());
    }
}
