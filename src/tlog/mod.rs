//! The transparency log's pure core: RFC 6962 / RFC 9162 Merkle tree (tree heads, inclusion
//! and consistency proofs, over stored hashes), C2SP signed notes, checkpoints and
//! `cosignature/v1` cosignatures with Ed25519, and the witness's decision. No database, no
//! HTTP, no clock, no file: callers fetch, store and timestamp.
//!
//! # Storage
//!
//! The tree is kept as "stored hashes" ([`stored_hash_index`](crate::tlog::stored_hash_index)),
//! as golang.org/x/mod/sumdb/tlog does: a table `(index bigint primary key, hash bytea)` that
//! only grows, about two rows per leaf, never updated. Each computation runs in two phases so
//! the database is read in one round trip: `*_needs` lists the indexes, the caller fetches
//! them, the function computes.
//! Tiles (C2SP tlog-tiles) would pack 256 hashes to a row, at the cost of rewriting partial
//! tiles; one row per hash keeps the table append-only, like the rest of the ledger.
//!
//! # Dependencies
//!
//! - `ed25519-dalek` 2.2 (signing, `verify_strict`; RUSTSEC-2022-0093 is fixed since 2.0 and
//!   RUSTSEC-2024-0344 in the curve25519-dalek 4.1.3 it uses) with the crate's `sha2` 0.10; 3.0
//!   would bring a second `sha2`/`digest` generation.
//! - `base64` 0.22 (standard alphabet, canonical padding and trailing bits, as the specs
//!   require) and `zeroize` for secret key strings.
//! - Not used: Cloudflare's `signed_note` and `tlog_tiles` 0.2.0 (a careful port of Go's
//!   packages) are frozen on crates.io (their repository marks them `release = false` and has
//!   moved on), pin `base64` 0.21, `thiserror` 1 and `rand_core` 0.6, pull `url`, and expose a
//!   synchronous `HashReader` without the index planning of the proofs, which an async
//!   database reader needs. `ct-merkle` keeps the whole tree in memory. The Merkle code here
//!   follows Go's sumdb/tlog (storage, generation) and transparency-dev/merkle (verification)
//!   and is tested against their vectors and RFC 6962's reference tree.

mod checkpoint;
mod cosignature;
mod hash;
mod merkle;
mod note;
mod witness;

#[cfg(test)]
mod tests;

pub use checkpoint::{Checkpoint, SignedCheckpoint, log_origin};
pub use cosignature::{ALG_COSIGNATURE_V1, CosignatureVerifierKey, CosignerKey};
pub use hash::{EMPTY_ROOT, Hash, leaf_hash, node_hash};
pub use merkle::{
    Appended, CompactRange, MAX_TREE_SIZE, StoredHash, StoredHashes, append, append_needs,
    consistency_proof, consistency_proof_needs, inclusion_proof, inclusion_proof_needs,
    stored_hash_count, stored_hash_index, tree_hash, tree_hash_needs, verify_consistency,
    verify_inclusion,
};
pub use note::{
    ALG_ED25519, MAX_NOTE_BYTES, MAX_NOTE_SIGNATURES, Note, NoteSignature, NoteVerifier, SignerKey,
    VerifierKey, check_key_name, key_id,
};
pub use witness::{Accepted, WitnessState, witness_checkpoint};

/// Generates a signer key named `name` and returns its key file contents, for the caller to
/// write with mode 0600 (`chatledger checkpoint-key --generate FILE --name NAME`).
pub fn generate_key_file(name: &str) -> Result<zeroize::Zeroizing<String>, Error> {
    Ok(SignerKey::generate(name)?.to_key_file())
}

/// The verifier key string of a signer key file's contents (`checkpoint-key --key-file FILE`,
/// `GET /v1/checkpoint/key`).
pub fn verifier_key_of_key_file(contents: &str) -> Result<String, Error> {
    Ok(SignerKey::from_key_file(contents)?
        .verifier_key()
        .to_string())
}

/// Everything that can go wrong in the transparency log, from bad input to a log caught lying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not 32 bytes, or not canonical base64 of 32 bytes.
    #[error("not a 32-byte hash (or its standard base64)")]
    MalformedHash,
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// Leaf index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// The second tree is smaller than the first: a log never shrinks.
    #[error("tree size went down from {from} to {to}")]
    TreeShrank {
        /// Earlier size.
        from: u64,
        /// Later size.
        to: u64,
    },
    /// Beyond [`MAX_TREE_SIZE`].
    #[error("tree size {size} is beyond the largest supported")]
    TreeTooLarge {
        /// Requested size.
        size: u64,
    },
    /// The caller did not supply a stored hash that the computation needs.
    #[error("stored hash {index} was not supplied")]
    MissingStoredHash {
        /// Its stored-hash index.
        index: u64,
    },
    /// A proof with too many or too few hashes.
    #[error("proof has {got} hashes where {expected} are needed")]
    ProofLength {
        /// Hashes the proof must have.
        expected: usize,
        /// Hashes it has.
        got: usize,
    },
    /// The proof does not lead to the (new) root hash.
    #[error("proof does not lead to the root hash")]
    RootMismatch,
    /// A consistency proof from the empty tree, which proves nothing.
    #[error("a consistency proof from the empty tree proves nothing")]
    ConsistencyFromEmptyTree,
    /// The consistency proof does not lead to the old root hash.
    #[error("consistency proof does not lead to the old root hash")]
    OldRootMismatch,
    /// A note that does not follow the signed-note format.
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    /// A key string that does not follow its format.
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    /// A key string whose type byte is not the one expected.
    #[error("unsupported key type 0x{0:02x}")]
    UnsupportedAlgorithm(u8),
    /// A key ID that is not the one of the key.
    #[error("the key ID does not match the key")]
    KeyIdMismatch,
    /// Empty, or holds a space, a `+` or a control character.
    #[error("invalid key name (empty, or with a space, a '+' or a control character)")]
    InvalidKeyName,
    /// A signature line of a known key does not verify: the note is refused whole.
    #[error("the signature of {name}+{key_id:08x} does not verify")]
    InvalidSignature {
        /// Key name.
        name: String,
        /// Key ID.
        key_id: u32,
    },
    /// No signature line of a known key: signed by another key, or not at all.
    #[error("no signature by the expected key")]
    NoKnownSignature,
    /// A signature line matches two of the keys given.
    #[error("two known keys are {name}+{key_id:08x}")]
    AmbiguousKey {
        /// Key name.
        name: String,
        /// Key ID.
        key_id: u32,
    },
    /// A checkpoint text that does not follow tlog-checkpoint.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    /// A cosignature timestamp beyond 2^63 - 1.
    #[error("timestamp {0} is beyond 2^63 - 1")]
    InvalidTimestamp(u64),
    /// The checkpoint is of another log than the one the witness follows.
    #[error("checkpoint origin {got:?} is not {expected:?}")]
    OriginMismatch {
        /// Origin of the accepted checkpoints.
        expected: String,
        /// Origin of this one.
        got: String,
    },
    /// The checkpoint is not an extension of the last accepted one.
    #[error(
        "tree of size {new_size} is not consistent with the accepted one of size {old_size}: {cause}"
    )]
    Inconsistent {
        /// Size of the last accepted checkpoint.
        old_size: u64,
        /// Size of the refused one.
        new_size: u64,
        /// What the consistency check found.
        cause: Box<Error>,
    },
    /// The operating system's random generator failed.
    #[error("the random generator failed")]
    Randomness,
}
