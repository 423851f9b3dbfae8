//! Strict JSON parsing of request bodies: I-JSON forbids duplicate object keys, but serde_json's
//! `Value` silently keeps the last one. A platform must refuse such a body rather than store a
//! definition that differs from what the sender meant.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `body` as JSON without duplicate keys, then as `T`. The error is a message for people.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    check_integer_literals(body)?;
    let Strict(value) = serde_json::from_slice(body).map_err(|e| {
        if is_too_deep(&e) {
            format!("the body nests more than {BODY_DEPTH} levels: {}", crate::model::too_deep())
        } else {
            format!("the body is not valid JSON: {e}")
        }
    })?;
    serde_json::from_value(value).map_err(|e| format!("the body does not have the expected form: {e}"))
}

/// Parses `body` straight into `T`, for a form with no free JSON value in it (no spec): a
/// derived struct refuses a duplicate field itself, so no `Value` of the whole body is built. A
/// `PUT /sync` of 100,000 base entries as a `Value` would cost about 100 MiB; this costs the
/// entries themselves. A duplicate key inside a field the form does not have goes unseen, as
/// that field is ignored.
pub fn parse_typed<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    check_integer_literals(body)?;
    serde_json::from_slice(body).map_err(|e| {
        if is_too_deep(&e) {
            format!("the body nests more than {BODY_DEPTH} levels: {}", crate::model::too_deep())
        } else if e.classify() == serde_json::error::Category::Data {
            format!("the body does not have the expected form: {e}")
        } else {
            format!("the body is not valid JSON: {e}")
        }
    })
}

/// Refuses an integer literal (no fraction, no exponent) beyond 64 bits anywhere in a JSON text.
/// I-JSON forbids integers beyond ±(2^53 − 1), and serde_json turns one beyond 64 bits into a
/// float that would pass as an ordinary number, so the value stored would not be the value sent.
pub fn check_integer_literals(json: &[u8]) -> Result<(), String> {
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                // Skip the string, escapes included; serde_json judges its validity.
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < json.len() && matches!(json[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                    i += 1;
                }
                let token = &json[start..i];
                let digits = token.strip_prefix(b"-").unwrap_or(token);
                // Only literals beyond 64 bits: serde_json keeps smaller ones as integers, and
                // `model::validate_spec` refuses those beyond 2^53 − 1 per definition, with
                // details that name the key.
                let integer = !digits.is_empty() && digits.iter().all(u8::is_ascii_digit);
                let too_large = integer
                    && std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| d.parse::<u64>().ok())
                        .is_none_or(|v| token.starts_with(b"-") && v > i64::MIN.unsigned_abs());
                if too_large {
                    let shown = String::from_utf8_lossy(&token[..token.len().min(40)]);
                    return Err(format!(
                        "the integer {shown}{} is beyond ±(2^53−1), which JSON cannot carry exactly; send it as a string",
                        if token.len() > 40 { "…" } else { "" }
                    ));
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// How deep serde_json reads a document before it gives up (its recursion limit). A body whose
/// specs keep to `model::MAX_DEPTH` stays well within it.
pub const BODY_DEPTH: usize = 128;

/// True when serde_json stopped because the document nests deeper than [`BODY_DEPTH`].
pub fn is_too_deep(e: &serde_json::Error) -> bool {
    // serde_json has no error category for it; its message is stable ("recursion limit exceeded").
    e.is_syntax() && e.to_string().starts_with("recursion limit exceeded")
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom(format!("number {v} is not finite")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict::deserialize(d).map(|s| s.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?} in an object")));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(parse::<Value>(br#"{"a": {"b": 1, "b": 2}}"#).unwrap_err().contains("duplicate key \"b\""));
        assert!(parse::<Value>(br#"[{"x": 1, "x": 1}]"#).is_err());
        let v: Value = parse(br#"{"z": 1, "a": [1.5, null, "s", true], "m": {}}"#).unwrap();
        // Key order is kept (serde_json's preserve_order), so a stored spec keeps the sender's order.
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"z":1,"a":[1.5,null,"s",true],"m":{}}"#);
    }

    #[test]
    fn integer_literals_past_64_bits_are_refused() {
        for bad in
            ["[-9223372036854775809]", r#"{"a": 18446744073709551616}"#, r#"{"a": 100000000000000000000000000000}"#]
        {
            assert!(parse::<Value>(bad.as_bytes()).unwrap_err().contains("beyond ±(2^53−1)"), "{bad}");
        }
        for ok in [
            "[9007199254740991, -9007199254740991, 1e300, 100000000000000000000.0, 1E+16]",
            // Within 64 bits: left to `validate_spec`, which names the key.
            "[9007199254740992, -9223372036854775808, 18446744073709551615]",
            r#"{"s": "18446744073709551616", "e": "\"99999999999999999999"}"#,
        ] {
            assert!(parse::<Value>(ok.as_bytes()).is_ok(), "{ok}");
        }
    }

    #[test]
    fn lone_surrogates_and_bad_utf8_are_refused() {
        assert!(parse::<Value>(br#"{"a": "\ud800"}"#).is_err());
        assert!(parse::<Value>(b"{\"a\": \"\xff\"}").is_err());
    }

    #[test]
    fn typed_bodies_refuse_duplicate_fields_and_keep_the_messages() {
        use crate::api::PutSync;
        let ok = br#"{"repository": "a/b", "ref": "refs/heads/main", "path": ".", "direction": "bidirectional",
            "base": [{"kind": "workflow", "name": "w", "digest": null}]}"#;
        let req: PutSync = parse_typed(ok).unwrap();
        assert_eq!(req, parse::<PutSync>(ok).unwrap());
        let twice = br#"{"repository": "a/b", "ref": "r", "path": ".", "direction": "bidirectional",
            "base": [{"kind": "workflow", "kind": "x", "name": "w", "digest": null}]}"#;
        let e = parse_typed::<PutSync>(twice).unwrap_err();
        assert!(
            e.starts_with("the body does not have the expected form") && e.contains("duplicate field `kind`"),
            "{e}"
        );
        assert!(parse_typed::<PutSync>(b"{").unwrap_err().starts_with("the body is not valid JSON"));
        assert!(parse_typed::<PutSync>(br#"{"repository": 1}"#).unwrap_err().starts_with("the body does not have"));
        // Nesting in a field the form does not have is skipped without recursion, and refused
        // for the form.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = parse_typed::<PutSync>(format!(r#"{{"x": {deep}}}"#).as_bytes()).unwrap_err();
        assert!(e.contains("missing field `repository`"), "{e}");
        assert!(parse_typed::<PutSync>(br#"{"x": 18446744073709551616}"#).unwrap_err().contains("beyond"));
    }
}
