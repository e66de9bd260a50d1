//! Audits: verifying a stored session and exporting it, both in keyset pages of short,
//! single-statement transactions up to the head as it was when they started, so neither holds a
//! connection or a snapshot for long, whatever the session's length. The same for an auditor's
//! key (HTTP) and the operator (the command line, naming the tenant).

use sqlx::{PgConnection, PgPool};

use super::read::{self, Entry, PageLimit, Range};
use super::types::SessionId;
use super::verify::{Break, ChainVerifier, Reason, Verified};
use crate::auth::Scope;
use crate::error::Error;

/// Entries read per page while verifying (pages are bounded by bytes too).
const VERIFY_PAGE: i64 = 1000;

/// Where an audit starts: the session head.
#[derive(Debug, Clone)]
pub struct AuditHead {
    pub last_seq: i64,
    pub head_hash: Vec<u8>,
    /// The highest seq stored, which an intact ledger never has above the head.
    pub max_stored_seq: i64,
}

/// The outcome of verifying one session.
pub type Verification = Result<Verified, Break>;

/// The session's head, or `SessionNotFound`.
pub async fn head(
    db: &mut PgConnection,
    scope: Scope<'_>,
    session_id: &SessionId,
) -> Result<AuditHead, Error> {
    let head = sqlx::query!(
        r#"SELECT last_seq AS "last_seq!", head_hash AS "head_hash!", max_stored_seq
             FROM chatledger_audit_head($1, $2, $3)"#,
        scope.tenant.id,
        scope.key_id,
        session_id.as_str(),
    )
    .fetch_optional(&mut *db)
    .await?
    .ok_or(Error::SessionNotFound)?;
    Ok(AuditHead {
        last_seq: head.last_seq,
        head_hash: head.head_hash,
        max_stored_seq: head.max_stored_seq.unwrap_or(0),
    })
}

/// Entries with `after < seq < before`, ascending, at most `limit`.
pub async fn page(
    db: &mut PgConnection,
    scope: Scope<'_>,
    session_id: &SessionId,
    after: i64,
    before: i64,
    limit: PageLimit,
) -> Result<Vec<Entry>, Error> {
    let page = read::entries(db, scope, session_id, Range::Between(after, before), limit).await?;
    Ok(page.entries)
}

/// Recomputes a session's chain from its stored rows up to the head as it was at the start.
/// `Ok(Err(break))` is a broken chain; `Err` is a failure to read it.
pub async fn verify_session(
    pool: &PgPool,
    scope: Scope<'_>,
    session_id: &SessionId,
    max_page_bytes: i64,
) -> Result<Verification, Error> {
    let start = head(&mut *pool.acquire().await?, scope, session_id).await?;
    let mut verifier = ChainVerifier::new(&scope.tenant.name, session_id.as_str());
    let before = start.last_seq + 1;
    loop {
        let after = verifier.next_seq() - 1;
        let entries = page(
            &mut *pool.acquire().await?,
            scope,
            session_id,
            after,
            before,
            PageLimit {
                entries: VERIFY_PAGE,
                bytes: max_page_bytes,
            },
        )
        .await?;
        let more = entries
            .last()
            .is_some_and(|entry| entry.seq < start.last_seq);
        for entry in &entries {
            if let Err(broken) = verifier.check(entry) {
                return Ok(Err(broken));
            }
        }
        if !more {
            break;
        }
    }
    // Rows beyond the head, seen against the head as it is now (appends may have moved it on).
    let now = head(&mut *pool.acquire().await?, scope, session_id).await?;
    if now.max_stored_seq > now.last_seq {
        return Ok(Err(Break {
            first_bad_seq: now.last_seq + 1,
            reason: Reason::HeadMismatch,
        }));
    }
    Ok(verifier.finish(start.last_seq, &start.head_hash))
}

/// The tenant's session ids after `after`, in byte order (for `chatledger verify --all`).
pub async fn session_ids(
    db: &mut PgConnection,
    scope: Scope<'_>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<String>, Error> {
    let after = after.map(SessionId::parse).transpose()?;
    let sessions = read::sessions(db, scope, after.as_ref(), limit).await?;
    Ok(sessions
        .into_iter()
        .map(|session| session.session_id)
        .collect())
}
