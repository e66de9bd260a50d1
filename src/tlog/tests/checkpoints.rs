//! Checkpoints and cosignatures: Go's sumdb/tlog tree note, the examples of C2SP
//! tlog-checkpoint and tlog-cosignature, a public witness key, and refusals.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use super::super::cosignature::cosignature_timestamp;
use super::super::*;
use super::notes::{PETER_SKEY, PETER_VKEY};

#[test]
fn log_names_follow_key_name_rules() {
    assert_eq!(log_origin("prod-eu"), Ok("chatledger/prod-eu".to_owned()));
    for name in ["", "a b", "a\tb", "a\u{a0}b", "a+b", "a\nb"] {
        assert_eq!(log_origin(name), Err(Error::InvalidKeyName), "{name:?}");
    }
}

#[test]
fn cosigner_keys_are_not_note_keys() {
    let cosigner = CosignerKey::new(SignerKey::parse(PETER_SKEY).expect("valid"));
    assert_eq!(
        VerifierKey::parse(&cosigner.verifier_key().to_string()),
        Err(Error::UnsupportedAlgorithm(0x04))
    );
    assert_eq!(
        CosignatureVerifierKey::parse(PETER_VKEY),
        Err(Error::UnsupportedAlgorithm(0x01))
    );
    assert_eq!(
        CosignerKey::from_key_file(&format!("{PETER_SKEY}\n")).map(|k| k.name().to_owned()),
        Ok("PeterNeumann".to_owned())
    );
}

#[test]
fn checkpoint_text_round_trip_and_go_golden() {
    // golang.org/x/mod/sumdb/tlog note_test.go TestFormatTree / TestParseTree.
    let golden =
        "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n";
    let c = Checkpoint::parse(golden).expect("parses");
    assert_eq!(
        (c.origin.as_str(), c.size, c.root),
        (
            "go.sum database tree",
            123456789012,
            leaf_hash(b"hello world")
        )
    );
    assert_eq!(c.text(), golden);
    // Extension lines are kept (Go ignores "junk" after the hash; we keep complete lines).
    let ext = Checkpoint::parse(&format!("{golden}JOE\nJOE\n")).expect("parses");
    assert_eq!(ext.extensions, vec!["JOE".to_owned(), "JOE".to_owned()]);
    assert_eq!(ext.text(), format!("{golden}JOE\nJOE\n"));
    let empty = Checkpoint::parse(&format!("o\n0\n{}\n", EMPTY_ROOT.to_base64())).expect("parses");
    assert_eq!(empty.size, 0);
    assert!(
        Checkpoint::parse(&format!(
            "o\n18446744073709551615\n{}\n",
            EMPTY_ROOT.to_base64()
        ))
        .is_ok()
    );
}

#[test]
fn checkpoint_text_is_strict() {
    let root = leaf_hash(b"hello world").to_base64();
    for bad in [
        "not-a-checkpoint".to_owned(),
        format!("o\n0xabcdef\n{root}\n"),
        "o\n5\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBTOOBIG=\n".to_owned(),
        format!("o\n05\n{root}\n"),
        format!("o\n00\n{root}\n"),
        format!("o\n+5\n{root}\n"),
        format!("o\n-5\n{root}\n"),
        format!("o\n 5\n{root}\n"),
        format!("o\n5 \n{root}\n"),
        format!("o\n\n{root}\n"),
        format!("o\n18446744073709551616\n{root}\n"),
        format!("o\n5\n{root}"),
        "o\n5\n".to_owned(),
        "o\n5\n\n".to_owned(),
        format!("\n5\n{root}\n"),
        format!("o\n5\n{root}\n\n"),
        format!("o\n5\n{root}\next\n\n"),
        format!("o\n5\n{root}\n\next\n"),
        format!("o\r\n5\n{root}\n"),
        format!("o\n5\r\n{root}\n"),
        format!("o\n5\n{}\n", BASE64.encode([0u8; 31])),
        format!("o\n5\n{}\n", BASE64.encode([0u8; 33])),
        format!("o\n5\n{}\n", hex::encode([0u8; 32])),
        format!("o\n0\n{root}\n"),
        format!("o\u{1}\n5\n{root}\n"),
    ] {
        assert!(
            matches!(Checkpoint::parse(&bad), Err(Error::MalformedCheckpoint(_))),
            "{bad:?}"
        );
    }
}

fn log_key() -> SignerKey {
    SignerKey::from_seed("chatledger/test", &[7; 32]).expect("key")
}

#[test]
fn checkpoint_sign_and_open() {
    let key = log_key();
    let origin = log_origin("test").expect("valid");
    assert_eq!(origin, "chatledger/test");
    let checkpoint = Checkpoint::new(&origin, 42, leaf_hash(b"root"));
    let signed = checkpoint.sign(&key).expect("signs");
    let note = signed.to_note_string();
    assert!(note.starts_with(&format!(
        "chatledger/test\n42\n{}\n\n— chatledger/test ",
        leaf_hash(b"root")
    )));
    let opened = SignedCheckpoint::open(&note, &key.verifier_key()).expect("opens");
    assert_eq!(opened.checkpoint(), &checkpoint);
    assert_eq!(opened, signed);
    // Another key, a truncated note, a changed size, a changed root: refused.
    let other = SignerKey::from_seed("chatledger/test", &[8; 32]).expect("key");
    assert_eq!(
        SignedCheckpoint::open(&note, &other.verifier_key()),
        Err(Error::NoKnownSignature)
    );
    assert!(SignedCheckpoint::open(&note[..note.len() - 2], &key.verifier_key()).is_err());
    assert!(
        SignedCheckpoint::open(note.replacen("\n42\n", "\n43\n", 1), &key.verifier_key()).is_err()
    );
    let forged = Checkpoint::new(&origin, 42, leaf_hash(b"other root"))
        .sign(&other)
        .expect("signs");
    let spliced = format!(
        "{}\n{}\n",
        forged.checkpoint().text(),
        signed.note().signatures()[0]
    );
    assert!(matches!(
        SignedCheckpoint::open(spliced, &key.verifier_key()),
        Err(Error::InvalidSignature { .. })
    ));
    // A checkpoint that could not be parsed back is never signed.
    assert!(
        Checkpoint::new("two\nlines", 1, leaf_hash(b"x"))
            .sign(&key)
            .is_err()
    );
    assert!(Checkpoint::new("", 1, leaf_hash(b"x")).sign(&key).is_err());
    assert!(Checkpoint::new("o", 0, leaf_hash(b"x")).sign(&key).is_err());
    // A signed note whose text is not a checkpoint.
    let mut not_a_checkpoint = Note::new("hello\n").expect("text");
    key.sign_note(&mut not_a_checkpoint);
    assert!(matches!(
        SignedCheckpoint::open(not_a_checkpoint.to_string(), &key.verifier_key()),
        Err(Error::MalformedCheckpoint(_))
    ));
}

#[test]
fn cosignature_follows_the_spec() {
    let cosigner =
        CosignerKey::new(SignerKey::from_seed("witness.example/w1", &[9; 32]).expect("key"));
    let public = SignerKey::from_seed("witness.example/w1", &[9; 32])
        .expect("key")
        .verifier_key();
    let public: [u8; 32] = *public.public_key();
    // tlog-cosignature §"Format": key ID = SHA-256(name || "\n" || 0x04 || public key)[:4].
    let mut h = Sha256::new();
    h.update(b"witness.example/w1\n\x04");
    h.update(public);
    let id = h.finalize();
    assert_eq!(
        cosigner.key_id(),
        u32::from_be_bytes([id[0], id[1], id[2], id[3]])
    );
    let vkey = cosigner.verifier_key().to_string();
    let material = BASE64
        .decode(vkey.rsplit('+').next().expect("three parts"))
        .expect("base64");
    assert_eq!(material[0], 0x04);
    assert_eq!(&material[1..], &public);
    assert_eq!(
        CosignatureVerifierKey::parse(&vkey)
            .expect("parses")
            .to_string(),
        vkey
    );

    let signed = Checkpoint::new(
        "example.com/behind-the-sofa",
        20852163,
        Hash::from_base64("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=").expect("hash"),
    )
    .sign(&log_key())
    .expect("signs");
    let mut note = signed.note().clone();
    cosigner.cosign(&mut note, 1679315147).expect("cosigns");
    let line = note.signatures().last().expect("cosignature").to_string();
    let bytes = BASE64
        .decode(line.rsplit(' ').next().expect("base64"))
        .expect("base64");
    // key ID || 8-byte big-endian timestamp || 64-byte Ed25519 signature.
    assert_eq!(bytes.len(), 4 + 8 + 64);
    assert_eq!(&bytes[..4], &cosigner.key_id().to_be_bytes());
    assert_eq!(&bytes[4..12], &1679315147u64.to_be_bytes());
    // §"Ed25519 signed message", the spec's own example message.
    let message = "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let signature = Signature::from_slice(&bytes[12..]).expect("64 bytes");
    assert!(
        VerifyingKey::from_bytes(&public)
            .expect("key")
            .verify(message.as_bytes(), &signature)
            .is_ok()
    );

    let verifier = cosigner.verifier_key();
    assert_eq!(verifier.verify_cosignature(&note), Ok(1679315147));
    // Opening as a checkpoint still works with the log key: the cosignature is ignored.
    assert!(SignedCheckpoint::open(note.to_string(), &log_key().verifier_key()).is_ok());
    // A note key does not verify a cosignature made with the same Ed25519 key.
    let same_key_as_note_key = SignerKey::from_seed("witness.example/w1", &[9; 32])
        .expect("key")
        .verifier_key();
    assert_eq!(
        Note::parse(note.to_string())
            .expect("parses")
            .verify(&[&same_key_as_note_key]),
        Err(Error::NoKnownSignature)
    );
    // Cosigning again replaces; a changed timestamp or text is refused.
    cosigner.cosign(&mut note, 1679315200).expect("cosigns");
    assert_eq!(note.signatures().len(), 2);
    assert_eq!(verifier.verify_cosignature(&note), Ok(1679315200));
    let forged_time = {
        let mut b = bytes.clone();
        b[11] ^= 1;
        format!(
            "{}\n{}\n— witness.example/w1 {}\n",
            signed.checkpoint().text(),
            signed.note().signatures()[0],
            BASE64.encode(&b)
        )
    };
    assert!(matches!(
        verifier.verify_cosignature(&Note::parse(forged_time).expect("parses")),
        Err(Error::InvalidSignature { .. })
    ));
    let other_text = Checkpoint::new("example.com/behind-the-sofa", 20852164, EMPTY_ROOT).text();
    let moved = format!("{other_text}\n{line}\n");
    assert!(matches!(
        verifier.verify_cosignature(&Note::parse(moved).expect("parses")),
        Err(Error::InvalidSignature { .. })
    ));
    assert_eq!(
        verifier.verify_cosignature(signed.note()),
        Err(Error::NoKnownSignature)
    );
    assert_eq!(
        cosigner.cosign(&mut note, 1 << 63),
        Err(Error::InvalidTimestamp(1 << 63))
    );
}

#[test]
fn cosignature_vectors() {
    // A native 0x04 vkey of a public witness (transparency-dev/formats note_cosigv1_test.go):
    // its key ID is computed with type 0x04.
    let remora = CosignatureVerifierKey::parse(
        "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
    )
    .expect("parses");
    assert_eq!(remora.key_id(), 0xda77ade7);
    // tlog-cosignature's example line: key ID, then timestamp 1679315147 (its "time" line).
    let example = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";
    let note = Note::parse(example).expect("parses");
    let witness = &note.signatures()[1];
    assert_eq!(witness.name(), "witness.example.com/w1");
    assert_eq!(cosignature_timestamp(witness.signature()), Some(1679315147));
    assert_eq!(
        cosignature_timestamp(note.signatures()[0].signature()),
        None,
        "a 64-byte note signature"
    );
    // Another vkey with a key ID of type 0x01 (and type byte 0x01) is not a cosigner key.
    assert!(
        CosignatureVerifierKey::parse("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6")
            .is_err()
    );
    assert!(
        VerifierKey::parse("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6").is_ok()
    );
    for bad in [
        "bananas.sigstore.dev+12344556",
        "rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!",
        "rekor.sigstore.dev+12345678+AwEB",
    ] {
        assert!(CosignatureVerifierKey::parse(bad).is_err(), "{bad}");
    }
}
