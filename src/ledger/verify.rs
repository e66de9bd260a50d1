//! Verifying a hash chain entry by entry, in constant memory: the server, the command line and
//! the offline verifier all check chains with this; the rules themselves are in `hash`.

use std::collections::VecDeque;

use serde_json::Value;

use super::hash::{EntryHeader, GENESIS_HASH, entry_hash, payload_digest};
use super::read::{Entry, RawJson};

/// Why a chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    PayloadDigestMismatch,
    PrevHashMismatch,
    HashMismatch,
    SeqGap,
    HeadMismatch,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PayloadDigestMismatch => "payload_digest_mismatch",
            Reason::PrevHashMismatch => "prev_hash_mismatch",
            Reason::HashMismatch => "hash_mismatch",
            Reason::SeqGap => "seq_gap",
            Reason::HeadMismatch => "head_mismatch",
        }
    }
}

/// The first place a chain breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Break {
    pub first_bad_seq: i64,
    pub reason: Reason,
}

/// What an intact chain proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub verified_through_seq: i64,
    pub head_hash: [u8; 32],
    /// Entries whose payload was erased: their digests were taken as stored.
    pub erased_entries: i64,
}

/// Checks entries fed in seq order against each other; `finish` checks the head.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    tenant: String,
    session_id: String,
    next_seq: i64,
    prev_hash: [u8; 32],
    erased: i64,
    /// Erased entries that no erasure entry has accounted for yet, as runs of seqs in order: an
    /// entry's erasure is accepted only when a later `erasure` entry (whose own payload is
    /// intact) says it erased through that seq. Otherwise anyone who can write the table could
    /// blank a message and call it erased.
    unaccounted: VecDeque<(i64, i64)>,
}

impl ChainVerifier {
    pub fn new(tenant: &str, session_id: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            session_id: session_id.to_owned(),
            next_seq: 1,
            prev_hash: GENESIS_HASH,
            erased: 0,
            unaccounted: VecDeque::new(),
        }
    }

    /// The seq the next entry must carry.
    pub fn next_seq(&self) -> i64 {
        self.next_seq
    }

    /// The hash of the last entry accepted so far (32 zero bytes before the first).
    pub fn last_hash(&self) -> &[u8; 32] {
        &self.prev_hash
    }

    pub fn check(&mut self, entry: &Entry) -> Result<(), Break> {
        let broken = |reason| Break {
            first_bad_seq: self.next_seq,
            reason,
        };
        if entry.seq != self.next_seq {
            // A missing entry shows as the next one arriving early; an extra or repeated one
            // as a seq already passed.
            return Err(broken(Reason::SeqGap));
        }
        let digest = if entry.erased {
            // Its payload is gone, so its digest cannot be recomputed; the chain through it can,
            // and nothing of the payload may be left.
            let payload_left =
                entry.content.is_some() || entry.metadata.is_some() || entry.salt.is_some();
            if payload_left || entry.kind != "message" || entry.payload_digest.len() != 32 {
                return Err(broken(Reason::PayloadDigestMismatch));
            }
            self.erased += 1;
            entry.payload_digest.clone()
        } else {
            recomputed_digest(entry).ok_or_else(|| broken(Reason::PayloadDigestMismatch))?
        };
        if entry.prev_hash != self.prev_hash {
            return Err(broken(Reason::PrevHashMismatch));
        }
        let header = EntryHeader {
            tenant: &self.tenant,
            session_id: &self.session_id,
            seq: entry.seq,
            kind: &entry.kind,
            role: entry.role.as_deref(),
            created_at: entry.created_at,
            idempotency_key: entry.idempotency_key.as_deref(),
            author: &entry.author,
            payload_digest: &digest,
        };
        let hash = entry_hash(&self.prev_hash, &header);
        if entry.hash != hash {
            return Err(broken(Reason::HashMismatch));
        }
        if entry.erased {
            match self.unaccounted.back_mut() {
                Some((_, last)) if *last + 1 == entry.seq => *last = entry.seq,
                _ => self.unaccounted.push_back((entry.seq, entry.seq)),
            }
        } else if entry.kind == "erasure" {
            self.account_for_erasures_through(erased_through_seq(entry));
        }
        self.prev_hash = hash;
        self.next_seq += 1;
        Ok(())
    }

    fn account_for_erasures_through(&mut self, through: i64) {
        while let Some((first, last)) = self.unaccounted.front_mut() {
            if *last <= through {
                self.unaccounted.pop_front();
            } else {
                *first = (*first).max(through + 1);
                break;
            }
        }
    }

    /// Whether an erased entry accepted so far still awaits the `erasure` entry that erased it.
    pub fn awaits_erasure_entry(&self) -> bool {
        !self.unaccounted.is_empty()
    }

    /// Entries accepted so far whose payload was erased.
    pub fn erased_entries(&self) -> i64 {
        self.erased
    }

    /// Checks that the entries seen end exactly at the head (`last_seq`, `head_hash`).
    pub fn finish(self, last_seq: i64, head_hash: &[u8]) -> Result<Verified, Break> {
        let through = self.next_seq - 1;
        if through < last_seq {
            return Err(Break {
                first_bad_seq: self.next_seq,
                reason: Reason::SeqGap,
            });
        }
        if through > last_seq || head_hash != self.prev_hash {
            return Err(Break {
                first_bad_seq: last_seq.max(1),
                reason: Reason::HeadMismatch,
            });
        }
        if let Some(&(first, _)) = self.unaccounted.front() {
            // Its stored digest stands for a payload nobody erased through the ledger.
            return Err(Break {
                first_bad_seq: first,
                reason: Reason::PayloadDigestMismatch,
            });
        }
        Ok(Verified {
            verified_through_seq: through,
            head_hash: self.prev_hash,
            erased_entries: self.erased,
        })
    }
}

/// How far an `erasure` entry says it erased (0 when its metadata does not say).
pub(crate) fn erased_through_seq(entry: &Entry) -> i64 {
    entry
        .metadata
        .as_ref()
        .and_then(|raw| serde_json::from_str::<Value>(raw.0.get()).ok())
        .and_then(|metadata| metadata.get("erased_through_seq")?.as_i64())
        .unwrap_or(0)
}

/// The payload digest of an entry recomputed from its stored payload; `None` when the payload
/// is not there to recompute it from.
fn recomputed_digest(entry: &Entry) -> Option<Vec<u8>> {
    // Stored JSON is parsed only here, to recompute the canonical form its digest commits to.
    let parse = |raw: &RawJson| serde_json::from_str::<Value>(raw.0.get()).ok();
    let content = match &entry.content {
        Some(raw) => Some(parse(raw)?),
        None => None,
    };
    let metadata = parse(entry.metadata.as_ref()?)?;
    let salt = entry.salt.as_ref().filter(|salt| salt.len() == 16)?;
    let digest = payload_digest(salt, content.as_ref(), metadata.as_object()?);
    (entry.payload_digest == digest).then(|| digest.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::hash::Timestamp;
    use serde_json::json;

    fn raw(value: &Value) -> RawJson {
        sqlx::types::Json(serde_json::value::to_raw_value(value).expect("JSON"))
    }

    /// An entry linked to `prev`, its payload (content, metadata) intact.
    fn linked(
        prev: &[u8; 32],
        seq: i64,
        kind: &str,
        role: Option<&str>,
        content: Option<Value>,
        metadata: Value,
    ) -> Entry {
        let created_at = Timestamp::parse_exact("2026-11-21T10:15:30.123456Z").expect("time");
        let salt = vec![seq as u8; 16];
        let digest = payload_digest(
            &salt,
            content.as_ref(),
            metadata.as_object().expect("object"),
        );
        let header = EntryHeader {
            tenant: "acme",
            session_id: "s",
            seq,
            kind,
            role,
            created_at,
            idempotency_key: None,
            author: "key_1",
            payload_digest: &digest,
        };
        let hash = entry_hash(prev, &header);
        Entry {
            seq,
            kind: kind.into(),
            role: role.map(Into::into),
            content: content.as_ref().map(raw),
            metadata: Some(raw(&metadata)),
            created_at,
            idempotency_key: None,
            author: "key_1".into(),
            salt: Some(salt),
            payload_digest: digest.to_vec(),
            prev_hash: prev.to_vec(),
            hash: hash.to_vec(),
            erased: false,
        }
    }

    fn chain(count: i64) -> Vec<Entry> {
        let mut entries: Vec<Entry> = Vec::new();
        for seq in 1..=count {
            entries.push(message_after(&entries, seq));
        }
        entries
    }

    fn message_after(entries: &[Entry], seq: i64) -> Entry {
        linked(
            &last_hash(entries),
            seq,
            "message",
            Some("user"),
            Some(json!(format!("message {seq}"))),
            json!({"n": seq}),
        )
    }

    fn erasure_after(entries: &[Entry], through: i64) -> Entry {
        let metadata =
            json!({"erased_through_seq": through, "erased_count": through, "reason": "r"});
        linked(
            &last_hash(entries),
            entries.len() as i64 + 1,
            "erasure",
            None,
            None,
            metadata,
        )
    }

    fn last_hash(entries: &[Entry]) -> [u8; 32] {
        entries.last().map_or(GENESIS_HASH, |entry| {
            entry.hash.as_slice().try_into().expect("32 bytes")
        })
    }

    /// Blanks the payloads of `entries` as an erasure does.
    fn erase(entries: &mut [Entry]) {
        for entry in entries {
            entry.content = None;
            entry.metadata = None;
            entry.salt = None;
            entry.erased = true;
        }
    }

    fn run(entries: &[Entry], last_seq: i64, head: &[u8]) -> Result<Verified, Break> {
        let mut verifier = ChainVerifier::new("acme", "s");
        entries.iter().try_for_each(|entry| verifier.check(entry))?;
        verifier.finish(last_seq, head)
    }

    #[test]
    fn an_intact_chain_verifies_through_its_head() {
        let entries = chain(5);
        let head = entries[4].hash.clone();
        let verified = run(&entries, 5, &head).expect("intact");
        assert_eq!(verified.verified_through_seq, 5);
        assert_eq!(verified.head_hash.to_vec(), head);
        assert_eq!(
            run(&[], 0, &GENESIS_HASH)
                .expect("empty")
                .verified_through_seq,
            0
        );
    }

    #[test]
    fn each_kind_of_damage_names_its_first_bad_seq() {
        let entries = chain(5);
        let head = entries[4].hash.clone();
        let broken = |edit: &dyn Fn(&mut Vec<Entry>)| {
            let mut copy = entries.clone();
            edit(&mut copy);
            run(&copy, 5, &head).expect_err("damage is detected")
        };
        let expect = |first_bad_seq, reason| Break {
            first_bad_seq,
            reason,
        };
        assert_eq!(
            broken(&|e| e[2].content = Some(raw(&json!("edited")))),
            expect(3, Reason::PayloadDigestMismatch)
        );
        assert_eq!(
            broken(&|e| e[2].role = Some("assistant".into())),
            expect(3, Reason::HashMismatch)
        );
        assert_eq!(
            broken(&|e| e[1].author = "key_2".into()),
            expect(2, Reason::HashMismatch)
        );
        assert_eq!(
            broken(&|e| e[3].prev_hash = vec![1; 32]),
            expect(4, Reason::PrevHashMismatch)
        );
        assert_eq!(
            broken(&|e| {
                e.remove(2);
            }),
            expect(3, Reason::SeqGap)
        );
        assert_eq!(broken(&|e| e.swap(1, 2)), expect(2, Reason::SeqGap));
        assert_eq!(broken(&|e| e.truncate(3)), expect(4, Reason::SeqGap));
        assert_eq!(
            run(&entries, 5, &[9; 32]).expect_err("head"),
            expect(5, Reason::HeadMismatch)
        );
        assert_eq!(
            run(&entries, 4, &head).expect_err("extra"),
            expect(4, Reason::HeadMismatch)
        );
    }

    #[test]
    fn erased_entries_verify_through_their_stored_digest_and_nothing_else() {
        let mut entries = chain(4);
        let erasure = erasure_after(&entries, 2);
        entries.push(erasure);
        erase(&mut entries[..2]);
        let head = entries[4].hash.clone();
        let verified = run(&entries, 5, &head).expect("an erased chain verifies");
        assert_eq!(verified.erased_entries, 2);
        let mut leftover = entries.clone();
        leftover[1].salt = Some(vec![0; 16]);
        assert_eq!(
            run(&leftover, 5, &head).expect_err("a salt left behind"),
            Break {
                first_bad_seq: 2,
                reason: Reason::PayloadDigestMismatch
            }
        );
        let mut forged = entries.clone();
        forged[0].payload_digest = vec![7; 32];
        assert_eq!(
            run(&forged, 5, &head).expect_err("a digest cannot change"),
            Break {
                first_bad_seq: 1,
                reason: Reason::HashMismatch
            }
        );
    }

    #[test]
    fn an_erased_entry_needs_a_later_erasure_entry_that_accounts_for_it() {
        // Messages 1-3, an erasure through 2 (seq 4), messages 5-6, an erasure through 5 (seq 7).
        let mut entries = chain(3);
        entries.push(erasure_after(&entries, 2));
        for seq in 5..=6 {
            let message = message_after(&entries, seq);
            entries.push(message);
        }
        entries.push(erasure_after(&entries, 5));
        erase(&mut entries[..3]);
        erase(&mut entries[4..5]);
        let head = entries[6].hash.clone();
        let verified = run(&entries, 7, &head).expect("each erased entry is accounted for");
        assert_eq!(verified.erased_entries, 4);

        let blanked = |erased: &[usize]| {
            let mut copy = entries.clone();
            for &index in erased {
                erase(&mut copy[index..=index]);
            }
            run(&copy, 7, &head)
        };
        let unaccounted = |first_bad_seq| {
            Err(Break {
                first_bad_seq,
                reason: Reason::PayloadDigestMismatch,
            })
        };
        // Blanked in the table after the erasures it could belong to: seq 6, past the last one's 5.
        assert_eq!(blanked(&[5]), unaccounted(6));

        // An erasure through 2 does not account for seq 3.
        let mut short = chain(3);
        short.push(erasure_after(&short, 2));
        erase(&mut short[..3]);
        let short_head = short[3].hash.clone();
        assert_eq!(run(&short, 4, &short_head), unaccounted(3));

        // No erasure entry at all: a message blanked in a chain of messages.
        let mut plain = chain(3);
        erase(&mut plain[1..2]);
        let plain_head = plain[2].hash.clone();
        assert_eq!(run(&plain, 3, &plain_head), unaccounted(2));
    }
}
