//! A freshly migrated PostgreSQL database per test, with tenant `acme` and a key of each role:
//! shared by the test binaries (`#[path]`-included), so each uses only part of it.
#![allow(dead_code)]

use std::str::FromStr;

use chatledger::access::Accessor;
use chatledger::admin;
use chatledger::auth::KeyRole as Role;
use chatledger::db::{self, PoolSettings};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};

/// A freshly created and migrated database with one tenant and a key of each role, shared by
/// every app instance a test spawns on it.
#[derive(Clone)]
pub struct TestDatabase {
    pub owner: PgConnectOptions,
    /// The same database as a URL, for the command line.
    pub owner_url: String,
    pub tenant: String,
    pub writer_key: String,
    pub writer_key_id: String,
    pub reader_key: String,
    pub auditor_key: String,
    pub auditor_key_id: String,
}

impl TestDatabase {
    pub async fn new() -> Self {
        let url = std::env::var("DATABASE_URL").expect(
            "DATABASE_URL is not set: run ./scripts/test.sh, which starts a throwaway PostgreSQL cluster",
        );
        let base = PgConnectOptions::from_str(&url).expect("DATABASE_URL parses");
        let name = format!("chatledger_test_{:016x}", rand::random::<u64>());
        let mut admin = base.connect().await.expect("connect to DATABASE_URL");
        sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let owner = base.database(&name);
        db::migrate(&owner).await.expect("migrations apply");
        let pool = db::runtime_pool(&owner, &PoolSettings::default())
            .await
            .expect("runtime pool");
        let tenant = "acme".to_owned();
        admin::create_tenant(&pool, &Accessor::operator(), &tenant)
            .await
            .expect("tenant");
        let writer = admin::create_key(
            &pool,
            &Accessor::operator(),
            &tenant,
            Role::Writer,
            Some("bot"),
        )
        .await
        .expect("writer key");
        let reader = admin::create_key(&pool, &Accessor::operator(), &tenant, Role::Reader, None)
            .await
            .expect("reader key");
        let auditor = admin::create_key(&pool, &Accessor::operator(), &tenant, Role::Auditor, None)
            .await
            .expect("auditor key");
        pool.close().await;
        Self {
            owner,
            owner_url: with_database_name(&url, &name),
            tenant,
            writer_key: writer.secret,
            writer_key_id: writer.info.id,
            reader_key: reader.secret,
            auditor_key: auditor.secret,
            auditor_key_id: auditor.info.id,
        }
    }

    /// Another key of `role` for an existing tenant.
    pub async fn key_for(&self, tenant: &str, role: Role) -> String {
        let pool = self.runtime_pool().await;
        admin::create_key(&pool, &Accessor::operator(), tenant, role, None)
            .await
            .expect("key")
            .secret
    }

    /// A new tenant with a key of `role`; returns the key.
    pub async fn tenant_with_key(&self, tenant: &str, role: Role) -> String {
        let pool = self.runtime_pool().await;
        admin::create_tenant(&pool, &Accessor::operator(), tenant)
            .await
            .expect("tenant");
        admin::create_key(&pool, &Accessor::operator(), tenant, role, None)
            .await
            .expect("key")
            .secret
    }

    /// A connection as the schema owner, for inspecting or tampering with the database directly.
    pub async fn owner_pool(&self) -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(self.owner.clone())
            .await
            .expect("owner connects")
    }

    /// The pool the app itself would use.
    pub async fn runtime_pool(&self) -> PgPool {
        db::runtime_pool(&self.owner, &PoolSettings::default())
            .await
            .expect("runtime pool")
    }
}

impl TestDatabase {
    /// The database's name, as pg_stat_activity shows it.
    pub fn name(&self) -> &str {
        self.owner.get_database().unwrap_or_default()
    }
}

/// `url` with its database name replaced: scheme://authority/NAME?query.
fn with_database_name(url: &str, name: &str) -> String {
    let authority_start = url.find("://").map_or(0, |index| index + 3);
    let path_start = url[authority_start..]
        .find('/')
        .map_or(url.len(), |index| authority_start + index);
    let query_start = url[path_start..]
        .find('?')
        .map_or(url.len(), |index| path_start + index);
    format!("{}/{name}{}", &url[..path_start], &url[query_start..])
}
