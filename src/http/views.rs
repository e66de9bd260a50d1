//! What the API answers: the JSON shapes of API.md, built from domain values.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, Object, OneOfBuilder, Schema, Type};

use crate::ledger::hash::lower_hex;
use crate::ledger::{Appended, Entry, RawJson, SessionSummary, Timestamp};

/// An appended entry's seq, time and hash.
#[derive(Serialize, ToSchema)]
pub struct AppendedEntryView {
    seq: i64,
    #[schema(value_type = String)]
    created_at: Timestamp,
    #[serde(serialize_with = "lower_hex")]
    #[schema(value_type = String)]
    hash: [u8; 32],
}

/// The answer to an append or reset (replayed unchanged for a retried idempotency key).
#[derive(Serialize, ToSchema)]
pub struct AppendResult {
    session_id: String,
    first_seq: i64,
    last_seq: i64,
    #[serde(serialize_with = "lower_hex")]
    #[schema(value_type = String)]
    head_hash: [u8; 32],
    entries: Vec<AppendedEntryView>,
}

/// 201 with the append's result, and `Idempotent-Replayed: true` for a replay.
pub struct Created(pub Appended);

impl IntoResponse for Created {
    fn into_response(self) -> Response {
        let replayed = self.0.replayed;
        let appended = self.0;
        let result = AppendResult {
            session_id: appended.session_id.as_str().to_owned(),
            first_seq: appended.first_seq,
            last_seq: appended.last_seq,
            head_hash: appended.head_hash,
            entries: appended
                .entries
                .into_iter()
                .map(|entry| AppendedEntryView {
                    seq: entry.seq,
                    created_at: entry.created_at,
                    hash: entry.hash,
                })
                .collect(),
        };
        let mut response = (StatusCode::CREATED, Json(result)).into_response();
        if replayed {
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}

/// Which fields of an entry a read returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum View {
    /// The whole entry, chain fields included.
    #[default]
    Full,
    /// What a bot needs to build a prompt: seq, kind, role, content, metadata, created_at, erased.
    Chat,
}

/// One ledger entry, whole or in its chat view (which leaves out the chain fields).
#[derive(Serialize, ToSchema)]
#[schema(as = Entry)]
pub struct EntryView<'a> {
    seq: i64,
    /// `message` or `context_reset`.
    kind: &'a str,
    /// `system`, `user`, `assistant` or `tool`; null for a context reset.
    role: Option<&'a str>,
    /// A string or an array of content blocks (objects or strings); null for a context reset.
    #[schema(schema_with = content_schema)]
    content: Option<&'a RawJson>,
    /// An object; null once erased.
    #[schema(value_type = Option<Object>)]
    metadata: Option<&'a RawJson>,
    #[schema(value_type = String)]
    created_at: Timestamp,
    /// Not in the chat view.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    idempotency_key: Option<Option<&'a str>>,
    /// Not in the chat view.
    #[serde(skip_serializing_if = "Option::is_none")]
    author: Option<&'a str>,
    /// Not in the chat view; null once erased.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    salt: Option<Option<Hex<'a>>>,
    /// Not in the chat view.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    payload_digest: Option<Hex<'a>>,
    /// Not in the chat view.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    prev_hash: Option<Hex<'a>>,
    /// Not in the chat view.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    hash: Option<Hex<'a>>,
    erased: bool,
}

impl<'a> EntryView<'a> {
    pub fn new(entry: &'a Entry, view: View) -> Self {
        let full = view == View::Full;
        let chain = |bytes: &'a [u8]| full.then_some(Hex(bytes));
        Self {
            seq: entry.seq,
            kind: &entry.kind,
            role: entry.role.as_deref(),
            content: entry.content.as_ref(),
            metadata: entry.metadata.as_ref(),
            created_at: entry.created_at,
            idempotency_key: full.then_some(entry.idempotency_key.as_deref()),
            author: full.then_some(entry.author.as_str()),
            salt: full.then(|| entry.salt.as_deref().map(Hex)),
            payload_digest: chain(&entry.payload_digest),
            prev_hash: chain(&entry.prev_hash),
            hash: chain(&entry.hash),
            erased: entry.erased,
        }
    }
}

fn content_schema() -> impl Into<RefOr<Schema>> {
    let block = OneOfBuilder::new()
        .item(Object::with_type(Type::Object))
        .item(Object::with_type(Type::String));
    OneOfBuilder::new()
        .item(Object::with_type(Type::String))
        .item(ArrayBuilder::new().items(block))
        .item(Object::with_type(Type::Null))
}

/// Entries serialized straight from the rows read, in the view asked for.
pub struct Entries {
    pub entries: Vec<Entry>,
    pub view: View,
}

impl Serialize for Entries {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.entries
                .iter()
                .map(|entry| EntryView::new(entry, self.view)),
        )
    }
}

/// Bytes written as lower-case hex.
pub struct Hex<'a>(&'a [u8]);

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        lower_hex(&self.0, serializer)
    }
}

/// A session's head and counters.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    session_id: String,
    #[schema(value_type = String)]
    created_at: Timestamp,
    #[schema(value_type = String)]
    updated_at: Timestamp,
    last_seq: i64,
    #[serde(serialize_with = "lower_hex")]
    #[schema(value_type = String)]
    head_hash: Vec<u8>,
    message_count: i64,
    context_start_seq: i64,
    /// Erased whole: appends and resets are refused.
    closed: bool,
    /// Ids of the unreleased legal holds covering the session.
    holds: Vec<i64>,
}

impl From<SessionSummary> for SessionView {
    fn from(summary: SessionSummary) -> Self {
        Self {
            session_id: summary.session_id,
            created_at: summary.created_at,
            updated_at: summary.updated_at,
            last_seq: summary.last_seq,
            head_hash: summary.head_hash,
            message_count: summary.message_count,
            context_start_seq: summary.context_start_seq,
            closed: summary.closed,
            holds: summary.holds,
        }
    }
}

/// A page of entries in ascending seq order.
#[derive(Serialize, ToSchema)]
pub struct AscendingPage {
    pub session_id: String,
    pub last_seq: i64,
    #[schema(value_type = Vec<EntryView<'static>>)]
    pub entries: Entries,
    /// Pass as `after_seq` for the next page; null when no further entry exists.
    #[schema(required = true)]
    pub next_after_seq: Option<i64>,
}

/// A page of entries in descending seq order.
#[derive(Serialize, ToSchema)]
pub struct DescendingPage {
    pub session_id: String,
    pub last_seq: i64,
    #[schema(value_type = Vec<EntryView<'static>>)]
    pub entries: Entries,
    /// Pass as `before_seq` for the next page; null when no further entry exists.
    #[schema(required = true)]
    pub next_before_seq: Option<i64>,
}

/// A page of entries, ascending (`after_seq`) or descending (`before_seq`).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum EntriesPage {
    Ascending(AscendingPage),
    Descending(DescendingPage),
}

/// The LLM context window.
#[derive(Serialize, ToSchema)]
pub struct ContextWindow {
    pub session_id: String,
    pub last_seq: i64,
    pub context_start_seq: i64,
    #[schema(value_type = Vec<EntryView<'static>>)]
    pub entries: Entries,
}

/// A page of the tenant's sessions.
#[derive(Serialize, ToSchema)]
pub struct SessionsPage {
    pub sessions: Vec<SessionView>,
    /// Pass as `after` for the next page; null when no further session exists.
    #[schema(required = true)]
    pub next_after: Option<String>,
}
