//! C2SP tlog-checkpoint (<https://c2sp.org/tlog-checkpoint>): the signed tree head, as a note
//! whose text is `<origin>\n<size>\n<base64 root>\n` and optional extension lines.

use std::fmt::Write as _;

use super::Error;
use super::hash::{EMPTY_ROOT, Hash};
use super::note::{Note, NoteVerifier, SignerKey, VerifierKey, check_key_name};

/// The origin line of the log named `name`: `chatledger/<name>`. The name follows the key name
/// rules (no spaces, no `+`), so the origin can also name the log's signing key, as the spec
/// recommends.
pub fn log_origin(name: &str) -> Result<String, Error> {
    check_key_name(name)?;
    Ok(format!("chatledger/{name}"))
}

/// A checkpoint's text: origin, tree size, root hash, extension lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Identifies the log (first line).
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 6962 root hash of the tree of `size` leaves.
    pub root: Hash,
    /// Opaque, non-empty extra lines (the spec discourages them; chatledger writes none).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: &str, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// Parses a checkpoint text strictly: at least three lines, each non-empty and ending in a
    /// newline; a decimal size without sign or leading zero; a base64 root of exactly 32 bytes.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text.bytes().any(|b| b < 0x20 && b != b'\n') {
            return Err(Error::MalformedCheckpoint(
                "a control character other than newline",
            ));
        }
        let body = text.strip_suffix('\n').ok_or(Error::MalformedCheckpoint(
            "the text does not end with a newline",
        ))?;
        let mut lines = body.split('\n');
        let mut line = |what: &'static str| lines.next().ok_or(Error::MalformedCheckpoint(what));
        let origin = line("no origin line")?;
        let size = line("no tree size line")?;
        let root = line("no root hash line")?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if origin.is_empty() {
            return Err(Error::MalformedCheckpoint("empty origin"));
        }
        let size = parse_size(size)?;
        let root = Hash::from_base64(root)
            .map_err(|_| Error::MalformedCheckpoint("the root hash is not base64 of 32 bytes"))?;
        if extensions.iter().any(String::is_empty) {
            return Err(Error::MalformedCheckpoint("an empty line"));
        }
        if size == 0 && root != EMPTY_ROOT {
            return Err(Error::MalformedCheckpoint(
                "an empty tree with another root than SHA-256(\"\")",
            ));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// The checkpoint text (the note's text).
    pub fn text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        );
        for line in &self.extensions {
            let _ = writeln!(text, "{line}");
        }
        text
    }

    /// The signed note of this checkpoint.
    pub fn sign(&self, key: &SignerKey) -> Result<SignedCheckpoint, Error> {
        let mut note = Note::new(&self.text())?;
        // Round-trip so that a checkpoint we could not parse back is never signed.
        let checkpoint = Checkpoint::parse(note.text())?;
        key.sign_note(&mut note);
        Ok(SignedCheckpoint { checkpoint, note })
    }
}

fn parse_size(line: &str) -> Result<u64, Error> {
    let digits_only = !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (line.len() > 1 && line.starts_with('0')) {
        return Err(Error::MalformedCheckpoint(
            "the tree size is not a decimal without leading zeros",
        ));
    }
    line.parse()
        .map_err(|_| Error::MalformedCheckpoint("the tree size does not fit 64 bits"))
}

/// A checkpoint and its note, whose signature by the log key was checked (or made).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    checkpoint: Checkpoint,
    note: Note,
}

impl SignedCheckpoint {
    /// Parses a signed checkpoint note and checks it against the log's key: a signature line of
    /// that key must verify (other lines, such as cosignatures, are ignored).
    pub fn open(note: impl AsRef<[u8]>, log_key: &VerifierKey) -> Result<Self, Error> {
        let note = Note::parse(note)?;
        note.verify(&[log_key as &dyn NoteVerifier])?;
        let checkpoint = Checkpoint::parse(note.text())?;
        Ok(Self { checkpoint, note })
    }

    /// The checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The note, with every signature line it carries.
    pub fn note(&self) -> &Note {
        &self.note
    }

    /// The signed note, as served and written to `<size>.note`.
    pub fn to_note_string(&self) -> String {
        self.note.to_string()
    }

    pub(crate) fn note_mut(&mut self) -> &mut Note {
        &mut self.note
    }
}
