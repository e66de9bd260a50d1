//! Session routes: extract (key and role first), call one ledger function, shape the answer.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use serde_json::json;
use sqlx::PgConnection;

use super::AppState;
use super::extract::{
    Authed, Body, IdempotencyHeader, Query, Reader, SessionPath, Writer, bounded,
};
use super::problem::{ApiError, ListProblems, ReadProblems, WriteProblems};
use super::views::{
    AppendResult, AscendingPage, ContextWindow, Created, DescendingPage, Entries, EntriesPage,
    SessionView, SessionsPage, View,
};
use crate::access::{Action, Outcome, Recorded};
use crate::auth::{Caller, Scope};
use crate::error::Error;
use crate::error::Invalid;
use crate::ledger::{
    self, AppendRequest, Idempotency, IdempotencyKey, Limits, MessageRole, NewEntry, Page,
    PageLimit, Range, SessionId, SessionSummary,
};

/// Most entries or sessions one page holds.
const MAX_PAGE: i64 = 1000;

/// One message to append.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    role: MessageRole,
    /// A string, or an array of content blocks (objects or strings).
    #[schema(value_type = Object)]
    content: Box<RawValue>,
    /// An object; defaults to `{}`.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Box<RawValue>>,
}

/// Body of an append: 1 to `--max-batch` messages, appended as one contiguous run.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendMessages {
    /// The seq of the last entry the writer has seen (0: the session must be new).
    #[schema(minimum = 0)]
    expected_seq: Option<i64>,
    #[schema(min_items = 1)]
    #[serde(deserialize_with = "super::extract::objects")]
    messages: Vec<NewMessage>,
}

impl AppendMessages {
    fn into_request(
        self,
        session_id: SessionId,
        idempotency: Option<Idempotency>,
        limits: &Limits,
    ) -> Result<AppendRequest, Invalid> {
        let messages = self
            .messages
            .iter()
            .enumerate()
            .map(|(index, message)| {
                NewEntry::message(
                    message.role,
                    &message.content,
                    message.metadata.as_deref(),
                    &format!("messages[{index}]"),
                    limits,
                )
            })
            .collect::<Result<_, _>>()?;
        AppendRequest::messages(session_id, self.expected_seq, messages, idempotency, limits)
    }
}

/// Body of a context reset.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetContext {
    #[schema(minimum = 0)]
    expected_seq: Option<i64>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Box<RawValue>>,
}

impl ResetContext {
    fn into_request(
        self,
        session_id: SessionId,
        idempotency: Option<Idempotency>,
        limits: &Limits,
    ) -> Result<AppendRequest, Invalid> {
        let reset = NewEntry::context_reset(self.metadata.as_deref(), limits)?;
        AppendRequest::reset(session_id, self.expected_seq, reset, idempotency)
    }
}

/// An idempotency key bound to this endpoint and body as sent.
fn idempotency<T>(
    key: Option<IdempotencyKey>,
    endpoint: &str,
    body: &Body<T>,
) -> Option<Idempotency> {
    key.map(|key| Idempotency::new(key, endpoint, &body.json()))
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
        WriteProblems,
    ),
    security(("bearer" = []))
)]
pub async fn append_messages(
    State(state): State<AppState>,
    Authed { caller, .. }: Writer,
    SessionPath(session_id): SessionPath,
    IdempotencyHeader(key): IdempotencyHeader,
    body: Body<AppendMessages>,
) -> Result<Created, ApiError> {
    let idempotency = idempotency(key, "messages", &body);
    let request = body
        .value
        .into_request(session_id, idempotency, &state.limits)?;
    append(&state, caller, request).await
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
        WriteProblems,
    ),
    security(("bearer" = []))
)]
pub async fn reset(
    State(state): State<AppState>,
    Authed { caller, .. }: Writer,
    SessionPath(session_id): SessionPath,
    IdempotencyHeader(key): IdempotencyHeader,
    body: Body<ResetContext>,
) -> Result<Created, ApiError> {
    let idempotency = idempotency(key, "reset", &body);
    let request = body
        .value
        .into_request(session_id, idempotency, &state.limits)?;
    append(&state, caller, request).await
}

/// Appends `request` for `caller`: one statement, on a warm connection.
async fn append(
    state: &AppState,
    caller: Caller,
    request: AppendRequest,
) -> Result<Created, ApiError> {
    let tenant_id = caller.tenant.id;
    let appended = state
        .run_warm(|warm| async move {
            let mut db = warm.acquire().await?;
            let result = ledger::append(&mut db, &caller, request).await;
            warm.release(db, &result);
            result
        })
        .await?;
    Ok(state.created(tenant_id, appended))
}

/// A session's summary.
#[utoipa::path(
    get, path = "/v1/sessions/{session_id}", tag = "sessions",
    params(("session_id" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ : @ -")),
    responses((status = 200, body = SessionView), ReadProblems),
    security(("bearer" = []))
)]
pub async fn get_session(
    State(state): State<AppState>,
    authed: Reader,
    SessionPath(session_id): SessionPath,
) -> Result<Json<SessionView>, ApiError> {
    let accessor = authed.accessor();
    let summary = state
        .recorded(authed.caller, accessor, ReadSession(session_id))
        .await?;
    Ok(Json(summary.into()))
}

/// One session's summary.
struct ReadSession(SessionId);

impl Recorded for ReadSession {
    type Output = SessionSummary;

    fn action(&self) -> Action {
        Action::ReadSession
    }

    fn session_id(&self) -> Option<&str> {
        Some(self.0.as_str())
    }

    async fn run(&self, db: &mut PgConnection, scope: Scope<'_>) -> Result<SessionSummary, Error> {
        ledger::session(db, scope, &self.0).await
    }

    fn outcome(&self, summary: &SessionSummary) -> Outcome {
        Outcome::ok(json!({"last_seq": summary.last_seq}))
    }
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// The parameters of a page of entries.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Ascending: entries after this seq (default 0).
    #[param(minimum = 0)]
    after_seq: Option<i64>,
    /// Descending: entries before this seq (default last_seq + 1).
    #[param(minimum = 1)]
    before_seq: Option<i64>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// `asc` (default) or `desc`.
    #[param(inline)]
    order: Option<Order>,
    /// `full` (default) or `chat`.
    #[param(inline)]
    view: Option<View>,
}

impl MessagesQuery {
    fn range(&self) -> Result<(Range, i64), Invalid> {
        let limit = bounded("limit", self.limit, 100, 1, MAX_PAGE)?;
        let range = match self.order.unwrap_or_default() {
            Order::Asc => {
                if self.before_seq.is_some() {
                    return Err(Invalid::parameter("before_seq needs order=desc"));
                }
                Range::After(bounded("after_seq", self.after_seq, 0, 0, i64::MAX)?)
            }
            Order::Desc => {
                if self.after_seq.is_some() {
                    return Err(Invalid::parameter(
                        "order=desc pages with before_seq, not after_seq",
                    ));
                }
                let before = self
                    .before_seq
                    .map(|seq| bounded("before_seq", Some(seq), 1, 1, i64::MAX));
                Range::Before(before.transpose()?)
            }
        };
        Ok((range, limit))
    }
}

/// A page of a session's entries, context resets included.
#[utoipa::path(
    get, path = "/v1/sessions/{session_id}/messages", tag = "sessions",
    params(
        ("session_id" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ : @ -"),
        MessagesQuery,
    ),
    responses((status = 200, body = EntriesPage), ReadProblems),
    security(("bearer" = []))
)]
pub async fn list_messages(
    State(state): State<AppState>,
    authed: Reader,
    SessionPath(session_id): SessionPath,
    Query(query): Query<MessagesQuery>,
) -> Result<Json<EntriesPage>, ApiError> {
    let (range, limit) = query.range()?;
    let view = query.view.unwrap_or_default();
    let read = ReadEntries {
        action: Action::ReadMessages,
        session_id: session_id.clone(),
        range,
        limit: state.page_limit(limit),
    };
    let accessor = authed.accessor();
    let page = state.recorded(authed.caller, accessor, read).await?;
    // Seqs have no gaps, so whether more entries follow is known from the page's edge alone,
    // however the page was cut (by count or by bytes).
    let edge = page.entries.last().map(|entry| entry.seq);
    let session_id = session_id.as_str().to_owned();
    let entries = Entries {
        entries: page.entries,
        view,
    };
    Ok(Json(match range {
        Range::Before(_) => EntriesPage::Descending(DescendingPage {
            session_id,
            last_seq: page.last_seq,
            entries,
            next_before_seq: edge.filter(|&seq| seq > 1),
        }),
        _ => EntriesPage::Ascending(AscendingPage {
            session_id,
            last_seq: page.last_seq,
            entries,
            next_after_seq: edge.filter(|&seq| seq < page.last_seq),
        }),
    }))
}

/// A page of a session's entries, or its context window.
struct ReadEntries {
    action: Action,
    session_id: SessionId,
    range: Range,
    limit: PageLimit,
}

impl Recorded for ReadEntries {
    type Output = Page;

    fn action(&self) -> Action {
        self.action
    }

    fn session_id(&self) -> Option<&str> {
        Some(self.session_id.as_str())
    }

    async fn run(&self, db: &mut PgConnection, scope: Scope<'_>) -> Result<Page, Error> {
        ledger::entries(db, scope, &self.session_id, self.range, self.limit).await
    }

    fn outcome(&self, page: &Page) -> Outcome {
        let seqs = page.entries.iter().map(|entry| entry.seq);
        Outcome::ok(json!({
            "first_seq": seqs.clone().min(),
            "last_seq": seqs.max(),
            "count": page.entries.len(),
        }))
    }
}

/// The parameters of a context window.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContextQuery {
    /// 1 to 1000, default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// `full` (default) or `chat`.
    #[param(inline)]
    view: Option<View>,
}

/// The context window: the last `limit` messages after the latest context reset, ascending.
#[utoipa::path(
    get, path = "/v1/sessions/{session_id}/context", tag = "sessions",
    params(
        ("session_id" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ : @ -"),
        ContextQuery,
    ),
    responses((status = 200, body = ContextWindow), ReadProblems),
    security(("bearer" = []))
)]
pub async fn context(
    State(state): State<AppState>,
    authed: Reader,
    SessionPath(session_id): SessionPath,
    Query(query): Query<ContextQuery>,
) -> Result<Json<ContextWindow>, ApiError> {
    let limit = bounded("limit", query.limit, 50, 1, MAX_PAGE)?;
    let read = ReadEntries {
        action: Action::ReadContext,
        session_id: session_id.clone(),
        range: Range::Context,
        limit: state.page_limit(limit),
    };
    let accessor = authed.accessor();
    let page = state.recorded(authed.caller, accessor, read).await?;
    Ok(Json(ContextWindow {
        session_id: session_id.as_str().to_owned(),
        last_seq: page.last_seq,
        context_start_seq: page.context_start_seq,
        entries: Entries {
            entries: page.entries,
            view: query.view.unwrap_or_default(),
        },
    }))
}

/// The parameters of a page of sessions.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionsQuery {
    /// A session_id: list the sessions after it.
    after: Option<String>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The tenant's sessions in byte order of their ids, keyset-paged.
#[utoipa::path(
    get, path = "/v1/sessions", tag = "sessions",
    params(SessionsQuery),
    responses((status = 200, body = SessionsPage), ListProblems),
    security(("bearer" = []))
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    authed: Reader,
    Query(query): Query<SessionsQuery>,
) -> Result<Json<SessionsPage>, ApiError> {
    let limit = bounded("limit", query.limit, 100, 1, MAX_PAGE)?;
    let after = query
        .after
        .as_deref()
        .map(|raw| {
            SessionId::parse(raw)
                .map_err(|_| Invalid::parameter("after must be a valid session_id"))
        })
        .transpose()?;
    let accessor = authed.accessor();
    let mut sessions = state
        .recorded(authed.caller, accessor, ListSessions { after, limit })
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

/// A page of the tenant's sessions, with one row more than asked for: it tells whether another
/// page follows.
struct ListSessions {
    after: Option<SessionId>,
    limit: i64,
}

impl Recorded for ListSessions {
    type Output = Vec<SessionSummary>;

    fn action(&self) -> Action {
        Action::ListSessions
    }

    fn session_id(&self) -> Option<&str> {
        None
    }

    async fn run(
        &self,
        db: &mut PgConnection,
        scope: Scope<'_>,
    ) -> Result<Vec<SessionSummary>, Error> {
        ledger::sessions(db, scope, self.after.as_ref(), self.limit + 1).await
    }

    fn outcome(&self, sessions: &Vec<SessionSummary>) -> Outcome {
        Outcome::ok(json!({
            "after": self.after.as_ref().map(SessionId::as_str),
            "count": sessions.len().min(self.limit as usize),
        }))
    }
}
