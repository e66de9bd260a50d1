//! The Merkle tree of RFC 6962 §2.1 / RFC 9162 §2.1: tree heads, inclusion and consistency
//! proofs, over "stored hashes" addressed as in golang.org/x/mod/sumdb/tlog.
//!
//! Every leaf `n` adds the hashes of the perfect subtrees it completes: its own leaf hash
//! (level 0), then one node per trailing 1 bit of `n` (about two hashes per leaf in all). They
//! never change once written, so every tree size ever signed can still be proved from them. The
//! hash of level `l`, index `n` (the subtree of leaves `[n·2^l, (n+1)·2^l)`) lives at
//! [`stored_hash_index`]`(l, n)`; a leaf's hashes occupy consecutive indexes, in the order leaves
//! are appended (Crosby and Wallach, "Efficient Data Structures for Tamper-Evident Logging", §3.3).
//!
//! Generation runs in two phases so that the database can be read asynchronously in one
//! round trip: a `*_needs` function lists the stored-hash indexes a computation reads, the
//! caller fetches them into any [`StoredHashes`], and the matching function computes the result.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use super::Error;
use super::hash::{EMPTY_ROOT, Hash, node_hash};

/// Largest tree the stored-hash functions accept: its indexes (about twice the size) must fit
/// in a PostgreSQL `bigint`.
pub const MAX_TREE_SIZE: u64 = 1 << 61;

/// A stored hash and its index: one row of the hash table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredHash {
    /// Position in the dense ordering of [`stored_hash_index`].
    pub index: u64,
    /// The node's hash.
    pub hash: Hash,
}

/// The stored hashes that the caller fetched for a computation (at least the indexes that the
/// matching `*_needs` function listed). A missing one is [`Error::MissingStoredHash`].
pub trait StoredHashes {
    /// The hash at `index`, if it was fetched.
    fn stored_hash(&self, index: u64) -> Option<Hash>;
}

impl<S: BuildHasher> StoredHashes for HashMap<u64, Hash, S> {
    fn stored_hash(&self, index: u64) -> Option<Hash> {
        self.get(&index).copied()
    }
}

impl StoredHashes for BTreeMap<u64, Hash> {
    fn stored_hash(&self, index: u64) -> Option<Hash> {
        self.get(&index).copied()
    }
}

/// Rows as fetched, in any order (a computation reads at most about 130).
impl StoredHashes for [StoredHash] {
    fn stored_hash(&self, index: u64) -> Option<Hash> {
        self.iter().find(|s| s.index == index).map(|s| s.hash)
    }
}

impl StoredHashes for Vec<StoredHash> {
    fn stored_hash(&self, index: u64) -> Option<Hash> {
        self.as_slice().stored_hash(index)
    }
}

fn read(stored: &(impl StoredHashes + ?Sized), index: u64) -> Result<Hash, Error> {
    stored
        .stored_hash(index)
        .ok_or(Error::MissingStoredHash { index })
}

fn check_size(size: u64) -> Result<(), Error> {
    if size > MAX_TREE_SIZE {
        return Err(Error::TreeTooLarge { size });
    }
    Ok(())
}

/// Index of the stored hash of level `level`, index `n` (leaves `[n·2^level, (n+1)·2^level)`),
/// for a node of a tree of at most [`MAX_TREE_SIZE`] leaves.
///
/// The leaf `m = (n+1)·2^level - 1` completes that subtree; its hashes start at
/// `stored_hash_index(0, m) = 2m - popcount(m)` and this one is `level` places further.
pub fn stored_hash_index(level: u8, n: u64) -> u64 {
    let last_leaf = ((n + 1) << level) - 1;
    2 * last_leaf - u64::from(last_leaf.count_ones()) + u64::from(level)
}

/// Inverse of [`stored_hash_index`]: the (level, index) of the node stored at `index`.
#[cfg(test)]
pub(crate) fn split_stored_hash_index(index: u64) -> (u8, u64) {
    // stored_hash_index(0, m) lies in [index - 63, index], and m is about index / 2.
    let mut m = index / 2;
    while stored_hash_index(0, m + 1) <= index {
        m += 1;
    }
    while stored_hash_index(0, m) > index {
        m -= 1;
    }
    let level = u8::try_from(index - stored_hash_index(0, m)).expect("at most 64 levels");
    (level, ((m + 1) >> level) - 1)
}

/// Number of stored hashes of a tree of `size` leaves: the table's row count.
pub fn stored_hash_count(size: u64) -> u64 {
    if size == 0 {
        0
    } else {
        let last = size - 1;
        stored_hash_index(0, last) + 1 + u64::from(last.trailing_ones())
    }
}

/// Largest power of two strictly below `n` (RFC 6962's `k`), for `n >= 2`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The perfect subtrees that make up leaves `[lo, hi)`, left to right, as (level, index).
/// Every range built by the RFC recursion starts on a multiple of its largest part.
fn perfect_subtrees(mut lo: u64, hi: u64) -> impl Iterator<Item = (u8, u64)> {
    std::iter::from_fn(move || {
        if lo >= hi {
            return None;
        }
        let level = (63 - (hi - lo).leading_zeros()) as u8;
        assert!(lo.trailing_zeros() >= u32::from(level), "range is aligned");
        let node = (level, lo >> level);
        lo += 1 << level;
        Some(node)
    })
}

fn range_needs(lo: u64, hi: u64, need: &mut Vec<u64>) {
    need.extend(perfect_subtrees(lo, hi).map(|(l, n)| stored_hash_index(l, n)));
}

fn range_hash(lo: u64, hi: u64, stored: &(impl StoredHashes + ?Sized)) -> Result<Hash, Error> {
    let mut parts = Vec::with_capacity(64);
    for (level, n) in perfect_subtrees(lo, hi) {
        parts.push(read(stored, stored_hash_index(level, n))?);
    }
    Ok(fold_right(&parts))
}

/// Root of the parts of a compact range: the right-most first, each left part on top.
fn fold_right(parts: &[Hash]) -> Hash {
    let mut iter = parts.iter().rev();
    match iter.next() {
        None => EMPTY_ROOT,
        Some(last) => iter.fold(*last, |acc, left| node_hash(left, &acc)),
    }
}

fn sorted(mut need: Vec<u64>) -> Vec<u64> {
    need.sort_unstable();
    need.dedup();
    need
}

/// Stored-hash indexes that [`tree_hash`] reads: one per 1 bit of `size`.
pub fn tree_hash_needs(size: u64) -> Result<Vec<u64>, Error> {
    check_size(size)?;
    let mut need = Vec::new();
    range_needs(0, size, &mut need);
    Ok(sorted(need))
}

/// Root hash of the tree of `size` leaves (RFC 6962 `MTH`), from the hashes of [`tree_hash_needs`].
pub fn tree_hash(size: u64, stored: &(impl StoredHashes + ?Sized)) -> Result<Hash, Error> {
    check_size(size)?;
    range_hash(0, size, stored)
}

/// The subtrees whose hashes form the inclusion proof, bottom-up (RFC 6962 §2.1.1 `PATH`).
fn inclusion_ranges(index: u64, lo: u64, hi: u64, out: &mut Vec<(u64, u64)>) {
    if hi - lo <= 1 {
        return;
    }
    let k = split_point(hi - lo);
    if index < lo + k {
        inclusion_ranges(index, lo, lo + k, out);
        out.push((lo + k, hi));
    } else {
        inclusion_ranges(index, lo + k, hi, out);
        out.push((lo, lo + k));
    }
}

fn checked_inclusion_ranges(index: u64, size: u64) -> Result<Vec<(u64, u64)>, Error> {
    check_size(size)?;
    if index >= size {
        return Err(Error::IndexOutOfRange { index, size });
    }
    let mut ranges = Vec::with_capacity(64);
    inclusion_ranges(index, 0, size, &mut ranges);
    Ok(ranges)
}

/// Stored-hash indexes that [`inclusion_proof`] reads (at most about 2·log2(size)).
pub fn inclusion_proof_needs(index: u64, size: u64) -> Result<Vec<u64>, Error> {
    let mut need = Vec::new();
    for (lo, hi) in checked_inclusion_ranges(index, size)? {
        range_needs(lo, hi, &mut need);
    }
    Ok(sorted(need))
}

/// Inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1), from the
/// hashes of [`inclusion_proof_needs`].
pub fn inclusion_proof(
    index: u64,
    size: u64,
    stored: &(impl StoredHashes + ?Sized),
) -> Result<Vec<Hash>, Error> {
    checked_inclusion_ranges(index, size)?
        .into_iter()
        .map(|(lo, hi)| range_hash(lo, hi, stored))
        .collect()
}

/// RFC 6962 §2.1.2 `SUBPROOF(m, D[lo:hi], b)`, with `m` counted from leaf 0.
fn consistency_ranges(m: u64, lo: u64, hi: u64, whole_old_tree: bool, out: &mut Vec<(u64, u64)>) {
    if m == hi {
        if !whole_old_tree {
            out.push((lo, hi));
        }
        return;
    }
    let k = split_point(hi - lo);
    if m <= lo + k {
        consistency_ranges(m, lo, lo + k, whole_old_tree, out);
        out.push((lo + k, hi));
    } else {
        consistency_ranges(m, lo + k, hi, false, out);
        out.push((lo, lo + k));
    }
}

fn checked_consistency_ranges(from: u64, to: u64) -> Result<Vec<(u64, u64)>, Error> {
    check_size(to)?;
    if from > to {
        return Err(Error::TreeShrank { from, to });
    }
    let mut ranges = Vec::with_capacity(64);
    if from > 0 && from < to {
        consistency_ranges(from, 0, to, true, &mut ranges);
    }
    Ok(ranges)
}

/// Stored-hash indexes that [`consistency_proof`] reads (at most about 2·log2(to)).
pub fn consistency_proof_needs(from: u64, to: u64) -> Result<Vec<u64>, Error> {
    let mut need = Vec::new();
    for (lo, hi) in checked_consistency_ranges(from, to)? {
        range_needs(lo, hi, &mut need);
    }
    Ok(sorted(need))
}

/// Consistency proof from the tree of `from` leaves to the tree of `to` leaves (RFC 9162
/// §2.1.4.1), from the hashes of [`consistency_proof_needs`]. Empty when `from` is 0 (the empty
/// tree is a prefix of every tree) or equals `to`; [`Error::TreeShrank`] when `from > to`.
pub fn consistency_proof(
    from: u64,
    to: u64,
    stored: &(impl StoredHashes + ?Sized),
) -> Result<Vec<Hash>, Error> {
    checked_consistency_ranges(from, to)?
        .into_iter()
        .map(|(lo, hi)| range_hash(lo, hi, stored))
        .collect()
}

/// Stored-hash indexes that [`append`] reads: those of [`tree_hash_needs`] for the current size,
/// whatever the number of leaves appended (the old root is recomputed from them too).
pub fn append_needs(size: u64) -> Result<Vec<u64>, Error> {
    tree_hash_needs(size)
}

/// Result of [`append`]: the rows to insert and both tree heads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Root of the tree before the append, recomputed from the stored hashes read: compare it
    /// with the last signed checkpoint before signing the new one.
    pub old_root: Hash,
    /// Size after the append.
    pub new_size: u64,
    /// Root after the append.
    pub new_root: Hash,
    /// The stored hashes to insert, in increasing index order, starting at
    /// `stored_hash_count(old size)` with no gap.
    pub new_hashes: Vec<StoredHash>,
}

/// Appends `leaf_hashes` to the tree of `size` leaves, from the hashes of [`append_needs`].
pub fn append(
    size: u64,
    stored: &(impl StoredHashes + ?Sized),
    leaf_hashes: &[Hash],
) -> Result<Appended, Error> {
    let new_size = size.saturating_add(leaf_hashes.len() as u64);
    check_size(new_size)?;
    let mut range = CompactRange::from_stored(size, stored)?;
    let old_root = range.root();
    let mut new_hashes = Vec::with_capacity(leaf_hashes.len() * 2 + 64);
    for leaf in leaf_hashes {
        range.append_leaf(leaf, &mut new_hashes)?;
    }
    Ok(Appended {
        old_root,
        new_size,
        new_root: range.root(),
        new_hashes,
    })
}

/// The roots of the perfect subtrees of a tree (largest first, one per 1 bit of its size):
/// enough to append leaves and compute the root in O(log n) memory. Streaming every leaf
/// through one rebuilds a whole log for checking it against its checkpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    parts: Vec<Hash>,
}

impl CompactRange {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tree of `size` leaves, from the hashes of [`tree_hash_needs`].
    pub fn from_stored(size: u64, stored: &(impl StoredHashes + ?Sized)) -> Result<Self, Error> {
        check_size(size)?;
        let parts = perfect_subtrees(0, size)
            .map(|(level, n)| read(stored, stored_hash_index(level, n)))
            .collect::<Result<_, _>>()?;
        Ok(Self { size, parts })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Root hash of the tree so far (RFC 6962 `MTH`).
    pub fn root(&self) -> Hash {
        fold_right(&self.parts)
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf_hash: &Hash) -> Result<(), Error> {
        self.append_inner(leaf_hash, |_| {})
    }

    /// Appends a leaf hash, adding the stored hashes it completes to `new_hashes` (in index
    /// order: streaming a log's leaves yields its whole hash table, row by row).
    pub fn append_leaf(
        &mut self,
        leaf_hash: &Hash,
        new_hashes: &mut Vec<StoredHash>,
    ) -> Result<(), Error> {
        self.append_inner(leaf_hash, |s| new_hashes.push(s))
    }

    fn append_inner(
        &mut self,
        leaf_hash: &Hash,
        mut emit: impl FnMut(StoredHash),
    ) -> Result<(), Error> {
        let n = self.size;
        check_size(n + 1)?;
        let first = stored_hash_index(0, n);
        let mut hash = *leaf_hash;
        emit(StoredHash { index: first, hash });
        for level in 1..=n.trailing_ones() {
            let left = self.parts.pop().expect("one part per 1 bit of the size");
            hash = node_hash(&left, &hash);
            emit(StoredHash {
                index: first + u64::from(level),
                hash,
            });
        }
        self.parts.push(hash);
        self.size = n + 1;
        Ok(())
    }
}

/// Checks that `proof` proves leaf `index`, of hash `leaf_hash`, in the tree of `size` leaves
/// and root `root` (RFC 9162 §2.1.3.2). Every proof hash is used and its count must be exact.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), Error> {
    if index >= size {
        return Err(Error::IndexOutOfRange { index, size });
    }
    // Below the level where the paths to `index` and `size - 1` part, siblings are on either
    // side; above it, `index` is on the right border and siblings are all on the left.
    let inner = bit_len(index ^ (size - 1));
    let border = shr(index, inner).count_ones() as usize;
    expect_len(proof, inner + border)?;
    let mut hash = *leaf_hash;
    for (i, sibling) in proof[..inner].iter().enumerate() {
        hash = if (index >> i) & 1 == 0 {
            node_hash(&hash, sibling)
        } else {
            node_hash(sibling, &hash)
        };
    }
    for sibling in &proof[inner..] {
        hash = node_hash(sibling, &hash);
    }
    if hash != *root {
        return Err(Error::RootMismatch);
    }
    Ok(())
}

/// Checks that `proof` proves the tree of `from` leaves and root `from_root` to be a prefix of
/// the tree of `to` leaves and root `to_root` (RFC 9162 §2.1.4.2). Both roots are recomputed
/// from the proof, whose count must be exact. `from == to` needs an empty proof and equal
/// roots; `from == 0` is [`Error::ConsistencyFromEmptyTree`] (the empty tree is a prefix of
/// every tree: nothing to verify).
pub fn verify_consistency(
    from: u64,
    to: u64,
    proof: &[Hash],
    from_root: &Hash,
    to_root: &Hash,
) -> Result<(), Error> {
    if from > to {
        return Err(Error::TreeShrank { from, to });
    }
    if from == 0 {
        // As in transparency-dev/merkle and Go's sumdb/tlog: such a proof would prove nothing.
        return Err(Error::ConsistencyFromEmptyTree);
    }
    if from == to {
        expect_len(proof, 0)?;
        if from_root != to_root {
            return Err(Error::RootMismatch);
        }
        return Ok(());
    }
    // The right-most perfect subtree of the old tree is where both paths start; when the old
    // tree is itself perfect, that is its root and the proof omits it.
    let shift = from.trailing_zeros() as usize;
    let inner = bit_len((from - 1) ^ (to - 1)) - shift;
    let border = shr(from - 1, inner + shift).count_ones() as usize;
    let (seed, rest) = if from.is_power_of_two() {
        (from_root, proof)
    } else {
        match proof.split_first() {
            Some(first) => first,
            None => {
                return Err(Error::ProofLength {
                    expected: 1 + inner + border,
                    got: 0,
                });
            }
        }
    };
    let start = proof.len() - rest.len();
    expect_len(proof, start + inner + border)?;
    let mask = (from - 1) >> shift;
    let mut old = *seed;
    let mut new = *seed;
    for (i, sibling) in rest[..inner].iter().enumerate() {
        if (mask >> i) & 1 == 1 {
            old = node_hash(sibling, &old);
            new = node_hash(sibling, &new);
        } else {
            // A right sibling: a leaf added after `from`, so it is not part of the old tree.
            new = node_hash(&new, sibling);
        }
    }
    for sibling in &rest[inner..] {
        old = node_hash(sibling, &old);
        new = node_hash(sibling, &new);
    }
    if old != *from_root {
        return Err(Error::OldRootMismatch);
    }
    if new != *to_root {
        return Err(Error::RootMismatch);
    }
    Ok(())
}

/// `x >> n`, 0 when `n` is 64 (sizes above 2^63).
fn shr(x: u64, n: usize) -> u64 {
    u32::try_from(n)
        .ok()
        .and_then(|n| x.checked_shr(n))
        .unwrap_or(0)
}

fn bit_len(x: u64) -> usize {
    (64 - x.leading_zeros()) as usize
}

fn expect_len(proof: &[Hash], expected: usize) -> Result<(), Error> {
    if proof.len() != expected {
        return Err(Error::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    Ok(())
}
