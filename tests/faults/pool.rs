//! Scenario 3: pool exhaustion. A server with 4 connections, a 500 ms acquire timeout and a 2 s
//! statement timeout; a row lock held from outside makes every append to one session a slow
//! statement, while far more concurrent requests than connections arrive. Every answer comes
//! within its deadline, every refusal is a 503 with Retry-After, and once the lock is released
//! everything succeeds again.

use std::time::{Duration, Instant};

use futures::future::join_all;
use sqlx::{Connection, PgConnection};

use crate::checker::Outcome;
use crate::harness::{
    Api, Attempt, OnDatabase, SERIAL, Tally, Turn, activity, assert_clean_history,
    write_acknowledged,
};

const ACQUIRE: Duration = Duration::from_millis(500);
const STATEMENT: Duration = Duration::from_millis(2_000);
/// Waiting for a connection, then the longest statement, then a generous margin for a loaded
/// two-core machine: no request may take longer.
const DEADLINE: Duration = Duration::from_millis(500 + 2_000 + 2_000);
const BURST: u64 = 64;
const COLD: u64 = 4;

/// Sends every turn at once, one attempt each.
async fn burst(api: &Api, turns: &[Turn]) -> Vec<(Turn, Attempt, Option<serde_json::Value>)> {
    join_all(turns.iter().map(|turn| async move {
        let (attempt, body) = api.append(&turn.session, &turn.key, &turn.body(None)).await;
        (turn.clone(), attempt, body)
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_pool_exhaustion_answers_fast_503s_within_deadlines_and_recovers_fully() {
    let _serial = SERIAL.lock().await;
    let setup = OnDatabase::new("pool").await;
    let (database, logs) = (&setup.database, &setup.logs);
    let acquire_ms = ACQUIRE.as_millis().to_string();
    let statement_ms = STATEMENT.as_millis().to_string();
    let flags = [
        "--pool-size",
        "4",
        "--acquire-timeout-ms",
        &acquire_ms,
        "--statement-timeout-ms",
        &statement_ms,
    ];
    let server = setup.start(&flags).await;
    let api = setup.api(&server, Duration::from_secs(30));
    let mut sessions = vec!["hot".to_owned()];
    sessions.extend((0..COLD).map(|n| format!("cold-{n}")));

    let mut sent = Vec::new();
    for session in &sessions {
        let seeded = write_acknowledged(&api, &Turn::new(session, 0, 0, false, "")).await;
        sent.push(seeded.record);
    }

    // The slow statement: hot's row locked from outside, as the schema owner (row-level
    // security is forced, so the owner binds the tenant first).
    let mut locker = PgConnection::connect_with(&database.owner)
        .await
        .expect("owner connects");
    let mut lock = locker.begin().await.expect("begin");
    sqlx::query(
        "SELECT set_config('chatledger.tenant_id',
                           (SELECT id::text FROM tenants WHERE name = 'acme'), true)",
    )
    .execute(&mut *lock)
    .await
    .expect("bind tenant");
    let locked: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM sessions WHERE session_id = 'hot' FOR UPDATE")
            .fetch_all(&mut *lock)
            .await
            .expect("lock hot");
    assert_eq!(locked.len(), 1, "hot's row is locked");

    // Half the burst at the locked session, half spread over the others, plus reads.
    let turns: Vec<Turn> = (0..BURST)
        .map(|n| {
            let session = if n.is_multiple_of(2) {
                "hot".to_owned()
            } else {
                format!("cold-{}", n / 2 % COLD)
            };
            Turn::new(&session, 1 + n, 0, false, "")
        })
        .collect();
    let burst_began = Instant::now();
    let reads = join_all((0..16).map(|n| {
        let request = api
            .client
            .get(api.url(&format!("/v1/sessions/cold-{}/messages", n % COLD)))
            .bearer_auth(&api.keys.reader);
        api.attempt(request)
    }));
    let (results, reads) = tokio::join!(burst(&api, &turns), reads);
    let burst_took = burst_began.elapsed();
    lock.rollback().await.expect("release the lock");
    let released = Instant::now();

    // Full recovery: a new burst, hot included, all created at the first attempt.
    let fresh: Vec<Turn> = (0..16)
        .map(|n| Turn::new(&sessions[(n % 5) as usize], 100 + n, 0, false, ""))
        .collect();
    let recovery = burst(&api, &fresh).await;
    let first_hot_201 = recovery
        .iter()
        .filter(|(turn, attempt, _)| turn.session == "hot" && attempt.status() == Some(201))
        .map(|(_, attempt, _)| attempt.ended())
        .min();
    let recovery_statuses: Vec<Option<u16>> = recovery.iter().map(|(_, a, _)| a.status()).collect();

    // Every refused request again, with its key: written now, and never before (a 503 must not
    // have written anything).
    let mut retried_replays = 0;
    for (turn, attempt, body) in results.iter().chain(&recovery) {
        if attempt.status() == Some(201) {
            let receipt = body
                .as_ref()
                .and_then(crate::checker::Receipt::from_response)
                .expect("a 201 carries a receipt");
            sent.push(turn.record(Outcome::Acknowledged(receipt)));
            continue;
        }
        let again = write_acknowledged(&api, turn).await;
        retried_replays += again.attempts.iter().filter(|a| a.replayed()).count();
        sent.push(again.record);
    }

    let attempts: Vec<&Attempt> = results
        .iter()
        .map(|(_, a, _)| a)
        .chain(reads.iter().map(|(a, _)| a))
        .collect();
    let tally = Tally::of(attempts.iter().copied());
    let slowest = attempts.iter().map(|a| a.elapsed).max().expect("attempts");
    let hot = |session: &str| session == "hot";
    let latency_of = |hot_wanted: bool, status: u16| -> Vec<Duration> {
        results
            .iter()
            .filter(|(turn, a, _)| hot(&turn.session) == hot_wanted && a.status() == Some(status))
            .map(|(_, a, _)| a.elapsed)
            .collect()
    };
    let (hot_503, cold_503, cold_201) = (
        latency_of(true, 503),
        latency_of(false, 503),
        latency_of(false, 201),
    );
    let owner = database.owner_pool().await;
    let after = activity(&owner, database.name()).await;
    println!(
        "FAULTS scenario 3 (pool exhaustion): pool 4, acquire {ACQUIRE:?}, statement \
         {STATEMENT:?}; {BURST} appends + {} reads at once, answered in {burst_took:.2?}: {} \
         created, {} proper 503, {} other; slowest answer {slowest:.2?} (deadline \
         {DEADLINE:?}); hot: {} x 503, \
         slowest {:.2?}; other sessions: {} x 201, {} x 503, slowest 503 {:.2?}; after release: \
         {:?}, first hot append created {:.2?} after the release; {} refused appends retried with \
         their keys, {retried_replays} of them replays; {} ERROR log lines",
        reads.len(),
        tally.created,
        tally.unavailable,
        tally.attempts - tally.created - tally.unavailable,
        hot_503.len(),
        hot_503.iter().max().copied().unwrap_or_default(),
        cold_201.len(),
        cold_503.len(),
        cold_503.iter().max().copied().unwrap_or_default(),
        recovery_statuses,
        first_hot_201
            .map(|at| at.saturating_duration_since(released))
            .unwrap_or_default(),
        results.len() - cold_201.len(),
        logs.errors()
    );
    assert!(
        slowest <= DEADLINE,
        "a request outlived its deadline: {slowest:?}"
    );
    let improper: Vec<_> = attempts
        .iter()
        .filter(|a| a.status() != Some(201) && a.status() != Some(200) && !a.is_proper_503())
        .map(|a| a.answer.to_string())
        .collect();
    assert!(
        improper.is_empty(),
        "every refusal is a 503 unavailable with Retry-After: {improper:?}"
    );
    assert_eq!(
        hot_503.len() as u64,
        BURST / 2,
        "no append to the locked session succeeded"
    );
    assert!(
        recovery_statuses.iter().all(|status| *status == Some(201)),
        "after the release every request succeeds: {recovery_statuses:?}"
    );
    assert_eq!(retried_replays, 0, "a request answered 503 wrote nothing");
    assert_eq!(after.idle_in_transaction, 0, "{after:?}");

    assert_clean_history(&api, &sessions, &sent).await;
    assert!(server.terminate().await.success());
}
