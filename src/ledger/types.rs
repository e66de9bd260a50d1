//! Domain types, parsed on entry: once a value of these types exists, it is valid.

use serde_json::{Map, Value};

use super::error::{Invalid, InvalidKind};
use super::hash;

/// A client-chosen session id: 1 to 128 of `A-Z a-z 0-9 . _ : @ -`, other than `.` and `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-');
        if raw.is_empty()
            || raw.len() > 128
            || !raw.chars().all(allowed)
            || raw == "."
            || raw == ".."
        {
            return Err(Invalid::new(
                InvalidKind::SessionId,
                "session_id must be 1 to 128 characters from A-Z a-z 0-9 . _ : @ - and not '.' or '..'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &[u8]) -> Result<Self, Invalid> {
        let visible = |b: &u8| (0x21..=0x7e).contains(b);
        match std::str::from_utf8(raw) {
            Ok(key) if !key.is_empty() && key.len() <= 255 && raw.iter().all(visible) => {
                Ok(Self(key.to_owned()))
            }
            _ => Err(Invalid::new(
                InvalidKind::IdempotencyKey,
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The author role of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }
}

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Message,
    ContextReset,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Message => "message",
            EntryKind::ContextReset => "context_reset",
        }
    }
}

/// Configurable input limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Content plus metadata of one message, serialized.
    pub max_message_bytes: usize,
    /// Messages in one append.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 256 * 1024,
            max_batch: 100,
        }
    }
}

/// An entry about to be appended.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub kind: EntryKind,
    pub role: Option<Role>,
    pub content: Option<Value>,
    pub metadata: Map<String, Value>,
    /// `JCS({"content", "metadata"})`, computed once while checking the entry.
    canonical_payload: Vec<u8>,
}

impl NewEntry {
    /// Checks text, numbers and size (`at` names the entry in errors) and canonicalises.
    fn checked(
        kind: EntryKind,
        role: Option<Role>,
        content: Option<Value>,
        metadata: Map<String, Value>,
        at: &str,
        limits: &Limits,
    ) -> Result<Self, Invalid> {
        let canonical_payload = check_payload(content.as_ref(), &metadata, at, limits)?;
        Ok(Self {
            kind,
            role,
            content,
            metadata,
            canonical_payload,
        })
    }

    /// The bytes the entry's payload digest commits to.
    pub fn canonical_payload(&self) -> &[u8] {
        &self.canonical_payload
    }
}

/// The body of `POST .../messages`.
#[derive(Debug, Clone)]
pub struct AppendBody {
    pub expected_seq: Option<i64>,
    pub messages: Vec<NewEntry>,
}

/// The body of `POST .../reset`.
#[derive(Debug, Clone)]
pub struct ResetBody {
    pub expected_seq: Option<i64>,
    pub entry: NewEntry,
}

impl AppendBody {
    pub fn parse(body: &Value, limits: &Limits) -> Result<Self, Invalid> {
        let object = expect_object(body, "body")?;
        reject_unknown_fields(object, &["expected_seq", "messages"], "")?;
        let expected_seq = parse_expected_seq(object)?;
        let raw_messages = match object.get("messages") {
            Some(Value::Array(items)) => items,
            Some(_) => return Err(validation("messages must be an array")),
            None => return Err(validation("messages is required")),
        };
        if raw_messages.is_empty() {
            return Err(validation("messages must not be empty"));
        }
        if raw_messages.len() > limits.max_batch {
            return Err(validation(format!(
                "messages holds {} items; at most {} are allowed per append",
                raw_messages.len(),
                limits.max_batch
            )));
        }
        let messages = raw_messages
            .iter()
            .enumerate()
            .map(|(index, raw)| parse_message(raw, index, limits))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            expected_seq,
            messages,
        })
    }
}

impl ResetBody {
    pub fn parse(body: &Value, limits: &Limits) -> Result<Self, Invalid> {
        let object = expect_object(body, "body")?;
        reject_unknown_fields(object, &["expected_seq", "metadata"], "")?;
        let expected_seq = parse_expected_seq(object)?;
        let metadata = parse_metadata(object.get("metadata"), "metadata")?;
        let entry = NewEntry::checked(
            EntryKind::ContextReset,
            None,
            None,
            metadata,
            "metadata",
            limits,
        )?;
        Ok(Self {
            expected_seq,
            entry,
        })
    }
}

fn parse_message(raw: &Value, index: usize, limits: &Limits) -> Result<NewEntry, Invalid> {
    let at = format!("messages[{index}]");
    let object = expect_object(raw, &at)?;
    reject_unknown_fields(object, &["role", "content", "metadata"], &format!("{at}."))?;
    let role = match object.get("role") {
        Some(Value::String(name)) => Role::parse(name).ok_or_else(|| {
            validation(format!(
                "{at}.role must be one of system, user, assistant, tool"
            ))
        })?,
        Some(_) => return Err(validation(format!("{at}.role must be a string"))),
        None => return Err(validation(format!("{at}.role is required"))),
    };
    let content = match object.get("content") {
        Some(content @ Value::String(_)) => content.clone(),
        Some(content @ Value::Array(blocks))
            if blocks
                .iter()
                .all(|block| block.is_object() || block.is_string()) =>
        {
            content.clone()
        }
        Some(_) => {
            return Err(validation(format!(
                "{at}.content must be a string or an array of objects and strings"
            )));
        }
        None => return Err(validation(format!("{at}.content is required"))),
    };
    let metadata = parse_metadata(object.get("metadata"), &format!("{at}.metadata"))?;
    NewEntry::checked(
        EntryKind::Message,
        Some(role),
        Some(content),
        metadata,
        &at,
        limits,
    )
}

fn parse_expected_seq(object: &Map<String, Value>) -> Result<Option<i64>, Invalid> {
    match object.get("expected_seq") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => match number.as_i64() {
            Some(seq) if seq >= 0 => Ok(Some(seq)),
            _ => Err(validation("expected_seq must be a non-negative integer")),
        },
        Some(_) => Err(validation("expected_seq must be a non-negative integer")),
    }
}

fn parse_metadata(raw: Option<&Value>, at: &str) -> Result<Map<String, Value>, Invalid> {
    match raw {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(validation(format!("{at} must be an object"))),
    }
}

/// Text PostgreSQL can store, numbers every verifier reads alike, and the size limit.
/// Returns the canonical payload.
fn check_payload(
    content: Option<&Value>,
    metadata: &Map<String, Value>,
    at: &str,
    limits: &Limits,
) -> Result<Vec<u8>, Invalid> {
    if let Some(content) = content {
        check_value(content, &format!("{at}.content"))?;
    }
    for (key, value) in metadata {
        check_text(key, &format!("{at}.metadata"))?;
        check_value(value, &format!("{at}.metadata.{key}"))?;
    }
    let canonical = hash::canonical_payload(content, metadata);
    let size = canonical.len();
    if size > limits.max_message_bytes {
        return Err(Invalid::new(
            InvalidKind::TooLarge,
            format!(
                "{at}: content plus metadata is {size} bytes serialized; at most {} are allowed",
                limits.max_message_bytes
            ),
        ));
    }
    Ok(canonical)
}

/// Largest integer magnitude that every JSON implementation reads exactly (RFC 7493).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

fn check_value(value: &Value, at: &str) -> Result<(), Invalid> {
    match value {
        Value::String(text) => check_text(text, at),
        Value::Number(number) => {
            let magnitude = match (number.as_i64(), number.as_u64(), number.as_f64()) {
                (Some(int), _, _) => int.unsigned_abs() as f64,
                (_, Some(int), _) => int as f64,
                (_, _, Some(float)) if float.is_finite() => float.abs(),
                _ => f64::INFINITY,
            };
            if magnitude > MAX_SAFE_INTEGER {
                return Err(Invalid::new(
                    InvalidKind::Number,
                    format!("{at} holds a number beyond ±(2^53-1); send it as a string"),
                ));
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(index, item)| check_value(item, &format!("{at}[{index}]"))),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            check_text(key, at)?;
            check_value(item, &format!("{at}.{key}"))
        }),
        Value::Null | Value::Bool(_) => Ok(()),
    }
}

fn check_text(text: &str, at: &str) -> Result<(), Invalid> {
    if text.contains('\0') {
        return Err(Invalid::new(
            InvalidKind::Text,
            format!("{at} contains \\u0000, which cannot be stored"),
        ));
    }
    Ok(())
}

fn expect_object<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, Invalid> {
    value
        .as_object()
        .ok_or_else(|| validation(format!("{at} must be a JSON object")))
}

fn reject_unknown_fields(
    object: &Map<String, Value>,
    known: &[&str],
    prefix: &str,
) -> Result<(), Invalid> {
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(unknown) => Err(validation(format!("unknown field {prefix}{unknown}"))),
        None => Ok(()),
    }
}

fn validation(detail: impl Into<String>) -> Invalid {
    Invalid::new(InvalidKind::Validation, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_ids_follow_the_documented_alphabet() {
        for ok in ["a", "user-42", "A.b_c:d@e-f", &"x".repeat(128), "..."] {
            assert!(SessionId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(129), "a%2Fb"] {
            assert_eq!(
                SessionId::parse(bad).expect_err("must be rejected").kind,
                InvalidKind::SessionId,
                "{bad}"
            );
        }
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(IdempotencyKey::parse(b"turn-5f3a\"\\").is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok());
        for bad in [&b""[..], b"a b", b"caf\xc3\xa9", &[b'k'; 256], b"tab\t"] {
            assert!(IdempotencyKey::parse(bad).is_err());
        }
    }

    #[test]
    fn append_body_names_the_offending_field() {
        let limits = Limits::default();
        let cases = [
            (json!({"messages": []}), "messages must not be empty"),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": [1]}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": "", "metadata": []}]}),
                "messages[0].metadata",
            ),
            (
                json!({"messages": [{"role": "user", "content": "", "extra": 1}]}),
                "messages[0].extra",
            ),
            (
                json!({"messages": [{"role": "user", "content": ""}], "expected_seq": -1}),
                "expected_seq",
            ),
            (
                json!({"messages": [{"role": "user", "content": ""}], "expected_seq": 1.5}),
                "expected_seq",
            ),
            (
                json!({"messages": [{"role": "user", "content": ""}], "x": 1}),
                "unknown field x",
            ),
        ];
        for (body, needle) in cases {
            let invalid = AppendBody::parse(&body, &limits).expect_err("must be rejected");
            assert_eq!(invalid.kind, InvalidKind::Validation, "{body}");
            assert!(
                invalid.detail.contains(needle),
                "{body}: {}",
                invalid.detail
            );
        }
    }

    #[test]
    fn nul_characters_and_unsafe_numbers_are_refused() {
        let limits = Limits::default();
        let nul = json!({"messages": [{"role": "user", "content": "a\u{0}b"}]});
        assert_eq!(
            AppendBody::parse(&nul, &limits)
                .expect_err("must be rejected")
                .kind,
            InvalidKind::Text
        );
        let nul_key =
            json!({"messages": [{"role": "user", "content": "", "metadata": {"a\u{0}": 1}}]});
        assert_eq!(
            AppendBody::parse(&nul_key, &limits)
                .expect_err("must be rejected")
                .kind,
            InvalidKind::Text
        );
        for number in [
            json!(9_007_199_254_740_992_u64),
            json!(-9_007_199_254_740_992_i64),
            json!(1e300),
        ] {
            let body = json!({"messages": [{"role": "user", "content": [{"n": number}]}]});
            assert_eq!(
                AppendBody::parse(&body, &limits)
                    .expect_err("must be rejected")
                    .kind,
                InvalidKind::Number
            );
        }
        let safe = json!({"messages": [{"role": "user", "content": [{"n": 9_007_199_254_740_991_u64, "f": 0.5}]}]});
        assert!(AppendBody::parse(&safe, &limits).is_ok());
    }

    #[test]
    fn batch_and_message_sizes_are_limited() {
        let limits = Limits {
            max_message_bytes: 64,
            max_batch: 2,
        };
        let three = json!({"messages": [{"role": "user", "content": ""}, {"role": "user", "content": ""}, {"role": "user", "content": ""}]});
        assert_eq!(
            AppendBody::parse(&three, &limits)
                .expect_err("must be rejected")
                .kind,
            InvalidKind::Validation
        );
        let big = json!({"messages": [{"role": "user", "content": "x".repeat(64)}]});
        assert_eq!(
            AppendBody::parse(&big, &limits)
                .expect_err("must be rejected")
                .kind,
            InvalidKind::TooLarge
        );
    }
}
