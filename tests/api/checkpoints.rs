//! The transparency log (API.md "Checkpoints") end to end, on real server processes: leaves for
//! every acknowledged append covered by signed checkpoints within 10 s across several servers,
//! checkpoints that are all consistent, and the strongest attack (a superuser rewriting a chain
//! whole, head included), which `verify` cannot see and the log catches.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatledger::tlog::{self, Hash, SignedCheckpoint, VerifierKey};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{ADMIN_KEY, TestDatabase, superuser_on};
use crate::testbin::{Logs, Server, Store, TempDir, run_cli};

/// API.md: every acknowledged append is covered by a signed checkpoint within 10 s.
const COVERAGE: Duration = Duration::from_secs(10);

struct Deployment {
    database: TestDatabase,
    dir: TempDir,
    servers: Vec<Server>,
    client: reqwest::Client,
    logs: Arc<Logs>,
}

impl Deployment {
    /// `count` servers on one fresh database, sharing one checkpoint key; server `i` writes its
    /// checkpoints to `<dir>/checkpoints-i`.
    async fn start(count: usize) -> Self {
        let database = TestDatabase::new().await;
        let dir = TempDir::new("tlog");
        let logs = Arc::new(Logs::default());
        let store = Store::External {
            url: database.owner_url.clone(),
            admin_key_file: dir.admin_key_file(ADMIN_KEY),
        };
        let mut servers = Vec::new();
        for i in 0..count {
            let checkpoints = dir.path().join(format!("checkpoints-{i}"));
            std::fs::create_dir(&checkpoints).expect("checkpoint dir");
            let checkpoints = checkpoints.to_str().expect("utf-8 path").to_owned();
            let server = Server::start(
                &store,
                0,
                &["--checkpoint-dir", &checkpoints, "--log-name", "test"],
                &logs,
            )
            .await
            .expect("chatledger starts");
            servers.push(server);
        }
        Self {
            database,
            dir,
            servers,
            // No kept-alive connections: a server closing an idle one as a request is sent
            // would fail the request, which is no part of what these tests check.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client"),
            logs,
        }
    }

    fn url(&self, server: usize, path: &str) -> String {
        format!(
            "{}{path}",
            self.servers[server % self.servers.len()].address
        )
    }

    /// Asserts that `verify --checkpoints` finds the log broken, naming `finding`.
    fn assert_log_finds(&self, log_key: &str, finding: &str) {
        let (code, output) = self.verify_checkpoints(log_key);
        assert_eq!(code, 1, "{output}");
        assert!(output.contains(finding), "{finding}: {output}");
    }

    /// The value of an unlabelled metric of server 0.
    async fn metric(&self, name: &str) -> f64 {
        let metrics = self
            .client
            .get(self.url(0, "/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        metric(&metrics, name)
    }

    /// Another server on this deployment's database, writing its checkpoints to `dir`.
    async fn add_server(&mut self, dir: &Path) {
        let store = Store::External {
            url: self.database.owner_url.clone(),
            admin_key_file: self.dir.admin_key_file(ADMIN_KEY),
        };
        let server = Server::start(
            &store,
            0,
            &[
                "--checkpoint-dir",
                dir.to_str().expect("utf-8 path"),
                "--log-name",
                "test",
            ],
            &self.logs,
        )
        .await
        .expect("chatledger starts");
        self.servers.push(server);
    }

    fn checkpoint_dir(&self, server: usize) -> PathBuf {
        self.dir.path().join(format!("checkpoints-{server}"))
    }

    async fn log_key(&self) -> String {
        let response = self
            .client
            .get(self.url(0, "/v1/checkpoint/key"))
            .bearer_auth(&self.database.reader_key)
            .send()
            .await
            .expect("key");
        assert_eq!(response.status(), 200);
        response.text().await.expect("text").trim().to_owned()
    }

    /// Appends `count` messages to `session` through server `server`: (last_seq, head_hash).
    async fn append(&self, server: usize, session: &str, count: usize) -> (i64, String) {
        let messages: Vec<Value> = (0..count)
            .map(|i| json!({"role": "user", "content": format!("message {i} of {session}")}))
            .collect();
        let response = self
            .client
            .post(self.url(server, &format!("/v1/sessions/{session}/messages")))
            .bearer_auth(&self.database.writer_key)
            .json(&json!({ "messages": messages }))
            .send()
            .await
            .expect("append");
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("json");
        (
            body["last_seq"].as_i64().expect("last_seq"),
            body["head_hash"].as_str().expect("head_hash").to_owned(),
        )
    }

    /// The proof of `seq`, polled until the append is integrated (at most [`COVERAGE`]).
    async fn proof(&self, server: usize, session: &str, seq: i64) -> Value {
        let deadline = Instant::now() + COVERAGE;
        loop {
            let response = self
                .client
                .get(self.url(server, &format!("/v1/sessions/{session}/proof?seq={seq}")))
                .bearer_auth(&self.database.auditor_key)
                .send()
                .await
                .expect("proof");
            match response.status().as_u16() {
                200 => return response.json().await.expect("json"),
                404 if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => panic!("proof of {session} seq {seq}: {other}"),
            }
        }
    }

    async fn export(&self, session: &str) -> String {
        let response = self
            .client
            .get(self.url(0, &format!("/v1/sessions/{session}/export")))
            .bearer_auth(&self.database.auditor_key)
            .send()
            .await
            .expect("export");
        assert_eq!(response.status(), 200);
        response.text().await.expect("ndjson")
    }

    /// `chatledger verify --checkpoints` on this database: exit code and output.
    fn verify_checkpoints(&self, log_key: &str) -> (i32, String) {
        let dir = self.checkpoint_dir(0);
        run_cli(
            &[
                "verify",
                "--checkpoints",
                "--checkpoint-dir",
                dir.to_str().expect("utf-8"),
                "--log-key",
                log_key,
            ],
            None,
            Some(&self.database.owner_url),
        )
    }
}

fn verify_export(dir: &Path, name: &str, export: &str, log_key: &str) -> (i32, String) {
    let path = dir.join(name);
    std::fs::write(&path, export).expect("write export");
    run_cli(
        &[
            "verify-export",
            path.to_str().expect("utf-8"),
            "--log-key",
            log_key,
        ],
        None,
        None,
    )
}

/// The independent Python verifier (tests/independent/verify_export.py) with the log key.
fn independent_verifier(dir: &Path, name: &str, export: &str, log_key: &str) -> (i32, String) {
    let python = std::env::var("CHATLEDGER_TEST_PYTHON")
        .expect("CHATLEDGER_TEST_PYTHON is not set: run ./scripts/test.sh, which prepares it");
    let path = dir.join(name);
    std::fs::write(&path, export).expect("write export");
    let output = std::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/independent/verify_export.py"
        ))
        .arg(&path)
        .args(["--log-key", log_key])
        .output()
        .expect("python runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// One round of `chatledger witness` (a fresh process each time: its state is in `state`).
fn witness(deployment: &Deployment, state: &Path, log_key: Option<&str>) -> (i32, String) {
    let key_file = deployment.dir.path().join("witness.key");
    if !key_file.exists() {
        let (code, _) = run_cli(
            &[
                "checkpoint-key",
                "--generate",
                key_file.to_str().expect("utf-8"),
                "--name",
                "witness.test",
            ],
            None,
            None,
        );
        assert_eq!(code, 0);
    }
    let mut args = vec![
        "witness".to_owned(),
        "--url".to_owned(),
        deployment.servers[0].address.clone(),
        "--key-file".to_owned(),
        key_file.to_str().expect("utf-8").to_owned(),
        "--state-dir".to_owned(),
        state.to_str().expect("utf-8").to_owned(),
        "--api-key".to_owned(),
        deployment.database.reader_key.clone(),
        "--once".to_owned(),
    ];
    if let Some(key) = log_key {
        args.extend(["--log-key".to_owned(), key.to_owned()]);
    }
    let output = std::process::Command::new(crate::testbin::BIN)
        .args(&args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("chatledger witness runs");
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn trailer(export: &str) -> Value {
    let last = export.lines().last().expect("a trailer line");
    serde_json::from_str::<Value>(last).expect("json")["export_trailer"].clone()
}

/// Checks a proof answer completely, as a client that trusts only the log key would.
fn check_proof(proof: &Value, key: &VerifierKey, session: &str, last_seq: i64, head: &str) {
    let signed = SignedCheckpoint::open(proof["checkpoint"].as_str().expect("note"), key)
        .expect("the proof's checkpoint is signed by the log key");
    let checkpoint = signed.checkpoint();
    assert_eq!(proof["tree_size"].as_u64(), Some(checkpoint.size));
    let leaf = &proof["leaf"];
    assert_eq!(leaf["type"], "append");
    assert_eq!(leaf["tenant"], "acme");
    assert_eq!(leaf["session_id"], session);
    assert_eq!(leaf["last_seq"].as_i64(), Some(last_seq));
    assert_eq!(leaf["head_hash"].as_str(), Some(head));
    let bytes = serde_json_canonicalizer::to_vec(leaf).expect("JCS");
    let path: Vec<Hash> = proof["inclusion_path"]
        .as_array()
        .expect("path")
        .iter()
        .map(|h| Hash::from_base64(h.as_str().expect("string")).expect("base64 hash"))
        .collect();
    tlog::verify_inclusion(
        &tlog::leaf_hash(&bytes),
        proof["leaf_index"].as_u64().expect("index"),
        checkpoint.size,
        &path,
        &checkpoint.root,
    )
    .expect("the leaf is in the signed tree");
}

#[tokio::test]
async fn every_acknowledged_append_across_servers_is_covered_within_10s_by_consistent_checkpoints()
{
    let deployment = Arc::new(Deployment::start(3).await);
    let key = VerifierKey::parse(&deployment.log_key().await).expect("verifier key");

    // 12 clients, each appending to its own session through the three servers in turn.
    let mut clients = Vec::new();
    for client in 0..12 {
        let deployment = deployment.clone();
        clients.push(tokio::spawn(async move {
            let session = format!("load-{client}");
            let mut acks = Vec::new();
            for round in 0..20 {
                let (last_seq, head) = deployment
                    .append(client + round, &session, 1 + round % 3)
                    .await;
                acks.push((session.clone(), last_seq, head, Instant::now()));
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for client in clients {
        acks.extend(client.await.expect("client"));
    }
    assert_eq!(acks.len(), 240);

    for (i, (session, last_seq, head, _)) in acks.iter().enumerate() {
        let proof = deployment.proof(i, session, *last_seq).await;
        check_proof(&proof, &key, session, *last_seq, head);
    }

    // From the database's own clocks: the longest time from a leaf's queueing (inside the
    // append's transaction, before its acknowledgement) to the first checkpoint covering it.
    let owner = deployment.database.owner_pool().await;
    let worst: f64 = sqlx::query_scalar(
        "SELECT coalesce(max(extract(epoch FROM (SELECT min(c.signed_at) FROM tlog_checkpoints c
                                                  WHERE c.tree_size > l.leaf_index) - l.queued_at)), 0)::float8
           FROM tlog_leaves l",
    )
    .fetch_one(&owner)
    .await
    .expect("coverage");
    assert!(
        worst <= COVERAGE.as_secs_f64(),
        "a leaf waited {worst:.3} s for a checkpoint"
    );
    // Proofs are recorded reads, so leaves keep coming; none waits beyond the bound.
    let late: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tlog_pending WHERE queued_at < clock_timestamp() - interval '10 s'",
    )
    .fetch_one(&owner)
    .await
    .expect("pending");
    assert_eq!(late, 0, "no queued leaf waits beyond 10 s");

    // Every pair of successive checkpoints is consistent, by proofs the servers serve.
    let notes: Vec<String> =
        sqlx::query_scalar("SELECT note FROM tlog_checkpoints ORDER BY tree_size")
            .fetch_all(&owner)
            .await
            .expect("checkpoints");
    assert!(notes.len() > 2, "several checkpoints were signed");
    let checkpoints: Vec<_> = notes
        .iter()
        .map(|note| {
            SignedCheckpoint::open(note, &key)
                .expect("signed by the log key")
                .checkpoint()
                .clone()
        })
        .collect();
    for (i, pair) in checkpoints.windows(2).enumerate() {
        let (old, new) = (&pair[0], &pair[1]);
        assert!(new.size > old.size, "sizes only grow");
        if old.size == 0 {
            continue;
        }
        let response = deployment
            .client
            .get(deployment.url(
                i,
                &format!(
                    "/v1/checkpoint/consistency?from={}&to={}",
                    old.size, new.size
                ),
            ))
            .bearer_auth(&deployment.database.writer_key)
            .send()
            .await
            .expect("consistency");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        let path: Vec<Hash> = body["path"]
            .as_array()
            .expect("path")
            .iter()
            .map(|h| Hash::from_base64(h.as_str().expect("string")).expect("hash"))
            .collect();
        tlog::verify_consistency(old.size, new.size, &path, &old.root, &new.root)
            .expect("successive checkpoints are consistent");
    }
    // Each server's checkpoint directory holds notes of this log only.
    for server in 0..3 {
        for entry in std::fs::read_dir(deployment.checkpoint_dir(server)).expect("dir") {
            let note = std::fs::read_to_string(entry.expect("entry").path()).expect("note");
            SignedCheckpoint::open(&note, &key).expect("a signed checkpoint");
        }
    }

    // The tree matches its recomputation from the sessions, and the files match the tree.
    let (code, output) = deployment.verify_checkpoints(&key.to_string());
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("intact"), "{output}");
    assert_eq!(deployment.logs.errors(), 0, "{}", deployment.logs.tail());
}

#[tokio::test]
async fn the_strongest_attack_passes_verify_but_not_the_log() {
    let deployment = Deployment::start(1).await;
    let log_key = deployment.log_key().await;
    let key = VerifierKey::parse(&log_key).expect("verifier key");
    for _ in 0..3 {
        deployment.append(0, "victim", 2).await;
    }
    let (bystander_seq, _) = deployment.append(0, "bystander", 2).await;
    let (_, original_head) = deployment.append(0, "victim", 1).await;
    deployment.proof(0, "victim", 7).await;
    deployment.proof(0, "bystander", bystander_seq).await;

    let before = deployment.export("victim").await;
    let (code, output) = verify_export(deployment.dir.path(), "before.ndjson", &before, &log_key);
    assert_eq!(code, 0, "{output}");
    let (code, output) =
        independent_verifier(deployment.dir.path(), "before.ndjson", &before, &log_key);
    assert_eq!(code, 0, "{output}");
    let (code, output) = deployment.verify_checkpoints(&log_key);
    assert_eq!(code, 0, "{output}");

    // A witness follows the log: its first run records the key, a later one (a new process)
    // checks consistency with what the first accepted.
    let state = deployment.dir.path().join("witness-state");
    let (code, output) = witness(&deployment, &state, Some(&log_key));
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("accepted "), "{output}");
    deployment.append(0, "bystander", 1).await;
    deployment.proof(0, "bystander", bystander_seq + 1).await;
    let (code, output) = witness(&deployment, &state, None);
    assert_eq!(code, 0, "{output}");
    let accepted = std::fs::read_dir(state.join("accepted"))
        .expect("state")
        .count();
    assert!(accepted >= 2, "both rounds kept their checkpoint");
    let cosigned = std::fs::read_to_string(state.join("latest.note")).expect("latest");
    assert!(cosigned.contains("\n\u{2014} witness.test "), "{cosigned}");
    // The key it prints first verifies its cosignatures.
    let printed = output
        .lines()
        .find_map(|line| line.strip_prefix("cosigner "))
        .expect("the witness prints its cosigner key");
    let cosigner =
        chatledger::tlog::CosignatureVerifierKey::parse(printed).expect("a cosigner key");
    let note = chatledger::tlog::Note::parse(&cosigned).expect("a note");
    cosigner
        .verify_cosignature(&note)
        .expect("the printed key verifies the cosignature");
    // Another key is refused.
    let other = deployment.dir.path().join("other.key");
    let (_, other_key) = run_cli(
        &[
            "checkpoint-key",
            "--generate",
            other.to_str().expect("utf-8"),
            "--name",
            "chatledger/test",
        ],
        None,
        None,
    );
    // A log it cannot reach is not a log that lied (both were exit 1).
    let witness_key = deployment.dir.path().join("witness.key");
    let unreachable: Vec<&str> = vec![
        "witness",
        "--url",
        "http://127.0.0.1:1",
        "--key-file",
        witness_key.to_str().expect("utf-8"),
        "--state-dir",
        state.to_str().expect("utf-8"),
        "--api-key",
        &deployment.database.reader_key,
    ];
    let (code, output) = run_cli(&[&unreachable[..], &["--once"]].concat(), None, None);
    assert_eq!(code, 2, "an unreachable log: {output}");
    // Without --once it keeps asking: one 503 or network blip ended a witness.
    let mut looping = std::process::Command::new(crate::testbin::BIN)
        .args(&unreachable)
        .args(["--interval", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the witness runs");
    let stderr = looping.stderr.take().expect("stderr");
    let mut asked = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .filter(|line| line.contains("cannot reach the log; asking again"));
    assert!(
        asked.next().is_some() && asked.next().is_some(),
        "it asks again"
    );
    assert!(
        looping.try_wait().expect("status").is_none(),
        "and is still running"
    );
    looping.kill().expect("kill");
    looping.wait().expect("reaped");
    let (code, output) = witness(&deployment, &state, Some(other_key.trim()));
    assert_eq!(
        code, 2,
        "another log key is the operator's mistake, not the log's: {output}"
    );
    assert!(
        output.contains("is not the key this witness follows"),
        "{output}"
    );

    // The attack: as the superuser, triggers off, rewrite seq 2's content, recompute its digest,
    // every later hash and the session head.
    let superuser = superuser_on(
        deployment.database.name(),
        &[("session_replication_role", "replica")],
    )
    .await;
    sqlx::query(REWRITE_CHAIN)
        .execute(&superuser)
        .await
        .expect("the superuser rewrites the chain");

    // What this issue is about: the chain alone says all is well.
    let verified: Value = deployment
        .client
        .get(deployment.url(0, "/v1/sessions/victim/verify"))
        .bearer_auth(&deployment.database.auditor_key)
        .send()
        .await
        .expect("verify")
        .json()
        .await
        .expect("json");
    println!("GET /v1/sessions/victim/verify after the attack: {verified}");
    assert_eq!(verified["ok"], true, "{verified}");
    assert_ne!(verified["head_hash"].as_str(), Some(original_head.as_str()));

    // The log does not.
    let (code, output) = deployment.verify_checkpoints(&log_key);
    println!("chatledger verify --checkpoints after the attack (exit {code}):\n{output}");
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("acme/victim: NOT AS LOGGED"), "{output}");
    assert!(!output.contains("bystander"), "{output}");

    // An export made before the attack still proves itself, and no longer matches a fresh one:
    // the fresh one's head is not the one in the signed tree.
    let after = deployment.export("victim").await;
    let (old, new) = (trailer(&before), trailer(&after));
    assert_eq!(old["last_seq"], new["last_seq"]);
    assert_ne!(old["head_hash"], new["head_hash"]);
    assert_ne!(before.lines().nth(1), after.lines().nth(1));
    let (code, output) = verify_export(deployment.dir.path(), "before.ndjson", &before, &log_key);
    assert_eq!(code, 0, "{output}");
    let (code, output) = verify_export(deployment.dir.path(), "after.ndjson", &after, &log_key);
    println!("chatledger verify-export --log-key on a fresh export (exit {code}): {output}");
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("not the append of this head"), "{output}");
    let (code, output) =
        independent_verifier(deployment.dir.path(), "before.ndjson", &before, &log_key);
    assert_eq!(code, 0, "{output}");
    let (code, output) =
        independent_verifier(deployment.dir.path(), "after.ndjson", &after, &log_key);
    println!("independent verifier on the fresh export (exit {code}): {output}");
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("not the append of this head"), "{output}");
    // The logged leaf still names the original head, signed.
    let proof = deployment.proof(0, "victim", 7).await;
    check_proof(&proof, &key, "victim", 7, &original_head);

    // The attacker also stole the signing key: they rewrite the log itself to match the new
    // chain and re-sign it. Fresh exports now prove themselves, and the database agrees with
    // itself; what they cannot rewrite is what left the database: the checkpoint directory
    // and the witness, which has accepted an earlier tree of the true log.
    let stolen = std::fs::read_to_string(deployment.dir.path().join("checkpoint.key"))
        .expect("the checkpoint key file");
    let stolen = tlog::SignerKey::from_key_file(&stolen).expect("signer key");
    rewrite_log(&superuser, &stolen).await;
    let forged = deployment.export("victim").await;
    let (code, output) = verify_export(deployment.dir.path(), "forged.ndjson", &forged, &log_key);
    assert_eq!(
        code, 0,
        "with the key stolen, a forged export proves itself: {output}"
    );
    let (code, output) = deployment.verify_checkpoints(&log_key);
    println!("chatledger verify --checkpoints after the log's rewrite (exit {code}):\n{output}");
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("its root is not that of the stored log"),
        "{output}"
    );
    let (code, output) = witness(&deployment, &state, None);
    println!("chatledger witness after the log's rewrite: exit {code} {output}");
    assert_eq!(code, 1, "the witness refuses the rewritten log: {output}");
    assert!(
        output.contains("is not consistent with the accepted one"),
        "{output}"
    );
    assert!(!output.contains("accepted and cosigned"), "{output}");
}

/// The stolen-key attacker's rewrite of the log: every append leaf of `victim` made to name
/// the rewritten chain, every stored hash recomputed, the checkpoints replaced by one signed
/// with `stolen`. Holds the sequencer's lock meanwhile, as a sequencer would.
async fn rewrite_log(superuser: &sqlx::PgPool, stolen: &tlog::SignerKey) {
    let mut tx = superuser.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(x'636c746c6f67'::bigint)")
        .execute(&mut *tx)
        .await
        .expect("lock");
    let leaves: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT leaf_index, leaf FROM tlog_leaves ORDER BY leaf_index")
            .fetch_all(&mut *tx)
            .await
            .expect("leaves");
    let heads: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT e.seq, e.hash FROM entries e JOIN sessions s ON s.id = e.session_pk
          WHERE s.session_id = 'victim'",
    )
    .fetch_all(&mut *tx)
    .await
    .expect("entries");
    let mut range = tlog::CompactRange::new();
    let mut hashes = Vec::new();
    for (index, bytes) in leaves {
        let mut leaf: Value = serde_json::from_slice(&bytes).expect("leaf");
        let mut bytes = bytes;
        if leaf["type"] == "append" && leaf["session_id"] == "victim" {
            let last = leaf["last_seq"].as_i64().expect("last_seq");
            let head = heads.iter().find(|(seq, _)| *seq == last).expect("entry");
            leaf["head_hash"] = Value::String(hex::encode(&head.1));
            bytes = serde_json_canonicalizer::to_vec(&leaf).expect("JCS");
            sqlx::query("UPDATE tlog_leaves SET leaf = $1 WHERE leaf_index = $2")
                .bind(&bytes)
                .bind(index)
                .execute(&mut *tx)
                .await
                .expect("rewrite leaf");
        }
        range
            .append_leaf(&tlog::leaf_hash(&bytes), &mut hashes)
            .expect("append");
    }
    for statement in ["DELETE FROM tlog_hashes", "DELETE FROM tlog_checkpoints"] {
        sqlx::query(statement)
            .execute(&mut *tx)
            .await
            .expect("delete");
    }
    let (idx, hash): (Vec<i64>, Vec<Vec<u8>>) = hashes
        .iter()
        .map(|h| (h.index as i64, h.hash.0.to_vec()))
        .unzip();
    sqlx::query("INSERT INTO tlog_hashes SELECT * FROM unnest($1::bigint[], $2::bytea[])")
        .bind(&idx)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .expect("hashes");
    let signed = tlog::Checkpoint::new("chatledger/test", range.size(), range.root())
        .sign(stolen)
        .expect("sign");
    sqlx::query("INSERT INTO tlog_checkpoints (tree_size, root, note) VALUES ($1, $2, $3)")
        .bind(range.size() as i64)
        .bind(&range.root().0[..])
        .bind(signed.to_note_string())
        .execute(&mut *tx)
        .await
        .expect("checkpoint");
    tx.commit().await.expect("commit");
}

/// The superuser's rewrite of session `victim` (triggers are off in its session).
const REWRITE_CHAIN: &str = r#"
DO $$
DECLARE
    r record;
    v_prev bytea;
    v_next bytea;
    v_tenant text;
    v_sess sessions%ROWTYPE;
BEGIN
    SELECT * INTO STRICT v_sess FROM sessions WHERE session_id = 'victim';
    SELECT name INTO STRICT v_tenant FROM tenants WHERE id = v_sess.tenant_id;
    UPDATE entries
       SET content = '"evil"'::jsonb,
           payload_digest = sha256(salt || convert_to('{"content":"evil","metadata":{}}', 'UTF8'))
     WHERE session_pk = v_sess.id AND seq = 2;
    SELECT hash INTO STRICT v_prev FROM entries WHERE session_pk = v_sess.id AND seq = 1;
    FOR r IN SELECT * FROM entries WHERE session_pk = v_sess.id AND seq >= 2 ORDER BY seq LOOP
        v_next := chatledger_entry_hash(v_prev, v_tenant, v_sess.session_id, r.seq, r.kind, r.role,
            to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            r.idempotency_key, r.author, r.payload_digest);
        UPDATE entries SET prev_hash = v_prev, hash = v_next
         WHERE session_pk = v_sess.id AND seq = r.seq;
        v_prev := v_next;
    END LOOP;
    UPDATE sessions SET head_hash = v_prev WHERE id = v_sess.id;
END
$$"#;

#[tokio::test]
async fn the_checkpoint_routes_answer_as_the_contract_says_and_the_log_is_append_only() {
    let deployment = Deployment::start(1).await;
    let (last_seq, head) = deployment.append(0, "routes", 3).await;
    let proof = deployment.proof(0, "routes", 2).await;
    let key = VerifierKey::parse(&deployment.log_key().await).expect("key");
    check_proof(&proof, &key, "routes", last_seq, &head);
    let db = &deployment.database;
    let get = |path: &str, key: Option<&str>| {
        let request = deployment.client.get(deployment.url(0, path));
        match key {
            Some(key) => request.bearer_auth(key.to_owned()),
            None => request,
        }
        .send()
    };

    // Any tenant key reads the checkpoint and the key; none is 401.
    for role_key in [&db.reader_key, &db.writer_key, &db.auditor_key] {
        let response = get("/v1/checkpoint", Some(role_key)).await.expect("get");
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with("text/plain")
        );
        let max_age: u64 = response.headers()["cache-control"]
            .to_str()
            .expect("ascii")
            .trim_start_matches("max-age=")
            .parse()
            .expect("max-age");
        assert!(max_age <= 5);
        let note = response.text().await.expect("text");
        SignedCheckpoint::open(&note, &key).expect("signed by the served key");
    }
    let response = get("/v1/checkpoint", None).await.expect("get");
    assert_eq!(response.status(), 401);
    let (_, printed) = run_cli(
        &[
            "checkpoint-key",
            "--key-file",
            deployment
                .dir
                .path()
                .join("checkpoint.key")
                .to_str()
                .expect("utf-8"),
        ],
        None,
        None,
    );
    assert_eq!(printed.trim(), key.to_string());

    // Consistency: bad ranges are 400 invalid_parameter; from 0 or equal sizes is empty.
    let size = proof["tree_size"].as_u64().expect("size");
    for query in [
        format!("from={}&to={}", size, size - 1),
        format!("from=1&to={}", size + 1000),
        "from=1".to_owned(),
        "from=x&to=1".to_owned(),
        "from=1&from=1&to=2".to_owned(),
    ] {
        let response = get(
            &format!("/v1/checkpoint/consistency?{query}"),
            Some(&db.reader_key),
        )
        .await
        .expect("get");
        assert_eq!(response.status(), 400, "{query}");
        let problem: Value = response.json().await.expect("problem");
        assert_eq!(problem["code"], "invalid_parameter", "{query}");
    }
    for query in [
        format!("from=0&to={size}"),
        format!("from={size}&to={size}"),
    ] {
        let response = get(
            &format!("/v1/checkpoint/consistency?{query}"),
            Some(&db.writer_key),
        )
        .await
        .expect("get");
        assert_eq!(response.status(), 200, "{query}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["path"], json!([]), "{query}");
    }

    // Proofs: auditors only; a seq not yet appended is 404 not_found, an unknown session and
    // another tenant's session 404 session_not_found (as on every session route); seq 0 is 400.
    let response = get("/v1/sessions/routes/proof?seq=1", Some(&db.reader_key))
        .await
        .expect("get");
    assert_eq!(response.status(), 403);
    let other_auditor = db
        .tenant_with_key("globex", chatledger::auth::KeyRole::Auditor)
        .await;
    for (path, key, status, code) in [
        (
            "/v1/sessions/routes/proof?seq=0",
            &db.auditor_key,
            400,
            "invalid_parameter",
        ),
        (
            "/v1/sessions/routes/proof",
            &db.auditor_key,
            400,
            "invalid_parameter",
        ),
        (
            "/v1/sessions/routes/proof?seq=4",
            &db.auditor_key,
            404,
            "not_found",
        ),
        (
            "/v1/sessions/nobody/proof?seq=1",
            &db.auditor_key,
            404,
            "session_not_found",
        ),
        (
            "/v1/sessions/routes/proof?seq=1",
            &other_auditor,
            404,
            "session_not_found",
        ),
    ] {
        let response = get(path, Some(key)).await.expect("get");
        assert_eq!(response.status(), status, "{path}");
        let problem: Value = response.json().await.expect("problem");
        assert_eq!(problem["code"], code, "{path}");
    }
    // A proof is a recorded read.
    let records: Value = get(
        "/v1/audit/access?action=proof&session_id=routes",
        Some(&db.auditor_key),
    )
    .await
    .expect("get")
    .json()
    .await
    .expect("json");
    assert!(!records["records"].as_array().expect("records").is_empty());
    let openapi: Value = get("/openapi.json", None)
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    for path in [
        "/v1/checkpoint",
        "/v1/checkpoint/key",
        "/v1/checkpoint/consistency",
        "/v1/sessions/{session_id}/proof",
    ] {
        assert!(openapi["paths"][path]["get"].is_object(), "{path}");
    }

    // The runtime role reads the log and writes none of it; nobody rewrites it with the
    // triggers on, the owner included.
    let runtime = db.runtime_pool().await;
    for statement in [
        "INSERT INTO tlog_pending (tenant_id, access_id) VALUES (1, 1)",
        "DELETE FROM tlog_pending",
        "SELECT count(*) FROM tlog_pending",
        "INSERT INTO tlog_hashes VALUES (1000000, sha256(''))",
        "UPDATE tlog_hashes SET hash = sha256('x')",
        "INSERT INTO tlog_checkpoints (tree_size, root, note) VALUES (1000000, sha256(''), 'x')",
        "DELETE FROM tlog_checkpoints",
        "UPDATE tlog_leaves SET leaf = 'x'",
    ] {
        let refused = sqlx::query(statement).execute(&runtime).await;
        assert!(refused.is_err(), "the runtime role may not: {statement}");
    }
    let owner = db.owner_pool().await;
    for statement in [
        "UPDATE tlog_hashes SET hash = sha256('x')",
        "DELETE FROM tlog_hashes",
        "TRUNCATE tlog_hashes",
        "UPDATE tlog_leaves SET leaf = 'x'",
        "DELETE FROM tlog_leaves",
        "UPDATE tlog_checkpoints SET note = 'x'",
        "DELETE FROM tlog_checkpoints",
        "TRUNCATE tlog_checkpoints",
    ] {
        let refused = sqlx::query(statement).execute(&owner).await;
        assert!(refused.is_err(), "the owner may not: {statement}");
    }

    // Access records are leaves too: one rewritten by the superuser after it was logged is
    // reported by `verify --checkpoints`.
    let log_key = key.to_string();
    let (code, output) = deployment.verify_checkpoints(&log_key);
    assert_eq!(code, 0, "{output}");
    // A checkpoint file whose bytes are not text is reported, not skipped.
    let garbled = deployment.checkpoint_dir(0).join("999999.note");
    std::fs::write(&garbled, b"\xff\xfe\n").expect("write");
    let (code, output) = deployment.verify_checkpoints(&log_key);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("checkpoint file 999999.note: not a checkpoint of size 999999"),
        "{output}"
    );
    std::fs::remove_file(&garbled).expect("remove");
    let first_proof: i64 =
        sqlx::query_scalar("SELECT min(access_id) FROM tlog_leaves l WHERE access_id IS NOT NULL")
            .fetch_one(&owner)
            .await
            .expect("a logged access record");
    let url = std::env::var("CHATLEDGER_TEST_SUPERUSER_URL")
        .expect("CHATLEDGER_TEST_SUPERUSER_URL is not set: run ./scripts/test.sh");
    let options: PgConnectOptions = url.parse().expect("superuser URL");
    let superuser = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(
            options
                .database(db.name())
                .options([("session_replication_role", "replica")]),
        )
        .await
        .expect("superuser connects");
    sqlx::query("UPDATE access_records SET client_addr = '10.6.6.6' WHERE id = $1")
        .bind(first_proof)
        .execute(&superuser)
        .await
        .expect("rewrite a record");
    deployment.assert_log_finds(
        &log_key,
        &format!("access record {first_proof} of acme is not the one logged"),
    );
    // A logged record deleted, and one forged with the log's trigger off (as the superuser
    // can): each is reported, and neither hides the rewritten one (a deleted record made the
    // whole page of leaves one finding).
    let deleted: i64 = sqlx::query_scalar(
        "DELETE FROM access_records WHERE id = (SELECT max(access_id) FROM tlog_leaves) RETURNING id",
    )
    .fetch_one(&superuser)
    .await
    .expect("delete a logged record");
    let forged: i64 = sqlx::query_scalar(
        "INSERT INTO access_records (tenant_id, actor, role, action, session_id, detail, status)
         SELECT id, 'key_framed', 'auditor', 'export', 'victim', '{}', 200 FROM tenants
          WHERE name = 'acme'
         RETURNING id",
    )
    .fetch_one(&superuser)
    .await
    .expect("forge a record behind the log's back");
    let (code, output) = deployment.verify_checkpoints(&log_key);
    assert_eq!(code, 1, "{output}");
    for finding in [
        format!("access record {first_proof} of acme is not the one logged"),
        format!("access record {deleted} of acme is gone (deleted)"),
        format!("access record {forged} of acme is not in the log"),
    ] {
        assert!(output.contains(&finding), "{finding}: {output}");
    }
    assert_eq!(deployment.logs.errors(), 0, "{}", deployment.logs.tail());
}

#[tokio::test]
async fn the_sequencer_refuses_to_sign_a_tree_that_does_not_extend_the_last_checkpoint() {
    let deployment = Deployment::start(1).await;
    let (seq, _) = deployment.append(0, "forked", 2).await;
    deployment.proof(0, "forked", seq).await;
    let owner = deployment.database.owner_pool().await;

    // A superuser forges the right-most stored hash: the stored tree no longer has the root
    // that was signed.
    let superuser = superuser_on(
        deployment.database.name(),
        &[("session_replication_role", "replica")],
    )
    .await;
    sqlx::query(
        "UPDATE tlog_hashes SET hash = sha256('forged') WHERE idx = (SELECT max(idx) FROM tlog_hashes)",
    )
    .execute(&superuser)
    .await
    .expect("forge");
    deployment.append(0, "forked", 1).await;

    // A round that read the tree before the forgery may still have signed; none after the
    // first refusal may.
    let refusals = |at_least: usize| {
        let logs = deployment.logs.clone();
        async move {
            let deadline = Instant::now() + COVERAGE;
            while logs.errors() < at_least {
                assert!(Instant::now() < deadline, "no refusal was logged");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    refusals(1).await;
    assert!(
        deployment
            .logs
            .tail()
            .contains("the sequencer refuses to sign"),
        "{}",
        deployment.logs.tail()
    );
    let size = || async {
        sqlx::query_scalar::<_, i64>("SELECT max(tree_size) FROM tlog_checkpoints")
            .fetch_one(&owner)
            .await
            .expect("size")
    };
    let signed = size().await;
    let logged = deployment.logs.errors();
    let refused_rounds = || async {
        (
            deployment
                .metric("chatledger_sequencer_refusals_total")
                .await,
            deployment.metric("chatledger_sequencer_refusing").await,
        )
    };
    let (first, refusing) = refused_rounds().await;
    assert_eq!(refusing, 1.0, "the gauge says the sequencer refuses");
    let deadline = Instant::now() + COVERAGE;
    while refused_rounds().await.0 < first + 2.0 {
        assert!(Instant::now() < deadline, "the sequencer stopped trying");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        size().await,
        signed,
        "nothing is signed over the forged tree"
    );
    assert_eq!(
        deployment.logs.errors(),
        logged,
        "a refusal repeated every round is counted, not logged again within the minute: {}",
        deployment.logs.tail()
    );
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM tlog_pending")
        .fetch_one(&owner)
        .await
        .expect("pending");
    assert!(pending > 0, "the new leaf waits in the queue");
}

/// The sequencer signs only trees that extend the newest checkpoint in its checkpoint
/// directory. A database restored from an older backup (here its log is cut back to an earlier
/// checkpoint, as such a restore leaves it) was signed anew: sizes already published got other
/// roots, a fork that nothing on the server reported.
#[tokio::test]
async fn a_database_behind_the_published_checkpoints_is_refused_not_signed_as_a_fork() {
    let mut deployment = Deployment::start(1).await;
    let (seq, _) = deployment.append(0, "early", 1).await;
    deployment.proof(0, "early", seq).await;
    let owner = deployment.database.owner_pool().await;
    let size = || async {
        sqlx::query_scalar::<_, i64>("SELECT max(tree_size) FROM tlog_checkpoints")
            .fetch_one(&owner)
            .await
            .expect("size")
    };
    let cut = size().await;
    let (seq, _) = deployment.append(0, "later", 3).await;
    deployment.proof(0, "later", seq).await;
    // Everything queued is signed and in the directory (the proof's own access record too).
    let dir = deployment.checkpoint_dir(0);
    let deadline = Instant::now() + COVERAGE;
    let published = loop {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM tlog_pending")
            .fetch_one(&owner)
            .await
            .expect("pending");
        let newest = size().await;
        if pending == 0 && dir.join(format!("{newest}.note")).exists() {
            break newest;
        }
        assert!(Instant::now() < deadline, "the log did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(published > cut);
    let server = deployment.servers.pop().expect("the server");
    assert!(server.terminate().await.success());

    let superuser = superuser_on(
        deployment.database.name(),
        &[("session_replication_role", "replica")],
    )
    .await;
    sqlx::raw_sql(&format!(
        "DELETE FROM tlog_checkpoints WHERE tree_size > {cut};
         DELETE FROM tlog_leaves WHERE leaf_index >= {cut};
         DELETE FROM tlog_hashes WHERE idx >= {};",
        tlog::stored_hash_count(cut as u64)
    ))
    .execute(&superuser)
    .await
    .expect("the log is cut back");
    deployment.add_server(&dir).await;
    deployment.append(0, "after-restore", 1).await;

    let deadline = Instant::now() + COVERAGE;
    while deployment.logs.errors() == 0 {
        assert!(Instant::now() < deadline, "no refusal was logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = deployment.logs.tail();
    assert!(
        log.contains("the sequencer refuses to sign")
            && log.contains(&format!(
                "fewer than the {published} of checkpoint {published}.note"
            )),
        "{log}"
    );
    assert_eq!(size().await, cut, "no size is signed twice");
    assert_eq!(
        deployment.metric("chatledger_sequencer_refusing").await,
        1.0
    );

    // A second server with an empty checkpoint directory has nothing to compare with, and signs
    // the cut log on. The first must not take those checkpoints into its directory (it did, and
    // its refusal then ended on the fork).
    let empty = deployment.dir.path().join("checkpoints-new");
    std::fs::create_dir(&empty).expect("an empty checkpoint dir");
    deployment.add_server(&empty).await;
    for turn in 0..(published - cut + 2) {
        deployment.append(0, &format!("fork-{turn}"), 1).await;
    }
    let refusals = || deployment.metric("chatledger_sequencer_refusals_total");
    let deadline = Instant::now() + COVERAGE;
    while size().await <= published {
        assert!(Instant::now() < deadline, "the unaware server signs on");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Rounds of the first server after the fork passed what it published.
    let before = refusals().await;
    while refusals().await < before + 2.0 {
        assert!(Instant::now() < deadline, "the first server keeps refusing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let newest = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|file| {
            file.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".note")?
                .parse::<i64>()
                .ok()
        })
        .max();
    assert_eq!(newest, Some(published), "the fork is not published");
}

/// A checkpoint file that is not one of this log's (an empty one, as a crash used to leave
/// before files were written whole) is skipped and named at start; it stopped the sequencer for
/// good, so no append was integrated again.
#[tokio::test]
async fn a_newest_checkpoint_file_that_is_not_a_checkpoint_does_not_stop_the_log() {
    let mut deployment = Deployment::start(1).await;
    let (seq, _) = deployment.append(0, "before", 1).await;
    deployment.proof(0, "before", seq).await;
    let server = deployment.servers.pop().expect("the server");
    assert!(server.terminate().await.success());
    let dir = deployment.checkpoint_dir(0);
    std::fs::write(dir.join("999999.note"), "").expect("an empty newest file");
    deployment.add_server(&dir).await;
    let (seq, _) = deployment.append(0, "after", 1).await;
    deployment.proof(0, "after", seq).await;
    assert!(
        deployment
            .logs
            .tail()
            .contains("skipping a checkpoint file"),
        "{}",
        deployment.logs.tail()
    );
}

/// A stored checkpoint's note is what was signed; its `root` column only repeats it. A note
/// moved from another row (validly signed, over another tree) passed `verify --checkpoints`,
/// which checked the note's signature and the column's root.
#[tokio::test]
async fn a_stored_checkpoint_whose_note_signs_another_tree_is_found() {
    let deployment = Deployment::start(1).await;
    for session in ["one", "two"] {
        let (seq, _) = deployment.append(0, session, 1).await;
        deployment.proof(0, session, seq).await;
    }
    let log_key = deployment.log_key().await;
    let (code, output) = deployment.verify_checkpoints(&log_key);
    assert_eq!(code, 0, "{output}");
    let superuser = superuser_on(
        deployment.database.name(),
        &[("session_replication_role", "replica")],
    )
    .await;
    let moved: i64 = sqlx::query_scalar(
        "UPDATE tlog_checkpoints
            SET note = (SELECT note FROM tlog_checkpoints ORDER BY tree_size DESC LIMIT 1)
          WHERE tree_size = (SELECT min(tree_size) FROM tlog_checkpoints)
          RETURNING tree_size",
    )
    .fetch_one(&superuser)
    .await
    .expect("a note moved to another row");
    deployment.assert_log_finds(
        &log_key,
        &format!("stored checkpoint {moved}: its note is not of the tree its row holds"),
    );
}

/// Proofs are built from the stored nodes above the leaves. One forged there (the node over
/// leaves 0 and 1, which a tree of 4 leaves or more no longer reads when it appends) made every
/// proof through it fail, and `verify --checkpoints`, which checked only the leaves' own
/// hashes, found nothing.
#[tokio::test]
async fn a_forged_node_of_the_stored_tree_is_found() {
    let deployment = Deployment::start(1).await;
    for session in ["one", "two", "three"] {
        let (seq, _) = deployment.append(0, session, 1).await;
        deployment.proof(0, session, seq).await;
    }
    let log_key = deployment.log_key().await;
    let (code, output) = deployment.verify_checkpoints(&log_key);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("leaves") && !output.contains(" 0 leaves"),
        "{output}"
    );
    let node = tlog::stored_hash_index(1, 0);
    let superuser = superuser_on(
        deployment.database.name(),
        &[("session_replication_role", "replica")],
    )
    .await;
    let forged = sqlx::query("UPDATE tlog_hashes SET hash = sha256('forged') WHERE idx = $1")
        .bind(node as i64)
        .execute(&superuser)
        .await
        .expect("forge a node");
    assert_eq!(forged.rows_affected(), 1);
    deployment.assert_log_finds(
        &log_key,
        &format!("stored tree hash {node}: not the node its leaves make"),
    );
}

/// The value of an unlabelled metric in Prometheus's text format (0 when it is absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().expect("a metric value"))
}

#[tokio::test]
async fn a_sequencer_configured_for_another_origin_refuses_to_sign_for_the_log() {
    let deployment = Deployment::start(1).await;
    let (seq, _) = deployment.append(0, "renamed", 1).await;
    deployment.proof(0, "renamed", seq).await;
    let owner = deployment.database.owner_pool().await;
    let mut db = owner.acquire().await.expect("connection");
    let renamed = chatledger::ledger::checkpoints::LogSigner {
        key: tlog::SignerKey::generate("chatledger/renamed").expect("key"),
        origin: "chatledger/renamed".to_owned(),
        checkpoint_dir: None,
    };
    // The running server's sequencer may hold the round's lock; a round of ours then waits its
    // turn.
    let deadline = Instant::now() + COVERAGE;
    let refused = loop {
        match chatledger::ledger::checkpoints::sequence_once(&mut db, &renamed, None, 100).await {
            Ok(chatledger::ledger::checkpoints::Round::NotSequencer) => {
                assert!(Instant::now() < deadline, "never got the sequencer's lock");
                tokio::task::yield_now().await;
            }
            other => break other,
        }
    };
    let error = refused.expect_err("refused");
    assert!(
        matches!(
            &error,
            chatledger::ledger::checkpoints::SequencerError::OtherOrigin { signed, configured }
                if signed == "chatledger/test" && configured == "chatledger/renamed"
        ),
        "{error}"
    );
    let origins: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT split_part(note, E'\\n', 1) FROM tlog_checkpoints")
            .fetch_all(&owner)
            .await
            .expect("origins");
    assert_eq!(origins, ["chatledger/test"]);
}

#[tokio::test]
async fn the_log_queue_takes_only_append_leaves_and_access_leaves() {
    let database = TestDatabase::new().await;
    let owner = database.owner_pool().await;
    let queued = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tlog_pending")
            .fetch_one(&owner)
            .await
            .expect("count")
    };
    let before = queued().await;
    let head = "'\\x' || repeat('ab', 32)";
    let short = "'\\x' || repeat('ab', 31)";
    for (what, values) in [
        ("no head", "1, 's', 1, 1, NULL, NULL".to_owned()),
        (
            "no end of its range",
            format!("1, 's', 1, NULL, ({head})::bytea, NULL"),
        ),
        (
            "nothing at all",
            "1, NULL, NULL, NULL, NULL, NULL".to_owned(),
        ),
        (
            "a head of 31 bytes",
            format!("1, 's', 1, 1, ({short})::bytea, NULL"),
        ),
        (
            "a range that ends before it starts",
            format!("1, 's', 2, 1, ({head})::bytea, NULL"),
        ),
        (
            "no session",
            format!("1, NULL, 1, 1, ({head})::bytea, NULL"),
        ),
        (
            "an append and an access record at once",
            format!("1, 's', 1, 1, ({head})::bytea, 7"),
        ),
        (
            "an access record with a seq",
            "1, NULL, 1, NULL, NULL, 7".to_owned(),
        ),
    ] {
        let refused = sqlx::query(&format!(
            "INSERT INTO tlog_pending (tenant_id, session_id, first_seq, last_seq, head_hash, access_id)
             VALUES ({values})"
        ))
        .execute(&owner)
        .await
        .expect_err(what);
        let code = refused
            .as_database_error()
            .and_then(|error| error.code())
            .map(|code| code.into_owned());
        assert_eq!(code.as_deref(), Some("23514"), "{what}: {refused}");
    }
    assert_eq!(queued().await, before);
}

#[tokio::test]
async fn a_checkpoint_file_that_cannot_be_written_is_counted_every_round_and_logged_once() {
    let deployment = Deployment::start(1).await;
    let (seq, _) = deployment.append(0, "files", 1).await;
    deployment.proof(0, "files", seq).await;
    // Whatever sizes the next checkpoints take, their files already exist with other contents.
    let dir = deployment.checkpoint_dir(0);
    let largest = std::fs::read_dir(&dir)
        .expect("checkpoint dir")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".note")?.parse::<u64>().ok()
        })
        .max()
        .expect("a checkpoint file");
    for size in largest + 1..largest + 50 {
        std::fs::write(dir.join(format!("{size}.note")), "not this log's\n").expect("write");
    }
    let errors_before = deployment.logs.errors();
    deployment.append(0, "files", 1).await;

    let failed_rounds = || deployment.metric("chatledger_checkpoint_file_errors_total");
    let deadline = Instant::now() + COVERAGE;
    while deployment.logs.errors() == errors_before {
        assert!(Instant::now() < deadline, "no error was logged");
        tokio::task::yield_now().await;
    }
    assert!(
        deployment
            .logs
            .tail()
            .contains("cannot write a checkpoint file"),
        "{}",
        deployment.logs.tail()
    );
    while failed_rounds().await < 5.0 {
        assert!(Instant::now() < deadline, "no failed round was counted");
        tokio::task::yield_now().await;
    }
    assert_eq!(
        deployment.logs.errors(),
        errors_before + 1,
        "five failed rounds, one error in the log"
    );
}
