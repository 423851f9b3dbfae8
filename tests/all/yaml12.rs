//! Tests: how definition files are read as YAML 1.2.2. Each test is one decision, named for it,
//! with the rule of the specification (https://yaml.org/spec/1.2.2/) or the yaml-test-suite
//! case it follows. Hostile files found where serde-saphyr was more lenient (issue 8 §4).

use defsync::yaml::{self, ParseError};
use serde_json::{Value, json};

fn spec_of(body: &str) -> Result<Value, ParseError> {
    yaml::parse(format!("kind: a\nname: b\n{body}").as_bytes()).map(|d| d.spec)
}

/// Refused on `line` (of the whole file: the body starts on line 3), with `hint` in the message.
fn refused(body: &str, line: u64, hint: &str) -> ParseError {
    let e = spec_of(body).expect_err(body);
    assert_eq!(e.line, Some(line), "{body:?}: {e:?}");
    assert!(e.message.contains(hint), "{body:?}: {e:?}");
    e
}

// --- Byte-order marks -------------------------------------------------------------------------

#[test]
fn bom_at_the_start_of_the_file_is_allowed() {
    // §9.1.1: a stream starts with an optional `l-document-prefix`, `c-byte-order-mark?`.
    let d = yaml::parse("\u{feff}kind: a\nname: b\nspec: 1\n".as_bytes()).unwrap();
    assert_eq!(d.spec, json!(1));
}

#[test]
fn bom_inside_a_plain_scalar_is_refused() {
    // §5.2 and §7.3.3: plain scalars are made of `nb-char`, which excludes `c-byte-order-mark`.
    // serde-saphyr kept it as an invisible character of the value.
    let e = refused("spec:\n  x: a\u{feff}b\n", 4, "byte-order mark");
    assert_eq!(e.column, Some(7));
    assert!(e.message.contains("delete it"), "{e:?}");
}

#[test]
fn bom_at_the_start_of_a_line_inside_the_document_is_refused() {
    // §9.1.1: a BOM may open a document prefix, never a line inside a document.
    refused("spec:\n  x: 1\n\u{feff}  y: 2\n", 5, "byte-order mark");
    refused("spec: \u{feff}1\n", 3, "byte-order mark");
}

#[test]
fn bom_inside_a_comment_or_block_scalar_is_refused() {
    // Comments (`c-nb-comment-text`) and block scalars (`nb-char+`) exclude it too.
    refused("spec: 1 # a\u{feff}b\n", 3, "byte-order mark");
    refused("spec:\n  x: |\n    a\u{feff}b\n", 5, "byte-order mark");
}

#[test]
fn bom_inside_quoted_scalars_is_content() {
    // §5.2: "byte order marks are also allowed inside quoted scalars" (JSON compatibility).
    assert_eq!(spec_of("spec: ['a\u{feff}b', \"c\u{feff}\"]\n").unwrap(), json!(["a\u{feff}b", "c\u{feff}"]));
}

#[test]
fn bom_after_a_document_end_marker_is_allowed() {
    // §9.1.1: `l-document-suffix` (`...`) may be followed by a new `l-document-prefix`.
    assert_eq!(spec_of("spec: 1\n...\n\u{feff}").unwrap(), json!(1));
}

// --- Tabs ------------------------------------------------------------------------------------

#[test]
fn tab_as_block_indentation_is_refused() {
    // §6.1: "tab characters must not be used in indentation" (yaml-test-suite DK95/06).
    let e = refused("spec:\n\tx: 1\n", 4, "indent with spaces");
    assert!(e.message.contains("forbids tabs"), "{e:?}");
    refused("spec:\n  x: 1\n  \ty: 2\n", 5, "indent with spaces");
    refused("spec:\n  x:\n\t- 1\n", 5, "indent with spaces");
}

#[test]
fn tab_before_a_nested_block_collection_is_refused() {
    // §8.2.1 `s-l+block-indented`: a compact collection is indented by `s-indent(m)`, spaces
    // only (yaml-test-suite Y79Y/004, /005, /008). serde-saphyr read `- \tx: 1` as a mapping.
    refused("spec:\n- \tx: 1\n", 4, "indent with spaces");
    // granit already refuses a tab right after the `-` of a compact sequence.
    refused("spec:\n-\t- 1\n", 4, "whitespace");
}

#[test]
fn tab_indenting_a_continuation_line_is_refused() {
    // §7.3.1 `s-flow-line-prefix(n)` is `s-indent(n)` then optional white space: the first n
    // characters must be spaces (yaml-test-suite DK95/01, Y79Y/003).
    refused("spec: \"bar\n\tbaz\"\n", 4, "indent with spaces");
    refused("spec: [1,\n\t2]\n", 4, "indent with spaces");
}

#[test]
fn tab_as_separation_is_allowed() {
    // §6.2 `s-separate-in-line` is `s-white+`: tabs separate tokens, after the indentation
    // (yaml-test-suite DK95/00, DK95/02, 6BCT `-\tbaz`, Y79Y/010).
    assert_eq!(spec_of("spec:\n  x:\t1\n  y: 2\t# c\n").unwrap(), json!({"x": 1, "y": 2}));
    assert_eq!(spec_of("spec:\n-\tb\n").unwrap(), json!(["b"]));
    assert_eq!(spec_of("spec:\n \tbar\n").unwrap(), json!("bar"));
    assert_eq!(spec_of("spec: \"bar\n  \tbaz\"\n").unwrap(), json!("bar baz"));
}

#[test]
fn tab_on_a_line_of_white_space_only_is_allowed() {
    // §6.5 `l-empty`: an empty line may hold white space (yaml-test-suite DK95/04, Y79Y/002).
    assert_eq!(spec_of("spec:\n  x: 1\n\t\n  y: 2\n").unwrap(), json!({"x": 1, "y": 2}));
    assert_eq!(spec_of("spec: [\n\t\n 1\n ]\n").unwrap(), json!([1]));
}

// --- Carriage returns and continuation lines -------------------------------------------------

#[test]
fn lone_cr_in_a_flow_key_is_refused() {
    // §5.4: a lone CR is a line break (`b-break`). `{r\retries: 3}` is then a flow mapping whose
    // second line starts at column 1, and §7 (`s-l+flow-in-block(n)` reads the value as
    // `ns-flow-node(n+1)`; `s-flow-line-prefix(n+1)`) requires 1 space there (yaml-test-suite
    // 9C9N, VJP3/00). serde-saphyr folded it into the key `r etries`.
    let e = refused("spec: {r\retries: 3}\n", 4, "lone carriage return");
    assert!(e.message.contains("indented by at least 1 space"), "{e:?}");
}

#[test]
fn under_indented_flow_continuation_is_refused() {
    // The same rule with LF line breaks: flow content is indented more than its parent key.
    refused("spec: {r\nretries: 3}\n", 4, "indented by at least 1 space");
    refused("spec:\n  x: [1,\n  2]\n", 5, "indented by at least 3 spaces");
    refused("spec:\n  x: \"a\n  b\"\n", 5, "indented by at least 3 spaces");
}

#[test]
fn multi_line_flow_mapping_key_is_folded_when_indented() {
    // §7.4.2 `ns-flow-map-yaml-key-entry` takes any `ns-flow-yaml-node`, multi-line plain
    // scalars included, folded by §6.5 (yaml-test-suite NJ66 reads `{ multi\n  line: value}` as
    // the key `multi line`). Only implicit keys of block mappings and of flow-sequence pairs
    // are single-line (§7.4.1 `ns-s-implicit-yaml-key`). So a properly indented lone CR reads
    // as the folded key `r etries`, as the specification defines.
    assert_eq!(spec_of("spec:\n  {r\r   retries: 3}\n").unwrap(), json!({"r retries": 3}));
    assert_eq!(spec_of("spec: {r\n  retries: 3}\n").unwrap(), json!({"r retries": 3}));
}

#[test]
fn flow_comment_lines_and_closing_lines_follow_the_indentation_rule() {
    // §6.6: a comment line may start at column 1 (`s-separate-in-line` allows start-of-line);
    // the closing `]` is flow content and must be indented (yaml-test-suite VJP3/01).
    assert_eq!(spec_of("spec: [1,\n# c\n 2\n ]\n").unwrap(), json!([1, 2]));
    refused("spec: [1,\n 2\n]\n", 5, "indented by at least 1 space");
}

#[test]
fn crlf_and_lone_cr_line_endings_are_line_breaks() {
    // §5.4: CRLF, CR and LF are all line breaks, normalised to LF in scalar content.
    assert_eq!(spec_of("spec:\r\n  x: 1\r\n").unwrap(), json!({"x": 1}));
    let d = yaml::parse(b"kind: a\rname: b\rspec:\r  x: |\r    l1\r    l2\r").unwrap();
    assert_eq!(d.spec, json!({"x": "l1\nl2\n"}));
}

// --- Leading zeros ---------------------------------------------------------------------------

#[test]
fn leading_zero_integer_key_is_its_decimal_string() {
    // §10.3.2: `0755` matches the core schema's int `[-+]?[0-9]+`, so the key is the integer
    // 755, and an integer key becomes its decimal string (contract part 2). serde-saphyr read
    // it as a float and it was refused as "not a floating-point number".
    assert_eq!(spec_of("spec:\n  0755: x\n  007: y\n").unwrap(), json!({"755": "x", "7": "y"}));
    assert_eq!(spec_of("spec: {0755: x}\n").unwrap(), json!({"755": "x"}));
    // `755` and `0755` are the same key.
    refused("spec:\n  755: x\n  0755: y\n", 5, "duplicate key `755`");
}

#[test]
fn leading_zero_integer_values_stay_integers() {
    // §10.3.2 again (issue 7 §4.9): not octal (only `0o` is), not a float, and never `755.0`
    // after a re-render.
    let spec =
        spec_of("spec:\n  mode: 0755\n  seven: 007\n  neg: -007\n  plus: +0755\n  zero: 00\n  list: [0755, -00]\n")
            .unwrap();
    assert_eq!(spec, json!({"mode": 755, "seven": 7, "neg": -7, "plus": 755, "zero": 0, "list": [755, 0]}));
    for n in ["mode", "seven", "neg", "plus", "zero"] {
        assert!(spec[n].is_i64() || spec[n].is_u64(), "{n}: {spec}");
    }
    let d = yaml::parse(b"kind: a\nname: b\nspec:\n  mode: 0755\n").unwrap();
    assert!(yaml::render(&d).contains("mode: 755\n"), "{}", yaml::render(&d));
}

#[test]
fn leading_zero_spellings_that_are_not_plain_integers_keep_their_meaning() {
    // Quoted, it is a string; `!!float` makes it a float; a float spelling stays a float;
    // an alias of a leading-zero integer is that integer.
    let spec = spec_of("spec: ['0755', \"007\", !!str 010, 0755.5, 1e3, &a 010, *a]\n").unwrap();
    assert_eq!(spec, json!(["0755", "007", "010", 755.5, 1000.0, 10, 10]));
    assert!(spec[5].is_u64() && spec[6].is_u64(), "{spec}");
    let e = refused("spec: 1\nbad: 0755\n", 4, "unknown top-level key");
    // The rewritten literal keeps every column in place.
    assert_eq!(e.column, Some(1));
    let e = refused("spec: [0755, 1, .nan]\n", 3, "not finite");
    assert_eq!(e.column, Some(17));
}

#[test]
fn leading_zero_vector_from_the_contract() {
    // Contract v1.1's vector "leading zeros are decimal integers", read from ../shared until
    // the lead copies the new vectors into tests/contract/.
    let Ok(text) = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/contract/vectors.json"))
    else {
        return;
    };
    let vectors: Value = serde_json::from_str(&text).unwrap();
    let case = vectors["yaml"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["title"].as_str().unwrap().contains("leading zeros"))
        .expect("the v1.1 vector");
    let d = yaml::parse(case["file"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(d.digest().to_string(), case["digest"].as_str().unwrap());
    assert!(d.spec["mode"].is_u64() && d.spec["seven"].is_u64(), "{}", d.spec);
}
