//! The Prometheus metrics of the domain, counted here and only here: the HTTP layer reports each
//! database call's outcome and each append's result. Request metrics are `http::observe`'s.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_appender::non_blocking::ErrorCounter;

use crate::error::Error;
use crate::ledger::Appended;
use crate::ledger::retention::SweepReport;

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &buckets)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let handle = match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder is installed (only possible in embedding programs): render ours alone.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        };
        // Counters exist from the start, so a dashboard sees zero rather than nothing.
        for name in [
            "chatledger_appends_total",
            "chatledger_entries_written_total",
            "chatledger_seq_conflicts_total",
            "chatledger_idempotent_replays_total",
            "chatledger_db_primary_switches_total",
            "chatledger_auth_failures_total",
            "chatledger_checkpoint_file_errors_total",
            "chatledger_log_lines_dropped_total",
        ] {
            metrics::counter!(name).increment(0);
        }
        for name in [
            "chatledger_retention_sweeps_total",
            "chatledger_retention_erasures_total",
            "chatledger_retention_erased_entries_total",
        ] {
            metrics::counter!(name).increment(0);
        }
        for kind in ["unavailable", "error"] {
            metrics::counter!("chatledger_db_errors_total", "kind" => kind).increment(0);
        }
        handle
    })
}

/// The metrics in Prometheus text format.
pub fn render() -> String {
    if let Some(dropped) = DROPPED_LOG_LINES.get() {
        metrics::counter!("chatledger_log_lines_dropped_total")
            .absolute(dropped.dropped_lines() as u64);
    }
    prometheus().render()
}

static DROPPED_LOG_LINES: OnceLock<ErrorCounter> = OnceLock::new();

/// The log writer's count of the lines it dropped because stderr's reader fell behind
/// (main.rs), shown as `chatledger_log_lines_dropped_total`.
pub fn count_dropped_log_lines(counter: ErrorCounter) {
    let _ = DROPPED_LOG_LINES.set(counter);
}

/// The pool moved to another database host, the new primary (src/db/failover.rs).
pub fn primary_switched() {
    metrics::counter!("chatledger_db_primary_switches_total").increment(1);
}

/// Counts what a failed database call tells: trouble with the database, or a stale writer.
pub fn failed(error: &Error) {
    if let Some(kind) = error.database_trouble() {
        metrics::counter!("chatledger_db_errors_total", "kind" => kind).increment(1);
    }
    if matches!(error, Error::SeqConflict { .. }) {
        metrics::counter!("chatledger_seq_conflicts_total").increment(1);
    }
}

/// Counts an append, or its idempotent replay.
pub fn appended(appended: &Appended) {
    if appended.replayed {
        metrics::counter!("chatledger_idempotent_replays_total").increment(1);
    } else {
        metrics::counter!("chatledger_appends_total").increment(1);
        metrics::counter!("chatledger_entries_written_total")
            .increment(appended.entries.len() as u64);
    }
}

/// Counts a checkpoint this server signed, and the size of the tree it signed.
pub fn checkpoint_signed(size: u64, leaves: usize) {
    metrics::counter!("chatledger_checkpoints_signed_total").increment(1);
    metrics::counter!("chatledger_log_leaves_integrated_total").increment(leaves as u64);
    metrics::gauge!("chatledger_log_tree_size").set(size as f64);
}

/// Counts a round in which the sequencer refused to sign (the stored tree does not extend the
/// last checkpoint), and marks it refusing until it signs again.
pub fn sequencer_refused() {
    metrics::counter!("chatledger_sequencer_refusals_total").increment(1);
    metrics::gauge!("chatledger_sequencer_refusing").set(1.0);
}

/// Counts a round in which a checkpoint could not be written to `--checkpoint-dir`.
pub fn checkpoint_file_failed() {
    metrics::counter!("chatledger_checkpoint_file_errors_total").increment(1);
}

/// The sequencer signs or finds nothing to sign: it no longer refuses.
pub fn sequencer_accepts() {
    metrics::gauge!("chatledger_sequencer_refusing").set(0.0);
}

/// Counts the queued appends the search indexer took.
pub fn search_indexed(appends: i64) {
    metrics::counter!("chatledger_search_indexed_appends_total").increment(appends.max(0) as u64);
}

/// Counts a retention sweep this server made, and when.
pub fn swept(report: &SweepReport) {
    if !report.ran {
        return;
    }
    metrics::counter!("chatledger_retention_sweeps_total").increment(1);
    metrics::counter!("chatledger_retention_erasures_total").increment(report.erasures);
    metrics::counter!("chatledger_retention_erased_entries_total").increment(report.erased_entries);
    metrics::gauge!("chatledger_retention_last_sweep_timestamp_seconds")
        .set(chrono::Utc::now().timestamp() as f64);
}

/// Live-tail streams open on this server.
pub fn tail_streams(open: usize) {
    metrics::gauge!("chatledger_tail_streams").set(open as f64);
}

/// An advance of a session's head that live tails were not told of (the queue was full or the
/// database refused the notification); their next wake-up catches up.
pub fn tail_announcement_dropped() {
    metrics::counter!("chatledger_tail_announcements_dropped_total").increment(1);
}
