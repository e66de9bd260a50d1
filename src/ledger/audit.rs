//! Audits: verifying a stored session and exporting it, both in keyset pages of short,
//! single-statement transactions up to the head as it was when they started, so neither holds a
//! connection or a snapshot for long, whatever the session's length. The same for an auditor's
//! key (HTTP) and the operator (the command line, naming the tenant). An erasure that commits
//! meanwhile is the one change the pages can see below that head: verify reads on to its entry,
//! and an export, which holds nothing past its head, ends without a trailer.

use sqlx::{PgConnection, PgPool};

use super::read::{self, Entry, PageLimit, Range};
use super::types::SessionId;
use super::verify::{self, Break, ChainVerifier, Reason, Verified};
use crate::auth::Scope;
use crate::error::Error;

/// Entries read per page while verifying (pages are bounded by bytes too).
const VERIFY_PAGE: i64 = 1000;

/// Entries per export page (pages are bounded by bytes too): bounds the server's memory
/// whatever the session's length.
const EXPORT_PAGE: i64 = 100;

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
    verify_through(pool, scope, session_id, start, max_page_bytes).await
}

/// Verifies the chain up to `target`, a head read before, and past it while entries erased
/// since then await their `erasure` entry: an erasure that commits while the pages are read
/// blanks entries up to the head but appends its entry after it.
pub async fn verify_through(
    pool: &PgPool,
    scope: Scope<'_>,
    session_id: &SessionId,
    mut target: AuditHead,
    max_page_bytes: i64,
) -> Result<Verification, Error> {
    let mut verifier = ChainVerifier::new(&scope.tenant.name, session_id.as_str());
    loop {
        let before = target.last_seq + 1;
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
                .is_some_and(|entry| entry.seq < target.last_seq);
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
        if verifier.awaits_erasure_entry() && now.last_seq > target.last_seq {
            target = now;
            continue;
        }
        return Ok(verifier.finish(target.last_seq, &target.head_hash));
    }
}

/// Where an export is: the head it exports up to and the entries it has read.
#[derive(Debug)]
pub struct ExportCursor {
    head: AuditHead,
    after: i64,
    last_erased_seq: i64,
    erased_through_seq: i64,
}

/// What an export reads next.
#[derive(Debug)]
pub enum ExportStep {
    /// The next entries, in seq order.
    Entries(Vec<Entry>),
    /// Every entry up to the head has been read: the trailer follows.
    AtHead,
    /// An erasure committed while the export was read: it erased entries the export read, and
    /// its `erasure` entry, which accounts for them, lies past the head. The export would not
    /// verify; it ends without a trailer, to be exported again.
    ErasedMeanwhile,
}

impl ExportCursor {
    pub fn new(head: AuditHead) -> Self {
        Self {
            head,
            after: 0,
            last_erased_seq: 0,
            erased_through_seq: 0,
        }
    }

    pub fn head(&self) -> &AuditHead {
        &self.head
    }

    pub async fn next(
        &mut self,
        db: &mut PgConnection,
        scope: Scope<'_>,
        session_id: &SessionId,
        max_page_bytes: i64,
    ) -> Result<ExportStep, Error> {
        if self.after >= self.head.last_seq {
            // Erased entries with no erasure entry that accounts for them: an erasure committed
            // meanwhile if the head moved on, else the stored ledger itself, exported as it is
            // (so that the tampering shows when it is verified).
            if self.last_erased_seq > self.erased_through_seq
                && head(db, scope, session_id).await?.last_seq > self.head.last_seq
            {
                return Ok(ExportStep::ErasedMeanwhile);
            }
            return Ok(ExportStep::AtHead);
        }
        let limit = PageLimit {
            entries: EXPORT_PAGE,
            bytes: max_page_bytes,
        };
        let before = self.head.last_seq + 1;
        let entries = page(db, scope, session_id, self.after, before, limit).await?;
        let Some(last) = entries.last() else {
            return Err(Error::Corrupt("stored entries end before the head"));
        };
        self.after = last.seq;
        for entry in &entries {
            if entry.erased {
                self.last_erased_seq = entry.seq;
            } else if entry.kind == "erasure" {
                let through = verify::erased_through_seq(entry);
                self.erased_through_seq = self.erased_through_seq.max(through);
            }
        }
        Ok(ExportStep::Entries(entries))
    }
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
