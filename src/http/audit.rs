//! Audit routes: verify a session's chain, export it as NDJSON with a trailer, search every
//! message, and read the access log.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures_util::stream;
use serde::Serialize;
use utoipa::ToSchema;

use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgConnection;
use utoipa::IntoParams;

use super::extract::{Auditor, Query, SessionPath, bounded};
use super::problem::{ApiError, ListProblems, ReadProblems};
use super::views::{EntryView, View};
use super::{AppState, AuditSlot, with_staleness};
use crate::access::{self, AccessRecord, Action, ListAccess, Outcome, Recorded};
use crate::auth::{Caller, Scope};
use crate::error::{Error, Invalid};
use crate::ledger::MessageRole;
use crate::ledger::audit::{self, AuditHead, ExportCursor, ExportStep};
use crate::ledger::checkpoints::{self, InclusionProof};
use crate::ledger::export::{self, Trailer};
use crate::ledger::search::{self, Cursor, Search, SearchQuery};
use crate::ledger::{SessionId, Timestamp};

/// How long an export waits for its head to be integrated into the log: beyond API.md's 10 s
/// coverage bound, the log is not keeping up and the export ends without a trailer.
const HEAD_PROOF_WAIT: std::time::Duration = std::time::Duration::from_secs(15);
const HEAD_PROOF_POLL: std::time::Duration = std::time::Duration::from_millis(100);

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
    /// With `ok`: entries whose payload was erased (their digests are taken as stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    erased_entries: Option<i64>,
    /// payload_digest_mismatch, prev_hash_mismatch, hash_mismatch, seq_gap or head_mismatch.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

/// Recompute a session's hash chain from the stored rows.
#[utoipa::path(
    get, path = "/v1/sessions/{session_id}/verify", tag = "audit",
    params(("session_id" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ : @ -")),
    responses((status = 200, description = "Verified, or the first break", body = VerifyResult, headers(("chatledger-replica-lag-ms" = i64, description = "With --replica-url: how many milliseconds the replica this was read from may be behind the primary"))), ReadProblems),
    security(("bearer" = []))
)]
pub async fn verify(
    State(state): State<AppState>,
    authed: Auditor,
    SessionPath(session_id): SessionPath,
) -> Result<Response, ApiError> {
    let _slot = state.audit_slot()?;
    let accessor = authed.accessor();
    let caller = authed.caller;
    // A verify reads in many short transactions, in this request's own task so that it stops
    // soon after its client is gone. Its record is written when it is done, so it can say what
    // was found, and nothing is returned unless it is written.
    let bytes = state.limits.max_page_bytes as i64;
    let lag = state.staleness().await?;
    let verification = state
        .of_reads(audit::verify_session(state.reads(), caller.scope(), &session_id, bytes).await);
    let verification = state
        .run(|pool| async move {
            let outcome = match &verification {
                Ok(Ok(verified)) => Outcome::ok(json!({
                    "ok": true,
                    "verified_through_seq": verified.verified_through_seq,
                    "erased_entries": verified.erased_entries,
                })),
                Ok(Err(broken)) => Outcome::ok(json!({
                    "ok": false,
                    "first_bad_seq": broken.first_bad_seq,
                    "reason": broken.reason.as_str(),
                })),
                Err(Error::SessionNotFound) => Outcome {
                    detail: json!({}),
                    status: 404,
                },
                Err(_) => return verification,
            };
            let session = Some(session_id.as_str());
            access::record_alone(
                &pool,
                &caller.tenant,
                &accessor,
                Action::Verify,
                session,
                &outcome,
            )
            .await?;
            verification
        })
        .await?;
    let result = Json(match verification {
        Ok(verified) => VerifyResult {
            ok: true,
            verified_through_seq: Some(verified.verified_through_seq),
            head_hash: Some(hex::encode(verified.head_hash)),
            erased_entries: Some(verified.erased_entries),
            first_bad_seq: None,
            reason: None,
        },
        Err(broken) => VerifyResult {
            ok: false,
            verified_through_seq: None,
            head_hash: None,
            erased_entries: None,
            first_bad_seq: Some(broken.first_bad_seq),
            reason: Some(broken.reason.as_str()),
        },
    });
    Ok(with_staleness(result.into_response(), lag))
}

/// Export a session as NDJSON: one entry per line, then an `export_trailer` line.
#[utoipa::path(
    get, path = "/v1/sessions/{session_id}/export", tag = "audit",
    params(("session_id" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ : @ -")),
    responses(
        (status = 200, description = "Entries, one per line, then the trailer", body = String, content_type = "application/x-ndjson", headers(("chatledger-replica-lag-ms" = i64, description = "With --replica-url: how many milliseconds the replica this was read from may be behind the primary"))),
        ReadProblems,
    ),
    security(("bearer" = []))
)]
pub async fn export(
    State(state): State<AppState>,
    authed: Auditor,
    SessionPath(session_id): SessionPath,
) -> Result<Response, ApiError> {
    // Problems with the session, or with its access record, are answered before the stream
    // starts; the record says what the export will hold. The stream holds its audit slot.
    let slot = state.audit_slot()?;
    let accessor = authed.accessor();
    let caller = authed.caller;
    let (head, lag) = state
        .recorded_read(caller.clone(), accessor, ExportHead(session_id.clone()))
        .await?;
    let export = Export {
        _slot: slot,
        state,
        caller,
        session_id,
        exported_at: Timestamp(Utc::now()),
    };
    let start = Some((export, ExportCursor::new(head)));
    let lines = stream::unfold(start, |reading| async move {
        let (export, cursor) = reading?;
        let (chunk, cursor) = export.chunk(cursor).await;
        Some((chunk, cursor.map(|cursor| (export, cursor))))
    });
    let response = (
        [(CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response();
    Ok(with_staleness(response, lag))
}

/// Where an export starts: the session's head.
struct ExportHead(SessionId);

impl Recorded for ExportHead {
    type Output = AuditHead;

    fn action(&self) -> Action {
        Action::Export
    }

    fn session_id(&self) -> Option<&str> {
        Some(self.0.as_str())
    }

    async fn run(&self, db: &mut PgConnection, scope: Scope<'_>) -> Result<AuditHead, Error> {
        audit::head(db, scope, &self.0).await
    }

    fn outcome(&self, head: &AuditHead) -> Outcome {
        Outcome::ok(json!({"first_seq": 1.min(head.last_seq), "last_seq": head.last_seq}))
    }
}

/// An export in progress, up to the head as it was when it started.
struct Export {
    _slot: AuditSlot,
    state: AppState,
    caller: Caller,
    session_id: SessionId,
    exported_at: Timestamp,
}

impl Export {
    /// The head leaf's inclusion proof against the latest checkpoint, waiting (bounded) for
    /// the sequencer while the head is not integrated; `None` on a server without a log.
    async fn head_proof(&self, last_seq: i64) -> Result<Option<InclusionProof>, ApiError> {
        if self.state.log_key.is_none() {
            return Ok(None);
        }
        let deadline = tokio::time::Instant::now() + HEAD_PROOF_WAIT;
        loop {
            let (caller, session_id) = (self.caller.clone(), self.session_id.clone());
            let proof = self
                .state
                .run(move |pool| async move {
                    let mut tx = pool.begin().await?;
                    let proof = checkpoints::inclusion(
                        &mut tx,
                        caller.scope(),
                        session_id.as_str(),
                        last_seq,
                    )
                    .await;
                    tx.commit().await?;
                    match proof {
                        Ok(proof) if proof.leaf["last_seq"].as_i64() == Some(last_seq) => {
                            Ok(Some(proof))
                        }
                        Ok(_) => Err(Error::Corrupt("the head's leaf does not end at the head")),
                        Err(Error::NotFound) => Ok(None),
                        Err(other) => Err(other),
                    }
                })
                .await?;
            if proof.is_some() {
                return Ok(proof);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::Internal(
                    "the head was not integrated into the log in time".into(),
                ));
            }
            tokio::time::sleep(HEAD_PROOF_POLL).await;
        }
    }

    /// The next lines, and where to go on (`None`: done).
    async fn chunk(&self, cursor: ExportCursor) -> (std::io::Result<Bytes>, Option<ExportCursor>) {
        let (caller, session_id) = (self.caller.clone(), self.session_id.clone());
        let max_page_bytes = self.state.limits.max_page_bytes as i64;
        let step = self
            .state
            .run_read(|pool| async move {
                let mut cursor = cursor;
                let db = &mut *pool.acquire().await?;
                let step = cursor
                    .next(db, caller.scope(), &session_id, max_page_bytes)
                    .await?;
                Ok((step, cursor))
            })
            .await;
        let stopped = |error: &dyn std::fmt::Display| {
            tracing::error!(%error, "export stopped before its trailer");
            (Err(std::io::Error::other("export stopped early")), None)
        };
        match step {
            Ok((ExportStep::Entries(entries), cursor)) => {
                let mut chunk = Vec::new();
                for entry in entries {
                    chunk.extend(export::entry_line(
                        &self.caller.tenant.name,
                        self.session_id.as_str(),
                        entry,
                    ));
                }
                (Ok(Bytes::from(chunk)), Some(cursor))
            }
            Ok((ExportStep::AtHead, cursor)) => match self.trailer(cursor.head()).await {
                Ok(trailer) => (Ok(Bytes::from(export::trailer_line(trailer))), None),
                Err(error) => stopped(&error),
            },
            Ok((ExportStep::ErasedMeanwhile, _)) => {
                tracing::warn!(
                    "export stopped before its trailer: the session was erased while it was \
                     exported, so export it again"
                );
                (Err(std::io::Error::other("erased while exported")), None)
            }
            Err(error) => stopped(&error),
        }
    }

    async fn trailer(&self, head: &AuditHead) -> Result<Trailer, ApiError> {
        let (leaf_index, leaf, checkpoint, inclusion_path) =
            match self.head_proof(head.last_seq).await? {
                Some(proof) => (
                    Some(proof.leaf_index),
                    Some(proof.leaf),
                    Some(proof.checkpoint),
                    Some(proof.inclusion_path),
                ),
                None => (None, None, None, None),
            };
        Ok(Trailer {
            tenant: self.caller.tenant.name.to_string(),
            session_id: self.session_id.as_str().to_owned(),
            last_seq: head.last_seq,
            head_hash: hex::encode(&head.head_hash),
            exported_at: self.exported_at.to_string(),
            leaf_index,
            leaf,
            checkpoint,
            inclusion_path,
        })
    }
}

/// The parameters of an audit search.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Terms separated by spaces, `"quoted phrases"` allowed; every one must be in the text.
    q: Option<String>,
    session_id: Option<String>,
    /// `system`, `user`, `assistant` or `tool`.
    role: Option<String>,
    /// A key id.
    author: Option<String>,
    /// RFC 3339, inclusive.
    from: Option<String>,
    /// RFC 3339, exclusive.
    to: Option<String>,
    /// A JSON object the entry's metadata must contain.
    metadata: Option<String>,
    /// The `next` of the previous page.
    after: Option<String>,
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

impl SearchParams {
    fn into_query(self) -> Result<SearchQuery, Invalid> {
        let terms = search::parse_terms(self.q.as_deref().unwrap_or(""))?;
        let query = SearchQuery {
            terms,
            session_id: self
                .session_id
                .as_deref()
                .map(SessionId::parse)
                .transpose()?,
            role: self
                .role
                .map(|role| MessageRole::try_from(role).map_err(Invalid::parameter))
                .transpose()?,
            author: self.author,
            from: self
                .from
                .as_deref()
                .map(|at| time("from", at))
                .transpose()?,
            to: self.to.as_deref().map(|at| time("to", at)).transpose()?,
            metadata: self
                .metadata
                .as_deref()
                .map(|raw| match serde_json::from_str(raw) {
                    // Its keys once each, as in any stored object (I-JSON).
                    Ok(Value::Object(object)) => crate::ledger::json::check(raw, "metadata")
                        .map(|()| object)
                        .map_err(|invalid| Invalid::parameter(invalid.detail)),
                    _ => Err(Invalid::parameter("metadata must be a JSON object")),
                })
                .transpose()?,
            after: self.after.as_deref().map(Cursor::decode).transpose()?,
            limit: bounded("limit", self.limit, 50, 1, 200)?,
        };
        let filtered = query.session_id.is_some()
            || query.role.is_some()
            || query.author.is_some()
            || query.from.is_some()
            || query.to.is_some()
            || query.metadata.is_some();
        if query.terms.is_empty() && !filtered {
            return Err(Invalid::parameter("give q or at least one filter"));
        }
        Ok(query)
    }
}

/// An RFC 3339 time of a parameter.
fn time(name: &str, raw: &str) -> Result<Timestamp, Invalid> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|at| Timestamp(at.with_timezone(&Utc)))
        .map_err(|_| Invalid::parameter(format!("{name} must be an RFC 3339 time")))
}

/// One search result.
#[derive(Serialize, ToSchema)]
pub struct SearchResult<'a> {
    session_id: &'a str,
    seq: i64,
    #[schema(value_type = String)]
    created_at: Timestamp,
    role: Option<&'a str>,
    author: &'a str,
    /// Up to 200 characters around the first match, each match wrapped in `[[` and `]]`.
    snippet: &'a str,
    entry: EntryView<'a>,
}

/// A page of search results, newest first.
#[derive(Serialize, ToSchema)]
pub struct SearchPage<'a> {
    results: Vec<SearchResult<'a>>,
    /// Pass as `after` for the next page; null when no further result exists.
    #[schema(required = true)]
    next: Option<String>,
}

/// Search every message of the tenant.
#[utoipa::path(
    get, path = "/v1/audit/search", tag = "audit",
    params(SearchParams),
    responses((status = 200, body = SearchPage, headers(("chatledger-replica-lag-ms" = i64, description = "With --replica-url: how many milliseconds the replica this was read from may be behind the primary"))), ListProblems),
    security(("bearer" = []))
)]
pub async fn search(
    State(state): State<AppState>,
    authed: Auditor,
    Query(params): Query<SearchParams>,
) -> Result<Response, ApiError> {
    let query = params.into_query()?;
    let accessor = authed.accessor();
    let (hits, lag) = state
        .recorded_read(authed.caller, accessor, Search(query))
        .await?;
    let page = SearchPage {
        results: hits
            .hits
            .iter()
            .map(|hit| SearchResult {
                session_id: &hit.session_id,
                seq: hit.entry.seq,
                created_at: hit.entry.created_at,
                role: hit.entry.role.as_deref(),
                author: &hit.entry.author,
                snippet: &hit.snippet,
                entry: EntryView::new(&hit.entry, View::Full),
            })
            .collect(),
        next: hits.next.map(|cursor| cursor.encode()),
    };
    Ok(with_staleness(Json(page).into_response(), lag))
}

/// The parameters of an access-log listing.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccessParams {
    session_id: Option<String>,
    /// A key id, `admin` or `operator`.
    actor: Option<String>,
    action: Option<Action>,
    /// RFC 3339, inclusive.
    from: Option<String>,
    /// RFC 3339, exclusive.
    to: Option<String>,
    /// The `next_after_id` of the previous page.
    #[param(minimum = 0)]
    after_id: Option<i64>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// A page of the tenant's access records, ascending by id.
#[derive(Serialize, ToSchema)]
pub struct AccessPage {
    records: Vec<AccessRecord>,
    /// Pass as `after_id` for the next page; null when no further record exists.
    #[schema(required = true)]
    next_after_id: Option<i64>,
}

/// The tenant's access log: who read or changed what.
#[utoipa::path(
    get, path = "/v1/audit/access", tag = "audit",
    params(AccessParams),
    responses((status = 200, body = AccessPage, headers(("chatledger-replica-lag-ms" = i64, description = "With --replica-url: how many milliseconds the replica this was read from may be behind the primary"))), ListProblems),
    security(("bearer" = []))
)]
pub async fn access_log(
    State(state): State<AppState>,
    authed: Auditor,
    Query(params): Query<AccessParams>,
) -> Result<Response, ApiError> {
    let filter = access::Filter {
        session_id: params
            .session_id
            .as_deref()
            .map(SessionId::parse)
            .transpose()?
            .map(|id| id.as_str().to_owned()),
        actor: params.actor,
        action: params.action,
        from: params
            .from
            .as_deref()
            .map(|at| time("from", at))
            .transpose()?,
        to: params.to.as_deref().map(|at| time("to", at)).transpose()?,
        after_id: bounded("after_id", params.after_id, 0, 0, i64::MAX)?,
        limit: bounded("limit", params.limit, 100, 1, 1000)?,
    };
    let limit = filter.limit;
    let accessor = authed.accessor();
    let (mut records, lag) = state
        .recorded_read(authed.caller, accessor, ListAccess(filter))
        .await?;
    let more = records.len() as i64 > limit;
    records.truncate(limit as usize);
    let next_after_id = if more {
        records.last().map(|record| record.id)
    } else {
        None
    };
    let page = Json(AccessPage {
        records,
        next_after_id,
    });
    Ok(with_staleness(page.into_response(), lag))
}
