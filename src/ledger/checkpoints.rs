//! The transparency log's storage (migrations/0006_transparency_log.sql): the sequencer that
//! drains the queue of leaves into the stored tree and signs checkpoints, and the reads that
//! prove things against them (inclusion of a session's append, consistency between sizes).
//! The Merkle and note logic is `crate::tlog`; this module only fetches and stores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use super::hash::canonical_json;
use crate::access::AccessRecord;
use crate::auth::Scope;
use crate::error::{Error, Invalid};
use crate::time::Timestamp;
use crate::tlog::{self, Checkpoint, EMPTY_ROOT, Hash, SignedCheckpoint, SignerKey};

/// The advisory lock that makes one server at a time the sequencer (any constant that no
/// other part of chatledger uses; retention's is another).
const SEQUENCER_LOCK: i64 = 0x636c_746c_6f67; // "cltlog"

/// Leaves integrated per round at most: one round is one short transaction and one checkpoint.
pub const MAX_LEAVES_PER_ROUND: i64 = 4096;

/// Why a round did not sign.
#[derive(Debug, thiserror::Error)]
pub enum SequencerError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the stored log is not an extension of the last signed checkpoint: {0}")]
    NotAnExtension(String),
    #[error("transparency log: {0}")]
    Tlog(#[from] tlog::Error),
    #[error("checkpoint file {path}: {problem}")]
    File { path: String, problem: String },
    #[error("the stored log is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the log's checkpoints are signed for origin {signed:?}, and this server would sign them for \
         {configured:?}: a log keeps its origin (witnesses follow it by name), so start the server \
         with the --log-name the log has"
    )]
    OtherOrigin { signed: String, configured: String },
}

/// Who signs: the log's key and origin line, and where checkpoints are also written.
#[derive(Debug)]
pub struct LogSigner {
    pub key: SignerKey,
    pub origin: String,
    pub checkpoint_dir: Option<PathBuf>,
}

/// The newest checkpoint published outside the database: the checkpoint directory's newest
/// file. The sequencer signs only trees that extend it, so a database restored from an older
/// backup, or a log rewritten in its tables, is refused instead of signed as a fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub size: u64,
    pub root: Hash,
}

impl Published {
    /// The tree a note signed with `key` commits to.
    fn of_note(note: &str, key: &tlog::VerifierKey) -> Result<Self, tlog::Error> {
        let signed = SignedCheckpoint::open(note, key)?;
        Ok(Self {
            size: signed.checkpoint().size,
            root: signed.checkpoint().root,
        })
    }
}

/// The newest checkpoint file in `dir` that is one of this log's (signed with `key`, of the
/// size its name says); `None` when there is none. Newer files that are not are skipped, each
/// with a warning: files are written whole (a temporary file linked into place), so such a
/// file was put there by someone else.
pub fn published_checkpoint(
    dir: &Path,
    key: &tlog::VerifierKey,
) -> Result<Option<Published>, SequencerError> {
    let mut sizes = note_file_sizes(dir).map_err(|error| SequencerError::File {
        path: dir.display().to_string(),
        problem: error.to_string(),
    })?;
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    for size in sizes {
        let path = dir.join(format!("{size}.note"));
        let checked = std::fs::read(&path)
            .map_err(|error| error.to_string())
            .and_then(|note| {
                Published::of_note(&String::from_utf8_lossy(&note), key)
                    .map_err(|error| format!("not a checkpoint of this log: {error}"))
            })
            .and_then(|published| {
                if published.size == size {
                    Ok(published)
                } else {
                    Err("holds a checkpoint of another size".to_owned())
                }
            });
        match checked {
            Ok(published) => return Ok(Some(published)),
            Err(problem) => {
                tracing::warn!(path = %path.display(), %problem, "skipping a checkpoint file")
            }
        }
    }
    Ok(None)
}

/// What a round did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// Another server holds the sequencer lock.
    NotSequencer,
    /// Nothing was pending.
    Idle,
    /// A checkpoint was signed over this many new leaves.
    Signed { size: u64, leaves: usize },
}

/// The leaf object of an append (API.md "Checkpoints").
pub fn append_leaf(
    tenant: &str,
    session_id: &str,
    first_seq: i64,
    last_seq: i64,
    head_hash: &[u8],
) -> Value {
    json!({
        "type": "append",
        "tenant": tenant,
        "session_id": session_id,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "head_hash": hex::encode(head_hash),
    })
}

/// The leaf object of an access record: its id and the SHA-256 of its JCS as the API returns it.
pub fn access_leaf(record: &AccessRecord) -> Value {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(canonical_json(record));
    json!({
        "type": "access",
        "tenant": record.tenant,
        "id": record.id,
        "hash": hex::encode(digest),
    })
}

struct Pending {
    id: i64,
    tenant_id: i64,
    tenant: String,
    session_id: Option<String>,
    first_seq: Option<i64>,
    last_seq: Option<i64>,
    head_hash: Option<Vec<u8>>,
    access_id: Option<i64>,
    queued_at: DateTime<Utc>,
}

/// The latest signed checkpoint, as stored.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: Hash,
    pub note: String,
}

fn to_u64(value: i64) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::Corrupt("a negative tree size or index"))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The latest checkpoint, if any was signed.
pub async fn latest(db: &mut PgConnection) -> Result<Option<StoredCheckpoint>, Error> {
    let row = sqlx::query!(
        "SELECT tree_size, root, note FROM tlog_checkpoints ORDER BY tree_size DESC LIMIT 1"
    )
    .fetch_optional(&mut *db)
    .await?;
    row.map(|row| {
        Ok(StoredCheckpoint {
            size: to_u64(row.tree_size)?,
            root: Hash::from_slice(&row.root)
                .map_err(|_| Error::Corrupt("a checkpoint root that is not 32 bytes"))?,
            note: row.note,
        })
    })
    .transpose()
}

/// The stored hashes at `indexes`.
async fn stored_hashes(
    db: &mut PgConnection,
    indexes: &[u64],
) -> Result<BTreeMap<u64, Hash>, Error> {
    stored_hash_bytes(db, indexes)
        .await?
        .into_iter()
        .map(|(idx, hash)| {
            Ok((
                to_u64(idx)?,
                Hash::from_slice(&hash)
                    .map_err(|_| Error::Corrupt("a stored hash that is not 32 bytes"))?,
            ))
        })
        .collect()
}

/// The stored hashes at `indexes` as stored, whatever their length.
async fn stored_hash_bytes(
    db: &mut PgConnection,
    indexes: &[u64],
) -> Result<BTreeMap<i64, Vec<u8>>, Error> {
    let wanted: Vec<i64> = indexes.iter().copied().map(to_i64).collect();
    let rows = sqlx::query!(
        "SELECT idx, hash FROM tlog_hashes WHERE idx = ANY($1)",
        &wanted
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.idx, row.hash)).collect())
}

/// One sequencer round, on a connection of the schema owner: unless another server holds the
/// lock, integrates up to `max_leaves` queued leaves in queue order and signs the new tree, in
/// one transaction; signs the empty tree when nothing was ever signed. Refuses to sign a tree
/// whose stored prefix does not match the last signed checkpoint, or that does not extend
/// `published`.
pub async fn sequence_once(
    owner: &mut PgConnection,
    signer: &LogSigner,
    published: Option<Published>,
    max_leaves: i64,
) -> Result<Round, SequencerError> {
    let mut tx = owner.begin().await?;
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#,
        SEQUENCER_LOCK
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Ok(Round::NotSequencer);
    }
    let last = latest(&mut tx).await.map_err(internal)?;
    if let Some(last) = &last {
        let signed = last.note.lines().next().unwrap_or_default();
        if signed != signer.origin {
            return Err(SequencerError::OtherOrigin {
                signed: signed.to_owned(),
                configured: signer.origin.clone(),
            });
        }
    }
    let pending = sqlx::query_as!(
        Pending,
        r#"SELECT p.id, p.tenant_id, t.name AS tenant, p.session_id, p.first_seq, p.last_seq,
                  p.head_hash, p.access_id, p.queued_at
             FROM tlog_pending p JOIN tenants t ON t.id = p.tenant_id
            ORDER BY p.id
            LIMIT $1"#,
        max_leaves
    )
    .fetch_all(&mut *tx)
    .await?;
    let (size, signed_root) = match &last {
        Some(last) => (last.size, last.root),
        None => (0, EMPTY_ROOT),
    };
    if let Some(last) = &last
        && Published::of_note(&last.note, &signer.key.verifier_key()).ok()
            != Some(Published {
                size,
                root: signed_root,
            })
    {
        return Err(SequencerError::NotAnExtension(format!(
            "the stored checkpoint of {size} leaves is not signed over its own tree"
        )));
    }
    if let Some(published) = published {
        extends_published(&mut tx, size, &signed_root, published).await?;
    }
    if pending.is_empty() && last.is_some() {
        return Ok(Round::Idle);
    }

    // The stored tree must be exactly the signed one: no hash row beyond it, none missing.
    let stored_max = sqlx::query_scalar!("SELECT max(idx) FROM tlog_hashes")
        .fetch_one(&mut *tx)
        .await?;
    let expected_rows = tlog::stored_hash_count(size);
    let rows = match stored_max {
        Some(max) => to_u64(max).map_err(internal)? + 1,
        None => 0,
    };
    if rows != expected_rows {
        return Err(SequencerError::NotAnExtension(format!(
            "{rows} stored hashes for a signed tree of {size} leaves, which has {expected_rows}"
        )));
    }

    let leaves = leaf_bytes(&mut tx, &pending).await.map_err(internal)?;
    let leaf_hashes: Vec<Hash> = leaves.iter().map(|leaf| tlog::leaf_hash(leaf)).collect();
    let needs = tlog::append_needs(size)?;
    let stored = stored_hashes(&mut tx, &needs).await.map_err(internal)?;
    let appended = tlog::append(size, &stored, &leaf_hashes)?;
    if appended.old_root != signed_root {
        return Err(SequencerError::NotAnExtension(format!(
            "the stored tree of {size} leaves has root {}, the checkpoint {}",
            appended.old_root, signed_root
        )));
    }

    let (idx, hashes): (Vec<i64>, Vec<Vec<u8>>) = appended
        .new_hashes
        .iter()
        .map(|stored| (to_i64(stored.index), stored.hash.0.to_vec()))
        .unzip();
    sqlx::query!(
        "INSERT INTO tlog_hashes (idx, hash) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
        &idx,
        &hashes
    )
    .execute(&mut *tx)
    .await?;

    let first_index = to_i64(size);
    let indexes: Vec<i64> = (first_index..).take(pending.len()).collect();
    let tenant_ids: Vec<i64> = pending.iter().map(|p| p.tenant_id).collect();
    let session_ids: Vec<Option<String>> = pending.iter().map(|p| p.session_id.clone()).collect();
    let first_seqs: Vec<Option<i64>> = pending.iter().map(|p| p.first_seq).collect();
    let last_seqs: Vec<Option<i64>> = pending.iter().map(|p| p.last_seq).collect();
    let access_ids: Vec<Option<i64>> = pending.iter().map(|p| p.access_id).collect();
    let queued: Vec<DateTime<Utc>> = pending.iter().map(|p| p.queued_at).collect();
    sqlx::query!(
        r#"INSERT INTO tlog_leaves (leaf_index, tenant_id, session_id, first_seq, last_seq,
                                   access_id, leaf, queued_at)
           SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[],
                                $5::bigint[], $6::bigint[], $7::bytea[], $8::timestamptz[])"#,
        &indexes,
        &tenant_ids,
        &session_ids as &[Option<String>],
        &first_seqs as &[Option<i64>],
        &last_seqs as &[Option<i64>],
        &access_ids as &[Option<i64>],
        &leaves,
        &queued,
    )
    .execute(&mut *tx)
    .await?;
    let ids: Vec<i64> = pending.iter().map(|p| p.id).collect();
    sqlx::query!("DELETE FROM tlog_pending WHERE id = ANY($1)", &ids)
        .execute(&mut *tx)
        .await?;

    let signed =
        Checkpoint::new(&signer.origin, appended.new_size, appended.new_root).sign(&signer.key)?;
    sqlx::query!(
        "INSERT INTO tlog_checkpoints (tree_size, root, note) VALUES ($1, $2, $3)",
        to_i64(appended.new_size),
        &appended.new_root.0[..],
        signed.to_note_string(),
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Round::Signed {
        size: appended.new_size,
        leaves: pending.len(),
    })
}

/// Checks that the stored tree of `size` leaves and root `root` extends the published one.
async fn extends_published(
    db: &mut PgConnection,
    size: u64,
    root: &Hash,
    published: Published,
) -> Result<(), SequencerError> {
    let file = format!("{}.note", published.size);
    if size < published.size {
        return Err(SequencerError::NotAnExtension(format!(
            "the stored log has {size} leaves, fewer than the {} of checkpoint {file} in the \
             checkpoint directory: the database is behind what was published (restored from an \
             older backup, or its log was cut), and signing would fork the log",
            published.size
        )));
    }
    if !consistent(db, published, Published { size, root: *root }).await? {
        return Err(SequencerError::NotAnExtension(format!(
            "the stored tree of {size} leaves does not extend checkpoint {file} in the \
             checkpoint directory: the log in the database was rewritten"
        )));
    }
    Ok(())
}

/// Whether the tree `to` extends the tree `from`, by a consistency proof from the stored tree.
async fn consistent(
    db: &mut PgConnection,
    from: Published,
    to: Published,
) -> Result<bool, SequencerError> {
    if from.size == 0 || from.size == to.size {
        return Ok(from.size == 0 || from.root == to.root);
    }
    if from.size > to.size {
        return Ok(false);
    }
    let needs = tlog::consistency_proof_needs(from.size, to.size)?;
    let stored = stored_hashes(db, &needs).await.map_err(internal)?;
    let Ok(proof) = tlog::consistency_proof(from.size, to.size, &stored) else {
        return Ok(false);
    };
    Ok(tlog::verify_consistency(from.size, to.size, &proof, &from.root, &to.root).is_ok())
}

fn internal(error: Error) -> SequencerError {
    match error {
        Error::Database(error) | Error::Unavailable(error) | Error::RecordNotWritten(error) => {
            SequencerError::Database(error)
        }
        other => SequencerError::Corrupt(other.to_string()),
    }
}

/// The access records that `pending` names, by tenant id and record id; one that does not
/// exist is absent. Read under each tenant's binding: their table forces row-level security on
/// its owner.
async fn access_records(
    db: &mut PgConnection,
    pending: &[Pending],
) -> Result<BTreeMap<(i64, i64), AccessRecord>, Error> {
    let mut by_tenant: BTreeMap<i64, (String, Vec<i64>)> = BTreeMap::new();
    for p in pending {
        if let Some(id) = p.access_id {
            by_tenant
                .entry(p.tenant_id)
                .or_insert_with(|| (p.tenant.clone(), Vec::new()))
                .1
                .push(id);
        }
    }
    let mut records: BTreeMap<(i64, i64), AccessRecord> = BTreeMap::new();
    for (tenant_id, (tenant, ids)) in by_tenant {
        sqlx::query!(
            "SELECT set_config('chatledger.tenant_id', $1::bigint::text, true)",
            tenant_id
        )
        .fetch_one(&mut *db)
        .await?;
        let rows = sqlx::query!(
            r#"SELECT id, at, actor, role, action, session_id, detail, request_id, client_addr, status
                 FROM access_records WHERE tenant_id = $1 AND id = ANY($2)"#,
            tenant_id,
            &ids
        )
        .fetch_all(&mut *db)
        .await?;
        for row in rows {
            records.insert(
                (tenant_id, row.id),
                AccessRecord {
                    id: row.id,
                    at: Timestamp(row.at),
                    tenant: tenant.clone(),
                    actor: row.actor,
                    role: row.role,
                    action: row.action,
                    session_id: row.session_id,
                    detail: row.detail,
                    request_id: row.request_id,
                    client_addr: row.client_addr,
                    status: row.status,
                },
            );
        }
    }
    Ok(records)
}

/// The leaf bytes of each pending row, in order: appends from the queue itself, access records
/// read back.
async fn leaf_bytes(db: &mut PgConnection, pending: &[Pending]) -> Result<Vec<Vec<u8>>, Error> {
    let records = access_records(db, pending).await?;
    pending
        .iter()
        .map(|p| {
            let leaf = match (
                p.access_id,
                &p.session_id,
                p.first_seq,
                p.last_seq,
                &p.head_hash,
            ) {
                (Some(id), ..) => access_leaf(
                    records
                        .get(&(p.tenant_id, id))
                        .ok_or(Error::Corrupt("a queued access record that does not exist"))?,
                ),
                (None, Some(session), Some(first), Some(last), Some(head)) => {
                    append_leaf(&p.tenant, session, first, last, head)
                }
                _ => return Err(Error::Corrupt("a queued leaf of no kind")),
            };
            Ok(canonical_json(&leaf))
        })
        .collect()
}

/// Writes every checkpoint above `after` to `dir` as `<size>.note`, never overwriting: a file
/// that exists with other contents is an error (the database's log was rewritten, or another
/// log writes there). Each must be signed with `key` and extend the one before it, `after`
/// first: a checkpoint another server signed over a fork is not published. Returns the newest
/// checkpoint written.
pub async fn write_checkpoint_files(
    db: &mut PgConnection,
    dir: &Path,
    after: Option<Published>,
    key: &tlog::VerifierKey,
) -> Result<Option<Published>, SequencerError> {
    let mut previous = after;
    let after = after.map_or(-1, |published| to_i64(published.size));
    let rows = sqlx::query!(
        "SELECT tree_size, note FROM tlog_checkpoints WHERE tree_size > $1 ORDER BY tree_size LIMIT 10000",
        after
    )
    .fetch_all(&mut *db)
    .await?;
    let mut written = None;
    for row in rows {
        let size = to_u64(row.tree_size).map_err(internal)?;
        let published = Published::of_note(&row.note, key)?;
        if published.size != size {
            return Err(SequencerError::Corrupt(format!(
                "the stored checkpoint of {size} leaves signs a tree of {}",
                published.size
            )));
        }
        if let Some(previous) = previous
            && !consistent(db, previous, published).await?
        {
            return Err(SequencerError::NotAnExtension(format!(
                "the stored checkpoint of {size} leaves does not extend checkpoint {}.note in \
                 the checkpoint directory: it is not written there",
                previous.size
            )));
        }
        write_note_file(dir, size, &row.note)?;
        written = Some(published);
        previous = Some(published);
    }
    Ok(written)
}

/// Writes `<size>.note` whole or not at all: a temporary file, synced, then linked into place
/// (a link never replaces a file), so that a crash or a full disk leaves no partial checkpoint.
fn write_note_file(dir: &Path, size: u64, note: &str) -> Result<(), SequencerError> {
    use std::io::Write;
    let path = dir.join(format!("{size}.note"));
    let fail = |problem: String| SequencerError::File {
        path: path.display().to_string(),
        problem,
    };
    let temporary = dir.join(format!(".{size}.note.partial"));
    let written = std::fs::File::create(&temporary).and_then(|mut file| {
        file.write_all(note.as_bytes())?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&temporary, &path));
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| fail(error.to_string())),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let existing = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
            if existing == note {
                Ok(())
            } else {
                Err(fail(
                    "exists with another checkpoint of the same size: the log was rewritten".into(),
                ))
            }
        }
        Err(error) => Err(fail(error.to_string())),
    }
}

/// The sizes of the `<size>.note` files in `dir`.
fn note_file_sizes(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut sizes = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(size) = name
            .to_str()
            .and_then(|name| name.strip_suffix(".note"))
            .and_then(|size| size.parse::<u64>().ok())
        {
            sizes.push(size);
        }
    }
    Ok(sizes)
}

/// An inclusion proof of a session's append, as `GET /v1/sessions/{id}/proof` answers it.
#[derive(Debug, Clone, Serialize)]
pub struct InclusionProof {
    pub leaf_index: u64,
    pub tree_size: u64,
    pub leaf: Value,
    pub inclusion_path: Vec<String>,
    pub checkpoint: String,
}

/// The proof that the append leaf covering `seq` of `session_id` is in the latest checkpoint;
/// `SessionNotFound` for a session the tenant does not have, `NotFound` for a seq not yet
/// integrated (or never appended). Runs in the caller's transaction (the tenant binding is
/// transaction-local).
pub async fn inclusion(
    db: &mut PgConnection,
    scope: Scope<'_>,
    session_id: &str,
    seq: i64,
) -> Result<InclusionProof, Error> {
    sqlx::query!(
        "SELECT chatledger_bind($1, $2)",
        scope.tenant.id,
        scope.key_id
    )
    .execute(&mut *db)
    .await?;
    let known = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM sessions WHERE tenant_id = $1 AND session_id = $2) AS "known!""#,
        scope.tenant.id,
        session_id,
    )
    .fetch_one(&mut *db)
    .await?;
    if !known {
        return Err(Error::SessionNotFound);
    }
    let checkpoint = latest(db).await?.ok_or(Error::NotFound)?;
    let row = sqlx::query!(
        r#"SELECT leaf_index, first_seq AS "first_seq!", leaf FROM tlog_leaves
            WHERE tenant_id = $1 AND session_id = $2 AND last_seq >= $3
              AND leaf_index < $4
            ORDER BY last_seq LIMIT 1"#,
        scope.tenant.id,
        session_id,
        seq,
        to_i64(checkpoint.size),
    )
    .fetch_optional(&mut *db)
    .await?;
    let row = match row {
        Some(row) if row.first_seq <= seq => row,
        _ => return Err(Error::NotFound),
    };
    let index = to_u64(row.leaf_index)?;
    let path = prove_inclusion(db, index, checkpoint.size).await?;
    let leaf: Value = serde_json::from_slice(&row.leaf)
        .map_err(|_| Error::Corrupt("a stored leaf that is not JSON"))?;
    Ok(InclusionProof {
        leaf_index: index,
        tree_size: checkpoint.size,
        leaf,
        inclusion_path: path.iter().map(Hash::to_base64).collect(),
        checkpoint: checkpoint.note,
    })
}

/// The inclusion path of leaf `index` in the tree of `size` leaves, from the stored hashes.
pub async fn prove_inclusion(
    db: &mut PgConnection,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, Error> {
    let needs = tlog::inclusion_proof_needs(index, size)
        .map_err(|_| Error::Corrupt("a leaf beyond its checkpoint"))?;
    let stored = stored_hashes(db, &needs).await?;
    tlog::inclusion_proof(index, size, &stored)
        .map_err(|_| Error::Corrupt("a stored hash of the log is missing"))
}

/// The consistency proof between two signed sizes: `from > to`, or `to` beyond the latest
/// checkpoint, is `invalid_parameter`.
pub async fn consistency(db: &mut PgConnection, from: u64, to: u64) -> Result<Vec<Hash>, Error> {
    let latest_size = latest(db).await?.map_or(0, |c| c.size);
    if from > to {
        return Err(Invalid::parameter(format!("from ({from}) is greater than to ({to})")).into());
    }
    if to > latest_size {
        return Err(Invalid::parameter(format!(
            "to ({to}) is beyond the latest checkpoint's size ({latest_size})"
        ))
        .into());
    }
    let needs = tlog::consistency_proof_needs(from, to)
        .map_err(|error| Invalid::parameter(error.to_string()))?;
    let stored = stored_hashes(db, &needs).await?;
    tlog::consistency_proof(from, to, &stored)
        .map_err(|_| Error::Corrupt("a stored hash of the log is missing"))
}

/// What `chatledger verify --checkpoints` found: every problem, in leaf order.
#[derive(Debug, Default)]
pub struct LogAudit {
    pub leaves: u64,
    pub checkpoints_checked: u64,
    pub files_checked: u64,
    /// `tenant/session: why`, one per session whose stored chain no longer matches its leaves.
    pub sessions: BTreeMap<String, String>,
    /// Problems of the log itself: hashes, checkpoints, files.
    pub log: Vec<String>,
}

impl LogAudit {
    pub fn intact(&self) -> bool {
        self.sessions.is_empty() && self.log.is_empty()
    }
}

/// A tenant's append leaves of a page: their indexes, sessions and last seqs.
type LeafHeads = (Vec<i64>, Vec<String>, Vec<i64>);

/// Leaves read per page by [`audit_log`].
const AUDIT_PAGE: i64 = 5000;

/// Recomputes the log from the database as its owner: each append leaf from the stored
/// session (the entry at its `last_seq` must have its `head_hash`, and every session's head
/// must be logged or queued), each access leaf from its record, the tree from the leaves (each stored hash and each checkpoint's
/// root), and the checkpoints in `checkpoint_dir` against that tree (and, with `log_key`, their
/// signatures). A chain rewritten whole, head included, passes `verify` but not this.
pub async fn audit_log(
    owner: &mut PgConnection,
    checkpoint_dir: Option<&Path>,
    log_key: Option<&tlog::VerifierKey>,
) -> Result<LogAudit, Error> {
    let mut audit = LogAudit::default();
    let mut roots: BTreeMap<u64, Hash> = BTreeMap::new();
    let signed: BTreeMap<u64, (Hash, String)> =
        sqlx::query!("SELECT tree_size, root, note FROM tlog_checkpoints ORDER BY tree_size")
            .fetch_all(&mut *owner)
            .await?
            .into_iter()
            .map(|row| {
                Ok((
                    to_u64(row.tree_size)?,
                    (
                        Hash::from_slice(&row.root)
                            .map_err(|_| Error::Corrupt("a checkpoint root"))?,
                        row.note,
                    ),
                ))
            })
            .collect::<Result<_, Error>>()?;
    let mut files: BTreeMap<u64, String> = BTreeMap::new();
    if let Some(dir) = checkpoint_dir {
        let sizes = note_file_sizes(dir)
            .map_err(|_| Error::Corrupt("an unreadable checkpoint directory"))?;
        for size in sizes {
            // Bytes that are not text are checked too (and found not to be a checkpoint).
            let bytes = std::fs::read(dir.join(format!("{size}.note")))
                .map_err(|_| Error::Corrupt("an unreadable checkpoint file"))?;
            files.insert(size, String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    let wanted: std::collections::BTreeSet<u64> =
        signed.keys().chain(files.keys()).copied().collect();
    if wanted.contains(&0) {
        roots.insert(0, EMPTY_ROOT);
    }

    let mut tree = tlog::CompactRange::new();
    let mut interior: Vec<tlog::StoredHash> = Vec::new();
    let mut after: i64 = -1;
    loop {
        let mut tx = owner.begin().await?;
        let page = sqlx::query!(
            r#"SELECT l.leaf_index, l.tenant_id, t.name AS tenant, l.session_id, l.first_seq,
                      l.last_seq, l.access_id, l.leaf, h.hash AS "stored_hash?"
                 FROM tlog_leaves l JOIN tenants t ON t.id = l.tenant_id
                 LEFT JOIN tlog_hashes h
                   ON h.idx = 2 * l.leaf_index - length(replace(l.leaf_index::bit(64)::text, '0', ''))
                WHERE l.leaf_index > $1 ORDER BY l.leaf_index LIMIT $2"#,
            after,
            AUDIT_PAGE
        )
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = page.last() else { break };
        after = last.leaf_index;
        // The stored entries at each append leaf's last_seq, tenant by tenant (RLS binds the
        // owner of `entries` too).
        let mut heads: BTreeMap<i64, Option<Vec<u8>>> = BTreeMap::new();
        let mut by_tenant: BTreeMap<i64, LeafHeads> = BTreeMap::new();
        for row in &page {
            if let (Some(session), Some(seq)) = (&row.session_id, row.last_seq) {
                let group = by_tenant.entry(row.tenant_id).or_default();
                group.0.push(row.leaf_index);
                group.1.push(session.clone());
                group.2.push(seq);
            }
        }
        for (tenant_id, (indexes, sessions, seqs)) in &by_tenant {
            sqlx::query!(
                "SELECT set_config('chatledger.tenant_id', $1::bigint::text, true)",
                tenant_id
            )
            .fetch_one(&mut *tx)
            .await?;
            let found = sqlx::query!(
                r#"SELECT w.leaf_index AS "leaf_index!", e.hash AS "hash?"
                     FROM unnest($2::bigint[], $3::text[], $4::bigint[]) AS w (leaf_index, session_id, seq)
                     LEFT JOIN sessions s ON s.tenant_id = $1 AND s.session_id = w.session_id
                     LEFT JOIN entries e ON e.tenant_id = $1 AND e.session_pk = s.id AND e.seq = w.seq"#,
                tenant_id,
                indexes,
                sessions,
                seqs
            )
            .fetch_all(&mut *tx)
            .await?;
            for row in found {
                heads.insert(row.leaf_index, row.hash);
            }
        }
        // Each access leaf recomputed from its record, as the sequencer made it.
        let access: Vec<Pending> = page
            .iter()
            .filter_map(|row| {
                row.access_id.map(|id| Pending {
                    id: row.leaf_index,
                    tenant_id: row.tenant_id,
                    tenant: row.tenant.clone(),
                    session_id: None,
                    first_seq: None,
                    last_seq: None,
                    head_hash: None,
                    access_id: Some(id),
                    queued_at: Utc::now(),
                })
            })
            .collect();
        let records = access_records(&mut tx, &access).await?;
        tx.commit().await?;
        for row in page {
            let index = to_u64(row.leaf_index)?;
            if let Some(id) = row.access_id {
                match records.get(&(row.tenant_id, id)) {
                    None => audit.log.push(format!(
                        "leaf {index}: access record {id} of {} is gone (deleted)",
                        row.tenant
                    )),
                    Some(record) if canonical_json(&access_leaf(record)) != row.leaf => {
                        audit.log.push(format!(
                            "leaf {index}: access record {id} of {} is not the one logged (rewritten)",
                            row.tenant
                        ));
                    }
                    Some(_) => {}
                }
            }
            if index != tree.size() {
                audit.log.push(format!("leaf {} is missing", tree.size()));
                return Ok(audit);
            }
            let hash = tlog::leaf_hash(&row.leaf);
            if row.stored_hash.as_deref() != Some(&hash.0[..]) {
                audit.log.push(format!(
                    "leaf {index}: the stored tree hash is not the leaf's"
                ));
            }
            let leaf: Option<Value> = serde_json::from_slice(&row.leaf).ok();
            if let (Some(session), Some(first), Some(last)) =
                (&row.session_id, row.first_seq, row.last_seq)
            {
                let logged_head = leaf
                    .as_ref()
                    .and_then(|leaf| leaf.get("head_hash"))
                    .and_then(Value::as_str)
                    .and_then(|h| hex::decode(h).ok())
                    .unwrap_or_default();
                let expected = append_leaf(&row.tenant, session, first, last, &logged_head);
                let key = format!("{}/{session}", row.tenant);
                if leaf.as_ref() != Some(&expected) || canonical_json(&expected) != row.leaf {
                    audit.log.push(format!(
                        "leaf {index}: not the append leaf its columns name"
                    ));
                } else {
                    match heads.get(&row.leaf_index) {
                        Some(Some(stored)) if *stored == logged_head => {}
                        Some(Some(_)) => {
                            audit.sessions.entry(key).or_insert_with(|| {
                                format!(
                                    "the entry at seq {last} is not the one logged at leaf {index} (rewritten)"
                                )
                            });
                        }
                        _ => {
                            audit.sessions.entry(key).or_insert_with(|| {
                                format!("the entry at seq {last}, logged at leaf {index}, is gone")
                            });
                        }
                    }
                }
            } else if row.access_id.is_none() {
                audit.log.push(format!("leaf {index}: of no kind"));
            }
            let mut completed = Vec::new();
            tree.append_leaf(&hash, &mut completed)
                .map_err(|_| Error::Corrupt("a log beyond the largest tree"))?;
            // The first is the leaf's own, checked above; the rest are the nodes it completes.
            interior.extend(completed.into_iter().skip(1));
            audit.leaves += 1;
            if wanted.contains(&tree.size()) {
                roots.insert(tree.size(), tree.root());
            }
        }
        // The stored nodes above the leaves, which proofs are built from, as the leaves make them.
        if !interior.is_empty() {
            let indexes: Vec<u64> = interior.iter().map(|node| node.index).collect();
            let stored = stored_hash_bytes(owner, &indexes).await?;
            for node in interior.drain(..) {
                if stored.get(&to_i64(node.index)).map(Vec::as_slice) != Some(&node.hash.0[..]) {
                    audit.log.push(format!(
                        "stored tree hash {}: not the node its leaves make (proofs through it fail)",
                        node.index
                    ));
                }
            }
        }
    }

    // Every session's head must be logged (or still queued): entries appended behind the
    // log's back are not. Sessions are under forced RLS for the owner too, so tenant by tenant.
    let tenants = sqlx::query!("SELECT id, name FROM tenants ORDER BY id")
        .fetch_all(&mut *owner)
        .await?;
    for tenant in tenants {
        let mut tx = owner.begin().await?;
        sqlx::query!(
            "SELECT set_config('chatledger.tenant_id', $1::bigint::text, true)",
            tenant.id
        )
        .fetch_one(&mut *tx)
        .await?;
        let rows = sqlx::query!(
            r#"SELECT s.session_id AS "session_id!", s.last_seq AS "last_seq!"
                 FROM sessions s
                WHERE s.tenant_id = $1 AND s.last_seq > 0
                  AND NOT EXISTS (SELECT 1 FROM tlog_leaves l
                                   WHERE l.tenant_id = s.tenant_id AND l.session_id = s.session_id
                                     AND l.last_seq = s.last_seq)
                  AND NOT EXISTS (SELECT 1 FROM tlog_pending p
                                   WHERE p.tenant_id = s.tenant_id AND p.session_id = s.session_id
                                     AND p.last_seq = s.last_seq)"#,
            tenant.id
        )
        .fetch_all(&mut *tx)
        .await?;
        // Likewise every access record: one written with the log's trigger off is not.
        let unlogged = sqlx::query_scalar!(
            r#"SELECT r.id AS "id!"
                 FROM access_records r
                WHERE r.tenant_id = $1
                  AND NOT EXISTS (SELECT 1 FROM tlog_leaves l
                                   WHERE l.tenant_id = r.tenant_id AND l.access_id = r.id)
                  AND NOT EXISTS (SELECT 1 FROM tlog_pending p
                                   WHERE p.tenant_id = r.tenant_id AND p.access_id = r.id)
                ORDER BY r.id"#,
            tenant.id
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        for row in rows {
            audit
                .sessions
                .entry(format!("{}/{}", tenant.name, row.session_id))
                .or_insert_with(|| format!("its head at seq {} is not in the log", row.last_seq));
        }
        for id in unlogged {
            audit.log.push(format!(
                "access record {id} of {} is not in the log",
                tenant.name
            ));
        }
    }

    for (size, (root, note)) in &signed {
        audit.checkpoints_checked += 1;
        let noted = tlog::Note::parse(note)
            .ok()
            .and_then(|n| Checkpoint::parse(n.text()).ok());
        if noted.is_none_or(|checkpoint| checkpoint.size != *size || checkpoint.root != *root) {
            audit.log.push(format!(
                "stored checkpoint {size}: its note is not of the tree its row holds"
            ));
        }
        check_checkpoint(
            &mut audit,
            "stored checkpoint",
            *size,
            root,
            note,
            &roots,
            log_key,
        );
    }
    for (size, note) in &files {
        audit.files_checked += 1;
        let parsed = tlog::Note::parse(note)
            .ok()
            .and_then(|n| Checkpoint::parse(n.text()).ok());
        match parsed {
            Some(checkpoint) if checkpoint.size == *size => check_checkpoint(
                &mut audit,
                "checkpoint file",
                *size,
                &checkpoint.root,
                note,
                &roots,
                log_key,
            ),
            _ => audit.log.push(format!(
                "checkpoint file {size}.note: not a checkpoint of size {size}"
            )),
        }
    }
    Ok(audit)
}

fn check_checkpoint(
    audit: &mut LogAudit,
    what: &str,
    size: u64,
    root: &Hash,
    note: &str,
    roots: &BTreeMap<u64, Hash>,
    log_key: Option<&tlog::VerifierKey>,
) {
    if let Some(key) = log_key
        && let Err(error) = SignedCheckpoint::open(note, key)
    {
        audit.log.push(format!("{what} {size}: {error}"));
    }
    match roots.get(&size) {
        Some(rebuilt) if rebuilt == root => {}
        Some(_) => audit.log.push(format!(
            "{what} {size}: its root is not that of the stored log's first {size} leaves"
        )),
        None => audit.log.push(format!(
            "{what} {size}: the stored log has fewer than {size} leaves"
        )),
    }
}
