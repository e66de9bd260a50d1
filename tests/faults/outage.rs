//! Scenario 2: the server on its embedded cluster, whose PostgreSQL is stopped with
//! `pg_ctl stop -m immediate` mid-load and started again. During the outage every request gets a
//! 503 `unavailable` with `Retry-After` within 5 s; afterwards appends succeed again without
//! restarting chatledger, and the history is clean.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{
    Api, Attempt, Keys, Retry, SERIAL, Tally, Turn, Written, assert_clean_history, spawn_writers,
    write_turn,
};
use crate::testbin::{Logs, Server, Store, TempDir, create_key, create_tenant};
use crate::testpg::{ClusterGuard, pg_ctl};

const WRITERS: u64 = 8;
const SESSIONS: u64 = 2;
/// The contract: an answer within the acquire timeout (2 s by default); 5 s is the bound.
const ANSWER_BOUND: Duration = Duration::from_secs(5);
const OUTAGE: Duration = Duration::from_secs(4);
const RETRY: Retry = Retry {
    attempts: 1_000,
    deadline: Duration::from_secs(90),
    backoff: Duration::from_millis(100),
};

async fn run(command: std::process::Command) -> std::process::Output {
    let output = tokio::process::Command::from(command)
        .output()
        .await
        .expect("pg_ctl runs");
    assert!(
        output.status.success(),
        "pg_ctl failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Creates tenant `acme` and a key of each role through the admin API.
pub(crate) async fn provision(api_base: &str, admin_key: &str) -> Keys {
    create_tenant(api_base, admin_key, "acme").await;
    let mut secrets = Vec::new();
    for role in ["writer", "reader", "auditor"] {
        secrets
            .push(create_key(api_base, admin_key, json!({"tenant": "acme", "role": role})).await);
    }
    let [writer, reader, auditor] = <[String; 3]>::try_from(secrets).expect("three keys");
    Keys {
        writer,
        reader,
        auditor,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_postgres_stopped_mid_load_answers_503_fast_and_recovers_without_a_restart() {
    let _serial = SERIAL.lock().await;
    let dir = TempDir::new("faults-outage");
    let data_dir = dir.path().join("data");
    let pg_dir = data_dir.join("pg");
    let _cluster = ClusterGuard(pg_dir.clone());
    let logs = Arc::new(Logs::default());
    let store = Store::Embedded {
        data_dir: data_dir.clone(),
    };
    let mut server = Server::start(&store, 0, &[], &logs)
        .await
        .expect("chatledger starts on its embedded cluster");
    let admin_key = std::fs::read_to_string(data_dir.join("admin.key")).expect("admin.key");
    let keys = provision(&server.address, admin_key.trim()).await;
    let api = Api::new(&server.address, keys, Duration::from_secs(30));
    let sessions: Vec<String> = (0..SESSIONS).map(|n| format!("outage-{n}")).collect();

    let stop = Arc::new(AtomicBool::new(false));
    // Load shaping: a steady trickle rather than a flood, so the outage is probed evenly.
    let writers = spawn_writers(&api, &sessions, WRITERS, &stop, RETRY, (10, 40));
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    let stopping = Instant::now();
    run(pg_ctl(&pg_dir, &["stop", "-m", "immediate", "-w"])).await;
    let outage_began = Instant::now();
    // Reads during the outage, beside the writers' appends.
    let mut reads = Vec::new();
    while outage_began.elapsed() < OUTAGE {
        let request = api
            .client
            .get(api.url(&format!("/v1/sessions/{}/messages", sessions[0])))
            .bearer_auth(&api.keys.reader);
        reads.push(api.attempt(request).await.0);
        let (ready, _) = api.attempt(api.client.get(api.url("/readyz"))).await;
        assert_eq!(ready.status(), Some(503), "/readyz during the outage");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A probe appends from the moment the restart begins, to time the first success.
    let probe = {
        let (api, turn) = (api.clone(), Turn::new(&sessions[0], 99, 0, false, ""));
        let retry = Retry {
            attempts: 10_000,
            deadline: Duration::from_secs(60),
            backoff: Duration::from_millis(20),
        };
        tokio::spawn(async move { write_turn(&api, &turn, retry).await })
    };
    let restarting = Instant::now();
    let log = pg_dir.join("log").join("postgres.log");
    run(pg_ctl(
        &pg_dir,
        &[
            "-l",
            log.to_str().expect("UTF-8 path"),
            "-w",
            "-t",
            "60",
            "start",
        ],
    ))
    .await;
    let restarted = Instant::now();
    let probed = probe.await.expect("probe task");
    let recovered = probed
        .attempts
        .iter()
        .find(|attempt| attempt.status() == Some(201))
        .map(Attempt::ended)
        .expect("an append succeeds within a minute of PostgreSQL's restart");
    assert!(server.is_running(), "chatledger was not restarted");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, Ordering::Relaxed);
    let probe_attempts = probed.attempts.len();
    let mut written = vec![probed];
    for writer in writers {
        written.extend(writer.await.expect("writer task"));
    }

    // Every request begun during the outage: a proper 503 if it ended before the restart, and
    // an answer within the bound in any case.
    let attempts: Vec<&Attempt> = written
        .iter()
        .flat_map(|w| &w.attempts)
        .chain(&reads)
        .collect();
    let during: Vec<&&Attempt> = attempts
        .iter()
        .filter(|a| a.started >= outage_began && a.started < restarting)
        .collect();
    let ended_in_outage: Vec<&&&Attempt> =
        during.iter().filter(|a| a.ended() < restarting).collect();
    let improper: Vec<_> = ended_in_outage
        .iter()
        .filter(|a| !a.is_proper_503())
        .map(|a| a.answer.to_string())
        .collect();
    let slowest = during
        .iter()
        .map(|a| a.elapsed)
        .max()
        .expect("requests were made during the outage");
    let unexpected: Vec<&String> = written.iter().flat_map(|w| &w.unexpected).collect();
    let tally = Tally::of(attempts.iter().copied());
    let acknowledged = written.iter().filter(|w| w.acknowledged()).count();
    // Appends in flight when PostgreSQL died: answered 503, yet found written by their retry
    // (the commit happened, the answer did not come back). Offsets are from the stop command.
    let written_despite_503: Vec<String> = written
        .iter()
        .filter(|w| w.attempts.last().is_some_and(Attempt::replayed))
        .filter_map(|w| w.attempts.iter().find(|a| a.status() == Some(503)))
        .map(|a| {
            let offset = a.started.saturating_duration_since(stopping);
            format!("begun {offset:.2?}, answered in {:.2?}", a.elapsed)
        })
        .collect();
    println!(
        "FAULTS scenario 2 (PostgreSQL stopped): pg_ctl stop -m immediate took {:.2?}, \
         outage {:.2?}; {} requests begun during the outage ({} ended before the restart, {} \
         of them a proper 503), slowest answer {slowest:.2?}; pg_ctl start took {:.2?}, first \
         append succeeded {:.2?} after the restart began ({:.2?} after pg_ctl returned; {} \
         probe attempts), chatledger not restarted; {acknowledged} acknowledged turns; {} \
         attempts: {} 503, {} other 5xx, {} without an answer, {} idempotent replays; \
         answered 503 but written (replayed on retry): {written_despite_503:?}; {} ERROR log \
         lines",
        outage_began - stopping,
        restarting - outage_began,
        during.len(),
        ended_in_outage.len(),
        ended_in_outage.len() - improper.len(),
        restarted - restarting,
        recovered.saturating_duration_since(restarting),
        recovered.saturating_duration_since(restarted),
        probe_attempts,
        tally.attempts,
        tally.unavailable + tally.improper_503,
        tally.other_5xx,
        tally.no_answer,
        tally.replayed,
        logs.errors()
    );
    assert!(
        unexpected.is_empty(),
        "answers no retry can fix: {unexpected:?}"
    );
    assert!(
        ended_in_outage.len() >= 10,
        "the outage was probed: {}",
        ended_in_outage.len()
    );
    assert!(
        improper.is_empty(),
        "answers during the outage other than 503 unavailable with Retry-After: {improper:?}"
    );
    assert!(
        slowest <= ANSWER_BOUND,
        "a request begun during the outage took {slowest:?}"
    );
    assert_eq!(
        tally.other_5xx + tally.improper_503,
        0,
        "the outage is a 503 with Retry-After, never a 500"
    );
    assert!(
        written.iter().all(Written::acknowledged),
        "every turn is acknowledged"
    );

    let sent: Vec<_> = written.into_iter().map(|w| w.record).collect();
    assert_clean_history(&api, &sessions, &sent).await;
    assert!(server.terminate().await.success(), "SIGTERM exits 0");
    assert!(
        !pg_dir.join("postmaster.pid").exists(),
        "chatledger stopped its cluster on the way out"
    );
}
