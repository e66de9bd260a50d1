//! The fault suite's harness: a client that appends tagged turns with idempotency keys,
//! retrying indeterminate attempts with the same key and body, and the set-up the scenarios on an
//! external database share. The real binary as a child process (killed, restarted on the same
//! port) is `tests/common/binary.rs`, shared with the API suite.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::postgres::PgPool;

use crate::checker::{Outcome, ReadBack, Receipt, SentTurn, turn_messages};
use crate::testbin::{Logs, Server, Store, TempDir};
pub use crate::testdb::TestDatabase;

/// Scenarios run one at a time, so that their timings measure the server and not each other.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The admin key of every server started on an external database.
pub const ADMIN_KEY: &str = "faults-admin-key-0123456789abcdef0123456789";

/// One tenant's keys.
#[derive(Debug, Clone)]
pub struct Keys {
    pub writer: String,
    pub reader: String,
    pub auditor: String,
}

impl Keys {
    /// The keys of a test database's tenant.
    pub fn of(database: &TestDatabase) -> Self {
        Self {
            writer: database.writer_key.clone(),
            reader: database.reader_key.clone(),
            auditor: database.auditor_key.clone(),
        }
    }
}

/// What a scenario on an external database starts from: a fresh test database, a temp dir
/// with the admin key file, and one log shared by every server started on them.
pub struct OnDatabase {
    pub database: TestDatabase,
    pub store: Store,
    pub logs: Arc<Logs>,
    _dir: TempDir,
}

impl OnDatabase {
    pub async fn new(label: &str) -> Self {
        let database = TestDatabase::new().await;
        let dir = TempDir::new(&format!("faults-{label}"));
        let store = Store::External {
            url: database.owner_url.clone(),
            admin_key_file: dir.admin_key_file(ADMIN_KEY),
        };
        Self {
            database,
            store,
            logs: Arc::new(Logs::default()),
            _dir: dir,
        }
    }

    /// A server on any free port, with `extra` flags.
    pub async fn start(&self, extra: &[&str]) -> Server {
        Server::start(&self.store, 0, extra, &self.logs)
            .await
            .expect("chatledger starts")
    }

    /// A server on exactly `port` (again after a SIGKILL).
    pub async fn start_on(&self, port: u16) -> Server {
        Server::start_on(&self.store, port, &[], &self.logs).await
    }

    /// A client of `server` with the tenant's keys.
    pub fn api(&self, server: &Server, timeout: Duration) -> Api {
        Api::new(&server.address, Keys::of(&self.database), timeout)
    }
}

/// A random duration in `[low, high)` milliseconds, for load shaping and retry jitter.
pub fn millis_between(low: u64, high: u64) -> Duration {
    Duration::from_millis(rand::random_range(low..high.max(low + 1)))
}

/// One HTTP attempt as the client saw it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub started: Instant,
    pub elapsed: Duration,
    pub answer: Answer,
}

impl Attempt {
    pub fn ended(&self) -> Instant {
        self.started + self.elapsed
    }

    pub fn status(&self) -> Option<u16> {
        match self.answer {
            Answer::Status { status, .. } => Some(status),
            Answer::None(_) => None,
        }
    }

    pub fn replayed(&self) -> bool {
        matches!(self.answer, Answer::Status { replayed: true, .. })
    }

    /// True for a 503 problem document with code `unavailable` and a `Retry-After` header.
    pub fn is_proper_503(&self) -> bool {
        match &self.answer {
            Answer::Status {
                status: 503,
                code: Some(code),
                retry_after,
                ..
            } => code == "unavailable" && *retry_after,
            _ => false,
        }
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub enum Answer {
    Status {
        status: u16,
        code: Option<String>,
        retry_after: bool,
        replayed: bool,
    },
    /// No HTTP answer: connection refused or reset, or the client timed out.
    None(String),
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Status {
                status,
                code,
                retry_after,
                ..
            } => write!(f, "{status} {code:?} (Retry-After: {retry_after})"),
            Answer::None(why) => write!(f, "no answer: {why}"),
        }
    }
}

/// A client of one server address.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
    pub keys: Keys,
}

impl Api {
    pub fn new(base: &str, keys: Keys, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("client");
        Self {
            client,
            base: base.to_owned(),
            keys,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `request` and records the attempt; returns the JSON body when there is one.
    pub async fn attempt(&self, request: reqwest::RequestBuilder) -> (Attempt, Option<Value>) {
        let started = Instant::now();
        let (answer, body) = match request.send().await {
            Ok(response) => {
                let header = |name: &str| response.headers().get(name).is_some();
                let (retry_after, replayed) = (
                    header("retry-after"),
                    response
                        .headers()
                        .get("idempotent-replayed")
                        .is_some_and(|value| value == "true"),
                );
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(bytes) => {
                        let body = serde_json::from_slice::<Value>(&bytes).ok();
                        let code = body
                            .as_ref()
                            .and_then(|body| body["code"].as_str())
                            .map(str::to_owned);
                        (
                            Answer::Status {
                                status,
                                code,
                                retry_after,
                                replayed,
                            },
                            body,
                        )
                    }
                    Err(error) => (Answer::None(format!("body: {error}")), None),
                }
            }
            Err(error) => (Answer::None(error.to_string()), None),
        };
        let attempt = Attempt {
            started,
            elapsed: started.elapsed(),
            answer,
        };
        (attempt, body)
    }

    /// One append attempt of `body` with an idempotency key.
    pub async fn append(&self, session: &str, key: &str, body: &Value) -> (Attempt, Option<Value>) {
        let request = self
            .client
            .post(self.url(&format!("/v1/sessions/{session}/messages")))
            .bearer_auth(&self.keys.writer)
            .header("Idempotency-Key", key)
            .json(body);
        self.attempt(request).await
    }

    /// The session's last seq (0 for a missing session), or `None` when no answer says.
    async fn head(&self, session: &str) -> Option<i64> {
        let request = self
            .client
            .get(self.url(&format!("/v1/sessions/{session}")))
            .bearer_auth(&self.keys.reader);
        match self.attempt(request).await {
            (attempt, _) if attempt.status() == Some(404) => Some(0),
            (attempt, Some(body)) if attempt.status() == Some(200) => body["last_seq"].as_i64(),
            _ => None,
        }
    }

    /// GET with `key`, retried (bounded) until a 200; the raw body.
    async fn get_ok(&self, path: &str, key: &str) -> Vec<u8> {
        let mut last = String::new();
        for _ in 0..50 {
            match self
                .client
                .get(self.url(path))
                .bearer_auth(key)
                .send()
                .await
            {
                Ok(response) if response.status() == 200 => match response.bytes().await {
                    Ok(bytes) => return bytes.to_vec(),
                    Err(error) => last = error.to_string(),
                },
                Ok(response) => last = format!("status {}", response.status()),
                Err(error) => last = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("GET {path} never answered 200: {last}");
    }

    /// Everything the server holds of `session`: every page of `messages`, and the export.
    pub async fn read_back(&self, session: &str) -> ReadBack {
        let mut entries = Vec::new();
        let mut after = 0;
        let mut last_seq = 0;
        for _ in 0..100_000 {
            let path = format!("/v1/sessions/{session}/messages?after_seq={after}&limit=1000");
            let page: Value = serde_json::from_slice(&self.get_ok(&path, &self.keys.reader).await)
                .expect("a page is JSON");
            last_seq = page["last_seq"].as_i64().expect("last_seq");
            entries.extend(page["entries"].as_array().expect("entries").iter().cloned());
            match page["next_after_seq"].as_i64() {
                Some(next) => after = next,
                None => break,
            }
        }
        let export = self
            .get_ok(
                &format!("/v1/sessions/{session}/export"),
                &self.keys.auditor,
            )
            .await;
        ReadBack {
            session: session.to_owned(),
            last_seq,
            entries,
            export: Some(export),
        }
    }
}

/// A turn to append: two tagged messages, one idempotency key for its whole life.
#[derive(Debug, Clone)]
pub struct Turn {
    pub session: String,
    pub writer: u64,
    pub turn: u64,
    pub key: String,
    pub messages: Vec<Value>,
    /// Sends `expected_seq` (read from the session's head) instead of appending blindly.
    pub optimistic: bool,
}

impl Turn {
    pub fn new(session: &str, writer: u64, turn: u64, optimistic: bool, filler: &str) -> Self {
        Self {
            session: session.to_owned(),
            writer,
            turn,
            key: format!("w{writer}-t{turn}-{:08x}", rand::random::<u32>()),
            messages: turn_messages(writer, turn, filler),
            optimistic,
        }
    }

    pub fn body(&self, expected_seq: Option<i64>) -> Value {
        match expected_seq {
            Some(expected) => json!({"expected_seq": expected, "messages": self.messages}),
            None => json!({"messages": self.messages}),
        }
    }

    /// The client's record of this turn for the checker.
    pub fn record(&self, outcome: Outcome) -> SentTurn {
        SentTurn {
            session: self.session.clone(),
            writer: self.writer,
            turn: self.turn,
            messages: self.messages.clone(),
            outcome,
        }
    }
}

/// How hard a writer tries before leaving a turn's outcome unknown.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: usize,
    pub deadline: Duration,
    /// Pause after an attempt without a trustworthy answer (jittered by +-50%).
    pub backoff: Duration,
}

impl Retry {
    /// One attempt, no retry: for seeding, and for retries whose every attempt is counted.
    pub const ONCE: Retry = Retry {
        attempts: 1,
        deadline: Duration::from_secs(30),
        backoff: Duration::ZERO,
    };
}

/// A turn's fate: the checker's record, every attempt, and anything the contract forbids.
#[derive(Debug)]
pub struct Written {
    pub record: SentTurn,
    pub attempts: Vec<Attempt>,
    pub conflicts: usize,
    /// Answers no retry can fix (a 4xx other than an optimistic writer's 409, a 201 without a
    /// readable receipt), each described.
    pub unexpected: Vec<String>,
}

impl Written {
    pub fn acknowledged(&self) -> bool {
        matches!(self.record.outcome, Outcome::Acknowledged(_))
    }
}

/// `writers` writers, writer `id` on `sessions[id % len]`, appending turns until `stop`, each
/// pausing `pause` (a range of milliseconds) between turns; each returns every turn's fate.
pub fn spawn_writers(
    api: &Api,
    sessions: &[String],
    writers: u64,
    stop: &Arc<AtomicBool>,
    retry: Retry,
    pause: (u64, u64),
) -> Vec<tokio::task::JoinHandle<Vec<Written>>> {
    (0..writers)
        .map(|id| {
            let session = sessions[(id % sessions.len() as u64) as usize].clone();
            tokio::spawn(write_until(
                api.clone(),
                session,
                id,
                stop.clone(),
                retry,
                pause,
            ))
        })
        .collect()
}

/// One writer of [`spawn_writers`]; even writers are optimistic.
async fn write_until(
    api: Api,
    session: String,
    writer: u64,
    stop: Arc<AtomicBool>,
    retry: Retry,
    pause: (u64, u64),
) -> Vec<Written> {
    let mut written = Vec::new();
    for turn in 0..100_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let turn = Turn::new(&session, writer, turn, writer.is_multiple_of(2), "");
        written.push(write_turn(&api, &turn, retry).await);
        tokio::time::sleep(millis_between(pause.0, pause.1)).await;
    }
    written
}

/// Appends `turn` until a 201, retrying with the same key and body after an attempt without a
/// trustworthy answer (no answer, 5xx); an optimistic writer re-reads the head only after a
/// 409, which proves that nothing was written.
pub async fn write_turn(api: &Api, turn: &Turn, retry: Retry) -> Written {
    let started = Instant::now();
    let mut written = Written {
        record: turn.record(Outcome::Unknown),
        attempts: Vec::new(),
        conflicts: 0,
        unexpected: Vec::new(),
    };
    let mut expected = None;
    let mut stale = turn.optimistic;
    while written.attempts.len() < retry.attempts && started.elapsed() < retry.deadline {
        if stale {
            match api.head(&turn.session).await {
                Some(head) => (expected, stale) = (Some(head), false),
                None => {
                    tokio::time::sleep(jitter(retry.backoff)).await;
                    continue;
                }
            }
        }
        let (attempt, body) = api
            .append(&turn.session, &turn.key, &turn.body(expected))
            .await;
        let answer = attempt.answer.clone();
        written.attempts.push(attempt);
        match answer {
            Answer::Status { status: 201, .. } => {
                match body.as_ref().and_then(Receipt::from_response) {
                    Some(receipt) => written.record.outcome = Outcome::Acknowledged(receipt),
                    None => written
                        .unexpected
                        .push(format!("201 without a receipt: {body:?}")),
                }
                break;
            }
            Answer::Status {
                status: 409,
                code: Some(code),
                ..
            } if turn.optimistic && code == "seq_conflict" => {
                written.conflicts += 1;
                stale = true;
            }
            Answer::Status { status: 500.., .. } | Answer::None(_) => {
                tokio::time::sleep(jitter(retry.backoff)).await;
            }
            Answer::Status { status, code, .. } => {
                written.unexpected.push(format!(
                    "{} (key {}): {status} {code:?} {body:?}",
                    turn.session, turn.key
                ));
                break;
            }
        }
    }
    written
}

/// One attempt of `turn` that must be acknowledged (a seed, or the retry of an abandoned turn).
pub async fn write_acknowledged(api: &Api, turn: &Turn) -> Written {
    let written = write_turn(api, turn, Retry::ONCE).await;
    assert!(
        written.acknowledged(),
        "{} (key {}): {:?}",
        turn.session,
        turn.key,
        written.attempts
    );
    written
}

fn jitter(base: Duration) -> Duration {
    base.mul_f64(0.5 + rand::random::<f64>())
}

/// Counts of the answers in `attempts`: (no answer, 201, 409, 503, other 5xx, replays).
#[derive(Debug, Default)]
pub struct Tally {
    pub attempts: usize,
    pub no_answer: usize,
    pub created: usize,
    pub conflicts: usize,
    pub unavailable: usize,
    pub improper_503: usize,
    pub other_5xx: usize,
    pub replayed: usize,
}

impl Tally {
    pub fn of<'a>(attempts: impl IntoIterator<Item = &'a Attempt>) -> Self {
        let mut tally = Tally::default();
        for attempt in attempts {
            tally.attempts += 1;
            tally.replayed += usize::from(attempt.replayed());
            match attempt.status() {
                None => tally.no_answer += 1,
                Some(201) => tally.created += 1,
                Some(409) => tally.conflicts += 1,
                Some(503) if attempt.is_proper_503() => tally.unavailable += 1,
                Some(503) => tally.improper_503 += 1,
                Some(500..) => tally.other_5xx += 1,
                Some(_) => {}
            }
        }
        tally
    }
}

/// chatledger's backends on one database, by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Every backend not plainly idle (active, idle in transaction, starting up, ...).
    pub busy: i64,
    pub idle_in_transaction: i64,
}

pub async fn activity(owner: &PgPool, database: &str) -> Activity {
    let (busy, idle_in_transaction): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state IS DISTINCT FROM 'idle'),
                count(*) FILTER (WHERE state LIKE 'idle in transaction%')
           FROM pg_stat_activity
          WHERE datname = $1 AND application_name = 'chatledger'",
    )
    .bind(database)
    .fetch_one(owner)
    .await
    .expect("pg_stat_activity");
    Activity {
        busy,
        idle_in_transaction,
    }
}

/// Reads every session back and runs the checker; panics with the reports unless all are clean.
pub async fn assert_clean_history(api: &Api, sessions: &[String], sent: &[SentTurn]) -> usize {
    let mut reads = Vec::new();
    for session in sessions {
        reads.push(api.read_back(session).await);
    }
    let reports = crate::checker::check(sent, &reads);
    let dirty: Vec<String> = reports
        .iter()
        .filter(|report| report.anomalies() > 0)
        .map(ToString::to_string)
        .collect();
    for report in &reports {
        println!("  {report}");
    }
    assert!(
        dirty.is_empty(),
        "the checker found anomalies:\n{}",
        dirty.join("\n")
    );
    reports.iter().map(|report| report.entries).sum()
}
