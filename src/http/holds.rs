//! Legal holds and erasure: place, extend, release and list holds; erase a session's payloads.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{Auditor, Body, IdempotencyHeader, PathSegment, SessionPath};
use super::problem::{ApiError, ReadProblems, WriteProblems};
use super::views::{AppendResult, Created};
use crate::ledger::erase::{Erasure, ErasureRequest};
use crate::ledger::holds::{self, AddToHold, Hold, PlaceHold, ReleaseHold};
use crate::ledger::{Idempotency, IdempotencyKey};

/// Body of a new legal hold.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewHold {
    /// 1 to 200 characters, e.g. a matter number.
    name: String,
    /// 1 to 2000 characters.
    reason: String,
    /// Up to 1000 session ids (sessions need not exist yet).
    #[serde(default)]
    session_ids: Vec<String>,
}

/// Body adding sessions to a hold.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldSessions {
    session_ids: Vec<String>,
}

/// The tenant's legal holds.
#[derive(Serialize, ToSchema)]
pub struct HoldList {
    holds: Vec<Hold>,
}

/// Body of an erasure.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseSession {
    /// Why, e.g. "gdpr-17 request 4711": 1 to 500 characters, kept in the chain.
    reason: String,
    /// The last seq erased (default: the whole session, which also closes it).
    #[schema(minimum = 1)]
    through_seq: Option<i64>,
}

/// Place a legal hold on sessions.
#[utoipa::path(
    post, path = "/v1/holds", tag = "holds", request_body = NewHold,
    responses((status = 201, body = Hold), WriteProblems),
    security(("bearer" = []))
)]
pub async fn place(
    State(state): State<AppState>,
    authed: Auditor,
    body: Body<NewHold>,
) -> Result<(StatusCode, Json<Hold>), ApiError> {
    let NewHold {
        name,
        reason,
        session_ids,
    } = body.value;
    let work = PlaceHold::new(
        &name,
        &reason,
        holds::session_ids(&session_ids)?,
        &authed.caller.key_id,
    )?;
    let accessor = authed.accessor();
    let hold = state.recorded(authed.caller, accessor, work).await?;
    Ok((StatusCode::CREATED, Json(hold)))
}

/// Add sessions to an unreleased hold.
#[utoipa::path(
    post, path = "/v1/holds/{id}/sessions", tag = "holds", request_body = HoldSessions,
    params(("id" = i64, Path, description = "the hold's id")),
    responses((status = 200, body = Hold), WriteProblems),
    security(("bearer" = []))
)]
pub async fn add_sessions(
    State(state): State<AppState>,
    authed: Auditor,
    PathSegment(id): PathSegment,
    body: Body<HoldSessions>,
) -> Result<Json<Hold>, ApiError> {
    let work = AddToHold {
        hold_id: hold_id(&id)?,
        session_ids: holds::session_ids(&body.value.session_ids)?,
        added_by: authed.caller.key_id.to_string(),
    };
    let accessor = authed.accessor();
    Ok(Json(
        state.recorded(authed.caller, accessor, work).await?.hold,
    ))
}

/// Release a hold: recorded, never deleted. Releasing it again changes nothing.
#[utoipa::path(
    delete, path = "/v1/holds/{id}", tag = "holds",
    params(("id" = i64, Path, description = "the hold's id")),
    responses((status = 204, description = "Released"), ReadProblems),
    security(("bearer" = []))
)]
pub async fn release(
    State(state): State<AppState>,
    authed: Auditor,
    PathSegment(id): PathSegment,
) -> Result<StatusCode, ApiError> {
    let work = ReleaseHold {
        hold_id: hold_id(&id)?,
        released_by: authed.caller.key_id.to_string(),
    };
    let accessor = authed.accessor();
    state.recorded(authed.caller, accessor, work).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's legal holds, released ones included.
#[utoipa::path(
    get, path = "/v1/holds", tag = "holds",
    responses((status = 200, body = HoldList), ReadProblems),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    authed: Auditor,
) -> Result<Json<HoldList>, ApiError> {
    let caller = authed.caller;
    let holds =
        state
            .run(|pool| async move {
                holds::list(&mut *pool.begin().await?, caller.scope(), None).await
            })
            .await?;
    Ok(Json(HoldList { holds }))
}

/// A hold id from the path: unknown (and malformed) ids are simply not found.
fn hold_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().map_err(|_| ApiError::NotFound)
}

/// Erase the payloads of a session's messages up to a seq; an `erasure` entry records it.
#[utoipa::path(
    post, path = "/v1/sessions/{session_id}/erasure", tag = "holds",
    params(
        ("session_id" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ : @ -"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters"),
    ),
    request_body = EraseSession,
    responses(
        (status = 201, description = "Erased; the erasure entry (or its replay)", body = AppendResult),
        WriteProblems,
    ),
    security(("bearer" = []))
)]
pub async fn erase(
    State(state): State<AppState>,
    authed: Auditor,
    SessionPath(session_id): SessionPath,
    IdempotencyHeader(key): IdempotencyHeader,
    body: Body<EraseSession>,
) -> Result<Created, ApiError> {
    let idempotency = key.map(|key: IdempotencyKey| Idempotency::new(key, "erasure", &body.json()));
    let EraseSession {
        reason,
        through_seq,
    } = body.value;
    let request = ErasureRequest::new(session_id, through_seq, reason, idempotency)?;
    let work = Erasure {
        request,
        author: authed.caller.key_id.to_string(),
    };
    let accessor = authed.accessor();
    let tenant_id = authed.caller.tenant.id;
    let erased = state.recorded(authed.caller, accessor, work).await?;
    Ok(state.created(tenant_id, erased.appended))
}
