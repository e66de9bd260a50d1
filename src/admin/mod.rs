//! Tenants, API keys and tenant policies, as the admin key (over HTTP) or the operator (the
//! command line) manages them; every change is recorded in the tenant's access log with it.
//! Keys can be revoked once and never deleted, so authorship stays attributable.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgPool};

use crate::access::{self, Accessor, Action, Outcome};
use crate::auth::{Credential, KEY_PREFIX, KeyRole, Tenant, generate_secret};
use crate::error::{Error, Invalid};
use crate::ledger::Timestamp;

/// A new key id: `key_` and a ULID (time-ordered, 26 Crockford base32 characters).
fn generate_key_id() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let millis = Utc::now().timestamp_millis().max(0) as u128;
    let random = u128::from_be_bytes(rand::random::<[u8; 16]>()) & ((1 << 80) - 1);
    let value = (millis << 80) | random;
    let id: String = (0..26)
        .rev()
        .map(|index| ALPHABET[((value >> (index * 5)) & 31) as usize] as char)
        .collect();
    format!("key_{id}")
}

/// A tenant just created.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub name: String,
    pub created_at: Timestamp,
}

/// Validates a tenant name: 1 to 63 of `a-z 0-9 -`.
pub fn parse_tenant_name(raw: &str) -> Result<&str, Invalid> {
    let valid = (1..=63).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(raw)
    } else {
        Err(Invalid::validation(
            "name must be 1 to 63 characters from a-z 0-9 -",
        ))
    }
}

/// Creates a tenant, recorded in its own access log.
pub async fn create_tenant(
    pool: &PgPool,
    accessor: &Accessor,
    name: &str,
) -> Result<NewTenant, Error> {
    let name = parse_tenant_name(name)?;
    let mut tx = pool.begin().await?;
    let row = sqlx::query!(
        r#"INSERT INTO tenants (name) VALUES ($1) ON CONFLICT (name) DO NOTHING
           RETURNING id AS "id!", name AS "name!", created_at AS "created_at!""#,
        name
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::AlreadyExists(format!("tenant {name} already exists")))?;
    let tenant = Tenant {
        id: row.id,
        name: row.name.as_str().into(),
    };
    let detail = json!({"name": row.name});
    changed(
        &mut tx,
        &tenant,
        accessor,
        Action::TenantCreate,
        Outcome::created(detail),
    )
    .await?;
    tx.commit().await?;
    Ok(NewTenant {
        name: row.name,
        created_at: Timestamp(row.created_at),
    })
}

/// Records a change made in `tx` in the tenant's access log, so both commit or neither.
async fn changed(
    tx: &mut PgConnection,
    tenant: &Tenant,
    accessor: &Accessor,
    action: Action,
    outcome: Outcome,
) -> Result<(), Error> {
    access::record(tx, tenant, accessor, action, None, &outcome).await?;
    Ok(())
}

/// Tenant names after `after`, in byte order.
pub async fn tenant_names(pool: &PgPool, after: &str, limit: i64) -> Result<Vec<String>, Error> {
    let names = sqlx::query_scalar!(
        "SELECT name FROM tenants WHERE name > $1 ORDER BY name LIMIT $2",
        after,
        limit
    )
    .fetch_all(pool)
    .await?;
    Ok(names)
}

/// The tenant named `name`.
pub async fn tenant_by_name(db: &mut PgConnection, name: &str) -> Result<Tenant, Error> {
    // No tenant has a name outside the alphabet, and PostgreSQL could not even compare one
    // holding a NUL.
    if parse_tenant_name(name).is_err() {
        return Err(Error::UnknownTenant);
    }
    let id = sqlx::query_scalar!("SELECT id FROM tenants WHERE name = $1", name)
        .fetch_optional(&mut *db)
        .await?
        .ok_or(Error::UnknownTenant)?;
    Ok(Tenant {
        id,
        name: name.into(),
    })
}

/// An API key without its secret.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: String,
    pub tenant: String,
    pub role: KeyRole,
    pub label: Option<String>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A row of `api_keys` joined to its tenant's name.
struct KeyRow {
    id: String,
    tenant: String,
    role: String,
    label: Option<String>,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<KeyRow> for KeyInfo {
    type Error = Error;

    fn try_from(row: KeyRow) -> Result<Self, Error> {
        Ok(KeyInfo {
            id: row.id,
            tenant: row.tenant,
            role: KeyRole::parse(&row.role)
                .ok_or(Error::Corrupt("api key with an unknown role"))?,
            label: row.label,
            created_at: Timestamp(row.created_at),
            revoked_at: row.revoked_at.map(Timestamp),
        })
    }
}

/// A freshly created key: the only moment its secret exists outside the caller.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub info: KeyInfo,
    pub secret: String,
}

/// Creates a key, recorded in its tenant's access log.
pub async fn create_key(
    pool: &PgPool,
    accessor: &Accessor,
    tenant: &str,
    role: KeyRole,
    label: Option<&str>,
) -> Result<NewKey, Error> {
    if label.is_some_and(|label| label.chars().count() > 200 || label.contains('\0')) {
        return Err(
            Invalid::validation("label must be at most 200 characters, without NUL").into(),
        );
    }
    let secret = generate_secret(KEY_PREFIX);
    let digest = *Credential::from_secret(&secret).digest();
    let mut tx = pool.begin().await?;
    let owner = tenant_by_name(&mut tx, tenant).await?;
    let row = sqlx::query_as!(
        KeyRow,
        r#"INSERT INTO api_keys (id, tenant_id, role, label, digest)
           VALUES ($1, $2, $4, $5, $6)
           RETURNING id AS "id!", $3 AS "tenant!", role AS "role!", label, created_at AS "created_at!", revoked_at"#,
        generate_key_id(),
        owner.id,
        tenant,
        role.as_str(),
        label,
        &digest[..],
    )
    .fetch_one(&mut *tx)
    .await?;
    let info = KeyInfo::try_from(row)?;
    let detail = json!({"key_id": info.id, "role": info.role, "label": info.label});
    changed(
        &mut tx,
        &owner,
        accessor,
        Action::KeyCreate,
        Outcome::created(detail),
    )
    .await?;
    tx.commit().await?;
    Ok(NewKey { info, secret })
}

pub async fn list_keys(pool: &PgPool) -> Result<Vec<KeyInfo>, Error> {
    let rows = sqlx::query_as!(
        KeyRow,
        r#"SELECT k.id, t.name AS tenant, k.role, k.label, k.created_at, k.revoked_at
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
            ORDER BY t.name, k.id"#
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(KeyInfo::try_from).collect()
}

/// Revokes a key at once, recorded in its tenant's access log; revoking a revoked key changes
/// nothing (and is recorded so), an unknown id is `NotFound`.
/// Revokes key `id`; false when it was revoked already (which is no error: a retried revocation
/// is answered alike).
pub async fn revoke_key(pool: &PgPool, accessor: &Accessor, id: &str) -> Result<bool, Error> {
    let mut tx = pool.begin().await?;
    let key = sqlx::query!(
        r#"WITH revoked AS (
               UPDATE api_keys SET revoked_at = clock_timestamp()
                WHERE id = $1 AND revoked_at IS NULL RETURNING id
           )
           SELECT t.id AS tenant_id, t.name, EXISTS (SELECT 1 FROM revoked) AS "revoked_now!"
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
            WHERE k.id = $1"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    let tenant = Tenant {
        id: key.tenant_id,
        name: key.name.into(),
    };
    let detail = json!({"key_id": id, "revoked_now": key.revoked_now});
    changed(
        &mut tx,
        &tenant,
        accessor,
        Action::KeyRevoke,
        Outcome::no_content(detail),
    )
    .await?;
    tx.commit().await?;
    Ok(key.revoked_now)
}

/// A tenant's policy (API.md "Retention, holds and erasure").
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Days after which payloads are erased by retention; null keeps them forever.
    #[schema(minimum = 1, maximum = 36500)]
    pub retention_days: Option<i32>,
    /// Whether reads by writer keys are recorded in the access log.
    #[serde(default)]
    pub log_writer_reads: bool,
}

/// The current policy of the tenant named `name` (the defaults when none was ever set).
pub async fn policy(pool: &PgPool, name: &str) -> Result<Policy, Error> {
    let mut db = pool.acquire().await?;
    let tenant = tenant_by_name(&mut db, name).await?;
    let current = sqlx::query!(
        "SELECT retention_days, log_writer_reads FROM tenant_policies
          WHERE tenant_id = $1 ORDER BY id DESC LIMIT 1",
        tenant.id
    )
    .fetch_optional(&mut *db)
    .await?;
    Ok(current.map_or_else(Policy::default, |row| Policy {
        retention_days: row.retention_days,
        log_writer_reads: row.log_writer_reads,
    }))
}

/// Sets the policy of the tenant named `name`, recorded in its access log. Policies are kept as
/// history: the latest one applies.
pub async fn set_policy(
    pool: &PgPool,
    accessor: &Accessor,
    name: &str,
    policy: Policy,
) -> Result<Policy, Error> {
    if policy
        .retention_days
        .is_some_and(|days| !(1..=36500).contains(&days))
    {
        return Err(Invalid::validation("retention_days must be from 1 to 36500, or null").into());
    }
    let mut tx = pool.begin().await?;
    let tenant = tenant_by_name(&mut tx, name).await?;
    sqlx::query!(
        "INSERT INTO tenant_policies (tenant_id, retention_days, log_writer_reads) VALUES ($1, $2, $3)",
        tenant.id,
        policy.retention_days,
        policy.log_writer_reads
    )
    .execute(&mut *tx)
    .await?;
    let detail = json!({
        "retention_days": policy.retention_days,
        "log_writer_reads": policy.log_writer_reads,
    });
    changed(
        &mut tx,
        &tenant,
        accessor,
        Action::PolicySet,
        Outcome::ok(detail),
    )
    .await?;
    tx.commit().await?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_ulids() {
        let id = generate_key_id();
        assert_eq!(id.len(), 30);
        assert!(
            id[4..]
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
            "{id}"
        );
        assert_ne!(id, generate_key_id());
    }

    #[test]
    fn tenant_names_are_lowercase_slugs() {
        assert!(parse_tenant_name("acme-2").is_ok());
        for bad in ["", "Acme", "a_b", "a b", &"a".repeat(64)] {
            assert!(parse_tenant_name(bad).is_err(), "{bad}");
        }
    }
}
