//! The access log of API.md "Access log": who read or changed what, one append-only record per
//! request, written in the same transaction as the work it records, so that a request whose
//! record cannot be written fails and returns nothing.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

use crate::auth::{Caller, KeyRole, Scope, Tenant};
use crate::db::warm::Warm;
use crate::error::Error;
use crate::time::Timestamp;

/// What a record says was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    ReadSession,
    ListSessions,
    ReadMessages,
    ReadContext,
    Verify,
    Export,
    Search,
    Tail,
    ReadAccessLog,
    Proof,
    HoldPlace,
    HoldRelease,
    Erase,
    PolicySet,
    TenantCreate,
    KeyCreate,
    KeyRevoke,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ReadSession => "read_session",
            Action::ListSessions => "list_sessions",
            Action::ReadMessages => "read_messages",
            Action::ReadContext => "read_context",
            Action::Verify => "verify",
            Action::Export => "export",
            Action::Search => "search",
            Action::Tail => "tail",
            Action::ReadAccessLog => "read_access_log",
            Action::Proof => "proof",
            Action::HoldPlace => "hold_place",
            Action::HoldRelease => "hold_release",
            Action::Erase => "erase",
            Action::PolicySet => "policy_set",
            Action::TenantCreate => "tenant_create",
            Action::KeyCreate => "key_create",
            Action::KeyRevoke => "key_revoke",
        }
    }

    /// Reads of conversation data, which a tenant's policy may leave unrecorded for writers.
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Action::ReadSession
                | Action::ListSessions
                | Action::ReadMessages
                | Action::ReadContext
                | Action::Tail
        )
    }
}

/// Who acted: a tenant key, the admin key, or the operator on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Key {
        id: Arc<str>,
        role: KeyRole,
    },
    Admin,
    Operator,
    /// The retention sweeper, which the operator runs.
    Retention,
}

impl Actor {
    pub fn key(caller: &Caller) -> Self {
        Actor::Key {
            id: caller.key_id.clone(),
            role: caller.role,
        }
    }

    /// A key id, `admin` or `operator`.
    pub fn id(&self) -> &str {
        match self {
            Actor::Key { id, .. } => id,
            Actor::Admin => "admin",
            Actor::Operator => "operator",
            Actor::Retention => "retention",
        }
    }

    pub fn role(&self) -> &'static str {
        match self {
            Actor::Key { role, .. } => role.as_str(),
            Actor::Admin => "admin",
            Actor::Operator | Actor::Retention => "operator",
        }
    }

    fn key_id(&self) -> Option<&str> {
        match self {
            Actor::Key { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub request_id: Option<String>,
    pub client_addr: Option<String>,
}

/// Who acts, from where: what every record carries besides what was done.
#[derive(Debug, Clone)]
pub struct Accessor {
    pub actor: Actor,
    pub origin: Origin,
}

impl Accessor {
    /// The operator of the database, on the command line.
    pub fn operator() -> Self {
        Accessor {
            actor: Actor::Operator,
            origin: Origin::default(),
        }
    }

    /// Whether `action` by this accessor in a tenant whose policy is `log_writer_reads` is
    /// recorded: everything is, but reads by writer keys only when the policy says so.
    pub fn records(&self, action: Action, log_writer_reads: bool) -> bool {
        match &self.actor {
            Actor::Key {
                role: KeyRole::Writer,
                ..
            } if action.is_read() => log_writer_reads,
            _ => true,
        }
    }
}

/// What a record says of the work: its detail (never message content) and status.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub detail: Value,
    pub status: u16,
}

impl Outcome {
    pub fn ok(detail: Value) -> Self {
        Self {
            detail,
            status: 200,
        }
    }

    pub fn created(detail: Value) -> Self {
        Self {
            detail,
            status: 201,
        }
    }

    pub fn no_content(detail: Value) -> Self {
        Self {
            detail,
            status: 204,
        }
    }
}

/// Writes one record in `tenant`. Any failure is `RecordNotWritten`.
pub async fn record(
    db: &mut PgConnection,
    tenant: &Tenant,
    accessor: &Accessor,
    action: Action,
    session_id: Option<&str>,
    outcome: &Outcome,
) -> Result<i64, Error> {
    let written = sqlx::query!(
        r#"SELECT id AS "id!" FROM chatledger_record_access($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#,
        tenant.id,
        accessor.actor.key_id(),
        accessor.actor.id(),
        accessor.actor.role(),
        action.as_str(),
        session_id,
        &outcome.detail,
        accessor.origin.request_id.as_deref(),
        accessor.origin.client_addr.as_deref(),
        i16::try_from(outcome.status).unwrap_or(500),
    )
    .fetch_one(&mut *db)
    .await;
    match written {
        Ok(row) => Ok(row.id),
        Err(error) => Err(match Error::from(error) {
            // A key revoked meanwhile is the caller's problem, not the log's.
            Error::Unauthenticated => Error::Unauthenticated,
            Error::Database(error) | Error::Unavailable(error) => Error::RecordNotWritten(error),
            other => other,
        }),
    }
}

/// A unit of database work that the access log records: what it does, and what its record
/// says of what it returned.
pub trait Recorded: Send + Sync + 'static {
    type Output: Send + 'static;
    fn action(&self) -> Action;
    fn session_id(&self) -> Option<&str>;
    fn run(
        &self,
        db: &mut PgConnection,
        scope: Scope<'_>,
    ) -> impl Future<Output = Result<Self::Output, Error>> + Send;
    fn outcome(&self, output: &Self::Output) -> Outcome;
    /// Work of several statements that rely on one tenant binding runs in a transaction even
    /// when it is not recorded.
    fn needs_transaction(&self) -> bool {
        false
    }
}

/// Runs `work` in `scope` and, unless the tenant's policy leaves it out, writes its access record in
/// the same transaction: a not-found (a session, a seq, a hold) is recorded too (status 404);
/// any other failure writes nothing but a refused erasure's.
pub async fn run_recorded<W: Recorded>(
    pool: &PgPool,
    scope: Scope<'_>,
    log_writer_reads: bool,
    accessor: &Accessor,
    work: W,
) -> Result<W::Output, Error> {
    let record_it = accessor.records(work.action(), log_writer_reads);
    if !record_it && !work.needs_transaction() {
        return work.run(&mut *pool.acquire().await?, scope).await;
    }
    let mut tx = pool.begin().await?;
    let result = work.run(&mut tx, scope).await;
    if !record_it {
        tx.commit().await?;
        return result;
    }
    let Some(outcome) = recorded_outcome(&work, &result) else {
        return result;
    };
    record(
        &mut tx,
        scope.tenant,
        accessor,
        work.action(),
        work.session_id(),
        &outcome,
    )
    .await?;
    tx.commit().await.map_err(Error::RecordNotWritten)?;
    result
}

/// Like `run_recorded`; work that needs neither a record nor a transaction runs on a warm
/// connection (`db::warm`).
pub async fn run_recorded_warm<W: Recorded>(
    warm: &Warm,
    scope: Scope<'_>,
    log_writer_reads: bool,
    accessor: &Accessor,
    work: W,
) -> Result<W::Output, Error> {
    if accessor.records(work.action(), log_writer_reads) || work.needs_transaction() {
        return run_recorded(warm.pool(), scope, log_writer_reads, accessor, work).await;
    }
    let mut db = warm.acquire().await?;
    let result = work.run(&mut db, scope).await;
    warm.release(db, &result);
    result
}

/// Runs read-only `work` on `reads` (a replica) and writes its access record on `primary`, in the
/// same request: nothing is returned unless the record is written. Unlike `run_recorded`, the
/// read and its record are two transactions on two servers; a read whose record fails was only
/// ever seen by this process, which answers 503 and drops it.
pub async fn run_recorded_on<W: Recorded>(
    primary: &PgPool,
    reads: &PgPool,
    scope: Scope<'_>,
    log_writer_reads: bool,
    accessor: &Accessor,
    work: W,
) -> Result<W::Output, Error> {
    // A transaction, so that a work's tenant binding holds for all its statements; a standby
    // runs it read-only.
    let mut tx = reads.begin().await?;
    // A key the replica does not know yet, not the record's refusal of a revoked key below.
    let result = work.run(&mut tx, scope).await.map_err(Error::on_replica);
    tx.rollback().await?;
    if !accessor.records(work.action(), log_writer_reads) {
        return result;
    }
    let Some(outcome) = recorded_outcome(&work, &result) else {
        return result;
    };
    record_alone(
        primary,
        scope.tenant,
        accessor,
        work.action(),
        work.session_id(),
        &outcome,
    )
    .await?;
    result
}

/// What the record of `work` says of `result`; `None` for a failure not worth a record.
fn recorded_outcome<W: Recorded>(work: &W, result: &Result<W::Output, Error>) -> Option<Outcome> {
    match result {
        Ok(output) => Some(work.outcome(output)),
        // An attempt on what does not exist (a session, a hold, a seq) is part of the trail.
        Err(Error::SessionNotFound | Error::NotFound) => Some(Outcome {
            detail: Value::Object(Default::default()),
            status: 404,
        }),
        // A refused erasure is worth knowing about.
        Err(Error::LegalHold { holds }) => Some(Outcome {
            detail: json!({"holds": holds}),
            status: 409,
        }),
        Err(_) => None,
    }
}

/// Writes one record in a transaction of its own, for work that spans several (a verify).
pub async fn record_alone(
    pool: &PgPool,
    tenant: &Tenant,
    accessor: &Accessor,
    action: Action,
    session_id: Option<&str>,
    outcome: &Outcome,
) -> Result<i64, Error> {
    record(
        &mut *pool.acquire().await?,
        tenant,
        accessor,
        action,
        session_id,
        outcome,
    )
    .await
}

/// One access record, as the API returns it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccessRecord {
    pub id: i64,
    #[schema(value_type = String)]
    pub at: Timestamp,
    pub tenant: String,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub session_id: Option<String>,
    #[schema(value_type = Object)]
    pub detail: Value,
    pub request_id: Option<String>,
    pub client_addr: Option<String>,
    pub status: i16,
}

/// Which records to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub session_id: Option<String>,
    pub actor: Option<String>,
    pub action: Option<Action>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub after_id: i64,
    /// Records per page: the listing reads one more, which tells whether another page follows.
    pub limit: i64,
}

/// The tenant's records matching `filter`, ascending by id: up to `filter.limit + 1`.
pub async fn list(
    db: &mut PgConnection,
    scope: Scope<'_>,
    filter: &Filter,
) -> Result<Vec<AccessRecord>, Error> {
    sqlx::query!(
        "SELECT chatledger_bind($1, $2)",
        scope.tenant.id,
        scope.key_id
    )
    .execute(&mut *db)
    .await?;
    // One plan per call: each absent filter folds away, so a present one can use its index.
    sqlx::query!("SET LOCAL plan_cache_mode = force_custom_plan")
        .execute(&mut *db)
        .await?;
    let rows = sqlx::query!(
        r#"SELECT id, at, actor, role, action, session_id, detail, request_id, client_addr, status
             FROM access_records
            WHERE tenant_id = $1 AND id > $2
              AND ($3::text IS NULL OR session_id = $3)
              AND ($4::text IS NULL OR actor = $4)
              AND ($5::text IS NULL OR action = $5)
              AND ($6::timestamptz IS NULL OR at >= $6)
              AND ($7::timestamptz IS NULL OR at < $7)
            ORDER BY id
            LIMIT $8"#,
        scope.tenant.id,
        filter.after_id,
        filter.session_id.as_deref(),
        filter.actor.as_deref(),
        filter.action.map(Action::as_str),
        filter.from.map(|at| at.0),
        filter.to.map(|at| at.0),
        filter.limit + 1,
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| AccessRecord {
            id: row.id,
            at: Timestamp(row.at),
            tenant: scope.tenant.name.to_string(),
            actor: row.actor,
            role: row.role,
            action: row.action,
            session_id: row.session_id,
            detail: row.detail,
            request_id: row.request_id,
            client_addr: row.client_addr,
            status: row.status,
        })
        .collect())
}

/// A listing of the access log, which is itself recorded.
pub struct ListAccess(pub Filter);

impl Recorded for ListAccess {
    type Output = Vec<AccessRecord>;

    fn action(&self) -> Action {
        Action::ReadAccessLog
    }

    fn session_id(&self) -> Option<&str> {
        self.0.session_id.as_deref()
    }

    async fn run(
        &self,
        db: &mut PgConnection,
        scope: Scope<'_>,
    ) -> Result<Vec<AccessRecord>, Error> {
        list(db, scope, &self.0).await
    }

    fn outcome(&self, records: &Vec<AccessRecord>) -> Outcome {
        let filter = &self.0;
        Outcome::ok(json!({
            "actor": filter.actor,
            "action": filter.action,
            "from": filter.from,
            "to": filter.to,
            "after_id": filter.after_id,
            "count": records.len().min(filter.limit as usize),
        }))
    }

    fn needs_transaction(&self) -> bool {
        true
    }
}
