//! Files of the embedded cluster. Run as root, chatledger creates, writes and reads files inside
//! a directory the cluster account owns, which that account could fill with links: every such
//! file is opened without following a link and handed over by its descriptor.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::account::Account;
use super::{EmbeddedError, MAX_SOCKET_PATH, SOCKET_FILE, io_error};

/// Creates `data_dir` (each missing component 0755) and returns its canonical path.
pub(super) fn prepare_data_dir(data_dir: &Path) -> Result<PathBuf, EmbeddedError> {
    let mut missing = Vec::new();
    let mut existing = data_dir;
    while !existing.as_os_str().is_empty() && fs::symlink_metadata(existing).is_err() {
        missing.push(existing);
        existing = existing.parent().unwrap_or(Path::new(""));
    }
    for dir in missing.into_iter().rev() {
        match DirBuilder::new().mode(0o755).create(dir) {
            Ok(()) => {
                // The umask may have narrowed the mode; the cluster account must traverse it.
                fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                    .map_err(|source| io_error("set permissions of", dir, source))?;
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(io_error("create directory", dir, source)),
        }
    }
    fs::canonicalize(data_dir).map_err(|source| io_error("resolve", data_dir, source))
}

/// Creates `dir` owned by the cluster account, or checks that an existing one is.
pub(super) fn ensure_owned_dir(
    dir: &Path,
    account: &Account,
    mode: u32,
) -> Result<(), EmbeddedError> {
    match DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => account.give(dir),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            let meta =
                fs::symlink_metadata(dir).map_err(|source| io_error("inspect", dir, source))?;
            if meta.is_dir() && meta.uid() == account.uid.as_raw() {
                Ok(())
            } else {
                Err(EmbeddedError::WrongOwner {
                    path: dir.to_path_buf(),
                    user: account.name.clone(),
                    expected: account.uid.as_raw(),
                    found: meta.uid(),
                })
            }
        }
        Err(source) => Err(io_error("create directory", dir, source)),
    }
}

/// The fallback socket directory lives in world-writable /tmp, so an existing one is only
/// used if it is a real directory owned by the cluster account.
pub(super) fn ensure_socket_dir(dir: &Path, account: &Account) -> Result<(), EmbeddedError> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return account.give(dir),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(io_error("create directory", dir, source)),
    }
    let meta = fs::symlink_metadata(dir).map_err(|source| io_error("inspect", dir, source))?;
    let problem = if meta.file_type().is_symlink() {
        "is a symbolic link".to_owned()
    } else if !meta.is_dir() {
        "is not a directory".to_owned()
    } else if meta.uid() != account.uid.as_raw() {
        format!("is owned by uid {}, not by `{}`", meta.uid(), account.name)
    } else {
        return Ok(());
    };
    Err(EmbeddedError::UnsafeSocketDir {
        path: dir.to_path_buf(),
        problem,
    })
}

/// `pg_dir` itself when its socket path fits the kernel limit, else a short directory in
/// /tmp derived from the cluster path.
pub(super) fn choose_socket_dir(pg_dir: &Path) -> PathBuf {
    if socket_path_fits(pg_dir) {
        return pg_dir.to_path_buf();
    }
    let digest = Sha256::digest(pg_dir.as_os_str().as_encoded_bytes());
    let hash = hex::encode(digest);
    PathBuf::from(format!("/tmp/chatledger-{}", &hash[..12]))
}

fn socket_path_fits(dir: &Path) -> bool {
    dir.as_os_str().len() + 1 + SOCKET_FILE.len() <= MAX_SOCKET_PATH
}

/// Paths end up in postgresql.conf and in a URL, so only plain UTF-8 is accepted.
pub(super) fn plain_str(path: &Path) -> Result<&str, EmbeddedError> {
    path.to_str()
        .filter(|s| !s.chars().any(char::is_control))
        .ok_or_else(|| EmbeddedError::UnsupportedPath(path.to_path_buf()))
}

/// Replaces `target` with a new file of `contents`, owned by the account: written to a fresh
/// temporary file (a link left in its name is removed, not followed), then renamed over it.
pub(super) fn replace_file(
    target: &Path,
    contents: &str,
    account: &Account,
) -> Result<(), EmbeddedError> {
    let mut temp_name = target.as_os_str().to_owned();
    temp_name.push(".tmp");
    let temp = PathBuf::from(temp_name);
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(io_error("remove leftover", &temp, source)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&temp)
        .map_err(|source| io_error("create", &temp, source))?;
    account.give_open(&file, &temp)?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error("write", &temp, source))?;
    fs::rename(&temp, target).map_err(|source| io_error("replace", target, source))
}

/// Opens an existing regular file without following a link.
pub(super) fn open_existing(path: &Path, append: bool) -> Result<File, EmbeddedError> {
    let file = OpenOptions::new()
        .read(true)
        .append(append)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| io_error("open", path, source))?;
    let meta = file
        .metadata()
        .map_err(|source| io_error("inspect", path, source))?;
    if !meta.is_file() {
        return Err(io_error(
            "open",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        ));
    }
    Ok(file)
}

/// The whole of a small file, read without following a link.
pub(super) fn read_to_string(path: &Path) -> Result<String, EmbeddedError> {
    let mut text = String::new();
    open_existing(path, false)?
        .read_to_string(&mut text)
        .map_err(|source| io_error("read", path, source))?;
    Ok(text)
}

/// Appends a line to an existing file without following a link.
pub(super) fn append_line(path: &Path, line: &str) -> Result<(), EmbeddedError> {
    writeln!(open_existing(path, true)?, "{line}")
        .map_err(|source| io_error("append to", path, source))
}

/// The last `lines` lines of a log, for an error message.
pub(super) fn log_tail(path: &Path, lines: usize) -> String {
    match read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(could not read it: {err})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_cluster_path_keeps_the_socket_in_the_cluster_directory() {
        let dir = Path::new("/var/lib/chatledger/pg");
        assert_eq!(choose_socket_dir(dir), dir);
    }

    #[test]
    fn socket_path_limit_is_exactly_107_bytes() {
        let longest = format!("/{}", "a".repeat(MAX_SOCKET_PATH - SOCKET_FILE.len() - 2));
        assert!(socket_path_fits(Path::new(&longest)));
        assert!(!socket_path_fits(Path::new(&format!("{longest}b"))));
    }

    #[test]
    fn long_cluster_path_falls_back_to_a_stable_short_directory() {
        let dir = PathBuf::from(format!("/srv/{}/pg", "deep/".repeat(30)));
        let chosen = choose_socket_dir(&dir);
        assert_eq!(chosen, choose_socket_dir(&dir));
        let chosen = chosen.to_string_lossy().into_owned();
        assert!(chosen.starts_with("/tmp/chatledger-"), "{chosen}");
        assert_eq!(chosen.len(), "/tmp/chatledger-".len() + 12);
        assert!(socket_path_fits(Path::new(&chosen)));
        assert_ne!(
            chosen,
            choose_socket_dir(&dir.join("other")).to_string_lossy()
        );
    }

    #[test]
    fn control_characters_in_paths_are_rejected() {
        assert!(plain_str(Path::new("/data/ok dir")).is_ok());
        assert!(matches!(
            plain_str(Path::new("/data/bad\ndir")),
            Err(EmbeddedError::UnsupportedPath(_))
        ));
    }

    #[test]
    fn files_in_the_cluster_directory_are_never_followed_through_a_planted_link() {
        let dir =
            std::env::temp_dir().join(format!("chatledger-links-{:016x}", rand::random::<u64>()));
        fs::create_dir(&dir).expect("temp dir");
        let victim = dir.join("victim");
        fs::write(&victim, "precious").expect("victim");
        let target = dir.join("chatledger.conf");
        std::os::unix::fs::symlink(&victim, dir.join("chatledger.conf.tmp")).expect("link");
        std::os::unix::fs::symlink(&victim, &target).expect("link");
        let account = Account::resolve().expect("an account to run the cluster as");

        replace_file(&target, "new settings", &account).expect("replaced");
        assert_eq!(fs::read_to_string(&victim).expect("victim"), "precious");
        let meta = fs::symlink_metadata(&target).expect("target");
        assert!(
            meta.is_file(),
            "the link was replaced by a file, not followed"
        );
        assert_eq!(meta.uid(), account.uid.as_raw());
        assert_eq!(fs::read_to_string(&target).expect("target"), "new settings");

        let link = dir.join("postgresql.conf");
        std::os::unix::fs::symlink(&victim, &link).expect("link");
        assert!(append_line(&link, "include 'x'").is_err());
        assert!(read_to_string(&link).is_err());
        assert!(log_tail(&link, 5).starts_with("(could not read it"));
        assert_eq!(fs::read_to_string(&victim).expect("victim"), "precious");
        let _ = fs::remove_dir_all(&dir);
    }
}
