//! GitHub's official OpenAPI description (the subset vendored in tests/vendor/github), turned into JSON
//! Schema validators, so the stand-in's answers and defsync's requests are checked against what
//! GitHub documents rather than against our own guesses.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vendor/github/openapi-subset.json");
/// Operations cut from the same description after the subset was shared: reading a workflow run
/// back (issue 11). A file of its own, so the subset stays a byte-for-byte copy of `../shared`.
const SPEC_RUNS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vendor/github/openapi-actions-runs.json");

/// The subset with the extra operations' paths merged in.
pub fn spec() -> &'static Value {
    static SPEC_VALUE: OnceLock<Value> = OnceLock::new();
    SPEC_VALUE.get_or_init(|| {
        let read = |file: &str| -> Value {
            let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {file}: {e}"));
            serde_json::from_str(&text).expect("the OpenAPI subset is JSON")
        };
        let mut spec = read(SPEC);
        let runs = read(SPEC_RUNS);
        assert_eq!(spec["info"], runs["info"], "{SPEC_RUNS} comes from another version of the description");
        let paths = spec["paths"].as_object_mut().expect("paths");
        for (path, ops) in runs["paths"].as_object().expect("paths") {
            paths.insert(path.clone(), ops.clone());
        }
        spec
    })
}

/// The spec's path template for a concrete path, e.g. `/repos/{owner}/{repo}/git/refs/{ref}`
/// for `/repos/o/r/git/refs/heads/defsync/p1`. A trailing `{ref}` or `{branch}` takes the rest
/// of the path, slashes included, as GitHub's routes do.
pub fn template_for(method: &str, path: &str) -> Option<String> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let paths = spec()["paths"].as_object()?;
    'next: for (template, ops) in paths {
        if ops.get(method).is_none() {
            continue;
        }
        let t: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        let mut i = 0;
        for (j, ts) in t.iter().enumerate() {
            let last = j == t.len() - 1;
            if last && (*ts == "{ref}" || *ts == "{branch}") {
                if i < segs.len() {
                    return Some(template.clone());
                }
                continue 'next;
            }
            let Some(s) = segs.get(i) else { continue 'next };
            if !(ts.starts_with('{') || ts == s) {
                continue 'next;
            }
            i += 1;
        }
        if i == segs.len() {
            return Some(template.clone());
        }
    }
    None
}

/// OpenAPI 3.0 schema → JSON Schema: `nullable: true` becomes a `null` alternative.
fn to_json_schema(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut out: serde_json::Map<String, Value> = o
                .iter()
                .filter(|(k, _)| *k != "nullable" && *k != "example")
                .map(|(k, v)| (k.clone(), to_json_schema(v)))
                .collect();
            if o.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = out.get("type").cloned() {
                    out.insert("type".into(), serde_json::json!([t, "null"]));
                    if let Some(Value::Array(e)) = out.get_mut("enum") {
                        e.push(Value::Null);
                    }
                } else {
                    return serde_json::json!({"anyOf": [{"type": "null"}, Value::Object(out)]});
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

fn validator(key: String, schema: &Value) -> std::sync::Arc<jsonschema::Validator> {
    static CACHE: OnceLock<Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap().get(&key) {
        return v.clone();
    }
    let compiled = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&to_json_schema(schema))
        .unwrap_or_else(|e| panic!("schema {key}: {e}"));
    let compiled = std::sync::Arc::new(compiled);
    cache.lock().unwrap().insert(key, compiled.clone());
    compiled
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance).take(5).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

/// What is wrong with a request: its body against `requestBody`, its query parameters against
/// theirs. Empty when it conforms.
pub fn check_request(method: &str, path: &str, query: &[(String, String)], body: Option<&Value>) -> Vec<String> {
    // The doctor also reads the repository's Actions workflow permissions, an endpoint the
    // subset leaves out; the stand-in answers it as GitHub documents it on docs.github.com.
    if method == "get" && path.ends_with("/actions/permissions/workflow") {
        return vec![];
    }
    let Some(template) = template_for(method, path) else {
        return vec![format!("{} {path} is not an operation of the OpenAPI subset", method.to_uppercase())];
    };
    let op = &spec()["paths"][&template][method];
    let mut out = Vec::new();
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    for (k, v) in query {
        match params.iter().find(|p| p["in"] == "query" && p["name"] == k.as_str()) {
            None => out.push(format!("query parameter {k:?} is not documented for {template}")),
            Some(p) => {
                let schema = &p["schema"];
                let instance = if schema["type"] == "integer" {
                    v.parse::<i64>().map(Value::from).unwrap_or(Value::String(v.clone()))
                } else {
                    Value::String(v.clone())
                };
                let val = validator(format!("{method} {template} ?{k}"), schema);
                out.extend(errors(&val, &instance).into_iter().map(|e| format!("query {k}: {e}")));
            }
        }
    }
    let schema = &op["requestBody"]["content"]["application/json"]["schema"];
    match (body, schema.is_null()) {
        (Some(b), false) => {
            let val = validator(format!("{method} {template} request"), schema);
            out.extend(errors(&val, b).into_iter().map(|e| format!("request body: {e}")));
        }
        (Some(_), true) => out.push(format!("{template} takes no request body")),
        (None, false) if op["requestBody"]["required"] == true => out.push("request body missing".into()),
        _ => {}
    }
    out.into_iter().map(|e| format!("{} {template}: {e}", method.to_uppercase())).collect()
}

/// What is wrong with an answer: an undocumented status, or a body that does not fit the
/// documented schema.
pub fn check_response(method: &str, path: &str, status: u16, body: Option<&Value>) -> Vec<String> {
    let Some(template) = template_for(method, path) else {
        return vec![];
    };
    let responses = &spec()["paths"][&template][method]["responses"];
    let Some(resp) = responses.get(status.to_string()) else {
        // 401 and rate-limit answers can come from any endpoint; GitHub documents them once.
        if matches!(status, 401 | 403 | 429) {
            return vec![];
        }
        return vec![format!("{} {template}: status {status} is not documented", method.to_uppercase())];
    };
    let schema = &resp["content"]["application/json"]["schema"];
    match (body, schema.is_null()) {
        (Some(b), false) => {
            let val = validator(format!("{method} {template} {status}"), schema);
            errors(&val, b).into_iter().map(|e| format!("{} {template} {status}: {e}", method.to_uppercase())).collect()
        }
        // Error answers always carry GitHub's message, whether or not the spec names a schema.
        (Some(_), true) if status < 400 => {
            vec![format!("{} {template} {status} has no body in the spec", method.to_uppercase())]
        }
        _ => vec![],
    }
}

/// The first documented example answer of an operation: the stand-in's template for bodies.
pub fn example(method: &str, template: &str, status: u16) -> Value {
    let content = &spec()["paths"][template][method]["responses"][status.to_string()]["content"]["application/json"];
    if let Some(examples) = content["examples"].as_object()
        && let Some((_, first)) = examples.iter().next()
    {
        return first["value"].clone();
    }
    content["example"].clone()
}
