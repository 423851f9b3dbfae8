//! Content digests: SHA-256 over the RFC 8785 (JCS) canonical JSON of a definition.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// `"sha256:" + 64 lowercase hex digits`, held as the 32 bytes: a project of 100,000
/// definitions keeps several hundred thousand digests in memory at once.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn of_canonical(canonical: &str) -> Self {
        Digest(Sha256::digest(canonical.as_bytes()).into())
    }

    /// Parses a digest received from elsewhere, refusing anything that is not exactly the form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| format!("digest {s:?} does not start with \"sha256:\""))?;
        let mut bytes = [0u8; 32];
        if hex.len() == 64
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && hex::decode_to_slice(hex, &mut bytes).is_ok()
        {
            Ok(Digest(bytes))
        } else {
            Err(format!("digest {s:?} is not \"sha256:\" and 64 lowercase hex digits"))
        }
    }

    /// The first `n` hex digits, for short suffixes and logs.
    pub fn short(&self, n: usize) -> String {
        let mut hex = hex::encode(self.0);
        hex.truncate(n.min(64));
        hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The canonical form of `{"kind": kind, "name": name, "spec": spec}`.
///
/// ```
/// use defsync::digest::{Digest, canonical_definition};
///
/// // The contract's "scalar spec" vector.
/// let canonical = canonical_definition("setting", "retries", &serde_json::json!(3));
/// assert_eq!(canonical, r#"{"kind":"setting","name":"retries","spec":3}"#);
/// assert_eq!(
///     Digest::of_canonical(&canonical).to_string(),
///     "sha256:3a88a89ffe2303a244a7c42af9322d83c55ec62c7e4d8b7c1846d68d2036ede8"
/// );
/// ```
pub fn canonical_definition(kind: &str, name: &str, spec: &Value) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("{\"kind\":");
    write_string(&mut out, kind);
    out.push_str(",\"name\":");
    write_string(&mut out, name);
    out.push_str(",\"spec\":");
    write_value(&mut out, spec);
    out.push('}');
    out
}

/// RFC 8785 serialisation of any JSON value.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // RFC 8785 §3.2.3: keys sort by their UTF-16 code units.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, v);
            }
            out.push('}');
        }
    }
}

/// RFC 8785 §3.2.2.2: strings escape only `"`, `\` and controls below U+0020, using the short
/// forms where JSON has them.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    // JCS treats every number as an IEEE double. Integers that fit exactly print as integers.
    if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= crate::model::MAX_SAFE_INTEGER) {
        let _ = write!(out, "{i}");
        return;
    }
    if let Some(u) = n.as_u64().filter(|u| *u <= crate::model::MAX_SAFE_INTEGER) {
        let _ = write!(out, "{u}");
        return;
    }
    write_f64(out, n.as_f64().unwrap_or(f64::NAN));
}

/// ECMAScript's `Number.prototype.toString` for finite doubles (ECMA-262 §6.1.6.1.20), built on
/// Ryu's shortest round-trip digits.
///
/// Ryu, like ECMAScript, picks the digits closest to the exact value when several shortest
/// strings read back to the same double, and the even one on a tie. Rust's own `{:e}` does not:
/// it prints 840639973365374.25 as `840639973365374.3` where ECMAScript prints `…374.2`, and
/// an RFC 8785 digest taken by another implementation would then differ.
pub fn write_f64(out: &mut String, f: f64) {
    if f == 0.0 {
        out.push('0'); // covers -0 too
        return;
    }
    if !f.is_finite() {
        // Validation refuses these before any digest is taken; never produce invalid JSON.
        out.push_str("null");
        return;
    }
    if f < 0.0 {
        out.push('-');
    }
    let (digits, n) = shortest_digits(f.abs());
    let k = digits.len() as i32;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        let _ = write!(out, "{}", (n - 1).abs());
    }
}

/// The shortest decimal digits of a finite, positive `f` (no leading or trailing zeros) and `n`
/// such that `f` = 0.digits × 10^n.
fn shortest_digits(f: f64) -> (String, i32) {
    let mut buffer = ryu::Buffer::new();
    // Ryu writes `1.0`, `1.5e-7`, `1e16` or `123.45`: a mantissa and an optional exponent.
    let text = buffer.format_finite(f);
    let (mantissa, exp) = match text.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().expect("Ryu's exponent is an integer")),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{int}{frac}");
    let leading = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_matches('0').to_owned();
    let n = int.len() as i32 - leading as i32 + exp;
    (digits, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn es(f: f64) -> String {
        let mut s = String::new();
        write_f64(&mut s, f);
        s
    }

    #[test]
    fn numbers_follow_ecmascript() {
        // Expected values are what node's String(x) prints.
        let cases = [
            (1.0, "1"),
            (-0.0, "0"),
            (0.1, "0.1"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1e-7, "1e-7"),
            (1e-6, "0.000001"),
            (123.456, "123.456"),
            (-1.5e-10, "-1.5e-10"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (4.35, "4.35"),
            (0.000001234, "0.000001234"),
            (1234567890123456800000.0, "1.2345678901234568e+21"),
            // A tie between two shortest strings: ECMAScript takes the even digit.
            // (exactly 840639973365374.25, which `{:e}` prints as ….3).
            (f64::from_bits(0x4307_e475_f7f8_b3f2), "840639973365374.2"),
            (0.001, "0.001"),
            (100.0, "100"),
        ];
        for (f, want) in cases {
            assert_eq!(es(f), want, "{f:e}");
        }
    }

    #[test]
    fn digest_parse_is_strict() {
        let d = Digest::of_canonical("{}");
        let text = d.to_string();
        assert_eq!(Digest::parse(&text).unwrap(), d);
        assert!(Digest::parse("sha256:ABC").is_err());
        assert!(Digest::parse(&text.to_uppercase()).is_err());
        assert!(Digest::parse(&text[7..]).is_err());
        assert!(Digest::parse(&format!("{text}0")).is_err());
    }
}
