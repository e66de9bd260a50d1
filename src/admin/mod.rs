//! Tenants and API keys, as the admin key (over HTTP) or the operator (the command line)
//! manages them. Keys can be revoked once and never deleted, so authorship stays attributable.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::auth::{Credential, KEY_PREFIX, KeyRole, generate_secret};
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

pub async fn create_tenant(pool: &PgPool, name: &str) -> Result<NewTenant, Error> {
    let name = parse_tenant_name(name)?;
    let created = sqlx::query!(
        r#"INSERT INTO tenants (name) VALUES ($1) ON CONFLICT (name) DO NOTHING
           RETURNING name AS "name!", created_at AS "created_at!""#,
        name
    )
    .fetch_optional(pool)
    .await?;
    created
        .map(|row| NewTenant {
            name: row.name,
            created_at: Timestamp(row.created_at),
        })
        .ok_or_else(|| Error::AlreadyExists(format!("tenant {name} already exists")))
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

/// The tenant named `name`, for the operator's commands.
pub async fn tenant_by_name(pool: &PgPool, name: &str) -> Result<crate::auth::Tenant, Error> {
    let id = sqlx::query_scalar!("SELECT id FROM tenants WHERE name = $1", name)
        .fetch_optional(pool)
        .await?
        .ok_or(Error::UnknownTenant)?;
    Ok(crate::auth::Tenant {
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

pub async fn create_key(
    pool: &PgPool,
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
    let row = sqlx::query_as!(
        KeyRow,
        r#"INSERT INTO api_keys (id, tenant_id, role, label, digest)
           SELECT $1, t.id, $3, $4, $5 FROM tenants t WHERE t.name = $2
           RETURNING id AS "id!", $2 AS "tenant!", role AS "role!", label, created_at AS "created_at!", revoked_at"#,
        generate_key_id(),
        tenant,
        role.as_str(),
        label,
        &digest[..],
    )
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => Ok(NewKey {
            info: row.try_into()?,
            secret,
        }),
        None => Err(Error::UnknownTenant),
    }
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

/// Revokes a key at once; revoking a revoked key is a no-op, an unknown id is `NotFound`.
pub async fn revoke_key(pool: &PgPool, id: &str) -> Result<(), Error> {
    let found = sqlx::query_scalar!(
        r#"WITH revoked AS (
               UPDATE api_keys SET revoked_at = clock_timestamp() WHERE id = $1 AND revoked_at IS NULL RETURNING id
           )
           SELECT EXISTS (SELECT 1 FROM revoked) OR EXISTS (SELECT 1 FROM api_keys WHERE id = $1) AS "found!""#,
        id
    )
    .fetch_one(pool)
    .await?;
    if found { Ok(()) } else { Err(Error::NotFound) }
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
