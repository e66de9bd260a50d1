//! Reading sessions and entries; each read is one call of a tenant-binding SQL function and walks
//! an index, so its cost does not grow with the session's length.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::PgConnection;

use super::hash::Timestamp;
use super::types::SessionId;
use crate::auth::Scope;
use crate::error::Error;

/// A JSON value exactly as PostgreSQL returns it, never parsed into a tree on the read path.
pub type RawJson = sqlx::types::Json<Box<serde_json::value::RawValue>>;

/// A session's head and counters.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    pub session_id: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_seq: i64,
    pub head_hash: Vec<u8>,
    pub message_count: i64,
    pub context_start_seq: i64,
    /// Erased whole: no more appends or resets.
    pub closed: bool,
    /// The unreleased legal holds covering it.
    pub holds: Vec<i64>,
}

/// One stored entry, exactly as recorded.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: i64,
    pub kind: String,
    pub role: Option<String>,
    /// Passed through as stored; parsed only where a digest is recomputed.
    pub content: Option<RawJson>,
    /// Null once erased.
    pub metadata: Option<RawJson>,
    pub created_at: Timestamp,
    pub idempotency_key: Option<String>,
    pub author: String,
    /// Null once erased.
    pub salt: Option<Vec<u8>>,
    pub payload_digest: Vec<u8>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
    /// The payload (content, metadata, salt) is gone; the header and the digest stay.
    pub erased: bool,
}

/// Which entries to read.
#[derive(Debug, Clone, Copy)]
pub enum Range {
    /// Ascending, seq greater than the given one.
    After(i64),
    /// Descending, seq less than the given one (default: from the head).
    Before(Option<i64>),
    /// The last entries after the latest context reset, ascending.
    Context,
    /// Ascending, seq strictly between the two.
    Between(i64, i64),
}

/// How large a page may be: at most `entries`, and no more than `bytes` of entries once the
/// first is in.
#[derive(Debug, Clone, Copy)]
pub struct PageLimit {
    pub entries: i64,
    pub bytes: i64,
}

/// A page of entries with the session head it was read against.
#[derive(Debug, Clone)]
pub struct Page {
    pub last_seq: i64,
    pub context_start_seq: i64,
    pub entries: Vec<Entry>,
}

/// One session's summary.
pub async fn session(
    db: &mut PgConnection,
    scope: Scope<'_>,
    session_id: &SessionId,
) -> Result<SessionSummary, Error> {
    summaries(db, scope, Some(session_id), None, 1)
        .await?
        .pop()
        .ok_or(Error::SessionNotFound)
}

/// The tenant's sessions after `after` in byte order.
pub async fn sessions(
    db: &mut PgConnection,
    scope: Scope<'_>,
    after: Option<&SessionId>,
    limit: i64,
) -> Result<Vec<SessionSummary>, Error> {
    summaries(db, scope, None, after, limit).await
}

async fn summaries(
    db: &mut PgConnection,
    scope: Scope<'_>,
    session_id: Option<&SessionId>,
    after: Option<&SessionId>,
    limit: i64,
) -> Result<Vec<SessionSummary>, Error> {
    let rows = sqlx::query!(
        r#"SELECT session_id AS "session_id!", created_at AS "created_at!", updated_at AS "updated_at!",
                  last_seq AS "last_seq!", head_hash AS "head_hash!", message_count AS "message_count!",
                  context_start_seq AS "context_start_seq!", closed AS "closed!", holds AS "holds!"
             FROM chatledger_sessions($1, $2, $3, $4, $5)"#,
        scope.tenant.id,
        scope.key_id,
        session_id.map(SessionId::as_str),
        after.map(SessionId::as_str),
        i32::try_from(limit).unwrap_or(i32::MAX),
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| SessionSummary {
            session_id: row.session_id,
            created_at: Timestamp(row.created_at),
            updated_at: Timestamp(row.updated_at),
            last_seq: row.last_seq,
            head_hash: row.head_hash,
            message_count: row.message_count,
            context_start_seq: row.context_start_seq,
            closed: row.closed,
            holds: row.holds,
        })
        .collect())
}

/// A page of a session's entries; `SessionNotFound` when the session does not exist.
pub async fn entries(
    db: &mut PgConnection,
    scope: Scope<'_>,
    session_id: &SessionId,
    range: Range,
    limit: PageLimit,
) -> Result<Page, Error> {
    let (after, before, descending, context) = match range {
        Range::After(after) => (Some(after), None, false, false),
        Range::Before(before) => (None, before, true, false),
        Range::Context => (None, None, true, true),
        Range::Between(after, before) => (Some(after), Some(before), false, false),
    };
    let mut rows = sqlx::query!(
        r#"SELECT last_seq AS "last_seq!", context_start_seq AS "context_start_seq!", seq, kind, role,
                  content AS "content: RawJson", metadata AS "metadata: RawJson", created_at,
                  idempotency_key, author, salt, payload_digest, prev_hash, hash, erased, size
             FROM chatledger_entries($1, $2, $3, $4, $5, $6, $7, $8)"#,
        scope.tenant.id,
        scope.key_id,
        session_id.as_str(),
        after,
        before,
        i32::try_from(limit.entries).unwrap_or(i32::MAX),
        descending,
        context,
    )
    .fetch(&mut *db);
    let mut head = None;
    let mut entries = Vec::new();
    let mut bytes = 0_i64;
    while let Some(row) = rows.try_next().await? {
        head.get_or_insert((row.last_seq, row.context_start_seq));
        // The one row of a session with no entry in range.
        let Some(seq) = row.seq else { continue };
        // The rows come in page order; the page ends before the first that would pass its bound.
        bytes = bytes.saturating_add(row.size.unwrap_or(0));
        if bytes > limit.bytes && !entries.is_empty() {
            break;
        }
        entries.push(Entry {
            seq,
            kind: row.kind.ok_or(Error::Corrupt("an entry without kind"))?,
            role: row.role,
            content: row.content,
            metadata: row.metadata,
            created_at: stored_time(row.created_at)?,
            idempotency_key: row.idempotency_key,
            author: row
                .author
                .ok_or(Error::Corrupt("an entry without author"))?,
            salt: row.salt,
            payload_digest: row
                .payload_digest
                .ok_or(Error::Corrupt("an entry without payload digest"))?,
            prev_hash: row
                .prev_hash
                .ok_or(Error::Corrupt("an entry without prev_hash"))?,
            hash: row.hash.ok_or(Error::Corrupt("an entry without hash"))?,
            erased: row.erased.unwrap_or(false),
        });
    }
    let Some((last_seq, context_start_seq)) = head else {
        return Err(Error::SessionNotFound);
    };
    if context {
        entries.reverse();
    }
    Ok(Page {
        last_seq,
        context_start_seq,
        entries,
    })
}

fn stored_time(at: Option<DateTime<Utc>>) -> Result<Timestamp, Error> {
    at.map(Timestamp)
        .ok_or(Error::Corrupt("an entry without created_at"))
}

/// The key under which notifications name `session_id` of the scope's tenant (migration 0007),
/// whether or not the session exists.
pub async fn tail_key(
    db: &mut PgConnection,
    scope: Scope<'_>,
    session_id: &SessionId,
) -> Result<u64, Error> {
    let key = sqlx::query_scalar!(
        r#"SELECT chatledger_tail_key($1, $2) AS "key!""#,
        scope.tenant.id,
        session_id.as_str(),
    )
    .fetch_one(&mut *db)
    .await?;
    u64::from_str_radix(&key, 16).map_err(|_| Error::Corrupt("a tail key that is not hex"))
}
