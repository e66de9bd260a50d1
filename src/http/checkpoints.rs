//! Checkpoint routes (API.md "Checkpoints"): the latest signed checkpoint, the log's verifier
//! key, consistency proofs between signed sizes (any tenant key), and the inclusion proof of a
//! session's append (auditor, recorded).

use axum::Json;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{Auditor, Query, Reader, SessionPath};
use super::problem::{ApiError, ListProblems, ReadProblems};
use crate::access::{Action, Outcome, Recorded};
use crate::auth::Scope;
use crate::error::{Error, Invalid};
use crate::ledger::SessionId;
use crate::ledger::checkpoints::{self, InclusionProof};

/// How long a client may cache the latest checkpoint: API.md allows at most 5 s; one second
/// keeps it close to the sequencer's pace.
const CHECKPOINT_MAX_AGE: &str = "max-age=1";

fn text(body: String) -> Response {
    (
        [
            (CONTENT_TYPE, "text/plain; charset=utf-8"),
            (CACHE_CONTROL, CHECKPOINT_MAX_AGE),
        ],
        body,
    )
        .into_response()
}

/// The latest signed checkpoint, a C2SP tlog-checkpoint signed note.
#[utoipa::path(
    get, path = "/v1/checkpoint", tag = "checkpoints",
    responses(
        (status = 200, description = "The latest signed note", body = String, content_type = "text/plain"),
        ListProblems,
    ),
    security(("bearer" = []))
)]
pub async fn latest(State(state): State<AppState>, _authed: Reader) -> Result<Response, ApiError> {
    let latest = state
        .run(|pool| async move { checkpoints::latest(&mut *pool.acquire().await?).await })
        .await?;
    match latest {
        Some(checkpoint) => Ok(text(checkpoint.note)),
        // Only before the sequencer's first round after the first start.
        None => Err(Error::NotFound.into()),
    }
}

/// The log's public key, as a C2SP note verifier key.
#[utoipa::path(
    get, path = "/v1/checkpoint/key", tag = "checkpoints",
    responses(
        (status = 200, description = "<name>+<key id>+<base64 key>", body = String, content_type = "text/plain"),
        ListProblems,
    ),
    security(("bearer" = []))
)]
pub async fn key(State(state): State<AppState>, _authed: Reader) -> Result<Response, ApiError> {
    match state.log_key.as_deref() {
        Some(key) => Ok(text(format!("{key}\n"))),
        None => Err(Error::NotFound.into()),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The earlier tree size.
    from: u64,
    /// The later tree size, at most the latest checkpoint's.
    to: u64,
}

/// A consistency proof.
#[derive(Serialize, ToSchema)]
pub struct ConsistencyProof {
    /// Base64 hashes, RFC 9162 §2.1.4.
    path: Vec<String>,
}

/// The consistency proof between two tree sizes.
#[utoipa::path(
    get, path = "/v1/checkpoint/consistency", tag = "checkpoints",
    params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyProof), ListProblems),
    security(("bearer" = []))
)]
pub async fn consistency(
    State(state): State<AppState>,
    _authed: Reader,
    Query(query): Query<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let path = state
        .run(move |pool| async move {
            checkpoints::consistency(&mut *pool.acquire().await?, query.from, query.to).await
        })
        .await?;
    Ok(Json(ConsistencyProof {
        path: path.iter().map(|hash| hash.to_base64()).collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProofQuery {
    /// The seq to prove (at least 1).
    seq: i64,
}

/// An inclusion proof of the append leaf covering a seq.
#[derive(Serialize, ToSchema)]
pub struct ProofView {
    leaf_index: u64,
    tree_size: u64,
    /// The leaf object; its JCS is the leaf's bytes in the tree.
    #[schema(value_type = Object)]
    leaf: serde_json::Value,
    /// Base64 hashes, RFC 9162 §2.1.3.
    inclusion_path: Vec<String>,
    /// The signed note of the checkpoint the proof is against.
    checkpoint: String,
}

/// The inclusion proof of a session's append in the latest checkpoint.
#[utoipa::path(
    get, path = "/v1/sessions/{session_id}/proof", tag = "checkpoints",
    params(
        ("session_id" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ : @ -"),
        ProofQuery,
    ),
    responses(
        (status = 200, body = ProofView),
        ReadProblems,
    ),
    security(("bearer" = []))
)]
pub async fn proof(
    State(state): State<AppState>,
    authed: Auditor,
    SessionPath(session_id): SessionPath,
    Query(query): Query<ProofQuery>,
) -> Result<Json<ProofView>, ApiError> {
    if query.seq < 1 {
        return Err(Error::from(Invalid::parameter("seq must be at least 1")).into());
    }
    let accessor = authed.accessor();
    let proof = state
        .recorded(
            authed.caller,
            accessor,
            Proof {
                session_id,
                seq: query.seq,
            },
        )
        .await?;
    Ok(Json(ProofView {
        leaf_index: proof.leaf_index,
        tree_size: proof.tree_size,
        leaf: proof.leaf,
        inclusion_path: proof.inclusion_path,
        checkpoint: proof.checkpoint,
    }))
}

struct Proof {
    session_id: SessionId,
    seq: i64,
}

impl Recorded for Proof {
    type Output = InclusionProof;

    fn action(&self) -> Action {
        Action::Proof
    }

    fn session_id(&self) -> Option<&str> {
        Some(self.session_id.as_str())
    }

    async fn run(&self, db: &mut PgConnection, scope: Scope<'_>) -> Result<InclusionProof, Error> {
        checkpoints::inclusion(db, scope, self.session_id.as_str(), self.seq).await
    }

    fn outcome(&self, proof: &InclusionProof) -> Outcome {
        Outcome::ok(json!({
            "seq": self.seq,
            "leaf_index": proof.leaf_index,
            "tree_size": proof.tree_size,
        }))
    }

    fn needs_transaction(&self) -> bool {
        true
    }
}
