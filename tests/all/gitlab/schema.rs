//! GitLab's official OpenAPI description (the subset vendored in tests/vendor/gitlab), turned
//! into JSON Schema validators, so the stand-in's answers and defsync's requests are checked
//! against what GitLab documents, with the corrections its `x-spec-quirks` list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vendor/gitlab/openapi-subset.json");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vendor/gitlab/go-gitlab-testdata");

pub fn spec() -> &'static Value {
    static SPEC_VALUE: OnceLock<Value> = OnceLock::new();
    SPEC_VALUE.get_or_init(|| {
        let text = std::fs::read_to_string(SPEC).unwrap_or_else(|e| panic!("read {SPEC}: {e}"));
        serde_json::from_str(&text).expect("the OpenAPI subset is JSON")
    })
}

/// A recorded go-gitlab answer: a `testdata/` file as is, or the `response` of an `inline/` one.
pub fn fixture(name: &str) -> Value {
    let path = format!("{FIXTURES}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    if name.starts_with("inline/") { v["response"].clone() } else { v }
}

/// The spec's path template for a raw (still percent-encoded) path under `/api/v4`. Each
/// template parameter takes exactly one segment, as GitLab's routes do: a project path or a
/// branch name with an unencoded `/` matches nothing, which is the mistake this catches.
pub fn template_for(method: &str, raw_path: &str) -> Option<String> {
    let segs: Vec<&str> = raw_path.trim_start_matches('/').split('/').collect();
    let paths = spec()["paths"].as_object()?;
    paths
        .iter()
        .filter(|(_, ops)| ops.get(method).is_some())
        .find(|(template, _)| {
            let t: Vec<&str> = template.trim_start_matches('/').split('/').collect();
            t.len() == segs.len() && t.iter().zip(&segs).all(|(ts, s)| ts.starts_with('{') || ts == s)
        })
        .map(|(t, _)| t.clone())
}

/// The entity fields the generator wrote as one object where GitLab sends an array.
const ARRAY_QUIRKS: &[&str] = &["assignees", "reviewers", "suggestions", "custom_attributes"];

/// The access-level fields GitLab sends as numbers where the description says string.
const LEVEL_QUIRKS: &[&str] = &["access_level", "notification_level"];

/// OpenAPI 3.0 → JSON Schema. `nullable: true` becomes a `null` alternative; in answers
/// (`entity`), every property may also be null ("entity fields carry no nullable markers;
/// GitLab sends null for unset ones") and the array quirks take an array of their object.
fn to_json_schema(v: &Value, entity: bool) -> Value {
    match v {
        Value::Object(o) => {
            let mut out: serde_json::Map<String, Value> = o
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "nullable" | "example" | "title" | "description"))
                .map(|(k, v)| {
                    if k == "properties"
                        && let Value::Object(props) = v
                    {
                        let props = props
                            .iter()
                            .map(|(name, s)| {
                                let mut s = to_json_schema(s, entity);
                                if entity {
                                    // The description types `permissions.*.access_level` and
                                    // `notification_level` as strings; GitLab's docs
                                    // (doc/api/projects.md, "Get a single project") show numbers.
                                    if LEVEL_QUIRKS.contains(&name.as_str()) && s["type"] == "string" {
                                        s = json!({"type": ["string", "integer"]});
                                    }
                                    if ARRAY_QUIRKS.contains(&name.as_str()) && s["type"] == "object" {
                                        s = json!({"anyOf": [s.clone(), {"type": "array", "items": s}]});
                                    }
                                    s = json!({"anyOf": [{"type": "null"}, s]});
                                }
                                (name.clone(), s)
                            })
                            .collect();
                        return (k.clone(), Value::Object(props));
                    }
                    (k.clone(), to_json_schema(v, entity))
                })
                .collect();
            if o.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = out.get("type").cloned() {
                    out.insert("type".into(), json!([t, "null"]));
                } else {
                    return json!({"anyOf": [{"type": "null"}, Value::Object(out)]});
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| to_json_schema(v, entity)).collect()),
        other => other.clone(),
    }
}

fn validator(key: String, schema: &Value, entity: bool) -> Arc<jsonschema::Validator> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap().get(&key) {
        return v.clone();
    }
    let compiled = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&to_json_schema(schema, entity))
        .unwrap_or_else(|e| panic!("schema {key}: {e}"));
    let compiled = Arc::new(compiled);
    cache.lock().unwrap().insert(key, compiled.clone());
    compiled
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance).take(5).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

/// The documented JSON body of an operation: its `requestBody`, or for POST
/// `repository/commits` the `x-documented-request-body` taken from GitLab's API docs, since the
/// OpenAPI file describes only Workhorse's multipart upload there.
fn request_schema(op: &Value) -> &Value {
    let documented = &op["x-documented-request-body"]["content"]["application/json"]["schema"];
    if !documented.is_null() {
        return documented;
    }
    &op["requestBody"]["content"]["application/json"]["schema"]
}

/// `GET /projects/:id/pipelines/:pipeline_id`, which `serve` reads when a pipeline webhook
/// arrives: the vendored subset of GitLab's description does not have it, so the request is
/// checked for its shape only, and the stand-in answers as go-gitlab's recorded pipeline and
/// GitLab's docs ("Get a single pipeline") show.
fn is_undescribed_read(method: &str, raw_path: &str) -> bool {
    let segs: Vec<&str> = raw_path.trim_start_matches('/').trim_start_matches("api/v4/").split('/').collect();
    method == "get" && matches!(segs.as_slice(), ["projects", _, "pipelines", id] if id.parse::<u64>().is_ok())
}

/// What is wrong with a request: its path, its query parameters and its body. Empty when it
/// conforms.
pub fn check_request(method: &str, raw_path: &str, query: &[(String, String)], body: Option<&Value>) -> Vec<String> {
    let Some(template) = template_for(method, raw_path) else {
        if is_undescribed_read(method, raw_path) && query.is_empty() && body.is_none() {
            return vec![];
        }
        return vec![format!("{} {raw_path} is not an operation of the OpenAPI subset", method.to_uppercase())];
    };
    let op = &spec()["paths"][&template][method];
    let mut out = Vec::new();
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    for (k, v) in query {
        match params.iter().find(|p| p["in"] == "query" && p["name"] == k.as_str()) {
            None => out.push(format!("query parameter {k:?} is not documented for {template}")),
            Some(p) => {
                let schema = &p["schema"];
                let instance = match schema["type"].as_str() {
                    Some("integer") => v.parse::<i64>().map(Value::from).unwrap_or(Value::String(v.clone())),
                    Some("boolean") => v.parse::<bool>().map(Value::from).unwrap_or(Value::String(v.clone())),
                    _ => Value::String(v.clone()),
                };
                let val = validator(format!("{method} {template} ?{k}"), schema, false);
                out.extend(errors(&val, &instance).into_iter().map(|e| format!("query {k}: {e}")));
            }
        }
    }
    let schema = request_schema(op);
    match (body, schema.is_null()) {
        (Some(b), false) => {
            let val = validator(format!("{method} {template} request"), schema, false);
            out.extend(errors(&val, b).into_iter().map(|e| format!("request body: {e}")));
            // GitLab lists few fields as required: also refuse fields it does not document.
            if let (Some(props), Some(given)) = (schema["properties"].as_object(), b.as_object()) {
                for k in given.keys().filter(|k| !props.contains_key(*k)) {
                    // The trigger API's `ref` is a documented form field the description leaves out.
                    if !(template.ends_with("/trigger/pipeline") && k == "ref") {
                        out.push(format!("request body: field {k:?} is not documented"));
                    }
                }
            }
        }
        (Some(_), true) => out.push(format!("{template} takes no request body")),
        (None, false) if op["requestBody"]["required"] == true => out.push("request body missing".into()),
        _ => {}
    }
    out.into_iter().map(|e| format!("{} {template}: {e}", method.to_uppercase())).collect()
}

/// What is wrong with an answer: an undocumented status, or a body that does not fit the
/// documented schema.
pub fn check_response(method: &str, raw_path: &str, status: u16, body: Option<&Value>) -> Vec<String> {
    let Some(template) = template_for(method, raw_path) else {
        return vec![];
    };
    let responses = &spec()["paths"][&template][method]["responses"];
    let Some(resp) = responses.get(status.to_string()) else {
        // Authentication, authorization and rate-limit answers can come from any endpoint, and so
        // can outages: GitLab's REST API docs list 500 for any request, and 502 to 504 come from
        // the proxies in front of it.
        if matches!(status, 401 | 403 | 429 | 500 | 502 | 503 | 504) {
            return vec![];
        }
        return vec![format!("{} {template}: status {status} is not documented", method.to_uppercase())];
    };
    let schema = &resp["content"]["application/json"]["schema"];
    match (body, schema.is_null()) {
        // The list of an MR's notes is described as one APIEntitiesNote: the generator dropped
        // `is_array` here too, as x-spec-quirks records for other fields. GitLab's docs
        // (doc/api/notes.md, "List all merge request notes") show an array of notes, so each
        // item is checked against the described note.
        (Some(Value::Array(items)), false)
            if method == "get" && template.ends_with("/notes") && schema["type"] == "object" =>
        {
            let val = validator(format!("{method} {template} {status}"), schema, true);
            items
                .iter()
                .flat_map(|item| errors(&val, item))
                .map(|e| format!("{} {template} {status} item: {e}", method.to_uppercase()))
                .collect()
        }
        (Some(b), false) => {
            let val = validator(format!("{method} {template} {status}"), schema, true);
            errors(&val, b).into_iter().map(|e| format!("{} {template} {status}: {e}", method.to_uppercase())).collect()
        }
        (Some(b), true) if status < 400 => {
            vec![format!("{} {template} {status} has no body in the spec, got {b}", method.to_uppercase())]
        }
        // Error answers carry GitLab's `message` whether or not the spec names a schema.
        _ => vec![],
    }
}

#[test]
fn fixtures_conform_to_the_description_with_its_quirks() {
    // The recorded answers, with the two type mismatches x-spec-quirks names set aside.
    let mut mr = fixture("testdata/get_merge_request.json");
    mr["milestone"]["group_id"] = Value::Null;
    mr["head_pipeline"]["coverage"] = Value::Null;
    let p = "/api/v4/projects/1/merge_requests/1";
    assert_eq!(check_response("get", p, 200, Some(&mr)), Vec::<String>::new());
    let branch = fixture("testdata/get_branch.json");
    assert_eq!(
        check_response("get", "/api/v4/projects/1/repository/branches/master", 200, Some(&branch)),
        Vec::<String>::new()
    );
    // A schema violation is caught: `iid` is an integer.
    mr["iid"] = json!("one");
    assert!(!check_response("get", p, 200, Some(&mr)).is_empty());
    // An unencoded branch with a slash is not GitLab's route.
    assert!(template_for("get", "/api/v4/projects/1/repository/branches/defsync/p1").is_none());
    assert!(template_for("get", "/api/v4/projects/1/repository/branches/defsync%2Fp1").is_some());
}

#[test]
fn vendored_files_are_exact_copies_of_the_shared_reference() {
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/gitlab");
    if !std::path::Path::new(shared).exists() {
        return; // a clone without the shared folder: the vendored copy is all there is
    }
    for f in
        ["openapi-subset.json", "LICENSE-openapi.md", "go-gitlab-testdata/LICENSE", "go-gitlab-testdata/INDEX.json"]
    {
        let a = std::fs::read(format!("{shared}/{f}")).unwrap();
        let b = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vendor/gitlab/").to_owned() + f).unwrap();
        assert!(a == b, "tests/vendor/gitlab/{f} differs from ../shared/gitlab/{f}");
    }
}
