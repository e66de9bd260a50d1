//! Appending a batch: one call of `chatledger_append`, which locks the session head, replays or
//! refuses an idempotency key, checks `expected_seq`, chains the hashes and inserts atomically.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::error::Error;
use super::hash;
use super::types::{IdempotencyKey, NewEntry, SessionId};
use crate::auth::Credential;

/// An idempotency key and the fingerprint of the request it was sent with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: IdempotencyKey,
    pub request_digest: [u8; 32],
}

impl Idempotency {
    /// Binds `key` to this endpoint and body; a retry matches only with both unchanged,
    /// bodies compared in RFC 8785 form.
    pub fn new(key: IdempotencyKey, endpoint: &str, body: &Value) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(endpoint.as_bytes());
        hasher.update([0]);
        hasher.update(hash::canonical_json(body));
        Self {
            key,
            request_digest: hasher.finalize().into(),
        }
    }
}

/// A batch to append to one session.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub session_id: SessionId,
    pub expected_seq: Option<i64>,
    pub entries: Vec<NewEntry>,
    pub idempotency: Option<Idempotency>,
    /// Messages create their session; a reset of a missing session is `SessionNotFound`.
    pub create_session: bool,
}

/// The result of an append, or of its idempotent replay.
#[derive(Debug, Clone)]
pub struct Appended {
    pub session_id: SessionId,
    pub first_seq: i64,
    pub last_seq: i64,
    pub head_hash: [u8; 32],
    pub entries: Vec<AppendedEntry>,
    /// True when an earlier append with the same idempotency key is returned unchanged.
    pub replayed: bool,
}

#[derive(Debug, Clone)]
pub struct AppendedEntry {
    pub seq: i64,
    pub created_at: DateTime<Utc>,
    pub hash: [u8; 32],
}

/// Appends `request.entries` as one contiguous run of seqs, or fails having written nothing.
pub async fn append(
    pool: &PgPool,
    caller: &Credential,
    request: AppendRequest,
) -> Result<Appended, Error> {
    let count = request.entries.len();
    let mut kinds = Vec::with_capacity(count);
    let mut roles = Vec::with_capacity(count);
    let mut contents = Vec::with_capacity(count);
    let mut metadata = Vec::with_capacity(count);
    let mut salts = Vec::with_capacity(count);
    let mut digests = Vec::with_capacity(count);
    for entry in request.entries {
        let salt: [u8; 16] = rand::random();
        digests.push(hash::digest_canonical_payload(&salt, entry.canonical_payload()).to_vec());
        salts.push(salt.to_vec());
        kinds.push(entry.kind.as_str().to_owned());
        roles.push(entry.role.map(|role| role.as_str().to_owned()));
        // jsonb[] elements travel as JSON; SQL NULL content is spelled JSON null and mapped back.
        contents.push(entry.content.unwrap_or(Value::Null));
        metadata.push(Value::Object(entry.metadata));
    }
    let (idempotency_key, request_digest) = match &request.idempotency {
        Some(idempotency) => (
            Some(idempotency.key.as_str()),
            Some(idempotency.request_digest.to_vec()),
        ),
        None => (None, None),
    };

    let row = sqlx::query!(
        r#"SELECT outcome AS "outcome!", current_seq AS "current_seq!", seqs, created_ats, hashes
             FROM chatledger_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"#,
        &caller.digest()[..],
        request.session_id.as_str(),
        request.create_session,
        request.expected_seq,
        idempotency_key,
        request_digest,
        &kinds,
        &roles as &[Option<String>],
        &contents,
        &metadata,
        &salts,
        &digests,
    )
    .fetch_one(pool)
    .await?;

    let replayed = match row.outcome.as_str() {
        "appended" => false,
        "replayed" => true,
        "seq_conflict" => {
            metrics::counter!("chatledger_seq_conflicts_total").increment(1);
            return Err(Error::SeqConflict {
                current_seq: row.current_seq,
            });
        }
        "session_not_found" => return Err(Error::SessionNotFound),
        "idempotency_key_reused" => return Err(Error::IdempotencyKeyReused),
        other => {
            return Err(Error::Database(sqlx::Error::Protocol(format!(
                "unexpected append outcome {other}"
            ))));
        }
    };
    let entries: Vec<AppendedEntry> = row
        .seqs
        .unwrap_or_default()
        .into_iter()
        .zip(row.created_ats.unwrap_or_default())
        .zip(row.hashes.unwrap_or_default())
        .map(|((seq, created_at), hash)| {
            let hash = hash
                .try_into()
                .map_err(|_| corrupt("entry hash is not 32 bytes"))?;
            Ok(AppendedEntry {
                seq,
                created_at,
                hash,
            })
        })
        .collect::<Result<_, Error>>()?;
    if replayed {
        metrics::counter!("chatledger_idempotent_replays_total").increment(1);
    } else {
        metrics::counter!("chatledger_appends_total").increment(1);
        metrics::counter!("chatledger_entries_written_total").increment(entries.len() as u64);
    }
    match (entries.first(), entries.last()) {
        (Some(first), Some(last)) => Ok(Appended {
            session_id: request.session_id,
            first_seq: first.seq,
            last_seq: last.seq,
            head_hash: last.hash,
            replayed,
            entries,
        }),
        _ => Err(corrupt("append returned no entries")),
    }
}

pub(super) fn corrupt(what: &str) -> Error {
    Error::Database(sqlx::Error::Protocol(what.to_owned()))
}
