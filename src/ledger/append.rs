//! Appending a batch: one call of `chatledger_append` (migrations/0003_typed_functions.sql), which
//! locks the session head, replays or refuses an idempotency key, checks `expected_seq`, chains
//! the hashes and inserts, atomically.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use sqlx::types::Json;

use super::hash::{self, Timestamp};
use super::types::{IdempotencyKey, Limits, NewEntry, SessionId};
use crate::auth::Caller;
use crate::error::{Error, Invalid};

/// An idempotency key and the fingerprint of the request it was sent with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: IdempotencyKey,
    pub request_digest: [u8; 32],
}

impl Idempotency {
    /// Binds `key` to this endpoint and body: a retry matches only with both unchanged, bodies
    /// compared in RFC 8785 form. `body` is the body as sent, already known to be valid JSON
    /// (an empty body is `{}`).
    pub fn new(key: IdempotencyKey, endpoint: &str, body: &serde_json::Value) -> Self {
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

impl AppendRequest {
    /// Messages to append (1 to `limits.max_batch`), creating the session if need be.
    pub fn messages(
        session_id: SessionId,
        expected_seq: Option<i64>,
        messages: Vec<NewEntry>,
        idempotency: Option<Idempotency>,
        limits: &Limits,
    ) -> Result<Self, Invalid> {
        if messages.is_empty() {
            return Err(Invalid::validation("messages must not be empty"));
        }
        if messages.len() > limits.max_batch {
            return Err(Invalid::validation(format!(
                "messages holds {} items; at most {} are allowed per append",
                messages.len(),
                limits.max_batch
            )));
        }
        Ok(Self {
            session_id,
            expected_seq: check_expected_seq(expected_seq)?,
            entries: messages,
            idempotency,
            create_session: true,
        })
    }

    /// A context reset of an existing session.
    pub fn reset(
        session_id: SessionId,
        expected_seq: Option<i64>,
        reset: NewEntry,
        idempotency: Option<Idempotency>,
    ) -> Result<Self, Invalid> {
        Ok(Self {
            session_id,
            expected_seq: check_expected_seq(expected_seq)?,
            entries: vec![reset],
            idempotency,
            create_session: false,
        })
    }
}

fn check_expected_seq(expected_seq: Option<i64>) -> Result<Option<i64>, Invalid> {
    match expected_seq {
        Some(seq) if seq < 0 => Err(Invalid::validation(
            "expected_seq must be a non-negative integer",
        )),
        other => Ok(other),
    }
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
    pub created_at: Timestamp,
    pub hash: [u8; 32],
}

/// One element of `chatledger_append`'s batch (`chatledger_new_entry`).
#[derive(sqlx::Type)]
#[sqlx(type_name = "chatledger_new_entry")]
struct EntryParam {
    kind: String,
    role: Option<String>,
    content: Option<Json<serde_json::Value>>,
    metadata: Json<serde_json::Map<String, serde_json::Value>>,
    salt: Vec<u8>,
    payload_digest: Vec<u8>,
    payload_bytes: i32,
}

/// What `chatledger_append` did (`chatledger_append_outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "chatledger_append_outcome", rename_all = "snake_case")]
pub(super) enum Outcome {
    Appended,
    Replayed,
    SeqConflict,
    SessionNotFound,
    IdempotencyKeyReused,
    SessionClosed,
    LegalHold,
}

/// Appends `request.entries` as one contiguous run of seqs, or fails having written nothing.
pub async fn append(
    db: &mut PgConnection,
    caller: &Caller,
    request: AppendRequest,
) -> Result<Appended, Error> {
    let entries: Vec<EntryParam> = request
        .entries
        .into_iter()
        .map(|entry| {
            let salt: [u8; 16] = rand::random();
            EntryParam {
                payload_digest: hash::digest_canonical_payload(&salt, entry.canonical_payload())
                    .to_vec(),
                salt: salt.to_vec(),
                payload_bytes: i32::try_from(entry.canonical_payload().len()).unwrap_or(i32::MAX),
                kind: entry.kind.as_str().to_owned(),
                role: entry.role.map(|role| role.as_str().to_owned()),
                content: entry.content.map(Json),
                metadata: Json(entry.metadata),
            }
        })
        .collect();
    let (idempotency_key, request_digest) = match &request.idempotency {
        Some(idempotency) => (
            Some(idempotency.key.as_str()),
            Some(&idempotency.request_digest[..]),
        ),
        None => (None, None),
    };

    let row = sqlx::query!(
        r#"SELECT outcome AS "outcome!: Outcome", current_seq AS "current_seq!", first_seq,
                  created_at, hashes
             FROM chatledger_append($1, $2, $3, $4, $5, $6, $7, $8, $9)"#,
        caller.tenant.id,
        &*caller.tenant.name,
        &*caller.key_id,
        request.session_id.as_str(),
        request.create_session,
        request.expected_seq,
        idempotency_key,
        request_digest,
        entries as _,
    )
    .fetch_one(&mut *db)
    .await?;

    let replayed = match row.outcome {
        Outcome::Appended => false,
        Outcome::Replayed => true,
        Outcome::SeqConflict => {
            return Err(Error::SeqConflict {
                current_seq: row.current_seq,
            });
        }
        Outcome::SessionNotFound => return Err(Error::SessionNotFound),
        Outcome::IdempotencyKeyReused => return Err(Error::IdempotencyKeyReused),
        Outcome::SessionClosed => return Err(Error::SessionClosed),
        Outcome::LegalHold => return Err(Error::Corrupt("an append refused for a legal hold")),
    };
    let (Some(first_seq), Some(created_at), Some(hashes)) =
        (row.first_seq, row.created_at, row.hashes)
    else {
        return Err(Error::Corrupt("an append without its entries"));
    };
    appended(request.session_id, first_seq, created_at, hashes, replayed)
}

pub(super) fn appended(
    session_id: SessionId,
    first_seq: i64,
    created_at: DateTime<Utc>,
    hashes: Vec<Vec<u8>>,
    replayed: bool,
) -> Result<Appended, Error> {
    let entries = hashes
        .into_iter()
        .zip(first_seq..)
        .map(|(hash, seq)| {
            Ok(AppendedEntry {
                seq,
                created_at: Timestamp(created_at),
                hash: hash
                    .try_into()
                    .map_err(|_| Error::Corrupt("an entry hash that is not 32 bytes"))?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let Some(last) = entries.last() else {
        return Err(Error::Corrupt("an append without its entries"));
    };
    Ok(Appended {
        session_id,
        first_seq,
        last_seq: last.seq,
        head_hash: last.hash,
        replayed,
        entries,
    })
}
