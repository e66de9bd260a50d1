//! Audits: verifying a stored session and exporting it, both in keyset pages of short,
//! single-statement transactions up to the head as it was when they started, so neither holds a
//! connection or a snapshot for long, whatever the session's length.

use sqlx::PgPool;

use super::error::Error;
use super::read::{self, Entry, Range, RawJson};
use super::types::SessionId;
use super::verify::{Break, ChainVerifier, Reason, Verified};
use crate::auth::{Credential, Role};

/// Entries read per page while verifying.
const VERIFY_PAGE: i64 = 1000;

/// Where an audit starts: the tenant's name, which every hash commits to, and the session head.
#[derive(Debug, Clone)]
pub struct AuditHead {
    pub tenant: String,
    pub last_seq: i64,
    pub head_hash: Vec<u8>,
    /// The highest seq stored, which an intact ledger never has above the head.
    pub max_stored_seq: i64,
}

/// The outcome of verifying one session.
pub type Verification = Result<Verified, Break>;

/// Reads what an audit needs, either with an auditor's key (HTTP) or as the operator (command
/// line, which names the tenant and has direct database access).
pub trait AuditSource {
    fn head(&self, session_id: &SessionId)
    -> impl Future<Output = Result<AuditHead, Error>> + Send;
    /// Entries with `after < seq < before`, ascending, at most `limit`.
    fn page(
        &self,
        session_id: &SessionId,
        after: i64,
        before: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Entry>, Error>> + Send;
}

/// Audits through the API: the key must belong to an auditor of the session's tenant.
#[derive(Clone)]
pub struct KeySource {
    pub pool: PgPool,
    pub caller: Credential,
}

impl AuditSource for KeySource {
    async fn head(&self, session_id: &SessionId) -> Result<AuditHead, Error> {
        let head = sqlx::query!(
            r#"SELECT tenant AS "tenant!", last_seq AS "last_seq!", head_hash AS "head_hash!", max_stored_seq
                 FROM chatledger_audit_head($1, $2)"#,
            &self.caller.digest()[..],
            session_id.as_str(),
        )
        .fetch_optional(&self.pool)
        .await?
        .ok_or(Error::SessionNotFound)?;
        Ok(AuditHead {
            tenant: head.tenant,
            last_seq: head.last_seq,
            head_hash: head.head_hash,
            max_stored_seq: head.max_stored_seq.unwrap_or(0),
        })
    }

    async fn page(
        &self,
        session_id: &SessionId,
        after: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<Entry>, Error> {
        let page = read::fetch(
            &self.pool,
            &self.caller,
            Role::Auditor,
            session_id,
            Range::Between(after, before),
            limit,
        )
        .await?;
        Ok(page.entries)
    }
}

/// Audits as the operator of the database, naming the tenant (`chatledger verify`).
#[derive(Clone)]
pub struct OperatorSource {
    pub pool: PgPool,
    pub tenant: String,
}

impl OperatorSource {
    /// Binds the tenant for row-level security in a fresh transaction.
    async fn bind(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, Error> {
        let mut tx = self.pool.begin().await?;
        let bound = sqlx::query_scalar!(
            r#"SELECT set_config('chatledger.tenant_id', id::text, true) AS "bound!" FROM tenants WHERE name = $1"#,
            self.tenant
        )
        .fetch_optional(&mut *tx)
        .await?;
        bound.map(|_| tx).ok_or(Error::UnknownTenant)
    }

    /// The tenant's session ids after `after`, in byte order.
    pub async fn session_ids(&self, after: Option<&str>, limit: i64) -> Result<Vec<String>, Error> {
        let mut tx = self.bind().await?;
        let ids = sqlx::query_scalar!(
            r#"SELECT session_id FROM sessions
                WHERE tenant_id = chatledger_current_tenant() AND session_id > $1
                ORDER BY session_id LIMIT $2"#,
            after.unwrap_or(""),
            limit
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids)
    }
}

impl AuditSource for OperatorSource {
    async fn head(&self, session_id: &SessionId) -> Result<AuditHead, Error> {
        let mut tx = self.bind().await?;
        let head = sqlx::query!(
            r#"SELECT s.last_seq, s.head_hash,
                      (SELECT max(e.seq) FROM entries e WHERE e.tenant_id = s.tenant_id AND e.session_pk = s.id) AS max_stored_seq
                 FROM sessions s
                WHERE s.tenant_id = chatledger_current_tenant() AND s.session_id = $1"#,
            session_id.as_str()
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::SessionNotFound)?;
        tx.commit().await?;
        Ok(AuditHead {
            tenant: self.tenant.clone(),
            last_seq: head.last_seq,
            head_hash: head.head_hash,
            max_stored_seq: head.max_stored_seq.unwrap_or(0),
        })
    }

    async fn page(
        &self,
        session_id: &SessionId,
        after: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<Entry>, Error> {
        let mut tx = self.bind().await?;
        let entries = sqlx::query_as!(
            Entry,
            r#"SELECT e.seq, e.kind, e.role, e.content AS "content: RawJson", e.metadata AS "metadata: RawJson",
                      e.created_at, e.idempotency_key, e.author,
                      e.salt, e.payload_digest, e.prev_hash, e.hash
                 FROM entries e JOIN sessions s ON s.id = e.session_pk AND s.tenant_id = e.tenant_id
                WHERE s.tenant_id = chatledger_current_tenant() AND s.session_id = $1
                  AND e.seq > $2 AND e.seq < $3
                ORDER BY e.seq
                LIMIT $4"#,
            session_id.as_str(),
            after,
            before,
            limit
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(entries)
    }
}

/// Recomputes a session's chain from its stored rows up to the head as it was at the start.
/// `Ok(Err(break))` is a broken chain; `Err` is a failure to read it.
pub async fn verify_session<S: AuditSource>(
    source: &S,
    session_id: &SessionId,
) -> Result<Verification, Error> {
    let head = source.head(session_id).await?;
    let mut verifier = ChainVerifier::new(&head.tenant, session_id.as_str());
    let before = head.last_seq + 1;
    loop {
        let after = verifier.next_seq() - 1;
        let page = source.page(session_id, after, before, VERIFY_PAGE).await?;
        let full = page.len() as i64 == VERIFY_PAGE;
        for entry in &page {
            if let Err(broken) = verifier.check(entry) {
                return Ok(Err(broken));
            }
        }
        if !full {
            break;
        }
    }
    // Rows beyond the head, seen against the head as it is now (appends may have moved it on).
    let now = source.head(session_id).await?;
    if now.max_stored_seq > now.last_seq {
        return Ok(Err(Break {
            first_bad_seq: now.last_seq + 1,
            reason: Reason::HeadMismatch,
        }));
    }
    Ok(verifier.finish(head.last_seq, &head.head_hash))
}
