//! C2SP tlog-cosignature, `cosignature/v1` with Ed25519 (<https://c2sp.org/tlog-cosignature>):
//! a witness's timestamped statement that a checkpoint is consistent with everything it saw.

use std::fmt;

use ed25519_dalek::{Signature, Signer as _, VerifyingKey};

use super::Error;
use super::Note;
use super::note::{
    NoteSignature, NoteVerifier, SignerKey, format_verifier_key, key_id, parse_verifier_key,
};

/// Signature type byte of Ed25519 cosignatures (signed-note §"Signature types", tlog-cosignature
/// §"Format").
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// Length of a cosignature after the key ID: 8-byte timestamp and 64-byte Ed25519 signature
/// (tlog-cosignature §"Format", `timestamped_signature`).
const COSIGNATURE_LEN: usize = 8 + 64;

/// tlog-cosignature §"Ed25519 signed message": `cosignature/v1\ntime <t>\n` then the whole
/// note text (with its final newline, without signature lines).
fn signed_message(timestamp: u64, text: &str) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{text}").into_bytes()
}

/// A witness's cosigner key. Its key file is an ordinary Ed25519 signer key
/// (`PRIVATE+KEY+...`, as [`SignerKey`]); its cosignatures carry the key ID of type 0x04.
pub struct CosignerKey {
    signer: SignerKey,
    key_id: u32,
}

impl CosignerKey {
    /// The cosigner of a signer key.
    pub fn new(signer: SignerKey) -> Self {
        let key_id = key_id(
            signer.name(),
            ALG_COSIGNATURE_V1,
            signer.signing_key().verifying_key().as_bytes(),
        );
        Self { signer, key_id }
    }

    /// Parses a key file's contents (see [`SignerKey::from_key_file`]).
    pub fn from_key_file(contents: &str) -> Result<Self, Error> {
        SignerKey::from_key_file(contents).map(Self::new)
    }

    /// Key name.
    pub fn name(&self) -> &str {
        self.signer.name()
    }

    /// Key ID of the cosignatures (type 0x04, not that of the key file).
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The key that verifies this cosigner's cosignatures.
    pub fn verifier_key(&self) -> CosignatureVerifierKey {
        CosignatureVerifierKey {
            name: self.signer.name().to_owned(),
            key_id: self.key_id,
            key: self.signer.signing_key().verifying_key(),
        }
    }

    /// Adds a cosignature at `timestamp` (POSIX seconds) to the note, replacing an earlier one
    /// by this key. The caller checks the note (a checkpoint it verified) first.
    pub fn cosign(&self, note: &mut Note, timestamp: u64) -> Result<(), Error> {
        if timestamp > i64::MAX as u64 {
            return Err(Error::InvalidTimestamp(timestamp));
        }
        let signature = self
            .signer
            .signing_key()
            .sign(&signed_message(timestamp, note.text()));
        let mut bytes = Vec::with_capacity(COSIGNATURE_LEN);
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&signature.to_bytes());
        note.put_signature(NoteSignature::new(self.name(), self.key_id, bytes));
        Ok(())
    }
}

impl fmt::Debug for CosignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CosignerKey({}+{:08x})", self.name(), self.key_id)
    }
}

/// A cosigner's verifier key: `<name>+<hex key id>+<base64(0x04 || public key)>`
/// (tlog-cosignature §"Format": vkeys with signature type 0x04).
#[derive(Clone, PartialEq, Eq)]
pub struct CosignatureVerifierKey {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifierKey {
    /// Parses the key string, as strictly as [`VerifierKey::parse`](super::VerifierKey::parse),
    /// with type 0x04.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let (name, key_id, key) = parse_verifier_key(text, ALG_COSIGNATURE_V1)?;
        Ok(Self { name, key_id, key })
    }

    /// Checks this key's cosignature on the note and returns its timestamp (POSIX seconds).
    /// Other signatures are ignored; a cosignature by this key that does not verify, or none,
    /// is refused.
    pub fn verify_cosignature(&self, note: &Note) -> Result<u64, Error> {
        let verified = note.verify(&[self])?;
        let sig = verified.first().ok_or(Error::NoKnownSignature)?;
        cosignature_timestamp(sig.signature()).ok_or(Error::InvalidSignature {
            name: self.name.clone(),
            key_id: self.key_id,
        })
    }
}

/// The timestamp of a cosignature's bytes (after the key ID), without checking it.
pub(crate) fn cosignature_timestamp(signature: &[u8]) -> Option<u64> {
    if signature.len() != COSIGNATURE_LEN {
        return None;
    }
    let mut be = [0u8; 8];
    be.copy_from_slice(&signature[..8]);
    let timestamp = u64::from_be_bytes(be);
    (timestamp <= i64::MAX as u64).then_some(timestamp)
}

impl NoteVerifier for CosignatureVerifierKey {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        let (Some(timestamp), Ok(text)) =
            (cosignature_timestamp(signature), std::str::from_utf8(text))
        else {
            return false;
        };
        Signature::from_slice(&signature[8..]).is_ok_and(|sig| {
            self.key
                .verify_strict(&signed_message(timestamp, text), &sig)
                .is_ok()
        })
    }
}

/// The key string.
impl fmt::Display for CosignatureVerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_verifier_key(
            &self.name,
            ALG_COSIGNATURE_V1,
            &self.key,
        ))
    }
}

impl fmt::Debug for CosignatureVerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CosignatureVerifierKey({self})")
    }
}
