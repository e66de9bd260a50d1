//! What each subcommand does.

use std::error::Error as StdError;

use tokio::net::TcpListener;

use crate::auth::{self, AdminKey, Role};
use crate::config::{DatabaseArgs, KeysCommand, ServeArgs, TenantsCommand};
use crate::db::{self, Database, PoolSettings};
use crate::http;

pub type CommandResult = Result<(), Box<dyn StdError + Send + Sync>>;

/// `chatledger serve`: migrate, then serve until SIGTERM or Ctrl-C.
pub async fn serve(args: ServeArgs) -> CommandResult {
    let database = Database::open(
        args.database.database_url.as_deref(),
        &args.database.data_dir,
    )
    .await?;
    let result = serve_on(&database, &args).await;
    // Stop the embedded cluster even when serving failed.
    let closed = database.close().await;
    result?;
    Ok(closed?)
}

async fn serve_on(database: &Database, args: &ServeArgs) -> CommandResult {
    let embedded_dir = database
        .is_embedded()
        .then_some(args.database.data_dir.as_path());
    let (admin_key, generated) = AdminKey::load(
        args.admin_key_file.as_deref(),
        args.admin_key.as_deref(),
        embedded_dir,
    )?;
    if let Some(path) = generated {
        tracing::info!(path = %path.display(), "generated the admin key; read it from this file (mode 0600)");
    }
    db::migrate(database.owner()).await?;
    let pool = db::runtime_pool(database.owner(), &args.pool_settings()).await?;
    let state = http::AppState::new(pool.clone(), args.limits(), admin_key);
    let listener = TcpListener::bind(args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, embedded = database.is_embedded(), "chatledger listening");
    http::serve(
        listener,
        http::router(state, &args.http_settings()),
        shutdown_signal(),
    )
    .await?;
    pool.close().await;
    tracing::info!("chatledger stopped");
    Ok(())
}

/// `chatledger migrate`.
pub async fn migrate(args: DatabaseArgs) -> CommandResult {
    let database = Database::open(args.database_url.as_deref(), &args.data_dir).await?;
    let result = db::migrate(database.owner()).await;
    let closed = database.close().await;
    result?;
    Ok(closed?)
}

/// Runs `work` on a migrated database with the runtime role, then closes the database.
async fn with_database<F, Fut>(args: &DatabaseArgs, work: F) -> CommandResult
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: Future<Output = CommandResult>,
{
    let database = Database::open(args.database_url.as_deref(), &args.data_dir).await?;
    let result = async {
        db::migrate(database.owner()).await?;
        let pool = db::runtime_pool(database.owner(), &PoolSettings::default()).await?;
        let result = work(pool.clone()).await;
        pool.close().await;
        result
    }
    .await;
    let closed = database.close().await;
    result?;
    Ok(closed?)
}

/// `chatledger tenants ...`.
pub async fn tenants(command: TenantsCommand) -> CommandResult {
    match command {
        TenantsCommand::Create { name, database } => {
            with_database(&database, |pool| async move {
                let tenant = auth::create_tenant(&pool, &name).await?;
                println!("created tenant {}", tenant.name);
                Ok(())
            })
            .await
        }
    }
}

/// `chatledger keys ...`.
pub async fn keys(command: KeysCommand) -> CommandResult {
    match command {
        KeysCommand::Create {
            tenant,
            role,
            label,
            database,
        } => {
            let role = Role::parse(&role).ok_or("--role must be writer, reader or auditor")?;
            with_database(&database, |pool| async move {
                let key = auth::create_key(&pool, &tenant, role, label.as_deref()).await?;
                eprintln!(
                    "created {} key {} for tenant {}; the key is shown only now:",
                    key.info.role, key.info.id, key.info.tenant
                );
                println!("{}", key.secret);
                Ok(())
            })
            .await
        }
        KeysCommand::List { database } => {
            with_database(&database, |pool| async move {
                println!(
                    "{:<30}  {:<20}  {:<8}  {:<27}  {:<27}  label",
                    "id", "tenant", "role", "created_at", "revoked_at"
                );
                for key in auth::list_keys(&pool).await? {
                    println!(
                        "{:<30}  {:<20}  {:<8}  {:<27}  {:<27}  {}",
                        key.id,
                        key.tenant,
                        key.role,
                        crate::ledger::hash::format_timestamp(key.created_at),
                        key.revoked_at
                            .map(crate::ledger::hash::format_timestamp)
                            .unwrap_or_else(|| "-".to_owned()),
                        key.label.unwrap_or_default()
                    );
                }
                Ok(())
            })
            .await
        }
        KeysCommand::Revoke { id, database } => {
            with_database(&database, |pool| async move {
                auth::revoke_key(&pool, &id).await?;
                println!("revoked {id}");
                Ok(())
            })
            .await
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
