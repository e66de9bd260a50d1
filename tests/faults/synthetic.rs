//! A session ledger simulated in memory with the hash rules of API.md: the clean histories of the
//! checker's unit tests, and the deliberately broken histories of the negative control.

use std::ops::Range;

use chatledger::ledger::Timestamp;
use chatledger::ledger::export::{EntryLine, Trailer, trailer_line};
use chatledger::ledger::hash::{EntryHeader, GENESIS_HASH, entry_hash, payload_digest};
use serde_json::{Map, Value};

use crate::checker::{ReadBack, Receipt};

/// A session's entries in seq order, as export lines that may be edited at will.
pub struct SyntheticLedger {
    pub tenant: String,
    pub session: String,
    pub lines: Vec<EntryLine>,
}

impl SyntheticLedger {
    pub fn new(tenant: &str, session: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            session: session.to_owned(),
            lines: Vec::new(),
        }
    }

    /// The entries of a real export (the trailer is dropped; `read_back` writes a new one).
    pub fn from_export(tenant: &str, session: &str, export: &[u8]) -> Self {
        let lines = export
            .split(|byte| *byte == b'\n')
            .filter(|line| !line.is_empty())
            .filter_map(|line| serde_json::from_slice::<EntryLine>(line).ok())
            .collect();
        Self {
            lines,
            ..Self::new(tenant, session)
        }
    }

    /// Appends `messages` as the server does (one run of seqs, chained) and returns the receipt.
    pub fn append(&mut self, messages: &[Value]) -> Receipt {
        let (author, created_at) = match self.lines.last() {
            Some(last) => (last.author.clone(), last.created_at.clone()),
            None => (
                "key_01SYNTHET1C000000000000000".to_owned(),
                "2026-11-21T10:15:30.123456Z".to_owned(),
            ),
        };
        let first = self.lines.len();
        for message in messages {
            let salt: [u8; 16] = rand::random();
            let content = message["content"].clone();
            let metadata = message
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_else(Map::new);
            let digest = payload_digest(&salt, Some(&content), &metadata);
            self.lines.push(EntryLine {
                tenant: self.tenant.clone(),
                session_id: self.session.clone(),
                seq: 0,
                kind: "message".to_owned(),
                role: message["role"].as_str().map(str::to_owned),
                content: Some(raw(&content)),
                metadata: Some(raw(&Value::Object(metadata))),
                created_at: created_at.clone(),
                idempotency_key: None,
                author: author.clone(),
                salt: Some(hex::encode(salt)),
                payload_digest: hex::encode(digest),
                prev_hash: String::new(),
                hash: String::new(),
                erased: false,
            });
        }
        self.rechain();
        let entries: Vec<(i64, String)> = self.lines[first..]
            .iter()
            .map(|line| (line.seq, line.hash.clone()))
            .collect();
        Receipt {
            first_seq: entries.first().map_or(0, |(seq, _)| *seq),
            last_seq: entries.last().map_or(0, |(seq, _)| *seq),
            head_hash: entries
                .last()
                .map(|(_, hash)| hash.clone())
                .unwrap_or_default(),
            entries,
        }
    }

    /// Appends copies of the lines in `range` at the end and chains them.
    pub fn repeat(&mut self, range: Range<usize>) {
        let copies: Vec<EntryLine> = self.lines[range]
            .iter()
            .map(|line| {
                serde_json::to_value(line)
                    .and_then(serde_json::from_value)
                    .expect("an entry line round-trips")
            })
            .collect();
        self.lines.extend(copies);
        self.rechain();
    }

    /// Renumbers the lines 1..=n in order and recomputes every `prev_hash` and `hash`, so the
    /// chain verifies whatever was moved, copied or dropped.
    pub fn rechain(&mut self) {
        let mut prev = GENESIS_HASH;
        for (index, line) in self.lines.iter_mut().enumerate() {
            line.seq = index as i64 + 1;
            let created_at = Timestamp::parse_exact(&line.created_at).expect("exported time");
            let payload_digest = hex::decode(&line.payload_digest).expect("hex digest");
            let header = EntryHeader {
                tenant: &line.tenant,
                session_id: &line.session_id,
                seq: line.seq,
                kind: &line.kind,
                role: line.role.as_deref(),
                created_at,
                idempotency_key: line.idempotency_key.as_deref(),
                author: &line.author,
                payload_digest: &payload_digest,
            };
            let hash = entry_hash(&prev, &header);
            line.prev_hash = hex::encode(prev);
            line.hash = hex::encode(hash);
            prev = hash;
        }
    }

    /// The session as the server would serve it: the `messages` read and the export.
    pub fn read_back(&self) -> ReadBack {
        let mut export = Vec::new();
        let mut entries = Vec::new();
        for line in &self.lines {
            let mut value = serde_json::to_value(line).expect("an entry line serializes");
            export.extend(serde_json::to_vec(&value).expect("JSON serializes"));
            export.push(b'\n');
            if let Some(object) = value.as_object_mut() {
                object.remove("tenant");
                object.remove("session_id");
            }
            entries.push(value);
        }
        let last_seq = self.lines.last().map_or(0, |line| line.seq);
        export.extend(trailer_line(Trailer {
            tenant: self.tenant.clone(),
            session_id: self.session.clone(),
            last_seq,
            head_hash: self
                .lines
                .last()
                .map_or_else(|| hex::encode(GENESIS_HASH), |line| line.hash.clone()),
            exported_at: "2026-11-21T10:15:31.000000Z".to_owned(),
            leaf_index: None,
            leaf: None,
            checkpoint: None,
            inclusion_path: None,
        }));
        ReadBack {
            session: self.session.clone(),
            last_seq,
            entries,
            export: Some(export),
        }
    }
}

/// A JSON value in the raw form exports carry.
pub fn raw(value: &Value) -> chatledger::ledger::RawJson {
    sqlx::types::Json(serde_json::value::to_raw_value(value).expect("JSON value"))
}
