//! Appending: round trips, expected_seq, idempotency, the hash chain, instances and restarts.

use chatledger::ledger::Timestamp;
use chatledger::ledger::hash::{EntryHeader, GENESIS_HASH, entry_hash, payload_digest};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, json_ok};

/// Recomputes every payload digest and hash from the entries as returned, independently of the
/// SQL that chained them.
fn assert_chain_verifies(tenant: &str, session: &str, entries: &[Value]) {
    let mut prev = GENESIS_HASH.to_vec();
    for (index, entry) in entries.iter().enumerate() {
        assert_eq!(entry["seq"], json!(index as i64 + 1));
        let salt = hex::decode(entry["salt"].as_str().expect("salt")).expect("hex salt");
        assert_eq!(salt.len(), 16);
        let metadata = entry["metadata"].as_object().expect("metadata object");
        let content = (!entry["content"].is_null()).then_some(&entry["content"]);
        let digest = payload_digest(&salt, content, metadata);
        assert_eq!(
            entry["payload_digest"],
            json!(hex::encode(digest)),
            "payload digest of seq {}",
            index + 1
        );
        assert_eq!(entry["prev_hash"], json!(hex::encode(&prev)));
        let header = EntryHeader {
            tenant,
            session_id: session,
            seq: entry["seq"].as_i64().expect("seq"),
            kind: entry["kind"].as_str().expect("kind"),
            role: entry["role"].as_str(),
            created_at: Timestamp::parse_exact(entry["created_at"].as_str().expect("created_at"))
                .expect("the API's time format"),
            idempotency_key: entry["idempotency_key"].as_str(),
            author: entry["author"].as_str().expect("author"),
            payload_digest: &digest,
        };
        let hash = entry_hash(&prev, &header).to_vec();
        assert_eq!(
            entry["hash"],
            json!(hex::encode(&hash)),
            "hash of seq {}",
            index + 1
        );
        prev = hash;
    }
}

#[tokio::test]
async fn unicode_text_and_structured_content_round_trip_exactly() {
    let app = TestApp::spawn().await;
    let texts = [
        "plain ascii",
        "Grüße, 東京, مرحبا, שלום, Привет 👩🏽‍💻🇪🇺",
        "e\u{301} (combining) vs \u{e9} (precomposed)",
        "line\u{2028}separator, zero\u{200b}width, bidi\u{202e}override, tab\tnewline\n",
        "quotes \" and backslash \\ and control \u{1}\u{1f}",
        "",
    ];
    let structured = json!([
        {"type": "text", "text": "Your order 8892 has shipped."},
        "a bare string block",
        {"type": "tool_use", "id": "call_1", "input": {"n": 9007199254740991_u64, "x": -0.5, "nested": [true, null, {"k": "v"}]}}
    ]);
    let metadata = json!({"model": "gpt-x", "tool_calls": [], "ünïcödé key": "värde", "n": 1.5});
    let mut messages: Vec<Value> = texts
        .iter()
        .map(|text| json!({"role": "user", "content": text}))
        .collect();
    messages.push(json!({"role": "assistant", "content": structured, "metadata": metadata}));
    messages.push(json!({"role": "tool", "content": []}));
    messages.push(json!({"role": "system", "content": "sys"}));

    let response = app
        .post_json(
            "/v1/sessions/unicode-1/messages",
            &json!({"messages": messages}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let appended: Value = response.json().await.expect("json");
    assert_eq!(appended["first_seq"], 1);
    assert_eq!(appended["last_seq"], json!(messages.len()));

    let entries = app.all_entries("unicode-1").await;
    assert_eq!(entries.len(), messages.len());
    for (entry, sent) in entries.iter().zip(&messages) {
        assert_eq!(entry["kind"], "message");
        assert_eq!(entry["role"], sent["role"]);
        assert_eq!(entry["content"], sent["content"]);
        if let Value::String(text) = &sent["content"] {
            assert_eq!(
                entry["content"].as_str(),
                Some(text.as_str()),
                "text returned byte for byte"
            );
        }
        assert_eq!(
            entry["metadata"],
            sent.get("metadata").cloned().unwrap_or(json!({}))
        );
        assert_eq!(entry["author"], json!(app.database.writer_key_id));
        assert_eq!(entry["idempotency_key"], Value::Null);
    }
    assert_chain_verifies(&app.database.tenant, "unicode-1", &entries);
}

#[tokio::test]
async fn appends_return_contiguous_seqs_hashes_and_microsecond_utc_times() {
    let app = TestApp::spawn().await;
    let first = app
        .append("s-1", &[("user", "hi"), ("assistant", "hello")])
        .await;
    let second = app.append("s-1", &[("user", "again")]).await;
    assert_eq!(
        (first["first_seq"].as_i64(), first["last_seq"].as_i64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        (second["first_seq"].as_i64(), second["last_seq"].as_i64()),
        (Some(3), Some(3))
    );
    assert_eq!(first["session_id"], "s-1");
    assert_eq!(first["head_hash"], first["entries"][1]["hash"]);
    let times: Vec<String> = [&first, &second]
        .iter()
        .flat_map(|body| body["entries"].as_array().expect("entries").iter())
        .map(|entry| entry["created_at"].as_str().expect("created_at").to_owned())
        .collect();
    for time in &times {
        // 2026-11-21T10:15:30.123456Z
        assert_eq!(time.len(), 27, "{time}");
        assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
        chrono::DateTime::parse_from_rfc3339(time).expect("RFC 3339");
    }
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "created_at never decreases: {times:?}"
    );

    let entries = app.all_entries("s-1").await;
    assert_eq!(entries.len(), 3);
    assert_chain_verifies(&app.database.tenant, "s-1", &entries);
    let summary = json_ok(app.get("/v1/sessions/s-1").await).await;
    assert_eq!(summary["head_hash"], second["head_hash"]);
    assert_eq!(summary["last_seq"], 3);
}

#[tokio::test]
async fn expected_seq_must_equal_the_last_seq_or_nothing_is_written() {
    let app = TestApp::spawn().await;
    let path = "/v1/sessions/occ/messages";
    let turn = |expected: i64| json!({"expected_seq": expected, "messages": [{"role": "user", "content": "x"}]});

    // A missing session has last seq 0.
    let problem = assert_problem(app.post_json(path, &turn(3)).await, 409, "seq_conflict").await;
    assert_eq!(problem["current_seq"], 0);
    assert_problem(app.get("/v1/sessions/occ").await, 404, "session_not_found").await;

    assert_eq!(app.post_json(path, &turn(0)).await.status(), 201);
    assert_eq!(app.post_json(path, &turn(1)).await.status(), 201);

    for stale in [0, 1, 3, 100] {
        let problem =
            assert_problem(app.post_json(path, &turn(stale)).await, 409, "seq_conflict").await;
        assert_eq!(problem["current_seq"], 2, "expected_seq {stale}");
    }
    let summary = json_ok(app.get("/v1/sessions/occ").await).await;
    assert_eq!(
        summary["last_seq"], 2,
        "a too-high expected_seq leaves no gap and writes nothing"
    );

    // Without expected_seq the batch goes to the end.
    let blind = app
        .post_json(
            path,
            &json!({"messages": [{"role": "user", "content": "y"}]}),
        )
        .await;
    assert_eq!(blind.json::<Value>().await.expect("json")["first_seq"], 3);
}

#[tokio::test]
async fn an_idempotent_retry_returns_the_original_response_even_after_the_session_grew() {
    let app = TestApp::spawn().await;
    let path = "/v1/sessions/idem/messages";
    let body = json!({"expected_seq": 0, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]});
    let first = app.post_with_key(path, "turn-1", &body).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let original: Value = first.json().await.expect("json");

    app.append("idem", &[("user", "later")]).await;

    // Same key, same body with its keys in another order: replayed, although expected_seq is stale.
    let reordered: Value = serde_json::from_str(
        r#"{"messages": [{"content": "q", "role": "user"}, {"role": "assistant", "content": "a"}], "expected_seq": 0}"#,
    )
    .expect("json");
    assert_replayed(
        app.post_with_key(path, "turn-1", &reordered).await,
        &original,
    )
    .await;
    assert_replayed(app.post_with_key(path, "turn-1", &body).await, &original).await;

    // An explicit default is another body in RFC 8785 form.
    let spelled_out = json!({"expected_seq": 0, "messages": [{"role": "user", "content": "q", "metadata": {}}, {"role": "assistant", "content": "a"}]});
    assert_problem(
        app.post_with_key(path, "turn-1", &spelled_out).await,
        422,
        "idempotency_key_reused",
    )
    .await;

    let entries = app.all_entries("idem").await;
    assert_eq!(entries.len(), 3, "the retry wrote nothing");
    assert_eq!(entries[0]["idempotency_key"], "turn-1");
    assert_eq!(entries[1]["idempotency_key"], "turn-1");
    assert_eq!(entries[2]["idempotency_key"], Value::Null);

    // Same key, another body or endpoint: refused, nothing written.
    let other = json!({"messages": [{"role": "user", "content": "different"}]});
    assert_problem(
        app.post_with_key(path, "turn-1", &other).await,
        422,
        "idempotency_key_reused",
    )
    .await;
    assert_problem(
        app.post_with_key("/v1/sessions/idem/reset", "turn-1", &json!({}))
            .await,
        422,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(app.all_entries("idem").await.len(), 3);

    // The same key in another session is independent.
    assert_eq!(
        app.post_with_key("/v1/sessions/idem-2/messages", "turn-1", &body)
            .await
            .status(),
        201
    );
}

async fn assert_replayed(response: reqwest::Response, original: &Value) {
    assert_eq!(response.status(), 201);
    assert_eq!(
        response
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let replayed: Value = response.json().await.expect("json");
    assert_eq!(&replayed, original);
}

#[tokio::test]
async fn a_request_refused_with_a_conflict_does_not_consume_its_idempotency_key() {
    let app = TestApp::spawn().await;
    app.append("k", &[("user", "one")]).await;
    let stale = json!({"expected_seq": 0, "messages": [{"role": "user", "content": "two"}]});
    assert_problem(
        app.post_with_key("/v1/sessions/k/messages", "key-a", &stale)
            .await,
        409,
        "seq_conflict",
    )
    .await;
    let fresh = json!({"expected_seq": 1, "messages": [{"role": "user", "content": "two"}]});
    let response = app
        .post_with_key("/v1/sessions/k/messages", "key-a", &fresh)
        .await;
    assert_eq!(response.status(), 201);
    assert!(response.headers().get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn reset_appends_a_context_reset_and_moves_the_context_window() {
    let app = TestApp::spawn().await;
    assert_problem(
        app.post_json("/v1/sessions/r/reset", &json!({})).await,
        404,
        "session_not_found",
    )
    .await;
    app.append("r", &[("user", "a"), ("assistant", "b")]).await;
    let reset = app
        .post_json(
            "/v1/sessions/r/reset",
            &json!({"metadata": {"reason": "new topic"}}),
        )
        .await;
    assert_eq!(reset.status(), 201);
    assert_eq!(reset.json::<Value>().await.expect("json")["first_seq"], 3);
    let context = json_ok(app.get("/v1/sessions/r/context").await).await;
    assert_eq!(context["context_start_seq"], 3);
    assert_eq!(
        context["entries"],
        json!([]),
        "a window ending in a reset is empty"
    );

    // A reset always appends, even right after another; with expected_seq it is checked too.
    assert_eq!(
        app.post_json("/v1/sessions/r/reset", &json!({"expected_seq": 3}))
            .await
            .status(),
        201
    );
    assert_problem(
        app.post_json("/v1/sessions/r/reset", &json!({"expected_seq": 3}))
            .await,
        409,
        "seq_conflict",
    )
    .await;
    app.append("r", &[("user", "c")]).await;

    let entries = app.all_entries("r").await;
    let kinds: Vec<&str> = entries
        .iter()
        .map(|entry| entry["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        [
            "message",
            "message",
            "context_reset",
            "context_reset",
            "message"
        ]
    );
    assert_eq!(entries[2]["role"], Value::Null);
    assert_eq!(entries[2]["content"], Value::Null);
    assert_eq!(entries[2]["metadata"], json!({"reason": "new topic"}));
    assert_chain_verifies(&app.database.tenant, "r", &entries);

    let summary = json_ok(app.get("/v1/sessions/r").await).await;
    assert_eq!(summary["message_count"], 3);
    assert_eq!(summary["context_start_seq"], 4);
    let context = json_ok(app.get("/v1/sessions/r/context").await).await;
    assert_eq!(context["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(context["entries"][0]["content"], "c");
}

#[tokio::test]
async fn two_instances_on_one_database_continue_the_same_session() {
    let first = TestApp::spawn().await;
    let second = TestApp::spawn_on(first.database.clone()).await;
    for turn in 0..6 {
        let app = if turn % 2 == 0 { &first } else { &second };
        let body = json!({"expected_seq": turn, "messages": [{"role": "user", "content": format!("turn {turn}")}]});
        let response = app.post_json("/v1/sessions/shared/messages", &body).await;
        assert_eq!(response.status(), 201, "turn {turn}");
    }
    let from_first = first.all_entries("shared").await;
    let from_second = second.all_entries("shared").await;
    assert_eq!(from_first, from_second);
    let contents: Vec<&str> = from_first
        .iter()
        .map(|entry| entry["content"].as_str().expect("text"))
        .collect();
    assert_eq!(
        contents,
        ["turn 0", "turn 1", "turn 2", "turn 3", "turn 4", "turn 5"]
    );
}

#[tokio::test]
async fn a_new_instance_after_a_kill_sees_every_acknowledged_write() {
    let app = TestApp::spawn().await;
    let mut acknowledged = Vec::new();
    for turn in 0..10 {
        let body = app
            .append(
                "survivor",
                &[
                    ("user", &format!("u{turn}")),
                    ("assistant", &format!("a{turn}")),
                ],
            )
            .await;
        acknowledged.push(body["head_hash"].clone());
    }
    let database = app.database.clone();
    app.kill().await;

    let restarted = TestApp::spawn_on(database).await;
    let entries = restarted.all_entries("survivor").await;
    assert_eq!(entries.len(), 20);
    for (turn, head) in acknowledged.iter().enumerate() {
        assert_eq!(&entries[turn * 2 + 1]["hash"], head);
        assert_eq!(entries[turn * 2]["content"], json!(format!("u{turn}")));
    }
    assert_chain_verifies(&restarted.database.tenant, "survivor", &entries);
}
