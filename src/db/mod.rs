//! PostgreSQL access: where the database is (external or embedded), migrations run as the owner,
//! and the runtime pool whose every connection acts as the unprivileged `chatledger_app` role.

pub mod embedded;
pub mod failover;
pub mod hosts;
pub mod listen;
pub mod warm;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

pub use embedded::{EmbeddedCluster, EmbeddedError};

/// The schema, embedded at build time (build.rs reruns on new migrations).
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// The role every request runs as: not the owner, not a superuser, no BYPASSRLS.
pub const RUNTIME_ROLE: &str = "chatledger_app";

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL: {0}")]
    Url(#[source] sqlx::Error),
    #[error("invalid database URL: {0}")]
    Hosts(#[from] hosts::HostsError),
    #[error("none of the {0} database hosts accepts writes (all down, or all standbys)")]
    NoPrimary(usize),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migrations failed: {source}{}", hint.as_deref().map(|hint| format!("\n{hint}")).unwrap_or_default())]
    Migrate {
        #[source]
        source: sqlx::migrate::MigrateError,
        /// The database's hint, which says how to fix what the migration refused (such as the
        /// statements a DBA runs to create the runtime role).
        hint: Option<String>,
    },
    #[error("{0}")]
    Embedded(#[from] EmbeddedError),
    #[error("unsafe runtime role: {0}")]
    RuntimeRole(String),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

/// Pool and timeout settings of the runtime pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
    pub idle_in_transaction_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            idle_in_transaction_timeout: Duration::from_secs(10),
        }
    }
}

/// The database a command works on: an external URL, or the embedded cluster in a data dir.
pub struct Database {
    /// The owner on the host that accepted writes when the database was opened.
    owner: PgConnectOptions,
    /// The owner on every host the URL names (one, unless it is a multi-host URL).
    hosts: Vec<PgConnectOptions>,
    embedded: Option<EmbeddedCluster>,
}

/// Whether a command may create the embedded cluster when its data dir holds none: `serve` and
/// `migrate` set one up; every other command works on data that must be there already, so a
/// mistyped `--data-dir` is an error, not a new empty cluster that verifies as intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfNoCluster {
    Create,
    Refuse,
}

impl Database {
    /// Uses `database_url` when given, else starts (or reuses) the embedded cluster in `data_dir`.
    pub async fn open(
        database_url: Option<&str>,
        data_dir: &std::path::Path,
        if_no_cluster: IfNoCluster,
    ) -> Result<Self, DbError> {
        match database_url {
            Some(url) => {
                let hosts = parse_hosts(url)?;
                let owner = match hosts.as_slice() {
                    [one] => one.clone(),
                    _ => failover::primary_of(&hosts).await?,
                };
                Ok(Self {
                    owner,
                    hosts,
                    embedded: None,
                })
            }
            None => {
                if if_no_cluster == IfNoCluster::Refuse {
                    embedded::require_cluster(data_dir)?;
                }
                let cluster = EmbeddedCluster::start(data_dir).await?;
                let owner = parse_url(&cluster.database_url())?;
                Ok(Self {
                    hosts: vec![owner.clone()],
                    owner,
                    embedded: Some(cluster),
                })
            }
        }
    }

    /// The runtime pool. On a multi-host URL it follows the primary: a monitor moves it to the
    /// host that accepts writes after a promotion, and it never keeps a connection to another.
    pub async fn runtime_pool(&self, settings: &PoolSettings) -> Result<PgPool, DbError> {
        if self.hosts.len() < 2 {
            return runtime_pool(&self.owner, settings).await;
        }
        let runtime: Vec<PgConnectOptions> = self
            .hosts
            .iter()
            .map(|host| runtime_options(host, settings))
            .collect();
        let current = self
            .hosts
            .iter()
            .position(|host| same_host(host, &self.owner))
            .unwrap_or(0);
        let switches = Arc::new(failover::Switches::default());
        let pool = pool_options(settings, Some(switches.clone()))
            .connect_lazy_with(runtime[current].clone());
        check_runtime_role(&pool).await?;
        failover::spawn_monitor(pool.clone(), runtime, current, switches);
        Ok(pool)
    }

    /// Connection options of the schema owner, which runs migrations.
    pub fn owner(&self) -> &PgConnectOptions {
        &self.owner
    }

    /// The owner on every host the URL names, for a connection that must follow the primary.
    pub fn owner_hosts(&self) -> &[PgConnectOptions] {
        &self.hosts
    }

    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// Stops the embedded cluster if this process started it.
    pub async fn close(self) -> Result<(), DbError> {
        if let Some(cluster) = self.embedded {
            cluster.stop().await?;
        }
        Ok(())
    }
}

/// Applies pending migrations as the owner (which also creates the runtime role when it may).
/// The newest migration this binary holds, as `version description`: what `migrate` leaves the
/// schema at.
pub fn schema_version() -> String {
    MIGRATOR.iter().last().map_or_else(String::new, |newest| {
        format!("{:04} {}", newest.version, newest.description)
    })
}

pub async fn migrate(owner: &PgConnectOptions) -> Result<(), DbError> {
    let mut connection = owner.connect().await.map_err(DbError::Connect)?;
    let result = MIGRATOR.run(&mut connection).await.map_err(|source| {
        let hint = match &source {
            sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(error))
            | sqlx::migrate::MigrateError::ExecuteMigration(sqlx::Error::Database(error), _) => {
                error
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .and_then(|error| error.hint())
                    .map(str::to_owned)
            }
            _ => None,
        };
        DbError::Migrate { source, hint }
    });
    // Closing is best effort; the migration outcome is what matters.
    let _ = sqlx::Connection::close(connection).await;
    result
}

/// The runtime pool: every connection enters the runtime role and gets server-side timeouts, so
/// no statement and no forgotten transaction can hold a connection beyond them.
pub async fn runtime_pool(
    owner: &PgConnectOptions,
    settings: &PoolSettings,
) -> Result<PgPool, DbError> {
    let pool = pool_options(settings, None).connect_lazy_with(runtime_options(owner, settings));
    check_runtime_role(&pool).await?;
    Ok(pool)
}

/// The owner's options as the runtime role, with the server-side timeouts.
fn runtime_options(owner: &PgConnectOptions, settings: &PoolSettings) -> PgConnectOptions {
    owner.clone().application_name("chatledger").options([
        ("role", RUNTIME_ROLE.to_owned()),
        ("statement_timeout", millis(settings.statement_timeout)),
        (
            "idle_in_transaction_session_timeout",
            millis(settings.idle_in_transaction_timeout),
        ),
    ])
}

/// A pooled connection used this recently is handed out without a ping first, as HikariCP does
/// (its `aliveBypassWindowMs`, also 500 ms; PgBouncer's `server_check_delay` waits 30 s): sqlx
/// already pings each connection as it comes back to the pool, and one that broke since then
/// fails its one request with a 503 and is dropped. The ping was one of every request's three
/// round trips (ping, statement, ping on release).
pub const ALIVE_BYPASS: Duration = Duration::from_millis(500);

/// The runtime pool's settings; with `switches` (a pool following the primary), a new
/// connection must accept writes and one opened before the last switch is discarded.
fn pool_options(
    settings: &PoolSettings,
    switches: Option<Arc<failover::Switches>>,
) -> PgPoolOptions {
    let following = switches.is_some();
    let options = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(0)
        .test_before_acquire(false)
        .acquire_timeout(settings.acquire_timeout)
        .after_connect(move |connection, _| {
            Box::pin(async move {
                // Only pg_catalog and chatledger's own schema are searched, in that order: no
                // object another role creates elsewhere can stand in for a built-in or a table.
                sqlx::query(
                    "SELECT set_config('search_path', 'pg_catalog, ' || quote_ident(n.nspname), false)
                       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.oid = 'entries'::regclass",
                )
                .execute(&mut *connection)
                .await?;
                if following && !failover::accepts_writes(connection).await? {
                    // A standby (the old primary come back, or the new one not yet promoted):
                    // refused like a host that is down, so the request is a 503 to retry.
                    return Err(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "the database host does not accept writes (a standby)",
                    )));
                }
                Ok(())
            })
        });
    let on_acquire = switches.clone();
    let options = options.before_acquire(move |connection, meta| {
        let current = on_acquire
            .as_ref()
            .is_none_or(|switches| switches.current(meta.age));
        Box::pin(async move {
            if current && meta.idle_for >= ALIVE_BYPASS {
                connection.ping().await?;
            }
            Ok(current)
        })
    });
    match switches {
        None => options,
        Some(switches) => options.after_release(move |_, meta| {
            let current = switches.current(meta.age);
            Box::pin(async move { Ok(current) })
        }),
    }
}

/// A pool on a read replica (a streaming standby) for compliance reads: the runtime role and
/// timeouts as on the primary, and nothing that writes is ever sent to it.
pub async fn replica_pool(url: &str, settings: &PoolSettings) -> Result<PgPool, DbError> {
    let options =
        runtime_options(&parse_url(url)?, settings).application_name("chatledger-replica");
    let pool = pool_options(settings, None).connect_lazy_with(options);
    check_runtime_role(&pool).await?;
    Ok(pool)
}

/// How long a replica read waits for the replica to replay what the primary has flushed (an
/// access record committed a moment ago, say) before it reports the replica as behind.
const REPLAY_WAIT: Duration = Duration::from_millis(100);

/// How far a replica's data may be behind its primary, in milliseconds: 0 when it has replayed
/// all the WAL the primary had flushed just before (waiting up to `REPLAY_WAIT` for it), else
/// the age of the last transaction it replayed (PostgreSQL's usual measure; it over-states the
/// lag of a primary that was idle for a while). Compared with the primary's own position, not
/// with what the replica received: a replica cut off from its primary receives nothing and
/// would look caught up.
pub async fn replica_lag_ms(primary: &PgPool, replica: &PgPool) -> Result<i64, sqlx::Error> {
    let flushed: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
        .fetch_one(primary)
        .await?;
    let started = std::time::Instant::now();
    loop {
        let lag: Option<i64> = sqlx::query_scalar(
            "SELECT CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= $1::pg_lsn
                         THEN 0
                         WHEN pg_last_xact_replay_timestamp() IS NULL THEN NULL
                         ELSE greatest(1, floor(extract(epoch FROM clock_timestamp()
                                                        - pg_last_xact_replay_timestamp()) * 1000))
                     END::bigint",
        )
        .bind(&flushed)
        .fetch_one(replica)
        .await?;
        if lag == Some(0) || started.elapsed() >= REPLAY_WAIT {
            // Behind, with no transaction replayed since it started: how far is not known.
            return Ok(lag.unwrap_or(i64::MAX));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Parses a PostgreSQL URL; the error never repeats the URL, which may hold a password.
pub fn parse_url(url: &str) -> Result<PgConnectOptions, DbError> {
    PgConnectOptions::from_str(url).map_err(DbError::Url)
}

/// Every host of a (possibly multi-host) URL, in its order.
pub fn parse_hosts(url: &str) -> Result<Vec<PgConnectOptions>, DbError> {
    hosts::split(url)?
        .iter()
        .map(|url| parse_url(url))
        .collect()
}

fn same_host(a: &PgConnectOptions, b: &PgConnectOptions) -> bool {
    a.get_host() == b.get_host() && a.get_port() == b.get_port() && a.get_socket() == b.get_socket()
}

fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

/// Refuses a runtime role that row-level security or the append-only triggers would not bind:
/// one that is a superuser, bypasses RLS or owns the tables; one entered from a superuser
/// session (which could leave the role again); and a schema where others may create objects.
pub async fn check_runtime_role(pool: &PgPool) -> Result<(), DbError> {
    let role = sqlx::query!(
        r#"SELECT current_user AS "name!", r.rolsuper AS "superuser!", r.rolbypassrls AS "bypass_rls!",
                  pg_has_role(current_user, c.relowner, 'USAGE') AS "owns_tables!",
                  session_user AS "session_user!",
                  (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) AS "session_superuser!",
                  n.nspname AS "schema!",
                  EXISTS (SELECT 1 FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                           WHERE a.privilege_type = 'CREATE'
                             AND (a.grantee = 0
                                  OR NOT (pg_has_role(session_user, a.grantee, 'MEMBER')
                                          OR (SELECT rolsuper FROM pg_roles WHERE oid = a.grantee))))
                      AS "others_create!"
             FROM pg_roles r, pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE r.rolname = current_user AND c.oid = 'entries'::regclass"#
    )
    .fetch_one(pool)
    .await?;
    let problem = if role.superuser {
        Some(format!(
            "requests would run as {}, which is a superuser",
            role.name
        ))
    } else if role.bypass_rls {
        Some(format!(
            "requests would run as {}, which has BYPASSRLS",
            role.name
        ))
    } else if role.owns_tables {
        Some(format!(
            "requests would run as {}, which owns the ledger tables",
            role.name
        ))
    } else if role.session_superuser {
        Some(format!(
            "the database URL names {}, a superuser, which could leave the runtime role again; \
             connect as a schema owner that is not a superuser",
            role.session_user
        ))
    } else if role.others_create {
        Some(format!(
            "roles other than the owner may create objects in schema {}, which could stand in \
             for chatledger's; run `REVOKE CREATE ON SCHEMA {} FROM PUBLIC` (and from any such role)",
            role.schema, role.schema
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(DbError::RuntimeRole(format!(
            "{problem}; row-level security and the append-only rules could not be relied on"
        ))),
        None => Ok(()),
    }
}

/// Ready when the database answers and every migration this build knows is applied.
pub async fn ready(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied =
        sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM _sqlx_migrations WHERE success"#)
            .fetch_one(pool)
            .await?;
    Ok(applied >= MIGRATOR.iter().count() as i64)
}

/// True when an error means "the database is unreachable or overloaded", worth a 503 and a retry.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources; 57P0x: shutdown / cannot
            // connect now; 57014: statement timeout; 40001/40P01: serialization failure, deadlock;
            // 25006: a write reached a host that was demoted, before the pool moved on; 55000: the
            // database is not accepting connections (`ALLOW_CONNECTIONS false`, maintenance), or
            // some other state of the server's that no request of ours can cause.
            code.starts_with("08")
                || code == "25006"
                || code == "55000"
                || code.starts_with("53")
                || code.starts_with("57P0")
                || code == "57014"
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}
