//! The checkpoint signing key (API.md "Checkpoints"): a C2SP note signer key file, given by
//! `--checkpoint-key-file`, or generated into the embedded default's data dir on first start.
//! The same file-safety rules as the admin key file apply.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::check_secret_file;
use crate::tlog::SignerKey;

/// Why no checkpoint key could be set up.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointKeyError {
    #[error(
        "no checkpoint key: with an external database set --checkpoint-key-file / \
         CHATLEDGER_CHECKPOINT_KEY_FILE to a note signer key shared by every server of the \
         deployment; create one with `chatledger checkpoint-key --generate checkpoint.key --name {0}`"
    )]
    Missing(String),
    #[error(
        "no checkpoint key file at {0}: create one with \
         `chatledger checkpoint-key --generate {0} --name <log name>`"
    )]
    NoFile(String),
    #[error("{0}")]
    File(#[from] super::AdminKeyError),
    #[error("cannot use checkpoint key file {path}: {problem}")]
    Invalid { path: String, problem: String },
}

/// The key file's name in the embedded default's data dir.
pub const EMBEDDED_KEY_FILE: &str = "checkpoint.key";

/// The signer key from `file`; else, for the embedded default only, the one in
/// `<data-dir>/checkpoint.key`, generated (mode 0600, named `key_name`) on first start.
/// Returns the key and, when it was generated now, the file it was written to.
pub fn load_checkpoint_key(
    file: Option<&Path>,
    embedded_data_dir: Option<&Path>,
    key_name: &str,
) -> Result<(SignerKey, Option<PathBuf>), CheckpointKeyError> {
    if let Some(path) = file {
        return Ok((read_key_file(path)?, None));
    }
    let data_dir =
        embedded_data_dir.ok_or_else(|| CheckpointKeyError::Missing(key_name.to_owned()))?;
    let path = data_dir.join(EMBEDDED_KEY_FILE);
    if path.exists() {
        return Ok((read_key_file(&path)?, None));
    }
    generate_key_file(&path, key_name)?;
    Ok((read_key_file(&path)?, Some(path)))
}

/// Reads a signer key file, refusing one that others could have written.
pub fn read_key_file(path: &Path) -> Result<SignerKey, CheckpointKeyError> {
    if !path.exists() {
        return Err(CheckpointKeyError::NoFile(path.display().to_string()));
    }
    check_secret_file(path, "checkpoint key")?;
    let invalid = |problem: String| CheckpointKeyError::Invalid {
        path: path.display().to_string(),
        problem,
    };
    let contents = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|error| invalid(error.to_string()))?,
    );
    SignerKey::from_key_file(&contents).map_err(|error| invalid(error.to_string()))
}

/// Writes a new signer key named `name` to `path` (mode 0600, never over an existing file).
pub fn generate_key_file(path: &Path, name: &str) -> Result<(), CheckpointKeyError> {
    let invalid = |problem: String| CheckpointKeyError::Invalid {
        path: path.display().to_string(),
        problem,
    };
    let contents = crate::tlog::generate_key_file(name).map_err(|e| invalid(e.to_string()))?;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    };
    write().map_err(|error| invalid(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_checkpoint_key_is_private_reused_and_required_outside_the_embedded_default() {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("chatledger-ckey-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (first, written) =
            load_checkpoint_key(None, Some(&dir), "chatledger/test").expect("generated");
        let path = written.expect("written on first start");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (second, again) =
            load_checkpoint_key(None, Some(&dir), "chatledger/test").expect("reused");
        assert!(again.is_none());
        assert_eq!(
            first.verifier_key().to_string(),
            second.verifier_key().to_string()
        );
        let missing = load_checkpoint_key(None, None, "chatledger/x").expect_err("refused");
        assert!(
            missing
                .to_string()
                .contains("chatledger checkpoint-key --generate"),
            "{missing}"
        );
        let absent = dir.join("absent.key");
        let named = load_checkpoint_key(Some(&absent), None, "x").expect_err("refused");
        let said = named.to_string();
        assert!(
            said.starts_with(&format!("no checkpoint key file at {}", absent.display()))
                && said.contains("chatledger checkpoint-key --generate"),
            "{said}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let unsafe_file = load_checkpoint_key(Some(&path), None, "x").expect_err("refused");
        assert!(
            unsafe_file
                .to_string()
                .starts_with("refusing checkpoint key file"),
            "{unsafe_file}"
        );
        assert!(matches!(unsafe_file, CheckpointKeyError::File(_)));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&path, "PRIVATE+KEY+x+00000000+AAAA\n").expect("write");
        assert!(matches!(
            load_checkpoint_key(Some(&path), None, "x"),
            Err(CheckpointKeyError::Invalid { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
