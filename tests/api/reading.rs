//! Reading: paging both ways with honest cursors, the context window, summaries, the session list.

use serde_json::{Value, json};

use crate::helpers::{TestApp, json_ok};

async fn seqs(app: &TestApp, path: &str) -> (Vec<i64>, Value) {
    let page = json_ok(app.get(path).await).await;
    let seqs = page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    (seqs, page)
}

async fn fill(app: &TestApp, session: &str, count: usize) {
    let messages: Vec<Value> = (0..count)
        .map(|i| json!({"role": "user", "content": format!("m{}", i + 1)}))
        .collect();
    for chunk in messages.chunks(100) {
        let response = app
            .post_json(
                &format!("/v1/sessions/{session}/messages"),
                &json!({"messages": chunk}),
            )
            .await;
        assert_eq!(response.status(), 201);
    }
}

#[tokio::test]
async fn ascending_pages_carry_a_cursor_exactly_while_entries_follow() {
    let app = TestApp::spawn().await;
    fill(&app, "pages", 250).await;
    let (first, page) = seqs(&app, "/v1/sessions/pages/messages?limit=100").await;
    assert_eq!(first, (1..=100).collect::<Vec<_>>());
    assert_eq!(page["next_after_seq"], 100);
    assert_eq!(page["last_seq"], 250);
    assert_eq!(page["session_id"], "pages");
    assert!(page.get("next_before_seq").is_none());
    let (_, page) = seqs(&app, "/v1/sessions/pages/messages?after_seq=100&limit=100").await;
    assert_eq!(page["next_after_seq"], 200);
    let (last, page) = seqs(&app, "/v1/sessions/pages/messages?after_seq=200&limit=100").await;
    assert_eq!(last, (201..=250).collect::<Vec<_>>());
    assert_eq!(page["next_after_seq"], Value::Null);

    // A page that ends exactly at the head has no cursor; one that ends before it does.
    let (_, page) = seqs(&app, "/v1/sessions/pages/messages?after_seq=150&limit=100").await;
    assert_eq!(page["next_after_seq"], Value::Null);
    let (_, page) = seqs(&app, "/v1/sessions/pages/messages?after_seq=149&limit=100").await;
    assert_eq!(page["next_after_seq"], 249);
    let (beyond, page) = seqs(&app, "/v1/sessions/pages/messages?after_seq=900").await;
    assert!(beyond.is_empty());
    assert_eq!(page["next_after_seq"], Value::Null);
    let (default_page, _) = seqs(&app, "/v1/sessions/pages/messages").await;
    assert_eq!(default_page.len(), 100, "default limit is 100");
}

#[tokio::test]
async fn descending_pages_walk_back_from_the_head() {
    let app = TestApp::spawn().await;
    fill(&app, "back", 25).await;
    let (first, page) = seqs(&app, "/v1/sessions/back/messages?order=desc&limit=10").await;
    assert_eq!(first, (16..=25).rev().collect::<Vec<_>>());
    assert_eq!(page["next_before_seq"], 16);
    assert!(page.get("next_after_seq").is_none());
    let (second, page) = seqs(
        &app,
        "/v1/sessions/back/messages?order=desc&limit=10&before_seq=16",
    )
    .await;
    assert_eq!(second, (6..=15).rev().collect::<Vec<_>>());
    assert_eq!(page["next_before_seq"], 6);
    let (third, page) = seqs(
        &app,
        "/v1/sessions/back/messages?order=desc&limit=10&before_seq=6",
    )
    .await;
    assert_eq!(third, vec![5, 4, 3, 2, 1]);
    assert_eq!(page["next_before_seq"], Value::Null);
    let (exact, page) = seqs(
        &app,
        "/v1/sessions/back/messages?order=desc&limit=5&before_seq=6",
    )
    .await;
    assert_eq!(exact, vec![5, 4, 3, 2, 1]);
    assert_eq!(
        page["next_before_seq"],
        Value::Null,
        "a full page reaching seq 1 has no cursor"
    );
}

#[tokio::test]
async fn the_context_window_is_the_last_messages_after_the_latest_reset() {
    let app = TestApp::spawn().await;
    fill(&app, "ctx", 30).await;
    let (window, context) = seqs(&app, "/v1/sessions/ctx/context").await;
    assert_eq!(context["context_start_seq"], 0);
    assert_eq!(
        window,
        (1..=30).collect::<Vec<_>>(),
        "default limit 50 covers all 30"
    );
    let (window, _) = seqs(&app, "/v1/sessions/ctx/context?limit=20").await;
    assert_eq!(
        window,
        (11..=30).collect::<Vec<_>>(),
        "the last 20, ascending"
    );

    assert_eq!(
        app.post_json("/v1/sessions/ctx/reset", &json!({}))
            .await
            .status(),
        201
    );
    fill(&app, "ctx", 3).await;
    let context = json_ok(app.get("/v1/sessions/ctx/context?limit=20").await).await;
    assert_eq!(context["context_start_seq"], 31);
    assert_eq!(context["last_seq"], 34);
    let contents: Vec<&str> = context["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["content"].as_str().expect("text"))
        .collect();
    assert_eq!(contents, ["m1", "m2", "m3"]);
    // The full history, resets included, stays readable.
    assert_eq!(app.all_entries("ctx").await.len(), 34);
}

#[tokio::test]
async fn the_summary_reports_head_counts_and_times_of_first_and_last_entry() {
    let app = TestApp::spawn().await;
    let first = app
        .append("sum", &[("user", "a"), ("assistant", "b")])
        .await;
    app.post_json("/v1/sessions/sum/reset", &json!({})).await;
    let last = app.append("sum", &[("user", "c")]).await;
    let summary = json_ok(app.get("/v1/sessions/sum").await).await;
    assert_eq!(
        summary,
        json!({
            "session_id": "sum",
            "created_at": first["entries"][0]["created_at"],
            "updated_at": last["entries"][0]["created_at"],
            "last_seq": 4,
            "head_hash": last["head_hash"],
            "message_count": 3,
            "context_start_seq": 3,
            "closed": false,
            "holds": [],
        })
    );
}

#[tokio::test]
async fn sessions_are_listed_in_byte_order_with_keyset_pages() {
    let app = TestApp::spawn().await;
    let ids = ["b", "B", "a", "A-1", "_x", "0", "a.b", "a:b", "a@b", "z"];
    for id in ids {
        app.append(id, &[("user", "hi")]).await;
    }
    let mut expected: Vec<&str> = ids.to_vec();
    expected.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));

    let mut listed = Vec::new();
    let mut path = "/v1/sessions?limit=3".to_owned();
    loop {
        let page = json_ok(app.get(&path).await).await;
        let sessions = page["sessions"].as_array().expect("sessions");
        assert!(sessions.len() <= 3);
        listed.extend(
            sessions
                .iter()
                .map(|s| s["session_id"].as_str().expect("id").to_owned()),
        );
        assert_eq!(sessions[0]["last_seq"], 1);
        match page["next_after"].as_str() {
            Some(after) => path = format!("/v1/sessions?limit=3&after={after}"),
            None => break,
        }
    }
    assert_eq!(listed, expected);
    let everything = json_ok(app.get("/v1/sessions?limit=10").await).await;
    assert_eq!(
        everything["next_after"],
        Value::Null,
        "an exactly full last page has no cursor"
    );
}
