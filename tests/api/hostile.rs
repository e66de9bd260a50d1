//! Issue 11's findings that only the real process shows: connections held by half-open clients,
//! the connection cap and a bounded shutdown; the server's peak memory under bodies sent with a
//! made-up key; the embedded cluster shared with a command-line run, its log and its roles; and
//! the scripts asking cargo where the binary is.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::ConnectOptions;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::helpers::{ADMIN_KEY, TestDatabase};
use crate::testbin::{BIN, Logs, Server, Store, TempDir, create_key, create_tenant, peak_rss};
use crate::testpg::ClusterGuard;

/// Longest a test waits for something that should happen within a second or two; generous for
/// a loaded machine.
const DEADLINE: Duration = Duration::from_secs(30);

/// Connections the process `pid` holds on its listening `port`: sockets among its open
/// descriptors that the kernel lists as established with that local port.
fn connections_held(pid: u32, port: u16) -> usize {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields
                        .get(1)
                        .and_then(|address| address.rsplit(':').next())
                        .and_then(|hex| u16::from_str_radix(hex, 16).ok());
                    // State 01 is ESTABLISHED; field 9 is the socket's inode.
                    local_port == Some(port)
                        && fields.get(3) == Some(&"01")
                        && fields.get(9).is_some_and(|inode| inodes.contains(*inode))
                })
                .count()
        })
        .sum()
}

/// Polls `check` until it holds, failing after [`DEADLINE`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn authority(server: &Server) -> String {
    server.address.trim_start_matches("http://").to_owned()
}

/// The status of a raw HTTP/1.1 response, 0 when there is none.
fn status_of(response: &[u8]) -> u16 {
    String::from_utf8_lossy(response)
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Reads what the server sends until it closes the connection, bounded by [`DEADLINE`]. A reset
/// after the response keeps what was read.
async fn read_until_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut reply = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut reply)).await;
    assert!(
        read.is_ok(),
        "the server still holds the connection after {DEADLINE:?}"
    );
    reply
}

/// A connection that sent half a request header and nothing more.
async fn half_open(authority: &str) -> TcpStream {
    let mut stream = TcpStream::connect(authority).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Half: ")
        .await
        .expect("write");
    stream
}

/// A request on its own connection (closed after it): its status and whole response.
async fn request(authority: &str, method: &str, path: &str, key: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(authority).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let reply = read_until_closed(&mut stream).await;
    (
        status_of(&reply),
        String::from_utf8_lossy(&reply).into_owned(),
    )
}

/// An append whose headers and half of whose body are sent: a request in progress.
struct InFlight {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl InFlight {
    async fn start(authority: &str, session: &str, key: &str) -> Self {
        let body =
            serde_json::to_vec(&json!({"messages": [{"role": "user", "content": "in flight"}]}))
                .expect("json");
        let head = format!(
            "POST /v1/sessions/{session}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let mut stream = TcpStream::connect(authority).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("head");
        let (first, rest) = body.split_at(body.len() / 2);
        stream.write_all(first).await.expect("half the body");
        Self {
            stream,
            rest: rest.to_vec(),
        }
    }

    /// Sends the rest of the body; the response's status.
    async fn finish(mut self) -> u16 {
        self.stream.write_all(&self.rest).await.expect("the rest");
        let reply = read_until_closed(&mut self.stream).await;
        status_of(&reply)
    }
}

/// Sends `body` whole to `path` with `key`, whatever the server answers meanwhile, and returns
/// the status it answered.
async fn send_whole_body(authority: String, path: String, key: String, body: Arc<Vec<u8>>) -> u16 {
    let stream = TcpStream::connect(&authority).await.expect("connect");
    let (mut reading, mut writing) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let writer = tokio::spawn(async move {
        // The server may answer and close before the body is all sent: that is the point.
        if writing.write_all(head.as_bytes()).await.is_ok() {
            let _ = writing.write_all(&body).await;
        }
        // Dropping the half would half-close the connection, which hyper takes for a client
        // gone; a real client keeps it open for the answer.
        std::future::pending::<()>().await;
        drop(writing);
    });
    let reply = read_until_closed(&mut reading).await;
    writer.abort();
    status_of(&reply)
}

#[tokio::test]
async fn half_open_connections_are_dropped_and_beyond_the_cap_probes_and_open_requests_work() {
    let database = TestDatabase::new().await;
    let dir = TempDir::new("hostile");
    let store = Store::External {
        url: database.owner_url.clone(),
        admin_key_file: dir.admin_key_file(ADMIN_KEY),
    };
    let logs = Arc::new(Logs::keeping_every_line());
    let flags = [
        "--header-read-timeout-ms",
        "2000",
        "--max-connections",
        "3",
        "--drain-timeout-ms",
        "20000",
    ];
    // Started with a low soft limit on open files, which it raises to the hard limit.
    let low_soft_limit = ["sh", "-c", "ulimit -Sn 256 && exec \"$@\"", "sh"];
    let server = Server::start_through(&low_soft_limit, &store, 0, &flags, &logs)
        .await
        .expect("chatledger starts");
    let (pid, port, authority) = (server.id(), server.port, authority(&server));
    let key = database.writer_key.clone();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let open_files: Vec<&str> = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .expect("Max open files")
        .split_whitespace()
        .collect();
    assert!(
        open_files.len() >= 2 && open_files[0] == open_files[1] && open_files[0] != "256",
        "the soft limit is raised to the hard one: {open_files:?}"
    );

    // Twenty clients that send half a header: the server drops each after the header-read
    // timeout (it once held them for ever), and the idle kept-alive ones after the same time;
    // then it holds no connection at all.
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(half_open(&authority).await);
    }
    // And five that asked once and keep their connection open, idle.
    let mut idle = Vec::new();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(&authority).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        idle.push(stream);
    }
    let mut peak = 0;
    eventually("the server accepts the half-open connections", || {
        peak = peak.max(connections_held(pid, port));
        peak > 0
    })
    .await;
    for client in &mut clients {
        read_until_closed(client).await;
        peak = peak.max(connections_held(pid, port));
    }
    for client in &mut idle {
        let reply = read_until_closed(client).await;
        assert_eq!(
            status_of(&reply),
            200,
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
    eventually("the server holds no connection", || {
        connections_held(pid, port) == 0
    })
    .await;
    println!("half-open and idle connections: at most {peak} held, then 0");

    // Three requests in progress fill the cap. Beyond it the probes are answered and anything
    // else is 503 with a problem document; the requests in progress complete.
    let mut in_flight = Vec::new();
    for n in 0..3 {
        in_flight.push(InFlight::start(&authority, &format!("capped-{n}"), &key).await);
    }
    eventually("the three requests are accepted", || {
        connections_held(pid, port) == 3
    })
    .await;
    let (status, text) = request(&authority, "GET", "/healthz", &key).await;
    assert_eq!(status, 200, "the probe beyond the cap: {text}");
    let (status, text) = request(&authority, "GET", "/v1/sessions/capped-0", &key).await;
    assert_eq!(status, 503, "beyond the cap: {text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(text.contains("\"unavailable\""), "{text}");
    for request in in_flight {
        assert_eq!(
            request.finish().await,
            201,
            "a request in progress completes"
        );
    }
    // Below the cap again, a new connection is served in full.
    let (status, text) = request(&authority, "GET", "/v1/sessions/capped-0", &key).await;
    assert_eq!(status, 200, "once the cap has room: {text}");

    // SIGTERM with a request in progress: it completes, then the process exits 0.
    let last = InFlight::start(&authority, "draining", &key).await;
    eventually("the last request is accepted", || {
        connections_held(pid, port) == 1
    })
    .await;
    let stopping = tokio::spawn(server.terminate());
    eventually("the server begins its shutdown", || {
        logs.lines()
            .iter()
            .any(|line| line.contains("shutdown requested"))
    })
    .await;
    assert_eq!(last.finish().await, 201, "an in-flight request drains");
    let status = tokio::time::timeout(DEADLINE, stopping)
        .await
        .expect("the server exits once its requests are done")
        .expect("joined");
    assert!(status.success(), "{status}\n{}", logs.tail());
}

/// Sends `body` to 48 sessions `{prefix}-{n}` at once, each with `key(n)`; returns their
/// statuses and the server's peak RSS before and how much it grew.
async fn flood(
    server: &Server,
    prefix: &str,
    body: &Arc<Vec<u8>>,
    key: impl Fn(usize) -> String,
) -> (Vec<u16>, u64, u64) {
    let before = peak_rss(server.id());
    let sent: Vec<_> = (0..48)
        .map(|n| {
            tokio::spawn(send_whole_body(
                authority(server),
                format!("/v1/sessions/{prefix}-{n}/messages"),
                key(n),
                body.clone(),
            ))
        })
        .collect();
    let mut statuses = Vec::new();
    for sent in sent {
        statuses.push(sent.await.expect("joined"));
    }
    let growth = peak_rss(server.id()).saturating_sub(before);
    (statuses, before, growth)
}

#[tokio::test]
async fn bodies_sent_with_a_made_up_key_cost_the_server_almost_no_memory() {
    let database = TestDatabase::new().await;
    let dir = TempDir::new("hostile");
    let store = Store::External {
        url: database.owner_url.clone(),
        admin_key_file: dir.admin_key_file(ADMIN_KEY),
    };
    let server = Server::start(&store, 0, &[], &Arc::new(Logs::default()))
        .await
        .expect("chatledger starts");
    // A valid append of just under the 4 MiB body limit, so that only the key is wrong.
    let body = Arc::new(
        serde_json::to_vec(
            &json!({"messages": [{"role": "user", "content": "x".repeat(4_000_000)}]}),
        )
        .expect("json"),
    );
    assert!(body.len() < 4 * 1024 * 1024);
    let (statuses, before, growth) = flood(&server, "flood", &body, |n| {
        format!("clk_made_up_{n:04}_0123456789abcdef0123456789abcdef")
    })
    .await;
    println!(
        "48 bodies of {} bytes with a made-up key: peak RSS {before} -> +{growth} bytes",
        body.len()
    );
    // The key was once checked after the body was parsed and copied: +309 MiB.
    assert!(
        growth < 64 * 1024 * 1024,
        "the server's peak memory grew by {growth} bytes"
    );
    assert!(statuses.iter().all(|&status| status == 401), "{statuses:?}");
    assert!(server.terminate().await.success());
}

#[tokio::test]
async fn bodies_in_flight_wait_for_their_share_of_the_budget() {
    let database = TestDatabase::new().await;
    let dir = TempDir::new("hostile");
    let store = Store::External {
        url: database.owner_url.clone(),
        admin_key_file: dir.admin_key_file(ADMIN_KEY),
    };
    // Two bodies of the limit in memory at once.
    let budget = 8 * 1024 * 1024;
    let flags = ["--max-body-bytes-in-flight", &budget.to_string()];
    let server = Server::start(&store, 0, &flags, &Arc::new(Logs::default()))
        .await
        .expect("chatledger starts");
    // A real key, so each body is read whole; its first field is unknown, so that reading it,
    // not parsing it, is what costs the server.
    let body =
        Arc::new(serde_json::to_vec(&json!({"unknown": "x".repeat(4_000_000)})).expect("json"));
    let (statuses, before, growth) =
        flood(&server, "budget", &body, |_| database.writer_key.clone()).await;
    println!(
        "48 bodies of {} bytes read with a budget of {budget}: peak RSS {before} -> +{growth} bytes",
        body.len()
    );
    // Read as they came (no budget, as before), these bodies grew it by about 120 MiB.
    assert!(
        growth < 64 * 1024 * 1024,
        "the server's peak memory grew by {growth} bytes"
    );
    assert!(statuses.iter().all(|&status| status == 422), "{statuses:?}");
    assert!(server.terminate().await.success());
}

/// Lines with an ERROR in the embedded cluster's logs.
fn postgres_errors(pg_dir: &Path) -> (usize, String) {
    let mut text = String::new();
    for entry in std::fs::read_dir(pg_dir.join("log"))
        .expect("the cluster's log directory")
        .flatten()
    {
        text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    (
        text.lines().filter(|line| line.contains("ERROR:")).count(),
        text,
    )
}

/// Makes PostgreSQL log one ERROR naming `marker` and waits until its log holds it, so that
/// everything logged before has been written; then the count of ERROR lines.
async fn errors_through(owner: &sqlx::PgPool, pg_dir: &Path, marker: &str) -> usize {
    let failed = sqlx::query(&format!("SELECT 1 / 0 AS {marker}"))
        .execute(owner)
        .await;
    assert!(failed.is_err(), "division by zero");
    let mut count = 0;
    eventually("PostgreSQL logs the marker", || {
        let (errors, text) = postgres_errors(pg_dir);
        count = errors;
        text.contains(marker)
    })
    .await;
    count
}

/// Whether the process `pid` still runs: it exists and is no zombie (an orphaned postmaster is
/// reaped by whatever adopted it, which in a container may be nobody).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

#[tokio::test]
async fn the_embedded_cluster_outlives_a_command_run_logs_no_bad_key_and_stops_with_the_server() {
    let dir = TempDir::new("hostile");
    let data_dir = dir.path().join("data");
    let pg_dir = data_dir.join("pg");
    let _cluster = ClusterGuard(pg_dir.clone());
    let store = Store::Embedded {
        data_dir: data_dir.clone(),
    };
    let logs = Arc::new(Logs::default());
    let server = Server::start(&store, 0, &[], &logs)
        .await
        .expect("chatledger starts on its embedded cluster");
    let client = reqwest::Client::new();
    let admin_key = std::fs::read_to_string(data_dir.join("admin.key"))
        .expect("admin key")
        .trim()
        .to_owned();
    create_tenant(&server.address, &admin_key, "acme").await;
    let key = create_key(
        &server.address,
        &admin_key,
        json!({"tenant": "acme", "role": "writer"}),
    )
    .await;
    let messages: Vec<Value> = (0..100)
        .map(|n| json!({"role": "user", "content": format!("needle number {n} in a haystack")}))
        .collect();
    for n in 0..10 {
        let response = client
            .post(format!("{}/v1/sessions/s{n}/messages", server.address))
            .bearer_auth(&key)
            .json(&json!({ "messages": messages }))
            .send()
            .await
            .expect("append");
        assert_eq!(response.status(), 201);
    }

    // The owner's view of the cluster: it may not create roles, and its log rotates.
    let owner = sqlx::postgres::PgConnectOptions::new()
        .socket(&pg_dir)
        .port(5432)
        .username("chatledger_owner")
        .database("chatledger")
        .disable_statement_logging();
    let owner = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(owner)
        .await
        .expect("the owner connects over the cluster's socket");
    let createrole: bool =
        sqlx::query_scalar("SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&owner)
            .await
            .expect("role");
    assert!(!createrole, "the embedded owner has no CREATEROLE");
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings
          WHERE name IN ('logging_collector', 'log_truncate_on_rotation', 'log_rotation_age')
          ORDER BY name",
    )
    .fetch_all(&owner)
    .await
    .expect("settings");
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(name, setting)| (name.as_str(), setting.as_str()))
        .collect();
    assert_eq!(
        settings,
        [
            ("log_rotation_age", "1440"),
            ("log_truncate_on_rotation", "on"),
            ("logging_collector", "on"),
        ],
        "the cluster's log rotates daily"
    );
    // log_filename is for superusers to read; the files show it: one per weekday, reused (beside
    // pg_ctl's postgres.log, which holds only what is said before the collector starts).
    let weekdays = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let files: Vec<String> = std::fs::read_dir(pg_dir.join("log"))
        .expect("the cluster's log directory")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "postgres.log")
        .collect();
    assert!(
        !files.is_empty()
            && files.iter().all(|name| weekdays
                .iter()
                .any(|day| *name == format!("postgresql-{day}.log"))),
        "{files:?}"
    );

    // Made-up keys cost PostgreSQL no ERROR, so they write nothing to its log.
    let before = errors_through(&owner, &pg_dir, "chatledger_marker_before").await;
    for n in 0..50 {
        let made_up = format!("clk_made_up_{n:04}_0123456789abcdef0123456789abcdef");
        let read = client
            .get(format!("{}/v1/sessions/s0/messages", server.address))
            .bearer_auth(&made_up)
            .send()
            .await
            .expect("read");
        assert_eq!(read.status(), 401);
        let append = client
            .post(format!("{}/v1/sessions/s0/messages", server.address))
            .bearer_auth(&made_up)
            .json(&json!({"messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .expect("append");
        assert_eq!(append.status(), 401);
    }
    let after = errors_through(&owner, &pg_dir, "chatledger_marker_after").await;
    assert_eq!(after, before + 1, "only the marker's ERROR was logged");
    owner.close().await;

    assert!(server.terminate().await.success(), "SIGTERM exits 0");
    assert!(
        !pg_dir.join("postmaster.pid").exists(),
        "stopped with the server"
    );

    // A command starts the cluster; a server attaches to it while the command runs (the command
    // is held on its full stdout); the command ends and the server's database stays up.
    let mut command = tokio::process::Command::new(BIN)
        .args(["audit", "search", "--tenant", "acme", "needle"])
        .args(["--limit", "10000", "--data-dir"])
        .arg(&data_dir)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chatledger audit search runs");
    let mut hits = BufReader::new(command.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(120), hits.next_line())
        .await
        .expect("the command prints its first hit")
        .expect("stdout");
    assert!(first.is_some_and(|line| line.contains("needle")));
    assert!(
        pg_dir.join("postmaster.pid").exists(),
        "the command started the cluster"
    );
    let flags = [
        "--drain-timeout-ms",
        "1000",
        "--header-read-timeout-ms",
        "60000",
    ];
    let server = Server::start(&store, 0, &flags, &logs)
        .await
        .expect("chatledger attaches to the running cluster");
    assert!(
        command.try_wait().expect("the command's status").is_none(),
        "the command still runs (its output fills the pipe) while the server attaches"
    );
    let mut printed = 1;
    let mut bytes = 0;
    while let Some(hit) = hits.next_line().await.expect("stdout") {
        printed += 1;
        bytes += hit.len() + 1;
    }
    println!("the command printed {printed} hits, {bytes} bytes after the first");
    let exit = command.wait().await.expect("the command exits");
    assert!(exit.success(), "{exit}");
    assert_eq!(printed, 1000, "every hit printed");
    let (status, summary) = request(&authority(&server), "GET", "/v1/sessions/s0", &key).await;
    assert_eq!(
        status, 200,
        "the server's database outlived the command: {summary}"
    );

    // SIGTERM with a half-open connection (one the header-read timeout would hold for a
    // minute): the process exits 0 after the drain limit and stops its cluster.
    let postmaster: i32 = std::fs::read_to_string(pg_dir.join("postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|pid| pid.trim().parse().ok())
        .expect("the postmaster's pid");
    let _half_open = half_open(&authority(&server)).await;
    let (pid, port) = (server.id(), server.port);
    eventually("the half-open connection is accepted", || {
        connections_held(pid, port) == 1
    })
    .await;
    let status = tokio::time::timeout(DEADLINE, server.terminate())
        .await
        .expect("the server exits within its drain limit");
    assert!(status.success(), "{status}\n{}", logs.tail());
    assert!(!pg_dir.join("postmaster.pid").exists());
    assert!(!alive(postmaster), "no PostgreSQL is left running");
}

#[test]
fn the_scripts_ask_cargo_where_the_binary_is() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Each once hard-coded target/debug/chatledger, which CARGO_TARGET_DIR moves.
    for script in [
        "scripts/test.sh",
        "scripts/schemathesis.sh",
        "clients/python/run-tests.sh",
        "bench/lib.sh",
    ] {
        let text = std::fs::read_to_string(root.join(script)).expect("script");
        for line in text.lines() {
            let code = line.split('#').next().unwrap_or_default();
            assert!(
                !code.contains("target/debug/chatledger") || code.contains("$target/debug/"),
                "{script} names the binary's path itself: {line}"
            );
        }
    }
    let elsewhere = TempDir::new("target");
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg("source scripts/cargo-bin.sh && cargo_target_dir")
        .current_dir(root)
        .env("CARGO_TARGET_DIR", elsewhere.path())
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        elsewhere.path().to_string_lossy()
    );
}
