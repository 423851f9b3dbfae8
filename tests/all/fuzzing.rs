//! Tests: the fuzz targets' corpus (`fuzz/corpus/<target>/`), replayed on stable through the same
//! property functions the cargo-fuzz targets call (`defsync::fuzzing`), so CI runs it and the
//! properties always compile.

use std::path::Path;

fn replay(target: &str, property: fn(&[u8]) -> Result<(), String>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{}: the seed corpus is missing", dir.display());
    let broken: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let data = std::fs::read(file).unwrap();
            property(&data).err().map(|e| format!("{}: {e}", file.file_name().unwrap().to_string_lossy()))
        })
        .collect();
    assert!(
        broken.is_empty(),
        "{} of {} {target} inputs break the property:\n{}",
        broken.len(),
        files.len(),
        broken.join("\n\n")
    );
}

#[test]
fn yaml_corpus_holds_the_property() {
    replay("yaml", defsync::fuzzing::yaml);
}

#[test]
fn strict_json_corpus_holds_the_property() {
    replay("strict_json", defsync::fuzzing::strict_json);
}

#[test]
fn api_types_corpus_holds_the_property() {
    replay("api_types", defsync::fuzzing::api_types);
}

/// The property itself must be able to fail, or the replay proves nothing.
#[test]
fn properties_catch_a_broken_input() {
    // A definition that validation refuses (a bad kind) has a line; an accepted one round-trips.
    assert!(defsync::fuzzing::yaml(b"kind: workflow\nname: x\nspec: [1, {a: b}]\n").is_ok());
    let e = defsync::yaml::parse(b"kind: Bad Kind\nname: x\n").unwrap_err();
    assert!(e.line.is_some(), "{e:?}");
    assert!(defsync::fuzzing::strict_json(br#"{"a": [1, 2.5, "x"]}"#).is_ok());
}
