//! The properties that the fuzz targets in `fuzz/` check, kept in the library so that a stable
//! `cargo test` replays the committed corpus through the very same code (`tests/all/fuzzing.rs`).
//! Each returns `Err` with what broke; a panic inside the code under test is a failure too.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{api, digest, store, yaml};

/// A definition file is either refused with a location (line and column inside the file), or
/// accepted with a digest that survives render → parse, and its rendering is a fixed point.
pub fn yaml(data: &[u8]) -> Result<(), String> {
    match yaml::parse(data) {
        Err(e) => {
            if e.message.trim().is_empty() {
                return Err(format!("refused without a message: {e:?}"));
            }
            let lines = data.split(|b| *b == b'\n' || *b == b'\r').count() as u64;
            match (e.line, e.column) {
                (Some(line), Some(column)) if (1..=lines).contains(&line) && column >= 1 => Ok(()),
                (None, None) if without_location(&e.message) => Ok(()),
                _ => Err(format!("refused without a usable location ({lines} lines): {e:?}")),
            }
        }
        Ok(definition) => {
            let text = yaml::render(&definition);
            let back = yaml::parse(text.as_bytes()).map_err(|e| format!("its rendering is refused: {e:?}\n{text}"))?;
            if back.digest() != definition.digest() {
                return Err(format!(
                    "render → parse changed the digest: {} → {}\n{}\n{text}",
                    definition.digest(),
                    back.digest(),
                    definition.canonical()
                ));
            }
            let again = yaml::render(&back);
            if again != text {
                return Err(format!("rendering is not a fixed point:\n{text}\n---\n{again}"));
            }
            Ok(())
        }
    }
}

/// Refusals that are about the whole file, where no line is the right answer.
fn without_location(message: &str) -> bool {
    ["the file is empty", "definition file may be at most", "canonical form", "deeply nested file"]
        .iter()
        .any(|m| message.contains(m))
}

/// The server's strict JSON parser: an accepted value re-serialises and re-parses to the same
/// canonical form (JCS), and to the same value.
pub fn strict_json(data: &[u8]) -> Result<(), String> {
    let Ok(value) = store::strict_parse::<Value>(data) else { return Ok(()) };
    let text = serde_json::to_string(&value).map_err(|e| format!("cannot serialise an accepted value: {e}"))?;
    let back: Value =
        store::strict_parse(text.as_bytes()).map_err(|e| format!("its own serialisation is refused: {e}\n{text}"))?;
    let (before, after) = (digest::canonical(&value), digest::canonical(&back));
    if before != after {
        return Err(format!("serialise → parse changed the canonical form:\n{before}\n{after}"));
    }
    if back != value {
        return Err(format!("serialise → parse changed the value:\n{value}\n{back}"));
    }
    Ok(())
}

/// Every API type, read from JSON as the client (serde_json) and the server (strict) read it:
/// what is accepted serialises and reads back to an equal value with the same JSON text.
pub fn api_types(data: &[u8]) -> Result<(), String> {
    use api::types as t;
    round_trip::<t::Commit>(data)?;
    round_trip::<t::Commits>(data)?;
    round_trip::<t::Manifest>(data)?;
    round_trip::<t::Project>(data)?;
    round_trip::<t::SyncRecord>(data)?;
    round_trip::<t::Base>(data)?;
    round_trip::<t::BatchGetRequest>(data)?;
    round_trip::<t::BatchGetResponse>(data)?;
    round_trip::<t::CreateCommit>(data)?;
    round_trip::<t::PutSync>(data)?;
    round_trip::<t::PutProject>(data)?;
    Ok(())
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) -> Result<(), String> {
    let name = std::any::type_name::<T>();
    let strict = store::strict_parse::<T>(data).ok();
    let lenient = serde_json::from_slice::<T>(data).ok();
    // The strict parser refuses more (duplicate keys), never less.
    if strict.is_some() && lenient.is_none() {
        return Err(format!("{name}: the strict parser accepts what serde_json refuses"));
    }
    for value in [strict, lenient].into_iter().flatten() {
        let text = serde_json::to_string(&value).map_err(|e| format!("{name}: cannot serialise: {e}"))?;
        let back: T =
            serde_json::from_str(&text).map_err(|e| format!("{name}: its own JSON is refused: {e}\n{text}"))?;
        let again = serde_json::to_string(&back).map_err(|e| format!("{name}: cannot serialise: {e}"))?;
        if back != value || again != text {
            return Err(format!("{name}: serialise → parse changed it:\n{text}\n{again}"));
        }
    }
    Ok(())
}
