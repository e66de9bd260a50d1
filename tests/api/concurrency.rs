//! Many writers on one session at once: the ledger stays gapless, turns stay whole, every
//! acknowledged write is present exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::helpers::{TestApp, json_ok};

const TURNS_PER_WRITER: usize = 5;

/// One writer's turns: two messages each, with or without optimistic concurrency. Returns the
/// acknowledged (turn, first_seq) pairs and how many 409s it met.
async fn writer(
    app: Arc<TestApp>,
    barrier: Arc<Barrier>,
    id: usize,
    optimistic: bool,
) -> (Vec<(usize, i64)>, usize) {
    barrier.wait().await;
    let mut acknowledged = Vec::new();
    let mut conflicts = 0;
    for turn in 0..TURNS_PER_WRITER {
        let messages = json!([
            {"role": "user", "content": format!("w{id} t{turn} question"), "metadata": {"writer": id, "turn": turn, "part": 0}},
            {"role": "assistant", "content": format!("w{id} t{turn} answer"), "metadata": {"writer": id, "turn": turn, "part": 1}},
        ]);
        loop {
            let body = if optimistic {
                let summary = app
                    .get("/v1/sessions/hot/messages?order=desc&limit=1")
                    .await;
                let expected = if summary.status() == 404 {
                    0
                } else {
                    summary.json::<Value>().await.expect("json")["last_seq"]
                        .as_i64()
                        .expect("last_seq")
                };
                json!({"expected_seq": expected, "messages": messages})
            } else {
                json!({"messages": messages})
            };
            let response = app.post_json("/v1/sessions/hot/messages", &body).await;
            match response.status().as_u16() {
                201 => {
                    let body: Value = response.json().await.expect("json");
                    acknowledged.push((turn, body["first_seq"].as_i64().expect("first_seq")));
                    break;
                }
                409 if optimistic => conflicts += 1,
                status => panic!("writer {id}: unexpected status {status}"),
            }
        }
    }
    (acknowledged, conflicts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_optimistic_and_blind_writers_keep_one_session_gapless_and_turns_whole() {
    let app = Arc::new(TestApp::spawn().await);
    let (optimistic, blind) = (16, 16);
    let barrier = Arc::new(Barrier::new(optimistic + blind));
    let tasks: Vec<_> = (0..optimistic + blind)
        .map(|id| tokio::spawn(writer(app.clone(), barrier.clone(), id, id < optimistic)))
        .collect();
    let mut acknowledged: HashMap<(usize, usize), i64> = HashMap::new();
    let mut conflicts = 0;
    for (id, task) in tasks.into_iter().enumerate() {
        let (turns, met) = task.await.expect("writer task");
        conflicts += met;
        for (turn, first_seq) in turns {
            assert!(acknowledged.insert((id, turn), first_seq).is_none());
        }
    }
    let expected_turns = (optimistic + blind) * TURNS_PER_WRITER;
    assert_eq!(acknowledged.len(), expected_turns);

    let entries = app.all_entries("hot").await;
    let seqs: Vec<i64> = entries
        .iter()
        .map(|entry| entry["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=(expected_turns as i64 * 2)).collect::<Vec<_>>(),
        "seqs are 1..n without gaps"
    );

    let mut seen: HashMap<(usize, usize), i64> = HashMap::new();
    for pair in entries.chunks(2) {
        let (first, second) = (&pair[0]["metadata"], &pair[1]["metadata"]);
        assert_eq!(
            (first["part"].as_i64(), second["part"].as_i64()),
            (Some(0), Some(1)),
            "turn split: {pair:?}"
        );
        assert_eq!(
            (&first["writer"], &first["turn"]),
            (&second["writer"], &second["turn"]),
            "turns interleaved"
        );
        let key = (
            first["writer"].as_u64().expect("writer") as usize,
            first["turn"].as_u64().expect("turn") as usize,
        );
        assert!(
            seen.insert(key, pair[0]["seq"].as_i64().expect("seq"))
                .is_none(),
            "turn {key:?} stored twice"
        );
    }
    assert_eq!(
        seen, acknowledged,
        "every acknowledged turn is stored once, where its 201 said"
    );
    println!(
        "{} writers ({optimistic} optimistic, {blind} blind): {} turns, {} entries, {conflicts} seq conflicts retried",
        optimistic + blind,
        acknowledged.len(),
        entries.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_with_one_idempotency_key_write_once() {
    let app = Arc::new(TestApp::spawn().await);
    app.append("retry", &[("user", "before")]).await;
    let retries = 16;
    let barrier = Arc::new(Barrier::new(retries));
    let body = json!({"messages": [{"role": "user", "content": "pay 100"}, {"role": "assistant", "content": "done"}]});
    let tasks: Vec<_> = (0..retries)
        .map(|_| {
            let (app, barrier, body) = (app.clone(), barrier.clone(), body.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let response = app
                    .post_with_key("/v1/sessions/retry/messages", "payment-7", &body)
                    .await;
                assert_eq!(response.status(), 201);
                let replayed = response.headers().get("idempotent-replayed").is_some();
                (replayed, response.json::<Value>().await.expect("json"))
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    let originals = results.iter().filter(|(replayed, _)| !replayed).count();
    assert_eq!(originals, 1, "exactly one request wrote");
    assert!(
        results.iter().all(|(_, body)| body == &results[0].1),
        "every answer is the original one"
    );
    assert_eq!(results[0].1["first_seq"], 2);
    let entries = app.all_entries("retry").await;
    assert_eq!(entries.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_hanging_up_mid_append_leave_no_open_transaction_and_no_partial_turn() {
    let app = Arc::new(TestApp::spawn().await);
    app.append("hangup", &[("user", "start")]).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(2))
        .build()
        .expect("client");
    let turns = 40;
    let body = |turn: usize| {
        json!({"messages": [
            {"role": "user", "content": "x".repeat(50_000), "metadata": {"turn": turn, "part": 0}},
            {"role": "assistant", "content": "y".repeat(50_000), "metadata": {"turn": turn, "part": 1}},
        ]})
    };
    let tasks: Vec<_> = (0..turns)
        .map(|turn| {
            let (client, url, body) = (
                impatient.clone(),
                app.url("/v1/sessions/hangup/messages"),
                body(turn),
            );
            tokio::spawn(async move {
                client
                    .post(url)
                    .header("Idempotency-Key", format!("hangup-{turn}"))
                    .json(&body)
                    .send()
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut finished = 0;
    for task in tasks {
        finished += usize::from(task.await.expect("task"));
    }

    // Wait (bounded) until the server has finished every request it accepted.
    let owner = app.database.owner_pool().await;
    let database_name = app
        .database
        .owner
        .get_database()
        .expect("database name")
        .to_owned();
    let mut busy = i64::MAX;
    for _ in 0..200 {
        busy = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'chatledger' AND state <> 'idle'",
        )
        .bind(&database_name)
        .fetch_one(&owner)
        .await
        .expect("pg_stat_activity");
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(busy, 0, "no connection is left busy or idle in transaction");

    // Retrying every turn with its key either replays it (it was written) or writes it now.
    for turn in 0..turns {
        let response = app
            .post_with_key(
                "/v1/sessions/hangup/messages",
                &format!("hangup-{turn}"),
                &body(turn),
            )
            .await;
        assert_eq!(response.status(), 201);
    }
    let entries = app.all_entries("hangup").await;
    assert_eq!(
        entries.len(),
        1 + 2 * turns,
        "each turn present exactly once"
    );
    for pair in entries[1..].chunks(2) {
        assert_eq!(
            pair[0]["metadata"]["turn"], pair[1]["metadata"]["turn"],
            "no partial or interleaved turn"
        );
        assert_eq!(
            (
                pair[0]["metadata"]["part"].as_i64(),
                pair[1]["metadata"]["part"].as_i64()
            ),
            (Some(0), Some(1))
        );
    }
    let summary = json_ok(app.get("/v1/sessions/hangup").await).await;
    assert_eq!(summary["last_seq"], json!(entries.len()));
    println!("{turns} impatient appends, {finished} answered before the client gave up");
}
