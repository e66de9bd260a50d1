//! Issue 11's findings that an in-process server shows: metrics cardinality, timeouts and
//! routing errors as problem documents, pages bounded by bytes, audit slots and cancellation,
//! the database's own checks, and exact values through every verifier.

use std::time::Duration;

use chatledger::db::{self, PoolSettings};
use chatledger::http::HttpSettings;
use chatledger::ledger::Limits;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::audit::{independent_verifier, verify_export};
use crate::helpers::{ADMIN_KEY, TestApp, TestDatabase, assert_problem, json_ok, superuser};

/// A raw request, so that nothing rewrites its method or target.
async fn raw(app: &TestApp, request: &str) -> (u16, String) {
    let authority = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.expect("read");
    let text = String::from_utf8_lossy(&reply).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn made_up_methods_do_not_grow_the_metrics() {
    let app = TestApp::spawn().await;

    for n in 0..20 {
        raw(
            &app,
            &format!("M{n}X /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
    }
    for n in 20..320 {
        let (status, text) = raw(
            &app,
            &format!("M{n}X /v1/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!((400..500).contains(&status), "{text}");
        assert!(text.contains("application/problem+json"), "{text}");
    }
    let after = app.get("/metrics").await.text().await.expect("metrics");
    assert!(!after.contains("M300X"), "a made-up method is no label");
    assert!(after.contains("method=\"other\""));
    // 300 made-up methods once grew the metrics by 559 KB, a series each. The registry is the
    // process's, shared with tests running alongside, so the check is on the label's values:
    // only real methods and `other`, whatever else was counted meanwhile.
    let methods: std::collections::BTreeSet<&str> = after
        .split("method=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    let known = [
        "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "other",
    ];
    assert!(
        methods.iter().all(|method| known.contains(method)),
        "{methods:?}"
    );
}

#[tokio::test]
async fn a_request_that_times_out_gets_a_problem_document_with_retry_after_and_is_counted() {
    let database = TestDatabase::new().await;
    let pool = database.runtime_pool().await;
    // Long enough that the setup append below fits in it on a loaded 2-core machine (two CI runs
    // at once made a first append miss 300 ms), short enough to keep the test quick.
    let settings = HttpSettings {
        request_timeout: Duration::from_millis(1_000),
        ..HttpSettings::default()
    };
    let app = TestApp::spawn_configured(database, pool, Limits::default(), settings, |s| s).await;
    app.append("locked", &[("user", "x")]).await;
    // The superuser holds the session's head, so the append waits on it past the timeout.
    let superuser = superuser(&app).await;
    let mut hold = superuser.begin().await.expect("begin");
    sqlx::query("SELECT * FROM sessions WHERE session_id = 'locked' FOR UPDATE")
        .execute(&mut *hold)
        .await
        .expect("lock");
    let response = app
        .post_json(
            "/v1/sessions/locked/messages",
            &json!({"messages": [{"role": "user", "content": "y"}]}),
        )
        .await;
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().ok()),
        Some(Some("1"))
    );
    let problem = assert_problem(response, 503, "unavailable").await;
    assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    hold.rollback().await.expect("release");
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("chatledger_http_requests_total")
                && line.contains("route=\"/v1/sessions/{session_id}/messages\"")
                && line.contains("status=\"503\"")),
        "the timed-out request is counted under its route"
    );
}

#[tokio::test]
async fn malformed_path_segments_get_problem_documents() {
    let app = TestApp::spawn().await;
    let admin = format!("Authorization: Bearer {ADMIN_KEY}");
    // The admin key is checked first: it may not touch holds or sessions at all.
    for (method, target, expected) in [
        ("DELETE", "/v1/admin/keys/%FF%FF%FF", 404),
        ("GET", "/v1/admin/tenants/%FF/policy", 404),
        ("PUT", "/v1/admin/tenants/%FF/policy", 404),
        ("DELETE", "/v1/holds/%FF", 403),
        ("GET", "/v1/sessions/%FF%FE", 403),
        ("GET", "/v1/nothing/%FF", 404),
    ] {
        let (got, text) = raw(
            &app,
            &format!(
                "{method} {target} HTTP/1.1\r\nHost: x\r\n{admin}\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(got, expected, "{target}: {text}");
        assert!(
            text.contains("application/problem+json"),
            "{target}: {text}"
        );
    }
}

#[tokio::test]
async fn pages_stop_before_their_byte_limit_and_the_cursor_walks_on() {
    let database = TestDatabase::new().await;
    let pool = database.runtime_pool().await;
    let limits = Limits {
        max_page_bytes: 1024 * 1024,
        ..Limits::default()
    };
    let app = TestApp::spawn_with(database, pool, limits).await;
    let big = "x".repeat(200 * 1024);
    for _ in 0..3 {
        let messages: Vec<Value> = (0..4)
            .map(|_| json!({"role": "user", "content": big}))
            .collect();
        let response = app
            .post_json("/v1/sessions/big/messages", &json!({"messages": messages}))
            .await;
        assert_eq!(response.status(), 201);
    }
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let response = app
            .get(&format!(
                "/v1/sessions/big/messages?after_seq={after}&limit=1000"
            ))
            .await;
        let body = response.bytes().await.expect("body");
        assert!(
            body.len() <= 1024 * 1024 + 64 * 1024,
            "a page of {} bytes",
            body.len()
        );
        let page: Value = serde_json::from_slice(&body).expect("json");
        let seqs: Vec<i64> = page["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["seq"].as_i64())
            .collect();
        assert!(!seqs.is_empty() && seqs.len() < 12, "{seqs:?}");
        seen.extend(seqs);
        match page["next_after_seq"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, (1..=12).collect::<Vec<i64>>());
    let window = json_ok(app.get("/v1/sessions/big/context?limit=1000").await).await;
    let seqs: Vec<i64> = window["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["seq"].as_i64())
        .collect();
    assert_eq!(
        *seqs.last().expect("the newest"),
        12,
        "the newest entries, ascending"
    );
    assert!(seqs.len() < 12);
    // One entry larger than the limit still comes, alone.
    let limits = Limits {
        max_page_bytes: 1,
        ..Limits::default()
    };
    let tiny = TestApp::spawn_with(
        app.database.clone(),
        app.database.runtime_pool().await,
        limits,
    )
    .await;
    let page = json_ok(tiny.get("/v1/sessions/big/messages?limit=5").await).await;
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["next_after_seq"], 1);
    let exported = as_auditor(&tiny, "/v1/sessions/big/export")
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert_eq!(
        exported.lines().count(),
        13,
        "an export goes on, page by page"
    );
    assert_eq!(verify_export(&exported, None), 0);
    let verified = json_ok(
        as_auditor(&tiny, "/v1/sessions/big/verify")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(verified["verified_through_seq"], 12);
}

fn as_auditor(app: &TestApp, path: &str) -> reqwest::RequestBuilder {
    app.request_as(Method::GET, path, Some(&app.database.auditor_key))
}

#[tokio::test]
async fn verifies_and_exports_beyond_their_slots_get_429_and_a_verify_stops_with_its_client() {
    let database = TestDatabase::new().await;
    let pool = database.runtime_pool().await;
    let app = TestApp::spawn_configured(
        database,
        pool,
        Limits::default(),
        HttpSettings::default(),
        |state| state.bounded(1, 64 * 1024 * 1024),
    )
    .await;
    let messages: Vec<Value> = (0..100)
        .map(|n| json!({"role": "user", "content": format!("m{n} {}", "y".repeat(2000))}))
        .collect();
    for _ in 0..100 {
        let response = app
            .post_json("/v1/sessions/long/messages", &json!({"messages": messages}))
            .await;
        assert_eq!(response.status(), 201);
    }
    // An export in progress holds the one slot: its body is not read yet.
    let export = as_auditor(&app, "/v1/sessions/long/export")
        .send()
        .await
        .expect("sent");
    assert_eq!(export.status(), 200);
    let busy = as_auditor(&app, "/v1/sessions/long/verify")
        .send()
        .await
        .expect("sent");
    assert_eq!(
        busy.headers().get("retry-after").map(|v| v.to_str().ok()),
        Some(Some("1"))
    );
    assert_problem(busy, 429, "too_many_requests").await;
    drop(export);

    // A whole verify, and how long it takes; then one whose client gives up early.
    let started = std::time::Instant::now();
    let mut full = None;
    while started.elapsed() < Duration::from_secs(10) && full.is_none() {
        let response = as_auditor(&app, "/v1/sessions/long/verify")
            .send()
            .await
            .expect("sent");
        if response.status() == 200 {
            full = Some(response.json::<Value>().await.expect("json"));
        }
    }
    let full = full.expect("the slot comes free once the export is gone");
    assert_eq!(full["verified_through_seq"], 10_000);
    let took = started.elapsed();
    let abandoned = reqwest::Client::builder()
        .timeout(took / 10)
        .build()
        .expect("client")
        .get(app.url("/v1/sessions/long/verify"))
        .bearer_auth(&app.database.auditor_key)
        .send()
        .await;
    assert!(abandoned.is_err(), "the client gave up");
    // Well after the verify would have finished, it has written no record: it stopped.
    tokio::time::sleep(took * 3).await;
    let log = json_ok(
        as_auditor(&app, "/v1/audit/access?action=verify")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(
        log["records"].as_array().map(Vec::len),
        Some(1),
        "the whole verify only: {log}"
    );
}

#[tokio::test]
async fn every_chatledger_function_runs_with_a_pinned_search_path() {
    let app = TestApp::spawn().await;
    let owner = app.database.owner_pool().await;
    let unpinned: Vec<String> = sqlx::query_scalar(
        "SELECT p.proname FROM pg_proc p
          WHERE p.proname LIKE 'chatledger\\_%' AND p.pronamespace = 'public'::regnamespace
            AND NOT coalesce(p.proconfig::text LIKE '%search_path=pg_catalog, public, pg_temp%', false)
          ORDER BY 1",
    )
    .fetch_all(&owner)
    .await
    .expect("functions");
    // These are inlined into their callers (chatledger_search_text, an index expression, is
    // compiled once per connection instead) and name every object by schema.
    assert_eq!(
        unpinned,
        [
            "chatledger_current_tenant",
            "chatledger_entry_bytes",
            "chatledger_entry_hash",
            "chatledger_fold",
            "chatledger_search_text"
        ]
    );
}

#[tokio::test]
async fn the_server_refuses_a_superuser_owner_and_a_schema_others_may_write() {
    let database = TestDatabase::new().await;
    let url = std::env::var("CHATLEDGER_TEST_SUPERUSER_URL").expect("superuser URL");
    let superuser: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
    let superuser = superuser.database(database.name());
    let refused = db::runtime_pool(&superuser, &PoolSettings::default())
        .await
        .expect_err("a superuser session");
    assert!(refused.to_string().contains("superuser"), "{refused}");

    let su = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(superuser.clone())
        .await
        .expect("su");
    sqlx::raw_sql("GRANT CREATE ON SCHEMA public TO PUBLIC")
        .execute(&su)
        .await
        .expect("grant");
    let refused = db::runtime_pool(&database.owner, &PoolSettings::default())
        .await
        .expect_err("an open schema");
    assert!(
        refused
            .to_string()
            .contains("REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
        "{refused}"
    );
    sqlx::raw_sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        .execute(&su)
        .await
        .expect("revoke");
    db::runtime_pool(&database.owner, &PoolSettings::default())
        .await
        .expect("fixed");
}

#[tokio::test]
async fn numbers_tied_between_two_doubles_verify_through_every_verifier() {
    let app = TestApp::spawn().await;
    // Doubles with a binary fraction, written exactly, between 2^40 and 2^53: about a fifth of
    // these are ties that a naive formatter rounds the wrong way.
    let mut numbers = Vec::new();
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    while numbers.len() < 400 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let magnitude = 40 + (state % 12) as i32;
        let fraction_bits = 1 + (state >> 8) % (52 - magnitude as u64).max(1);
        let whole = (state >> 16) % (1 << (magnitude - 1)) + (1 << (magnitude - 1));
        let value = whole as f64
            + ((state >> 3) % (1 << fraction_bits)) as f64 / (1u64 << fraction_bits) as f64;
        if value.fract() != 0.0 && value < 9_007_199_254_740_991.0 {
            numbers.push(value);
        }
    }
    for chunk in numbers.chunks(100) {
        let body = json!({"messages": [{"role": "tool", "content": [{"values": chunk}], "metadata": {"first": chunk[0]}}]});
        let response = app.post_json("/v1/sessions/ties/messages", &body).await;
        assert_eq!(
            response.status(),
            201,
            "{}",
            response.text().await.unwrap_or_default()
        );
    }
    let exported = as_auditor(&app, "/v1/sessions/ties/export")
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert_eq!(verify_export(&exported, None), 0);
    let (status, printed) = independent_verifier(&exported, None);
    assert_eq!(status, 0, "{printed}");
    let verified = json_ok(
        as_auditor(&app, "/v1/sessions/ties/verify")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(verified["ok"], true);
}

#[tokio::test]
async fn values_a_double_or_an_object_would_change_are_refused_on_input_and_offline() {
    let app = TestApp::spawn().await;
    for (body, code) in [
        (
            r#"{"messages": [{"role": "user", "content": [{"n": 1.00000000000000000001}]}]}"#,
            "invalid_number",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "x", "metadata": {"pi": 3.14159265358979323846}}]}"#,
            "invalid_number",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "x", "metadata": {"amount": 999, "amount": 1}}]}"#,
            "validation_failed",
        ),
        (
            r#"{"messages": [{"role": "user", "content": [{"a": 1, "b": {"c": 1, "c": 2}}]}]}"#,
            "validation_failed",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "x"}], "messages": []}"#,
            "validation_failed",
        ),
    ] {
        let response = app
            .client
            .post(app.url("/v1/sessions/exact/messages"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_problem(response, 422, code).await;
    }
    assert_problem(
        app.get("/v1/sessions/exact").await,
        404,
        "session_not_found",
    )
    .await;
    let accepted = app
        .client
        .post(app.url("/v1/sessions/exact/messages"))
        .header("content-type", "application/json")
        .body(r#"{"messages": [{"role": "user", "content": "x", "metadata": {"amount": 999, "one": 1.0, "third": 0.1}}]}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(accepted.status(), 201);
    let exported = as_auditor(&app, "/v1/sessions/exact/export")
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert_eq!(verify_export(&exported, None), 0);
    // An export line edited so that the digest still matches under last-key-wins or a double.
    for (label, edited) in [
        (
            "a key twice",
            exported.replacen("\"amount\": 999", "\"amount\": 1, \"amount\": 999", 1),
        ),
        (
            "more precision",
            exported.replacen("\"third\": 0.1", "\"third\": 0.1000000000000000000001", 1),
        ),
    ] {
        assert_ne!(edited, exported, "{label}: the edit applies");
        assert_eq!(verify_export(&edited, None), 1, "{label}");
    }
    assert_eq!(
        independent_verifier(
            &exported.replacen("\"amount\": 999", "\"amount\": 1, \"amount\": 999", 1),
            None
        )
        .0,
        1
    );
    // A line longer than any chatledger writes is refused, not buffered.
    let long = format!(
        "{}\n",
        "x".repeat(chatledger::ledger::export::MAX_LINE_BYTES + 10)
    );
    assert_eq!(
        verify_export(
            &format!("{}{long}", exported.lines().next().expect("a line")),
            None
        ),
        1
    );
}
