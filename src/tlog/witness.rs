//! The witness's decision, without I/O: accept a newly fetched checkpoint and cosign it, or
//! say why not. The rules are those of C2SP tlog-witness §"add-checkpoint", for a witness that
//! pulls checkpoints from one log.

use super::Error;
use super::checkpoint::{Checkpoint, SignedCheckpoint};
use super::cosignature::CosignerKey;
use super::hash::Hash;
use super::merkle::verify_consistency;
use super::note::VerifierKey;

/// The last checkpoint a witness accepted: what it must find a later one consistent with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessState {
    /// The log's origin line; a checkpoint of another origin is refused.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
}

impl From<&Checkpoint> for WitnessState {
    fn from(checkpoint: &Checkpoint) -> Self {
        Self {
            origin: checkpoint.origin.clone(),
            size: checkpoint.size,
            root: checkpoint.root,
        }
    }
}

/// An accepted checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The note with the witness's cosignature added (its other signature lines kept).
    pub cosigned: SignedCheckpoint,
    /// The state to persist before publishing the cosignature.
    pub state: WitnessState,
}

/// Decides on `note`, a checkpoint fetched from the log, given the log's key, the last accepted
/// checkpoint (`None` on the first run: the first checkpoint is trusted on its signature
/// alone) and `consistency_proof` from `last.size` to the new size (empty on the first run, or
/// when either size is 0 or both are equal). Accepted checkpoints are cosigned at `now` (POSIX
/// seconds).
///
/// Refusals: [`Error::MalformedNote`] / [`Error::MalformedCheckpoint`];
/// [`Error::InvalidSignature`] (a line of the log key that does not verify);
/// [`Error::NoKnownSignature`] (signed by another key only); [`Error::OriginMismatch`];
/// [`Error::TreeShrank`]; [`Error::Inconsistent`] (not an extension of the last accepted tree:
/// a forked or rewritten log, or a bad proof).
pub fn witness_checkpoint(
    log_key: &VerifierKey,
    last: Option<&WitnessState>,
    note: impl AsRef<[u8]>,
    consistency_proof: &[Hash],
    cosigner: &CosignerKey,
    now: u64,
) -> Result<Accepted, Error> {
    // The signature comes first: nothing unsigned is looked at further.
    let mut signed = SignedCheckpoint::open(note, log_key)?;
    let new = signed.checkpoint().clone();
    match last {
        None => expect_empty(consistency_proof)?,
        Some(last) => {
            if new.origin != last.origin {
                return Err(Error::OriginMismatch {
                    expected: last.origin.clone(),
                    got: new.origin,
                });
            }
            if new.size < last.size {
                return Err(Error::TreeShrank {
                    from: last.size,
                    to: new.size,
                });
            }
            let consistent = if last.size == 0 {
                // tlog-witness: from the empty tree, the proof must be empty.
                expect_empty(consistency_proof)
            } else {
                verify_consistency(
                    last.size,
                    new.size,
                    consistency_proof,
                    &last.root,
                    &new.root,
                )
            };
            consistent.map_err(|cause| Error::Inconsistent {
                old_size: last.size,
                new_size: new.size,
                cause: Box::new(cause),
            })?;
        }
    }
    cosigner.cosign(signed.note_mut(), now)?;
    Ok(Accepted {
        state: WitnessState::from(&new),
        cosigned: signed,
    })
}

fn expect_empty(proof: &[Hash]) -> Result<(), Error> {
    if proof.is_empty() {
        Ok(())
    } else {
        Err(Error::ProofLength {
            expected: 0,
            got: proof.len(),
        })
    }
}
