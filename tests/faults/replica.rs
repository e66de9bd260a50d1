//! `--replica-url` against a real streaming standby (the failover scenario's pair): compliance
//! reads (search, verify, export, the access-log listing) come from the replica, with its lag in
//! a header; bot reads and writes stay on the primary; and every replica read writes its access
//! record on the primary. The standby's replay is paused to tell the two apart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::Response;
use serde_json::{Value, json};

use crate::harness::{ADMIN_KEY, SERIAL};
use crate::outage::provision;
use crate::replication::{DATABASE, OWNER, Pair};
use crate::testbin::{Logs, Server, Store, TempDir, create_key, run_cli};

const LAG_HEADER: &str = "chatledger-replica-lag-ms";

struct Client {
    http: reqwest::Client,
    base: String,
    writer: String,
    auditor: String,
}

impl Client {
    async fn get(&self, path: &str, key: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("the server answers")
    }

    async fn json(&self, path: &str, key: &str) -> (Option<i64>, Value) {
        let response = self.get(path, key).await;
        assert_eq!(response.status(), 200, "GET {path}");
        let lag = response
            .headers()
            .get(LAG_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        (lag, response.json().await.expect("JSON"))
    }

    async fn append(&self, session: &str, text: &str) -> Value {
        let response = self
            .http
            .post(format!("{}/v1/sessions/{session}/messages", self.base))
            .bearer_auth(&self.writer)
            .json(&json!({"messages": [{"role": "user", "content": text}]}))
            .send()
            .await
            .expect("append answers");
        assert_eq!(response.status(), 201);
        response.json().await.expect("receipt")
    }

    /// Search hits for `term` as the auditor, and the lag header.
    async fn search(&self, term: &str) -> (Option<i64>, usize) {
        let (lag, page) = self
            .json(&format!("/v1/audit/search?q={term}"), &self.auditor)
            .await;
        (lag, page["results"].as_array().map_or(0, Vec::len))
    }

    /// Polls until the replica's search finds `term` (replication is asynchronous to readers).
    async fn until_found(&self, term: &str) {
        let started = Instant::now();
        while self.search(term).await.1 == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the replica shows {term} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reads_come_from_the_standby_and_are_still_recorded_on_the_primary() {
    let _serial = SERIAL.lock().await;
    let pair = Pair::start("replica", true).await;
    let dir = TempDir::new("replica-server");
    let logs = Arc::new(Logs::default());
    let store = Store::External {
        url: pair.primary.url(OWNER, DATABASE),
        admin_key_file: dir.admin_key_file(ADMIN_KEY),
    };
    let replica_url = pair.standby.url(OWNER, DATABASE);
    let server = Server::start(&store, 0, &["--replica-url", &replica_url], &logs)
        .await
        .expect("chatledger starts with a replica");
    let keys = provision(&server.address, ADMIN_KEY).await;
    let client = Client {
        http: reqwest::Client::new(),
        base: server.address.clone(),
        writer: keys.writer,
        auditor: keys.auditor,
    };

    // A multi-host URL naming the standby first: the command still writes to the primary.
    let standby_first = format!(
        "postgres://{OWNER}@localhost/{DATABASE}?host={},{}&port={},{}",
        pair.standby.socket.display(),
        pair.primary.socket.display(),
        pair.standby.port,
        pair.primary.port
    );
    let (status, output) = tokio::task::spawn_blocking(move || {
        run_cli(&["tenants", "create", "beta"], None, Some(&standby_first))
    })
    .await
    .expect("the command runs");
    assert_eq!(
        status, 0,
        "tenants create through the standby-first URL: {output}"
    );

    client.append("rep", "first alpha0001").await;
    client.until_found("alpha0001").await;
    let (lag, hits) = client.search("alpha0001").await;
    assert_eq!(hits, 1);
    assert!(
        lag.is_some_and(|lag| lag >= 0),
        "search says its lag: {lag:?}"
    );

    // The standby stops replaying: what the primary writes now, the replica does not show.
    let standby = pair.standby.superuser(DATABASE).await;
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&standby)
        .await
        .expect("pause replay");
    crate::replication::wait_until(
        &standby,
        "SELECT pg_get_wal_replay_pause_state() = 'paused'",
        Duration::from_secs(10),
        "replay pauses",
    )
    .await;
    let receipt = client.append("rep", "second beta0002").await;
    let last_seq = receipt["last_seq"].as_i64().expect("last_seq");
    assert_eq!(last_seq, 2);

    // A bot's reads are the primary's: it sees the turn it just wrote.
    let (lag, context) = client
        .json("/v1/sessions/rep/context", &client.writer)
        .await;
    assert_eq!(context["last_seq"], 2, "context reads the primary");
    assert_eq!(lag, None, "bot reads carry no replica lag");
    let (_, messages) = client
        .json("/v1/sessions/rep/messages", &client.writer)
        .await;
    assert_eq!(messages["last_seq"], 2, "messages read the primary");

    // Compliance reads are the replica's, as of before the pause, and say how stale they are.
    let (lag, hits) = client.search("beta0002").await;
    assert_eq!(hits, 0, "search reads the paused replica");
    assert!(lag.is_some(), "with its lag");
    let (lag, verified) = client
        .json("/v1/sessions/rep/verify", &client.auditor)
        .await;
    assert_eq!(verified["ok"], true);
    assert_eq!(
        verified["verified_through_seq"], 1,
        "verify reads the replica"
    );
    assert!(lag.is_some());
    let export = client.get("/v1/sessions/rep/export", &client.auditor).await;
    assert_eq!(export.status(), 200);
    assert!(export.headers().get(LAG_HEADER).is_some());
    let export = export.text().await.expect("export body");
    let trailer: Value =
        serde_json::from_str(export.lines().last().expect("a trailer")).expect("trailer JSON");
    assert_eq!(
        trailer["export_trailer"]["last_seq"], 1,
        "export reads the replica"
    );

    // A key created now is on the primary and not yet on the paused replica: its compliance
    // reads are the replica being behind (503, retry), not a bad key (it got 401).
    let new_auditor = create_key(
        &server.address,
        ADMIN_KEY,
        json!({"tenant": "acme", "role": "auditor"}),
    )
    .await;
    let behind = client
        .get("/v1/audit/search?q=alpha0001", &new_auditor)
        .await;
    assert_eq!(behind.status(), 503, "a key the replica has not replayed");
    let problem: Value = behind.json().await.expect("a problem document");
    assert_eq!(problem["code"], "unavailable", "{problem}");

    // Every one of those reads wrote its record on the primary, at once.
    let primary = pair.primary.superuser(DATABASE).await;
    let recorded: Vec<String> = sqlx::query_scalar("SELECT action FROM access_records ORDER BY id")
        .fetch_all(&primary)
        .await
        .expect("the primary's access log");
    for action in ["search", "verify", "export"] {
        assert!(
            recorded.iter().any(|recorded| recorded == action),
            "{action} recorded on the primary: {recorded:?}"
        );
    }
    let searches = recorded.iter().filter(|action| *action == "search").count();
    let (_, listing) = client
        .json("/v1/audit/access?limit=1000", &client.auditor)
        .await;
    let listed = listing["records"].as_array().expect("records").len();
    assert!(
        listed < recorded.len(),
        "the listing reads the paused replica: {listed} of {} records",
        recorded.len()
    );

    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&standby)
        .await
        .expect("resume replay");
    client.until_found("beta0002").await;
    let (_, verified) = client
        .json("/v1/sessions/rep/verify", &client.auditor)
        .await;
    assert_eq!(verified["verified_through_seq"], 2, "the replica caught up");
    // Each search's record is written on the primary, so the replica is behind by that until it
    // replays it.
    let started = Instant::now();
    while client.search("alpha0001").await != (Some(0), 1) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a caught-up replica says its lag is 0"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Cut off from its primary, the standby receives nothing, so all it received is replayed;
    // its lag is still what it has not got (the header said 0).
    // (The primary stops waiting for it first: this pair's standby is synchronous.)
    reconfigure(&primary, "synchronous_standby_names = ''").await;
    reconfigure(&standby, "primary_conninfo = 'host=127.0.0.1 port=1'").await;
    crate::replication::wait_until(
        &standby,
        "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_wal_receiver)",
        Duration::from_secs(10),
        "the WAL receiver stops",
    )
    .await;
    client.append("rep", "third gamma0003").await;
    let (lag, hits) = client.search("gamma0003").await;
    assert_eq!(hits, 0, "the cut-off replica does not have it");
    assert!(
        lag.is_some_and(|lag| lag > 0),
        "and says it may be behind: {lag:?}"
    );
    // A frozen replica (every process stopped, so its sockets stay open and nothing answers,
    // and no server-side statement timeout fires) is a 503 within the statement timeout (5 s);
    // a read waited out the 30 s request timeout.
    let frozen = standby_processes(pair.standby.postmaster_pid());
    for pid in &frozen {
        kill(*pid, Signal::SIGSTOP).expect("SIGSTOP the standby");
    }
    let asked = Instant::now();
    let answer = client
        .get("/v1/audit/search?q=alpha0001", &client.auditor)
        .await;
    let waited = asked.elapsed();
    for pid in &frozen {
        kill(*pid, Signal::SIGCONT).expect("SIGCONT the standby");
    }
    assert_eq!(answer.status(), 503, "a frozen replica");
    assert!(
        waited < Duration::from_secs(15),
        "answered in {waited:?}, within the statement timeout rather than the request timeout"
    );
    println!(
        "REPLICA: bot reads on the primary saw seq 2 at once; with replay paused search, verify, \
         export and the access-log listing ({listed} of {} records) answered from the replica; \
         {searches} searches recorded on the primary",
        recorded.len()
    );
    standby.close().await;
    primary.close().await;
    assert!(server.terminate().await.success());
}

/// `ALTER SYSTEM SET <setting>` on the cluster of `pool`, then a reload (two statements: ALTER
/// SYSTEM runs outside a transaction block only).
async fn reconfigure(pool: &sqlx::PgPool, setting: &str) {
    for statement in [
        format!("ALTER SYSTEM SET {setting}"),
        "SELECT pg_reload_conf()".into(),
    ] {
        sqlx::raw_sql(&statement)
            .execute(pool)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
}

/// A cluster's postmaster and every process it started.
fn standby_processes(postmaster: i32) -> Vec<Pid> {
    let mut pids = vec![Pid::from_raw(postmaster)];
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Some(pid) = entry
            .ok()
            .and_then(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        else {
            continue;
        };
        // The parent is the field after the command, which is in parentheses.
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after = stat.rsplit_once(')')?.1.to_owned();
                after.split_whitespace().nth(1)?.parse::<i32>().ok()
            });
        if parent == Some(postmaster) {
            pids.push(Pid::from_raw(pid));
        }
    }
    pids
}
