//! Who is calling: the tenant a request acts in and the key recorded as its author.
//!
//! Until API keys exist every request acts in the built-in `default` tenant.

use sqlx::PgPool;

use crate::ledger::{Error, Scope};

/// Author id recorded on entries written before API keys exist.
pub const DEFAULT_AUTHOR: &str = "key_default";

/// The scope of every request while the built-in default tenant is in use.
pub async fn default_scope(pool: &PgPool) -> Result<Scope, Error> {
    let tenant = sqlx::query!("SELECT id, name FROM tenants WHERE name = 'default'")
        .fetch_one(pool)
        .await?;
    Ok(Scope {
        tenant_id: tenant.id,
        tenant_name: tenant.name,
        author: DEFAULT_AUTHOR.to_owned(),
    })
}
