//! Contract v1.1's number and depth rules, end to end: numbers are read to the nearest double and
//! written in the shortest form that reads back to it; a spec nests at most 64 levels, and every
//! side refuses the same deeper specs.
//!
//! These pin two corruptions found with hostile input: serde_json without `float_roundtrip`
//! read about 9% of 16- and 17-digit doubles one unit in the last place off, so a dashboard edit
//! blocked every pull and a pushed file made every later push fail with `empty_commit`; and a
//! spec nested 65 to 125 levels passed `status`, then could not be synced.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use serde_json::{Value, json};

use crate::server::ServerProcess;
use crate::support::{Env, PROJECT};

const KEY: &str = "test-key-numbers";

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/contract/vectors.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The contract's hard-floats vector: `(kind, name, spec as JSON text, digest)`. The text is
/// written out here, as a platform would send it: the vector's canonical form cannot stand in,
/// because JCS writes 1e16 as `10000000000000000`, an integer literal beyond I-JSON's range.
fn hard_floats() -> (String, String, String, String) {
    let v = vectors();
    let case = v["definitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "hard-floats")
        .expect("the v1.1 hard-floats vector")
        .clone();
    let spec = r#"{"a": 12345678000129.125, "b": 123456789.12345679, "c": 123456789.125, "d": -488.0,
        "e": 5e-324, "f": 1.7976931348623157e+308, "g": 2.2250738585072014e-308, "h": 0.30000000000000004,
        "i": 4.35, "j": 333333333.3333333, "k": 1e+23, "l": 1e23, "m": -2.5e-300, "n": 1e+16, "o": 1e-06}"#;
    assert_eq!(serde_json::from_str::<Value>(spec).unwrap(), case["spec"], "the vector's values");
    (
        case["kind"].as_str().unwrap().to_owned(),
        case["name"].as_str().unwrap().to_owned(),
        spec.to_owned(),
        case["digest"].as_str().unwrap().to_owned(),
    )
}

/// One HTTP/1.1 request with a raw body, so the numbers reach `serve` exactly as written (a JSON
/// library in the test would re-format them). Returns the status and the body.
fn http(url: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn dashboard_commit(url: &str, changes: &str) -> (u16, String) {
    let (_, project) = http(url, "GET", &format!("/v1/projects/{PROJECT}"), "");
    let project: Value = serde_json::from_str(&project).unwrap();
    let parent = match project["head"]["id"].as_str() {
        Some(id) => format!("\"{id}\""),
        None => "null".into(),
    };
    let body = format!(
        r#"{{"parent": {parent}, "message": "edit", "origin": {{"type": "dashboard"}}, "changes": [{changes}]}}"#
    );
    http(url, "POST", &format!("/v1/projects/{PROJECT}/commits"), &body)
}

/// The digest `serve` holds for a key at its head.
fn platform_digest(url: &str, kind: &str, name: &str) -> Option<String> {
    let (_, project) = http(url, "GET", &format!("/v1/projects/{PROJECT}"), "");
    let project: Value = serde_json::from_str(&project).unwrap();
    let head = project["head"]["id"].as_str()?;
    let (_, manifest) = http(url, "GET", &format!("/v1/projects/{PROJECT}/commits/{head}/manifest"), "");
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    manifest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == kind && e["name"] == name)
        .map(|e| e["digest"].as_str().unwrap().to_owned())
}

fn server() -> (tempfile::TempDir, ServerProcess) {
    ServerProcess::scratch(KEY)
}

#[test]
fn hard_numbers_from_the_dashboard_pull_and_push_back_as_a_no_op() {
    let (_dir, server) = server();
    let env = Env::on_server(&server.url(), KEY);
    let (kind, name, spec, digest) = hard_floats();
    // The issue's own example too, alone in a definition.
    let changes = format!(
        r#"{{"op": "put", "kind": "{kind}", "name": "{name}", "spec": {spec}}},
           {{"op": "put", "kind": "setting", "name": "one", "spec": {{"v": 123456789.12345679}}}}"#
    );
    let (status, body) = dashboard_commit(&server.url(), &changes);
    assert_eq!(status, 201, "{body}");
    assert_eq!(platform_digest(&server.url(), &kind, &name).as_deref(), Some(digest.as_str()), "stored exactly");

    let pull = env.run("pull", &[]).ok();
    assert_eq!(pull.changes(), ["git add setting/hard-floats", "git add setting/one"]);
    let text = env.read("defs/setting/hard-floats.yaml");
    assert_eq!(defsync::yaml::parse(text.as_bytes()).unwrap().digest().to_string(), digest, "{text}");
    assert!(env.read("defs/setting/one.yaml").contains("v: 123456789.12345679"));

    for command in ["push", "pull", "status"] {
        assert_eq!(env.run(command, &[]).ok().status(), "in_sync", "{command}");
    }
    assert_eq!(platform_digest(&server.url(), &kind, &name).as_deref(), Some(digest.as_str()));
}

#[test]
fn hard_numbers_in_a_hand_written_file_push_and_pull_back_as_a_no_op() {
    let (_dir, server) = server();
    let env = Env::on_server(&server.url(), KEY);
    let (kind, name, _, digest) = hard_floats();
    // The same values as the vector, spelled as a person might.
    env.write(
        "defs/hand.yaml",
        &format!(
            "kind: {kind}\nname: {name}\nspec:\n  a: 12345678000129.125\n  b: 123456789.12345679\n  c: 123456789.125\n  \
             d: -488.0\n  e: 5e-324\n  f: 1.7976931348623157e308\n  g: 2.2250738585072014E-308\n  h: 0.30000000000000004\n  \
             i: 4.35\n  j: 333333333.3333333\n  k: 1e23\n  l: 100000000000000000000000.0\n  m: -2.5e-300\n  n: 1e16\n  o: 0.000001\n"
        ),
    );
    env.commit_and_push("hand-written numbers");
    assert_eq!(env.run("push", &[]).ok().changes(), ["platform add setting/hard-floats"]);
    assert_eq!(platform_digest(&server.url(), &kind, &name).as_deref(), Some(digest.as_str()));
    // A second push used to fail with 422 `empty_commit` forever.
    for command in ["push", "pull", "push", "status"] {
        assert_eq!(env.run(command, &[]).ok().status(), "in_sync", "{command}");
    }
    assert!(env.exists("defs/hand.yaml"), "a file whose digest agrees is left where it is");
}

fn nested(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

#[test]
fn a_spec_nested_past_64_levels_is_refused_by_every_side() {
    let (_dir, server) = server();
    let env = Env::on_server(&server.url(), KEY);

    // 64 levels: accepted and synced both ways.
    env.write("defs/deep.yaml", &format!("kind: setting\nname: deep\nspec: {}\n", nested(64)));
    env.commit_and_push("64 levels");
    assert_eq!(env.run("push", &[]).ok().changes(), ["platform add setting/deep"]);
    assert_eq!(env.run("pull", &[]).ok().status(), "in_sync");

    // 65 levels in a file: exit 4 from status and push, naming the file and line.
    env.write("defs/deeper.yaml", &format!("kind: setting\nname: deeper\n\nspec: {}\n", nested(65)));
    env.commit_and_push("65 levels");
    for command in ["status", "push"] {
        let r = env.run(command, &[]);
        assert_eq!(r.code, 4, "{command}: {r:?}");
        let error = &r.json()["errors"][0];
        assert_eq!(error["path"], "defs/deeper.yaml", "{r:?}");
        assert_eq!(error["line"], 4, "{r:?}");
        assert!(error["message"].as_str().unwrap().contains("64 levels"), "{r:?}");
    }

    // `serve` refuses the same specs with 422 `invalid`, whether serde_json could read the body
    // (65 levels) or not (200 levels, past its recursion limit).
    for levels in [65, 126, 200] {
        let (status, body) = dashboard_commit(
            &server.url(),
            &format!(r#"{{"op": "put", "kind": "setting", "name": "d{levels}", "spec": {}}}"#, nested(levels)),
        );
        assert_eq!(status, 422, "{levels} levels: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "invalid", "{levels}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("64 levels")
                || body["error"]["details"].to_string().contains("64 levels"),
            "{levels}: {body}"
        );
    }
    let (status, _) = dashboard_commit(
        &server.url(),
        &format!(r#"{{"op": "put", "kind": "setting", "name": "d64", "spec": {}}}"#, nested(64)),
    );
    assert_eq!(status, 201);
}

/// A platform that does not check depth and sends 65 levels: the pull stops with exit 4, names
/// the definition, and writes nothing.
#[test]
fn a_platform_that_sends_a_spec_nested_past_64_levels_is_refused() {
    for levels in [65, 200] {
        let platform = stand_in::start(nested(levels));
        let env = Env::on_server_without_project(&platform.url, KEY);
        let head = env.head();
        let r = env.run("pull", &[]);
        assert_eq!(r.code, 4, "{levels} levels: {r:?}");
        let text = format!("{}{}", r.stdout, r.stderr);
        assert!(text.contains("64 levels"), "{levels}: {text}");
        assert!(text.contains("deep"), "{levels}: names the definition: {text}");
        assert_eq!(env.head(), head, "nothing written");
        assert!(!env.exists("defs"));
    }
}

/// A platform that sends an integer literal beyond 64 bits: serde_json would read it as a float
/// and let it pass.
#[test]
fn a_platform_that_sends_an_integer_beyond_i_json_is_refused() {
    let platform = stand_in::start(r#"{"big": 100000000000000000000000}"#.into());
    let env = Env::on_server_without_project(&platform.url, KEY);
    let r = env.run("pull", &[]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(format!("{}{}", r.stdout, r.stderr).contains("beyond ±(2^53−1)"), "{r:?}");
    assert!(!env.exists("defs"));
}

/// A minimal platform for one project with one definition `setting/deep` whose spec is the given
/// JSON text, that never checks what it sends.
mod stand_in {
    use axum::extract::Path;
    use axum::routing::{get, post};
    use serde_json::json;

    pub struct StandIn {
        pub url: String,
        _runtime: tokio::runtime::Runtime,
    }

    pub fn start(spec_text: String) -> StandIn {
        // The digest it claims is the real one where serde_json can hold the value.
        let digest = serde_json::from_str::<serde_json::Value>(&spec_text)
            .map(|spec| defsync::model::Definition { kind: "setting".into(), name: "deep".into(), spec }.digest())
            .unwrap_or_else(|_| defsync::digest::Digest::of_canonical("deep"))
            .to_string();
        let commit = json!({"id": "c1", "seq": 1, "parent": null, "created_at": "2026-12-01T00:00:00Z",
                            "message": "deep", "origin": {"type": "dashboard"}});
        let project = json!({"id": super::PROJECT, "name": "p", "head": commit, "sync": null});
        let manifest = json!({"commit": commit, "entries": [
            {"kind": "setting", "name": "deep", "digest": digest, "size": spec_text.len() + 40}]});
        let objects = format!(
            r#"{{"objects": [{{"digest": "{digest}", "kind": "setting", "name": "deep", "spec": {spec_text}}}], "missing": []}}"#
        );
        let json = |v: serde_json::Value| ([("content-type", "application/json"), ("etag", "\"none\"")], v.to_string());
        let app = axum::Router::new()
            .route("/v1/projects/{p}", get(move |Path(_p): Path<String>| async move { json(project) }))
            .route(
                "/v1/projects/{p}/sync/base",
                get(move |Path(_p): Path<String>| async move { json(json!({"entries": []})) }),
            )
            .route(
                "/v1/projects/{p}/commits/{c}/manifest",
                get(move |Path((_p, _c)): Path<(String, String)>| async move { json(manifest) }),
            )
            .route(
                "/v1/projects/{p}/sync",
                axum::routing::put(move |Path(_p): Path<String>, body: String| async move {
                    let mut record: serde_json::Value = serde_json::from_str(&body).unwrap();
                    record["seq"] = json!(0);
                    record["updated_at"] = json!("2026-12-01T00:00:00Z");
                    json(record)
                }),
            )
            .route(
                "/v1/projects/{p}/objects/batch-get",
                post(move |Path(_p): Path<String>| async move { ([("content-type", "application/json")], objects) }),
            );
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        StandIn { url, _runtime: runtime }
    }
}

/// An integer stays an integer and a float a float: `serve` answers what it was sent.
#[test]
fn serve_keeps_integers_and_floats_apart() {
    let (_dir, server) = server();
    let (status, _) = http(&server.url(), "PUT", &format!("/v1/projects/{PROJECT}"), r#"{"name": "n"}"#);
    assert_eq!(status, 201);
    let (status, body) = dashboard_commit(
        &server.url(),
        r#"{"op": "put", "kind": "setting", "name": "n", "spec": {"i": 755, "f": 1.5, "g": 2.0, "b": 123456789.12345679}}"#,
    );
    assert_eq!(status, 201, "{body}");
    let digest = platform_digest(&server.url(), "setting", "n").unwrap();
    let (status, body) = http(
        &server.url(),
        "POST",
        &format!("/v1/projects/{PROJECT}/objects/batch-get"),
        &format!(r#"{{"digests": ["{digest}"]}}"#),
    );
    assert_eq!(status, 200, "{body}");
    let spec = &serde_json::from_str::<Value>(&body).unwrap()["objects"][0]["spec"];
    assert!(spec["i"].is_u64(), "{spec}");
    assert!(spec["f"].is_f64() && spec["g"].is_f64(), "{spec}");
    assert_eq!(spec["b"].as_f64().unwrap().to_bits(), 123456789.12345679_f64.to_bits(), "{spec}");
    let want = defsync::model::Definition {
        kind: "setting".into(),
        name: "n".into(),
        spec: json!({"i": 755, "f": 1.5, "g": 2, "b": 123456789.12345679}),
    };
    assert_eq!(digest, want.digest().to_string());
}

/// Canonical number output against an independent ECMAScript formatter (`ryu-js`, which
/// implements `Number::toString`), over a million random doubles and the edge cases.
mod canonical_numbers {
    use defsync::digest::write_f64;

    fn ours(f: f64) -> String {
        let mut s = String::new();
        write_f64(&mut s, f);
        s
    }

    fn ecmascript(f: f64) -> String {
        ryu_js::Buffer::new().format_finite(f).to_owned()
    }

    /// xorshift64*: a fixed sequence, so a failure names a value that can be replayed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    #[test]
    fn a_million_random_doubles_print_as_ecmascript_does() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut checked = 0;
        while checked < 1_000_000 {
            // Half random bit patterns (every exponent), half values of ordinary size with 16
            // and 17 significant digits, where a parser that is not correctly rounded slips.
            let bits = rng.next();
            let f = if checked % 2 == 0 {
                f64::from_bits(bits)
            } else {
                (bits >> 11) as f64 / (1u64 << 53) as f64 * 10f64.powi((bits % 40) as i32 - 20)
            };
            if !f.is_finite() {
                continue;
            }
            let text = ours(f);
            assert_eq!(text, ecmascript(f), "{f:e} (bits {:#x})", f.to_bits());
            let back: f64 = serde_json::from_str(&text).unwrap();
            assert!(back == f && (back.to_bits() == f.to_bits() || f == 0.0), "{text} read back as {back:e}");
            checked += 1;
        }
    }

    #[test]
    fn edge_cases_print_as_ecmascript_does() {
        let mut cases = vec![
            0.0,
            -0.0,
            5e-324,
            -5e-324,
            2.225_073_858_507_201e-308, // the largest subnormal
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            1e21,
            1e21 - 65536.0,
            999_999_999_999_999_900_000.0,
            1e-6,
            1e-7,
            9_007_199_254_740_991.0,
            9_007_199_254_740_992.0,
            9_007_199_254_740_993.0,
            123_456_789.123_456_79,
            12_345_678_000_129.125,
            0.1 + 0.2,
        ];
        for e in -324..=308 {
            let p: f64 = format!("1e{e}").parse().unwrap();
            cases.extend([p, -p, p * 3.0, p.next_up(), p.next_down()]);
        }
        for f in cases.into_iter().filter(|f| f.is_finite()) {
            assert_eq!(ours(f), ecmascript(f), "{f:e}");
        }
        assert_eq!(ours(-0.0), "0");
        assert_eq!(ours(1e21), "1e+21");
    }

    /// The parser half of the rule: the issue's numbers, which serde_json without
    /// `float_roundtrip` read one unit in the last place off.
    #[test]
    fn json_numbers_are_read_to_the_nearest_double() {
        for text in ["123456789.12345679", "12345678000129.125", "333333333.3333333", "2.2250738585072014e-308", "4.35"]
        {
            let json: f64 = serde_json::from_str(text).unwrap();
            let nearest: f64 = text.parse().unwrap(); // Rust's parser is correctly rounded
            assert_eq!(json.to_bits(), nearest.to_bits(), "{text}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(20_000))]

        /// Random doubles -> canonical text -> parse -> the same bits, through each reader
        /// defsync has: JSON (client, `serve`, store) and YAML (files, after rendering).
        #[test]
        fn canonical_text_reads_back_to_the_same_double(bits in proptest::num::u64::ANY) {
            let f = f64::from_bits(bits);
            proptest::prop_assume!(f.is_finite());
            let same = |g: f64| g.to_bits() == f.to_bits() || (f == 0.0 && g == 0.0);
            let text = ours(f);
            let json: f64 = serde_json::from_str(&text).unwrap();
            proptest::prop_assert!(same(json), "JSON {} -> {:e}", text, json);
            let stored = serde_json::to_string(&serde_json::json!({"v": f})).unwrap();
            let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
            proptest::prop_assert!(same(stored["v"].as_f64().unwrap()), "the store's JSON");
            let def = defsync::model::Definition { kind: "n".into(), name: "n".into(), spec: serde_json::json!({"v": f}) };
            let file = defsync::yaml::render(&def);
            let read = defsync::yaml::parse(file.as_bytes()).unwrap();
            proptest::prop_assert!(same(read.spec["v"].as_f64().unwrap()), "YAML {}", file);
            proptest::prop_assert_eq!(read.digest(), def.digest());
        }
    }
}
