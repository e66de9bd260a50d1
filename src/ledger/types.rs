//! Domain types, parsed on entry: once a value of these types exists, it is valid.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{hash, json};
use crate::error::{Invalid, InvalidKind};

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

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum MessageRole {
    System,
    User,
    Assistant,
    Tool,
}

impl TryFrom<String> for MessageRole {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "system" => Ok(MessageRole::System),
            "user" => Ok(MessageRole::User),
            "assistant" => Ok(MessageRole::Assistant),
            "tool" => Ok(MessageRole::Tool),
            _ => Err(format!(
                "unknown role {name:?}: one of system, user, assistant, tool"
            )),
        }
    }
}

impl MessageRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageRole::System => "system",
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
            MessageRole::Tool => "tool",
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
    /// A page of entries, as weighed by `chatledger_entry_bytes` (at least one entry).
    pub max_page_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 256 * 1024,
            max_batch: 100,
            max_page_bytes: 8 * 1024 * 1024,
        }
    }
}

/// An entry about to be appended, checked and canonicalised.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub kind: EntryKind,
    pub role: Option<MessageRole>,
    pub content: Option<Value>,
    pub metadata: Map<String, Value>,
    /// `JCS({"content", "metadata"})`, the bytes its payload digest commits to.
    canonical_payload: Vec<u8>,
}

impl NewEntry {
    /// A message from its content and metadata as sent; `at` names it in errors
    /// (`messages[2]`).
    pub fn message(
        role: MessageRole,
        content: &RawValue,
        metadata: Option<&RawValue>,
        at: &str,
        limits: &Limits,
    ) -> Result<Self, Invalid> {
        let content = parse(content, &format!("{at}.content"))?;
        let is_blocks = |blocks: &[Value]| blocks.iter().all(|b| b.is_object() || b.is_string());
        match &content {
            Value::String(_) => {}
            Value::Array(blocks) if is_blocks(blocks) => {}
            _ => {
                return Err(Invalid::validation(format!(
                    "{at}.content must be a string or an array of objects and strings"
                )));
            }
        }
        let metadata = parse_metadata(metadata, &format!("{at}.metadata"))?;
        Self::checked(
            EntryKind::Message,
            Some(role),
            Some(content),
            metadata,
            at,
            limits,
        )
    }

    /// A context reset with the metadata as sent.
    pub fn context_reset(metadata: Option<&RawValue>, limits: &Limits) -> Result<Self, Invalid> {
        let metadata = parse_metadata(metadata, "metadata")?;
        Self::checked(
            EntryKind::ContextReset,
            None,
            None,
            metadata,
            "metadata",
            limits,
        )
    }

    fn checked(
        kind: EntryKind,
        role: Option<MessageRole>,
        content: Option<Value>,
        metadata: Map<String, Value>,
        at: &str,
        limits: &Limits,
    ) -> Result<Self, Invalid> {
        let canonical_payload = hash::canonical_payload(content.as_ref(), &metadata);
        let size = canonical_payload.len();
        if size > limits.max_message_bytes {
            return Err(Invalid::new(
                InvalidKind::TooLarge,
                format!(
                    "{at}: content plus metadata is {size} bytes serialized; at most {} are allowed",
                    limits.max_message_bytes
                ),
            ));
        }
        Ok(Self {
            kind,
            role,
            content,
            metadata,
            canonical_payload,
        })
    }

    pub fn canonical_payload(&self) -> &[u8] {
        &self.canonical_payload
    }
}

/// JSON as sent, checked for what serde cannot say (`json::check`), then parsed.
fn parse(raw: &RawValue, at: &str) -> Result<Value, Invalid> {
    json::check(raw.get(), at)?;
    serde_json::from_str(raw.get()).map_err(|error| {
        // serde_json's own limit on nesting, which only making values meets.
        if error.to_string().starts_with("recursion limit exceeded") {
            return Invalid::validation(format!(
                "{at} is nested too deeply: at most {MAX_NESTING} arrays and objects inside each other"
            ));
        }
        Invalid::new(
            InvalidKind::Text,
            format!("{at} cannot be stored as text: {error}"),
        )
    })
}

/// How deep `parse` reads nested arrays and objects (serde_json's recursion limit, 128, less
/// the value itself).
pub const MAX_NESTING: usize = 127;

fn parse_metadata(raw: Option<&RawValue>, at: &str) -> Result<Map<String, Value>, Invalid> {
    match raw.map(|raw| parse(raw, at)).transpose()? {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(Invalid::validation(format!("{at} must be an object"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).expect("valid JSON")
    }

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
    fn messages_name_the_offending_part() {
        let limits = Limits::default();
        let message = |content: &str, metadata: Option<&str>| {
            let metadata = metadata.map(raw);
            NewEntry::message(
                MessageRole::User,
                &raw(content),
                metadata.as_deref(),
                "messages[3]",
                &limits,
            )
        };
        for (content, metadata, kind, needle) in [
            ("5", None, InvalidKind::Validation, "messages[3].content"),
            ("[1]", None, InvalidKind::Validation, "messages[3].content"),
            (
                r#""x""#,
                Some("[]"),
                InvalidKind::Validation,
                "messages[3].metadata",
            ),
            (
                r#""a\u0000b""#,
                None,
                InvalidKind::Text,
                "messages[3].content",
            ),
            (
                r#""x""#,
                Some(r#"{"a\u0000": 1}"#),
                InvalidKind::Text,
                "messages[3].metadata",
            ),
            (
                r#"[{"n": 9007199254740992}]"#,
                None,
                InvalidKind::Number,
                "messages[3].content[0].n",
            ),
            (
                r#""x""#,
                Some(r#"{"n": 1.00000000000000000001}"#),
                InvalidKind::Number,
                "messages[3].metadata.n",
            ),
            (
                r#""x""#,
                Some(r#"{"amount": 999, "amount": 1}"#),
                InvalidKind::Validation,
                "messages[3].metadata",
            ),
        ] {
            let invalid = message(content, metadata).expect_err("must be rejected");
            assert_eq!(invalid.kind, kind, "{content} {metadata:?}");
            assert!(
                invalid.detail.contains(needle),
                "{needle}: {}",
                invalid.detail
            );
        }
        assert!(message(r#"[{"n": 9007199254740991, "f": 0.5}, "s"]"#, Some("null")).is_ok());
    }

    #[test]
    fn the_message_size_is_limited_on_the_canonical_payload() {
        let limits = Limits {
            max_message_bytes: 64,
            max_batch: 2,
            ..Limits::default()
        };
        let big = format!("\"{}\"", "x".repeat(64));
        let invalid =
            NewEntry::message(MessageRole::User, &raw(&big), None, "messages[0]", &limits)
                .expect_err("too large");
        assert_eq!(invalid.kind, InvalidKind::TooLarge);
        assert!(
            NewEntry::message(MessageRole::User, &raw("\"small\""), None, "m", &limits).is_ok()
        );
    }
}
