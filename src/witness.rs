//! `chatledger witness` (API.md "Checkpoints"): a separate process that follows one log's
//! checkpoints, checks each one's signature and its consistency with the last one it accepted,
//! cosigns it, and keeps what it accepted in its state directory, so that a log rewritten
//! later (even re-signed with a stolen key) is caught. The decisions are `tlog::witness_checkpoint`;
//! this module fetches and stores.
//!
//! State directory: `log.key` (the log's verifier key, recorded on the first run),
//! `latest.note` (the last accepted checkpoint, cosigned; replaced atomically) and
//! `accepted/<size>.note` (every accepted checkpoint, never overwritten).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::auth::check_secret_file;
use crate::tlog::{self, CosignerKey, Hash, SignedCheckpoint, VerifierKey, WitnessState};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the witness runs.
pub struct WitnessConfig {
    pub url: String,
    pub key_file: PathBuf,
    pub state_dir: PathBuf,
    pub log_key: Option<String>,
    pub api_key: String,
    pub interval: Duration,
    /// One round, then exit (for cron, and tests).
    pub once: bool,
}

/// Why the witness stopped: a refusal (the log misbehaved) or trouble of its own.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("refused the log's checkpoint: {0}")]
    Refused(#[from] tlog::Error),
    /// The log could not be asked (network, timeout, 429 or 5xx): tried again at the next
    /// interval, unless `--once`.
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Other(BoxError),
}

fn other(error: impl Into<BoxError>) -> WitnessError {
    WitnessError::Other(error.into())
}

/// How long the log may be out of reach before the witness's rounds log it as an error.
const UNREACHABLE_ALARM: Duration = Duration::from_secs(300);

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// Runs until a refusal or an error (or after one round with `once`); a log it cannot reach is
/// asked again at the next interval.
pub async fn run(config: WitnessConfig) -> Result<(), WitnessError> {
    check_secret_file(&config.key_file, "witness key").map_err(other)?;
    let contents = zeroize::Zeroizing::new(
        std::fs::read_to_string(&config.key_file)
            .map_err(|e| other(format!("{}: {e}", config.key_file.display())))?,
    );
    let cosigner =
        CosignerKey::from_key_file(&contents).map_err(|e| other(format!("--key-file: {e}")))?;
    std::fs::create_dir_all(config.state_dir.join("accepted")).map_err(other)?;
    // What verifies its cosignatures: the type 0x04 key, whose key ID differs from the file's.
    tracing::info!(cosigner = %cosigner.verifier_key(), "witnessing");
    println!("cosigner {}", cosigner.verifier_key());
    let log_key = log_key(&config)?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        match round(&client, &config, &log_key, &cosigner).await {
            Err(WitnessError::Unreachable(why)) if !config.once => {
                // A log that stays out of reach may be hiding from its witness: after a while,
                // each round says so as an error.
                let since = unreachable_since.get_or_insert_with(std::time::Instant::now);
                let seconds = since.elapsed().as_secs();
                if since.elapsed() >= UNREACHABLE_ALARM {
                    tracing::error!(error = %why, seconds, "the log has been out of reach; asking again");
                } else {
                    tracing::warn!(error = %why, seconds, "cannot reach the log; asking again");
                }
            }
            Err(error) => return Err(error),
            Ok(()) if config.once => return Ok(()),
            Ok(()) => unreachable_since = None,
        }
        tokio::time::sleep(config.interval).await;
    }
}

/// Fetches the log's checkpoint, checks it against the last accepted one and cosigns it.
async fn round(
    client: &HttpClient,
    config: &WitnessConfig,
    log_key: &VerifierKey,
    cosigner: &CosignerKey,
) -> Result<(), WitnessError> {
    {
        let last = last_accepted(&config.state_dir, log_key)?;
        let note = get(client, config, "/v1/checkpoint").await?;
        let fetched = SignedCheckpoint::open(&note, log_key)?;
        let size = fetched.checkpoint().size;
        let proof = match &last {
            Some(last) if last.size > 0 && size > last.size => {
                consistency(client, config, last.size, size).await?
            }
            _ => Vec::new(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(other)?
            .as_secs();
        let accepted =
            tlog::witness_checkpoint(log_key, last.as_ref(), &note, &proof, cosigner, now)?;
        if last.as_ref().is_none_or(|last| last.size < size) {
            store(&config.state_dir, size, &accepted.cosigned.to_note_string())?;
            tracing::info!(tree_size = size, "accepted and cosigned a checkpoint");
            println!("accepted {size}");
        }
        Ok(())
    }
}

/// The log's key: `--log-key`, which must match the one recorded; else the recorded one; on
/// the first run, `--log-key` is required and recorded.
fn log_key(config: &WitnessConfig) -> Result<VerifierKey, WitnessError> {
    let path = config.state_dir.join("log.key");
    let recorded = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().to_owned()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(other(error)),
    };
    let given = config.log_key.as_deref().map(str::trim);
    let text = match (given, recorded.as_deref()) {
        (Some(given), Some(recorded)) if given != recorded => {
            return Err(other(format!(
                "--log-key {given} is not the key this witness follows ({recorded})"
            )));
        }
        (_, Some(recorded)) => recorded.to_owned(),
        (Some(given), None) => {
            VerifierKey::parse(given).map_err(|e| other(format!("--log-key: {e}")))?;
            write_atomically(&path, &format!("{given}\n"))?;
            given.to_owned()
        }
        (None, None) => {
            return Err(other(
                "first run: give the log's verifier key with --log-key (GET /v1/checkpoint/key)",
            ));
        }
    };
    VerifierKey::parse(&text).map_err(|e| other(format!("{}: {e}", path.display())))
}

fn last_accepted(dir: &Path, log_key: &VerifierKey) -> Result<Option<WitnessState>, WitnessError> {
    match std::fs::read_to_string(dir.join("latest.note")) {
        Ok(note) => {
            let signed = SignedCheckpoint::open(&note, log_key)
                .map_err(|e| other(format!("the state's latest.note: {e}")))?;
            Ok(Some(WitnessState::from(signed.checkpoint())))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(other(error)),
    }
}

/// Records an accepted checkpoint: its own file first, then `latest.note`, each durable.
fn store(dir: &Path, size: u64, note: &str) -> Result<(), WitnessError> {
    let path = dir.join("accepted").join(format!("{size}.note"));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut file) => {
            file.write_all(note.as_bytes()).map_err(other)?;
            file.sync_all().map_err(other)?;
        }
        // A previous run stored it and stopped before latest.note: keep the first.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(other(error)),
    }
    write_atomically(&dir.join("latest.note"), note)
}

fn write_atomically(path: &Path, contents: &str) -> Result<(), WitnessError> {
    let temp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temp).map_err(other)?;
    file.write_all(contents.as_bytes()).map_err(other)?;
    file.sync_all().map_err(other)?;
    std::fs::rename(&temp, path).map_err(other)?;
    if let Some(parent) = path.parent()
        && let Ok(dir) = std::fs::File::open(parent)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

async fn get(
    client: &HttpClient,
    config: &WitnessConfig,
    path: &str,
) -> Result<String, WitnessError> {
    let uri: Uri = format!("{}{path}", config.url.trim_end_matches('/'))
        .parse()
        .map_err(other)?;
    let request = Request::get(uri)
        .header("authorization", format!("Bearer {}", config.api_key))
        .body(Empty::new())
        .map_err(other)?;
    let unreachable = |why: String| WitnessError::Unreachable(format!("GET {path}: {why}"));
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    let body = tokio::time::timeout(Duration::from_secs(30), response.into_body().collect())
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(unreachable(status.to_string()));
    }
    if status != StatusCode::OK {
        return Err(other(format!("GET {path}: {status}")));
    }
    String::from_utf8(body.to_vec()).map_err(|_| other(format!("GET {path}: not UTF-8")))
}

async fn consistency(
    client: &HttpClient,
    config: &WitnessConfig,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, WitnessError> {
    #[derive(serde::Deserialize)]
    struct Proof {
        path: Vec<String>,
    }
    let body = get(
        client,
        config,
        &format!("/v1/checkpoint/consistency?from={from}&to={to}"),
    )
    .await?;
    let proof: Proof = serde_json::from_str(&body).map_err(other)?;
    // A malformed proof is the log's fault: refused like an inconsistent one.
    proof
        .path
        .iter()
        .map(|hash| Hash::from_base64(hash))
        .collect::<Result<_, _>>()
        .map_err(|cause| {
            WitnessError::Refused(tlog::Error::Inconsistent {
                old_size: from,
                new_size: to,
                cause: Box::new(cause),
            })
        })
}
