//! Who is calling. Tenant keys are high-entropy secrets stored only as SHA-256 digests and looked
//! up by index; the one admin key comes from configuration. Authenticated keys are cached, and
//! every server drops its cache when the database announces a change of any key (a revocation),
//! or whenever it cannot be sure to hear of one (its listener is not connected).

mod admin_key;
mod cache;
mod checkpoint_key;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use sqlx::PgPool;

pub use admin_key::{AdminKey, AdminKeyError, MIN_ADMIN_KEY_LEN, check_secret_file};
pub use cache::KeyCache;
pub use checkpoint_key::{
    CheckpointKeyError, generate_key_file, load_checkpoint_key, read_key_file,
};

use crate::error::Error;

/// Prefix of tenant API keys, so leaked keys are recognisable (e.g. by secret scanners).
pub const KEY_PREFIX: &str = "clk_";
/// Prefix of generated admin keys.
pub const ADMIN_KEY_PREFIX: &str = "cla_";

/// What a tenant key may do. Admin is not a key role: the admin key comes from configuration.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum KeyRole {
    /// Append and reset, and everything a reader may.
    Writer,
    /// Read sessions and entries.
    Reader,
    /// Read, verify, export, and everything of compliance.
    Auditor,
}

impl TryFrom<String> for KeyRole {
    type Error = &'static str;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        KeyRole::parse(&name).ok_or("role must be writer, reader or auditor")
    }
}

impl KeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Writer => "writer",
            KeyRole::Reader => "reader",
            KeyRole::Auditor => "auditor",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "writer" => Some(KeyRole::Writer),
            "reader" => Some(KeyRole::Reader),
            "auditor" => Some(KeyRole::Auditor),
            _ => None,
        }
    }

    /// Whether a key of this role may act where `needed` is required: writers and auditors may
    /// also read.
    pub fn satisfies(self, needed: KeyRole) -> bool {
        self == needed || (needed == KeyRole::Reader && self != KeyRole::Reader)
    }
}

/// A presented key, kept only as its digest.
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

/// A tenant: its id, which row-level security binds, and its name, which every entry hash
/// commits to. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: i64,
    pub name: Arc<str>,
}

/// An authenticated tenant key: whose it is and what it may do. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's id, the `author` of what it writes.
    pub key_id: Arc<str>,
    pub tenant: Tenant,
    pub role: KeyRole,
    /// The tenant's policy: whether reads by writer keys are recorded in the access log.
    pub log_writer_reads: bool,
}

impl Caller {
    /// The scope of this key's requests.
    pub fn scope(&self) -> Scope<'_> {
        Scope {
            tenant: &self.tenant,
            key_id: Some(&self.key_id),
        }
    }
}

/// On whose behalf the ledger is read: a tenant, through a key that every database call checks
/// is still live, or as the operator of the database (the command line).
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub tenant: &'a Tenant,
    pub key_id: Option<&'a str>,
}

impl<'a> Scope<'a> {
    pub fn operator(tenant: &'a Tenant) -> Self {
        Self {
            tenant,
            key_id: None,
        }
    }
}

/// A new random secret: the prefix and 256 random bits in hex.
pub fn generate_secret(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// Finds the live key with this digest, or `Unauthenticated`. Never raises a database error for
/// an unknown key, so a flood of bad keys costs PostgreSQL an index lookup each and no log line.
pub async fn lookup(pool: &PgPool, credential: &Credential) -> Result<Caller, Error> {
    let row = sqlx::query!(
        r#"SELECT k.id, k.tenant_id, t.name AS tenant, k.role,
                  coalesce(p.log_writer_reads, false) AS "log_writer_reads!"
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
             LEFT JOIN LATERAL (SELECT log_writer_reads FROM tenant_policies
                                 WHERE tenant_id = k.tenant_id ORDER BY id DESC LIMIT 1) p ON true
            WHERE k.digest = $1 AND k.revoked_at IS NULL"#,
        &credential.digest()[..]
    )
    .fetch_optional(pool)
    .await?
    .ok_or(Error::Unauthenticated)?;
    Ok(Caller {
        key_id: row.id.into(),
        tenant: Tenant {
            id: row.tenant_id,
            name: row.tenant.into(),
        },
        role: KeyRole::parse(&row.role).ok_or(Error::Corrupt("api key with an unknown role"))?,
        log_writer_reads: row.log_writer_reads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_and_distinct() {
        let (one, two) = (generate_secret(KEY_PREFIX), generate_secret(KEY_PREFIX));
        assert!(one.starts_with("clk_") && one.len() == 68);
        assert_ne!(one, two);
    }

    #[test]
    fn writers_and_auditors_may_read_but_not_each_other() {
        use KeyRole::*;
        assert!(Writer.satisfies(Reader) && Auditor.satisfies(Reader) && Reader.satisfies(Reader));
        assert!(!Reader.satisfies(Writer) && !Auditor.satisfies(Writer));
        assert!(!Writer.satisfies(Auditor) && !Reader.satisfies(Auditor));
    }

    #[test]
    fn credentials_never_print_their_digest() {
        assert_eq!(
            format!("{:?}", Credential::from_secret("clk_x")),
            "Credential(<redacted>)"
        );
    }
}
