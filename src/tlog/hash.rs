//! RFC 6962 §2.1 / RFC 9162 §2.1.1 hashing: leaves and interior nodes are domain-separated by a
//! one-byte prefix so that a leaf can never be passed off as a node.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};

use super::Error;

/// A SHA-256 hash in the Merkle tree: a leaf hash, an interior node or a root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

/// Root of the empty tree: SHA-256 of the empty string (RFC 6962 §2.1).
pub const EMPTY_ROOT: Hash = Hash([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

impl Hash {
    /// The hash from exactly 32 bytes (a `bytea` column, a decoded proof element).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        bytes.try_into().map(Hash).map_err(|_| Error::MalformedHash)
    }

    /// The hash from its standard, padded base64 form (checkpoints, proofs in the API).
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        let bytes = BASE64.decode(text).map_err(|_| Error::MalformedHash)?;
        Self::from_slice(&bytes)
    }

    /// Standard, padded base64 (44 characters).
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", hex::encode(self.0))
    }
}

/// Base64, as in checkpoints.
impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// The hash of a leaf: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    Hash(h.finalize().into())
}

/// The hash of an interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hx(s: &str) -> Hash {
        Hash::from_slice(&hex::decode(s).expect("hex literal")).expect("32 bytes")
    }

    // transparency-dev/merkle rfc6962/rfc6962_test.go
    #[test]
    fn rfc6962_reference_hashes() {
        assert_eq!(
            EMPTY_ROOT,
            hx("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(Hash(Sha256::digest(b"").into()), EMPTY_ROOT);
        assert_eq!(
            leaf_hash(b""),
            hx("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        );
        assert_eq!(
            leaf_hash(b"L123456"),
            hx("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
        );
        // The node test hashes two 4-byte strings, so it is computed by hand here.
        let mut h = Sha256::new();
        h.update([0x01]);
        h.update(b"N123");
        h.update(b"N456");
        assert_eq!(
            Hash(h.finalize().into()),
            hx("aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb")
        );
    }

    // golang.org/x/mod/sumdb/tlog note_test.go: RecordHash("hello world").
    #[test]
    fn go_record_hash() {
        assert_eq!(
            leaf_hash(b"hello world").to_base64(),
            "TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0="
        );
    }

    #[test]
    fn base64_is_strict() {
        let h = leaf_hash(b"x");
        assert_eq!(Hash::from_base64(&h.to_base64()), Ok(h));
        for bad in [
            "",
            "AAAA",
            // 33 bytes
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            // unpadded
            "TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0",
            // non-canonical trailing bits
            "TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb1=",
            " TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=",
            "TszzRgjTG6xce-z2AG31kAXYKBgQVtCSCE40HmuwBb0=",
        ] {
            assert_eq!(Hash::from_base64(bad), Err(Error::MalformedHash), "{bad:?}");
        }
        assert_eq!(Hash::from_slice(&[0; 31]), Err(Error::MalformedHash));
    }
}
