//! What each subcommand does.

use std::error::Error as StdError;

use tokio::net::TcpListener;

use crate::config::{DatabaseArgs, ServeArgs};
use crate::db::{self, Database};
use crate::{auth, http};

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
    db::migrate(database.owner()).await?;
    let pool = db::runtime_pool(database.owner(), &args.pool_settings()).await?;
    let scope = auth::default_scope(&pool).await?;
    let state = http::AppState::new(pool.clone(), args.limits(), scope);
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
