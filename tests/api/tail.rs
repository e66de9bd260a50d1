//! The live tail (API.md "Live tail"): backlog and live entries as Server-Sent Events, across
//! server processes, through cuts of the follower's connection and of the listener's.

use std::sync::Arc;
use std::time::Duration;

use chatledger::auth::KeyRole;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_KEY, TestApp, TestDatabase, assert_problem, content_type, json_ok, superuser,
};
use crate::testbin::{Logs, Server, Store, TempDir};

/// One server-sent event.
#[derive(Debug, Clone)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

impl SseEvent {
    fn entry(&self) -> Value {
        serde_json::from_str(&self.data).expect("entry JSON")
    }

    fn seq(&self) -> i64 {
        self.entry()["seq"].as_i64().expect("seq")
    }
}

/// An open event stream, parsed as it arrives.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
    comments: usize,
}

impl EventStream {
    /// Opens `GET /v1/sessions/{session}/events` on `base` with `key`; panics unless 200.
    async fn open(base: &str, key: &str, session: &str, query: &str, last_id: Option<i64>) -> Self {
        let response = request(base, key, session, query, last_id).await;
        assert_eq!(response.status(), StatusCode::OK, "the stream opens");
        let content_type = content_type(&response);
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            response,
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event, None when the stream ended cleanly; panics on a broken stream.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: None,
                    data: String::new(),
                };
                let mut fields = 0;
                for line in block.lines().filter(|line| !line.is_empty()) {
                    if line.starts_with(':') {
                        self.comments += 1;
                        continue;
                    }
                    let (name, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                    fields += 1;
                    match name {
                        "id" => event.id = Some(value),
                        "event" => event.event = Some(value),
                        "data" => event.data.push_str(&value),
                        _ => {}
                    }
                }
                if fields > 0 {
                    return Some(event);
                }
                continue;
            }
            match self
                .response
                .chunk()
                .await
                .expect("the stream is not broken")
            {
                Some(chunk) => self
                    .buffer
                    .push_str(std::str::from_utf8(&chunk).expect("UTF-8")),
                None => return None,
            }
        }
    }

    /// The next event within `limit`.
    async fn next_within(&mut self, limit: Duration) -> SseEvent {
        tokio::time::timeout(limit, self.next())
            .await
            .expect("an event arrives in time")
            .expect("the stream goes on")
    }
}

async fn request(
    base: &str,
    key: &str,
    session: &str,
    query: &str,
    last_id: Option<i64>,
) -> reqwest::Response {
    // No overall timeout: a stream lasts as long as the test wants it.
    let mut request = reqwest::Client::new()
        .get(format!("{base}/v1/sessions/{session}/events{query}"))
        .bearer_auth(key);
    if let Some(id) = last_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    request.send().await.expect("request sent")
}

/// Appends `count` messages to `session` through `app`, returning the new last seq.
async fn append_n(app: &TestApp, session: &str, count: usize, label: &str) -> i64 {
    let messages: Vec<Value> = (0..count)
        .map(|i| json!({"role": "user", "content": format!("{label} {i}")}))
        .collect();
    let response = app
        .post_json(
            &format!("/v1/sessions/{session}/messages"),
            &json!({ "messages": messages }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    body["last_seq"].as_i64().expect("last_seq")
}

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_tail_sends_the_backlog_then_new_entries_resets_and_erasures_as_entries() {
    let app = TestApp::spawn().await;
    let reader = app.database.reader_key.clone();
    append_n(&app, "t-1", 3, "before").await;
    let mut stream = EventStream::open(&app.address, &reader, "t-1", "?after_seq=1", None).await;
    for expected in [2, 3] {
        let event = stream.next_within(WAIT).await;
        assert_eq!(event.id.as_deref(), Some(expected.to_string().as_str()));
        assert_eq!(event.event.as_deref(), Some("entry"));
        assert_eq!(event.seq(), expected);
    }
    append_n(&app, "t-1", 1, "live").await;
    let live = stream.next_within(WAIT).await.entry();
    assert_eq!(
        (live["seq"].as_i64(), live["content"].as_str()),
        (Some(4), Some("live 0"))
    );
    let stored = app.all_entries("t-1").await;
    assert_eq!(
        live, stored[3],
        "the event is the entry as a read returns it"
    );

    let reset = app.post_json("/v1/sessions/t-1/reset", &json!({})).await;
    assert_eq!(reset.status(), StatusCode::CREATED);
    let reset = stream.next_within(WAIT).await.entry();
    assert_eq!(
        (reset["seq"].as_i64(), reset["kind"].as_str()),
        (Some(5), Some("context_reset"))
    );

    let erased = app
        .request_as(
            reqwest::Method::POST,
            "/v1/sessions/t-1/erasure",
            Some(&app.database.auditor_key),
        )
        .json(&json!({"reason": "test", "through_seq": 2}))
        .send()
        .await
        .expect("erasure sent");
    assert_eq!(erased.status(), StatusCode::CREATED);
    let erasure = stream.next_within(WAIT).await.entry();
    assert_eq!(
        (erasure["seq"].as_i64(), erasure["kind"].as_str()),
        (Some(6), Some("erasure"))
    );
}

#[tokio::test]
async fn a_retention_erasure_reaches_open_tails_as_an_entry() {
    let app = TestApp::spawn().await;
    let last = append_n(&app, "kept-short", 2, "expires").await;
    let query = format!("?after_seq={last}");
    let mut stream = EventStream::open(
        &app.address,
        &app.database.reader_key,
        "kept-short",
        &query,
        None,
    )
    .await;
    let policy = app
        .request_as(
            reqwest::Method::PUT,
            "/v1/admin/tenants/acme/policy",
            Some(ADMIN_KEY),
        )
        .json(&json!({"retention_days": 1, "log_writer_reads": false}))
        .send()
        .await
        .expect("policy sent");
    assert_eq!(policy.status(), StatusCode::OK);
    let later = chrono::Utc::now() + chrono::Duration::days(3);
    let swept = chatledger::ledger::retention::sweep(&app.pool, later, None, false)
        .await
        .expect("sweep");
    assert_eq!(swept.erased_entries, 2);
    let erasure = stream.next_within(WAIT).await.entry();
    assert_eq!(
        (
            erasure["seq"].as_i64(),
            erasure["kind"].as_str(),
            erasure["author"].as_str()
        ),
        (Some(last + 1), Some("erasure"), Some("retention"))
    );
}

#[tokio::test]
async fn last_event_id_wins_over_after_seq_and_must_be_a_seq() {
    let app = TestApp::spawn().await;
    let reader = app.database.reader_key.clone();
    append_n(&app, "t-2", 5, "m").await;
    let mut stream = EventStream::open(&app.address, &reader, "t-2", "?after_seq=1", Some(3)).await;
    assert_eq!(stream.next_within(WAIT).await.seq(), 4);
    assert_eq!(stream.next_within(WAIT).await.seq(), 5);

    let bad = reqwest::Client::new()
        .get(app.url("/v1/sessions/t-2/events"))
        .bearer_auth(&reader)
        .header("Last-Event-ID", "seven")
        .send()
        .await
        .expect("sent");
    assert_problem(bad, 400, "invalid_parameter").await;
    let bad = request(&app.address, &reader, "t-2", "?after_seq=-1", None).await;
    assert_problem(bad, 400, "invalid_parameter").await;
    let bad = request(&app.address, &reader, "bad%20id", "", None).await;
    assert_problem(bad, 400, "invalid_session_id").await;
    let unknown = request(&app.address, "not-a-key", "t-2", "", None).await;
    assert_problem(unknown, 401, "unauthenticated").await;
}

#[tokio::test]
async fn a_tail_on_a_session_that_does_not_exist_yet_waits_for_its_first_entry() {
    let app = TestApp::spawn().await;
    let reader = app.database.reader_key.clone();
    let mut stream = EventStream::open(&app.address, &reader, "t-new", "", None).await;
    append_n(&app, "t-new", 2, "first").await;
    assert_eq!(stream.next_within(WAIT).await.seq(), 1);
    assert_eq!(stream.next_within(WAIT).await.seq(), 2);
}

#[tokio::test]
async fn another_tenants_tail_on_the_same_session_id_waits_and_never_sees_this_tenants_entries() {
    let app = TestApp::spawn().await;
    let other_reader = app
        .database
        .tenant_with_key("globex", KeyRole::Reader)
        .await;
    let other_writer = app.database.key_for("globex", KeyRole::Writer).await;
    let mut theirs = EventStream::open(&app.address, &other_reader, "shared", "", None).await;
    let mut ours =
        EventStream::open(&app.address, &app.database.reader_key, "shared", "", None).await;
    append_n(&app, "shared", 3, "acme secret").await;
    for seq in 1..=3 {
        assert_eq!(
            ours.next_within(WAIT).await.seq(),
            seq,
            "this tenant's own tail"
        );
    }
    // The other tenant's first entry of its own session "shared" is the first thing its stream
    // sees: had any of acme's three entries leaked, they would have come first.
    let response = app
        .request_as(
            reqwest::Method::POST,
            "/v1/sessions/shared/messages",
            Some(&other_writer),
        )
        .json(&json!({"messages": [{"role": "user", "content": "globex own"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let first = theirs.next_within(WAIT).await.entry();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["content"], "globex own");
    append_n(&app, "shared", 1, "acme again").await;
    assert_eq!(ours.next_within(WAIT).await.seq(), 4);
    let nothing = tokio::time::timeout(Duration::from_millis(300), theirs.next()).await;
    assert!(
        nothing.is_err(),
        "the other tenant's stream stays quiet: {nothing:?}"
    );
}

#[tokio::test]
async fn the_101st_stream_of_a_key_is_429_and_a_closed_one_frees_its_slot() {
    let app = TestApp::spawn().await;
    let reader = app.database.reader_key.clone();
    let mut open = Vec::new();
    for _ in 0..100 {
        open.push(EventStream::open(&app.address, &reader, "t-cap", "", None).await);
    }
    let refused = request(&app.address, &reader, "t-cap", "", None).await;
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok()),
        Some("1")
    );
    assert_problem(refused, 429, "too_many_requests").await;
    // Another key of the tenant is not limited by this one's streams.
    let auditor =
        EventStream::open(&app.address, &app.database.auditor_key, "t-cap", "", None).await;
    drop(auditor);

    drop(open.pop());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = request(&app.address, &reader, "t-cap", "", None).await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn each_stream_writes_one_tail_access_record_when_opened() {
    let app = TestApp::spawn().await;
    append_n(&app, "t-log", 2, "m").await;
    let mut stream = EventStream::open(
        &app.address,
        &app.database.reader_key,
        "t-log",
        "?after_seq=1",
        None,
    )
    .await;
    assert_eq!(stream.next_within(WAIT).await.seq(), 2);
    let records = json_ok(
        app.request_as(
            reqwest::Method::GET,
            "/v1/audit/access?action=tail",
            Some(&app.database.auditor_key),
        )
        .send()
        .await
        .expect("sent"),
    )
    .await;
    let records = records["records"].as_array().expect("records").clone();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["session_id"], "t-log");
    assert_eq!(records[0]["role"], "reader");
    assert_eq!(records[0]["detail"]["after_seq"], 1);
    assert_eq!(records[0]["status"], 200);
}

#[tokio::test]
async fn entries_committed_while_the_listener_is_down_arrive_once_it_is_back() {
    let app = TestApp::spawn().await;
    let reader = app.database.reader_key.clone();
    append_n(&app, "t-down", 1, "before").await;
    let mut stream = EventStream::open(&app.address, &reader, "t-down", "", None).await;
    assert_eq!(stream.next_within(WAIT).await.seq(), 1);

    let admin = superuser(&app).await;
    let database = app.database.name().to_owned();
    // No new connection to this database until the entries are in: the listener cannot come
    // back meanwhile, while the app's pool keeps the connection it has.
    sqlx::query(&format!(
        r#"ALTER DATABASE "{database}" CONNECTION LIMIT 0"#
    ))
    .execute(&admin)
    .await
    .expect("limit connections");
    let terminated: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
          WHERE datname = $1 AND query LIKE 'LISTEN %' AND pg_terminate_backend(pid)",
    )
    .bind(&database)
    .fetch_all(&admin)
    .await
    .expect("terminate the listener");
    assert_eq!(terminated.len(), 1, "one listener connection per server");
    let last = append_n(&app, "t-down", 3, "while down").await;
    assert_eq!(last, 4);
    sqlx::query(&format!(
        r#"ALTER DATABASE "{database}" CONNECTION LIMIT -1"#
    ))
    .execute(&admin)
    .await
    .expect("allow connections");
    for seq in 2..=4 {
        assert_eq!(stream.next_within(WAIT).await.seq(), seq);
    }
    // The listener is back: a new entry arrives as usual.
    append_n(&app, "t-down", 1, "after").await;
    assert_eq!(stream.next_within(WAIT).await.seq(), 5);
    let listeners: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN %'",
    )
    .bind(&database)
    .fetch_one(&admin)
    .await
    .expect("count listeners");
    assert_eq!(listeners, 1);
}

/// `chatledger serve` on `database`, with the admin key in a file in `dir`.
async fn start_server(database: &TestDatabase, dir: &TempDir, extra: &[&str]) -> Server {
    let store = Store::External {
        url: database.owner_url.clone(),
        admin_key_file: dir.admin_key_file(ADMIN_KEY),
    };
    Server::start(&store, 0, extra, &Arc::new(Logs::default()))
        .await
        .expect("chatledger starts")
}

#[tokio::test]
async fn a_follower_cut_at_random_points_sees_every_entry_of_8_writers_on_2_servers_once_in_order()
{
    const WRITERS: usize = 8;
    const APPENDS: usize = 12;
    let database = TestDatabase::new().await;
    let dir = TempDir::new("tail");
    let servers = [
        start_server(&database, &dir, &[]).await,
        start_server(&database, &dir, &[]).await,
    ];
    let addresses: Vec<String> = servers.iter().map(|s| s.address.clone()).collect();
    // Batches of one or two messages, so the total is known in advance.
    let batch = |writer: usize, append: usize| 1 + (writer + append) % 2;
    let total: i64 = (0..WRITERS)
        .flat_map(|w| (0..APPENDS).map(move |a| batch(w, a) as i64))
        .sum();

    let follower = {
        let addresses = addresses.clone();
        let key = database.reader_key.clone();
        tokio::spawn(async move {
            let mut seen: Vec<Value> = Vec::new();
            let mut connections = 0;
            while (seen.len() as i64) < total {
                let base = &addresses[connections % addresses.len()];
                connections += 1;
                let last = seen.last().map(|entry| entry["seq"].as_i64().expect("seq"));
                let mut stream = EventStream::open(base, &key, "busy", "", last).await;
                // Cut after a random number of events, dropping whatever else was buffered.
                let cut_after = 1 + rand::random::<u32>() % 9;
                for _ in 0..cut_after {
                    let event = stream.next_within(WAIT).await;
                    assert_eq!(event.id, Some(event.seq().to_string()));
                    seen.push(event.entry());
                    if seen.len() as i64 == total {
                        break;
                    }
                }
            }
            (seen, connections)
        })
    };

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let base = addresses[writer % 2].clone();
            let key = database.writer_key.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for append in 0..APPENDS {
                    let messages: Vec<Value> = (0..batch(writer, append))
                        .map(|i| json!({"role": "user", "content": format!("w{writer} a{append} m{i}")}))
                        .collect();
                    let response = client
                        .post(format!("{base}/v1/sessions/busy/messages"))
                        .bearer_auth(&key)
                        .json(&json!({ "messages": messages }))
                        .send()
                        .await
                        .expect("append sent");
                    assert_eq!(response.status(), StatusCode::CREATED);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let (seen, connections) = tokio::time::timeout(Duration::from_secs(120), follower)
        .await
        .expect("the follower catches up")
        .expect("follower");

    let seqs: Vec<i64> = seen
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "every entry once, in order"
    );
    assert!(connections > 2, "the follower was cut and resumed");
    let reader = TestApp::spawn_on(database.clone()).await;
    let stored = reader.all_entries("busy").await;
    assert_eq!(seen, stored, "each event is the stored entry");
    for server in servers {
        assert!(server.terminate().await.success());
    }
}

#[tokio::test]
async fn on_sigterm_open_streams_end_cleanly_and_the_server_exits() {
    let database = TestDatabase::new().await;
    let dir = TempDir::new("tail-term");
    let server = start_server(&database, &dir, &["--drain-timeout-ms", "60000"]).await;
    let app = TestApp::spawn_on(database.clone()).await;
    append_n(&app, "t-term", 1, "m").await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream =
            EventStream::open(&server.address, &database.reader_key, "t-term", "", None).await;
        assert_eq!(stream.next_within(WAIT).await.seq(), 1);
        streams.push(stream);
    }
    let exited = tokio::spawn(server.terminate());
    for mut stream in streams {
        // A clean end of the body, not a connection cut at the drain limit.
        let end = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the stream ends well before the drain limit");
        assert!(end.is_none(), "{end:?}");
    }
    assert!(exited.await.expect("exit status").success());
}

/// Revokes the test tenant's auditor key through the admin API.
async fn revoke_auditor_key(app: &TestApp) {
    let response = app
        .request_as(
            reqwest::Method::DELETE,
            &format!("/v1/admin/keys/{}", app.database.auditor_key_id),
            Some(ADMIN_KEY),
        )
        .send()
        .await
        .expect("revoke");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_revoked_keys_stream_ends_while_another_keys_stream_on_the_session_goes_on() {
    let app = TestApp::spawn().await;
    append_n(&app, "t-rev", 1, "m").await;
    let mut revoked =
        EventStream::open(&app.address, &app.database.auditor_key, "t-rev", "", None).await;
    let mut kept =
        EventStream::open(&app.address, &app.database.reader_key, "t-rev", "", None).await;
    assert_eq!(revoked.next_within(WAIT).await.seq(), 1);
    assert_eq!(kept.next_within(WAIT).await.seq(), 1);
    revoke_auditor_key(&app).await;
    append_n(&app, "t-rev", 1, "after the revocation").await;
    assert_eq!(kept.next_within(WAIT).await.seq(), 2);
    let end = tokio::time::timeout(WAIT, revoked.next())
        .await
        .expect("the revoked key's stream ends");
    assert!(
        end.is_none(),
        "a revoked key receives nothing more: {end:?}"
    );
}

#[tokio::test]
async fn a_revoked_keys_stream_on_a_quiet_session_ends_within_the_heartbeat() {
    let app = TestApp::spawn().await;
    append_n(&app, "t-quiet-rev", 1, "m").await;
    let mut revoked = EventStream::open(
        &app.address,
        &app.database.auditor_key,
        "t-quiet-rev",
        "",
        None,
    )
    .await;
    assert_eq!(revoked.next_within(WAIT).await.seq(), 1);
    revoke_auditor_key(&app).await;
    // Nothing is appended: the stream has no entry to check its key on.
    let end = tokio::time::timeout(WAIT, revoked.next())
        .await
        .expect("the revoked key's quiet stream ends");
    assert!(end.is_none(), "{end:?}");
}

#[tokio::test]
async fn a_quiet_stream_gets_a_comment_line_within_15_seconds_and_outlives_the_request_timeout() {
    let database = TestDatabase::new().await;
    let pool = database.runtime_pool().await;
    let settings = chatledger::http::HttpSettings {
        request_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let app = TestApp::spawn_configured(
        database,
        pool,
        chatledger::ledger::Limits::default(),
        settings,
        |state| state,
    )
    .await;
    let mut stream =
        EventStream::open(&app.address, &app.database.reader_key, "t-quiet", "", None).await;
    // Nothing to send for 15 s: the stream stays open, with a comment line meanwhile.
    let quiet = tokio::time::timeout(Duration::from_secs(15), stream.next()).await;
    assert!(quiet.is_err(), "no event on a quiet session: {quiet:?}");
    assert!(stream.comments >= 1, "a comment line within 15 s");
    append_n(&app, "t-quiet", 1, "late").await;
    assert_eq!(
        stream.next_within(WAIT).await.seq(),
        1,
        "well past the request timeout"
    );
}

#[tokio::test]
async fn waiting_streams_hold_no_database_connection() {
    let database = TestDatabase::new().await;
    let settings = chatledger::db::PoolSettings {
        max_connections: 2,
        ..Default::default()
    };
    let pool = chatledger::db::runtime_pool(&database.owner, &settings)
        .await
        .expect("a pool of two");
    let app = TestApp::spawn_with(database, pool, chatledger::ledger::Limits::default()).await;
    append_n(&app, "t-pool", 1, "m").await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut stream =
            EventStream::open(&app.address, &app.database.reader_key, "t-pool", "", None).await;
        assert_eq!(stream.next_within(WAIT).await.seq(), 1);
        streams.push(stream);
    }
    // Twenty streams wait on a pool of two, and the pool still serves.
    append_n(&app, "t-pool", 1, "still served").await;
    json_ok(app.get("/v1/sessions/t-pool").await).await;
    for stream in &mut streams {
        assert_eq!(stream.next_within(WAIT).await.seq(), 2);
    }
}
