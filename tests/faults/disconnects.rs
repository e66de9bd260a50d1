//! Scenario 4: a storm of clients hanging up mid-append: timing out after a few milliseconds,
//! closing or resetting the connection right after sending, or sending half a body. Afterwards
//! no connection is left busy or idle in transaction, and every abandoned append is stored
//! whole exactly once or not at all; a retry with its key replays it or writes it now.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::checker::{Outcome, check};
use crate::harness::{
    Activity, Api, OnDatabase, SERIAL, Turn, activity, assert_clean_history, millis_between,
    write_acknowledged,
};

const SESSIONS: u64 = 4;
const WAVES: u64 = 3;
const PER_WAVE: u64 = 48;

/// How a client abandons its append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum HangUp {
    /// reqwest gives up after a few milliseconds, wherever the request is.
    Impatient,
    /// The whole request is sent, then the connection closed without reading the answer.
    CloseAfterSending,
    /// The whole request is sent, then the connection reset (RST).
    ResetAfterSending,
    /// Half the body is sent, then the connection closed.
    HalfBody,
}

const HANG_UPS: [HangUp; 4] = [
    HangUp::Impatient,
    HangUp::CloseAfterSending,
    HangUp::ResetAfterSending,
    HangUp::HalfBody,
];

/// The raw HTTP/1.1 request of an append.
fn raw_request(api: &Api, host: &str, turn: &Turn) -> Vec<u8> {
    let body = serde_json::to_vec(&turn.body(None)).expect("JSON");
    let mut request = format!(
        "POST /v1/sessions/{}/messages HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: {}\r\nContent-Length: {}\r\n\r\n",
        turn.session,
        api.keys.writer,
        turn.key,
        body.len()
    )
    .into_bytes();
    request.extend(body);
    request
}

/// Sends `turn` and hangs up as `how` says; true when the client saw a complete answer.
async fn abandon(api: &Api, host: &str, turn: &Turn, how: HangUp) -> bool {
    if how == HangUp::Impatient {
        let request = api
            .client
            .post(api.url(&format!("/v1/sessions/{}/messages", turn.session)))
            .bearer_auth(&api.keys.writer)
            .header("Idempotency-Key", &turn.key)
            .timeout(millis_between(1, 12))
            .json(&turn.body(None));
        return api.attempt(request).await.0.status().is_some();
    }
    let request = raw_request(api, host, turn);
    let Ok(mut stream) = TcpStream::connect(host).await else {
        return false;
    };
    let sent = match how {
        // The body is most of the request, so three quarters of it stop inside the body.
        HangUp::HalfBody => request.len() * 3 / 4,
        _ => request.len(),
    };
    if stream.write_all(&request[..sent]).await.is_err() {
        return false;
    }
    if how == HangUp::ResetAfterSending {
        let _ = stream.set_zero_linger();
    } else {
        tokio::time::sleep(millis_between(0, 3)).await;
    }
    drop(stream);
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_client_disconnect_storm_leaves_no_open_transaction_and_no_partial_turn() {
    let _serial = SERIAL.lock().await;
    let setup = OnDatabase::new("disconnects").await;
    let (database, logs) = (&setup.database, &setup.logs);
    let server = setup.start(&[]).await;
    let host = format!("127.0.0.1:{}", server.port);
    let api = setup.api(&server, Duration::from_secs(30));
    let sessions: Vec<String> = (0..SESSIONS).map(|n| format!("storm-{n}")).collect();
    let mut seeds = Vec::new();
    for session in &sessions {
        let seeded = write_acknowledged(&api, &Turn::new(session, 0, 0, false, "")).await;
        seeds.push(seeded.record);
    }

    // The storm, in waves of concurrent appends of 1 KB to 80 KB.
    let began = Instant::now();
    let mut storm: Vec<(Turn, HangUp)> = Vec::new();
    let mut answered = 0;
    for wave in 0..WAVES {
        let turns: Vec<(Turn, HangUp)> = (0..PER_WAVE)
            .map(|n| {
                let id = 1 + wave * PER_WAVE + n;
                let filler = "x".repeat(1_000 + (id as usize % 5) * 20_000);
                let session = &sessions[(id % SESSIONS) as usize];
                let how = HANG_UPS[(id % 4) as usize];
                (Turn::new(session, id, 0, false, &filler), how)
            })
            .collect();
        let outcomes = join_all(
            turns
                .iter()
                .map(|(turn, how)| abandon(&api, &host, turn, *how)),
        )
        .await;
        answered += outcomes.into_iter().filter(|answered| *answered).count();
        storm.extend(turns);
    }
    let storm_took = began.elapsed();

    // Bounded polling until the server is quiet: no chatledger backend busy for a full second.
    let owner = database.owner_pool().await;
    let quiet_since = Instant::now();
    let mut quiet_polls = 0;
    let mut worst = Activity {
        busy: 0,
        idle_in_transaction: 0,
    };
    let mut last = worst;
    for _ in 0..300 {
        last = activity(&owner, database.name()).await;
        worst.busy = worst.busy.max(last.busy);
        worst.idle_in_transaction = worst.idle_in_transaction.max(last.idle_in_transaction);
        quiet_polls = if last.busy == 0 { quiet_polls + 1 } else { 0 };
        if quiet_polls == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let quiet_after = quiet_since.elapsed();
    assert_eq!(quiet_polls, 10, "the server never went quiet: {last:?}");
    assert_eq!(
        last.idle_in_transaction, 0,
        "a connection is idle in transaction"
    );

    // Before any retry: each abandoned append is stored whole once, or not at all.
    let mut reads = Vec::new();
    for session in &sessions {
        reads.push(api.read_back(session).await);
    }
    let mut before: Vec<_> = seeds.clone();
    before.extend(storm.iter().map(|(turn, _)| turn.record(Outcome::Unknown)));
    let reports = check(&before, &reads);
    let dirty: Vec<String> = reports
        .iter()
        .filter(|report| report.anomalies() > 0)
        .map(ToString::to_string)
        .collect();
    assert!(dirty.is_empty(), "after the storm:\n{}", dirty.join("\n"));
    let present: BTreeSet<u64> = reads
        .iter()
        .flat_map(|read| &read.entries)
        .filter_map(|entry| entry["metadata"]["writer"].as_u64())
        .collect();

    // Retried with its key, a stored append replays and a missing one is written now.
    let mut sent = seeds;
    let mut by_kind: std::collections::BTreeMap<HangUp, (usize, usize)> = Default::default();
    let mut mismatched = Vec::new();
    for (turn, how) in &storm {
        let again = write_acknowledged(&api, turn).await;
        let was_present = present.contains(&turn.writer);
        let counts = by_kind.entry(*how).or_default();
        if was_present {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
        if again.attempts[0].replayed() != was_present {
            mismatched.push((turn.key.clone(), *how, was_present));
        }
        sent.push(again.record);
    }
    let (stored, absent) = by_kind
        .values()
        .fold((0, 0), |(s, a), (stored, absent)| (s + stored, a + absent));
    println!(
        "FAULTS scenario 4 (client disconnects): {} abandoned appends in {storm_took:.2?} \
         ({answered} answered before the client gave up); quiet {quiet_after:.2?} later, most busy \
         backends seen {}, most idle in transaction seen {}; stored once {stored}, absent \
         {absent}, by kind (stored, absent): {by_kind:?}; {} ERROR log lines",
        storm.len(),
        worst.busy,
        worst.idle_in_transaction,
        logs.errors()
    );
    assert!(
        mismatched.is_empty(),
        "a retry replayed a turn the history lacked, or wrote one it held: {mismatched:?}"
    );
    assert_eq!(
        by_kind.get(&HangUp::HalfBody).map(|counts| counts.0),
        Some(0),
        "an append whose body never arrived whole was stored"
    );
    assert_clean_history(&api, &sessions, &sent).await;
    assert!(server.terminate().await.success());
}
