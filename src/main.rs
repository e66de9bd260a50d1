//! The `chatledger` binary: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use chatledger::commands;
use chatledger::config::{Cli, Command, LogFormat, ServeArgs};

// Every request allocates and frees many small buffers (bodies, JSON, rows); mimalloc's
// thread-local free lists make that cheaper than glibc's malloc under concurrent requests.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Log lines held for a stalled stderr before new ones are dropped: a few MB at most.
const LOG_BUFFER_LINES: usize = 8192;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr: stdout carries command output, such as a newly created key.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Lines go to stderr from a thread of their own: a reader of stderr that falls behind (a
    // full pipe, a stalled log collector) costs lines, counted in /metrics, not requests.
    let (writer, _flush_at_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .thread_name("chatledger-log")
        .finish(std::io::stderr());
    chatledger::metrics::count_dropped_log_lines(writer.error_counter());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match cli.command {
        None => finish_serving(commands::serve(ServeArgs::from_env()).await),
        Some(Command::Serve(args)) => finish_serving(commands::serve(args).await),
        Some(Command::Migrate(args)) => finish(commands::migrate(args).await),
        Some(Command::Tenants(command)) => finish(commands::tenants(command).await),
        Some(Command::Keys(command)) => finish(commands::keys(command).await),
        Some(Command::Audit(command)) => finish(commands::audit(command).await),
        Some(Command::Holds(command)) => finish(commands::holds(command).await),
        Some(Command::Erase {
            tenant,
            session,
            reason,
            through_seq,
            database,
        }) => finish(commands::erase(&tenant, &session, reason, through_seq, &database).await),
        Some(Command::Retention(command)) => finish(commands::retention(command).await),
        Some(Command::Verify(args)) => verdict(commands::verify(args).await),
        Some(Command::VerifyExport {
            file,
            expect_head,
            log_key,
        }) => verdict(commands::verify_export(
            &file,
            expect_head.as_deref(),
            log_key.as_deref(),
        )),
        Some(Command::Witness {
            url,
            key_file,
            state_dir,
            log_key,
            api_key,
            interval,
            once,
        }) => {
            let config = chatledger::witness::WitnessConfig {
                url,
                key_file,
                state_dir,
                log_key,
                api_key,
                interval: std::time::Duration::from_secs(interval.max(1)),
                once,
            };
            match chatledger::witness::run(config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::CheckpointKey {
            generate,
            name,
            key_file,
        }) => finish(commands::checkpoint_key(
            generate.as_deref(),
            name.as_deref(),
            key_file.as_deref(),
        )),
    }
}

/// A one-shot command's end: its error said once, on stderr.
fn finish(result: commands::CommandResult) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chatledger: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A service's end (`serve`, `witness`): its error is the last line of its log, in the log's
/// format.
fn finish_serving(result: commands::CommandResult) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Verify commands: 0 intact, 1 broken, 2 could not check.
fn verdict(result: Result<bool, commands::BoxError>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("chatledger: {error}");
            ExitCode::from(2)
        }
    }
}
