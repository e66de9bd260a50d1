//! Tenants, API keys and roles. Keys are high-entropy secrets stored only as SHA-256 digests; the
//! database authenticates a digest on every request (no cache), so a revoked key stops working
//! on the next request on every replica.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::ledger::{Error, Invalid, InvalidKind};

/// Prefix of tenant API keys, so leaked keys are recognisable (e.g. by secret scanners).
pub const KEY_PREFIX: &str = "clk_";
/// Prefix of generated admin keys.
pub const ADMIN_KEY_PREFIX: &str = "cla_";
/// Shortest admin key accepted.
pub const MIN_ADMIN_KEY_LEN: usize = 32;

/// What a tenant key may do. Admin is not a key role: the one admin key comes from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Append and reset, and everything a reader may.
    Writer,
    /// Read sessions and entries.
    Reader,
    /// Read, verify and export.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Writer => "writer",
            Role::Reader => "reader",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "writer" => Some(Role::Writer),
            "reader" => Some(Role::Reader),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

/// A presented key, kept only as its digest; the database decides whether it is valid.
#[derive(Clone)]
pub struct Credential {
    digest: [u8; 32],
}

impl Credential {
    pub fn from_secret(secret: &str) -> Self {
        Self {
            digest: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

// Never print key material, not even a digest.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

/// The configured admin key, held as a digest and compared in constant time.
#[derive(Clone)]
pub struct AdminKey {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(<redacted>)")
    }
}

/// Why no admin key could be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminKeyError {
    #[error("the admin key must be at least {MIN_ADMIN_KEY_LEN} characters")]
    TooShort,
    #[error(
        "no admin key: with an external database set --admin-key-file / CHATLEDGER_ADMIN_KEY_FILE \
         (or --admin-key / CHATLEDGER_ADMIN_KEY) to a secret of at least {MIN_ADMIN_KEY_LEN} characters, \
         e.g. `openssl rand -hex 32 > admin.key`"
    )]
    Missing,
    #[error("cannot use admin key file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

impl AdminKey {
    pub fn new(secret: &str) -> Result<Self, AdminKeyError> {
        let secret = secret.trim();
        if secret.chars().count() < MIN_ADMIN_KEY_LEN {
            return Err(AdminKeyError::TooShort);
        }
        Ok(Self {
            digest: Credential::from_secret(secret).digest,
        })
    }

    pub fn matches(&self, credential: &Credential) -> bool {
        self.digest.ct_eq(&credential.digest).into()
    }

    /// The admin key from a file or a value; else, for the embedded default only, the one in
    /// `<data-dir>/admin.key`, generated (mode 0600) on first start. Returns the key and, when
    /// it was generated now, the file it was written to.
    pub fn load(
        file: Option<&Path>,
        value: Option<&str>,
        embedded_data_dir: Option<&Path>,
    ) -> Result<(Self, Option<std::path::PathBuf>), AdminKeyError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| AdminKeyError::File {
                path: path.display().to_string(),
                source,
            })
        };
        if let Some(path) = file {
            return Ok((Self::new(&read(path)?)?, None));
        }
        if let Some(value) = value {
            return Ok((Self::new(value)?, None));
        }
        let data_dir = embedded_data_dir.ok_or(AdminKeyError::Missing)?;
        let path = data_dir.join("admin.key");
        if path.exists() {
            return Ok((Self::new(&read(&path)?)?, None));
        }
        let secret = generate_secret(ADMIN_KEY_PREFIX);
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all(secret.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        };
        write().map_err(|source| AdminKeyError::File {
            path: path.display().to_string(),
            source,
        })?;
        Ok((Self::new(&secret)?, Some(path)))
    }
}

/// A new random secret: the prefix and 256 random bits in hex.
pub fn generate_secret(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 32]>()))
}

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

/// Checks a credential for a role without doing anything else (one database round trip).
pub async fn verify(pool: &PgPool, credential: &Credential, role: Role) -> Result<(), Error> {
    sqlx::query!(
        "SELECT key_id FROM chatledger_authenticate($1, $2)",
        &credential.digest[..],
        role.as_str()
    )
    .fetch_one(pool)
    .await?;
    Ok(())
}

/// True when the credential names a live key (of any role).
pub async fn is_known_key(pool: &PgPool, credential: &Credential) -> Result<bool, Error> {
    let known = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM api_keys WHERE digest = $1 AND revoked_at IS NULL) AS "known!""#,
        &credential.digest[..]
    )
    .fetch_one(pool)
    .await?;
    Ok(known)
}

/// A tenant.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    pub created_at: DateTime<Utc>,
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
        Err(Invalid::new(
            InvalidKind::Validation,
            "name must be 1 to 63 characters from a-z 0-9 -",
        ))
    }
}

pub async fn create_tenant(pool: &PgPool, name: &str) -> Result<Tenant, Error> {
    let name = parse_tenant_name(name)?;
    let created = sqlx::query_as!(
        Tenant,
        r#"INSERT INTO tenants (name) VALUES ($1) ON CONFLICT (name) DO NOTHING
           RETURNING name AS "name!", created_at AS "created_at!""#,
        name
    )
    .fetch_optional(pool)
    .await?;
    created.ok_or_else(|| Error::AlreadyExists(format!("tenant {name} already exists")))
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

/// An API key without its secret.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: String,
    pub tenant: String,
    pub role: String,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
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
    role: Role,
    label: Option<&str>,
) -> Result<NewKey, Error> {
    if label.is_some_and(|label| label.chars().count() > 200 || label.contains('\0')) {
        return Err(Invalid::new(
            InvalidKind::Validation,
            "label must be at most 200 characters, without NUL",
        )
        .into());
    }
    let secret = generate_secret(KEY_PREFIX);
    let digest = Credential::from_secret(&secret).digest;
    let info = sqlx::query_as!(
        KeyInfo,
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
    match info {
        Some(info) => Ok(NewKey { info, secret }),
        None => Err(Error::UnknownTenant),
    }
}

pub async fn list_keys(pool: &PgPool) -> Result<Vec<KeyInfo>, Error> {
    let keys = sqlx::query_as!(
        KeyInfo,
        r#"SELECT k.id, t.name AS tenant, k.role, k.label, k.created_at, k.revoked_at
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
            ORDER BY t.name, k.id"#
    )
    .fetch_all(pool)
    .await?;
    Ok(keys)
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
    fn key_ids_are_ulids_and_secrets_are_prefixed_and_distinct() {
        let id = generate_key_id();
        assert_eq!(id.len(), 30);
        assert!(
            id[4..]
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
            "{id}"
        );
        let (one, two) = (generate_secret(KEY_PREFIX), generate_secret(KEY_PREFIX));
        assert!(one.starts_with("clk_") && one.len() == 68);
        assert_ne!(one, two);
    }

    #[test]
    fn the_admin_key_is_long_and_matched_by_digest() {
        assert!(matches!(
            AdminKey::new("short"),
            Err(AdminKeyError::TooShort)
        ));
        let admin = AdminKey::new(&"a".repeat(32)).expect("long enough");
        assert!(admin.matches(&Credential::from_secret(&"a".repeat(32))));
        assert!(!admin.matches(&Credential::from_secret(&"a".repeat(33))));
        assert_eq!(format!("{admin:?}"), "AdminKey(<redacted>)");
    }

    #[test]
    fn a_generated_admin_key_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("chatledger-admin-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (first, written) = AdminKey::load(None, None, Some(&dir)).expect("generated");
        let path = written.expect("written on first start");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (second, written_again) = AdminKey::load(None, None, Some(&dir)).expect("reused");
        assert!(written_again.is_none());
        assert_eq!(first.digest, second.digest);
        assert!(matches!(
            AdminKey::load(None, None, None),
            Err(AdminKeyError::Missing)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tenant_names_are_lowercase_slugs() {
        assert!(parse_tenant_name("acme-2").is_ok());
        for bad in ["", "Acme", "a_b", "a b", &"a".repeat(64)] {
            assert!(parse_tenant_name(bad).is_err(), "{bad}");
        }
    }
}
