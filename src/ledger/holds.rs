//! Legal holds: named, with a reason, covering several sessions (by id, which may have no entry
//! yet); a held session cannot be erased and retention skips it. A hold is released once and
//! never deleted. Each change is recorded in the access log with it (`hold_place`,
//! `hold_release`).

use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;
use utoipa::ToSchema;

use super::types::SessionId;
use crate::access::{Action, Outcome, Recorded};
use crate::auth::Scope;
use crate::error::{Error, Invalid};
use crate::time::Timestamp;

/// Most sessions one request names.
pub const MAX_SESSIONS: usize = 1000;

/// A legal hold, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Hold {
    pub id: i64,
    pub name: String,
    pub reason: String,
    pub session_ids: Vec<String>,
    /// A key id (or `operator`).
    pub placed_by: String,
    #[schema(value_type = String)]
    pub placed_at: Timestamp,
    #[schema(value_type = Option<String>)]
    pub released_at: Option<Timestamp>,
}

/// Session ids to hold: 0 to 1000, each valid; repeats count once.
pub fn session_ids(raw: &[String]) -> Result<Vec<SessionId>, Invalid> {
    if raw.len() > MAX_SESSIONS {
        return Err(Invalid::validation(format!(
            "session_ids holds {} ids; at most {MAX_SESSIONS} are allowed",
            raw.len()
        )));
    }
    raw.iter()
        .enumerate()
        .map(|(index, id)| {
            SessionId::parse(id).map_err(|_| {
                Invalid::validation(format!("session_ids[{index}] is not a valid session_id"))
            })
        })
        .collect()
}

fn text(name: &str, value: &str, max: usize) -> Result<String, Invalid> {
    let length = value.chars().count();
    if (1..=max).contains(&length) && !value.contains('\0') {
        Ok(value.to_owned())
    } else {
        Err(Invalid::validation(format!(
            "{name} must be 1 to {max} characters, without NUL"
        )))
    }
}

/// A hold to place.
#[derive(Debug, Clone)]
pub struct PlaceHold {
    pub name: String,
    pub reason: String,
    pub session_ids: Vec<SessionId>,
    /// Who places it: a key id or `operator`.
    pub placed_by: String,
}

impl PlaceHold {
    pub fn new(
        name: &str,
        reason: &str,
        session_ids: Vec<SessionId>,
        placed_by: &str,
    ) -> Result<Self, Invalid> {
        Ok(Self {
            name: text("name", name, 200)?,
            reason: text("reason", reason, 2000)?,
            session_ids,
            placed_by: placed_by.to_owned(),
        })
    }
}

/// Sessions to add to a hold.
#[derive(Debug, Clone)]
pub struct AddToHold {
    pub hold_id: i64,
    pub session_ids: Vec<SessionId>,
    pub added_by: String,
}

/// A hold to release.
#[derive(Debug, Clone)]
pub struct ReleaseHold {
    pub hold_id: i64,
    pub released_by: String,
}

async fn bind(db: &mut PgConnection, scope: Scope<'_>) -> Result<(), Error> {
    sqlx::query!(
        "SELECT chatledger_bind($1, $2)",
        scope.tenant.id,
        scope.key_id
    )
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// Adds `session_ids` to the hold; returns those it did not hold yet, in byte order.
async fn add_sessions(
    db: &mut PgConnection,
    scope: Scope<'_>,
    hold_id: i64,
    session_ids: &[SessionId],
    added_by: &str,
) -> Result<Vec<String>, Error> {
    let ids: Vec<&str> = session_ids.iter().map(SessionId::as_str).collect();
    let mut added = sqlx::query_scalar!(
        "INSERT INTO hold_sessions (tenant_id, hold_id, session_id, added_by)
         SELECT $1, $2, id, $4 FROM unnest($3::text[]) AS id
         ON CONFLICT DO NOTHING
         RETURNING session_id",
        scope.tenant.id,
        hold_id,
        &ids as &[&str],
        added_by,
    )
    .fetch_all(&mut *db)
    .await?;
    added.sort_unstable();
    Ok(added)
}

/// One hold of the tenant, or `NotFound`.
pub async fn hold(db: &mut PgConnection, scope: Scope<'_>, hold_id: i64) -> Result<Hold, Error> {
    list(db, scope, Some(hold_id))
        .await?
        .pop()
        .ok_or(Error::NotFound)
}

/// The tenant's holds (or the one with `only`), ascending by id, released ones included.
pub async fn list(
    db: &mut PgConnection,
    scope: Scope<'_>,
    only: Option<i64>,
) -> Result<Vec<Hold>, Error> {
    bind(db, scope).await?;
    let rows = sqlx::query!(
        r#"SELECT h.id, h.name, h.reason, h.placed_by, h.placed_at, h.released_at,
                  coalesce(array_agg(hs.session_id ORDER BY hs.session_id)
                           FILTER (WHERE hs.session_id IS NOT NULL), '{}') AS "session_ids!"
             FROM holds h
             LEFT JOIN hold_sessions hs ON hs.tenant_id = h.tenant_id AND hs.hold_id = h.id
            WHERE h.tenant_id = $1 AND ($2::bigint IS NULL OR h.id = $2)
            GROUP BY h.tenant_id, h.id
            ORDER BY h.id"#,
        scope.tenant.id,
        only,
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Hold {
            id: row.id,
            name: row.name,
            reason: row.reason,
            session_ids: row.session_ids,
            placed_by: row.placed_by,
            placed_at: Timestamp(row.placed_at),
            released_at: row.released_at.map(Timestamp),
        })
        .collect())
}

impl Recorded for PlaceHold {
    type Output = Hold;

    fn action(&self) -> Action {
        Action::HoldPlace
    }

    fn session_id(&self) -> Option<&str> {
        None
    }

    async fn run(&self, db: &mut PgConnection, scope: Scope<'_>) -> Result<Hold, Error> {
        bind(db, scope).await?;
        let id = sqlx::query_scalar!(
            "INSERT INTO holds (tenant_id, name, reason, placed_by) VALUES ($1, $2, $3, $4) RETURNING id",
            scope.tenant.id,
            self.name,
            self.reason,
            self.placed_by,
        )
        .fetch_one(&mut *db)
        .await?;
        add_sessions(db, scope, id, &self.session_ids, &self.placed_by).await?;
        hold(db, scope, id).await
    }

    fn outcome(&self, hold: &Hold) -> Outcome {
        Outcome::created(
            json!({"hold_id": hold.id, "name": hold.name, "session_ids": hold.session_ids}),
        )
    }

    fn needs_transaction(&self) -> bool {
        true
    }
}

/// A hold after sessions were added to it, and which of them it did not hold before.
pub struct Extended {
    pub hold: Hold,
    pub added: Vec<String>,
}

impl Recorded for AddToHold {
    type Output = Extended;

    fn action(&self) -> Action {
        Action::HoldPlace
    }

    fn session_id(&self) -> Option<&str> {
        None
    }

    async fn run(&self, db: &mut PgConnection, scope: Scope<'_>) -> Result<Extended, Error> {
        bind(db, scope).await?;
        let released = sqlx::query_scalar!(
            "SELECT released_at IS NOT NULL AS \"released!\" FROM holds
              WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            scope.tenant.id,
            self.hold_id,
        )
        .fetch_optional(&mut *db)
        .await?
        .ok_or(Error::NotFound)?;
        if released {
            return Err(Invalid::validation("the hold is released: place a new one").into());
        }
        let added =
            add_sessions(db, scope, self.hold_id, &self.session_ids, &self.added_by).await?;
        Ok(Extended {
            hold: hold(db, scope, self.hold_id).await?,
            added,
        })
    }

    fn outcome(&self, extended: &Extended) -> Outcome {
        Outcome::ok(json!({"hold_id": extended.hold.id, "added": extended.added}))
    }

    fn needs_transaction(&self) -> bool {
        true
    }
}

impl Recorded for ReleaseHold {
    type Output = Hold;

    fn action(&self) -> Action {
        Action::HoldRelease
    }

    fn session_id(&self) -> Option<&str> {
        None
    }

    /// Releasing a released hold changes nothing.
    async fn run(&self, db: &mut PgConnection, scope: Scope<'_>) -> Result<Hold, Error> {
        bind(db, scope).await?;
        sqlx::query!(
            "UPDATE holds SET released_at = clock_timestamp(), released_by = $3
              WHERE tenant_id = $1 AND id = $2 AND released_at IS NULL",
            scope.tenant.id,
            self.hold_id,
            self.released_by,
        )
        .execute(&mut *db)
        .await?;
        hold(db, scope, self.hold_id).await
    }

    fn outcome(&self, hold: &Hold) -> Outcome {
        Outcome::no_content(json!({"hold_id": hold.id, "released_at": hold.released_at}))
    }

    fn needs_transaction(&self) -> bool {
        true
    }
}
