//! Audit routes: verify a session's chain, export it as NDJSON with a trailer.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures_util::stream;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{Auditor, SessionPath};
use super::problem::{ApiError, Problem};
use super::{AppState, detached};
use crate::ledger::SessionId;
use crate::ledger::audit::{self, AuditSource, KeySource};
use crate::ledger::export::{self, Trailer};
use crate::ledger::hash::format_timestamp;

/// Entries per export page: bounds the server's memory whatever the session's length.
const EXPORT_PAGE: i64 = 100;

/// The result of a verification: either `ok` with the verified head, or the first break.
#[derive(Serialize, ToSchema)]
pub struct VerifyResult {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    verified_through_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    head_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_bad_seq: Option<i64>,
    /// payload_digest_mismatch, prev_hash_mismatch, hash_mismatch, seq_gap or head_mismatch.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

/// Recompute a session's hash chain from the stored rows.
#[utoipa::path(
    get, path = "/v1/sessions/{session_id}/verify", tag = "audit",
    params(("session_id" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ : @ -")),
    responses(
        (status = 200, description = "Verified, or the first break", body = VerifyResult),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn verify(
    State(state): State<AppState>,
    caller: Auditor,
    path: Result<SessionPath, ApiError>,
) -> Result<Json<VerifyResult>, ApiError> {
    let SessionPath(session_id) = caller.admit(&state, path).await?;
    let source = KeySource {
        pool: state.pool.clone(),
        caller: caller.0,
    };
    let verification =
        detached(async move { audit::verify_session(&source, &session_id).await }).await?;
    Ok(Json(match verification {
        Ok(verified) => VerifyResult {
            ok: true,
            verified_through_seq: Some(verified.verified_through_seq),
            head_hash: Some(hex::encode(verified.head_hash)),
            first_bad_seq: None,
            reason: None,
        },
        Err(broken) => VerifyResult {
            ok: false,
            verified_through_seq: None,
            head_hash: None,
            first_bad_seq: Some(broken.first_bad_seq),
            reason: Some(broken.reason.as_str()),
        },
    }))
}

/// Export a session as NDJSON: one entry per line, then an `export_trailer` line.
#[utoipa::path(
    get, path = "/v1/sessions/{session_id}/export", tag = "audit",
    params(("session_id" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ : @ -")),
    responses(
        (status = 200, description = "Entries, one per line, then the trailer", body = String, content_type = "application/x-ndjson"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn export(
    State(state): State<AppState>,
    caller: Auditor,
    path: Result<SessionPath, ApiError>,
) -> Result<Response, ApiError> {
    let SessionPath(session_id) = caller.admit(&state, path).await?;
    let source = KeySource {
        pool: state.pool.clone(),
        caller: caller.0,
    };
    // Problems with the key or the session are answered before the stream starts.
    let head = {
        let (source, session_id) = (source.clone(), session_id.clone());
        detached(async move { source.head(&session_id).await }).await?
    };
    let exported_at = format_timestamp(Utc::now());
    let progress = Progress {
        after: 0,
        done: false,
    };
    let lines = stream::unfold(progress, move |progress| {
        let (source, session_id, head, exported_at) = (
            source.clone(),
            session_id.clone(),
            head.clone(),
            exported_at.clone(),
        );
        async move {
            if progress.done {
                return None;
            }
            if progress.after >= head.last_seq {
                let trailer = Trailer {
                    tenant: head.tenant.clone(),
                    session_id: session_id.as_str().to_owned(),
                    last_seq: head.last_seq,
                    head_hash: hex::encode(&head.head_hash),
                    exported_at,
                };
                let done = Progress {
                    after: progress.after,
                    done: true,
                };
                return Some((Ok(Bytes::from(export::trailer_line(trailer))), done));
            }
            match next_page(&source, &session_id, progress.after, head.last_seq).await {
                Ok(entries) if !entries.is_empty() => {
                    let after = entries.last().map_or(progress.after, |entry| entry.seq);
                    let mut chunk = Vec::new();
                    for entry in entries {
                        chunk.extend(export::entry_line(&head.tenant, session_id.as_str(), entry));
                    }
                    Some((Ok(Bytes::from(chunk)), Progress { after, done: false }))
                }
                // A gap in the stored ledger: stop without a trailer, so the export fails to verify.
                Ok(_) => Some((
                    Err(std::io::Error::other("stored entries end before the head")),
                    Progress {
                        after: progress.after,
                        done: true,
                    },
                )),
                Err(error) => {
                    tracing::error!(%error, "export stopped early");
                    Some((
                        Err(std::io::Error::other("export stopped early")),
                        Progress {
                            after: progress.after,
                            done: true,
                        },
                    ))
                }
            }
        }
    });
    Ok((
        [(CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

struct Progress {
    after: i64,
    done: bool,
}

async fn next_page(
    source: &KeySource,
    session_id: &SessionId,
    after: i64,
    last_seq: i64,
) -> Result<Vec<crate::ledger::Entry>, ApiError> {
    let (source, session_id) = (source.clone(), session_id.clone());
    detached(async move {
        source
            .page(&session_id, after, last_seq + 1, EXPORT_PAGE)
            .await
    })
    .await
}
