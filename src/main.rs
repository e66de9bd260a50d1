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
    let (writer, flush_at_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
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
    let ending = match cli.command {
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
            // 1: the log misbehaved (a refusal); 2: the witness could not do its job.
            match chatledger::witness::run(config).await {
                Ok(()) => Ending::new(ExitCode::SUCCESS),
                Err(error) => {
                    tracing::error!("{error}");
                    let refused = matches!(error, chatledger::witness::WitnessError::Refused(_));
                    Ending::new(ExitCode::from(if refused { 1 } else { 2 }))
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
    };
    // The log's queued lines go out first: a one-shot command's error is the last thing said.
    drop(flush_at_exit);
    if let Some(error) = ending.error {
        eprintln!("chatledger: {error}");
    }
    ending.code
}

/// How the process ends: its exit code, and a one-shot command's error, printed once on stderr.
struct Ending {
    code: ExitCode,
    error: Option<String>,
}

impl Ending {
    fn new(code: ExitCode) -> Self {
        Self { code, error: None }
    }

    fn failed(code: ExitCode, error: impl std::fmt::Display) -> Self {
        Self {
            code,
            error: Some(error.to_string()),
        }
    }
}

/// A one-shot command's end: its error said once, on stderr.
fn finish(result: commands::CommandResult) -> Ending {
    match result {
        Ok(()) => Ending::new(ExitCode::SUCCESS),
        Err(error) => Ending::failed(ExitCode::FAILURE, error),
    }
}

/// A service's end (`serve`, `witness`): its error is the last line of its log, in the log's
/// format.
fn finish_serving(result: commands::CommandResult) -> Ending {
    match result {
        Ok(()) => Ending::new(ExitCode::SUCCESS),
        Err(error) => {
            tracing::error!("{error}");
            Ending::new(ExitCode::FAILURE)
        }
    }
}

/// Verify commands: 0 intact, 1 broken, 2 could not check.
fn verdict(result: Result<bool, commands::BoxError>) -> Ending {
    match result {
        Ok(true) => Ending::new(ExitCode::SUCCESS),
        Ok(false) => Ending::new(ExitCode::from(1)),
        Err(error) => Ending::failed(ExitCode::from(2), error),
    }
}
