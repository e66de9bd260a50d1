//! Signed notes and keys: the vectors of Go's golang.org/x/mod/sumdb/note (note_test.go) and
//! of C2SP signed-note, and refusals.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::super::*;

pub(super) const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
pub(super) const PETER_VKEY: &str =
    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn vkey(s: &str) -> VerifierKey {
    VerifierKey::parse(s).expect("valid verifier key")
}

fn open(msg: &str, known: &[&VerifierKey]) -> Result<Vec<String>, Error> {
    let known: Vec<&dyn NoteVerifier> = known.iter().map(|k| *k as &dyn NoteVerifier).collect();
    let note = Note::parse(msg)?;
    let verified = note.verify(&known)?;
    Ok(verified.iter().map(|s| s.name().to_owned()).collect())
}

#[test]
fn go_verifier_key_and_its_manglings() {
    let key = vkey(PETER_VKEY);
    assert_eq!(key.to_string(), PETER_VKEY);
    assert_eq!(key.key_id(), 0xc74f20a3);
    assert_eq!(key.name(), "PeterNeumann");
    let b = PETER_VKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if (i, j) != (0, b.len()) {
                let s = std::str::from_utf8(&b[i..j]).expect("ASCII");
                assert!(VerifierKey::parse(s).is_err(), "{s:?}");
            }
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] += 1;
        let s = String::from_utf8(m).expect("ASCII");
        assert!(VerifierKey::parse(&s).is_err(), "{s:?}");
    }
    // Wrong key length and unknown algorithm, each with a key ID adjusted to match.
    assert!(matches!(
        VerifierKey::parse(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        ),
        Err(Error::MalformedKey(_))
    ));
    assert_eq!(
        VerifierKey::parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(Error::UnsupportedAlgorithm(0x65))
    );
}

#[test]
fn go_signer_key_and_its_manglings() {
    let key = SignerKey::parse(PETER_SKEY).expect("valid signer key");
    assert_eq!(key.verifier_key().to_string(), PETER_VKEY);
    assert_eq!(key.to_key_string().as_str(), PETER_SKEY);
    assert_eq!(
        verifier_key_of_key_file(&format!("{PETER_SKEY}\n")),
        Ok(PETER_VKEY.to_owned())
    );
    assert!(
        !format!("{key:?}").contains("AYEK"),
        "Debug shows no secret"
    );
    let b = PETER_SKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if (i, j) != (0, b.len()) {
                let s = std::str::from_utf8(&b[i..j]).expect("ASCII");
                assert!(SignerKey::parse(s).is_err(), "{s:?}");
            }
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] += 1;
        let s = String::from_utf8(m).expect("ASCII");
        assert!(SignerKey::parse(&s).is_err(), "{s:?}");
    }
}

#[test]
fn key_strings_are_strict() {
    // Upper-case hex key ID (Go would accept it; the spec says lowercase).
    assert!(matches!(
        VerifierKey::parse("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(Error::MalformedKey(_))
    ));
    // Another key's ID.
    assert_eq!(
        VerifierKey::parse("PeterNeumann+af0cfe78+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(Error::KeyIdMismatch)
    );
    // A small-order point (the identity), with its key ID.
    let identity = {
        let mut k = [0u8; 32];
        k[0] = 1;
        k
    };
    let weak = format!(
        "weak+{:08x}+{}",
        key_id("weak", ALG_ED25519, &identity),
        BASE64.encode([&[1u8][..], &identity].concat())
    );
    assert!(matches!(
        VerifierKey::parse(&weak),
        Err(Error::MalformedKey(_))
    ));
    // Key files: one final newline at most.
    assert!(SignerKey::from_key_file(&format!("{PETER_SKEY}\n")).is_ok());
    for bad in [
        format!("{PETER_SKEY}\n\n"),
        format!("{PETER_SKEY}\r\n"),
        format!(" {PETER_SKEY}"),
        format!("{PETER_SKEY} "),
    ] {
        assert!(SignerKey::from_key_file(&bad).is_err(), "{bad:?}");
    }
    // Names: no spaces of any kind, no '+', not empty.
    for name in [
        "",
        "a b",
        "a\tb",
        "a\u{a0}b",
        "a\u{2003}b",
        "a+b",
        "a\nb",
        "a\u{7f}b",
    ] {
        assert_eq!(
            SignerKey::generate(name).map(|_| ()),
            Err(Error::InvalidKeyName),
            "{name:?}"
        );
    }
}

#[test]
fn generated_keys_round_trip() {
    let file = generate_key_file("example.com/log").expect("key");
    assert!(file.starts_with("PRIVATE+KEY+example.com/log+") && file.ends_with('\n'));
    let key = SignerKey::from_key_file(&file).expect("parses");
    let vkey_string = verifier_key_of_key_file(&file).expect("verifier key");
    let verifier = VerifierKey::parse(&vkey_string).expect("parses");
    assert_eq!(verifier, key.verifier_key());
    let mut note = Note::new("hi\n").expect("text");
    key.sign_note(&mut note);
    let signed = note.to_string();
    assert_eq!(
        open(&signed, &[&verifier]),
        Ok(vec!["example.com/log".to_owned()])
    );
    // Corrupt signature, corrupt message.
    let sig = &note.signatures()[0];
    let mut bytes = sig.key_id().to_be_bytes().to_vec();
    bytes.extend_from_slice(sig.signature());
    bytes[4] ^= 1;
    let corrupt = format!("hi\n\n— example.com/log {}\n", BASE64.encode(&bytes));
    assert!(matches!(
        open(&corrupt, &[&verifier]),
        Err(Error::InvalidSignature { .. })
    ));
    assert!(matches!(
        open(&signed.replacen("hi", "ho", 1), &[&verifier]),
        Err(Error::InvalidSignature { .. })
    ));
    // Two generated keys differ.
    assert_ne!(generate_key_file("example.com/log").expect("key"), file);
}

#[test]
fn go_sign_output() {
    let key = SignerKey::parse(PETER_SKEY).expect("valid");
    let mut note = Note::new(TEXT).expect("text");
    key.sign_note(&mut note);
    let want = format!("{TEXT}\n{PETER_SIG}");
    assert_eq!(note.to_string(), want);
    // Signing again replaces the signature instead of adding one.
    key.sign_note(&mut note);
    assert_eq!(note.to_string(), want);
    assert!(Note::new("abc").is_err(), "text without a final newline");
    assert!(Note::new("a\u{1}b\n").is_err(), "control character");
}

#[test]
fn go_open() {
    let peter = vkey(PETER_VKEY);
    let enoch = vkey(ENOCH_VKEY);
    let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    assert_eq!(open(&both, &[&peter]), Ok(vec!["PeterNeumann".to_owned()]));
    assert_eq!(Note::parse(&both).expect("parses").signatures().len(), 2);
    assert_eq!(Note::parse(&both).expect("parses").text(), TEXT);
    assert_eq!(
        open(&both, &[&peter, &enoch]),
        Ok(vec!["PeterNeumann".to_owned(), "EnochRoot".to_owned()])
    );
    assert_eq!(open(&both, &[]), Err(Error::NoKnownSignature));
    // A duplicated known key is ambiguous only when a signature needs it.
    assert_eq!(
        open(&format!("{TEXT}\n{ENOCH_SIG}"), &[&enoch, &peter, &enoch]),
        Err(Error::AmbiguousKey {
            name: "EnochRoot".into(),
            key_id: 0xaf0cfe78
        })
    );
    assert!(open(&format!("{TEXT}\n{PETER_SIG}"), &[&enoch, &peter, &enoch]).is_ok());
    // Too many signatures.
    let many = format!("{TEXT}\n{}", PETER_SIG.repeat(101));
    assert!(matches!(
        open(&many, &[&peter]),
        Err(Error::MalformedNote(_))
    ));
    assert_eq!(
        open(&format!("{TEXT}\n{}", PETER_SIG.repeat(100)), &[&peter]),
        Ok(vec!["PeterNeumann".to_owned()])
    );
    // An invalid signature of a known key.
    let bad = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    assert_eq!(
        open(&bad, &[&peter]),
        Err(Error::InvalidSignature {
            name: "PeterNeumann".into(),
            key_id: 0xc74f20a3
        })
    );
    // Repeated and unknown signatures are fine.
    let repeated = format!(
        "{TEXT}\n{PETER_SIG}{PETER_SIG}{ENOCH_SIG}{ENOCH_SIG}{}ABCD{}",
        &ENOCH_SIG[..60],
        &ENOCH_SIG[60..]
    );
    assert_eq!(
        open(&repeated, &[&peter]),
        Ok(vec!["PeterNeumann".to_owned()])
    );
    // Malformed messages.
    for msg in [
        TEXT.to_owned(),
        format!("{TEXT}\n"),
        format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
        format!("\u{1}{TEXT}\n{PETER_SIG}"),
        format!(
            "{TEXT}\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
        ),
        format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
        format!("{TEXT}\n{PETER_SIG}\n"),
        format!("{TEXT}\n{}", PETER_SIG.replace('—', "-")),
        format!("{TEXT}\n{}", PETER_SIG.replace("— ", "—  ")),
        format!("{TEXT}\n— PeterNeumann \n"),
        format!("{TEXT}\n— PeterNeumann AAAAAA==\n"),
        format!("{TEXT}\r\n{PETER_SIG}"),
    ] {
        assert!(
            matches!(open(&msg, &[&peter]), Err(Error::MalformedNote(_))),
            "{msg:?}"
        );
    }
    let mut not_utf8 = b"\xff".to_vec();
    not_utf8.extend_from_slice(format!("{TEXT}\n{PETER_SIG}").as_bytes());
    assert!(matches!(
        Note::parse(&not_utf8),
        Err(Error::MalformedNote(_))
    ));
    assert!(matches!(
        Note::parse(vec![b'a'; MAX_NOTE_BYTES + 1]),
        Err(Error::MalformedNote(_))
    ));
}

#[test]
fn truncated_notes_are_refused() {
    let peter = vkey(PETER_VKEY);
    let msg = format!("{TEXT}\n{PETER_SIG}");
    for end in 0..msg.len() {
        if let Some(prefix) = msg.get(..end) {
            assert!(open(prefix, &[&peter]).is_err(), "{prefix:?}");
        }
    }
    for start in 1..msg.len() {
        if let Some(suffix) = msg.get(start..) {
            assert!(open(suffix, &[&peter]).is_err(), "{suffix:?}");
        }
    }
}

/// A verifier claiming a known name and key ID with another key: the line is checked against
/// it and fails, instead of being skipped as unknown.
struct Impostor;

impl NoteVerifier for Impostor {
    fn name(&self) -> &str {
        "PeterNeumann"
    }
    fn key_id(&self) -> u32 {
        0xc74f20a3
    }
    fn verify(&self, _: &[u8], _: &[u8]) -> bool {
        false
    }
}

#[test]
fn a_line_matching_a_known_name_and_id_must_verify() {
    let note = Note::parse(format!("{TEXT}\n{PETER_SIG}")).expect("parses");
    assert!(matches!(
        note.verify(&[&Impostor]),
        Err(Error::InvalidSignature { .. })
    ));
    // Same name, another ID: unknown, ignored.
    let other = SignerKey::generate("PeterNeumann").expect("key");
    assert_eq!(
        note.verify(&[&other.verifier_key()]),
        Err(Error::NoKnownSignature)
    );
}

// c2sp.org/signed-note §"Verifier keys" example.
#[test]
fn c2sp_signed_note_example() {
    let key = vkey("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k");
    let msg = "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
    assert_eq!(open(msg, &[&key]), Ok(vec!["example.com/foo".to_owned()]));
    assert_eq!(
        open(&msg.replace("example message", "example massage"), &[&key]).map(|_| ()),
        Err(Error::InvalidSignature {
            name: "example.com/foo".into(),
            key_id: 0x530d903a
        })
    );
}
