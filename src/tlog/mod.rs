//! The transparency log's pure core: the RFC 6962 / RFC 9162 Merkle tree (tree heads,
//! inclusion and consistency proofs, over stored hashes). No database, no HTTP, no clock, no
//! file: callers fetch and store.
//!
//! # Storage
//!
//! The tree is kept as "stored hashes" ([`stored_hash_index`]), as golang.org/x/mod/sumdb/tlog
//! does: a table `(index bigint primary key, hash bytea)` that only grows, about two rows per
//! leaf, never updated. Each computation runs in two phases so the database is read in one
//! round trip: `*_needs` lists the indexes, the caller fetches them, the function computes.
//! Tiles (C2SP tlog-tiles) would pack 256 hashes to a row, at the cost of rewriting partial
//! tiles; one row per hash keeps the table append-only, like the rest of the ledger.
//!
//! # Dependencies
//!
//! - `base64` 0.22 (standard alphabet, canonical padding and trailing bits, as the specs
//!   require).
//! - Not used: Cloudflare's `tlog_tiles` 0.2.0 (a careful port of Go's package) is frozen on
//!   crates.io (its repository marks it `release = false` and has moved on), pins `base64`
//!   0.21 and `thiserror` 1, pulls `url`, and exposes a synchronous `HashReader` without the
//!   index planning of the proofs, which an async database reader needs. `ct-merkle` keeps
//!   the whole tree in memory. The Merkle code here follows Go's sumdb/tlog (storage,
//!   generation) and transparency-dev/merkle (verification) and is tested against their
//!   vectors and RFC 6962's reference tree.

mod hash;
mod merkle;

#[cfg(test)]
mod tests;

pub use hash::{EMPTY_ROOT, Hash, leaf_hash, node_hash};
pub use merkle::{
    Appended, CompactRange, MAX_TREE_SIZE, StoredHash, StoredHashes, append, append_needs,
    consistency_proof, consistency_proof_needs, inclusion_proof, inclusion_proof_needs,
    stored_hash_count, stored_hash_index, tree_hash, tree_hash_needs, verify_consistency,
    verify_inclusion,
};

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
}
