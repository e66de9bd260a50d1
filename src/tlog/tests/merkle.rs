//! The Merkle tree against a literal transcription of RFC 6962 §2.1 and its reference tree.

use std::collections::{BTreeMap, HashMap};

use super::super::merkle::split_stored_hash_index;
use super::super::*;
use super::hex_hash;

/// RFC 6962 §2.1 `MTH`, recursively over leaf hashes.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = largest_power_of_two_below(n);
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn largest_power_of_two_below(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// RFC 6962 §2.1.1 `PATH(m, D[n])`.
fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return vec![];
    }
    let k = largest_power_of_two_below(n);
    if m < k {
        let mut p = path(m, &leaves[..k]);
        p.push(mth(&leaves[k..]));
        p
    } else {
        let mut p = path(m - k, &leaves[k..]);
        p.push(mth(&leaves[..k]));
        p
    }
}

/// RFC 6962 §2.1.2 `SUBPROOF(m, D[n], b)`.
fn subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if b { vec![] } else { vec![mth(leaves)] };
    }
    let k = largest_power_of_two_below(n);
    if m <= k {
        let mut p = subproof(m, &leaves[..k], b);
        p.push(mth(&leaves[k..]));
        p
    } else {
        let mut p = subproof(m - k, &leaves[k..], false);
        p.push(mth(&leaves[..k]));
        p
    }
}

/// How a verifier hashes an inclusion proof: the side of each sibling, bottom-up.
fn inclusion_shape(index: u64, size: u64) -> Vec<bool> {
    fn walk(index: u64, lo: u64, hi: u64, out: &mut Vec<bool>) {
        if hi - lo <= 1 {
            return;
        }
        let k = largest_power_of_two_below((hi - lo) as usize) as u64;
        if index < lo + k {
            walk(index, lo, lo + k, out);
            out.push(true);
        } else {
            walk(index, lo + k, hi, out);
            out.push(false);
        }
    }
    let mut out = Vec::new();
    walk(index, 0, size, &mut out);
    out
}

/// How a verifier hashes a consistency proof: whether it starts from the old root, then the
/// side of each sibling.
fn consistency_shape(from: u64, to: u64) -> Vec<u8> {
    fn walk(m: u64, lo: u64, hi: u64, b: bool, out: &mut Vec<u8>) {
        if m == hi {
            out.push(u8::from(b));
            return;
        }
        let k = largest_power_of_two_below((hi - lo) as usize) as u64;
        if m <= lo + k {
            walk(m, lo, lo + k, b, out);
            out.push(2);
        } else {
            walk(m, lo + k, hi, false, out);
            out.push(3);
        }
    }
    let mut out = Vec::new();
    walk(from, 0, to, true, &mut out);
    out
}

fn test_leaves(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(format!("leaf {i}").as_bytes()))
        .collect()
}

/// Stored hashes of the tree of `leaves`, built one leaf at a time.
fn build(leaves: &[Hash]) -> BTreeMap<u64, Hash> {
    let mut range = CompactRange::new();
    let mut rows = Vec::new();
    for leaf in leaves {
        range.append_leaf(leaf, &mut rows).expect("small tree");
    }
    rows.into_iter().map(|s| (s.index, s.hash)).collect()
}

/// Only the hashes a computation said it needs: proves the needs are complete.
fn only(store: &BTreeMap<u64, Hash>, needs: &[u64]) -> HashMap<u64, Hash> {
    needs
        .iter()
        .map(|i| (*i, *store.get(i).expect("needs only stored indexes")))
        .collect()
}

#[test]
fn stored_hash_layout_matches_go() {
    // sumdb/tlog: leaf 0 at 0; leaf 1 at 1, node (1,0) at 2; leaf 2 at 3; leaf 3 at 4, (1,1) 5,
    // (2,0) 6; leaf 4 at 7.
    let expected = [
        (0, 0, 0),
        (0, 1, 1),
        (1, 0, 2),
        (0, 2, 3),
        (0, 3, 4),
        (1, 1, 5),
        (2, 0, 6),
        (0, 4, 7),
    ];
    for (level, n, index) in expected {
        assert_eq!(stored_hash_index(level, n), index, "({level}, {n})");
    }
    for index in 0..5000 {
        let (level, n) = split_stored_hash_index(index);
        assert_eq!(stored_hash_index(level, n), index);
    }
    let (level, n) = split_stored_hash_index(stored_hash_index(40, 12345));
    assert_eq!((level, n), (40, 12345));
    assert_eq!(stored_hash_count(0), 0);
    assert_eq!(stored_hash_count(1), 1);
    assert_eq!(stored_hash_count(2), 3);
    assert_eq!(stored_hash_count(4), 7);
    assert_eq!(stored_hash_count(MAX_TREE_SIZE), 2 * MAX_TREE_SIZE - 1);
    assert!(stored_hash_count(MAX_TREE_SIZE) <= i64::MAX as u64);
}

#[test]
fn generation_matches_rfc6962_for_every_size_and_leaf() {
    let leaves = test_leaves(130);
    let store = build(&leaves);
    for size in 0..=leaves.len() {
        let n = size as u64;
        let tree = &leaves[..size];
        assert_eq!(
            stored_hash_count(n),
            store.range(..stored_hash_count(n)).count() as u64
        );
        let root = mth(tree);
        let needs = tree_hash_needs(n).expect("small");
        assert_eq!(needs.len() as u32, n.count_ones());
        assert_eq!(
            tree_hash(n, &only(&store, &needs)),
            Ok(root),
            "root of {size}"
        );
        for index in 0..size {
            let i = index as u64;
            let needs = inclusion_proof_needs(i, n).expect("in range");
            let proof = inclusion_proof(i, n, &only(&store, &needs)).expect("proof");
            assert_eq!(proof, path(index, tree), "PATH({index}, {size})");
            assert_eq!(verify_inclusion(&tree[index], i, n, &proof, &root), Ok(()));
        }
        for from in 0..=size {
            let m = from as u64;
            let needs = consistency_proof_needs(m, n).expect("in range");
            let proof = consistency_proof(m, n, &only(&store, &needs)).expect("proof");
            let expected = if from == 0 || from == size {
                vec![]
            } else {
                subproof(from, tree, true)
            };
            assert_eq!(proof, expected, "PROOF({from}, {size})");
            let verified = verify_consistency(m, n, &proof, &mth(&leaves[..from]), &root);
            if from == 0 {
                assert_eq!(verified, Err(Error::ConsistencyFromEmptyTree));
            } else {
                assert_eq!(verified, Ok(()), "{from} -> {size}");
            }
        }
    }
}

#[test]
fn append_in_batches_matches_one_leaf_at_a_time() {
    let leaves = test_leaves(80);
    let store = build(&leaves);
    for old in [0usize, 1, 2, 3, 5, 8, 13, 31, 32, 33, 63] {
        for k in [0usize, 1, 2, 3, 7, 16, 17] {
            let needs = append_needs(old as u64).expect("small");
            let got =
                append(old as u64, &only(&store, &needs), &leaves[old..old + k]).expect("append");
            assert_eq!(got.old_root, mth(&leaves[..old]));
            assert_eq!(got.new_size, (old + k) as u64);
            assert_eq!(got.new_root, mth(&leaves[..old + k]));
            let first = stored_hash_count(old as u64);
            let expected: Vec<StoredHash> = (first..stored_hash_count((old + k) as u64))
                .map(|index| StoredHash {
                    index,
                    hash: store[&index],
                })
                .collect();
            assert_eq!(got.new_hashes, expected, "{old} + {k}");
        }
    }
}

#[test]
fn stored_hashes_can_be_a_slice_of_rows() {
    let leaves = test_leaves(21);
    let store = build(&leaves);
    let needs = inclusion_proof_needs(13, 21).expect("in range");
    let rows: Vec<StoredHash> = needs
        .iter()
        .rev()
        .map(|&index| StoredHash {
            index,
            hash: store[&index],
        })
        .collect();
    assert_eq!(inclusion_proof(13, 21, &rows), Ok(path(13, &leaves)));
    assert_eq!(
        inclusion_proof(13, 21, rows.as_slice()),
        Ok(path(13, &leaves))
    );
}

#[test]
fn missing_stored_hash_is_an_error() {
    let leaves = test_leaves(11);
    let mut partial = only(
        &build(&leaves),
        &inclusion_proof_needs(4, 11).expect("in range"),
    );
    let removed = *partial.keys().max().expect("some");
    partial.remove(&removed);
    assert_eq!(
        inclusion_proof(4, 11, &partial),
        Err(Error::MissingStoredHash { index: removed })
    );
    assert_eq!(
        tree_hash(11, &HashMap::new()),
        Err(Error::MissingStoredHash {
            index: stored_hash_index(3, 0)
        })
    );
    assert!(matches!(
        append(11, &HashMap::new(), &leaves),
        Err(Error::MissingStoredHash { .. })
    ));
}

#[test]
fn generation_refuses_bad_ranges() {
    assert_eq!(
        inclusion_proof_needs(0, 0),
        Err(Error::IndexOutOfRange { index: 0, size: 0 })
    );
    assert_eq!(
        inclusion_proof_needs(7, 7),
        Err(Error::IndexOutOfRange { index: 7, size: 7 })
    );
    assert_eq!(
        consistency_proof_needs(8, 7),
        Err(Error::TreeShrank { from: 8, to: 7 })
    );
    assert_eq!(
        tree_hash_needs(MAX_TREE_SIZE + 1),
        Err(Error::TreeTooLarge {
            size: MAX_TREE_SIZE + 1
        })
    );
    assert!(tree_hash_needs(MAX_TREE_SIZE).is_ok());
    assert!(inclusion_proof_needs(MAX_TREE_SIZE - 1, MAX_TREE_SIZE).is_ok());
    assert!(consistency_proof_needs(MAX_TREE_SIZE - 3, MAX_TREE_SIZE).is_ok());
    let leaf = leaf_hash(b"x");
    assert_eq!(
        append(MAX_TREE_SIZE, &HashMap::new(), &[leaf]),
        Err(Error::TreeTooLarge {
            size: MAX_TREE_SIZE + 1
        })
    );
}

#[test]
fn needs_stay_logarithmic() {
    for size in [
        1u64,
        2,
        3,
        1000,
        1 << 20,
        (1 << 40) + 12345,
        MAX_TREE_SIZE - 1,
    ] {
        let log = 64 - size.leading_zeros() as usize;
        assert!(tree_hash_needs(size).expect("ok").len() <= log);
        for index in [0, size / 3, size - 1] {
            assert!(
                inclusion_proof_needs(index, size).expect("ok").len() <= 2 * log,
                "{index} {size}"
            );
        }
        for from in [1, size / 2, size - 1] {
            assert!(
                consistency_proof_needs(from, size).expect("ok").len() <= 2 * log + 1,
                "{from} {size}"
            );
        }
    }
}

#[test]
fn compact_range_streams_a_log() {
    let leaves = test_leaves(300);
    let mut range = CompactRange::new();
    assert_eq!(range.root(), EMPTY_ROOT);
    for (i, leaf) in leaves.iter().enumerate() {
        range.push(leaf).expect("small");
        assert_eq!(range.size(), i as u64 + 1);
        if i % 37 == 0 || (i + 1).is_power_of_two() {
            assert_eq!(range.root(), mth(&leaves[..=i]));
        }
    }
    assert_eq!(range.root(), mth(&leaves));
    let store = build(&leaves);
    let resumed = CompactRange::from_stored(300, &only(&store, &tree_hash_needs(300).expect("ok")))
        .expect("ok");
    assert_eq!(resumed, range);
}

// RFC 6962 reference tree, as in transparency-dev/merkle testonly/constants.go and the golden
// proofs of its proof/verify_test.go (whose leaf numbers there are 1-based).
fn reference_leaves() -> Vec<Hash> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|h| leaf_hash(&hex::decode(h).expect("hex")))
    .collect()
}

const REFERENCE_ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

#[test]
fn rfc6962_reference_tree() {
    let leaves = reference_leaves();
    let store = build(&leaves);
    let all = |n: u64| -> Hash { tree_hash(n, &store).expect("stored") };
    assert_eq!(all(0), EMPTY_ROOT);
    for (i, root) in REFERENCE_ROOTS.iter().enumerate() {
        assert_eq!(all(i as u64 + 1), hex_hash(root), "root of {}", i + 1);
    }
    let inclusion: [(u64, u64, &[&str]); 5] = [
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (0, 1, &[]),
    ];
    for (index, size, proof) in inclusion {
        let proof: Vec<Hash> = proof.iter().map(|h| hex_hash(h)).collect();
        assert_eq!(
            inclusion_proof(index, size, &store),
            Ok(proof.clone()),
            "{index} in {size}"
        );
        assert_eq!(
            verify_inclusion(&leaves[index as usize], index, size, &proof, &all(size)),
            Ok(())
        );
    }
    let consistency: [(u64, u64, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (from, to, proof) in consistency {
        let proof: Vec<Hash> = proof.iter().map(|h| hex_hash(h)).collect();
        assert_eq!(
            consistency_proof(from, to, &store),
            Ok(proof.clone()),
            "{from} -> {to}"
        );
        assert_eq!(
            verify_consistency(from, to, &proof, &all(from), &all(to)),
            Ok(())
        );
    }
}

/// Every way of mangling a valid proof: each hash flipped, dropped, duplicated, an extra hash
/// at each position, neighbours swapped, the whole proof reversed.
fn mangled(proof: &[Hash]) -> Vec<(String, Vec<Hash>)> {
    let mut out = Vec::new();
    let junk = leaf_hash(b"junk");
    for i in 0..proof.len() {
        let mut p = proof.to_vec();
        p[i].0[i % 32] ^= 0x80;
        out.push((format!("flip {i}"), p));
        let mut p = proof.to_vec();
        p.remove(i);
        out.push((format!("drop {i}"), p));
        let mut p = proof.to_vec();
        p.insert(i, proof[i]);
        out.push((format!("duplicate {i}"), p));
        if i + 1 < proof.len() && proof[i] != proof[i + 1] {
            let mut p = proof.to_vec();
            p.swap(i, i + 1);
            out.push((format!("swap {i}"), p));
        }
    }
    for i in 0..=proof.len() {
        let mut p = proof.to_vec();
        p.insert(i, junk);
        out.push((format!("extra at {i}"), p));
    }
    if proof.len() > 1 {
        let mut p = proof.to_vec();
        p.reverse();
        if p != proof {
            out.push(("reversed".into(), p));
        }
    }
    out
}

#[test]
fn mangled_inclusion_proofs_are_refused() {
    let leaves = test_leaves(40);
    let store = build(&leaves);
    for size in 1..=leaves.len() as u64 {
        let root = tree_hash(size, &store).expect("stored");
        for index in 0..size {
            let leaf = leaves[index as usize];
            let proof = inclusion_proof(index, size, &store).expect("proof");
            for (what, bad) in mangled(&proof) {
                assert!(
                    verify_inclusion(&leaf, index, size, &bad, &root).is_err(),
                    "{what}: {index} in {size}"
                );
            }
            // The right proof for another claim.
            let other = leaves[(index as usize + 1) % leaves.len()];
            assert!(verify_inclusion(&other, index, size, &proof, &root).is_err());
            assert!(
                verify_inclusion(&leaf, index, size, &proof, &leaf_hash(b"other root")).is_err()
            );
            // Another index or size is accepted exactly when it hashes the same way (the
            // size is authenticated by the checkpoint, not by the proof).
            let shape = inclusion_shape(index, size);
            for (i, n) in [
                (index.wrapping_sub(1), size),
                (index + 1, size),
                (index ^ 1, size),
                (index + size, size),
                (index, size - 1),
                (index, size + 1),
                (index, size * 2),
                (index, size / 2),
            ] {
                if (i, n) != (index, size) {
                    let accepted = verify_inclusion(&leaf, i, n, &proof, &root).is_ok();
                    assert_eq!(
                        accepted,
                        i < n && inclusion_shape(i, n) == shape,
                        "{i} in {n} for {index} in {size}"
                    );
                }
            }
            // A leaf hash passed off as the root of a one-leaf tree, or an inner node as a leaf.
            if size > 1 {
                assert!(verify_inclusion(&root, 0, 1, &[], &leaf).is_err());
            }
        }
    }
}

#[test]
fn mangled_consistency_proofs_are_refused() {
    let leaves = test_leaves(40);
    let store = build(&leaves);
    let root = |n: u64| tree_hash(n, &store).expect("stored");
    for to in 1..=leaves.len() as u64 {
        for from in 1..to {
            let proof = consistency_proof(from, to, &store).expect("proof");
            let (r1, r2) = (root(from), root(to));
            for (what, bad) in mangled(&proof) {
                assert!(
                    verify_consistency(from, to, &bad, &r1, &r2).is_err(),
                    "{what}: {from} -> {to}"
                );
            }
            assert!(
                verify_consistency(from, to, &proof, &leaf_hash(b"forged old root"), &r2).is_err()
            );
            assert!(
                verify_consistency(from, to, &proof, &r1, &leaf_hash(b"forged new root")).is_err()
            );
            assert!(
                verify_consistency(from, to, &proof, &r2, &r1).is_err(),
                "roots swapped"
            );
            assert_eq!(
                verify_consistency(to, from, &proof, &r2, &r1),
                Err(Error::TreeShrank { from: to, to: from })
            );
            let shape = consistency_shape(from, to);
            for (f, t) in [
                (from - 1, to),
                (from + 1, to),
                (from, to - 1),
                (from, to + 1),
                (from * 2, to * 2),
            ] {
                if (f, t) != (from, to) && 0 < f && f < t {
                    let accepted = verify_consistency(f, t, &proof, &r1, &r2).is_ok();
                    assert_eq!(
                        accepted,
                        consistency_shape(f, t) == shape,
                        "sizes {f} -> {t} for {from} -> {to}"
                    );
                }
            }
        }
        // from == to: only the empty proof, only equal roots.
        let r = root(to);
        assert_eq!(verify_consistency(to, to, &[], &r, &r), Ok(()));
        assert_eq!(
            verify_consistency(to, to, &[r], &r, &r),
            Err(Error::ProofLength {
                expected: 0,
                got: 1
            })
        );
        assert_eq!(
            verify_consistency(to, to, &[], &r, &leaf_hash(b"fork")),
            Err(Error::RootMismatch)
        );
        // From the empty tree: nothing to prove.
        assert_eq!(
            verify_consistency(0, to, &[], &EMPTY_ROOT, &r),
            Err(Error::ConsistencyFromEmptyTree)
        );
    }
}

#[test]
fn consistency_checks_the_old_root_not_only_the_new_one() {
    // A log rewrites leaf 2 of a 5-leaf tree and extends it to 8: the proof it serves leads to
    // its new root, but not to the root of size 5 that was signed before.
    let honest = test_leaves(8);
    let mut forged = honest.clone();
    forged[2] = leaf_hash(b"rewritten");
    let signed_before = mth(&honest[..5]);
    let forged_store = build(&forged);
    let proof = consistency_proof(5, 8, &forged_store).expect("proof");
    assert_eq!(
        verify_consistency(5, 8, &proof, &mth(&forged[..5]), &mth(&forged)),
        Ok(())
    );
    assert_eq!(
        verify_consistency(5, 8, &proof, &signed_before, &mth(&forged)),
        Err(Error::OldRootMismatch)
    );
    // Same when the old size is a power of two (the proof then omits the old root).
    let signed_before = mth(&honest[..4]);
    let proof = consistency_proof(4, 8, &forged_store).expect("proof");
    assert!(verify_consistency(4, 8, &proof, &signed_before, &mth(&forged)).is_err());
}

#[test]
fn verification_edge_cases() {
    let leaf = leaf_hash(b"a");
    assert_eq!(
        verify_inclusion(&leaf, 0, 0, &[], &EMPTY_ROOT),
        Err(Error::IndexOutOfRange { index: 0, size: 0 })
    );
    assert_eq!(verify_inclusion(&leaf, 0, 1, &[], &leaf), Ok(()));
    assert_eq!(
        verify_inclusion(&leaf, 0, 1, &[leaf], &leaf),
        Err(Error::ProofLength {
            expected: 0,
            got: 1
        })
    );
    assert_eq!(
        verify_inclusion(&leaf, u64::MAX, u64::MAX, &[], &leaf),
        Err(Error::IndexOutOfRange {
            index: u64::MAX,
            size: u64::MAX
        })
    );
    // Sizes beyond what is stored still verify (proof length is computed, not looped on).
    let long = vec![leaf; 64];
    assert!(verify_inclusion(&leaf, u64::MAX - 1, u64::MAX, &long, &leaf).is_err());
    assert!(verify_consistency(u64::MAX - 1, u64::MAX, &long, &leaf, &leaf).is_err());
    // Paths that part at level 64.
    for n in 0..=64 {
        let proof = &long[..n];
        assert!(verify_inclusion(&leaf, 5, (1 << 63) + 1, proof, &leaf).is_err());
        assert!(verify_consistency(5, (1 << 63) + 1, proof, &leaf, &leaf).is_err());
        assert!(verify_consistency(1 << 62, u64::MAX, proof, &leaf, &leaf).is_err());
    }
    assert_eq!(
        verify_consistency(0, 0, &[], &EMPTY_ROOT, &EMPTY_ROOT),
        Err(Error::ConsistencyFromEmptyTree)
    );
    assert_eq!(
        verify_consistency(1, 0, &[], &leaf, &EMPTY_ROOT),
        Err(Error::TreeShrank { from: 1, to: 0 })
    );
    assert_eq!(
        verify_consistency(3, 4, &[], &leaf, &leaf),
        Err(Error::ProofLength {
            expected: 3,
            got: 0
        })
    );
}
