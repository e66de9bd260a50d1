//! Scenario 1: writers append turns with idempotency keys while the server is SIGKILLed at random
//! moments and restarted on the same port; indeterminate requests are retried with the same key
//! and body until acknowledged. Afterwards every session reads back without an anomaly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{
    OnDatabase, Retry, SERIAL, Tally, Turn, Written, assert_clean_history, millis_between,
    write_turn,
};
use crate::testbin::free_port;

const WRITERS: u64 = 10;
const SESSIONS: u64 = 3;
const KILLS: usize = 4;
/// A bound only: the killer stops the writers long before they get there.
const MAX_TURNS: u64 = 20_000;
const RETRY: Retry = Retry {
    attempts: 400,
    deadline: Duration::from_secs(60),
    backoff: Duration::from_millis(40),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sigkill_under_load_loses_no_acknowledged_turn() {
    let _serial = SERIAL.lock().await;
    let setup = OnDatabase::new("sigkill").await;
    let logs = &setup.logs;
    let port = free_port();
    let mut server = setup.start_on(port).await;
    let api = setup.api(&server, Duration::from_secs(10));
    let sessions: Vec<String> = (0..SESSIONS).map(|n| format!("kill-{n}")).collect();

    // Even writers append with expected_seq, odd ones blindly.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (api, stop) = (api.clone(), stop.clone());
            let session = sessions[(writer % SESSIONS) as usize].clone();
            tokio::spawn(async move {
                let mut written: Vec<Written> = Vec::new();
                for turn in 0..MAX_TURNS {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let turn = Turn::new(&session, writer, turn, writer.is_multiple_of(2), "");
                    written.push(write_turn(&api, &turn, RETRY).await);
                }
                written
            })
        })
        .collect();

    let mut kills = 0;
    let mut restart_times = Vec::new();
    for _ in 0..KILLS {
        // Load shaping: let the writers run, then kill at a random moment.
        tokio::time::sleep(millis_between(300, 900)).await;
        server.kill().await;
        kills += 1;
        let down = Instant::now();
        tokio::time::sleep(millis_between(0, 300)).await;
        server = setup.start_on(port).await;
        restart_times.push(down.elapsed());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut written = Vec::new();
    for writer in writers {
        let turns = writer.await.expect("writer task");
        assert!(
            (turns.len() as u64) < MAX_TURNS,
            "a writer ran out of turns before the last kill: the load must outlast the faults"
        );
        written.extend(turns);
    }
    let load_time = started.elapsed();

    let unexpected: Vec<&String> = written.iter().flat_map(|w| &w.unexpected).collect();
    assert!(
        unexpected.is_empty(),
        "answers no retry can fix: {unexpected:?}"
    );
    let tally = Tally::of(written.iter().flat_map(|w| &w.attempts));
    let acknowledged = written.iter().filter(|w| w.acknowledged()).count();
    let unknown = written.len() - acknowledged;
    let retried = written.iter().filter(|w| w.attempts.len() > 1).count();
    println!(
        "FAULTS scenario 1 (SIGKILL): {WRITERS} writers on {SESSIONS} sessions for \
         {load_time:.1?}, {kills} SIGKILLs (down {restart_times:.2?} each until listening again); \
         {acknowledged} acknowledged turns, {unknown} unknown; {} attempts: {} without an answer, \
         {} 503, {} other 5xx, {} seq conflicts, {} idempotent replays; {retried} turns retried; \
         {} ERROR log lines",
        tally.attempts,
        tally.no_answer,
        tally.unavailable + tally.improper_503,
        tally.other_5xx,
        tally.conflicts,
        tally.replayed,
        logs.errors()
    );
    assert!(kills >= 3);
    assert_eq!(unknown, 0, "every turn is acknowledged in the end");
    assert_eq!(
        tally.other_5xx + tally.improper_503,
        0,
        "a killed peer is no reason for a 500 or a 503 without Retry-After"
    );

    let sent: Vec<_> = written.into_iter().map(|w| w.record).collect();
    let entries = assert_clean_history(&api, &sessions, &sent).await;
    assert_eq!(
        entries,
        2 * acknowledged,
        "every entry belongs to an acknowledged turn"
    );
    assert!(server.terminate().await.success());
}
