//! Tests of the transparency log: published vectors, a reference implementation of RFC 6962
//! to compare against, and adversarial proofs and notes.

mod checkpoints;
mod merkle;
mod notes;
mod vectors;
mod witness;

use super::Hash;

/// Reads a file under tests/vectors/tlog.
fn vector_file(name: &str) -> String {
    let path = format!("{}/tests/vectors/tlog/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn hex_hash(s: &str) -> Hash {
    Hash::from_slice(&hex::decode(s).expect("hex literal")).expect("32 bytes")
}
