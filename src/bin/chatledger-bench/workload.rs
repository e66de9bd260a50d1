//! The workloads: what each client task sends, in a loop bounded by time and request count.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use hyper::Uri;
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::http::{BoxError, Client};
use crate::stats::Recorder;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Turns of 2 messages (`--turn-messages`) with `expected_seq` from the tracked head; a 409 is counted and
    /// retried with `current_seq`.
    Append,
    /// Turns of 2 messages (`--turn-messages`) without `expected_seq`.
    Blind,
    /// `GET /context?limit=20` (the context window) of a random session.
    Context,
    /// `GET /messages?after_seq=..&limit=100` at a random offset of a random session.
    Paged,
    /// Contention: per turn a context read, then an append with `expected_seq` from it
    /// (default 32 clients on 10 sessions); conflicts counted and retried with `current_seq`.
    Hot,
    /// Only the warm-up fill (`--prefill` entries per session), nothing measured.
    Prefill,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Append => "append",
            Workload::Blind => "blind",
            Workload::Context => "context",
            Workload::Paged => "paged",
            Workload::Hot => "hot",
            Workload::Prefill => "prefill",
        }
    }

    pub fn default_clients(self) -> usize {
        if self == Workload::Hot { 32 } else { 8 }
    }

    pub fn default_sessions(self) -> usize {
        if self == Workload::Hot { 10 } else { 100 }
    }

    /// Entries each session gets before the measurement starts.
    pub fn default_prefill(self) -> u64 {
        match self {
            Workload::Context => 40,
            Workload::Paged => 300,
            Workload::Hot => 20,
            Workload::Append | Workload::Blind | Workload::Prefill => 0,
        }
    }
}

/// One session's request targets, parsed once.
pub struct SessionTarget {
    pub id: String,
    pub messages: Uri,
    pub context: Uri,
    pub summary: Uri,
}

impl SessionTarget {
    pub fn new(id: String, context_limit: u32) -> Result<Self, BoxError> {
        Ok(Self {
            messages: format!("/v1/sessions/{id}/messages").parse()?,
            context: format!("/v1/sessions/{id}/context?limit={context_limit}").parse()?,
            summary: format!("/v1/sessions/{id}").parse()?,
            id,
        })
    }
}

/// Everything the client tasks share.
pub struct Plan {
    pub workload: Workload,
    pub sessions: Vec<SessionTarget>,
    pub clients: usize,
    pub page_limit: u32,
    pub max_retries: u32,
    pub user_chars: usize,
    pub assistant_chars: usize,
    /// Messages per append turn.
    pub turn_messages: usize,
    pub idempotency_keys: bool,
    pub measure_start: Instant,
    pub measure_end: Instant,
    /// Measured requests allowed in total (`--requests`), counted across clients.
    pub budget: Option<u64>,
    pub spent: AtomicU64,
    pub seed: u64,
}

enum Slot {
    Warmup,
    Measured,
}

impl Plan {
    /// Whether another request may start, and whether it is measured.
    fn admit(&self) -> Option<Slot> {
        let now = Instant::now();
        if now >= self.measure_end {
            return None;
        }
        if now < self.measure_start {
            return Some(Slot::Warmup);
        }
        if let Some(budget) = self.budget
            && self.spent.fetch_add(1, Ordering::Relaxed) >= budget
        {
            return None;
        }
        Some(Slot::Measured)
    }
}

// ---- request bodies, built once per client ----

const WORDS: &[&str] = &[
    "the",
    "order",
    "shipped",
    "customer",
    "refund",
    "account",
    "please",
    "thanks",
    "delivery",
    "tracking",
    "number",
    "invoice",
    "payment",
    "policy",
    "support",
    "address",
    "package",
    "warehouse",
    "status",
    "update",
    "we",
    "can",
    "you",
    "your",
    "will",
    "be",
    "it",
    "is",
    "a",
    "to",
    "of",
    "and",
    "in",
    "for",
    "on",
    "with",
    "that",
    "this",
    "have",
    "has",
    "been",
    "was",
    "check",
    "again",
    "tomorrow",
    "today",
    "business",
    "days",
    "email",
    "confirmation",
    "model",
    "answer",
    "question",
    "context",
    "ledger",
    "assistant",
    "user",
    "sorry",
    "happy",
    "help",
];

/// Text of exactly `chars` ASCII characters that reads like prose (JSON-safe: no quotes,
/// backslashes or control characters).
pub fn prose(rng: &mut impl Rng, chars: usize) -> String {
    let mut text = String::with_capacity(chars + 16);
    let mut sentence_start = true;
    while text.len() < chars {
        let word = WORDS[rng.random_range(0..WORDS.len())];
        if sentence_start {
            let mut letters = word.chars();
            if let Some(first) = letters.next() {
                text.extend(first.to_uppercase());
                text.push_str(letters.as_str());
            }
        } else {
            text.push_str(word);
        }
        sentence_start = rng.random_ratio(1, 9);
        text.push_str(if sentence_start {
            ". "
        } else if rng.random_ratio(1, 12) {
            ", "
        } else {
            " "
        });
    }
    text.truncate(chars);
    if chars > 0 {
        text.pop();
        text.push('.');
    }
    text
}

/// Prebuilt append bodies: a few turn variants, and prefill batches by size.
pub struct Bodies {
    /// `,"messages":[...]}` of a 2-message turn, to follow `{"expected_seq":N`.
    turn_tails: Vec<String>,
    /// `{"messages":[...]}` of a 2-message turn.
    blind_turns: Vec<Bytes>,
    user: Vec<String>,
    assistant: Vec<String>,
    batches: HashMap<usize, Bytes>,
}

impl Bodies {
    /// `turn` is the number of messages of a turn (2: a user and an assistant message).
    pub fn new(rng: &mut impl Rng, user_chars: usize, assistant_chars: usize, turn: usize) -> Self {
        const VARIANTS: usize = 4;
        let user: Vec<String> = (0..VARIANTS).map(|_| prose(rng, user_chars)).collect();
        let assistant: Vec<String> = (0..VARIANTS).map(|_| prose(rng, assistant_chars)).collect();
        let messages: Vec<String> = (0..VARIANTS)
            .map(|v| {
                let turn: Vec<serde_json::Value> = (0..turn)
                    .map(|i| {
                        let v = (v + i / 2) % VARIANTS;
                        if i % 2 == 0 {
                            serde_json::json!({"role": "user", "content": user[v]})
                        } else {
                            serde_json::json!({"role": "assistant", "content": assistant[v]})
                        }
                    })
                    .collect();
                serde_json::Value::Array(turn).to_string()
            })
            .collect();
        Self {
            turn_tails: messages
                .iter()
                .map(|m| format!(",\"messages\":{m}}}"))
                .collect(),
            blind_turns: messages
                .iter()
                .map(|m| Bytes::from(format!("{{\"messages\":{m}}}")))
                .collect(),
            user,
            assistant,
            batches: HashMap::new(),
        }
    }

    pub fn turn(&self, rng: &mut impl Rng, expected_seq: i64) -> Bytes {
        let tail = &self.turn_tails[rng.random_range(0..self.turn_tails.len())];
        let mut body = String::with_capacity(tail.len() + 32);
        body.push_str("{\"expected_seq\":");
        body.push_str(&expected_seq.to_string());
        body.push_str(tail);
        Bytes::from(body)
    }

    pub fn blind(&self, rng: &mut impl Rng) -> Bytes {
        self.blind_turns[rng.random_range(0..self.blind_turns.len())].clone()
    }

    /// A batch of `count` messages alternating user / assistant, without expected_seq.
    pub fn batch(&mut self, count: usize) -> Bytes {
        let (user, assistant) = (&self.user, &self.assistant);
        self.batches
            .entry(count)
            .or_insert_with(|| {
                let messages: Vec<serde_json::Value> = (0..count)
                    .map(|i| {
                        let v = (i / 2) % user.len();
                        if i % 2 == 0 {
                            serde_json::json!({"role": "user", "content": user[v]})
                        } else {
                            serde_json::json!({"role": "assistant", "content": assistant[v]})
                        }
                    })
                    .collect();
                Bytes::from(serde_json::json!({ "messages": messages }).to_string())
            })
            .clone()
    }
}

#[derive(Deserialize)]
struct Head {
    last_seq: Option<i64>,
    current_seq: Option<i64>,
}

fn head_of(body: &[u8]) -> Option<i64> {
    let head: Head = serde_json::from_slice(body).ok()?;
    head.last_seq.or(head.current_seq)
}

// ---- setup: survey the heads and fill each session ----

/// What one client found and wrote while preparing its share of the sessions.
pub struct Prepared {
    pub heads: Vec<(usize, i64)>,
    pub messages_written: u64,
    pub requests: u64,
}

/// Reads the head of every session `index` is responsible for (`i % clients == index`), then
/// appends until each has at least `prefill` entries, in batches of at most `batch`.
pub async fn prepare(
    plan: &Plan,
    client: &mut Client,
    index: usize,
    prefill: u64,
    batch: usize,
    rng: &mut impl Rng,
) -> Result<Prepared, BoxError> {
    let mut bodies = Bodies::new(rng, plan.user_chars, plan.assistant_chars, 2);
    let mut out = Prepared {
        heads: Vec::new(),
        messages_written: 0,
        requests: 0,
    };
    for (i, session) in plan.sessions.iter().enumerate() {
        if i % plan.clients != index {
            continue;
        }
        let reply = client.get(session.summary.clone()).await?;
        out.requests += 1;
        let mut head = match reply.status.as_u16() {
            200 => head_of(&reply.body).ok_or("session summary without last_seq")?,
            404 => 0,
            status => {
                return Err(format!(
                    "GET {} answered {status}: {}",
                    session.summary,
                    String::from_utf8_lossy(&reply.body)
                )
                .into());
            }
        };
        let mut rounds = prefill / batch.max(1) as u64 + 10;
        while (head as u64) < prefill && rounds > 0 {
            rounds -= 1;
            let count = usize::try_from(prefill - head as u64)
                .unwrap_or(batch)
                .min(batch);
            let reply = client
                .post(session.messages.clone(), bodies.batch(count))
                .await?;
            out.requests += 1;
            if reply.status.as_u16() != 201 {
                return Err(format!(
                    "prefill append to {} answered {}: {}",
                    session.id,
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                )
                .into());
            }
            head = head_of(&reply.body).ok_or("201 without last_seq")?;
            out.messages_written += count as u64;
        }
        out.heads.push((i, head));
    }
    Ok(out)
}

// ---- the measured loop ----

/// What one client task hands back.
pub struct Outcome {
    pub recorders: BTreeMap<&'static str, Recorder>,
    /// When its last measured request was answered.
    pub last_answer: Option<Instant>,
    pub connects: u64,
}

struct Worker<'a> {
    plan: &'a Plan,
    client: Client,
    rng: SmallRng,
    bodies: Bodies,
    heads: Vec<i64>,
    recorders: BTreeMap<&'static str, Recorder>,
    last_answer: Option<Instant>,
    turn: u64,
    index: usize,
}

enum Step {
    Continue,
    Stop,
}

pub async fn run(plan: Arc<Plan>, client: Client, index: usize, heads: Vec<i64>) -> Outcome {
    let mut rng =
        SmallRng::seed_from_u64(plan.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let bodies = Bodies::new(
        &mut rng,
        plan.user_chars,
        plan.assistant_chars,
        plan.turn_messages,
    );
    let mut worker = Worker {
        plan: &plan,
        client,
        rng,
        bodies,
        heads,
        recorders: BTreeMap::new(),
        last_answer: None,
        turn: 0,
        index,
    };
    // Sessions this client owns when there are enough to go round (no conflicts by design).
    let owned: Vec<usize> = (0..plan.sessions.len())
        .filter(|i| i % plan.clients == index)
        .collect();
    let mut cursor = 0usize;
    loop {
        let random = worker.rng.random_range(0..plan.sessions.len());
        let step = match plan.workload {
            Workload::Append => {
                let session = if owned.is_empty() {
                    random
                } else {
                    cursor = (cursor + 1) % owned.len();
                    owned[cursor]
                };
                worker.append_turn(session, "append").await
            }
            Workload::Blind => worker.blind_turn(random).await,
            Workload::Context => worker.context(random, "context").await.0,
            Workload::Paged => worker.paged(random).await,
            Workload::Hot => match worker.context(random, "hot_context").await {
                (Step::Continue, true) => worker.append_turn(random, "hot_append").await,
                (Step::Continue, false) => Step::Continue,
                (Step::Stop, _) => Step::Stop,
            },
            Workload::Prefill => Step::Stop,
        };
        if let Step::Stop = step {
            break;
        }
    }
    Outcome {
        recorders: worker.recorders,
        last_answer: worker.last_answer,
        connects: worker.client.connects,
    }
}

impl Worker<'_> {
    /// Sends one request if the plan still admits one; records it when measured.
    async fn exchange(
        &mut self,
        op: &'static str,
        post: Option<Bytes>,
        uri: Uri,
        idempotency: Option<HeaderValue>,
    ) -> Option<(bool, Result<(u16, Bytes), ()>)> {
        let slot = self.plan.admit()?;
        let started = Instant::now();
        let result = match post {
            Some(body) => {
                let extra = idempotency.map(|value| ("idempotency-key", value));
                self.client
                    .send(hyper::Method::POST, uri, Some(body), extra)
                    .await
            }
            None => self.client.get(uri).await,
        };
        let latency = started.elapsed();
        let measured = matches!(slot, Slot::Measured);
        match result {
            Ok(reply) => {
                let status = reply.status.as_u16();
                if measured {
                    self.recorders
                        .entry(op)
                        .or_default()
                        .answered(status, latency);
                    self.last_answer = Some(Instant::now());
                }
                Some((measured, Ok((status, reply.body))))
            }
            Err(error) => {
                if measured {
                    self.recorders
                        .entry(op)
                        .or_default()
                        .failed(error.to_string());
                    self.last_answer = Some(Instant::now());
                }
                // Do not spin against a server that is down.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((measured, Err(())))
            }
        }
    }

    fn idempotency_key(&mut self) -> Option<HeaderValue> {
        if !self.plan.idempotency_keys {
            return None;
        }
        self.turn += 1;
        let value = format!("bench-{:x}-{}-{}", self.plan.seed, self.index, self.turn);
        HeaderValue::from_str(&value).ok()
    }

    /// One turn with `expected_seq`; a 409 moves the head to `current_seq` and retries.
    async fn append_turn(&mut self, session: usize, op: &'static str) -> Step {
        let key = self.idempotency_key();
        for _ in 0..=self.plan.max_retries {
            let body = self.bodies.turn(&mut self.rng, self.heads[session]);
            let uri = self.plan.sessions[session].messages.clone();
            let Some((measured, result)) = self.exchange(op, Some(body), uri, key.clone()).await
            else {
                return Step::Stop;
            };
            let Ok((status, body)) = result else {
                return Step::Continue;
            };
            match status {
                201 => {
                    if let Some(head) = head_of(&body) {
                        self.heads[session] = head;
                    }
                    if measured {
                        self.recorders.entry(op).or_default().messages +=
                            self.plan.turn_messages as u64;
                    }
                    return Step::Continue;
                }
                409 => {
                    if let Some(head) = head_of(&body) {
                        self.heads[session] = head;
                    }
                }
                _ => return Step::Continue,
            }
        }
        Step::Continue
    }

    async fn blind_turn(&mut self, session: usize) -> Step {
        let key = self.idempotency_key();
        let body = self.bodies.blind(&mut self.rng);
        let uri = self.plan.sessions[session].messages.clone();
        match self.exchange("blind", Some(body), uri, key).await {
            None => Step::Stop,
            Some((measured, Ok((201, _)))) => {
                if measured {
                    self.recorders.entry("blind").or_default().messages +=
                        self.plan.turn_messages as u64;
                }
                Step::Continue
            }
            Some(_) => Step::Continue,
        }
    }

    /// A context read; also learns the session head (for the hot mix). The flag says whether
    /// it was answered 200.
    async fn context(&mut self, session: usize, op: &'static str) -> (Step, bool) {
        let uri = self.plan.sessions[session].context.clone();
        match self.exchange(op, None, uri, None).await {
            None => (Step::Stop, false),
            Some((_, Ok((200, body)))) => {
                if self.plan.workload == Workload::Hot
                    && let Some(head) = head_of(&body)
                {
                    self.heads[session] = head;
                }
                (Step::Continue, true)
            }
            // A session the hot mix has not written yet reads 404; its first append creates it.
            Some((_, Ok((404, _)))) => (Step::Continue, true),
            Some(_) => (Step::Continue, false),
        }
    }

    async fn paged(&mut self, session: usize) -> Step {
        let head = self.heads[session].max(0) as u64;
        let top = head.saturating_sub(u64::from(self.plan.page_limit));
        let after = self.rng.random_range(0..=top);
        let uri = format!(
            "/v1/sessions/{}/messages?after_seq={after}&limit={}",
            self.plan.sessions[session].id, self.plan.page_limit
        );
        let Ok(uri) = uri.parse::<Uri>() else {
            return Step::Stop;
        };
        match self.exchange("paged", None, uri, None).await {
            None => Step::Stop,
            Some(_) => Step::Continue,
        }
    }
}
