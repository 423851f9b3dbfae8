//! Definition files: parsing with serde-saphyr under the contract's YAML 1.2 core schema and
//! resource budgets (contract part 2), and deterministic rendering back to YAML.

use std::cell::Cell;
use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{self, Event, ScalarStyle};
use serde_saphyr::{DuplicateKeyPolicy, MergeKeyPolicy, MessageFormatter as _, NonFiniteFloatPolicy};

use crate::model::{self, Definition, MAX_DEPTH, MAX_SAFE_INTEGER};

mod strict;

/// Files larger than this are refused before parsing: a definition's canonical form is at most
/// 1 MiB, so a bigger file can only be padding or an attack on the parser.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// A definition file that cannot be used, with where the parser found the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

impl ParseError {
    fn new(message: impl Into<String>) -> Self {
        ParseError { line: None, column: None, message: message.into() }
    }

    fn at(line: u64, column: u64, message: impl Into<String>) -> Self {
        ParseError { line: Some(line), column: Some(column), message: message.into() }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// The serde-saphyr configuration that implements the contract's reading rules, for specs
/// nested at most `max_spec_depth` levels.
fn options(max_spec_depth: usize) -> serde_saphyr::Options {
    // Budgets sized for files of at most `MAX_FILE_BYTES` whose canonical form must fit in
    // 1 MiB: every node costs at least a byte or two of canonical JSON, so anything that needs
    // more events than this could never be a valid definition. The alias limits are what stop
    // the "billion laughs" family quickly, before any large value is built.
    let budget = serde_saphyr::budget! {
        max_reader_input_bytes: Some(MAX_FILE_BYTES),
        max_events: 2_000_000,
        max_aliases: 10_000,
        max_anchors: 10_000,
        max_recorded_anchor_events: 500_000,
        max_recorded_anchor_bytes: 8 * 1024 * 1024,
        // The top-level mapping, `max_spec_depth` levels of spec and one to spare, so that the
        // visitors, which apply the exact rule, refuse first. It protects the parser's and our
        // stacks.
        max_depth: max_spec_depth + 2,
        // The parser itself does not recurse: its own limit can stay at the contract's.
        flow_nesting_limit: MAX_DEPTH + 2,
        max_documents: 2,
        max_nodes: 1_000_000,
        max_total_scalar_bytes: 2 * MAX_FILE_BYTES,
        max_merge_keys: 0,
    };
    serde_saphyr::options! {
        budget: budget,
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 200_000,
            max_replay_stack_depth: 32,
        },
        // Comments are never used: do not capture them.
        emit_comments: false,
        // Duplicates reach the visitors, which refuse them (see `KeySeed::check`).
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        // YAML 1.2 has no merge key. `<<` is an ordinary key, so a spec key spelled `<<` that a
        // platform sends survives a round trip through a file instead of silently merging.
        merge_keys: MergeKeyPolicy::AsOrdinary,
        // YAML 1.2 core: `0755` is the decimal 755, never octal, and not a string either.
        legacy_octal_numbers: false,
        leading_zero_numbers_as_strings: false,
        // YAML 1.2 core has no `1_000` integers: such a scalar is a string.
        underscored_numbers_as_strings: true,
        // YAML 1.2 core booleans only: `yes`, `no`, `on`, `off`, `y`, `n` stay strings.
        strict_booleans: true,
        no_schema: false,
        // `!secret` and every other application tag is an error, never silently dropped.
        reject_unsupported_tags: true,
        // `.nan`, `.inf` and literals that overflow f64 are not JSON.
        non_finite_float_policy: NonFiniteFloatPolicy::Reject,
        // Messages go into reports with the line and column kept apart; no source snippets,
        // which could also copy secret values into logs.
        with_snippet: false,
    }
}

/// Parses one definition file and checks it against contract part 1 (kind, name, spec).
pub fn parse(text: &[u8]) -> Result<Definition, ParseError> {
    parse_with_canonical(text).map(|(definition, _)| definition)
}

/// [`parse`], with the canonical form that validation computed, so that callers do not
/// serialise twice.
pub(crate) fn parse_with_canonical(text: &[u8]) -> Result<(Definition, String), ParseError> {
    match parse_limited(text, SHALLOW_DEPTH) {
        Ok(parsed) => Ok(parsed),
        Err(Failure::Invalid(error)) => Err(error),
        // serde's recursive descent needs several KiB of stack per nesting level (tens of KiB
        // in debug builds), more than a 2 MiB worker thread has at the depth the contract
        // allows. The rare deep file is read again on a thread with room for it.
        Err(Failure::TooDeep) => std::thread::scope(|scope| {
            let parser = std::thread::Builder::new()
                .name("defsync-yaml".into())
                .stack_size(PARSE_STACK_BYTES)
                .spawn_scoped(scope, || parse_with_canonical_on_big_stack(text))
                .map_err(|e| ParseError::new(format!("cannot start a thread to read a deeply nested file: {e}")))?;
            parser.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
    }
}

/// The stack that [`parse_with_canonical_on_big_stack`] needs for the deepest file the budgets
/// let through, with a wide margin.
pub(crate) const PARSE_STACK_BYTES: usize = 16 * 1024 * 1024;

/// How deep a spec may nest in a first reading on any thread (2 MiB of stack is plenty).
const SHALLOW_DEPTH: usize = 32;

/// [`parse_with_canonical`] for a thread with at least [`PARSE_STACK_BYTES`] of stack.
pub(crate) fn parse_with_canonical_on_big_stack(text: &[u8]) -> Result<(Definition, String), ParseError> {
    parse_limited(text, MAX_DEPTH).map_err(|failure| match failure {
        Failure::Invalid(error) => error,
        Failure::TooDeep => unreachable!("the full depth is the contract's limit"),
    })
}

enum Failure {
    Invalid(ParseError),
    /// Nested deeper than this reading allowed, but maybe not deeper than the contract does.
    TooDeep,
}

impl From<ParseError> for Failure {
    fn from(error: ParseError) -> Self {
        Failure::Invalid(error)
    }
}

/// Reads a file whose spec nests at most `max_spec_depth` levels; deeper is [`Failure::TooDeep`]
/// unless that is the contract's own limit.
fn parse_limited(text: &[u8], max_spec_depth: usize) -> Result<(Definition, String), Failure> {
    if text.len() > MAX_FILE_BYTES {
        return Err(ParseError::new(format!(
            "the file is {} bytes; a definition file may be at most {} MiB: move large content elsewhere",
            text.len(),
            MAX_FILE_BYTES / (1024 * 1024)
        ))
        .into());
    }
    let text = std::str::from_utf8(text).map_err(|e| {
        let (line, column) = line_column(&text[..e.valid_up_to()]);
        ParseError::at(line, column, "the file is not valid UTF-8: save it as UTF-8")
    })?;

    // YAML 1.2 rules serde-saphyr does not enforce; and its reading of `0755` as a float.
    let strict = strict::check(text)?;
    let normalised = strict::without_leading_zeros(text, &strict.leading_zeros);
    let text = normalised.as_deref().unwrap_or(text);

    let ctx = Ctx { max_depth: max_spec_depth, ..Ctx::default() };
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options(max_spec_depth), |d| {
        DocumentSeed { ctx: &ctx }.deserialize(d)
    });
    let (kind, name, spec) = parsed.map_err(|e| {
        if max_spec_depth < MAX_DEPTH && (ctx.too_deep.get() || is_depth_breach(&e)) {
            return Failure::TooDeep;
        }
        if matches!(e.without_snippet(), serde_saphyr::Error::Eof { .. }) && is_blank(text) {
            return ParseError::new(format!("the file is empty: {TOP_LEVEL_SHAPE}")).into();
        }
        let mut error = from_saphyr(e);
        if error.line.is_none() && ctx.root_not_a_mapping.get() {
            (error.line, error.column) = first_content(text);
        }
        error.into()
    })?;

    if ctx.recheck.get() || needs_recheck(text.as_bytes()) {
        recheck(text)?;
    }

    let definition = Definition { kind, name, spec: spec.unwrap_or(Value::Null) };
    let canonical = definition.validate().map_err(ParseError::new)?;
    Ok((definition, canonical))
}

fn is_depth_breach(mut err: &serde_saphyr::Error) -> bool {
    while let serde_saphyr::Error::AliasError { error, .. } | serde_saphyr::Error::WithSnippet { error, .. } = err {
        err = error;
    }
    matches!(err, serde_saphyr::Error::Budget { breach: serde_saphyr::budget::BudgetBreach::Depth { .. }, .. })
}

/// True when the text holds no YAML node, only blank lines and comments.
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim_start_matches(['\u{feff}', ' ', '\t']);
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    })
}

/// Where the first node of the document starts (after comments, directives and `---`).
fn first_content(text: &str) -> (Option<u64>, Option<u64>) {
    let mut in_directives = text.lines().any(|l| l.trim_end() == "---");
    for (i, line) in text.lines().enumerate() {
        let content = line.trim_start_matches(['\u{feff}', ' ', '\t']);
        if content.is_empty() || content.starts_with('#') || (in_directives && content.starts_with('%')) {
            continue;
        }
        if in_directives && line.trim_end() == "---" {
            in_directives = false;
            continue;
        }
        let column = line.chars().count() - content.chars().count() + 1;
        return (Some(i as u64 + 1), Some(column as u64));
    }
    (None, None)
}

/// 1-based line and column (in characters) of the end of `prefix`.
fn line_column(prefix: &[u8]) -> (u64, u64) {
    let line_start = prefix.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let line = prefix.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    let column = String::from_utf8_lossy(&prefix[line_start..]).chars().count() as u64 + 1;
    (line, column)
}

fn from_saphyr(err: serde_saphyr::Error) -> ParseError {
    // Where an alias was used is the better place to point at; what went wrong is inside.
    let location = err.location().filter(|l| *l != serde_saphyr::Location::UNKNOWN);
    let mut err = &err;
    while let serde_saphyr::Error::AliasError { error, .. } | serde_saphyr::Error::WithSnippet { error, .. } = err {
        err = error;
    }
    let message = match err {
        serde_saphyr::Error::MultipleDocuments { .. } => {
            "the file holds more than one YAML document: keep one definition per file, without a second `---`".to_owned()
        }
        serde_saphyr::Error::Budget { breach, .. } => format!(
            "the file is too large or too complex to read safely ({}): simplify it, and expand anchors and aliases by hand",
            budget_text(breach)
        ),
        serde_saphyr::Error::AliasReplayLimitExceeded { .. }
        | serde_saphyr::Error::AliasExpansionLimitExceeded { .. }
        | serde_saphyr::Error::AliasReplayStackDepthExceeded { .. } => {
            "aliases expand to too much data (an alias bomb?): write the values out or use fewer aliases".to_owned()
        }
        serde_saphyr::Error::UnsupportedTag { tag, .. } => format!(
            "the tag `{}` is not supported: definition files use plain YAML 1.2 values; remove the tag (quote the value if it is a string)",
            tag.escape_debug()
        ),
        serde_saphyr::Error::DuplicateMappingKey { .. } => format!(
            "{}: every key may appear only once in a mapping; remove or rename one",
            serde_saphyr::UserMessageFormatter.format_message(err)
        ),
        serde_saphyr::Error::NonFiniteFloat { .. } => {
            "this number is not finite (NaN or infinity), which JSON cannot carry: use a finite number, null or a string".to_owned()
        }
        serde_saphyr::Error::ExternalMessage { .. } => format!(
            "invalid YAML: {}: fix the syntax here",
            serde_saphyr::UserMessageFormatter.format_message(err)
        ),
        _ => serde_saphyr::UserMessageFormatter.format_message(err).into_owned(),
    };
    match location {
        Some(loc) => ParseError::at(loc.line(), loc.column(), message),
        None => ParseError::new(message),
    }
}

fn budget_text(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    match breach {
        B::Depth { .. } => format!("nested more than {MAX_DEPTH} levels deep"),
        B::Aliases { .. } | B::AliasAnchorRatio { .. } => "too many aliases".into(),
        B::Anchors { .. } => "too many anchors".into(),
        B::Documents { .. } => "too many documents".into(),
        B::Events { .. } | B::Nodes { .. } => "too many values".into(),
        B::ScalarBytes { .. } => "too much text".into(),
        other => format!("{other:?}"),
    }
}

/// State shared by the visitors of one parse.
#[derive(Default)]
struct Ctx {
    /// Set when a value might hide something serde-saphyr resolves differently from the YAML
    /// 1.2 core schema (see [`recheck`]).
    recheck: Cell<bool>,
    /// The top-level node is not a mapping, or lacks `kind` or `name`; serde-saphyr gives no
    /// location for that, so the error points at the node's start.
    root_not_a_mapping: Cell<bool>,
    /// How deep the spec may nest in this reading.
    max_depth: usize,
    /// The spec nests deeper than `max_depth`.
    too_deep: Cell<bool>,
}

/// True when the raw text holds something that the value visitors cannot judge on their own:
/// a tag (`!`), or a number spelling that YAML 1.1 and serde-saphyr read as an integer but the
/// YAML 1.2 core schema reads as a string (`0b101`, `+0x1F`, `-0o17`).
fn needs_recheck(bytes: &[u8]) -> bool {
    // A tag starts a node: at the start of a line, after white space, or after `[`, `{`, `,`.
    let tag =
        |before: Option<&u8>| before.is_none_or(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b','));
    bytes.iter().enumerate().any(|(i, b)| {
        *b == b'!' && tag(i.checked_sub(1).map(|j| &bytes[j]))
            || *b == b'0' && matches!(bytes.get(i + 1), Some(b'b' | b'B' | b'X' | b'O'))
            || matches!(b, b'+' | b'-')
                && bytes.get(i + 1) == Some(&b'0')
                && matches!(bytes.get(i + 2), Some(b'x' | b'X' | b'o' | b'O'))
    })
}

/// A second, event-level pass for the rare files that need it. serde-saphyr resolves scalars
/// itself and hands the visitors only the result, so this pass sees what they cannot:
/// - an integer literal too large for 64 bits, which serde-saphyr turns into a float (or, in
///   hex, a string) where the contract demands an error;
/// - tags that serde-saphyr accepts but the core schema does not have (`!!binary`,
///   `!!timestamp`, `!!merge`, ...);
/// - `0b101`, `+0x1F` and the like, which YAML 1.1 reads as integers and YAML 1.2 as strings.
///   Rather than guess, they are errors that say to quote them or write them in decimal.
fn recheck(text: &str) -> Result<(), ParseError> {
    for event in granit_parser::Parser::new_from_str(text) {
        // serde-saphyr has already parsed this text successfully.
        let Ok((event, span)) = event else { return Ok(()) };
        let at = |message: String| ParseError::at(span.start.line() as u64, span.start.col() as u64 + 1, message);
        let tag = match &event {
            Event::Scalar(_, _, _, tag) | Event::SequenceStart(_, _, tag) | Event::MappingStart(_, _, tag) => {
                tag.as_deref()
            }
            _ => continue,
        };
        if let Some(tag) = tag {
            // The non-specific tag `!` only says "not resolved by content": a string.
            let non_specific = tag.handle().is_empty() && tag.suffix() == "!";
            if !(non_specific || tag.is_yaml_core_schema()) {
                return Err(at(format!(
                    "the tag `{}{}` is not supported: definition files use plain YAML 1.2 values; remove the tag (quote the value if it is a string)",
                    tag.original_handle().escape_debug(),
                    tag.suffix().escape_debug()
                )));
            }
        }
        if let Event::Scalar(value, ScalarStyle::Plain, _, None) = &event {
            match core_int(value) {
                CoreInt::Safe | CoreInt::NotInt => {}
                CoreInt::TooLarge => return Err(at(too_large_integer())),
                CoreInt::Ambiguous => {
                    return Err(at(format!(
                        "`{}` is an integer to YAML 1.1 readers but a string to YAML 1.2: quote it if it is a string, or write the number in decimal",
                        value.escape_debug()
                    )));
                }
            }
        }
    }
    Ok(())
}

enum CoreInt {
    NotInt,
    Safe,
    TooLarge,
    Ambiguous,
}

/// Classifies a plain scalar by the YAML 1.2 core schema's integer rules.
fn core_int(s: &str) -> CoreInt {
    let (signed, unsigned) = match s.strip_prefix(['-', '+']) {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let radix_digits = |prefix: [&str; 2], radix: u32| {
        prefix
            .iter()
            .find_map(|p| unsigned.strip_prefix(p))
            .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_digit(radix) || c == '_'))
    };
    if let Some(digits) =
        radix_digits(["0x", "0X"], 16).map(|d| (d, 16)).or_else(|| radix_digits(["0o", "0O"], 8).map(|d| (d, 8)))
    {
        // The core schema spells only `0x` and `0o` lower case, unsigned, without `_`.
        if signed || digits.0.contains('_') || unsigned.as_bytes()[1].is_ascii_uppercase() {
            return CoreInt::Ambiguous;
        }
        return magnitude(digits.0, digits.1);
    }
    if radix_digits(["0b", "0B"], 2).is_some() {
        return CoreInt::Ambiguous;
    }
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return magnitude(unsigned, 10);
    }
    CoreInt::NotInt
}

fn magnitude(digits: &str, radix: u32) -> CoreInt {
    match u64::from_str_radix(digits, radix) {
        Ok(v) if v <= MAX_SAFE_INTEGER => CoreInt::Safe,
        _ => CoreInt::TooLarge,
    }
}

fn too_large_integer() -> String {
    "this integer is beyond ±(2^53−1), which JSON cannot carry exactly: quote it as a string".into()
}

/// Shortens and escapes text from the file (keys, tags) for a message.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(60).flat_map(char::escape_debug).collect();
    if s.chars().nth(60).is_some() {
        out.push('…');
    }
    out
}

/// Reads a sequence to its end, so that a syntax error inside it (`[unclosed`) is what gets
/// reported rather than the shape of the half-read value. Values are read as spec values, whose
/// depth is checked even through aliases.
fn drain_seq<'de, A: SeqAccess<'de>>(ctx: &Ctx, mut seq: A) -> Result<(), A::Error> {
    while seq.next_element_seed(ValueSeed { ctx, depth: 1 })?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(ctx: &Ctx, mut map: A) -> Result<(), A::Error> {
    while map.next_key_seed(KeySeed { top_level: false, taken: &|_| false })?.is_some() {
        map.next_value_seed(ValueSeed { ctx, depth: 1 })?;
    }
    Ok(())
}

/// The top level: a mapping with `kind`, `name` and optional `spec`.
struct DocumentSeed<'a> {
    ctx: &'a Ctx,
}

impl<'de> DeserializeSeed<'de> for DocumentSeed<'_> {
    type Value = (String, String, Option<Value>);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(DocumentVisitor { ctx: self.ctx })
    }
}

const TOP_LEVEL_SHAPE: &str = "a definition file is one mapping with `kind` and `name` (strings) and optionally `spec`";

struct DocumentVisitor<'a> {
    ctx: &'a Ctx,
}

impl DocumentVisitor<'_> {
    fn not_a_mapping<E: de::Error>(what: &str) -> E {
        E::custom(format!("the file holds {what}, not a mapping: {TOP_LEVEL_SHAPE}"))
    }
}

impl<'de> Visitor<'de> for DocumentVisitor<'_> {
    type Value = (String, String, Option<Value>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(TOP_LEVEL_SHAPE)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut kind, mut name, mut spec) = (None, None, None);
        // Keys are checked inside their seed: serde-saphyr attaches the key's location to
        // errors raised there, but not to errors raised here, between key and value.
        while let Some(key) = map.next_key_seed(KeySeed {
            top_level: true,
            taken: &|k| match k {
                "kind" => kind.is_some(),
                "name" => name.is_some(),
                _ => spec.is_some(),
            },
        })? {
            match key.as_str() {
                "kind" => kind = Some(map.next_value_seed(FieldSeed { ctx: self.ctx, field: Field::Kind })?),
                "name" => name = Some(map.next_value_seed(FieldSeed { ctx: self.ctx, field: Field::Name })?),
                _ => spec = Some(map.next_value_seed(ValueSeed { ctx: self.ctx, depth: 0 })?),
            }
        }
        let missing = |field: &str| {
            // serde-saphyr has no location once the mapping has ended: point at its start.
            self.ctx.root_not_a_mapping.set(true);
            de::Error::custom(format!("`{field}` is missing: {TOP_LEVEL_SHAPE}; add `{field}:`"))
        };
        let kind = kind.ok_or_else(|| missing("kind"))?;
        let name = name.ok_or_else(|| missing("name"))?;
        Ok((kind, name, spec))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(E::custom(format!("the file is empty: {TOP_LEVEL_SHAPE}")))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(self.ctx, seq)?;
        self.ctx.root_not_a_mapping.set(true);
        Err(Self::not_a_mapping("a sequence"))
    }

    fn visit_bool<E: de::Error>(self, _v: bool) -> Result<Self::Value, E> {
        self.ctx.root_not_a_mapping.set(true);
        Err(Self::not_a_mapping("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _v: i64) -> Result<Self::Value, E> {
        self.ctx.root_not_a_mapping.set(true);
        Err(Self::not_a_mapping("a number"))
    }

    fn visit_u64<E: de::Error>(self, _v: u64) -> Result<Self::Value, E> {
        self.ctx.root_not_a_mapping.set(true);
        Err(Self::not_a_mapping("a number"))
    }

    fn visit_f64<E: de::Error>(self, _v: f64) -> Result<Self::Value, E> {
        self.ctx.root_not_a_mapping.set(true);
        Err(Self::not_a_mapping("a number"))
    }

    fn visit_str<E: de::Error>(self, _v: &str) -> Result<Self::Value, E> {
        self.ctx.root_not_a_mapping.set(true);
        Err(Self::not_a_mapping("a string"))
    }
}

#[derive(Clone, Copy)]
enum Field {
    Kind,
    Name,
}

impl Field {
    fn as_str(self) -> &'static str {
        match self {
            Field::Kind => "kind",
            Field::Name => "name",
        }
    }
}

/// `kind` or `name`: a string, checked here so that the error carries the value's location.
struct FieldSeed<'a> {
    ctx: &'a Ctx,
    field: Field,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl FieldSeed<'_> {
    fn not_a_string<E: de::Error>(self, what: &str) -> E {
        let field = self.field.as_str();
        E::custom(format!("`{field}` must be a string, not {what}: put the value in quotes (`{field}: 'value'`)"))
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "`{}` as a string", self.field.as_str())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.visit_string(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        let checked = match self.field {
            Field::Kind => model::validate_kind(&v),
            Field::Name => model::validate_name(&v),
        };
        checked.map_err(E::custom)?;
        Ok(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(self.not_a_string("null (an empty value)"))
    }

    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        self.visit_unit()
    }

    fn visit_bool<E: de::Error>(self, _v: bool) -> Result<String, E> {
        Err(self.not_a_string("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _v: i64) -> Result<String, E> {
        Err(self.not_a_string("a number"))
    }

    fn visit_u64<E: de::Error>(self, _v: u64) -> Result<String, E> {
        Err(self.not_a_string("a number"))
    }

    fn visit_f64<E: de::Error>(self, _v: f64) -> Result<String, E> {
        Err(self.not_a_string("a number"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<String, A::Error> {
        drain_seq(self.ctx, seq)?;
        Err(self.not_a_string("a sequence"))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<String, A::Error> {
        drain_map(self.ctx, map)?;
        Err(self.not_a_string("a mapping"))
    }
}

/// A mapping key: a string, or an integer that becomes its decimal string as JSON requires.
struct KeySeed<'a> {
    /// The file's top-level mapping, which allows only `kind`, `name` and `spec`.
    top_level: bool,
    /// Whether a key was already read in this mapping.
    taken: &'a dyn Fn(&str) -> bool,
}

impl KeySeed<'_> {
    fn refuse<E: de::Error>(what: &str) -> E {
        E::custom(format!("a mapping key must be a string or an integer, not {what}: quote the key (`'key': value`)"))
    }

    fn check<E: de::Error>(self, key: String) -> Result<String, E> {
        if self.top_level && !matches!(key.as_str(), "kind" | "name" | "spec") {
            return Err(E::custom(format!(
                "unknown top-level key `{}`: a definition file holds only `kind`, `name` and `spec`; move it under `spec` or remove it",
                shown(&key)
            )));
        }
        if (self.taken)(&key) {
            // serde-saphyr passes duplicates through (checking them here is cheaper, and also
            // catches keys that collide only once integers become strings: `31:` and `0x1F:`).
            return Err(E::custom(format!(
                "duplicate key `{}`: every key may appear only once in a mapping (integer keys count by their decimal value); remove or rename one",
                shown(&key)
            )));
        }
        Ok(key)
    }
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or integer mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.check(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        self.check(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        self.check(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        self.check(v.to_string())
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
        self.check(v.to_string())
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
        self.check(v.to_string())
    }

    fn visit_bool<E: de::Error>(self, _v: bool) -> Result<String, E> {
        Err(Self::refuse("a boolean"))
    }

    fn visit_f64<E: de::Error>(self, _v: f64) -> Result<String, E> {
        Err(Self::refuse("a floating-point number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(Self::refuse("null (an empty key)"))
    }

    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<String, A::Error> {
        Err(Self::refuse("a sequence"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<String, A::Error> {
        Err(Self::refuse("a mapping"))
    }
}

/// Any spec value, built as JSON with the contract's checks applied as it is read.
struct ValueSeed<'a> {
    ctx: &'a Ctx,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl ValueSeed<'_> {
    fn child(&self) -> Self {
        ValueSeed { ctx: self.ctx, depth: self.depth + 1 }
    }

    /// The rule of `model::validate_spec`, checked as each array or mapping opens, before its
    /// children are read: that stops deep input cheaply, and aliases, which replay nodes
    /// without the parser's depth budget seeing them, are caught too.
    fn open<E: de::Error>(&self) -> Result<(), E> {
        if self.depth >= self.ctx.max_depth {
            self.ctx.too_deep.set(true);
            return Err(E::custom(model::too_deep()));
        }
        Ok(())
    }
}

/// Could this string be the leftover of a number serde-saphyr could not hold? A hex or octal
/// literal beyond 64 bits becomes a string (a decimal one becomes a float). Quoted strings of
/// that form land here too; they only cost a recheck.
fn looks_like_radix_int(s: &str) -> bool {
    let digits = |rest: &str, radix: u32| !rest.is_empty() && rest.chars().all(|c| c.is_digit(radix));
    s.strip_prefix("0x").is_some_and(|rest| digits(rest, 16))
        || s.strip_prefix("0o").is_some_and(|rest| digits(rest, 8))
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-compatible value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        if v.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(E::custom(too_large_integer()));
        }
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        if v > MAX_SAFE_INTEGER {
            return Err(E::custom(too_large_integer()));
        }
        Ok(Value::Number(v.into()))
    }

    fn visit_i128<E: de::Error>(self, _v: i128) -> Result<Value, E> {
        Err(E::custom(too_large_integer()))
    }

    fn visit_u128<E: de::Error>(self, _v: u128) -> Result<Value, E> {
        Err(E::custom(too_large_integer()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // A decimal literal beyond u64 arrives here as a float; the recheck tells it apart
        // from a genuine `1e20`.
        if v.fract() == 0.0 && v.abs() > MAX_SAFE_INTEGER as f64 {
            self.ctx.recheck.set(true);
        }
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("this number is not finite (NaN or infinity), which JSON cannot carry"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.visit_string(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        if looks_like_radix_int(&v) {
            self.ctx.recheck.set(true);
        }
        Ok(Value::String(v))
    }

    fn visit_bytes<E: de::Error>(self, _v: &[u8]) -> Result<Value, E> {
        Err(E::custom("binary data is not supported: use a string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.open()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(self.child())? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.open()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed { top_level: false, taken: &|k| object.contains_key(k) })? {
            if looks_like_radix_int(&key) {
                self.ctx.recheck.set(true);
            }
            let value = map.next_value_seed(self.child())?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/// Renders a definition as the bytes of its file. Deterministic: `kind`, `name`, then `spec`
/// (always written, `spec: null` included), spec keys in their order, two-space block style.
pub fn render(definition: &Definition) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("kind: ");
    write_string(&mut out, &definition.kind, 0, Context::Value);
    out.push_str("\nname: ");
    write_string(&mut out, &definition.name, 0, Context::Value);
    out.push_str("\nspec:");
    write_after_key(&mut out, &definition.spec, 0);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    /// A mapping key: always on one line.
    Key,
    /// A value: block literals allowed.
    Value,
}

/// Writes `value` after `key:` of a mapping at `indent`.
fn write_after_key(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_mapping(out, map, indent + 2, true);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_sequence(out, items, indent + 2, true);
        }
        scalar => {
            out.push(' ');
            write_scalar(out, scalar, indent + 2);
            out.push('\n');
        }
    }
}

/// `indent_first`: false when the first line continues a `- ` already written.
fn write_mapping(out: &mut String, map: &Map<String, Value>, indent: usize, indent_first: bool) {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || indent_first {
            push_indent(out, indent);
        }
        let start = out.len();
        write_string(out, key, indent, Context::Key);
        if out.len() - start > MAX_SIMPLE_KEY {
            // YAML limits implicit keys to 1024 characters; longer ones need the explicit
            // `? key` form.
            out.insert_str(start, "? ");
            out.push('\n');
            push_indent(out, indent);
        }
        out.push(':');
        write_after_key(out, value, indent);
    }
}

/// Well below YAML's 1024-character limit on implicit keys, counted in bytes to stay safe.
const MAX_SIMPLE_KEY: usize = 1000;

fn write_sequence(out: &mut String, items: &[Value], indent: usize, indent_first: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || indent_first {
            push_indent(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Object(map) if !map.is_empty() => write_mapping(out, map, indent + 2, false),
            Value::Array(items) if !items.is_empty() => write_sequence(out, items, indent + 2, false),
            scalar => {
                write_scalar(out, scalar, indent + 2);
                out.push('\n');
            }
        }
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A scalar or an empty collection. `indent`: where block literal lines go.
fn write_scalar(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s, indent, Context::Value),
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else {
        write_float(out, n.as_f64().unwrap_or(0.0));
    }
}

/// The contract's number form (ECMAScript's shortest, as in the canonical JSON), made to read as
/// a float to YAML 1.1 and 1.2 readers alike: `1.5`, `-488.0`, `0.000001`, `1.0e+21`,
/// `5.0e-324`. Without the `.0`, `-488.0` would read back as an integer (the same digest, but
/// not what the platform sent) and 1e20 as an integer literal beyond I-JSON's range.
fn write_float(out: &mut String, f: f64) {
    if !f.is_finite() {
        // Validation refuses these; never write something that reads back as a string.
        out.push_str("null");
        return;
    }
    let start = out.len();
    if f == 0.0 && f.is_sign_negative() {
        // The canonical form has no -0, but a file can keep the double the platform sent.
        out.push('-');
    }
    crate::digest::write_f64(out, f);
    if !out[start..].contains('.') {
        match out[start..].find('e') {
            Some(e) => out.insert_str(start + e, ".0"),
            None => out.push_str(".0"),
        }
    }
}

/// Writes a string as a plain scalar where every YAML reader agrees it is that string, as a
/// block literal where it spans lines, and quoted otherwise.
fn write_string(out: &mut String, s: &str, indent: usize, context: Context) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else if context == Context::Value && block_literal_ok(s) {
        write_block_literal(out, s, indent);
    } else if s.chars().any(needs_escape) {
        write_double_quoted(out, s);
    } else {
        out.push('\'');
        for c in s.chars() {
            if c == '\'' {
                out.push('\'');
            }
            out.push(c);
        }
        out.push('\'');
    }
}

/// Characters that only a double-quoted scalar can carry, or that are better seen escaped:
/// controls (tab included), DEL and C1 controls, the BOM, non-characters, and the characters
/// YAML 1.1 takes for line breaks (NEL, U+2028, U+2029).
fn needs_escape(c: char) -> bool {
    matches!(c as u32, 0x00..=0x1F | 0x7F..=0x9F | 0xFEFF | 0xFFFE | 0xFFFF | 0x2028 | 0x2029)
}

fn write_double_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if (c as u32) < 0x100 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A string that spans lines and that a block literal carries exactly: no character that needs
/// escaping other than the line feed, and at least one line with visible text (a literal made
/// only of empty lines is easy to misread).
fn block_literal_ok(s: &str) -> bool {
    s.contains('\n') && !s.chars().any(|c| c != '\n' && needs_escape(c)) && s.chars().any(|c| !c.is_whitespace())
}

fn write_block_literal(out: &mut String, s: &str, indent: usize) {
    out.push('|');
    // Without an indentation indicator, YAML takes the indentation from the first line with
    // text, so a leading space there (or on an empty-looking line before it) would be lost.
    if s.split('\n').find(|l| !l.is_empty()).is_some_and(|l| l.starts_with(' ')) {
        out.push('2');
    }
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    match trailing {
        0 => out.push('-'),
        1 => {}
        _ => out.push('+'),
    }
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            push_indent(out, indent);
            out.push_str(line);
        }
    }
    // Keep chomping: the extra line breaks are part of the value.
    for _ in 1..trailing {
        out.push('\n');
    }
}

/// True when `s` can be written bare and every YAML 1.1 or 1.2 reader reads it back as this
/// very string.
fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    let last = s.chars().next_back().unwrap_or(first);
    if first.is_whitespace() || last.is_whitespace() || first == '\u{FEFF}' {
        return false;
    }
    // Indicators that start something else when they open a scalar.
    if INDICATORS.contains(first) && !is_plain_punctuated(s) {
        return false;
    }
    if s.chars().any(|c| needs_escape(c) || c == '\t') || s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return false;
    }
    !is_ambiguous(s)
}

/// Characters that start something other than a plain scalar (or might, to some reader).
const INDICATORS: &str = "-?:,[]{}#&*!|>'\"%@`.";

/// Dotted words such as `.env` are common and safe; they are plain unless they could be a
/// float (`.5`, `.inf`) or a document marker (`...`).
fn is_plain_punctuated(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next() == Some('.')
        && chars.next().is_some_and(|c| c.is_alphanumeric() || c == '_')
        && !matches!(s.to_ascii_lowercase().as_str(), ".inf" | ".nan")
}

/// Words and numbers that some YAML reader (1.1 or 1.2) resolves to a non-string.
fn is_ambiguous(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    if matches!(lower.as_str(), "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null" | "~" | "<<" | "=")
    {
        return true;
    }
    // Numbers in any notation (ints, floats, hex, octal, binary, sexagesimal, `1_000`,
    // `.5`, `+.inf`) and dates or timestamps all start like this.
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    let mut chars = unsigned.chars();
    match chars.next() {
        Some(c) if c.is_ascii_digit() => true,
        Some('.') => chars.next().is_some_and(|c| c.is_ascii_digit() || matches!(c, 'i' | 'I' | 'n' | 'N')),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(spec: Value) -> Definition {
        Definition { kind: "workflow".into(), name: "x".into(), spec }
    }

    fn round_trip(spec: Value) -> String {
        let d = def(spec);
        let text = render(&d);
        let back = parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        assert_eq!(back.digest(), d.digest(), "{text}");
        assert_eq!(render(&back), text);
        text
    }

    #[test]
    fn scalars_round_trip() {
        round_trip(json!({
            "a": "yes", "b": "0755", "c": "1e3", "d": "", "e": " x ", "f": "a: b", "g": "a #b",
            "h": "line\n", "i": "  indented\nsecond", "j": "cr\r\n", "k": "tab\there",
            "l": "\u{feff}bom", "m": "x\u{2028}y", "n": "-", "o": "<<", "p": "'q'", "r": "\"",
            "s": "a\n\n", "t": "\n\nx", "u": ".env", "v": ".5", "w": "...", "x": "é😀",
            "y": 1.0, "z": 1e21, "aa": -0.0, "ab": 5e-324, "ac": 9007199254740991_u64,
            "ad": -9007199254740991_i64, "ae": [], "af": {}, "ag": [[1, [2]], {"k": [3]}],
        }));
    }

    #[test]
    fn awkward_keys_round_trip() {
        round_trip(json!({"": 1, "200": 2, "0x1F": 3, "true": 4, "null": 5, "<<": 6, "-": 7,
            "a\nb": 8, "x".repeat(1500): 9}));
    }

    #[test]
    fn core_schema_scalars() {
        let d = parse(b"kind: a\nname: b\nspec: [0755, -0755, 0x1F, 0o17, 1_000, yes, True, ~, 1e3]\n").unwrap();
        assert_eq!(d.canonical(), r#"{"kind":"a","name":"b","spec":[755,-755,31,15,"1_000","yes",true,null,1000]}"#);
    }

    #[test]
    fn big_integers_are_refused_with_a_location() {
        for text in [
            "kind: a\nname: b\nspec:\n  x: 99999999999999999999\n",
            "kind: a\nname: b\nspec:\n  x: 0xFFFFFFFFFFFFFFFFFFFF\n",
            "kind: a\nname: b\nspec:\n  x: -9007199254740992\n",
            "kind: a\nname: b\nspec:\n  x: 9007199254740992\n",
        ] {
            let e = parse(text.as_bytes()).unwrap_err();
            assert_eq!(e.line, Some(4), "{text}: {e:?}");
        }
        // Quoted, they are strings, and a float spelling is a float.
        parse(b"kind: a\nname: b\nspec: ['99999999999999999999', 1e20, 1.0e+21]\n").unwrap();
    }

    #[test]
    fn tags() {
        for text in ["spec: !secret x", "spec: !!binary aGk=", "spec: !!timestamp 2024-01-01", "spec: !<tag:x> 1"] {
            let e = parse(format!("kind: a\nname: b\n{text}\n").as_bytes()).unwrap_err();
            assert_eq!(e.line, Some(3), "{text}: {e:?}");
        }
        let d = parse(b"kind: a\nname: b\nspec: [!!str 1, ! 2, !!int '3']\n").unwrap();
        assert_eq!(d.spec, json!(["1", "2", 3]));
    }

    #[test]
    fn keys() {
        let d = parse(b"kind: a\nname: b\nspec:\n  0x1F: a\n  7: b\n  <<: c\n").unwrap();
        assert_eq!(d.spec, json!({"31": "a", "7": "b", "<<": "c"}));
        for (text, line) in [
            ("  31: a\n  0x1F: b\n", 5),
            ("  true: a\n", 4),
            ("  ~: a\n", 4),
            ("  1.5: a\n", 4),
            ("  [a]: b\n", 4),
            ("  a: 1\n  a: 2\n", 5),
        ] {
            let e = parse(format!("kind: a\nname: b\nspec:\n{text}").as_bytes()).unwrap_err();
            assert_eq!(e.line, Some(line), "{text}: {e:?}");
        }
    }

    #[test]
    fn messages() {
        let e = parse(b"kind: workflow\nname: x\nspec: {}\nmetadata: {}\n").unwrap_err();
        assert!(e.message.contains("`metadata`"), "{e:?}");
        assert_eq!(e.line, Some(4));
        let e = parse(b"").unwrap_err();
        assert!(e.message.contains("empty"), "{e:?}");
        let e = parse(b"kind: 1\nname: x\n").unwrap_err();
        assert!(e.message.contains("must be a string"), "{e:?}");
        let e = parse(b"kind: workflow\nname: x\nspec: \xff\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(3), Some(7)));
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let deep = format!("kind: a\nname: b\nspec: {}1{}\n", "[".repeat(5000), "]".repeat(5000));
        assert!(parse(deep.as_bytes()).is_err());
        // Contract v1.1: 64 levels, each array or mapping opening one, whatever is inside.
        let nested = |levels: usize, inner: &str| {
            format!("kind: a\nname: b\nspec: {}{inner}{}\n", "[".repeat(levels), "]".repeat(levels))
        };
        assert!(parse(nested(MAX_DEPTH, "1").as_bytes()).is_ok());
        assert!(parse(nested(MAX_DEPTH, "").as_bytes()).is_ok());
        for inner in ["", "1", "{}"] {
            let e = parse(nested(MAX_DEPTH + 1, inner).as_bytes()).unwrap_err();
            assert!(e.message.contains("nested more than 64 levels"), "{inner}: {e:?}");
            assert_eq!(e.line, Some(3), "{inner}: {e:?}");
        }
        // Block style, where each level is a line: the error points into the file.
        let mut block = String::from("kind: a\nname: b\nspec:\n");
        for level in 0..=MAX_DEPTH {
            block.push_str(&format!("{}k:\n", "  ".repeat(level + 1)));
        }
        let e = parse(block.as_bytes()).unwrap_err();
        assert!(e.message.contains("nested more than 64 levels"), "{e:?}");
        assert!(e.line.is_some(), "{e:?}");
        // Aliases nest without the parser's depth budget seeing it.
        let mut chain = String::from("kind: a\nname: b\nspec:\n  x0: &x0 [[[[[[[[[[1]]]]]]]]]]\n");
        for i in 1..16 {
            chain.push_str(&format!("  x{i}: &x{i} [[[[[[[[[[*x{}]]]]]]]]]]\n", i - 1));
        }
        let e = parse(chain.as_bytes()).unwrap_err();
        assert!(e.message.contains("nested more than"), "{e:?}");
    }
}
