//! Published proof vectors: transparency-dev/merkle's testdata and a real Certificate
//! Transparency log (see tests/vectors/tlog/README.md).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

use super::super::*;
use super::vector_file;

/// A base64 hash of a vector, as a caller would convert it: values that are not 32 bytes
/// ("", short "don't care" strings, garbage proof elements) are refused right there.
fn hash_field(v: &Value) -> Result<Hash, Error> {
    let bytes = BASE64
        .decode(v.as_str().unwrap_or_default())
        .expect("vector is base64");
    Hash::from_slice(&bytes)
}

fn proof_field(v: &Value) -> Result<Vec<Hash>, Error> {
    match v {
        Value::Null => Ok(vec![]),
        Value::Array(items) => items.iter().map(hash_field).collect(),
        other => panic!("not a proof: {other}"),
    }
}

fn vectors(name: &str) -> Vec<Value> {
    serde_json::from_str(&vector_file(name)).expect("vector file is JSON")
}

#[test]
fn transparency_dev_inclusion_vectors() {
    let all = vectors("transparency-dev-inclusion.json");
    assert_eq!(all.len(), 98);
    let mut verified = 0;
    for v in &all {
        let file = v["file"].as_str().expect("file");
        let want_err = v["wantErr"].as_bool().expect("wantErr");
        let index = v["leafIdx"].as_u64().expect("leafIdx");
        let size = v["treeSize"].as_u64().expect("treeSize");
        let result = (|| {
            let (leaf, root) = (hash_field(&v["leafHash"])?, hash_field(&v["root"])?);
            let proof = proof_field(&v["proof"])?;
            verified += 1;
            verify_inclusion(&leaf, index, size, &proof, &root)
        })();
        assert_eq!(result.is_err(), want_err, "{file}: {result:?}");
    }
    assert_eq!(verified, 72, "vectors that reached the verifier");
}

#[test]
fn transparency_dev_consistency_vectors() {
    let all = vectors("transparency-dev-consistency.json");
    assert_eq!(all.len(), 98);
    let mut verified = 0;
    for v in &all {
        let file = v["file"].as_str().expect("file");
        let want_err = v["wantErr"].as_bool().expect("wantErr");
        let from = v["size1"].as_u64().expect("size1");
        let to = v["size2"].as_u64().expect("size2");
        let result = (|| {
            let (r1, r2) = (hash_field(&v["root1"])?, hash_field(&v["root2"])?);
            let proof = proof_field(&v["proof"])?;
            verified += 1;
            verify_consistency(from, to, &proof, &r1, &r2)
        })();
        // The one valid vector whose "roots" are 12-byte strings cannot be a typed hash.
        if file == "consistency/additional/sizes-are-equal-one-and-proof-is-empty.json" {
            assert_eq!(result, Err(Error::MalformedHash));
            continue;
        }
        assert_eq!(result.is_err(), want_err, "{file}: {result:?}");
    }
    assert_eq!(verified, 71, "vectors that reached the verifier");
}

#[test]
fn certificate_transparency_argon2020() {
    let sth: Value = serde_json::from_str(&vector_file("ct-argon2020/get-sth.json")).expect("JSON");
    let size = sth["tree_size"].as_u64().expect("tree_size");
    let root = hash_field(&sth["sha256_root_hash"]).expect("hash");
    assert_eq!(size, 961_984_011);

    let entries: Value =
        serde_json::from_str(&vector_file("ct-argon2020/get-entries-10000.json")).expect("JSON");
    let leaf_input = BASE64
        .decode(
            entries["entries"][0]["leaf_input"]
                .as_str()
                .expect("leaf_input"),
        )
        .expect("base64");
    let leaf = leaf_hash(&leaf_input);
    // The hash the proof was asked for (in the vendored response's URL).
    assert_eq!(
        leaf.to_base64(),
        "nCs3mfIydh9x4CKyQ+u2xtmpxmFggA5MLymHwNQSlLg="
    );

    let incl: Value =
        serde_json::from_str(&vector_file("ct-argon2020/get-proof-by-hash-10000.json"))
            .expect("JSON");
    let proof = proof_field(&incl["audit_path"]).expect("hashes");
    assert_eq!(verify_inclusion(&leaf, 10_000, size, &proof, &root), Ok(()));
    assert!(verify_inclusion(&leaf, 10_001, size, &proof, &root).is_err());
    assert!(verify_inclusion(&leaf, 10_000, size, &proof[1..], &root).is_err());

    let cons: Value = serde_json::from_str(&vector_file(
        "ct-argon2020/get-sth-consistency-3654490.json",
    ))
    .expect("JSON");
    let proof = proof_field(&cons["consistency"]).expect("hashes");
    let old_root = Hash::from_base64("AuIZ5V6sDUj1vn3Y1K85oOaQ7y+FJJKtyRTl1edIKBQ=").expect("hash");
    assert_eq!(
        verify_consistency(3_654_490, size, &proof, &old_root, &root),
        Ok(())
    );
    assert_eq!(
        verify_consistency(3_654_490, size, &proof, &leaf, &root),
        Err(Error::OldRootMismatch)
    );
    let mut bad = proof.clone();
    bad.swap(3, 4);
    assert!(verify_consistency(3_654_490, size, &bad, &old_root, &root).is_err());
    assert!(verify_consistency(3_654_491, size, &proof, &old_root, &root).is_err());
}
