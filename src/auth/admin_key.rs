//! The admin key: from a file or a value, or generated into the embedded default's data dir.
//! Held as a digest and compared in constant time.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

use super::{ADMIN_KEY_PREFIX, Credential, generate_secret};

/// Shortest admin key accepted.
pub const MIN_ADMIN_KEY_LEN: usize = 32;

/// The configured admin key.
#[derive(Clone)]
pub struct AdminKey {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(<redacted>)")
    }
}

/// What the admin key's errors call it.
const ADMIN_KEY: &str = "admin key";

/// Why no admin key could be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminKeyError {
    #[error("the admin key must be at least {MIN_ADMIN_KEY_LEN} characters")]
    TooShort,
    #[error(
        "no admin key: with an external database set --admin-key-file / CHATLEDGER_ADMIN_KEY_FILE \
         (or --admin-key / CHATLEDGER_ADMIN_KEY) to a secret of at least {MIN_ADMIN_KEY_LEN} characters, \
         e.g. `openssl rand -hex 32 > admin.key`"
    )]
    Missing,
    #[error("cannot use {what} file {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(
        "refusing {what} file {path}: {problem}, so someone else could replace the key; \
         fix it with `{fix}`"
    )]
    Unsafe {
        what: &'static str,
        path: String,
        problem: String,
        fix: String,
    },
}

/// Refuses a secret's file that someone other than this account could have written: one
/// writable by its group or by everyone, or owned by another user. Readable by a group is fine
/// (a container's secret mount often is).
pub fn check_secret_file(path: &Path, what: &'static str) -> Result<(), AdminKeyError> {
    use std::os::unix::fs::MetadataExt;
    let display = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| AdminKeyError::File {
        what,
        path: display.clone(),
        source,
    })?;
    let euid = nix::unistd::Uid::effective().as_raw();
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(AdminKeyError::Unsafe {
            what,
            problem: format!(
                "it is owned by uid {}, not by this process (uid {euid})",
                meta.uid()
            ),
            fix: format!("chown {euid} {display}"),
            path: display,
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(AdminKeyError::Unsafe {
            what,
            problem: format!("its mode {:o} lets others write it", meta.mode() & 0o777),
            fix: format!("chmod go-w {display}"),
            path: display,
        });
    }
    Ok(())
}

impl AdminKey {
    pub fn new(secret: &str) -> Result<Self, AdminKeyError> {
        let secret = secret.trim();
        if secret.chars().count() < MIN_ADMIN_KEY_LEN {
            return Err(AdminKeyError::TooShort);
        }
        Ok(Self {
            digest: *Credential::from_secret(secret).digest(),
        })
    }

    pub fn matches(&self, credential: &Credential) -> bool {
        self.digest.ct_eq(credential.digest()).into()
    }

    /// The admin key from a file or a value; else, for the embedded default only, the one in
    /// `<data-dir>/admin.key`, generated (mode 0600) on first start. Returns the key and, when
    /// it was generated now, the file it was written to.
    pub fn load(
        file: Option<&Path>,
        value: Option<&str>,
        embedded_data_dir: Option<&Path>,
    ) -> Result<(Self, Option<PathBuf>), AdminKeyError> {
        let read = |path: &Path| {
            check_secret_file(path, ADMIN_KEY)?;
            std::fs::read_to_string(path).map_err(|source| AdminKeyError::File {
                what: ADMIN_KEY,
                path: path.display().to_string(),
                source,
            })
        };
        if let Some(path) = file {
            return Ok((Self::new(&read(path)?)?, None));
        }
        if let Some(value) = value {
            return Ok((Self::new(value)?, None));
        }
        let data_dir = embedded_data_dir.ok_or(AdminKeyError::Missing)?;
        let path = data_dir.join("admin.key");
        if path.exists() {
            return Ok((Self::new(&read(&path)?)?, None));
        }
        let secret = generate_secret(ADMIN_KEY_PREFIX);
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all(secret.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        };
        write().map_err(|source| AdminKeyError::File {
            what: ADMIN_KEY,
            path: path.display().to_string(),
            source,
        })?;
        Ok((Self::new(&secret)?, Some(path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_key_is_long_and_matched_by_digest() {
        assert!(matches!(
            AdminKey::new("short"),
            Err(AdminKeyError::TooShort)
        ));
        let admin = AdminKey::new(&"a".repeat(32)).expect("long enough");
        assert!(admin.matches(&Credential::from_secret(&"a".repeat(32))));
        assert!(!admin.matches(&Credential::from_secret(&"a".repeat(33))));
        assert_eq!(format!("{admin:?}"), "AdminKey(<redacted>)");
    }

    #[test]
    fn a_generated_admin_key_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("chatledger-admin-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (first, written) = AdminKey::load(None, None, Some(&dir)).expect("generated");
        let path = written.expect("written on first start");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (second, written_again) = AdminKey::load(None, None, Some(&dir)).expect("reused");
        assert!(written_again.is_none());
        assert_eq!(first.digest, second.digest);
        assert!(matches!(
            AdminKey::load(None, None, None),
            Err(AdminKeyError::Missing)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_file_others_could_write_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("chatledger-keyfile-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("admin.key");
        std::fs::write(&path, "k".repeat(40)).expect("write");
        for (mode, refused) in [
            (0o666, true),
            (0o620, true),
            (0o602, true),
            (0o640, false),
            (0o600, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let loaded = AdminKey::load(Some(&path), None, None);
            match loaded {
                Err(AdminKeyError::Unsafe { fix, .. }) => {
                    assert!(refused, "{mode:o} refused");
                    assert!(fix.starts_with("chmod go-w"), "{fix}");
                }
                Ok(_) => assert!(!refused, "{mode:o} accepted"),
                Err(other) => panic!("{mode:o}: {other}"),
            }
        }
        // An existing generated key in the data dir is checked the same way.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(matches!(
            AdminKey::load(None, None, Some(&dir)),
            Err(AdminKeyError::Unsafe { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
