//! The witness's decisions: a log that grows honestly is cosigned; a forked, rewritten or
//! shrunk log, another key or a bad signature is refused, even with the signing key stolen.

use std::collections::BTreeMap;

use super::super::*;

struct Log {
    key: SignerKey,
    leaves: Vec<Hash>,
    store: BTreeMap<u64, Hash>,
}

impl Log {
    fn new(seed: u8) -> Self {
        Self {
            key: SignerKey::from_seed("chatledger/test", &[seed; 32]).expect("key"),
            leaves: Vec::new(),
            store: BTreeMap::new(),
        }
    }

    fn append(&mut self, data: &[&str]) {
        let hashes: Vec<Hash> = data.iter().map(|d| leaf_hash(d.as_bytes())).collect();
        let appended = append(self.leaves.len() as u64, &self.store, &hashes).expect("append");
        self.store
            .extend(appended.new_hashes.iter().map(|s| (s.index, s.hash)));
        self.leaves.extend(hashes);
    }

    fn size(&self) -> u64 {
        self.leaves.len() as u64
    }

    fn checkpoint(&self) -> String {
        let root = tree_hash(self.size(), &self.store).expect("root");
        Checkpoint::new("chatledger/test", self.size(), root)
            .sign(&self.key)
            .expect("signs")
            .to_note_string()
    }

    fn proof(&self, from: u64) -> Vec<Hash> {
        consistency_proof(from, self.size(), &self.store).expect("proof")
    }
}

fn witness() -> CosignerKey {
    CosignerKey::new(SignerKey::from_seed("witness.example/w1", &[1; 32]).expect("key"))
}

#[test]
fn an_honest_log_is_cosigned_at_each_step() {
    let mut log = Log::new(7);
    let log_key = log.key.verifier_key();
    let w = witness();
    // First run: trusted on its signature, empty tree included.
    let first =
        witness_checkpoint(&log_key, None, log.checkpoint(), &[], &w, 1000).expect("accepted");
    assert_eq!(
        first.state,
        WitnessState {
            origin: "chatledger/test".into(),
            size: 0,
            root: EMPTY_ROOT
        }
    );
    let mut state = first.state;
    for (step, batch) in [
        &["a"][..],
        &["b", "c"],
        &[],
        &["d", "e", "f", "g", "h"],
        &["i"],
    ]
    .iter()
    .enumerate()
    {
        let from = state.size;
        log.append(batch);
        let now = 1001 + step as u64;
        let accepted = witness_checkpoint(
            &log_key,
            Some(&state),
            log.checkpoint(),
            &log.proof(from),
            &w,
            now,
        )
        .expect("accepted");
        assert_eq!(accepted.state.size, log.size());
        assert_eq!(
            w.verifier_key()
                .verify_cosignature(accepted.cosigned.note()),
            Ok(now)
        );
        // The cosigned note keeps the log's signature and still opens with the log key.
        let reopened =
            SignedCheckpoint::open(accepted.cosigned.to_note_string(), &log_key).expect("opens");
        assert_eq!(reopened.checkpoint().size, log.size());
        state = accepted.state;
    }
    // Re-cosigning a checkpoint the witness already has replaces its own cosignature.
    let cosigned_once = witness_checkpoint(&log_key, Some(&state), log.checkpoint(), &[], &w, 2000)
        .expect("accepted");
    let again = witness_checkpoint(
        &log_key,
        Some(&state),
        cosigned_once.cosigned.to_note_string(),
        &[],
        &w,
        2001,
    )
    .expect("accepted");
    assert_eq!(again.cosigned.note().signatures().len(), 2);
    assert_eq!(
        w.verifier_key().verify_cosignature(again.cosigned.note()),
        Ok(2001)
    );
}

#[test]
fn a_rewritten_log_is_refused_even_when_signed_with_the_stolen_key() {
    let mut honest = Log::new(7);
    honest.append(&["a", "b", "c", "d", "e"]);
    let log_key = honest.key.verifier_key();
    let w = witness();
    let state = witness_checkpoint(&log_key, None, honest.checkpoint(), &[], &w, 1)
        .expect("accepted")
        .state;

    // The attacker rewrites leaf 2, recomputes the whole tree, appends and re-signs with the
    // log's own key; the proof it serves is a valid proof of its own forked tree.
    let mut forged = Log::new(7);
    forged.append(&["a", "b", "REWRITTEN", "d", "e", "f", "g"]);
    let refused = witness_checkpoint(
        &log_key,
        Some(&state),
        forged.checkpoint(),
        &forged.proof(5),
        &w,
        2,
    );
    assert!(
        matches!(&refused, Err(Error::Inconsistent { old_size: 5, new_size: 7, cause }) if **cause == Error::OldRootMismatch),
        "{refused:?}"
    );
    // Or the honest log's proof with the forged checkpoint.
    honest.append(&["f", "g"]);
    let refused = witness_checkpoint(
        &log_key,
        Some(&state),
        forged.checkpoint(),
        &honest.proof(5),
        &w,
        2,
    );
    assert!(
        matches!(refused, Err(Error::Inconsistent { cause, .. }) if *cause == Error::RootMismatch)
    );
    // A fork at the same size.
    let mut fork = Log::new(7);
    fork.append(&["a", "b", "c", "d", "E"]);
    let refused = witness_checkpoint(&log_key, Some(&state), fork.checkpoint(), &[], &w, 2);
    assert!(
        matches!(refused, Err(Error::Inconsistent { old_size: 5, new_size: 5, cause }) if *cause == Error::RootMismatch)
    );
    // The honest extension is still accepted.
    assert!(
        witness_checkpoint(
            &log_key,
            Some(&state),
            honest.checkpoint(),
            &honest.proof(5),
            &w,
            3
        )
        .is_ok()
    );
}

#[test]
fn refusals() {
    let mut log = Log::new(7);
    log.append(&["a", "b", "c", "d", "e", "f"]);
    let log_key = log.key.verifier_key();
    let w = witness();
    let state = witness_checkpoint(&log_key, None, log.checkpoint(), &[], &w, 1)
        .expect("accepted")
        .state;
    log.append(&["g", "h", "i"]);
    let note = log.checkpoint();
    let proof = log.proof(6);

    // Tree shrank.
    let mut small = Log::new(7);
    small.append(&["a", "b", "c"]);
    assert_eq!(
        witness_checkpoint(&log_key, Some(&state), small.checkpoint(), &[], &w, 2),
        Err(Error::TreeShrank { from: 6, to: 3 })
    );
    // Signed by another key only.
    let mut other = Log::new(8);
    other.append(&["a", "b", "c", "d", "e", "f", "g", "h", "i"]);
    assert_eq!(
        witness_checkpoint(&log_key, Some(&state), other.checkpoint(), &proof, &w, 2),
        Err(Error::NoKnownSignature)
    );
    // A signature line of the log key that does not verify.
    let tampered = note.replacen("\n9\n", "\n10\n", 1);
    assert!(matches!(
        witness_checkpoint(&log_key, Some(&state), tampered, &proof, &w, 2),
        Err(Error::InvalidSignature { .. })
    ));
    // Truncated, or not a note.
    assert!(
        witness_checkpoint(
            &log_key,
            Some(&state),
            &note[..note.len() - 1],
            &proof,
            &w,
            2
        )
        .is_err()
    );
    assert!(witness_checkpoint(&log_key, Some(&state), "", &proof, &w, 2).is_err());
    // Another origin, signed by the log key.
    let root = tree_hash(9, &log.store).expect("root");
    let elsewhere = Checkpoint::new("chatledger/other", 9, root)
        .sign(&log.key)
        .expect("signs")
        .to_note_string();
    assert!(matches!(
        witness_checkpoint(&log_key, Some(&state), elsewhere, &proof, &w, 2),
        Err(Error::OriginMismatch { .. })
    ));
    // Bad proofs: missing, extra, mangled.
    let refuse = |p: &[Hash]| witness_checkpoint(&log_key, Some(&state), &note, p, &w, 2);
    assert!(matches!(refuse(&[]), Err(Error::Inconsistent { .. })));
    assert!(matches!(
        refuse(&proof[1..]),
        Err(Error::Inconsistent { .. })
    ));
    let mut extra = proof.clone();
    extra.push(proof[0]);
    assert!(matches!(refuse(&extra), Err(Error::Inconsistent { .. })));
    let mut swapped = proof.clone();
    swapped.swap(0, 1);
    assert!(matches!(refuse(&swapped), Err(Error::Inconsistent { .. })));
    // First run with a proof: nothing to prove it against.
    assert_eq!(
        witness_checkpoint(&log_key, None, &note, &proof, &w, 2),
        Err(Error::ProofLength {
            expected: 0,
            got: proof.len()
        })
    );
    // From an accepted empty tree: the proof must be empty.
    let empty = WitnessState {
        origin: "chatledger/test".into(),
        size: 0,
        root: EMPTY_ROOT,
    };
    assert!(witness_checkpoint(&log_key, Some(&empty), &note, &[], &w, 2).is_ok());
    assert!(witness_checkpoint(&log_key, Some(&empty), &note, &proof, &w, 2).is_err());
    // A timestamp a cosignature cannot carry.
    assert_eq!(
        refuse_time(&log_key, &state, &note, &proof, &w),
        Err(Error::InvalidTimestamp(u64::MAX))
    );
    // And the right proof is accepted.
    assert!(refuse(&proof).is_ok());
}

fn refuse_time(
    log_key: &VerifierKey,
    state: &WitnessState,
    note: &str,
    proof: &[Hash],
    w: &CosignerKey,
) -> Result<Accepted, Error> {
    witness_checkpoint(log_key, Some(state), note, proof, w, u64::MAX)
}
