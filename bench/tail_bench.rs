//! `chatledger-tail-bench` (bench/tail.sh runs it): commit-to-event latency of the live tail with
//! N open streams, and the server's memory per open stream.
//!
//! For each N in `--streams`: opens N streams of one reader key on one fresh session (all of
//! them follow the same session, the worst case of fan-out: each append wakes all N), reads the
//! server's RSS before and after, then makes `--appends` single-message appends `--interval-ms`
//! apart and records, per stream and entry, the time the event arrived minus the entry's
//! `created_at` (the database's clock inside the committing transaction; same host, same
//! clock). Prints one line per N, then the figures as JSON on stdout. Loopback only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Parser)]
#[command(
    name = "chatledger-tail-bench",
    about = "Live-tail latency and memory per stream"
)]
struct Args {
    /// host:port of the server, on loopback.
    #[arg(long)]
    address: String,
    #[arg(long, env = "TAIL_BENCH_WRITER_KEY", hide_env_values = true)]
    writer_key: String,
    #[arg(long, env = "TAIL_BENCH_READER_KEY", hide_env_values = true)]
    reader_key: String,
    /// The server's process id, for its RSS.
    #[arg(long)]
    server_pid: u32,
    /// Stream counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    streams: Vec<usize>,
    #[arg(long, default_value_t = 30)]
    appends: usize,
    #[arg(long, default_value_t = 200)]
    interval_ms: u64,
}

/// Arrival times (seconds since the epoch) per seq, for one stream.
type Arrivals = Arc<Mutex<HashMap<i64, f64>>>;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

fn rss_kib(pid: u32) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| "no VmRSS".into())
}

/// Opens one stream; returns once its headers are in, reading on in a task of its own.
async fn open_stream(
    address: &str,
    key: &str,
    session: &str,
    arrivals: Arrivals,
) -> Result<tokio::task::JoinHandle<()>, BoxError> {
    let mut socket = TcpStream::connect(address).await?;
    socket.set_nodelay(true)?;
    socket
        .write_all(
            format!(
                "GET /v1/sessions/{session}/events HTTP/1.1\r\nHost: {address}\r\n\
                 Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(format!("the stream did not open: {line}").into());
    }
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    Ok(tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut size_line = String::new();
        loop {
            size_line.clear();
            if reader.read_line(&mut size_line).await.unwrap_or(0) == 0 {
                return;
            }
            let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
                return;
            };
            if size == 0 {
                return;
            }
            let mut chunk = vec![0; size + 2];
            if reader.read_exact(&mut chunk).await.is_err() {
                return;
            }
            let arrived = now();
            pending.extend_from_slice(&chunk[..size]);
            while let Some(end) = pending.windows(2).position(|pair| pair == b"\n\n") {
                let event: Vec<u8> = pending.drain(..end + 2).collect();
                for field in event.split(|&byte| byte == b'\n') {
                    if let Some(id) = field.strip_prefix(b"id: ")
                        && let Some(seq) =
                            std::str::from_utf8(id).ok().and_then(|id| id.parse().ok())
                    {
                        arrivals
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .insert(seq, arrived);
                    }
                }
            }
        }
    }))
}

/// One single-message append; returns (last_seq, created_at in seconds since the epoch).
async fn append(
    address: &str,
    key: &str,
    session: &str,
    text: &str,
) -> Result<(i64, f64), BoxError> {
    let body = json!({"messages": [{"role": "user", "content": text}]}).to_string();
    let mut socket = TcpStream::connect(address).await?;
    socket.set_nodelay(true)?;
    socket
        .write_all(
            format!(
                "POST /v1/sessions/{session}/messages HTTP/1.1\r\nHost: {address}\r\n\
                 Authorization: Bearer {key}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await?;
    let (head, body) = answer.split_once("\r\n\r\n").ok_or("no body")?;
    if !head.starts_with("HTTP/1.1 201") {
        return Err(format!("append failed: {head}").into());
    }
    let body: Value = serde_json::from_str(body)?;
    let last_seq = body["last_seq"].as_i64().ok_or("no last_seq")?;
    let created_at = body["entries"][0]["created_at"]
        .as_str()
        .ok_or("no created_at")?;
    let created_at = chrono::DateTime::parse_from_rfc3339(created_at)?;
    Ok((last_seq, created_at.timestamp_micros() as f64 / 1e6))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((p / 100.0) * (sorted.len().saturating_sub(1)) as f64).round() as usize;
    sorted.get(index).copied().unwrap_or(f64::NAN)
}

async fn phase(args: &Args, count: usize) -> Result<Value, BoxError> {
    let session = format!("tail-bench-{count}-{:08x}", rand::random::<u32>());
    let (first, _) = append(&args.address, &args.writer_key, &session, "start").await?;
    let before = rss_kib(args.server_pid)?;
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let arrivals = Arrivals::default();
        let task = open_stream(&args.address, &args.reader_key, &session, arrivals.clone()).await?;
        streams.push((arrivals, task));
    }
    let seen_all = |seq: i64| {
        streams.iter().all(|(arrivals, _)| {
            arrivals
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains_key(&seq)
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !seen_all(first) {
        if tokio::time::Instant::now() > deadline {
            return Err("the backlog did not reach every stream".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let allocations settle before reading the RSS.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(args.server_pid)?;

    let mut commits = Vec::new();
    for i in 0..args.appends {
        commits.push(append(&args.address, &args.writer_key, &session, &format!("m{i}")).await?);
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !commits.iter().all(|(seq, _)| seen_all(*seq)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies: Vec<f64> = Vec::new();
    for (arrivals, task) in &streams {
        let arrivals = arrivals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (seq, committed) in &commits {
            if let Some(arrived) = arrivals.get(seq) {
                latencies.push((arrived - committed) * 1000.0);
            }
        }
        task.abort();
    }
    latencies.sort_by(f64::total_cmp);
    let missing = count * commits.len() - latencies.len();
    let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    let round = |value: f64| (value * 100.0).round() / 100.0;
    Ok(json!({
        "streams": count,
        "appends": commits.len(),
        "events": latencies.len(),
        "missing": missing,
        "p50_ms": round(percentile(&latencies, 50.0)),
        "p99_ms": round(percentile(&latencies, 99.0)),
        "max_ms": round(latencies.last().copied().unwrap_or(f64::NAN)),
        "mean_ms": round(mean),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_stream": round((after as f64 - before as f64) / count as f64),
    }))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let host = args.address.rsplit_once(':').map_or("", |(host, _)| host);
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return Err("loopback addresses only".into());
    }
    let mut results = Vec::new();
    let mut missing = false;
    for &count in &args.streams {
        let result = phase(&args, count).await?;
        eprintln!(
            "{} streams: commit-to-event p50 {} ms, p99 {} ms, max {} ms over {} events ({} missing); \
             server RSS +{} KiB, {} KiB per stream",
            result["streams"],
            result["p50_ms"],
            result["p99_ms"],
            result["max_ms"],
            result["events"],
            result["missing"],
            result["rss_after_kib"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(result["rss_before_kib"].as_u64().unwrap_or(0)),
            result["kib_per_stream"],
        );
        missing |= result["missing"].as_u64().unwrap_or(0) > 0;
        results.push(result);
    }
    println!("{}", Value::Array(results));
    if missing {
        return Err("some events never arrived".into());
    }
    Ok(())
}
