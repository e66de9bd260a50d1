//! What serde cannot say about stored JSON: no key twice in an object (I-JSON), only numbers that
//! every implementation of the hash rule reads as the same double, and no `\u0000`, which
//! PostgreSQL cannot store. One pass over text already known to be well-formed JSON.

use std::collections::HashSet;

use crate::error::{Invalid, InvalidKind};

/// Largest integer magnitude that every JSON implementation reads exactly (RFC 7493).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Checks the well-formed JSON `raw`; `at` names it in errors (`messages[0].content`).
pub fn check(raw: &str, at: &str) -> Result<(), Invalid> {
    let bytes = raw.as_bytes();
    let mut path = Path::new(at);
    let mut frames: Vec<Frame> = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'{' => frames.push(Frame::Object(Keys::default())),
            b'[' => {
                frames.push(Frame::Array(0));
                path.push(Segment::Index(0));
            }
            b'}' => {
                if let Some(Frame::Object(keys)) = frames.pop()
                    && keys.any()
                {
                    path.pop();
                }
            }
            b']' => {
                frames.pop();
                path.pop();
            }
            b',' => {
                if let Some(Frame::Array(position)) = frames.last_mut() {
                    *position += 1;
                    path.pop();
                    path.push(Segment::Index(*position));
                }
            }
            b'"' => {
                let end = string_end(bytes, index);
                let literal = &raw[index..end];
                let is_key = matches!(frames.last(), Some(Frame::Object(_)))
                    && next_significant(bytes, end) == Some(b':');
                if let Some(bad) = bad_escapes(literal).next() {
                    let what = if is_key { "a key" } else { "a string" };
                    return Err(match bad {
                        BadEscape::Nul => Invalid::new(
                            InvalidKind::Text,
                            format!(
                                "{} holds {what} with \\u0000, which cannot be stored",
                                path.render()
                            ),
                        ),
                        BadEscape::LoneSurrogate => Invalid::new(
                            InvalidKind::Malformed,
                            format!(
                                "{} holds {what} with a lone surrogate escape, which is no character",
                                path.render()
                            ),
                        ),
                    });
                }
                if is_key && let Some(Frame::Object(keys)) = frames.last_mut() {
                    let key = unescape(literal)?;
                    if keys.any() {
                        path.pop();
                    }
                    if !keys.insert(&key) {
                        return Err(Invalid::validation(format!(
                            "{} holds the key {key:?} twice",
                            path.render()
                        )));
                    }
                    path.push(Segment::Key(key));
                }
                index = end;
                continue;
            }
            b'-' | b'0'..=b'9' => {
                let end = bytes[index..]
                    .iter()
                    .position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .map_or(bytes.len(), |offset| index + offset);
                if let Err(problem) = exact_double(&raw[index..end]) {
                    return Err(Invalid::new(
                        InvalidKind::Number,
                        format!("{} holds {problem}; send it as a string", path.render()),
                    ));
                }
                index = end;
                continue;
            }
            _ => {}
        }
        index += 1;
    }
    Ok(())
}

/// Why a number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberProblem {
    /// Infinite as a double, or beyond ±(2^53-1).
    Range,
    /// Written with more precision than a double holds, so it would come back as another value.
    Precision,
}

impl std::fmt::Display for NumberProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NumberProblem::Range => "a number beyond ±(2^53-1)",
            NumberProblem::Precision => "a number with more precision than a double holds",
        })
    }
}

/// A JSON number literal is accepted when it means the double it parses to: within ±(2^53-1),
/// and equal to that double's exact value correctly rounded to as many significant digits as
/// the literal has (either neighbour on an exact tie). So `1.0`, `0.1` and `818689267909465.25`
/// are accepted, and `1.00000000000000000001` (a double reads it as `1`) or
/// `1.0000000000000003` (the double nearest it is `1.0000000000000002`) are not: they would
/// come back as another value.
pub fn exact_double(literal: &str) -> Result<(), NumberProblem> {
    let value: f64 = literal.parse().map_err(|_| NumberProblem::Range)?;
    if !value.is_finite() || value.abs() > MAX_SAFE_INTEGER {
        return Err(NumberProblem::Range);
    }
    let written = Decimal::parse(literal).ok_or(NumberProblem::Range)?;
    // 1100 digits write any double exactly: none has more than 1074 fractional digits.
    let exact = Decimal::parse(&format!("{value:.1100e}")).ok_or(NumberProblem::Range)?;
    if exact
        .rounded_to(written.digits.len().max(1))
        .contains(&written)
    {
        Ok(())
    } else {
        Err(NumberProblem::Precision)
    }
}

/// A decimal value as significant digits times a power of ten; zero has no digits (and no sign).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

impl Decimal {
    fn parse(text: &str) -> Option<Self> {
        let (negative, text) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match text.find(['e', 'E']) {
            Some(at) => (&text[..at], saturating_exponent(&text[at + 1..])?),
            None => (text, 0),
        };
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits: Vec<u8> = whole.bytes().chain(fraction.bytes()).collect();
        Some(Self::normal(
            negative,
            digits,
            exponent.saturating_sub(fraction.len() as i64),
        ))
    }

    /// Without leading or trailing zeros (zero itself has no digits and no sign).
    fn normal(negative: bool, mut digits: Vec<u8>, mut exponent: i64) -> Self {
        let leading = digits.iter().take_while(|&&digit| digit == b'0').count();
        digits.drain(..leading);
        while digits.last() == Some(&b'0') {
            digits.pop();
            exponent = exponent.saturating_add(1);
        }
        if digits.is_empty() {
            return Decimal {
                negative: false,
                digits,
                exponent: 0,
            };
        }
        Decimal {
            negative,
            digits,
            exponent,
        }
    }

    /// This value correctly rounded to `places` significant digits: one value, or both
    /// neighbours when it lies exactly halfway.
    fn rounded_to(&self, places: usize) -> Vec<Decimal> {
        if self.digits.len() <= places {
            return vec![self.clone()];
        }
        let (head, tail) = self.digits.split_at(places);
        let exponent = self
            .exponent
            .saturating_add((self.digits.len() - places) as i64);
        let down = Self::normal(self.negative, head.to_vec(), exponent);
        let up = Self::normal(self.negative, increment(head), exponent);
        match (tail[0], tail.len()) {
            (b'5', 1) => vec![down, up],
            (first, _) if first >= b'5' => vec![up],
            _ => vec![down],
        }
    }
}

/// Decimal digits plus one in the last place.
fn increment(digits: &[u8]) -> Vec<u8> {
    let mut out = digits.to_vec();
    for digit in out.iter_mut().rev() {
        if *digit == b'9' {
            *digit = b'0';
        } else {
            *digit += 1;
            return out;
        }
    }
    out.insert(0, b'1');
    out
}

/// An exponent, saturated far beyond anything a double can reach.
fn saturating_exponent(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits
        .bytes()
        .fold(0_i64, |acc, digit| {
            acc.saturating_mul(10)
                .saturating_add(i64::from(digit - b'0'))
        })
        .min(1 << 40);
    Some(if negative { -magnitude } else { magnitude })
}

enum Frame {
    Object(Keys),
    Array(usize),
}

/// The keys of one object seen so far; a set once the object is large.
#[derive(Default)]
struct Keys {
    few: Vec<String>,
    many: Option<HashSet<String>>,
}

impl Keys {
    fn any(&self) -> bool {
        !self.few.is_empty() || self.many.is_some()
    }

    /// False when `key` was there already.
    fn insert(&mut self, key: &str) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(key.to_owned());
        }
        if self.few.iter().any(|seen| seen == key) {
            return false;
        }
        self.few.push(key.to_owned());
        if self.few.len() > 32 {
            self.many = Some(self.few.drain(..).collect());
        }
        true
    }
}

enum Segment {
    Key(String),
    Index(usize),
}

struct Path<'a> {
    root: &'a str,
    segments: Vec<Segment>,
}

impl<'a> Path<'a> {
    fn new(root: &'a str) -> Self {
        Self {
            root,
            segments: Vec::new(),
        }
    }

    fn push(&mut self, segment: Segment) {
        self.segments.push(segment);
    }

    fn pop(&mut self) {
        self.segments.pop();
    }

    fn render(&self) -> String {
        let mut out = self.root.to_owned();
        for segment in &self.segments {
            match segment {
                Segment::Key(key) => {
                    out.push('.');
                    out.push_str(key);
                }
                Segment::Index(index) => out.push_str(&format!("[{index}]")),
            }
        }
        out
    }
}

/// Whether a string literal spells U+0000 (`\\u0000`; the raw byte is not valid JSON).
/// What a string's escapes hold that JSON text to store cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BadEscape {
    /// `\u0000`, which PostgreSQL cannot store.
    Nul,
    /// A `\uD800`-`\uDFFF` escape outside a high-low pair: no character at all.
    LoneSurrogate,
}

/// The bad escapes in `text`, a string literal or a whole JSON document (JSON has backslashes
/// only inside strings), in order.
fn bad_escapes(text: &str) -> impl Iterator<Item = BadEscape> + '_ {
    let bytes = text.as_bytes();
    let unit = move |at: usize| {
        (bytes.get(at) == Some(&b'\\') && bytes.get(at + 1) == Some(&b'u'))
            .then(|| std::str::from_utf8(bytes.get(at + 2..at + 6)?).ok())
            .flatten()
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
    };
    let mut index = 0;
    std::iter::from_fn(move || {
        while index < bytes.len() {
            if bytes[index] != b'\\' {
                index += 1;
                continue;
            }
            let at = index;
            match unit(at) {
                Some(0) => {
                    index += 6;
                    return Some(BadEscape::Nul);
                }
                Some(0xD800..=0xDBFF) => match unit(at + 6) {
                    Some(0xDC00..=0xDFFF) => index += 12,
                    _ => {
                        index += 6;
                        return Some(BadEscape::LoneSurrogate);
                    }
                },
                Some(0xDC00..=0xDFFF) => {
                    index += 6;
                    return Some(BadEscape::LoneSurrogate);
                }
                Some(_) => index += 6,
                None => index += 2,
            }
        }
        None
    })
}

/// True when the well-formed JSON `text` escapes a lone surrogate anywhere: serde reads past
/// one until it must make a string of it, and such a document is no JSON text (RFC 8259 8.2).
pub fn has_lone_surrogate(text: &str) -> bool {
    bad_escapes(text).any(|bad| bad == BadEscape::LoneSurrogate)
}

/// The index just past the string literal that starts at `start` (its opening quote).
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut index = start + 1;
    while index < bytes.len() {
        match bytes[index] {
            b'\\' => index += 2,
            b'"' => return index + 1,
            _ => index += 1,
        }
    }
    bytes.len()
}

fn next_significant(bytes: &[u8], from: usize) -> Option<u8> {
    bytes[from.min(bytes.len())..]
        .iter()
        .copied()
        .find(|b| !b.is_ascii_whitespace())
}

/// A key's text: the literal itself when it has no escape, else serde's reading of it.
fn unescape(literal: &str) -> Result<String, Invalid> {
    let inner = &literal[1..literal.len().saturating_sub(1).max(1)];
    if !inner.contains('\\') {
        return Ok(inner.to_owned());
    }
    serde_json::from_str(literal)
        .map_err(|_| Invalid::new(InvalidKind::Text, "a key holds an escape that is not text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(raw: &str) -> Option<InvalidKind> {
        check(raw, "x").err().map(|invalid| invalid.kind)
    }

    #[test]
    fn doubles_that_hold_the_value_exactly_are_accepted() {
        for ok in [
            "0",
            "-0",
            "0.0",
            "1",
            "1.0",
            "1.50",
            "0.1",
            "1e-7",
            "1.5e15",
            "123.456",
            "9007199254740991",
            "-9007199254740991",
            "0.30000000000000004",
            "5e-324",
            "1E2",
            "1e+2",
            "818689267909465.25",
            "818689267909465.4",
            // The exact value ...465.25 lies halfway: both neighbours are its 16-digit forms.
            "818689267909465.2",
            "818689267909465.3",
            "0.1000000000000000055511151231257827021181583404541015625",
        ] {
            assert_eq!(exact_double(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn numbers_beyond_ijson_or_a_double_are_refused() {
        for (bad, problem) in [
            ("9007199254740992", NumberProblem::Range),
            ("-9007199254740992", NumberProblem::Range),
            ("9.007199254740992e15", NumberProblem::Range),
            ("1e300", NumberProblem::Range),
            ("1e400", NumberProblem::Range),
            ("1.00000000000000000001", NumberProblem::Precision),
            ("3.14159265358979323846", NumberProblem::Precision),
            ("1e-400", NumberProblem::Precision),
            ("0.1000000000000000000001", NumberProblem::Precision),
            ("1e99999999999999999999", NumberProblem::Range),
            ("818689267909465.33", NumberProblem::Precision),
            ("1.0000000000000003", NumberProblem::Precision),
        ] {
            assert_eq!(exact_double(bad), Err(problem), "{bad}");
        }
    }

    #[test]
    fn duplicate_keys_are_found_at_any_depth_and_in_any_spelling() {
        assert_eq!(kind(r#"{"a": 1, "a": 2}"#), Some(InvalidKind::Validation));
        assert_eq!(
            kind(r#"{"a": 1, "\u0061": 2}"#),
            Some(InvalidKind::Validation)
        );
        assert_eq!(
            kind(r#"[{"x": {"b": [1, {"c": 1, "c": 1}]}}]"#),
            Some(InvalidKind::Validation)
        );
        assert_eq!(kind(r#"[{"a": 1}, {"a": 1}]"#), None);
        assert_eq!(kind(r#"{"a": {"a": 1}, "b": "a"}"#), None);
        let many: Vec<String> = (0..100).map(|n| format!("\"k{n}\": {n}")).collect();
        assert_eq!(kind(&format!("{{{}}}", many.join(","))), None);
        assert_eq!(
            kind(&format!("{{{}, \"k7\": 0}}", many.join(","))),
            Some(InvalidKind::Validation)
        );
    }

    #[test]
    fn nul_escapes_are_refused_in_keys_and_strings() {
        assert_eq!(kind(r#""a\u0000b""#), Some(InvalidKind::Text));
        assert_eq!(kind(r#"{"\u0000": 1}"#), Some(InvalidKind::Text));
        assert_eq!(
            kind(r#""a\\u0000b""#),
            None,
            "an escaped backslash, then text"
        );
        assert_eq!(kind(r#""\u0001 \" x""#), None);
    }

    #[test]
    fn lone_surrogate_escapes_are_malformed_and_pairs_are_text() {
        for lone in [
            r#""\ud800""#,
            r#""\udfff""#,
            r#""\ud800\u0041""#,
            r#""x\ud83d""#,
            r#""\ude00\ud83d""#,
            r#"{"\udfff": 1}"#,
            r#"[1, {"a": "\uDBFF"}]"#,
        ] {
            assert_eq!(kind(lone), Some(InvalidKind::Malformed), "{lone}");
        }
        for fine in [
            r#""\ud83d\ude00""#,
            r#""\uD83D\uDE00 and \u00e9""#,
            r#""\\ud800""#,
            r#"{"\ud83d\ude00": "\u20ac"}"#,
        ] {
            assert_eq!(kind(fine), None, "{fine}");
        }
    }

    #[test]
    fn errors_name_the_place() {
        let invalid = check(
            r#"[{"type": "text", "n": [1, 2, 9007199254740993]}]"#,
            "messages[0].content",
        )
        .expect_err("refused");
        assert_eq!(invalid.kind, InvalidKind::Number);
        assert!(
            invalid
                .detail
                .starts_with("messages[0].content[0].n[2] holds"),
            "{}",
            invalid.detail
        );
        let invalid = check(r#"{"a": {"b": 1, "b": 2}}"#, "metadata").expect_err("refused");
        assert!(
            invalid
                .detail
                .starts_with("metadata.a holds the key \"b\" twice"),
            "{}",
            invalid.detail
        );
    }

    #[test]
    fn numbers_inside_strings_are_text() {
        assert_eq!(kind(r#"["9007199254740993", "1e400"]"#), None);
    }
}
