//! Retention: erasing the payloads older than a tenant's `retention_days`, exactly as an erasure
//! with reason `retention` does, except in sessions under a legal hold. One sweeper at a time
//! across servers (an advisory lock), in bounded batches: each erasure is one short
//! transaction on one session, so appends wait at most for that one. Each erasure's entry is
//! announced to live tails as soon as it commits, as any other erasure's is.

use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, PgPool};

use super::erase::{Erasure, ErasureRequest, RETENTION_AUTHOR};
use super::types::SessionId;
use crate::access::{self, Accessor, Actor, Origin};
use crate::auth::{Scope, Tenant};
use crate::error::Error;

/// Entries one erasure of a sweep erases at most; a session with more gets several.
pub const BATCH: i64 = 1000;

/// Which sweep lock key: any fixed number, the same on every server.
const SWEEP_LOCK: i64 = 0x6368_6174_7265_7401;

/// What one sweep did, or (dry run) would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Erasures made (or due), one per session and batch.
    pub erasures: u64,
    /// Payloads erased (or due).
    pub erased_entries: u64,
    /// Sessions with expired payloads left alone because a legal hold covers them.
    pub held_sessions: u64,
    /// False when another server was sweeping, so this one did nothing.
    pub ran: bool,
}

/// One session's expired payloads.
struct Due {
    session_id: String,
    count: i64,
    /// The seq of the last payload this session's next erasure takes.
    through_seq: i64,
    held: bool,
}

/// The expired payloads of a tenant, per session, as of `cutoff`.
async fn due(
    db: &mut PgConnection,
    tenant: &Tenant,
    cutoff: DateTime<Utc>,
) -> Result<Vec<Due>, Error> {
    let mut tx = sqlx::Connection::begin(&mut *db).await?;
    sqlx::query!("SELECT chatledger_bind($1, NULL)", tenant.id)
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query!(
        r#"WITH expired AS (
               SELECT e.session_pk, e.seq,
                      row_number() OVER (PARTITION BY e.session_pk ORDER BY e.seq) AS n
                 FROM entries e
                WHERE e.tenant_id = $1 AND e.created_at < $2
                  AND e.kind = 'message' AND e.erased_at IS NULL)
           SELECT s.session_id, count(*) AS "count!",
                  max(x.seq) FILTER (WHERE x.n <= $3) AS "through_seq!",
                  cardinality(chatledger_session_holds($1, s.session_id)) > 0 AS "held!"
             FROM expired x JOIN sessions s ON s.id = x.session_pk
            GROUP BY s.session_id
            ORDER BY s.session_id"#,
        tenant.id,
        cutoff,
        BATCH,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|row| Due {
            session_id: row.session_id,
            count: row.count,
            through_seq: row.through_seq,
            held: row.held,
        })
        .collect())
}

/// The tenants with a retention period (or just `only`), and their cutoffs at `now`.
async fn retained(
    db: &mut PgConnection,
    only: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<(Tenant, DateTime<Utc>)>, Error> {
    let rows = sqlx::query!(
        r#"SELECT t.id, t.name, p.retention_days AS "retention_days!"
             FROM tenants t
             JOIN LATERAL (SELECT retention_days FROM tenant_policies
                            WHERE tenant_id = t.id ORDER BY id DESC LIMIT 1) p ON true
            WHERE p.retention_days IS NOT NULL AND ($1::text IS NULL OR t.name = $1)
            ORDER BY t.name"#,
        only
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let tenant = Tenant {
                id: row.id,
                name: row.name.into(),
            };
            (tenant, now - Duration::days(i64::from(row.retention_days)))
        })
        .collect())
}

/// Sweeps every tenant with a retention period (or only `tenant`) as of `now`; with `dry_run`
/// reports what is due without erasing. Skipped (`ran: false`) while another server sweeps.
pub async fn sweep(
    pool: &PgPool,
    now: DateTime<Utc>,
    tenant: Option<&str>,
    dry_run: bool,
) -> Result<SweepReport, Error> {
    // The lock lives with this connection, so a sweeper that dies releases it.
    let mut lock = pool.acquire().await?;
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_lock($1) AS "locked!""#,
        SWEEP_LOCK
    )
    .fetch_one(&mut *lock)
    .await?;
    if !locked {
        return Ok(SweepReport::default());
    }
    let result = sweep_locked(pool, &mut lock, now, tenant, dry_run).await;
    let unlocked = sqlx::query_scalar!(
        r#"SELECT pg_advisory_unlock($1) AS "unlocked!""#,
        SWEEP_LOCK
    )
    .fetch_one(&mut *lock)
    .await;
    let report = result?;
    unlocked?;
    Ok(report)
}

async fn sweep_locked(
    pool: &PgPool,
    db: &mut PgConnection,
    now: DateTime<Utc>,
    only: Option<&str>,
    dry_run: bool,
) -> Result<SweepReport, Error> {
    let accessor = Accessor {
        actor: Actor::Retention,
        origin: Origin::default(),
    };
    let mut report = SweepReport {
        ran: true,
        ..SweepReport::default()
    };
    for (tenant, cutoff) in retained(db, only, now).await? {
        loop {
            let due = due(db, &tenant, cutoff).await?;
            let erasable: Vec<&Due> = due.iter().filter(|due| !due.held).collect();
            if dry_run || erasable.is_empty() {
                report.held_sessions += due.iter().filter(|due| due.held).count() as u64;
                if dry_run {
                    report.erasures += erasable
                        .iter()
                        .map(|due| (due.count as u64).div_ceil(BATCH as u64))
                        .sum::<u64>();
                    report.erased_entries +=
                        erasable.iter().map(|due| due.count as u64).sum::<u64>();
                }
                break;
            }
            for due in erasable {
                let erasure = Erasure {
                    request: ErasureRequest::new(
                        SessionId::parse(&due.session_id)?,
                        Some(due.through_seq),
                        "retention".to_owned(),
                        None,
                    )?,
                    author: RETENTION_AUTHOR.to_owned(),
                };
                let scope = Scope::operator(&tenant);
                match access::run_recorded(pool, scope, true, &accessor, erasure).await {
                    Ok(erased) => {
                        report.erasures += 1;
                        report.erased_entries += erased.erased_count as u64;
                        let advance = crate::tail::Advance::of(tenant.id, &erased.appended);
                        crate::tail::announce_now(pool, advance).await;
                    }
                    // A hold placed since the listing: the next round counts it as held.
                    Err(Error::LegalHold { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
        }
    }
    Ok(report)
}
