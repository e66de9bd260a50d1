//! The real binary as a process: its embedded default across restarts, graceful SIGTERM, a large
//! export in constant memory, and what it logs and counts.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, TestDatabase};
use crate::testbin::{Logs, Server, Store, TempDir, create_key, create_tenant, peak_rss, run_cli};
use crate::testpg::ClusterGuard;

/// `chatledger serve` on its embedded cluster in `data_dir`.
async fn start_embedded(data_dir: &Path) -> Server {
    let store = Store::Embedded {
        data_dir: data_dir.to_owned(),
    };
    Server::start(&store, 0, &[], &Arc::new(Logs::default()))
        .await
        .expect("chatledger starts on its embedded cluster")
}

/// `chatledger serve` on a test database, with [`ADMIN_KEY`] in a key file in `dir`; its log kept
/// whole in `logs`.
async fn start_external(database: &TestDatabase, dir: &TempDir, logs: &Arc<Logs>) -> Server {
    let store = Store::External {
        url: database.owner_url.clone(),
        admin_key_file: dir.admin_key_file(ADMIN_KEY),
    };
    Server::start(&store, 0, &[], logs)
        .await
        .expect("chatledger starts")
}

#[tokio::test]
async fn the_embedded_default_keeps_data_across_restarts_and_stops_cleanly() {
    let dir = TempDir::new("binary");
    let data_dir = dir.path().join("data");
    let _cluster = ClusterGuard(data_dir.join("pg"));
    let client = reqwest::Client::new();

    let server = start_embedded(&data_dir).await;
    assert!(
        data_dir.join("pg").join("PG_VERSION").exists(),
        "a private cluster lives in <data-dir>/pg"
    );
    let admin_key_file = data_dir.join("admin.key");
    let mode = std::fs::metadata(&admin_key_file)
        .expect("admin.key generated")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // So is the checkpoint signing key.
    let checkpoint_key = data_dir.join("checkpoint.key");
    let mode = std::fs::metadata(&checkpoint_key)
        .expect("checkpoint.key generated")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let admin_key = std::fs::read_to_string(&admin_key_file)
        .expect("admin key")
        .trim()
        .to_owned();
    create_tenant(&server.address, &admin_key, "acme").await;
    let key = create_key(
        &server.address,
        &admin_key,
        json!({"tenant": "acme", "role": "writer", "label": "support-bot"}),
    )
    .await;
    let response = client
        .post(format!("{}/v1/sessions/user-42/messages", server.address))
        .bearer_auth(&key)
        .json(&json!({"messages": [{"role": "user", "content": "My order number is 8892"}]}))
        .send()
        .await
        .expect("append");
    assert_eq!(response.status(), 201);
    let receipt: Value = response.json().await.expect("json");
    assert!(server.terminate().await.success(), "SIGTERM exits 0");
    assert!(
        !data_dir.join("pg").join("postmaster.pid").exists(),
        "the cluster was stopped with the server"
    );

    let server = start_embedded(&data_dir).await;
    let summary: Value = client
        .get(format!("{}/v1/sessions/user-42", server.address))
        .bearer_auth(&key)
        .send()
        .await
        .expect("summary")
        .json()
        .await
        .expect("json");
    assert_eq!(summary["last_seq"], 1);
    assert_eq!(summary["head_hash"], receipt["head_hash"]);
    assert!(server.terminate().await.success());
}

#[tokio::test]
async fn a_large_export_streams_in_constant_memory() {
    let database = TestDatabase::new().await;
    let dir = TempDir::new("binary");
    let server = start_external(&database, &dir, &Arc::new(Logs::default())).await;
    let client = reqwest::Client::new();

    // Entries of 4 KiB: 2,000 in a session exported first, which brings the export path (the
    // pool's connections, the allocator's heaps) to its working size; then 10,000 in one of
    // about 45 MB, whose export must not grow the server's peak memory by a share of its size.
    let text = "x".repeat(4096);
    let batch: Vec<Value> = (0..100)
        .map(|_| json!({"role": "user", "content": text}))
        .collect();
    let body = serde_json::to_vec(&json!({"messages": batch})).expect("json");
    for (session, appends) in [("small", 20), ("big", 100)] {
        for _ in 0..appends {
            let response = client
                .post(format!("{}/v1/sessions/{session}/messages", server.address))
                .bearer_auth(&database.writer_key)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .expect("append");
            assert_eq!(response.status(), 201, "{}", server.log_tail());
        }
    }
    let pid = server.id();
    let small = export_to_file(&client, &server, &database, &dir, "small").await;
    let before = peak_rss(pid);
    let started = std::time::Instant::now();
    let big = export_to_file(&client, &server, &database, &dir, "big").await;
    let exported = std::fs::metadata(&big).expect("export file").len();
    let growth = peak_rss(pid).saturating_sub(before);
    println!(
        "exported {exported} bytes in {:?}; server peak RSS {before} -> {} bytes (+{growth})",
        started.elapsed(),
        peak_rss(pid)
    );
    assert!(
        exported > 40_000_000,
        "the export holds every entry: {exported} bytes"
    );
    // Buffered, the export would grow it by more than its own size.
    assert!(
        growth < exported / 3,
        "the server's peak memory grew by {growth} bytes for a {exported}-byte export"
    );

    for path in [small, big] {
        let path = path.to_str().expect("UTF-8 path");
        let (status, verdict) = run_cli(&["verify-export", path], None, None);
        assert_eq!(status, 0, "{verdict}");
    }
    assert!(server.terminate().await.success());
}

/// Downloads `session`'s export into a file in `dir`, failing with the server's log if the
/// stream breaks off.
async fn export_to_file(
    client: &reqwest::Client,
    server: &Server,
    database: &TestDatabase,
    dir: &TempDir,
    session: &str,
) -> std::path::PathBuf {
    let mut response = client
        .get(format!("{}/v1/sessions/{session}/export", server.address))
        .bearer_auth(&database.auditor_key)
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), 200);
    let path = dir.path().join(format!("{session}.ndjson"));
    let mut file = std::fs::File::create(&path).expect("export file");
    let mut exported = 0_usize;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                exported += chunk.len();
                std::io::Write::write_all(&mut file, &chunk).expect("write");
            }
            Ok(None) => return path,
            Err(error) => panic!(
                "the export of {session} broke off after {exported} bytes: {error}; the server's log ends with:\n{}",
                server.log_tail()
            ),
        }
    }
}

#[tokio::test]
async fn metrics_count_what_happened_and_logs_carry_request_ids_but_never_contents_or_keys() {
    let database = TestDatabase::new().await;
    let dir = TempDir::new("binary");
    let logs = Arc::new(Logs::keeping_every_line());
    let server = start_external(&database, &dir, &logs).await;
    let client = reqwest::Client::new();
    let canary = format!("CANARY-{:016x}", rand::random::<u64>());
    let url = format!("{}/v1/sessions/observed/messages", server.address);
    let turn = json!({"expected_seq": 0, "messages": [
        {"role": "user", "content": canary, "metadata": {"note": canary}},
        {"role": "assistant", "content": [{"type": "text", "text": canary}]},
    ]});
    let send = |body: &Value, request_id: &str| {
        client
            .post(&url)
            .bearer_auth(&database.writer_key)
            .header("Idempotency-Key", format!("key-{canary}"))
            .header("x-request-id", request_id)
            .json(body)
            .send()
    };
    let first = send(&turn, "trace-one").await.expect("append");
    assert_eq!(first.status(), 201);
    assert_eq!(
        first.headers()["x-request-id"],
        "trace-one",
        "the caller's request id comes back"
    );
    assert_eq!(
        send(&turn, "trace-two").await.expect("replay").status(),
        201
    );
    let stale = json!({"expected_seq": 0, "messages": [{"role": "user", "content": canary}]});
    let conflict = client
        .post(&url)
        .bearer_auth(&database.writer_key)
        .json(&stale)
        .send()
        .await
        .expect("conflict");
    assert_eq!(conflict.status(), 409);
    let generated = conflict.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        generated.len(),
        32,
        "a request id is made when none is sent"
    );
    let unauthorized = client
        .get(&url)
        .bearer_auth("clk_wrong")
        .send()
        .await
        .expect("401");
    assert_eq!(unauthorized.status(), 401);

    let metrics = client
        .get(format!("{}/metrics", server.address))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    let value = |series: &str| {
        text.lines()
            .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|number| number.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{series} in {text}"))
    };
    assert_eq!(value("chatledger_appends_total"), 1.0);
    assert_eq!(value("chatledger_entries_written_total"), 2.0);
    assert_eq!(value("chatledger_idempotent_replays_total"), 1.0);
    assert_eq!(value("chatledger_seq_conflicts_total"), 1.0);
    let route = r#"route="/v1/sessions/{session_id}/messages""#;
    assert_eq!(
        value(&format!(
            r#"chatledger_http_requests_total{{method="POST",{route},status="201"}}"#
        )),
        2.0
    );
    assert_eq!(
        value(&format!(
            r#"chatledger_http_requests_total{{method="POST",{route},status="409"}}"#
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            r#"chatledger_http_requests_total{{method="GET",{route},status="401"}}"#
        )),
        1.0
    );
    assert_eq!(value("chatledger_auth_failures_total"), 1.0);
    assert!(text.contains(&format!(r#"chatledger_http_request_duration_seconds_bucket{{method="POST",{route},status="201",le="0.5"}}"#)));
    for gauge in [
        "chatledger_db_pool_connections",
        "chatledger_db_pool_idle_connections",
        "chatledger_db_pool_waiting_requests",
    ] {
        value(gauge);
    }
    value(r#"chatledger_db_errors_total{kind="unavailable"}"#);

    assert!(server.terminate().await.success());
    let lines = logs.lines();
    let records: Vec<Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert_eq!(records.len(), lines.len(), "every log line is JSON");
    let requests: Vec<&Value> = records
        .iter()
        .filter(|record| record["fields"]["message"] == "request")
        .collect();
    for id in ["trace-one", "trace-two", generated.as_str()] {
        let line = requests
            .iter()
            .find(|record| record["fields"]["request_id"] == id)
            .expect("logged");
        assert_eq!(
            line["fields"]["route"],
            "/v1/sessions/{session_id}/messages"
        );
    }
    let everything = lines.join("\n");
    for secret in [
        canary.as_str(),
        &database.writer_key,
        &database.writer_key[4..],
        ADMIN_KEY,
        "clk_wrong",
    ] {
        assert!(!everything.contains(secret), "the log holds {secret}");
    }
}

#[tokio::test]
async fn the_server_indexes_what_appends_queue_for_search_without_being_asked() {
    let database = TestDatabase::new().await;
    let dir = TempDir::new("binary");
    let logs = Arc::new(Logs::keeping_every_line());
    let server = start_external(&database, &dir, &logs).await;
    let owner = database.owner_pool().await;
    let client = reqwest::Client::new();
    for turn in 0..20 {
        let appended = client
            .post(format!(
                "{}/v1/sessions/queued-{turn}/messages",
                server.address
            ))
            .bearer_auth(&database.writer_key)
            .json(&json!({"messages": [
                {"role": "user", "content": format!("question {turn}")},
                {"role": "assistant", "content": format!("answer {turn}")},
            ]}))
            .send()
            .await
            .expect("append");
        assert_eq!(appended.status(), 201);
    }
    // No search is made: the server's own indexer must empty the queue (within 10 s; it looks
    // every 100 ms).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let count = |table: &'static str| {
        let owner = owner.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&owner)
                .await
                .expect("count")
        }
    };
    while count("search_pending").await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the indexer left the queue"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(count("search_docs").await, 40, "every message indexed once");
    assert!(server.terminate().await.success());
}

/// A reader of the server's log that stops reading (a log collector that stalled: its pipe fills
/// after a few hundred lines) costs log lines, counted, and never requests. The server wrote
/// each request's line from the worker serving it, so once the pipe was full every worker
/// waited on it and nothing was answered.
#[tokio::test]
async fn a_stalled_log_reader_costs_log_lines_not_requests() {
    use futures::StreamExt;

    let database = TestDatabase::new().await;
    let dir = TempDir::new("binary");
    let store = Store::External {
        url: database.owner_url.clone(),
        admin_key_file: dir.admin_key_file(ADMIN_KEY),
    };
    let logs = Arc::new(Logs::default());
    let server = Server::start_with_unread_log(&store, &logs)
        .await
        .expect("chatledger starts");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client");
    // The pipe holds 64 KiB of lines and the server's writer 8,192 more: enough requests to
    // overflow both.
    const REQUESTS: usize = 12_000;
    let url = format!("{}/healthz", server.address);
    let answered = futures::stream::iter(0..REQUESTS)
        .map(|n| {
            let request = client.get(&url).send();
            async move {
                let response = request.await.unwrap_or_else(|error| {
                    panic!("request {n} was not answered while the log was not read: {error}")
                });
                assert_eq!(response.status(), 200, "request {n}");
            }
        })
        .buffer_unordered(8)
        .count()
        .await;
    assert_eq!(answered, REQUESTS);

    let metrics = client
        .get(format!("{}/metrics", server.address))
        .send()
        .await
        .expect("metrics answered")
        .text()
        .await
        .expect("metrics text");
    let dropped: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("chatledger_log_lines_dropped_total "))
        .expect("the dropped lines are counted")
        .trim()
        .parse()
        .expect("a count");
    assert!(
        dropped > 0.0 && dropped <= REQUESTS as f64,
        "lines dropped: {dropped}"
    );
    // Its shutdown does not wait on the log either.
    assert!(server.terminate().await.success());
}

/// Only `serve` and `migrate` set up the embedded cluster. Any other command on a data dir that
/// holds none (a mistyped `--data-dir`) is an error and creates nothing: `verify --all` made a
/// new empty cluster there and reported its 0 sessions intact, exit 0.
#[test]
fn commands_refuse_a_data_dir_without_a_cluster_and_create_nothing() {
    let dir = TempDir::new("binary");
    let mistyped = dir.path().join("chatledger-dta");
    let mistyped_text = mistyped.to_str().expect("utf-8 path");
    let (status, printed) = run_cli(
        &["verify", "--all", "--data-dir", mistyped_text],
        None,
        None,
    );
    assert_eq!(status, 2, "verify could not check: {printed}");
    assert!(!printed.contains("verified"), "{printed}");
    for command in [
        &["keys", "list"][..],
        &["tenants", "create", "acme"],
        &["audit", "search", "--tenant", "acme", "8892"],
    ] {
        let args: Vec<&str> = command
            .iter()
            .copied()
            .chain(["--data-dir", mistyped_text])
            .collect();
        let (status, printed) = run_cli(&args, None, None);
        assert_eq!(status, 1, "{command:?}: {printed}");
    }
    assert!(
        !mistyped.exists(),
        "nothing was created at the mistyped path"
    );
}

/// `migrate` names the schema it leaves, whether it applied anything or not: it printed nothing,
/// so a run ahead of a rollout looked the same whatever it did.
#[tokio::test]
async fn migrate_names_the_newest_migration_it_leaves_the_schema_at() {
    let database = TestDatabase::new().await;
    let newest = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"))
        .expect("migrations")
        .filter_map(|file| file.ok()?.file_name().into_string().ok())
        .filter_map(|name| Some(name.strip_suffix(".sql")?.to_owned()))
        .max()
        .expect("a migration");
    let (version, description) = newest.split_once('_').expect("version_description");
    for _ in 0..2 {
        let (status, printed) = run_cli(&["migrate"], None, Some(&database.owner_url));
        assert_eq!(status, 0, "{printed}");
        assert_eq!(
            printed,
            format!(
                "schema at migration {version} {}\n",
                description.replace('_', " ")
            )
        );
    }
}
