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

use super::AppState;
use super::extract::{Auditor, Authed, SessionPath};
use super::problem::{ApiError, ReadProblems};
use crate::auth::Tenant;
use crate::ledger::audit::{self, AuditHead};
use crate::ledger::export::{self, Trailer};
use crate::ledger::{SessionId, Timestamp};

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
    responses((status = 200, description = "Verified, or the first break", body = VerifyResult), ReadProblems),
    security(("bearer" = []))
)]
pub async fn verify(
    State(state): State<AppState>,
    Authed(caller, _): Auditor,
    SessionPath(session_id): SessionPath,
) -> Result<Json<VerifyResult>, ApiError> {
    let verification = state
        .run(|db| async move { audit::verify_session(&db, &caller.tenant, &session_id).await })
        .await?;
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
        ReadProblems,
    ),
    security(("bearer" = []))
)]
pub async fn export(
    State(state): State<AppState>,
    Authed(caller, _): Auditor,
    SessionPath(session_id): SessionPath,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant;
    // Problems with the session are answered before the stream starts.
    let head = {
        let (tenant, session_id) = (tenant.clone(), session_id.clone());
        state
            .run(|db| async move { audit::head(&db, &tenant, &session_id).await })
            .await?
    };
    let export = Export {
        state,
        tenant,
        session_id,
        head,
        exported_at: Timestamp(Utc::now()),
    };
    let lines = stream::unfold((export, Some(0)), |(export, after)| async move {
        let after = after?;
        let (chunk, next) = export.chunk_after(after).await;
        Some((chunk, (export, next)))
    });
    Ok((
        [(CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// An export in progress, up to the head as it was when it started.
struct Export {
    state: AppState,
    tenant: Tenant,
    session_id: SessionId,
    head: AuditHead,
    exported_at: Timestamp,
}

impl Export {
    /// The lines after seq `after`, and where to go on (`None`: done).
    async fn chunk_after(&self, after: i64) -> (std::io::Result<Bytes>, Option<i64>) {
        if after >= self.head.last_seq {
            let trailer = Trailer {
                tenant: self.tenant.name.to_string(),
                session_id: self.session_id.as_str().to_owned(),
                last_seq: self.head.last_seq,
                head_hash: hex::encode(&self.head.head_hash),
                exported_at: self.exported_at.to_string(),
            };
            return (Ok(Bytes::from(export::trailer_line(trailer))), None);
        }
        let (tenant, session_id, before) = (
            self.tenant.clone(),
            self.session_id.clone(),
            self.head.last_seq + 1,
        );
        let page = self
            .state
            .run(|db| async move {
                audit::page(&db, &tenant, &session_id, after, before, EXPORT_PAGE).await
            })
            .await;
        match page {
            Ok(entries) if !entries.is_empty() => {
                let next = entries.last().map_or(after, |entry| entry.seq);
                let mut chunk = Vec::new();
                for entry in entries {
                    chunk.extend(export::entry_line(
                        &self.tenant.name,
                        self.session_id.as_str(),
                        entry,
                    ));
                }
                (Ok(Bytes::from(chunk)), Some(next))
            }
            // A gap in the stored ledger: stop without a trailer, so the export fails to verify.
            Ok(_) => (
                Err(std::io::Error::other("stored entries end before the head")),
                None,
            ),
            Err(error) => {
                tracing::error!(%error, "export stopped early");
                (Err(std::io::Error::other("export stopped early")), None)
            }
        }
    }
}
