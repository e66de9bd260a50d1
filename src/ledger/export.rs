//! The export format (NDJSON: one entry per line with `tenant` and `session_id`, then a trailer)
//! and its offline verifier, which needs nothing but the export and the rules of API.md.

use std::io::{BufRead, Read};

use serde::{Deserialize, Serialize};

use super::hash::Timestamp;
use super::json;
use super::read::{Entry, RawJson};
use super::verify::{Break, ChainVerifier, Reason, Verified};

/// Longest export line the offline verifier reads: well beyond any line chatledger writes (a
/// message of the largest configurable size with every character escaped), short enough that a
/// hostile file cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// One exported entry, every value exactly as the API returns it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryLine {
    pub tenant: String,
    pub session_id: String,
    pub seq: i64,
    pub kind: String,
    pub role: Option<String>,
    pub content: Option<RawJson>,
    pub metadata: Option<RawJson>,
    pub created_at: String,
    pub idempotency_key: Option<String>,
    pub author: String,
    pub salt: Option<String>,
    pub payload_digest: String,
    pub prev_hash: String,
    pub hash: String,
    /// Whether the payload was erased (older exports do not say: they had no erasure).
    #[serde(default)]
    pub erased: bool,
}

/// The last line of an export, so that a truncated export is detectable.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trailer {
    pub tenant: String,
    pub session_id: String,
    pub last_seq: i64,
    pub head_hash: String,
    pub exported_at: String,
    /// The log's leaf of the session's head append and its index (what `inclusion_path` proves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<serde_json::Value>,
    /// The signed checkpoint whose tree holds the head leaf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Base64 hashes from the head leaf to the checkpoint's root (RFC 9162 §2.1.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inclusion_path: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrailerLine {
    export_trailer: Trailer,
}

impl EntryLine {
    pub fn new(tenant: &str, session_id: &str, entry: Entry) -> Self {
        Self {
            tenant: tenant.to_owned(),
            session_id: session_id.to_owned(),
            seq: entry.seq,
            kind: entry.kind,
            role: entry.role,
            content: entry.content,
            metadata: entry.metadata,
            created_at: entry.created_at.to_string(),
            idempotency_key: entry.idempotency_key,
            author: entry.author,
            salt: entry.salt.map(hex::encode),
            payload_digest: hex::encode(entry.payload_digest),
            prev_hash: hex::encode(entry.prev_hash),
            hash: hex::encode(entry.hash),
            erased: entry.erased,
        }
    }

    /// Back to an entry; `None` when a value is not in the form the API writes (then the line
    /// cannot be the one that was hashed).
    fn to_entry(&self) -> Option<Entry> {
        let created_at = Timestamp::parse_exact(&self.created_at)?;
        // Numbers and keys that a double or a JSON object reading would make alike could be
        // edited without changing the digest.
        if let Some(content) = &self.content {
            json::check(content.0.get(), "content").ok()?;
        }
        if let Some(metadata) = &self.metadata {
            json::check(metadata.0.get(), "metadata").ok()?;
        }
        let hex32 = |text: &str| hex::decode(text).ok().filter(|bytes| bytes.len() == 32);
        Some(Entry {
            seq: self.seq,
            kind: self.kind.clone(),
            role: self.role.clone(),
            content: self.content.clone(),
            metadata: self.metadata.clone(),
            created_at,
            idempotency_key: self.idempotency_key.clone(),
            author: self.author.clone(),
            salt: match &self.salt {
                Some(salt) => Some(hex::decode(salt).ok()?),
                None => None,
            },
            payload_digest: hex32(&self.payload_digest)?,
            prev_hash: hex32(&self.prev_hash)?,
            hash: hex32(&self.hash)?,
            erased: self.erased,
        })
    }
}

/// A serialized entry line, newline included.
pub fn entry_line(tenant: &str, session_id: &str, entry: Entry) -> Vec<u8> {
    line(&EntryLine::new(tenant, session_id, entry))
}

/// The serialized trailer line, newline included.
pub fn trailer_line(trailer: Trailer) -> Vec<u8> {
    line(&TrailerLine {
        export_trailer: trailer,
    })
}

fn line<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs of JSON values into memory cannot fail.
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// What the offline verifier concluded.
#[derive(Debug)]
pub enum ExportVerdict {
    /// The chain is intact, ends at the trailer's head, and reaches the expected head if given.
    Intact {
        tenant: String,
        session_id: String,
        verified: Verified,
    },
    /// Something that matters was changed, added or removed.
    Broken(String),
}

/// Why an export could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum UnreadableExport {
    #[error("cannot read the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a chatledger export: the first line is not an entry or a trailer")]
    NotAnExport,
}

/// Verifies an export line by line in constant memory. `expect_head` is a receipt: a
/// `head_hash` a client got from a 201, which the chain must reach.
pub fn verify_export(
    input: impl BufRead,
    expect_head: Option<&[u8; 32]>,
    log_key: Option<&crate::tlog::VerifierKey>,
) -> Result<ExportVerdict, UnreadableExport> {
    let broken = |why: String| Ok(ExportVerdict::Broken(why));
    let at_break = |found: Break| {
        Ok(ExportVerdict::Broken(format!(
            "seq {}: {}",
            found.first_bad_seq,
            found.reason.as_str()
        )))
    };
    let mut reached_expected = expect_head.is_none();
    let mut chain: Option<(ChainVerifier, String, String)> = None;
    let mut trailer: Option<Trailer> = None;
    let mut input = input;
    let mut buffer = Vec::new();
    let mut number = 0;
    loop {
        buffer.clear();
        let read = (&mut input)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buffer)?;
        if read == 0 {
            break;
        }
        number += 1;
        if buffer.len() > MAX_LINE_BYTES {
            return broken(format!("line {number}: longer than {MAX_LINE_BYTES} bytes"));
        }
        let Ok(line) = std::str::from_utf8(&buffer) else {
            return broken(format!("line {number}: not UTF-8"));
        };
        let line = line.trim_end_matches(['\n', '\r']);
        if trailer.is_some() {
            return broken(format!("line {number}: content after the trailer"));
        }
        if let Ok(TrailerLine { export_trailer }) = serde_json::from_str::<TrailerLine>(line) {
            trailer = Some(export_trailer);
            continue;
        }
        let Ok(entry_line) = serde_json::from_str::<EntryLine>(line) else {
            if number == 1 {
                return Err(UnreadableExport::NotAnExport);
            }
            return broken(format!("line {number}: not an entry line"));
        };
        let (verifier, tenant, session_id) = chain.get_or_insert_with(|| {
            let verifier = ChainVerifier::new(&entry_line.tenant, &entry_line.session_id);
            (
                verifier,
                entry_line.tenant.clone(),
                entry_line.session_id.clone(),
            )
        });
        if &entry_line.tenant != tenant || &entry_line.session_id != session_id {
            return broken(format!("line {number}: another tenant or session"));
        }
        let Some(entry) = entry_line.to_entry() else {
            return at_break(Break {
                first_bad_seq: verifier.next_seq(),
                reason: Reason::HashMismatch,
            });
        };
        if let Err(found) = verifier.check(&entry) {
            return at_break(found);
        }
        if expect_head.is_some_and(|head| head[..] == entry.hash[..]) {
            reached_expected = true;
        }
    }
    let Some(trailer) = trailer else {
        return broken("no trailer: the export is truncated".to_owned());
    };
    let Some((verifier, tenant, session_id)) = chain else {
        return broken("the export holds no entry".to_owned());
    };
    if trailer.tenant != tenant || trailer.session_id != session_id {
        return broken("the trailer names another tenant or session".to_owned());
    }
    let Ok(head_hash) = hex::decode(&trailer.head_hash) else {
        return broken("the trailer's head_hash is not hex".to_owned());
    };
    let verified = match verifier.finish(trailer.last_seq, &head_hash) {
        Ok(verified) => verified,
        Err(found) => return at_break(found),
    };
    if !reached_expected {
        return broken("the chain does not reach the expected head hash".to_owned());
    }
    if let Err(why) = check_head_in_log(&trailer, log_key) {
        return broken(why);
    }
    Ok(ExportVerdict::Intact {
        tenant,
        session_id,
        verified,
    })
}

/// Checks the trailer's log proof: the head leaf is the session's append ending at the head,
/// and `inclusion_path` leads from it to the checkpoint's root; with the log's key, the
/// checkpoint's signature too. Without a key, an export without a checkpoint passes (the
/// chain alone was checked); with one, the checkpoint is required.
fn check_head_in_log(
    trailer: &Trailer,
    log_key: Option<&crate::tlog::VerifierKey>,
) -> Result<(), String> {
    use crate::tlog::{self, Checkpoint, Hash, SignedCheckpoint};
    let (Some(note), Some(path), Some(index), Some(leaf)) = (
        &trailer.checkpoint,
        &trailer.inclusion_path,
        trailer.leaf_index,
        &trailer.leaf,
    ) else {
        if log_key.is_some() {
            return Err("the trailer carries no checkpoint and inclusion proof".to_owned());
        }
        return Ok(());
    };
    let checkpoint = match log_key {
        Some(key) => SignedCheckpoint::open(note, key)
            .map_err(|error| format!("the trailer's checkpoint: {error}"))?
            .checkpoint()
            .clone(),
        None => {
            let note = tlog::Note::parse(note)
                .map_err(|error| format!("the trailer's checkpoint: {error}"))?;
            Checkpoint::parse(note.text())
                .map_err(|error| format!("the trailer's checkpoint: {error}"))?
        }
    };
    let expected = super::checkpoints::append_leaf(
        &trailer.tenant,
        &trailer.session_id,
        leaf.get("first_seq")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0),
        trailer.last_seq,
        &hex::decode(&trailer.head_hash).unwrap_or_default(),
    );
    let first_seq = expected["first_seq"].as_i64().unwrap_or(0);
    if *leaf != expected || first_seq < 1 || first_seq > trailer.last_seq {
        return Err("the trailer's leaf is not the append of this head".to_owned());
    }
    let path = path
        .iter()
        .map(|hash| Hash::from_base64(hash))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "the inclusion path holds a malformed hash".to_owned())?;
    let leaf_hash = tlog::leaf_hash(&super::hash::canonical_json(leaf));
    tlog::verify_inclusion(&leaf_hash, index, checkpoint.size, &path, &checkpoint.root)
        .map_err(|error| format!("the head leaf is not in the checkpoint's tree: {error}"))
}
