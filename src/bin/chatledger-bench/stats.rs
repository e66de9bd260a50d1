//! Counting and latency recording: a plain vector of microseconds per operation, merged and
//! sorted once at the end (exact percentiles; a few MB even for a million requests).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// What one client recorded for one operation during the measured window.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    /// Latency of every request that got an HTTP answer, in microseconds.
    pub latencies_us: Vec<u32>,
    pub requests: u64,
    /// 2xx answers: completed operations.
    pub ok: u64,
    /// 409 `seq_conflict` answers (each retried with `current_seq` up to the retry bound).
    pub conflicts: u64,
    /// Any other status, or no answer at all (connection error, timeout).
    pub errors: u64,
    /// Messages written by the 2xx answers (appends only).
    pub messages: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub first_error: Option<String>,
}

impl Recorder {
    pub fn answered(&mut self, status: u16, latency: Duration) {
        self.requests += 1;
        self.latencies_us
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        *self.statuses.entry(status).or_default() += 1;
        match status {
            200..=299 => self.ok += 1,
            409 => self.conflicts += 1,
            _ => self.errors += 1,
        }
    }

    pub fn failed(&mut self, error: String) {
        self.requests += 1;
        self.errors += 1;
        self.transport_errors += 1;
        self.first_error.get_or_insert(error);
    }

    pub fn merge(&mut self, other: Recorder) {
        self.latencies_us.extend(other.latencies_us);
        self.requests += other.requests;
        self.ok += other.ok;
        self.conflicts += other.conflicts;
        self.errors += other.errors;
        self.messages += other.messages;
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.transport_errors += other.transport_errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(mut micros: Vec<u32>) -> Self {
        micros.sort_unstable();
        let count = micros.len();
        let at = |p: f64| -> f64 {
            if count == 0 {
                return 0.0;
            }
            // Nearest rank.
            let rank = ((p / 100.0) * count as f64).ceil() as usize;
            f64::from(micros[rank.clamp(1, count) - 1]) / 1000.0
        };
        let mean = if count == 0 {
            0.0
        } else {
            micros.iter().map(|&us| u64::from(us)).sum::<u64>() as f64 / count as f64 / 1000.0
        };
        Self {
            count,
            mean,
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            max: micros.last().map_or(0.0, |&us| f64::from(us) / 1000.0),
        }
    }
}

/// The summary of one operation, as printed and as written with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct OpResult {
    pub op: String,
    pub requests: u64,
    pub ok: u64,
    pub conflicts: u64,
    pub errors: u64,
    pub messages: u64,
    /// Seconds from the start of the measured window until its last request was answered.
    pub elapsed_s: f64,
    /// Completed operations (2xx) per second.
    pub ok_per_s: f64,
    /// All answered or failed requests per second (conflicts and retries included).
    pub requests_per_s: f64,
    pub messages_per_s: f64,
    pub latency_ms: Latency,
    pub statuses: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl OpResult {
    pub fn new(op: &str, recorder: Recorder, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Self {
            op: op.to_owned(),
            requests: recorder.requests,
            ok: recorder.ok,
            conflicts: recorder.conflicts,
            errors: recorder.errors,
            messages: recorder.messages,
            elapsed_s: elapsed.as_secs_f64(),
            ok_per_s: recorder.ok as f64 / secs,
            requests_per_s: recorder.requests as f64 / secs,
            messages_per_s: recorder.messages as f64 / secs,
            latency_ms: Latency::of(recorder.latencies_us),
            statuses: recorder.statuses,
            transport_errors: recorder.transport_errors,
            first_error: recorder.first_error,
        }
    }
}
