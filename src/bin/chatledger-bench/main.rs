//! `chatledger-bench`: a load generator for a running chatledger on loopback.
//!
//! N client tasks, each with one keep-alive HTTP/1.1 connection, drive M sessions for a fixed
//! time (and at most `--requests` requests) after a warm-up, and report throughput and
//! latency percentiles per operation, as a table or as JSON (`--json`).
//!
//! ```sh
//! cargo run --release --bin chatledger-bench -- --url http://127.0.0.1:8080 \
//!     --admin-key-file chatledger-data/admin.key --workload append --clients 8 --sessions 100
//! ```

mod http;
mod stats;
mod workload;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use clap::Parser;
use hyper::body::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use http::{BoxError, Client, Target};
use stats::{OpResult, Recorder};
use workload::{Plan, SessionTarget, Workload};

#[derive(Debug, Parser)]
#[command(
    name = "chatledger-bench",
    about = "Load generator for a running chatledger (loopback only)"
)]
struct Args {
    /// Base URL of the server; only 127.0.0.1, localhost or [::1].
    #[arg(
        long,
        env = "CHATLEDGER_BENCH_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// A writer key (or set --admin-key / --admin-key-file to create a tenant and a key).
    #[arg(long, env = "CHATLEDGER_BENCH_KEY", hide_env_values = true)]
    key: Option<String>,
    /// The admin key: creates a fresh tenant `bench-<random>` and a writer key for it.
    #[arg(long, env = "CHATLEDGER_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// A file holding the admin key.
    #[arg(long, env = "CHATLEDGER_ADMIN_KEY_FILE")]
    admin_key_file: Option<PathBuf>,
    /// What to measure.
    #[arg(long, value_enum, default_value = "append")]
    workload: Workload,
    /// Concurrent clients, one keep-alive connection each (default 8; hot: 32).
    #[arg(long)]
    clients: Option<usize>,
    /// Sessions the clients spread over (default 100; hot: 10).
    #[arg(long)]
    sessions: Option<usize>,
    /// Session ids are this prefix followed by 1..=sessions.
    #[arg(long, default_value = "bench-")]
    session_prefix: String,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many measured requests in total (the duration still bounds the run).
    #[arg(long)]
    requests: Option<u64>,
    /// Seconds of unmeasured load before the measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Entries each session gets before the run, appended in batches (default: context 40,
    /// paged 300, hot 20, append and blind 0). Sessions that already have them get nothing.
    #[arg(long)]
    prefill: Option<u64>,
    /// Messages per prefill append (1 to 100).
    #[arg(long, default_value_t = 100)]
    prefill_batch: usize,
    /// `limit` of the context reads.
    #[arg(long, default_value_t = 20)]
    context_limit: u32,
    /// `limit` of the paged reads.
    #[arg(long, default_value_t = 100)]
    page_limit: u32,
    /// Characters of each user message.
    #[arg(long, default_value_t = 200)]
    user_chars: usize,
    /// Characters of each assistant message.
    #[arg(long, default_value_t = 800)]
    assistant_chars: usize,
    /// Messages per append turn (append, blind, hot), alternating user and assistant; 1 to 100.
    #[arg(long, default_value_t = 2)]
    turn_messages: usize,
    /// Retries of a turn after 409 seq_conflict (each with the returned current_seq).
    #[arg(long, default_value_t = 10)]
    max_retries: u32,
    /// Send a unique Idempotency-Key with every append turn.
    #[arg(long)]
    idempotency_keys: bool,
    /// Seconds a request may take before it counts as an error and its connection is replaced.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Print the results as JSON on stdout (the table then goes to stderr).
    #[arg(long)]
    json: bool,
    /// Random seed of contents and session choice (default: random).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Serialize)]
struct Report<'a> {
    tool: &'static str,
    workload: Workload,
    url: &'a str,
    clients: usize,
    sessions: usize,
    session_prefix: &'a str,
    duration_s: f64,
    warmup_s: f64,
    requests_cap: Option<u64>,
    prefill: u64,
    user_chars: usize,
    assistant_chars: usize,
    turn_messages: usize,
    context_limit: u32,
    page_limit: u32,
    idempotency_keys: bool,
    setup_s: f64,
    setup_requests: u64,
    setup_messages: u64,
    connections: u64,
    results: Vec<OpResult>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(clean) => {
            if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("chatledger-bench: {error}");
            ExitCode::from(2)
        }
    }
}

fn check(args: &Args) -> Result<(), BoxError> {
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        return Err("--duration must be in (0, 3600] seconds".into());
    }
    if !(0.0..=600.0).contains(&args.warmup) {
        return Err("--warmup must be in [0, 600] seconds".into());
    }
    if !(args.timeout > 0.0 && args.timeout <= 600.0) {
        return Err("--timeout must be in (0, 600] seconds".into());
    }
    if !(1..=100).contains(&args.turn_messages) {
        return Err("--turn-messages must be 1 to 100".into());
    }
    if !(1..=100).contains(&args.prefill_batch) {
        return Err("--prefill-batch must be 1 to 100".into());
    }
    if !(1..=1000).contains(&args.context_limit) || !(1..=1000).contains(&args.page_limit) {
        return Err("--context-limit and --page-limit must be 1 to 1000".into());
    }
    if args.user_chars > 100_000 || args.assistant_chars > 100_000 {
        return Err("message sizes are limited to 100000 characters here".into());
    }
    if !args
        .session_prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._:@-".contains(c))
        || args.session_prefix.len() > 100
    {
        return Err("--session-prefix: up to 100 of A-Z a-z 0-9 . _ : @ -".into());
    }
    Ok(())
}

async fn run(args: Args) -> Result<bool, BoxError> {
    check(&args)?;
    let target = Target::parse(&args.url)?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let clients = args.clients.unwrap_or(args.workload.default_clients());
    let sessions = args.sessions.unwrap_or(args.workload.default_sessions());
    if !(1..=1024).contains(&clients) {
        return Err("--clients must be 1 to 1024".into());
    }
    if !(1..=10_000_000).contains(&sessions) {
        return Err("--sessions must be 1 to 10000000".into());
    }
    let prefill = args.prefill.unwrap_or(args.workload.default_prefill());
    let seed = args.seed.unwrap_or_else(rand::random);

    let mut probe = Client::new(target.clone(), None, timeout)?;
    let health = probe
        .get("/healthz".parse()?)
        .await
        .map_err(|e| format!("cannot reach {}: {e}", args.url))?;
    if !health.status.is_success() {
        return Err(format!("GET /healthz answered {}", health.status).into());
    }
    let key = writer_key(&args, &target, timeout).await?;

    let targets = (1..=sessions)
        .map(|i| SessionTarget::new(format!("{}{i}", args.session_prefix), args.context_limit))
        .collect::<Result<Vec<_>, _>>()?;
    let mut plan = Plan {
        workload: args.workload,
        sessions: targets,
        clients,
        page_limit: args.page_limit,
        max_retries: args.max_retries,
        user_chars: args.user_chars,
        assistant_chars: args.assistant_chars,
        turn_messages: args.turn_messages,
        idempotency_keys: args.idempotency_keys,
        measure_start: Instant::now(),
        measure_end: Instant::now(),
        budget: args.requests,
        spent: AtomicU64::new(0),
        seed,
    };

    // Setup (not measured): the heads of the sessions, and the prefill.
    let setup_started = Instant::now();
    let mut heads = vec![0i64; sessions];
    let (mut setup_requests, mut setup_messages) = (0u64, 0u64);
    let needs_heads = matches!(
        args.workload,
        Workload::Append | Workload::Hot | Workload::Paged | Workload::Prefill
    );
    let mut connected = Vec::with_capacity(clients);
    for _ in 0..clients {
        connected.push(Client::new(target.clone(), Some(&key), timeout)?);
    }
    if needs_heads || prefill > 0 {
        let plan_ref = Arc::new(plan);
        let mut tasks = Vec::new();
        for (index, mut client) in connected.into_iter().enumerate() {
            let plan = Arc::clone(&plan_ref);
            let batch = args.prefill_batch;
            tasks.push(tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(index as u64));
                let prepared =
                    workload::prepare(&plan, &mut client, index, prefill, batch, &mut rng).await;
                (client, prepared)
            }));
        }
        connected = Vec::with_capacity(clients);
        for task in tasks {
            let (client, prepared) = task.await?;
            let prepared = prepared?;
            for (i, head) in prepared.heads {
                heads[i] = head;
            }
            setup_requests += prepared.requests;
            setup_messages += prepared.messages_written;
            connected.push(client);
        }
        plan = Arc::try_unwrap(plan_ref).map_err(|_| "setup tasks still hold the plan")?;
        eprintln!(
            "setup: {} sessions surveyed, {} messages prefilled in {:.1} s",
            sessions,
            setup_messages,
            setup_started.elapsed().as_secs_f64()
        );
    } else {
        // Open every connection before the clock starts.
        for client in &mut connected {
            client.get("/healthz".parse()?).await?;
        }
    }
    let setup_s = setup_started.elapsed().as_secs_f64();

    let mut results = Vec::new();
    let mut connections = 0;
    if args.workload != Workload::Prefill {
        let warmup = Duration::from_secs_f64(args.warmup);
        let duration = Duration::from_secs_f64(args.duration);
        plan.measure_start = Instant::now() + warmup;
        plan.measure_end = plan.measure_start + duration;
        let plan = Arc::new(plan);
        let mut tasks = Vec::new();
        for (index, client) in connected.into_iter().enumerate() {
            let plan = Arc::clone(&plan);
            let heads = heads.clone();
            tasks.push(tokio::spawn(workload::run(plan, client, index, heads)));
        }
        // Every loop stops by itself at the deadline; this is only a safety net.
        let hard_stop = warmup + duration + timeout + Duration::from_secs(10);
        let mut merged: BTreeMap<&'static str, Recorder> = BTreeMap::new();
        let mut last_answer = None;
        let joined = tokio::time::timeout(hard_stop, async {
            let mut outcomes = Vec::new();
            for task in tasks {
                outcomes.push(task.await);
            }
            outcomes
        })
        .await
        .map_err(|_| "client tasks did not stop in time")?;
        for outcome in joined {
            let outcome = outcome?;
            connections += outcome.connects;
            last_answer = last_answer.max(outcome.last_answer);
            for (op, recorder) in outcome.recorders {
                merged.entry(op).or_default().merge(recorder);
            }
        }
        let elapsed = last_answer
            .map(|t| t.saturating_duration_since(plan.measure_start))
            .unwrap_or(duration);
        results = merged
            .into_iter()
            .map(|(op, recorder)| OpResult::new(op, recorder, elapsed))
            .collect();
    }

    let report = Report {
        tool: "chatledger-bench",
        workload: args.workload,
        url: &args.url,
        clients,
        sessions,
        session_prefix: &args.session_prefix,
        duration_s: args.duration,
        warmup_s: args.warmup,
        requests_cap: args.requests,
        prefill,
        user_chars: args.user_chars,
        assistant_chars: args.assistant_chars,
        turn_messages: args.turn_messages,
        context_limit: args.context_limit,
        page_limit: args.page_limit,
        idempotency_keys: args.idempotency_keys,
        setup_s,
        setup_requests,
        setup_messages,
        connections,
        results,
    };
    let table = table(&report);
    if args.json {
        eprint!("{table}");
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut stdout, &report)?;
        writeln!(stdout)?;
    } else {
        print!("{table}");
    }
    Ok(report.results.iter().all(|r| r.errors == 0))
}

fn table(report: &Report<'_>) -> String {
    let mut out = format!(
        "chatledger-bench  workload={} clients={} sessions={} duration={}s warmup={}s prefill={} contents={}+{} chars turn={} msgs\n",
        report.workload.name(),
        report.clients,
        report.sessions,
        report.duration_s,
        report.warmup_s,
        report.prefill,
        report.user_chars,
        report.assistant_chars,
        report.turn_messages,
    );
    out.push_str(&format!(
        "{:<12} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        "op",
        "requests",
        "ok",
        "conflicts",
        "errors",
        "ok/s",
        "msg/s",
        "mean ms",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms"
    ));
    for r in &report.results {
        out.push_str(&format!(
            "{:<12} {:>9} {:>9} {:>9} {:>7} {:>9.1} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}\n",
            r.op,
            r.requests,
            r.ok,
            r.conflicts,
            r.errors,
            r.ok_per_s,
            r.messages_per_s,
            r.latency_ms.mean,
            r.latency_ms.p50,
            r.latency_ms.p90,
            r.latency_ms.p99,
            r.latency_ms.max,
        ));
        if r.errors > 0 {
            let statuses: Vec<String> = r
                .statuses
                .iter()
                .filter(|(status, _)| !(200..300).contains(*status) && **status != 409)
                .map(|(status, count)| format!("{status}x{count}"))
                .collect();
            out.push_str(&format!(
                "  errors: statuses [{}], transport {}{}\n",
                statuses.join(" "),
                r.transport_errors,
                r.first_error
                    .as_deref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            ));
        }
    }
    if report.results.is_empty() && report.workload != Workload::Prefill {
        out.push_str("(no request was measured)\n");
    }
    out
}

/// The writer key: given, or created with the admin key in a fresh tenant.
async fn writer_key(args: &Args, target: &Target, timeout: Duration) -> Result<String, BoxError> {
    if let Some(key) = &args.key {
        return Ok(key.trim().to_owned());
    }
    let admin = match (&args.admin_key, &args.admin_key_file) {
        (Some(key), _) => key.trim().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => {
            return Err("give --key (a writer key), or --admin-key / --admin-key-file".into());
        }
    };
    let mut client = Client::new(target.clone(), Some(&admin), timeout)?;
    let tenant = format!("bench-{:08x}", rand::rng().random::<u32>());
    let body = serde_json::json!({ "name": tenant }).to_string();
    let reply = client
        .post("/v1/admin/tenants".parse()?, Bytes::from(body))
        .await?;
    if reply.status.as_u16() != 201 {
        return Err(format!(
            "POST /v1/admin/tenants answered {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )
        .into());
    }
    let body =
        serde_json::json!({ "tenant": tenant, "role": "writer", "label": "chatledger-bench" })
            .to_string();
    let reply = client
        .post("/v1/admin/keys".parse()?, Bytes::from(body))
        .await?;
    if reply.status.as_u16() != 201 {
        return Err(format!(
            "POST /v1/admin/keys answered {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )
        .into());
    }
    let created: serde_json::Value = serde_json::from_slice(&reply.body)?;
    let key = created
        .get("key")
        .and_then(|k| k.as_str())
        .ok_or("POST /v1/admin/keys answered without a key")?;
    eprintln!("created tenant {tenant} and a writer key for it");
    Ok(key.to_owned())
}
