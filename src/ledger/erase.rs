//! Erasure (API.md "Retention, holds and erasure"): the payload of every message up to a seq
//! goes (content, metadata and salt, so a short payload cannot be confirmed by guessing), the
//! header and the digest stay, and one `erasure` entry records it, in one transaction of
//! `chatledger_erase` (migration 0005). Refused while a legal hold covers the session.

use serde_json::json;
use sqlx::PgConnection;

use super::append::{Appended, Idempotency, Outcome, appended};
use super::types::SessionId;
use crate::access::{Action, Outcome as Record, Recorded};
use crate::auth::Scope;
use crate::error::{Error, Invalid};

/// Longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// The author of the erasures retention makes.
pub const RETENTION_AUTHOR: &str = "retention";

/// An erasure to make.
#[derive(Debug, Clone)]
pub struct ErasureRequest {
    pub session_id: SessionId,
    /// The last seq erased; the whole session (which also closes it) when absent.
    pub through_seq: Option<i64>,
    pub reason: String,
    pub idempotency: Option<Idempotency>,
}

impl ErasureRequest {
    pub fn new(
        session_id: SessionId,
        through_seq: Option<i64>,
        reason: String,
        idempotency: Option<Idempotency>,
    ) -> Result<Self, Invalid> {
        let length = reason.chars().count();
        if !(1..=MAX_REASON_CHARS).contains(&length) || reason.contains('\0') {
            return Err(Invalid::validation(format!(
                "reason must be 1 to {MAX_REASON_CHARS} characters, without NUL"
            )));
        }
        if through_seq.is_some_and(|seq| seq < 1) {
            return Err(Invalid::validation(
                "through_seq must be a positive integer",
            ));
        }
        Ok(Self {
            session_id,
            through_seq,
            reason,
            idempotency,
        })
    }
}

/// What an erasure did: the `erasure` entry appended, and what it erased.
#[derive(Debug, Clone)]
pub struct Erased {
    pub appended: Appended,
    /// Entries whose payload went now (0 when all were erased already, or on a replay).
    pub erased_count: i64,
    pub erased_through_seq: i64,
}

/// Erases as `request` says, authored by `author` (the caller's key id, or `retention`).
pub async fn erase(
    db: &mut PgConnection,
    scope: Scope<'_>,
    author: &str,
    request: ErasureRequest,
) -> Result<Erased, Error> {
    let salt: [u8; 16] = rand::random();
    let (idempotency_key, request_digest) = match &request.idempotency {
        Some(idempotency) => (
            Some(idempotency.key.as_str()),
            Some(&idempotency.request_digest[..]),
        ),
        None => (None, None),
    };
    let row = sqlx::query!(
        r#"SELECT outcome AS "outcome!: Outcome", current_seq AS "current_seq!", first_seq,
                  created_at, hashes, erased_count, erased_through_seq, current_holds
             FROM chatledger_erase($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#,
        scope.tenant.id,
        &*scope.tenant.name,
        scope.key_id,
        author,
        request.session_id.as_str(),
        request.through_seq,
        request.reason,
        &salt[..],
        idempotency_key,
        request_digest,
    )
    .fetch_one(&mut *db)
    .await?;
    let replayed = match row.outcome {
        Outcome::Appended => false,
        Outcome::Replayed => true,
        Outcome::SessionNotFound => return Err(Error::SessionNotFound),
        Outcome::IdempotencyKeyReused => return Err(Error::IdempotencyKeyReused),
        Outcome::LegalHold => {
            return Err(Error::LegalHold {
                holds: row.current_holds.unwrap_or_default(),
            });
        }
        Outcome::SeqConflict | Outcome::SessionClosed => {
            return Err(Error::Corrupt("an erasure refused as an append"));
        }
    };
    let (Some(first_seq), Some(created_at), Some(hashes)) =
        (row.first_seq, row.created_at, row.hashes)
    else {
        return Err(Error::Corrupt("an erasure without its entry"));
    };
    Ok(Erased {
        appended: appended(request.session_id, first_seq, created_at, hashes, replayed)?,
        erased_count: row.erased_count.unwrap_or(0),
        erased_through_seq: row.erased_through_seq.unwrap_or(0),
    })
}

/// An erasure as the access log records it (`erase`), authored by `author`.
pub struct Erasure {
    pub request: ErasureRequest,
    pub author: String,
}

impl Recorded for Erasure {
    type Output = Erased;

    fn action(&self) -> Action {
        Action::Erase
    }

    fn session_id(&self) -> Option<&str> {
        Some(self.request.session_id.as_str())
    }

    async fn run(&self, db: &mut PgConnection, scope: Scope<'_>) -> Result<Erased, Error> {
        erase(db, scope, &self.author, self.request.clone()).await
    }

    fn outcome(&self, erased: &Erased) -> Record {
        if erased.appended.replayed {
            // A retry answered with the erasure it repeats: it erased nothing itself.
            return Record::created(json!({
                "erasure_seq": erased.appended.first_seq,
                "reason": self.request.reason,
                "replayed": true,
            }));
        }
        Record::created(json!({
            "erased_through_seq": erased.erased_through_seq,
            "erased_count": erased.erased_count,
            "erasure_seq": erased.appended.first_seq,
            "reason": self.request.reason,
            "replayed": false,
        }))
    }
}
