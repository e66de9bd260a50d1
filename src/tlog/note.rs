//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 keys, in the key and note
//! formats of golang.org/x/mod/sumdb/note.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::Error;

/// Signature type byte of Ed25519 note signatures (signed-note §"Signature types").
pub const ALG_ED25519: u8 = 0x01;

/// Largest note accepted, in bytes.
pub const MAX_NOTE_BYTES: usize = 1 << 20;

/// Most signature lines accepted on a note (the spec asks for at least 16).
pub const MAX_NOTE_SIGNATURES: usize = 100;

const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Key ID: the first 4 bytes, big-endian, of SHA-256(name || 0x0A || type || public key).
pub fn key_id(name: &str, alg: u8, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', alg]);
    h.update(public_key);
    let digest = h.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// A key name is non-empty, without Unicode spaces or `+` (signed-note §"Format"); control
/// characters are refused too, since a note may not contain them.
pub fn check_key_name(name: &str) -> Result<(), Error> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
    {
        return Err(Error::InvalidKeyName);
    }
    Ok(())
}

fn parse_key_id(hex8: &str) -> Result<u32, Error> {
    if hex8.len() != 8 || !hex8.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(Error::MalformedKey(
            "the key ID is not 8 lowercase hex digits",
        ));
    }
    u32::from_str_radix(hex8, 16).map_err(|_| Error::MalformedKey("the key ID is not hex"))
}

/// Decodes base64(type || 32 bytes), checking the type byte.
fn parse_key_material(b64: &str, alg: u8) -> Result<[u8; 32], Error> {
    let bytes = Zeroizing::new(
        BASE64
            .decode(b64)
            .map_err(|_| Error::MalformedKey("the key is not standard base64"))?,
    );
    match bytes.split_first() {
        None => Err(Error::MalformedKey("the key is empty")),
        Some((&got, _)) if got != alg => Err(Error::UnsupportedAlgorithm(got)),
        Some((_, material)) => material
            .try_into()
            .map_err(|_| Error::MalformedKey("the key is not 32 bytes")),
    }
}

/// Parses `<name>+<hex key id>+<base64(type || public key)>`, for signature type `alg`.
pub(crate) fn parse_verifier_key(
    text: &str,
    alg: u8,
) -> Result<(String, u32, VerifyingKey), Error> {
    let (name, rest) = text
        .split_once('+')
        .ok_or(Error::MalformedKey("expected <name>+<key id>+<key>"))?;
    let (id, b64) = rest
        .split_once('+')
        .ok_or(Error::MalformedKey("expected <name>+<key id>+<key>"))?;
    check_key_name(name)?;
    let id = parse_key_id(id)?;
    let material = parse_key_material(b64, alg)?;
    let key = VerifyingKey::from_bytes(&material)
        .map_err(|_| Error::MalformedKey("not an Ed25519 public key"))?;
    if key.is_weak() {
        return Err(Error::MalformedKey("a small-order Ed25519 public key"));
    }
    if id != key_id(name, alg, &material) {
        return Err(Error::KeyIdMismatch);
    }
    Ok((name.to_owned(), id, key))
}

pub(crate) fn format_verifier_key(name: &str, alg: u8, key: &VerifyingKey) -> String {
    let mut material = [0u8; 33];
    material[0] = alg;
    material[1..].copy_from_slice(key.as_bytes());
    format!(
        "{name}+{:08x}+{}",
        key_id(name, alg, key.as_bytes()),
        BASE64.encode(material)
    )
}

/// Checks a signature line against the note text; implemented by [`VerifierKey`] and
/// [`CosignatureVerifierKey`](super::CosignatureVerifierKey).
pub trait NoteVerifier {
    /// Key name, as on signature lines.
    fn name(&self) -> &str;
    /// Key ID, as on signature lines.
    fn key_id(&self) -> u32;
    /// Whether `signature` (the line's bytes after the key ID) signs `text`.
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool;
}

/// An Ed25519 note signer key, as Go's `note.GenerateKey` writes it:
/// `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || 32-byte seed)>`.
pub struct SignerKey {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl SignerKey {
    /// A new key from the operating system's random generator.
    pub fn generate(name: &str) -> Result<Self, Error> {
        use rand::TryRngCore as _;
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng
            .try_fill_bytes(seed.as_mut())
            .map_err(|_| Error::Randomness)?;
        Self::from_seed(name, &seed)
    }

    /// The key of an Ed25519 seed (RFC 8032 private key).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, Error> {
        check_key_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, ALG_ED25519, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// Parses the key string; its key ID must be that of the derived public key.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let rest = text
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(Error::MalformedKey("a signer key starts with PRIVATE+KEY+"))?;
        let (name, rest) = rest.split_once('+').ok_or(Error::MalformedKey(
            "expected PRIVATE+KEY+<name>+<key id>+<key>",
        ))?;
        let (id, b64) = rest.split_once('+').ok_or(Error::MalformedKey(
            "expected PRIVATE+KEY+<name>+<key id>+<key>",
        ))?;
        let id = parse_key_id(id)?;
        let seed = Zeroizing::new(parse_key_material(b64, ALG_ED25519)?);
        let key = Self::from_seed(name, &seed)?;
        if key.key_id != id {
            return Err(Error::KeyIdMismatch);
        }
        Ok(key)
    }

    /// Parses a key file's contents: the key string, optionally followed by one newline.
    pub fn from_key_file(contents: &str) -> Result<Self, Error> {
        Self::parse(contents.strip_suffix('\n').unwrap_or(contents))
    }

    /// The key string (secret).
    pub fn to_key_string(&self) -> Zeroizing<String> {
        let mut material = Zeroizing::new([0u8; 33]);
        material[0] = ALG_ED25519;
        material[1..].copy_from_slice(self.key.as_bytes());
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            BASE64.encode(material.as_ref())
        ))
    }

    /// A key file's contents: the key string and a newline (secret).
    pub fn to_key_file(&self) -> Zeroizing<String> {
        let mut file = self.to_key_string();
        file.push('\n');
        file
    }

    /// The matching verifier key.
    pub fn verifier_key(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// Key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Signs the note's text, replacing an earlier signature by this key.
    pub fn sign_note(&self, note: &mut Note) {
        let signature = self.key.sign(note.text.as_bytes());
        note.put_signature(NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: signature.to_bytes().to_vec(),
        });
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignerKey({}+{:08x})", self.name, self.key_id)
    }
}

/// An Ed25519 note verifier key: `<name>+<hex key id>+<base64(0x01 || public key)>`.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl VerifierKey {
    /// Parses the key string strictly: valid name, 8 lowercase hex digits of key ID matching
    /// the key, type 0x01, a 32-byte Ed25519 point that is not of small order.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let (name, key_id, key) = parse_verifier_key(text, ALG_ED25519)?;
        Ok(Self { name, key_id, key })
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }
}

impl NoteVerifier for VerifierKey {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        Signature::from_slice(signature).is_ok_and(|sig| self.key.verify_strict(text, &sig).is_ok())
    }
}

/// The key string.
impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_verifier_key(&self.name, ALG_ED25519, &self.key))
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

/// One signature line of a note: `— <name> <base64(key id || signature)>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    name: String,
    key_id: u32,
    signature: Vec<u8>,
}

impl NoteSignature {
    /// Key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature bytes after the key ID.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    pub(crate) fn new(name: &str, key_id: u32, signature: Vec<u8>) -> Self {
        Self {
            name: name.to_owned(),
            key_id,
            signature,
        }
    }

    fn parse(line: &str) -> Result<Self, Error> {
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or(Error::MalformedNote(
                "a signature line starts with an em dash and a space",
            ))?;
        let (name, b64) = rest.split_once(' ').ok_or(Error::MalformedNote(
            "a signature line is `— <name> <signature>`",
        ))?;
        check_key_name(name).map_err(|_| Error::MalformedNote("invalid key name"))?;
        let bytes = BASE64
            .decode(b64)
            .map_err(|_| Error::MalformedNote("a signature is not standard base64"))?;
        if bytes.len() < 5 {
            return Err(Error::MalformedNote("a signature is shorter than 5 bytes"));
        }
        let (id, signature) = bytes.split_at(4);
        Ok(Self {
            name: name.to_owned(),
            key_id: u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
            signature: signature.to_vec(),
        })
    }
}

impl fmt::Display for NoteSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = Vec::with_capacity(4 + self.signature.len());
        bytes.extend_from_slice(&self.key_id.to_be_bytes());
        bytes.extend_from_slice(&self.signature);
        write!(
            f,
            "{SIGNATURE_PREFIX}{} {}",
            self.name,
            BASE64.encode(bytes)
        )
    }
}

/// A note: a text and its signature lines. [`Display`](fmt::Display) writes the signed note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

fn check_text(text: &str) -> Result<(), Error> {
    if text.len() > MAX_NOTE_BYTES {
        return Err(Error::MalformedNote("too large"));
    }
    if text.bytes().any(|b| b < 0x20 && b != b'\n') {
        return Err(Error::MalformedNote(
            "a control character other than newline",
        ));
    }
    Ok(())
}

impl Note {
    /// An unsigned note; the text must end with a newline and hold no control character other
    /// than newline.
    pub fn new(text: &str) -> Result<Self, Error> {
        check_text(text)?;
        if !text.ends_with('\n') {
            return Err(Error::MalformedNote("the text does not end with a newline"));
        }
        Ok(Self {
            text: text.to_owned(),
            signatures: Vec::new(),
        })
    }

    /// Parses a signed note: UTF-8 text ending in a newline, a blank line, then one or more
    /// signature lines, each ending in a newline. Signatures are not checked here: see
    /// [`Note::verify`].
    pub fn parse(msg: impl AsRef<[u8]>) -> Result<Self, Error> {
        let msg = msg.as_ref();
        if msg.len() > MAX_NOTE_BYTES {
            return Err(Error::MalformedNote("too large"));
        }
        let msg = std::str::from_utf8(msg).map_err(|_| Error::MalformedNote("not UTF-8"))?;
        check_text(msg)?;
        let split = msg
            .rfind("\n\n")
            .ok_or(Error::MalformedNote("no blank line before the signatures"))?;
        let (text, sigs) = (&msg[..split + 1], &msg[split + 2..]);
        let sigs = sigs.strip_suffix('\n').ok_or(Error::MalformedNote(
            "the signatures do not end with a newline",
        ))?;
        let mut signatures = Vec::new();
        for line in sigs.split('\n') {
            if signatures.len() == MAX_NOTE_SIGNATURES {
                return Err(Error::MalformedNote("too many signatures"));
            }
            signatures.push(NoteSignature::parse(line)?);
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The signed text, with its final newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every signature line, checked or not.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Checks the signatures by `known` keys (a line matches a key when both name and key ID
    /// do; other lines are ignored) and returns the lines that verified. Refused when a line
    /// of a known key fails to verify ([`Error::InvalidSignature`]), when a line matches two
    /// known keys ([`Error::AmbiguousKey`]), or when no known key signed
    /// ([`Error::NoKnownSignature`]).
    pub fn verify(&self, known: &[&dyn NoteVerifier]) -> Result<Vec<&NoteSignature>, Error> {
        let mut verified: Vec<&NoteSignature> = Vec::new();
        for sig in &self.signatures {
            let mut matching = known
                .iter()
                .filter(|k| k.name() == sig.name && k.key_id() == sig.key_id);
            let Some(verifier) = matching.next() else {
                continue;
            };
            if matching.next().is_some() {
                return Err(Error::AmbiguousKey {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            if !verifier.verify(self.text.as_bytes(), &sig.signature) {
                return Err(Error::InvalidSignature {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            if !verified.contains(&sig) {
                verified.push(sig);
            }
        }
        if verified.is_empty() {
            return Err(Error::NoKnownSignature);
        }
        Ok(verified)
    }

    /// Adds a signature line, replacing one with the same name and key ID.
    pub(crate) fn put_signature(&mut self, sig: NoteSignature) {
        self.signatures
            .retain(|s| !(s.name == sig.name && s.key_id == sig.key_id));
        self.signatures.push(sig);
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for sig in &self.signatures {
            writeln!(f, "{sig}")?;
        }
        Ok(())
    }
}
