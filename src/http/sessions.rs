//! Session routes: thin handlers that parse, call one ledger function in a detached task, and
//! shape the response.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;

use super::extract::{IdempotencyKeyHeader, JsonBody, QueryParams, Reader, SessionPath, Writer};
use super::problem::{ApiError, Problem};
use super::{AppState, detached};
use crate::ledger::hash::{TIMESTAMP_FORMAT, format_timestamp};
use crate::ledger::{
    self, AppendBody, AppendRequest, Appended, Entry, Idempotency, Invalid, InvalidKind, Range,
    RawJson, ResetBody, SessionId, SessionSummary,
};

const MAX_PAGE: i64 = 1000;

// ---- documentation-only request schemas (bodies are parsed by `ledger::AppendBody`) ----

/// The role of a message's author.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum MessageRole {
    System,
    User,
    Assistant,
    Tool,
}

/// A content block: an object or a bare string.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ContentBlock {
    Text(String),
    Object(serde_json::Map<String, Value>),
}

/// Message content: a string or an array of content blocks.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum Content {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

/// One message to append.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    role: MessageRole,
    content: Content,
    /// Defaults to `{}`.
    metadata: Option<serde_json::Map<String, Value>>,
}

/// Body of an append.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub struct AppendMessages {
    /// The seq of the last entry the writer has seen (0: the session must be new).
    #[schema(minimum = 0)]
    expected_seq: Option<i64>,
    /// 1 to 100 messages, appended as one contiguous run.
    #[schema(min_items = 1, max_items = 100)]
    messages: Vec<NewMessage>,
}

/// Body of a context reset.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub struct ResetContext {
    #[schema(minimum = 0)]
    expected_seq: Option<i64>,
    metadata: Option<serde_json::Map<String, Value>>,
}

// ---- responses ----

/// An appended entry's seq, time and hash.
#[derive(Serialize, ToSchema)]
pub struct AppendedEntryView {
    seq: i64,
    created_at: String,
    hash: String,
}

/// The answer to an append or reset (replayed unchanged for a retried idempotency key).
#[derive(Serialize, ToSchema)]
pub struct AppendResult {
    session_id: String,
    first_seq: i64,
    last_seq: i64,
    head_hash: String,
    entries: Vec<AppendedEntryView>,
}

/// One ledger entry.
#[derive(Serialize, ToSchema)]
pub struct EntryView {
    seq: i64,
    /// `message` or `context_reset`.
    kind: String,
    /// `system`, `user`, `assistant` or `tool`; null for a context reset.
    role: Option<String>,
    /// A string or an array of content blocks; null for a context reset.
    #[schema(value_type = Option<Content>)]
    content: Option<RawJson>,
    #[schema(value_type = Object)]
    metadata: RawJson,
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String)]
    created_at: DateTime<Utc>,
    idempotency_key: Option<String>,
    author: String,
    #[serde(serialize_with = "lower_hex")]
    #[schema(value_type = String)]
    salt: Vec<u8>,
    #[serde(serialize_with = "lower_hex")]
    #[schema(value_type = String)]
    payload_digest: Vec<u8>,
    #[serde(serialize_with = "lower_hex")]
    #[schema(value_type = String)]
    prev_hash: Vec<u8>,
    #[serde(serialize_with = "lower_hex")]
    #[schema(value_type = String)]
    hash: Vec<u8>,
}

// Entries are the bulk of every read: their hashes and times are written straight into the
// response, without a String each.
fn lower_hex<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    let mut buffer = [0_u8; 64];
    let Some(out) = buffer.get_mut(..bytes.len() * 2) else {
        return serializer.serialize_str(&hex::encode(bytes));
    };
    hex::encode_to_slice(bytes, out).map_err(serde::ser::Error::custom)?;
    serializer.serialize_str(std::str::from_utf8(out).map_err(serde::ser::Error::custom)?)
}

fn timestamp<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&at.format(TIMESTAMP_FORMAT))
}

/// A session's head and counters.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    session_id: String,
    created_at: String,
    updated_at: String,
    last_seq: i64,
    head_hash: String,
    message_count: i64,
    context_start_seq: i64,
}

/// A page of entries in ascending seq order.
#[derive(Serialize, ToSchema)]
pub struct AscendingPage {
    session_id: String,
    last_seq: i64,
    entries: Vec<EntryView>,
    /// Pass as `after_seq` for the next page; null when no further entry exists.
    #[schema(required = true)]
    next_after_seq: Option<i64>,
}

/// A page of entries in descending seq order.
#[derive(Serialize, ToSchema)]
pub struct DescendingPage {
    session_id: String,
    last_seq: i64,
    entries: Vec<EntryView>,
    /// Pass as `before_seq` for the next page; null when no further entry exists.
    #[schema(required = true)]
    next_before_seq: Option<i64>,
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
    session_id: String,
    last_seq: i64,
    context_start_seq: i64,
    entries: Vec<EntryView>,
}

/// A page of the tenant's sessions.
#[derive(Serialize, ToSchema)]
pub struct SessionsPage {
    sessions: Vec<SessionView>,
    /// Pass as `after` for the next page; null when no further session exists.
    #[schema(required = true)]
    next_after: Option<String>,
}

impl From<Appended> for AppendResult {
    fn from(appended: Appended) -> Self {
        Self {
            session_id: appended.session_id.as_str().to_owned(),
            first_seq: appended.first_seq,
            last_seq: appended.last_seq,
            head_hash: hex::encode(appended.head_hash),
            entries: appended
                .entries
                .into_iter()
                .map(|entry| AppendedEntryView {
                    seq: entry.seq,
                    created_at: format_timestamp(entry.created_at),
                    hash: hex::encode(entry.hash),
                })
                .collect(),
        }
    }
}

impl From<Entry> for EntryView {
    fn from(entry: Entry) -> Self {
        Self {
            seq: entry.seq,
            kind: entry.kind,
            role: entry.role,
            content: entry.content,
            metadata: entry.metadata,
            created_at: entry.created_at,
            idempotency_key: entry.idempotency_key,
            author: entry.author,
            salt: entry.salt,
            payload_digest: entry.payload_digest,
            prev_hash: entry.prev_hash,
            hash: entry.hash,
        }
    }
}

impl From<SessionSummary> for SessionView {
    fn from(summary: SessionSummary) -> Self {
        Self {
            session_id: summary.session_id,
            created_at: format_timestamp(summary.created_at),
            updated_at: format_timestamp(summary.updated_at),
            last_seq: summary.last_seq,
            head_hash: hex::encode(summary.head_hash),
            message_count: summary.message_count,
            context_start_seq: summary.context_start_seq,
        }
    }
}

fn created(appended: Appended) -> Response {
    let replayed = appended.replayed;
    let mut response = (StatusCode::CREATED, Json(AppendResult::from(appended))).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Append messages to a session (created by its first append).
#[utoipa::path(
    post, path = "/v1/sessions/{session_id}/messages", tag = "sessions",
    params(
        ("session_id" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ : @ -"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters"),
    ),
    request_body = AppendMessages,
    responses(
        (status = 201, description = "Appended (or replayed, with Idempotent-Replayed: true)", body = AppendResult),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "expected_seq is stale", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn append_messages(
    State(state): State<AppState>,
    caller: Writer,
    path: Result<SessionPath, ApiError>,
    key: Result<IdempotencyKeyHeader, ApiError>,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    let input = (|| {
        let (SessionPath(session_id), IdempotencyKeyHeader(key), JsonBody(body)) =
            (path?, key?, body?);
        let parsed = AppendBody::parse(&body, &state.limits)?;
        Ok(AppendRequest {
            session_id,
            expected_seq: parsed.expected_seq,
            entries: parsed.messages,
            idempotency: key.map(|key| Idempotency::new(key, "messages", &body)),
            create_session: true,
        })
    })();
    let request = caller.admit(&state, input).await?;
    let (pool, credential) = (state.pool.clone(), caller.0);
    let appended =
        detached(async move { ledger::append(&pool, &credential, request).await }).await?;
    Ok(created(appended))
}

/// Append a context reset: the next context window starts after it. Erases nothing.
#[utoipa::path(
    post, path = "/v1/sessions/{session_id}/reset", tag = "sessions",
    params(
        ("session_id" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ : @ -"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters"),
    ),
    request_body = ResetContext,
    responses(
        (status = 201, description = "Appended (or replayed, with Idempotent-Replayed: true)", body = AppendResult),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn reset(
    State(state): State<AppState>,
    caller: Writer,
    path: Result<SessionPath, ApiError>,
    key: Result<IdempotencyKeyHeader, ApiError>,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    let input = (|| {
        let (SessionPath(session_id), IdempotencyKeyHeader(key), JsonBody(body)) =
            (path?, key?, body?);
        let parsed = ResetBody::parse(&body, &state.limits)?;
        Ok(AppendRequest {
            session_id,
            expected_seq: parsed.expected_seq,
            entries: vec![parsed.entry],
            idempotency: key.map(|key| Idempotency::new(key, "reset", &body)),
            create_session: false,
        })
    })();
    let request = caller.admit(&state, input).await?;
    let (pool, credential) = (state.pool.clone(), caller.0);
    let appended =
        detached(async move { ledger::append(&pool, &credential, request).await }).await?;
    Ok(created(appended))
}

/// A session's summary.
#[utoipa::path(
    get, path = "/v1/sessions/{session_id}", tag = "sessions",
    params(("session_id" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ : @ -")),
    responses(
        (status = 200, body = SessionView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_session(
    State(state): State<AppState>,
    caller: Reader,
    path: Result<SessionPath, ApiError>,
) -> Result<Json<SessionView>, ApiError> {
    let SessionPath(session_id) = caller.admit(&state, path).await?;
    let (pool, credential) = (state.pool.clone(), caller.0);
    let summary =
        detached(async move { ledger::session(&pool, &credential, &session_id).await }).await?;
    Ok(Json(summary.into()))
}

/// A page of a session's entries, context resets included.
#[utoipa::path(
    get, path = "/v1/sessions/{session_id}/messages", tag = "sessions",
    params(
        ("session_id" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ : @ -"),
        ("after_seq" = Option<i64>, Query, minimum = 0, description = "ascending: entries after this seq (default 0)"),
        ("before_seq" = Option<i64>, Query, minimum = 1, description = "descending: entries before this seq (default last_seq + 1)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "default 100"),
        ("order" = Option<String>, Query, description = "asc (default) or desc"),
    ),
    responses(
        (status = 200, body = EntriesPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_messages(
    State(state): State<AppState>,
    caller: Reader,
    path: Result<SessionPath, ApiError>,
    query: Result<QueryParams, ApiError>,
) -> Result<Json<EntriesPage>, ApiError> {
    let input = (|| {
        let (SessionPath(session_id), query) = (path?, query?);
        let (range, limit) = page_range(&query)?;
        Ok((session_id, range, limit))
    })();
    let (session_id, range, limit) = caller.admit(&state, input).await?;
    let (pool, credential, id) = (state.pool.clone(), caller.0, session_id.clone());
    let page =
        detached(async move { ledger::entries(&pool, &credential, &id, range, limit).await })
            .await?;
    // Seqs have no gaps, so whether more entries follow is known from the page's edge alone.
    let edge = page.entries.last().map(|entry| entry.seq);
    let full = page.entries.len() as i64 == limit;
    let session_id = session_id.as_str().to_owned();
    let entries = page.entries.into_iter().map(EntryView::from).collect();
    Ok(Json(match range {
        Range::Before(_) => EntriesPage::Descending(DescendingPage {
            session_id,
            last_seq: page.last_seq,
            entries,
            next_before_seq: edge.filter(|&seq| full && seq > 1),
        }),
        _ => EntriesPage::Ascending(AscendingPage {
            session_id,
            last_seq: page.last_seq,
            entries,
            next_after_seq: edge.filter(|&seq| full && seq < page.last_seq),
        }),
    }))
}

/// The range and limit of a `messages` page from its query parameters.
fn page_range(query: &QueryParams) -> Result<(Range, i64), Invalid> {
    let limit = query
        .integer("limit", 1, MAX_PAGE, Some(100))?
        .unwrap_or(100);
    let range = match query.get("order")? {
        None | Some("asc") => {
            if query.get("before_seq")?.is_some() {
                return Err(Invalid::new(
                    InvalidKind::Parameter,
                    "before_seq needs order=desc",
                ));
            }
            Range::After(
                query
                    .integer("after_seq", 0, i64::MAX, Some(0))?
                    .unwrap_or(0),
            )
        }
        Some("desc") => {
            if query.get("after_seq")?.is_some() {
                return Err(Invalid::new(
                    InvalidKind::Parameter,
                    "order=desc pages with before_seq, not after_seq",
                ));
            }
            Range::Before(query.integer("before_seq", 1, i64::MAX, None)?)
        }
        Some(_) => {
            return Err(Invalid::new(
                InvalidKind::Parameter,
                "order must be asc or desc",
            ));
        }
    };
    Ok((range, limit))
}

/// The context window: the last `limit` messages after the latest context reset, ascending.
#[utoipa::path(
    get, path = "/v1/sessions/{session_id}/context", tag = "sessions",
    params(
        ("session_id" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ : @ -"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "default 50"),
    ),
    responses(
        (status = 200, body = ContextWindow),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn context(
    State(state): State<AppState>,
    caller: Reader,
    path: Result<SessionPath, ApiError>,
    query: Result<QueryParams, ApiError>,
) -> Result<Json<ContextWindow>, ApiError> {
    let input = (|| {
        let (SessionPath(session_id), query) = (path?, query?);
        let limit = query.integer("limit", 1, MAX_PAGE, Some(50))?.unwrap_or(50);
        Ok((session_id, limit))
    })();
    let (session_id, limit) = caller.admit(&state, input).await?;
    let (pool, credential, id) = (state.pool.clone(), caller.0, session_id.clone());
    let page =
        detached(
            async move { ledger::entries(&pool, &credential, &id, Range::Context, limit).await },
        )
        .await?;
    Ok(Json(ContextWindow {
        session_id: session_id.as_str().to_owned(),
        last_seq: page.last_seq,
        context_start_seq: page.context_start_seq,
        entries: page.entries.into_iter().map(EntryView::from).collect(),
    }))
}

/// The tenant's sessions in byte order of their ids, keyset-paged.
#[utoipa::path(
    get, path = "/v1/sessions", tag = "sessions",
    params(
        ("after" = Option<String>, Query, description = "a session_id: list sessions after it"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "default 100"),
    ),
    responses(
        (status = 200, body = SessionsPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    caller: Reader,
    query: Result<QueryParams, ApiError>,
) -> Result<Json<SessionsPage>, ApiError> {
    let input = (|| {
        let query = query?;
        let limit = query
            .integer("limit", 1, MAX_PAGE, Some(100))?
            .unwrap_or(100);
        let after = query
            .get("after")?
            .map(|raw| {
                SessionId::parse(raw).map_err(|_| {
                    Invalid::new(InvalidKind::Parameter, "after must be a valid session_id")
                })
            })
            .transpose()?;
        Ok::<_, ApiError>((after, limit))
    })();
    let (after, limit) = caller.admit(&state, input).await?;
    let (pool, credential) = (state.pool.clone(), caller.0);
    // One extra row tells whether another page follows.
    let mut sessions =
        detached(
            async move { ledger::sessions(&pool, &credential, after.as_ref(), limit + 1).await },
        )
        .await?;
    let more = sessions.len() as i64 > limit;
    sessions.truncate(limit as usize);
    let next_after = if more {
        sessions.last().map(|session| session.session_id.clone())
    } else {
        None
    };
    Ok(Json(SessionsPage {
        sessions: sessions.into_iter().map(SessionView::from).collect(),
        next_after,
    }))
}
