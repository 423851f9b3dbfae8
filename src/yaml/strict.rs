//! YAML 1.2.2 rules that serde-saphyr's parser does not enforce, checked on the parser's own
//! events before a file is read: byte-order marks, tabs and continuation-line indentation; and
//! the core schema's leading-zero integers, which serde-saphyr reads as floats.
//!
//! Each rule cites the production of the YAML 1.2.2 specification it follows; the tests in
//! `yaml.rs` and `tests/all/yaml12.rs` pin every decision.

use std::ops::Range;

use serde_saphyr::granit_parser::{self, Event, Marker, ScalarStyle, StructureStyle};

use super::ParseError;

/// What [`check`] learnt that the reading must take into account.
pub(super) struct Strict {
    /// Byte ranges of plain, untagged scalars spelled as decimal integers with leading zeros.
    pub(super) leading_zeros: Vec<Range<usize>>,
}

/// One open collection while walking the events.
enum Frame {
    /// `key_col`: the column of the key whose value comes next.
    BlockMap { next_is_key: bool, key_col: usize },
    /// `dash`: the column of the entries' `-`.
    BlockSeq { dash: usize },
    /// `indent`: how far its continuation lines must be indented, when it is the outermost
    /// flow collection (inner ones are covered by the outermost).
    Flow { start: Marker, indent: Option<usize> },
}

/// Lines that must be indented by at least `indent` spaces (`s-flow-line-prefix(n)`).
struct Continued {
    start: Marker,
    end_line: usize,
    indent: usize,
    what: &'static str,
}

/// Refuses what YAML 1.2.2 forbids and serde-saphyr lets through, with the line and a fix.
/// Syntax errors are left to serde-saphyr, whose messages are better, except the ones about
/// tabs and byte-order marks, which get this module's messages.
pub(super) fn check(text: &str) -> Result<Strict, ParseError> {
    if !may_need_check(text.as_bytes()) {
        return Ok(Strict { leading_zeros: Vec::new() });
    }
    let lines = Lines::new(text);
    let mut strict = Strict { leading_zeros: Vec::new() };
    let mut quoted: Vec<Range<usize>> = Vec::new();
    let mut comment_lines: Vec<usize> = Vec::new();
    let mut continued: Vec<Continued> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();

    for event in granit_parser::Parser::new_from_str(text) {
        let (event, span) = match event {
            Ok(ok) => ok,
            Err(error) => {
                let message = error.to_string();
                if message.contains("tab")
                    && let Some(e) = first_tab_indent(text, &lines, error.marker().line())
                {
                    return Err(e);
                }
                if message.contains("BOM")
                    && let Some(e) = first_bom(text, &lines, &quoted)
                {
                    return Err(e);
                }
                // serde-saphyr reports the same syntax error, with its own wording.
                return Ok(strict);
            }
        };
        let node =
            matches!(event, Event::Scalar(..) | Event::SequenceStart(..) | Event::MappingStart(..) | Event::Alias(..));
        // How far continuation lines of this node must be indented: one more than the
        // enclosing block entry (a key's column, or a `-`), per `s-l+flow-in-block(n)`, which
        // reads the node as `ns-flow-node(n+1, flow-out)`. None inside flow collections (the
        // outermost one covers its lines) and for keys (implicit keys are single-line).
        let indent = if node {
            match stack.last_mut() {
                None => Some(0),
                Some(Frame::BlockMap { next_is_key, key_col }) => {
                    let is_key = *next_is_key;
                    *next_is_key = !is_key;
                    if is_key {
                        *key_col = span.start.col();
                        None
                    } else {
                        Some(*key_col + 1)
                    }
                }
                Some(Frame::BlockSeq { dash }) => Some(*dash + 1),
                Some(Frame::Flow { .. }) => None,
            }
        } else {
            None
        };
        match event {
            // A comment line inside a flow collection may start anywhere (§6.6).
            Event::Comment(..) if lines.first_content_col(span.start.line(), text) == Some(span.start.col()) => {
                comment_lines.push(span.start.line());
            }
            Event::Scalar(value, style, _, tag) => {
                let range = byte_range(&span.start, &span.end);
                if matches!(style, ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted) {
                    quoted.push(range.clone());
                }
                if matches!(style, ScalarStyle::Plain | ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted)
                    && span.end.line() > span.start.line()
                    && let Some(indent) = indent
                {
                    continued.push(Continued { start: span.start, end_line: span.end.line(), indent, what: "value" });
                }
                if style == ScalarStyle::Plain
                    && tag.is_none()
                    && is_leading_zero_decimal(&value)
                    && text.get(range.clone()) == Some(value.as_ref())
                {
                    strict.leading_zeros.push(range);
                }
            }
            Event::MappingStart(StructureStyle::Block, ..) => {
                no_tab_before(text, &lines, &span.start)?;
                stack.push(Frame::BlockMap { next_is_key: true, key_col: 0 });
            }
            Event::SequenceStart(StructureStyle::Block, ..) => {
                let dash = dash_of(text, &span.start);
                no_tab_before(text, &lines, &dash)?;
                stack.push(Frame::BlockSeq { dash: dash.col() });
            }
            Event::MappingStart(StructureStyle::Flow, ..) | Event::SequenceStart(StructureStyle::Flow, ..) => {
                stack.push(Frame::Flow { start: span.start, indent });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(Frame::Flow { start, indent: Some(indent) }) = stack.pop() {
                    continued.push(Continued { start, end_line: span.start.line(), indent, what: "flow collection" });
                }
            }
            _ => {}
        }
    }

    if let Some(e) = first_bom(text, &lines, &quoted) {
        return Err(e);
    }
    for c in &continued {
        for line in c.start.line() + 1..=c.end_line {
            if comment_lines.contains(&line) {
                continue;
            }
            let content = lines.text(line, text);
            let spaces = content.len() - content.trim_start_matches(' ').len();
            let rest = &content[spaces..];
            // Lines of white space only are empty lines (`l-empty`), tabs included.
            if rest.trim_start_matches([' ', '\t']).is_empty() || spaces >= c.indent {
                continue;
            }
            return Err(under_indented(&lines, c, line, spaces, rest.starts_with('\t')));
        }
    }
    Ok(strict)
}

/// Whether the text holds anything these rules are about: a tab, a lone CR, a BOM after the
/// start, a flow collection or quoted scalar (the only constructs whose continuation lines
/// granit does not check), or a digit `0` starting a number. A second event pass costs about
/// a quarter of a parse, so block-style files without them skip it.
fn may_need_check(bytes: &[u8]) -> bool {
    let starts_number =
        |i: usize| i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || matches!(bytes[i - 1], b'.' | b'_'));
    bytes.iter().enumerate().any(|(i, b)| match b {
        b'\t' | b'{' | b'[' | b'"' | b'\'' => true,
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        0xEF => i > 0 && bytes[i..].starts_with("\u{feff}".as_bytes()),
        b'0' => bytes.get(i + 1).is_some_and(u8::is_ascii_digit) && starts_number(i),
        _ => false,
    })
}

/// `0755` as `755 `: the core schema's integer (`[-+]?[0-9]+`, §10.3.2) without the zeros
/// serde-saphyr takes for a float, padded so that every column stays where it was.
pub(super) fn without_leading_zeros(text: &str, ranges: &[Range<usize>]) -> Option<String> {
    if ranges.is_empty() {
        return None;
    }
    let mut out = text.to_owned();
    for range in ranges {
        let literal = &text[range.clone()];
        let (sign, digits) = match literal.strip_prefix(['-', '+']) {
            Some(rest) => (&literal[..1], rest),
            None => ("", literal),
        };
        let trimmed = digits.trim_start_matches('0');
        let mut decimal = format!("{sign}{}", if trimmed.is_empty() { "0" } else { trimmed });
        decimal.extend(std::iter::repeat_n(' ', literal.len() - decimal.len()));
        out.replace_range(range.clone(), &decimal);
    }
    Some(out)
}

/// A decimal integer with a redundant leading zero: `0755`, `-007`, `+00`.
fn is_leading_zero_decimal(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit())
}

fn byte_range(start: &Marker, end: &Marker) -> Range<usize> {
    start.byte_offset().unwrap_or(0)..end.byte_offset().unwrap_or(0)
}

/// The `-` of a block sequence. granit marks an indentless sequence (`key:\n- a`) at its first
/// entry rather than at the `-`, so look back over the separating white space.
fn dash_of(text: &str, start: &Marker) -> Marker {
    let Some(at) = start.byte_offset() else { return *start };
    if text.as_bytes().get(at) == Some(&b'-') {
        return *start;
    }
    let before = text[..at].trim_end_matches([' ', '\t']);
    if before.ends_with('-') {
        let back = at - (before.len() - 1);
        return Marker::new(start.index().saturating_sub(back), start.line(), start.col().saturating_sub(back))
            .with_byte_offset(Some(before.len() - 1));
    }
    *start
}

/// A block collection nested on its parent's line (`- - a`, `- a: 1`, `? a: 1`) is indented
/// by `s-indent(m)`, spaces only (§8.2.1, `s-l+block-indented`): a tab there is an error
/// (yaml-test-suite Y79Y), though a tab may separate a scalar (`-\tvalue`, §6.2).
fn no_tab_before(text: &str, lines: &Lines, start: &Marker) -> Result<(), ParseError> {
    let Some(at) = start.byte_offset() else { return Ok(()) };
    let line_start = lines.start(start.line());
    if at < line_start || at > text.len() {
        return Ok(());
    }
    let before = &text[line_start..at];
    let white = &before[before.trim_end_matches([' ', '\t']).len()..];
    if white.contains('\t') {
        return Err(ParseError::at(start.line() as u64, start.col() as u64 + 1, tab_message()));
    }
    Ok(())
}

fn tab_message() -> String {
    "a tab indents this line or this nested block, and YAML 1.2 forbids tabs in indentation: indent with spaces".into()
}

/// After granit's own tab error: the first line from `from_line` on whose indentation holds a
/// tab (granit reports the line it was reading, which can be the one before).
fn first_tab_indent(text: &str, lines: &Lines, from_line: usize) -> Option<ParseError> {
    (from_line.max(1)..=lines.count()).find_map(|line| {
        let content = lines.text(line, text);
        let indent = &content[..content.len() - content.trim_start_matches([' ', '\t']).len()];
        let col = indent.find('\t')?;
        // A line of white space only is an empty line, where tabs are allowed.
        if indent.len() == content.len() {
            return None;
        }
        Some(ParseError::at(line as u64, col as u64 + 1, tab_message()))
    })
}

/// A byte-order mark is allowed only at the start of the stream or of a document prefix after
/// `...` (§9.1.1, `l-document-prefix`), and as content of quoted scalars (§5.2: "byte order
/// marks are also allowed inside quoted scalars" for JSON compatibility). Plain and block
/// scalars and comments are made of `nb-char`, which excludes it.
fn first_bom(text: &str, lines: &Lines, quoted: &[Range<usize>]) -> Option<ParseError> {
    text.match_indices('\u{feff}').find_map(|(at, _)| {
        if at == 0 || quoted.iter().any(|r| r.start < at && at < r.end) {
            return None;
        }
        let line = lines.line_of(at);
        if at == lines.start(line) && line > 1 {
            let previous = lines.text(line - 1, text);
            if previous.strip_prefix("...").is_some_and(|r| r.trim_start().is_empty() || r.trim_start().starts_with('#'))
            {
                return None;
            }
        }
        let column = text[lines.start(line)..at].chars().count() + 1;
        Some(ParseError::at(
            line as u64,
            column as u64,
            "a byte-order mark (U+FEFF, invisible in most editors) is inside the document; YAML 1.2 allows it only at the very start of the file and inside quoted strings: delete it (write \"\\uFEFF\" in double quotes if it is meant as text)",
        ))
    })
}

fn under_indented(lines: &Lines, c: &Continued, line: usize, spaces: usize, tab: bool) -> ParseError {
    let mut message = if tab {
        format!(
            "a tab indents this line, and YAML 1.2 forbids tabs in indentation: indent with spaces (at least {} here)",
            c.indent
        )
    } else {
        format!(
            "this line continues the {} that starts on line {}, so YAML 1.2 requires it to be indented by at least {} space{} (more than its parent key or `-`): indent it, or join the lines",
            c.what,
            c.start.line(),
            c.indent,
            if c.indent == 1 { "" } else { "s" }
        )
    };
    if lines.after_lone_cr(line) {
        // A lone CR is a line break in YAML 1.2 (§5.4, `b-break`), whatever an editor shows.
        message.push_str(
            "; the line break before it is a lone carriage return (CR), which YAML 1.2 reads as a new line: save the file with LF line endings, or write the CR as \\r inside double quotes if it is meant as text",
        );
    }
    ParseError::at(line as u64, spaces as u64 + 1, message)
}

/// Line starts, with YAML 1.2's line breaks: LF, CRLF and a lone CR (§5.4).
struct Lines {
    /// Byte offset of each line's start; `starts[0]` is line 1.
    starts: Vec<usize>,
    /// Whether the break that ends the line before each one is a lone CR.
    lone_cr: Vec<bool>,
}

impl Lines {
    fn new(text: &str) -> Self {
        let (mut starts, mut lone_cr) = (vec![0], vec![false]);
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => {
                    starts.push(i + 1);
                    lone_cr.push(false);
                }
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                    starts.push(i + 2);
                    lone_cr.push(false);
                    i += 1;
                }
                b'\r' => {
                    starts.push(i + 1);
                    lone_cr.push(true);
                }
                _ => {}
            }
            i += 1;
        }
        Lines { starts, lone_cr }
    }

    fn count(&self) -> usize {
        self.starts.len()
    }

    /// Byte offset where 1-based `line` starts.
    fn start(&self, line: usize) -> usize {
        self.starts[line.clamp(1, self.starts.len()) - 1]
    }

    /// 1-based `line`, without its line break.
    fn text<'t>(&self, line: usize, text: &'t str) -> &'t str {
        let start = self.start(line);
        let end = self.starts.get(line).copied().unwrap_or(text.len());
        text[start..end].trim_end_matches(['\n', '\r'])
    }

    fn line_of(&self, at: usize) -> usize {
        self.starts.partition_point(|s| *s <= at)
    }

    fn after_lone_cr(&self, line: usize) -> bool {
        self.lone_cr.get(line.saturating_sub(1)).copied().unwrap_or(false)
    }

    /// 0-based column (in characters) of the line's first character other than white space.
    fn first_content_col(&self, line: usize, text: &str) -> Option<usize> {
        let content = self.text(line, text);
        let rest = content.trim_start_matches([' ', '\t']);
        (!rest.is_empty()).then(|| content.len() - rest.len())
    }
}
