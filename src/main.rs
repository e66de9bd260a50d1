//! The `chatledger` binary: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use chatledger::commands;
use chatledger::config::{Cli, Command, LogFormat, ServeArgs};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr: stdout carries command output, such as a newly created key.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let result = match cli.command {
        None => commands::serve(ServeArgs::from_env()).await,
        Some(Command::Serve(args)) => commands::serve(args).await,
        Some(Command::Migrate(args)) => commands::migrate(args).await,
        Some(Command::Tenants(command)) => commands::tenants(command).await,
        Some(Command::Keys(command)) => commands::keys(command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("chatledger: {error}");
            ExitCode::FAILURE
        }
    }
}
