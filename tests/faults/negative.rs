//! Scenario 5, the negative control: a real session read back clean, then deliberately broken (a
//! dropped, a duplicated and a split turn, each with a chain recomputed so that it still
//! verifies): the checker must report each, proving that it can fail.

use std::time::Duration;

use serde_json::json;

use crate::checker::{Outcome, ReadBack, SentTurn, SessionReport, check, turn_messages};
use crate::harness::{OnDatabase, Turn, write_acknowledged};
use crate::synthetic::SyntheticLedger;

const TURNS: u64 = 6;

fn report_of(sent: &[SentTurn], read: ReadBack) -> SessionReport {
    let mut reports = check(sent, &[read]);
    assert_eq!(reports.len(), 1);
    reports.remove(0)
}

/// The anomaly counts as (lost, duplicates, split turns, everything else).
fn counts(report: &SessionReport) -> (usize, usize, usize, usize) {
    let others = report.anomalies() - report.lost - report.duplicates - report.split_turns;
    (report.lost, report.duplicates, report.split_turns, others)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_negative_control_the_checker_reports_a_dropped_a_duplicated_and_a_split_turn() {
    let setup = OnDatabase::new("negative").await;
    let server = setup.start(&[]).await;
    let api = setup.api(&server, Duration::from_secs(30));
    let mut sent = Vec::new();
    for turn in 0..TURNS {
        let turn = Turn::new("neg", 1, turn, turn.is_multiple_of(2), "");
        sent.push(write_acknowledged(&api, &turn).await.record);
    }
    let real = api.read_back("neg").await;
    assert!(server.terminate().await.success());
    let export = real.export.clone().expect("export read");
    let ledger = || SyntheticLedger::from_export("acme", "neg", &export);

    // The control's control: the real history is clean, and recomputing its chain changes
    // nothing, so every break below is the only thing that differs.
    let clean = report_of(&sent, real.clone());
    assert_eq!(counts(&clean), (0, 0, 0, 0), "{clean}");
    let mut recomputed = ledger();
    recomputed.rechain();
    assert_eq!(
        recomputed.read_back().entries,
        real.entries,
        "the simulated chain is the server's"
    );

    // Two more turns of another writer whose answers were lost: unknown outcome.
    let (split, between) = (turn_messages(2, 0, ""), turn_messages(2, 1, ""));
    let mut with_unknown = sent.clone();
    for (turn, messages) in [(0, &split), (1, &between)] {
        with_unknown.push(SentTurn {
            session: "neg".to_owned(),
            writer: 2,
            turn,
            messages: messages.clone(),
            outcome: Outcome::Unknown,
        });
    }
    let break_split = |ledger: &mut SyntheticLedger| {
        ledger.append(&split[..1]);
        ledger.append(&between);
        ledger.append(&split[1..]);
    };

    // Dropped: the last acknowledged turn is missing.
    let mut dropped = ledger();
    dropped.lines.truncate(2 * (TURNS as usize - 1));
    let dropped = report_of(&sent, dropped.read_back());
    // Duplicated: turn 2 stored a second time at the end.
    let mut duplicated = ledger();
    duplicated.repeat(4..6);
    let duplicated = report_of(&sent, duplicated.read_back());
    // Split: writer 2's turn 0 stored with its other turn between its two parts.
    let mut split_apart = ledger();
    break_split(&mut split_apart);
    let split_apart = report_of(&with_unknown, split_apart.read_back());
    // All three at once.
    let mut all = ledger();
    all.lines.truncate(2 * (TURNS as usize - 1));
    all.repeat(4..6);
    break_split(&mut all);
    let all = report_of(&with_unknown, all.read_back());
    // And an entry edited in place without recomputing anything: a chain break.
    let mut edited = ledger();
    edited.lines[3].content = Some(crate::synthetic::raw(&json!("edited")));
    let edited = report_of(&sent, edited.read_back());

    println!("FAULTS scenario 5 (negative control):");
    for (name, report) in [
        ("clean", &clean),
        ("dropped", &dropped),
        ("duplicated", &duplicated),
        ("split", &split_apart),
        ("all three", &all),
        ("edited", &edited),
    ] {
        println!("  {name}: {} anomalies; {report}", report.anomalies());
    }
    assert_eq!(counts(&dropped), (1, 0, 0, 0), "{dropped}");
    assert_eq!(counts(&duplicated), (0, 1, 0, 0), "{duplicated}");
    assert_eq!(counts(&split_apart), (0, 0, 1, 0), "{split_apart}");
    let (lost, duplicates, splits, _) = counts(&all);
    assert_eq!((lost, duplicates, splits), (1, 1, 1), "{all}");
    assert!(
        edited.chain_breaks > 0 && edited.conflicting_values > 0,
        "{edited}"
    );
}
