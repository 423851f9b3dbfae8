//! Tests: definition files. YAML parsing and rendering against the contract's vectors, a
//! round-trip property, pinned renderings, default paths and scanning.

use defsync::engine::layout::Layout;
use defsync::engine::scan::{self, Entry, EntryKind};
use defsync::model::{Definition, Key, MAX_SAFE_INTEGER};
use defsync::yaml;
use proptest::prelude::*;
use serde_json::{Map, Value};

fn vectors() -> Value {
    // A copy of the contract's vectors, so the tests run where ../shared is absent (GitHub's CI);
    // `vendored_vectors_match_the_contract` keeps it honest.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/contract/vectors.json");
    let text = std::fs::read_to_string(path).expect("the contract's vectors.json");
    serde_json::from_str(&text).expect("vectors.json is JSON")
}

fn cases(group: &str) -> Vec<Value> {
    vectors()[group].as_array().expect("a list of vectors").clone()
}

fn title(case: &Value) -> &str {
    case["title"].as_str().expect("every vector has a title")
}

fn definition(case: &Value) -> Definition {
    Definition {
        kind: case["kind"].as_str().unwrap().to_owned(),
        name: case["name"].as_str().unwrap().to_owned(),
        spec: case["spec"].clone(),
    }
}

#[test]
fn definition_vectors_have_their_canonical_form_and_digest() {
    for case in cases("definitions") {
        let d = definition(&case);
        assert_eq!(d.canonical(), case["canonical"].as_str().unwrap(), "{}", title(&case));
        assert_eq!(d.digest().to_string(), case["digest"].as_str().unwrap(), "{}", title(&case));
        assert_eq!(d.validate().as_deref(), Ok(d.canonical().as_str()), "{}", title(&case));
    }
}

#[test]
fn yaml_vectors_parse_to_their_definition() {
    for case in cases("yaml") {
        let file = case["file"].as_str().unwrap();
        let d = yaml::parse(file.as_bytes()).unwrap_or_else(|e| panic!("{}: {e:?}", title(&case)));
        assert_eq!(d.kind, case["kind"].as_str().unwrap(), "{}", title(&case));
        assert_eq!(d.name, case["name"].as_str().unwrap(), "{}", title(&case));
        // Digests compare numbers as JSON does (`1000.0` is `1000`); the spec must match too.
        assert_eq!(d.digest().to_string(), case["digest"].as_str().unwrap(), "{}", title(&case));
        assert_eq!(d.digest(), definition(&case).digest(), "{}", title(&case));
    }
}

#[test]
fn yaml_vectors_keep_spec_key_order() {
    let case = cases("yaml").into_iter().find(|c| title(c).starts_with("comments")).unwrap();
    let d = yaml::parse(case["file"].as_str().unwrap().as_bytes()).unwrap();
    let keys: Vec<&String> = d.spec.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["retries", "enabled"]);
}

#[test]
fn invalid_yaml_vectors_are_rejected_where_the_parser_knows() {
    // The line of each error, where the parser can know it.
    let lines = [
        ("unknown top-level key", Some(4)),
        ("kind not matching", Some(1)),
        ("empty name", Some(2)),
        ("duplicate key", Some(5)),
        ("two documents", Some(4)),
        ("not a mapping", Some(1)),
        ("integer beyond", Some(4)),
        ("NaN", Some(4)),
        ("infinity", Some(4)),
        ("custom tag", Some(3)),
        ("syntax error", Some(2)),
        ("empty file", None),
    ];
    for case in cases("invalid_yaml") {
        let file = case["file"].as_str().unwrap();
        let e = yaml::parse(file.as_bytes()).expect_err(title(&case));
        assert!(!e.message.is_empty());
        if title(&case).starts_with("alias bomb") {
            // Stopped by the alias budget before any large value is built, not by running out of
            // time or memory.
            assert!(e.message.contains("alias"), "{e:?}");
        }
        if let Some((_, line)) = lines.iter().find(|(t, _)| title(&case).starts_with(t)) {
            assert_eq!(e.line, *line, "{}: {e:?}", title(&case));
            assert_eq!(e.line.is_some(), e.column.is_some(), "{}: {e:?}", title(&case));
        }
    }
}

#[test]
fn error_messages_say_what_to_do() {
    let msg = |text: &str| yaml::parse(text.as_bytes()).unwrap_err().message;
    let m = msg("kind: workflow\nname: x\nspec: {}\nmetadata: {}\n");
    assert!(m.contains("`metadata`") && m.contains("`kind`, `name` and `spec`"), "{m}");
    assert!(msg("name: x\n").contains("`kind` is missing"));
    assert!(msg("kind: workflow\n").contains("`name` is missing"));
    assert!(msg("kind: a\nname: x\n---\nkind: a\nname: y\n").contains("more than one YAML document"));
    assert!(msg("- a\n").contains("not a mapping"));
    assert!(msg("kind: a\nkind: b\nname: x\n").contains("duplicate key `kind`"));
    assert!(msg("kind: a\nname: x\nspec:\n  31: a\n  0x1F: b\n").contains("duplicate key `31`"));
    // A value that might be a secret is never echoed back.
    let m = msg("kind: a\nname: x\nspec:\n  token: !secret hunter2\n");
    assert!(!m.contains("hunter2"), "{m}");
    let m = msg("kind: a\nname: x\nspec:\n  token: 12345678901234567890123\n");
    assert!(!m.contains("12345678901234567890123"), "{m}");
}

#[test]
fn oversized_files_are_refused_before_parsing() {
    let mut text = b"kind: a\nname: b\nspec: ".to_vec();
    text.resize(yaml::MAX_FILE_BYTES + 1, b' ');
    let e = yaml::parse(&text).unwrap_err();
    assert!(e.message.contains("at most 4 MiB"), "{e:?}");
}

fn slug(title: &str) -> String {
    defsync::engine::layout::component(title)
}

#[test]
fn definition_vectors_render_as_pinned() {
    for case in cases("definitions") {
        let d = definition(&case);
        let text = yaml::render(&d);
        insta::assert_snapshot!(format!("render_{}", slug(title(&case))), text);
        let back = yaml::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{}: {e:?}\n{text}", title(&case)));
        assert_eq!(back.digest(), d.digest(), "{}", title(&case));
    }
}

#[test]
fn awkward_definition_renders_as_pinned() {
    let spec = serde_json::json!({
        "<<": "merge-looking key",
        "200": "integer-looking key",
        "": "empty key",
        "quoted": ["yes", "No", "ON", "y", "~", "null", "0755", "0x1F", "1_000", ".5", "1e3",
                   "2024-01-01", "12:30", "- dash", "a: b", "a #b", "#c", "'single'", "\"double\"",
                   " lead", "trail ", "", "=", "...", "@at", "`tick", "%pct", "!bang", "&amp", "*star"],
        "plain": ["hello world", "a:b", "a#b", ".env", "x-1", "naïve café", "🚀"],
        "block": "first\n  indented\nlast\n",
        "block_leading_space": "  starts indented\nnext",
        "block_keep": "a\n\n\n",
        "escaped": "cr\r\nlf", "tab": "a\tb", "bom": "\u{feff}x", "nel": "a\u{85}b",
        "ls": "a\u{2028}b", "nbsp": "\u{a0}x", "ctl": "\u{1}\u{7f}",
        "numbers": [0, -1, 9007199254740991_u64, 1.0, -0.0, 0.1, 1e21, 1e-7, 5e-324, 1.7976931348623157e308],
        "nested": [[1, [2, []]], {"a": {"b": {}}}, [{"x": 1, "y": [true, null]}]],
    });
    let d = Definition { kind: "no".into(), name: "0755 / yes: really #1".into(), spec };
    let text = yaml::render(&d);
    insta::assert_snapshot!("render_awkward", text);
    let back = yaml::parse(text.as_bytes()).unwrap();
    assert_eq!(back.digest(), d.digest());
    assert_eq!(yaml::render(&back), text);
}

// ---------------------------------------------------------------------------------------------
// The round-trip property
// ---------------------------------------------------------------------------------------------

const AWKWARD_WORDS: &[&str] = &[
    "yes",
    "No",
    "ON",
    "off",
    "y",
    "N",
    "true",
    "False",
    "TRUE",
    "null",
    "Null",
    "~",
    "0755",
    "1e3",
    "0x1F",
    "0o17",
    "0b101",
    ".5",
    "1_000",
    "+1",
    "-0",
    "2024-01-01",
    "12:30:00",
    "<<",
    "=",
    "",
    " ",
    "  lead",
    "trail  ",
    "a: b",
    "a #b",
    "#x",
    "-",
    "---",
    "...",
    "? q",
    ".inf",
    "-.Inf",
    ".NaN",
    "|",
    ">",
    "'",
    "\"",
    "\\",
    "@",
    "`",
    "%",
    "!",
    "&a",
    "*a",
    "[x]",
    "{y}",
    ",",
    "\u{a0}",
    "\u{feff}",
    "\u{2028}",
    "\u{85}",
    "\t",
    "\r",
    "\n",
    "\r\n",
    "\n\n",
    " \n",
];

const AWKWARD_CHARS: &[char] = &[
    ' ', '\n', '\r', '\t', ':', '#', '\'', '"', '|', '>', '-', '?', ',', '[', ']', '{', '}', '&', '*', '!', '%', '@',
    '`', '\\', '~', '.', '0', '1', 'a', 'Z', 'é', '😀', '\u{a0}', '\u{feff}', '\u{2028}', '\u{2029}', '\u{85}',
    '\u{0}', '\u{1}', '\u{1b}', '\u{7f}', '\u{9f}', '\u{fffe}',
];

fn awkward_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => proptest::sample::select(AWKWARD_WORDS).prop_map(str::to_owned),
        3 => proptest::collection::vec(
            prop_oneof![3 => proptest::sample::select(AWKWARD_CHARS), 1 => any::<char>()],
            0..6
        )
        .prop_map(String::from_iter),
        1 => "[a-z ]{0,12}",
    ];
    proptest::collection::vec(piece, 1..4).prop_map(|parts| parts.concat())
}

fn awkward_key() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(&["", "200", "0x1F", "true", "null", "<<", "-", "=", "~", "a b"][..])
            .prop_map(str::to_owned),
        awkward_string(),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    let max = MAX_SAFE_INTEGER as i64;
    prop_oneof![
        (-max..=max).prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        proptest::sample::select(
            &[0.0, -0.0, 5e-324, 1e-300, 1e300, 1.7976931348623157e308, -1.5e-10, 1e21, 0.1, 1.0][..]
        )
        .prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        awkward_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((awkward_key(), inner), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Valid names: the awkward strings without control characters, trimmed, at most 200 long.
fn name() -> impl Strategy<Value = String> {
    awkward_string().prop_map(|s| {
        let clean: String = s.chars().filter(|c| !matches!(*c as u32, 0x00..=0x1F | 0x7F..=0x9F)).take(200).collect();
        let trimmed = clean.trim();
        if trimmed.is_empty() { "x".to_owned() } else { trimmed.to_owned() }
    })
}

fn kind() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(&["workflow", "y", "no", "on", "null", "true", "a-1", "e"][..])
            .prop_map(str::to_owned),
        "[a-z][a-z0-9-]{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn rendering_reads_back_to_the_same_digest(kind in kind(), name in name(), spec in value()) {
        let d = Definition { kind, name, spec };
        prop_assume!(d.validate().is_ok());
        let text = yaml::render(&d);
        let back = yaml::parse(text.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e:?}\n{text}")))?;
        prop_assert_eq!(back.digest(), d.digest(), "{}", text);
        prop_assert_eq!(yaml::render(&back), text);
    }
}

// ---------------------------------------------------------------------------------------------
// Default paths
// ---------------------------------------------------------------------------------------------

fn is_safe_path(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let (file, dirs) = parts.split_last().unwrap();
    let Some(stem) = file.strip_suffix(".yaml") else { return false };
    dirs.iter().chain([&stem]).all(|p| {
        !p.is_empty()
            && p.len() <= defsync::engine::layout::MAX_COMPONENT
            && p.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
            && !matches!(*p, "con" | "prn" | "aux" | "nul")
            && !(p.len() == 4 && (p.starts_with("com") || p.starts_with("lpt")) && p.as_bytes()[3].is_ascii_digit())
    })
}

#[test]
fn default_paths_are_safe_and_inside_the_root() {
    let names = [
        "../../etc/passwd",
        "/abs",
        "a/../../b",
        "CON",
        "nul.txt",
        "com1/lpt9",
        "a\0b",
        "..",
        ".",
        "//",
        "",
        "back\\slash\\..\\x",
        "日本語/東京",
        "Ünïcødé",
        "🚀",
        &"long name ".repeat(30),
        &"x/".repeat(100),
        "Notify On Deal",
        "notify on deal",
        "NOTIFY-ON-DEAL",
    ];
    let mut layout = Layout::new([]);
    let mut seen = std::collections::HashSet::new();
    for name in names {
        let path = layout.place(&Key::new("workflow", name));
        assert!(is_safe_path(&path), "{name:?} -> {path}");
        assert!(path.starts_with("workflow/"), "{name:?} -> {path}");
        assert!(seen.insert(path.to_lowercase()), "{name:?} -> {path} collides");
    }
    // Deterministic: the same inputs in the same order give the same paths.
    let run = || {
        let mut l = Layout::new(["workflow/a.yaml"]);
        names.iter().map(|n| l.place(&Key::new("workflow", *n))).collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn default_paths_avoid_existing_files_in_any_case() {
    let mut layout = Layout::new(["workflow/Notify.YAML", "workflow/x", "Setting"]);
    let p = layout.place(&Key::new("workflow", "notify"));
    let suffix = &defsync::digest::Digest::of_canonical("notify").short(8).to_owned();
    assert_eq!(p, format!("workflow/notify-{suffix}.yaml"));
    // A folder is needed where a file is.
    let p = layout.place(&Key::new("workflow", "x/y"));
    assert!(p.starts_with("workflow/x-") && p.ends_with("/y.yaml"), "{p}");
    let p = layout.place(&Key::new("setting", "s"));
    assert!(p.starts_with("setting-") && p.ends_with("/s.yaml"), "{p}");
    // Names that differ only in case.
    let a = layout.place(&Key::new("workflow", "Deal"));
    let b = layout.place(&Key::new("workflow", "DEAL"));
    assert_eq!(a, "workflow/deal.yaml");
    assert_ne!(a.to_lowercase(), b.to_lowercase());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_name_gets_a_safe_unique_path(names in proptest::collection::vec(any::<String>(), 1..8), kind in kind()) {
        let mut layout = Layout::new([]);
        let mut seen = std::collections::HashSet::new();
        for name in names {
            let path = layout.place(&Key::new(kind.clone(), name.clone()));
            prop_assert!(is_safe_path(&path), "{:?} -> {}", name, path);
            prop_assert!(seen.insert(path.to_lowercase()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scanning
// ---------------------------------------------------------------------------------------------

#[test]
fn scan_reports_every_bad_file_with_its_location() {
    let entries = [
        Entry { path: "ok.yaml".into(), kind: EntryKind::File },
        Entry { path: "dup/one.yaml".into(), kind: EntryKind::File },
        Entry { path: "dup/two.yml".into(), kind: EntryKind::File },
        Entry { path: "bad.yaml".into(), kind: EntryKind::File },
        Entry { path: "ignored/x.yaml".into(), kind: EntryKind::File },
        Entry { path: "README.md".into(), kind: EntryKind::File },
        Entry { path: "l.yaml".into(), kind: EntryKind::Symlink },
    ];
    let selection = scan::select(&entries, Some("ignored/\n"), "platform/");
    assert_eq!(selection.files, ["bad.yaml", "dup/one.yaml", "dup/two.yml", "ok.yaml"]);
    assert_eq!(selection.errors.len(), 1);
    assert_eq!(selection.errors[0].path, "platform/l.yaml");
    assert!(selection.errors[0].message.contains("symbolic link"));

    let content = |p: &str| -> Vec<u8> {
        match p {
            "ok.yaml" => b"kind: workflow\nname: ok\n".to_vec(),
            "bad.yaml" => b"kind: workflow\nname: x\nspec:\n  a: 1\n  a: 2\n".to_vec(),
            _ => b"kind: workflow\nname: dup\n".to_vec(),
        }
    };
    let files = selection.files.iter().map(|p| (p.clone(), content(p))).collect();
    let scanned = scan::parse_files(files, "platform");
    assert_eq!(scanned.files.keys().collect::<Vec<_>>(), [&Key::new("workflow", "ok")]);
    assert_eq!(scanned.files[&Key::new("workflow", "ok")].path, "ok.yaml");
    let errors: Vec<(&str, Option<u64>)> = scanned.errors.iter().map(|e| (e.path.as_str(), e.line)).collect();
    assert_eq!(
        errors,
        [("platform/bad.yaml", Some(5)), ("platform/dup/one.yaml", None), ("platform/dup/two.yml", None)]
    );
    assert!(scanned.errors[1].message.contains("platform/dup/two.yml"));
    assert!(scanned.errors[2].message.contains("platform/dup/one.yaml"));
}

#[test]
fn scan_of_many_files_is_deterministic() {
    let file = |i: usize| {
        let mut text = format!(
            "kind: workflow\nname: flow {i}\nspec:\n  trigger:\n    type: event\n    event: deal.created\n  steps:\n"
        );
        while text.len() < 1000 {
            text.push_str(
                "    - id: post\n      action: slack.post_message\n      text: \"New deal: {{deal.name}}\"\n",
            );
        }
        (format!("flows/{i:05}.yaml"), text.into_bytes())
    };
    let files: Vec<_> = (0..4000).map(file).collect();
    let scanned = scan::parse_files(files.clone(), "");
    assert!(scanned.errors.is_empty(), "{:?}", scanned.errors.first());
    assert_eq!(scanned.files.len(), 4000);
    let mut reversed = files;
    reversed.reverse();
    let again = scan::parse_files(reversed, "");
    let digests = |s: &scan::Scan| s.files.values().map(|f| (f.path.clone(), f.digest.clone())).collect::<Vec<_>>();
    assert_eq!(digests(&scanned), digests(&again));
}

/// The vendored copies (the contract, its vectors, GitHub's reference data) must equal their
/// sources wherever those are beside the repository, as they are in this project's workspace.
/// A clone of the repository alone has no `../shared`: the check then says it skipped.
#[test]
fn vendored_vectors_match_the_contract() {
    let root = env!("CARGO_MANIFEST_DIR");
    let shared = std::path::Path::new(root).join("../shared");
    if !shared.is_dir() {
        eprintln!("../shared is absent: vendored copies not compared (skipped)");
        return;
    }
    let copies = [
        ("contract/vectors.json", "tests/contract/vectors.json"),
        ("github/openapi-subset.json", "tests/vendor/github/openapi-subset.json"),
        ("github/LICENSE-openapi.md", "tests/vendor/github/LICENSE-openapi.md"),
        ("github/octokit-fixtures/LICENSE.md", "tests/vendor/github/octokit-fixtures/LICENSE.md"),
        ("github/octokit-fixtures/errors.json", "tests/vendor/github/octokit-fixtures/errors.json"),
        ("github/octokit-fixtures/git-refs.json", "tests/vendor/github/octokit-fixtures/git-refs.json"),
        ("github/octokit-fixtures/get-repository.json", "tests/vendor/github/octokit-fixtures/get-repository.json"),
    ];
    for (source, vendored) in copies {
        let Ok(contract) = std::fs::read(shared.join(source)) else {
            eprintln!("../shared/{source} is absent: {vendored} not compared (skipped)");
            continue;
        };
        let ours = std::fs::read(std::path::Path::new(root).join(vendored)).unwrap();
        assert!(contract == ours, "{vendored} differs from ../shared/{source}: copy it again");
    }
    // docs/contract.md is the contract's README (v1.1) extended to v1.2: the same text from the
    // title on, except for the vectors link, the version in the title, and the v1.2 additions,
    // each between a `<!-- v1.2 -->` line and a `<!-- /v1.2 -->` line.
    if let Ok(readme) = std::fs::read_to_string(shared.join("contract/README.md")) {
        let expected =
            readme.replacen("`vectors.json` holds", "[`vectors.json`](../tests/contract/vectors.json) holds", 1);
        let doc = std::fs::read_to_string(std::path::Path::new(root).join("docs/contract.md")).unwrap();
        let title = doc.find("# defsync contract").expect("docs/contract.md starts with the contract's title");
        let (v11, additions) = without_v1_2_additions(&doc[title..]);
        assert!(additions > 0, "docs/contract.md has no v1.2 additions, yet says v1.2");
        assert!(
            v11 == expected,
            "docs/contract.md, without its v1.2 additions, differs from ../shared/contract/README.md (v1.1): \
             change the v1.1 text only inside <!-- v1.2 --> blocks"
        );
    }
}

/// The contract text as v1.1 had it: the title's version set back to v1.1 and every block from a
/// `<!-- v1.2 -->` line to a `<!-- /v1.2 -->` line removed; with the number of blocks removed.
fn without_v1_2_additions(doc: &str) -> (String, usize) {
    let (first, rest) = doc.split_once('\n').expect("a title line");
    assert_eq!(first, "# defsync contract v1.2", "the title names the version");
    let mut out = String::from("# defsync contract v1.1\n");
    let mut blocks = 0;
    let mut inside = false;
    for line in rest.split_inclusive('\n') {
        match line.trim_end() {
            "<!-- v1.2 -->" => {
                assert!(!inside, "a <!-- v1.2 --> block opens inside another");
                inside = true;
            }
            "<!-- /v1.2 -->" => {
                assert!(inside, "a <!-- /v1.2 --> line closes no block");
                inside = false;
                blocks += 1;
            }
            _ if inside => {}
            _ => out.push_str(line),
        }
    }
    assert!(!inside, "a <!-- v1.2 --> block is never closed");
    (out, blocks)
}

#[test]
fn v1_2_additions_are_removed_exactly() {
    let doc = "# defsync contract v1.2\n\nkept\n<!-- v1.2 -->\nnew\n<!-- /v1.2 -->\nalso kept\n";
    assert_eq!(without_v1_2_additions(doc), ("# defsync contract v1.1\n\nkept\nalso kept\n".into(), 1));
    // Text outside a block is never dropped, so an edit to v1.1 text is seen.
    let edited = "# defsync contract v1.2\nkept, edited\n";
    assert_ne!(without_v1_2_additions(edited).0, "# defsync contract v1.1\nkept\n");
}
