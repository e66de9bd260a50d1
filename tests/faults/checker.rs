//! The history checker: compares what clients were told (receipts of acknowledged turns, plus
//! turns whose outcome is unknown) with every session read back from the server, and counts
//! each class of anomaly per session. Pure: no I/O, no clock.

use std::collections::BTreeMap;
use std::fmt;

use chatledger::ledger::export::{ExportVerdict, verify_export};
use serde_json::Value;

/// A turn as a client sent it: its messages each carry metadata `{"writer", "turn", "part"}`.
#[derive(Debug, Clone)]
pub struct SentTurn {
    pub session: String,
    pub writer: u64,
    pub turn: u64,
    /// The messages exactly as sent: `{"role", "content", "metadata"}`.
    pub messages: Vec<Value>,
    pub outcome: Outcome,
}

/// The two messages of a turn (a question and its answer), tagged so the checker can find them;
/// `filler` pads the content.
pub fn turn_messages(writer: u64, turn: u64, filler: &str) -> Vec<Value> {
    (0..2)
        .map(|part| {
            let (role, text) = if part == 0 {
                ("user", "question")
            } else {
                ("assistant", "answer")
            };
            serde_json::json!({
                "role": role,
                "content": format!("w{writer} t{turn} {text}{filler}"),
                "metadata": {"writer": writer, "turn": turn, "part": part},
            })
        })
        .collect()
}

/// What the client knows about a turn.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A 201 (original or replayed) said where the turn is.
    Acknowledged(Receipt),
    /// The client never got an answer it can trust: the turn may be stored once, or not at all.
    Unknown,
}

/// The facts of a 201 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub first_seq: i64,
    pub last_seq: i64,
    pub head_hash: String,
    /// `(seq, hash)` of every entry the response listed.
    pub entries: Vec<(i64, String)>,
}

impl Receipt {
    /// Reads a 201 body; `None` when it lacks a field the API promises.
    pub fn from_response(body: &Value) -> Option<Self> {
        let entries = body["entries"]
            .as_array()?
            .iter()
            .map(|entry| Some((entry["seq"].as_i64()?, entry["hash"].as_str()?.to_owned())))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            first_seq: body["first_seq"].as_i64()?,
            last_seq: body["last_seq"].as_i64()?,
            head_hash: body["head_hash"].as_str()?.to_owned(),
            entries,
        })
    }
}

/// One session as read back from the server after the run.
#[derive(Debug, Clone)]
pub struct ReadBack {
    pub session: String,
    /// `last_seq` as the messages read reported it (the session head).
    pub last_seq: i64,
    /// Every entry of `GET /v1/sessions/{id}/messages`, in the order read.
    pub entries: Vec<Value>,
    /// The NDJSON of `GET /v1/sessions/{id}/export`, when it was read.
    pub export: Option<Vec<u8>>,
}

/// Anomaly counts of one session; every count but the informational ones must be zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionReport {
    pub session: String,
    /// Informational: entries read, acknowledged turns, unknown turns found stored / absent.
    pub entries: usize,
    pub acknowledged: usize,
    pub unknown_present: usize,
    pub unknown_absent: usize,
    /// Acknowledged turns with no entry stored at all.
    pub lost: usize,
    /// Extra complete copies of a turn.
    pub duplicates: usize,
    /// Seqs missing from 1..=head.
    pub gaps: usize,
    /// Entries read out of seq order, or a turn's parts stored out of order.
    pub reorders: usize,
    /// One seq seen with two values: across reads, against a receipt, or against what was sent.
    pub conflicting_values: usize,
    /// Turns whose parts are not stored as one contiguous run, or only partly.
    pub split_turns: usize,
    /// Broken links between consecutive entries, or an export that does not verify.
    pub chain_breaks: usize,
    /// Stored entries that no client sent.
    pub unexpected: usize,
    /// One line per anomaly found, for the failure message.
    pub details: Vec<String>,
}

impl SessionReport {
    pub fn anomalies(&self) -> usize {
        self.lost
            + self.duplicates
            + self.gaps
            + self.reorders
            + self.conflicting_values
            + self.split_turns
            + self.chain_breaks
            + self.unexpected
    }
}

impl fmt::Display for SessionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session {}: {} entries, {} acknowledged turns, unknown {} present / {} absent; \
             lost {}, duplicates {}, gaps {}, reorders {}, two values at one seq {}, \
             split turns {}, chain breaks {}, unexpected {}",
            self.session,
            self.entries,
            self.acknowledged,
            self.unknown_present,
            self.unknown_absent,
            self.lost,
            self.duplicates,
            self.gaps,
            self.reorders,
            self.conflicting_values,
            self.split_turns,
            self.chain_breaks,
            self.unexpected
        )?;
        for detail in self.details.iter().take(20) {
            write!(f, "\n  - {detail}")?;
        }
        if self.details.len() > 20 {
            write!(f, "\n  - ... {} more", self.details.len() - 20)?;
        }
        Ok(())
    }
}

/// The reports of every session named by a sent turn or a read, in session order.
pub fn check(sent: &[SentTurn], reads: &[ReadBack]) -> Vec<SessionReport> {
    let mut sessions: BTreeMap<&str, (Vec<&SentTurn>, Option<&ReadBack>)> = BTreeMap::new();
    for turn in sent {
        sessions.entry(&turn.session).or_default().0.push(turn);
    }
    for read in reads {
        sessions.entry(&read.session).or_default().1 = Some(read);
    }
    sessions
        .into_iter()
        .map(|(session, (turns, read))| check_session(session, &turns, read))
        .collect()
}

/// A stored entry, reduced to what the checks compare.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    seq: i64,
    kind: String,
    role: Option<String>,
    content: Option<Value>,
    metadata: Value,
    prev_hash: String,
    hash: String,
}

impl Stored {
    fn parse(value: &Value) -> Option<Self> {
        let text = |name: &str| value[name].as_str().map(str::to_owned);
        Some(Self {
            seq: value["seq"].as_i64()?,
            kind: text("kind")?,
            role: text("role"),
            content: Some(&value["content"])
                .filter(|content| !content.is_null())
                .cloned(),
            metadata: value.get("metadata")?.clone(),
            prev_hash: text("prev_hash")?,
            hash: text("hash")?,
        })
    }

    /// `(writer, turn, part)` from the metadata, when the entry carries them.
    fn tag(&self) -> Option<(u64, u64, usize)> {
        let meta = &self.metadata;
        Some((
            meta["writer"].as_u64()?,
            meta["turn"].as_u64()?,
            usize::try_from(meta["part"].as_u64()?).ok()?,
        ))
    }

    /// True when this entry is exactly `message` as sent.
    fn matches(&self, message: &Value) -> bool {
        let empty = Value::Object(serde_json::Map::new());
        self.kind == "message"
            && self.role.as_deref() == message["role"].as_str()
            && self.content.as_ref() == Some(&message["content"])
            && &self.metadata == message.get("metadata").unwrap_or(&empty)
    }
}

fn check_session(session: &str, sent: &[&SentTurn], read: Option<&ReadBack>) -> SessionReport {
    let mut report = SessionReport {
        session: session.to_owned(),
        ..SessionReport::default()
    };
    let primary: Vec<Stored> = read
        .map(|read| parse_entries(&read.entries, "messages", &mut report))
        .unwrap_or_default();
    let exported = read
        .and_then(|read| read.export.as_deref())
        .map(|export| check_export(export, &mut report))
        .unwrap_or_default();
    report.entries = primary.len();

    // Order and gaps, over the primary read.
    for pair in primary.windows(2) {
        if pair[1].seq <= pair[0].seq {
            report.reorders += 1;
            report.details.push(format!(
                "seq {} read after seq {}",
                pair[1].seq, pair[0].seq
            ));
        }
    }
    let by_seq: BTreeMap<i64, &Stored> = primary.iter().rev().map(|e| (e.seq, e)).collect();
    let head = read.map_or(0, |read| read.last_seq);
    let top = [head]
        .into_iter()
        .chain(primary.iter().map(|e| e.seq))
        .chain(exported.iter().map(|e| e.seq))
        .max()
        .unwrap_or(0);
    let missing: Vec<i64> = (1..=top).filter(|seq| !by_seq.contains_key(seq)).collect();
    if !missing.is_empty() {
        report.gaps += missing.len();
        report
            .details
            .push(format!("seqs missing from 1..={top}: {missing:?}"));
    }

    // Two values at one seq, across the reads.
    let mut values: BTreeMap<i64, Vec<&Stored>> = BTreeMap::new();
    for entry in primary.iter().chain(exported.iter()) {
        values.entry(entry.seq).or_default().push(entry);
    }
    for (seq, seen) in &values {
        if seen.iter().any(|value| *value != seen[0]) {
            report.conflicting_values += 1;
            report.details.push(format!(
                "seq {seq} read with {} different values",
                seen.len()
            ));
        }
    }

    // The chain links of the primary read, independently of the export's verification.
    for (seq, entry) in &by_seq {
        let expected = if *seq == 1 {
            Some("0".repeat(64))
        } else {
            by_seq.get(&(seq - 1)).map(|before| before.hash.clone())
        };
        if let Some(expected) = expected.filter(|expected| *expected != entry.prev_hash) {
            report.chain_breaks += 1;
            report.details.push(format!(
                "seq {seq}: prev_hash {} does not link to the entry before ({expected})",
                entry.prev_hash
            ));
        }
    }

    check_turns(sent, &by_seq, &mut report);
    report
}

fn parse_entries(values: &[Value], source: &str, report: &mut SessionReport) -> Vec<Stored> {
    values
        .iter()
        .filter_map(|value| {
            let parsed = Stored::parse(value);
            if parsed.is_none() {
                report.unexpected += 1;
                report
                    .details
                    .push(format!("{source}: unreadable entry {value}"));
            }
            parsed
        })
        .collect()
}

/// Runs the offline verifier on an export and returns its entries.
fn check_export(export: &[u8], report: &mut SessionReport) -> Vec<Stored> {
    match verify_export(export, None, None) {
        Ok(ExportVerdict::Intact { .. }) => {}
        Ok(ExportVerdict::Broken(why)) => {
            report.chain_breaks += 1;
            report
                .details
                .push(format!("export does not verify: {why}"));
        }
        Err(error) => {
            report.chain_breaks += 1;
            report.details.push(format!("export unreadable: {error}"));
        }
    }
    let lines: Vec<Value> = export
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .filter(|line| line.get("export_trailer").is_none())
        .collect();
    parse_entries(&lines, "export", report)
}

/// One stored part of a turn.
#[derive(Clone, Copy)]
struct Part<'a> {
    seq: i64,
    part: usize,
    entry: &'a Stored,
}

fn check_turns(sent: &[&SentTurn], by_seq: &BTreeMap<i64, &Stored>, report: &mut SessionReport) {
    let mut stored: BTreeMap<(u64, u64), Vec<Part<'_>>> = BTreeMap::new();
    for (seq, entry) in by_seq {
        match entry.tag() {
            Some((writer, turn, part)) => stored.entry((writer, turn)).or_default().push(Part {
                seq: *seq,
                part,
                entry,
            }),
            None => {
                report.unexpected += 1;
                report
                    .details
                    .push(format!("seq {seq} carries no writer/turn/part tag"));
            }
        }
    }

    for turn in sent {
        let name = format!("writer {} turn {}", turn.writer, turn.turn);
        let parts = stored.remove(&(turn.writer, turn.turn)).unwrap_or_default();
        for part in &parts {
            let sent_message = turn.messages.get(part.part);
            if !sent_message.is_some_and(|message| part.entry.matches(message)) {
                report.conflicting_values += 1;
                report.details.push(format!(
                    "seq {} holds part {} of {name} with a value other than the one sent",
                    part.seq, part.part
                ));
            }
        }
        let runs = Runs::of(&parts, turn.messages.len());
        if runs.complete > 1 {
            report.duplicates += runs.complete - 1;
            report
                .details
                .push(format!("{name} stored {} times", runs.complete));
        }
        if runs.stray > 0 {
            report.split_turns += 1;
            report.details.push(format!(
                "{name} split: {} parts outside a contiguous run, seqs {:?}",
                runs.stray,
                parts.iter().map(|part| part.seq).collect::<Vec<_>>()
            ));
        }
        if runs.out_of_order {
            report.reorders += 1;
            report
                .details
                .push(format!("{name}: parts stored out of order"));
        }
        match &turn.outcome {
            Outcome::Acknowledged(receipt) => {
                report.acknowledged += 1;
                if parts.is_empty() {
                    report.lost += 1;
                    report.details.push(format!(
                        "{name} acknowledged at seqs {}..={} but not stored",
                        receipt.first_seq, receipt.last_seq
                    ));
                }
                check_receipt(turn, receipt, by_seq, report);
            }
            Outcome::Unknown if parts.is_empty() => report.unknown_absent += 1,
            Outcome::Unknown => report.unknown_present += 1,
        }
    }

    for ((writer, turn), parts) in stored {
        report.unexpected += parts.len();
        report.details.push(format!(
            "writer {writer} turn {turn} stored at seqs {:?} but never sent",
            parts.iter().map(|part| part.seq).collect::<Vec<_>>()
        ));
    }
}

/// How a turn's stored parts group into complete contiguous copies.
struct Runs {
    complete: usize,
    stray: usize,
    out_of_order: bool,
}

impl Runs {
    fn of(parts: &[Part<'_>], expected: usize) -> Self {
        let mut runs = Runs {
            complete: 0,
            stray: 0,
            out_of_order: false,
        };
        let mut strays: Vec<Part<'_>> = Vec::new();
        let mut index = 0;
        while index < parts.len() {
            let run = parts.get(index..index + expected).filter(|run| {
                run.iter().enumerate().all(|(offset, part)| {
                    part.part == offset && part.seq == run[0].seq + offset as i64
                })
            });
            if expected > 0 && run.is_some() {
                runs.complete += 1;
                index += expected;
            } else {
                strays.push(parts[index]);
                index += 1;
            }
        }
        runs.stray = strays.len();
        runs.out_of_order = strays
            .windows(2)
            .any(|pair| pair[1].part < pair[0].part && pair[1].seq == pair[0].seq + 1);
        runs
    }
}

/// A receipt must describe exactly what is stored at its seqs: this turn, with these hashes.
fn check_receipt(
    turn: &SentTurn,
    receipt: &Receipt,
    by_seq: &BTreeMap<i64, &Stored>,
    report: &mut SessionReport,
) {
    let name = format!("writer {} turn {}", turn.writer, turn.turn);
    let consistent = receipt.entries.len() == turn.messages.len()
        && receipt.last_seq - receipt.first_seq + 1 == turn.messages.len() as i64
        && receipt
            .entries
            .iter()
            .enumerate()
            .all(|(offset, (seq, _))| *seq == receipt.first_seq + offset as i64)
        && receipt
            .entries
            .last()
            .is_some_and(|(_, hash)| *hash == receipt.head_hash);
    if !consistent {
        report.conflicting_values += 1;
        report.details.push(format!(
            "{name}: the receipt contradicts itself: {receipt:?}"
        ));
    }
    for (offset, (seq, hash)) in receipt.entries.iter().enumerate() {
        let Some(entry) = by_seq.get(seq) else {
            continue; // counted as lost or as a gap
        };
        if entry.hash != *hash || entry.tag() != Some((turn.writer, turn.turn, offset)) {
            report.conflicting_values += 1;
            report.details.push(format!(
                "seq {seq}: the receipt of {name} says hash {hash}, the ledger holds {} ({:?})",
                entry.hash,
                entry.tag()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::synthetic::SyntheticLedger;

    /// A clean session "s": writer 1 wrote turns 0..4 and was told so; turn 4's answer was lost
    /// in transit (unknown, but stored); turn 5 never arrived (unknown, absent).
    fn clean() -> (SyntheticLedger, Vec<SentTurn>) {
        let mut ledger = SyntheticLedger::new("acme", "s");
        let mut sent = Vec::new();
        for turn in 0..6 {
            let messages = turn_messages(1, turn, "");
            let outcome = match turn {
                0..4 => Outcome::Acknowledged(ledger.append(&messages)),
                4 => {
                    ledger.append(&messages);
                    Outcome::Unknown
                }
                _ => Outcome::Unknown,
            };
            sent.push(SentTurn {
                session: "s".to_owned(),
                writer: 1,
                turn,
                messages,
                outcome,
            });
        }
        (ledger, sent)
    }

    fn only(reports: Vec<SessionReport>) -> SessionReport {
        assert_eq!(reports.len(), 1, "{reports:?}");
        reports.into_iter().next().expect("one report")
    }

    /// The report with every anomaly count as the test expects and the rest zero.
    fn assert_counts(report: &SessionReport, expected: &[(&str, usize)]) {
        let actual = [
            ("lost", report.lost),
            ("duplicates", report.duplicates),
            ("gaps", report.gaps),
            ("reorders", report.reorders),
            ("conflicting_values", report.conflicting_values),
            ("split_turns", report.split_turns),
            ("chain_breaks", report.chain_breaks),
            ("unexpected", report.unexpected),
        ];
        for (name, count) in actual {
            let want = expected
                .iter()
                .find(|(wanted, _)| *wanted == name)
                .map_or(0, |(_, count)| *count);
            assert_eq!(count, want, "{name}: {report}");
        }
    }

    #[test]
    fn a_clean_history_has_no_anomaly_and_classifies_unknown_turns() {
        let (ledger, sent) = clean();
        let report = only(check(&sent, &[ledger.read_back()]));
        assert_counts(&report, &[]);
        assert_eq!(
            (
                report.entries,
                report.acknowledged,
                report.unknown_present,
                report.unknown_absent
            ),
            (10, 4, 1, 1)
        );
    }

    #[test]
    fn an_acknowledged_turn_missing_from_the_end_is_lost() {
        let (mut ledger, sent) = clean();
        ledger.lines.truncate(6); // turns 0..3; acknowledged turn 3 is gone
        let report = only(check(&sent, &[ledger.read_back()]));
        assert_counts(&report, &[("lost", 1)]);
    }

    #[test]
    fn a_turn_stored_twice_is_a_duplicate() {
        let (mut ledger, sent) = clean();
        ledger.repeat(2..4);
        let report = only(check(&sent, &[ledger.read_back()]));
        assert_counts(&report, &[("duplicates", 1)]);
    }

    #[test]
    fn a_turn_with_another_in_its_middle_is_split() {
        let (mut ledger, mut sent) = clean();
        // Turn 5 (unknown) lands split around a turn 6 of writer 2 (also unknown).
        let split = turn_messages(1, 5, "");
        let other = turn_messages(2, 6, "");
        ledger.append(&split[..1]);
        ledger.append(&other);
        ledger.append(&split[1..]);
        sent.push(SentTurn {
            session: "s".to_owned(),
            writer: 2,
            turn: 6,
            messages: other,
            outcome: Outcome::Unknown,
        });
        let report = only(check(&sent, &[ledger.read_back()]));
        assert_counts(&report, &[("split_turns", 1)]);
    }

    #[test]
    fn a_half_stored_turn_is_split_not_lost() {
        let (mut ledger, sent) = clean();
        ledger.lines.truncate(7); // turn 3 keeps only its first part
        let report = only(check(&sent, &[ledger.read_back()]));
        assert_counts(&report, &[("split_turns", 1)]);
    }

    #[test]
    fn parts_stored_in_reverse_are_a_reorder_and_a_split() {
        let (mut ledger, sent) = clean();
        ledger.lines.swap(6, 7); // turn 3, the last acknowledged one
        ledger.rechain();
        let report = only(check(&sent, &[ledger.read_back()]));
        // Its receipt no longer describes seqs 7 and 8 either.
        assert_counts(
            &report,
            &[
                ("reorders", 1),
                ("split_turns", 1),
                ("conflicting_values", 2),
            ],
        );
    }

    #[test]
    fn entries_read_out_of_order_or_missing_are_reported() {
        let (ledger, sent) = clean();
        let mut read = ledger.read_back();
        read.entries.swap(0, 1);
        let report = only(check(&sent, std::slice::from_ref(&read)));
        assert_counts(&report, &[("reorders", 1)]);

        let mut read = ledger.read_back();
        read.entries.remove(4);
        read.export = None;
        let report = only(check(&sent, &[read]));
        // Seq 5 is gone from the read: a gap, and turn 2 is no longer whole.
        assert_counts(&report, &[("gaps", 1), ("split_turns", 1)]);
    }

    #[test]
    fn two_values_at_one_seq_are_reported_across_reads_and_receipts() {
        let (ledger, mut sent) = clean();
        let mut read = ledger.read_back();
        read.entries[0]["hash"] = json!("f".repeat(64));
        read.export = None;
        let report = only(check(&sent, &[read]));
        // The receipt of turn 0 disagrees, and seq 2 no longer links to seq 1.
        assert_counts(&report, &[("conflicting_values", 1), ("chain_breaks", 1)]);

        let Outcome::Acknowledged(receipt) = &mut sent[1].outcome else {
            panic!("turn 1 is acknowledged");
        };
        receipt.entries[1].1 = "e".repeat(64);
        receipt.head_hash = "e".repeat(64);
        let report = only(check(&sent, &[ledger.read_back()]));
        assert_counts(&report, &[("conflicting_values", 1)]);
    }

    #[test]
    fn an_edited_entry_breaks_the_chain_and_differs_from_what_was_sent() {
        let (mut ledger, sent) = clean();
        ledger.lines[3].content = Some(crate::synthetic::raw(&json!("edited")));
        let report = only(check(&sent, &[ledger.read_back()]));
        assert_counts(&report, &[("chain_breaks", 1), ("conflicting_values", 1)]);

        // The same edit seen by only one of two reads is two values at one seq as well.
        let (ledger, sent) = clean();
        let mut read = ledger.read_back();
        read.entries[3]["content"] = json!("edited");
        let report = only(check(&sent, &[read]));
        assert_counts(&report, &[("conflicting_values", 2)]);
    }

    #[test]
    fn entries_nobody_sent_are_unexpected() {
        let (mut ledger, sent) = clean();
        ledger.append(&turn_messages(9, 9, ""));
        ledger.append(&[json!({"role": "user", "content": "untagged"})]);
        let report = only(check(&sent, &[ledger.read_back()]));
        assert_counts(&report, &[("unexpected", 3)]);
    }

    #[test]
    fn a_session_never_read_loses_every_acknowledged_turn() {
        let (_, sent) = clean();
        let report = only(check(&sent, &[]));
        assert_counts(&report, &[("lost", 4)]);
        assert_eq!(report.unknown_absent, 2);
    }
}
