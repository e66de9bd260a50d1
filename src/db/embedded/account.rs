//! The OS account that runs the cluster: the current one, or `postgres` when running as root
//! (PostgreSQL refuses to run as root).

use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;
use std::process::Stdio;

use nix::unistd::{Gid, Uid, User};
use tokio::process::Command;

use super::process::spawn_output;
use super::{CLUSTER_ACCOUNT, EmbeddedError, io_error};

/// The OS account that runs initdb, pg_ctl and so the server.
#[derive(Debug)]
pub(super) struct Account {
    pub(super) name: String,
    pub(super) uid: Uid,
    gid: Gid,
    /// True when running as root: everything PostgreSQL touches is handed to `uid`.
    pub(super) switches_user: bool,
}

impl Account {
    pub(super) fn resolve() -> Result<Account, EmbeddedError> {
        let euid = Uid::effective();
        if euid.is_root() {
            let user = User::from_name(CLUSTER_ACCOUNT)
                .map_err(|source| EmbeddedError::AccountLookup {
                    name: CLUSTER_ACCOUNT.to_owned(),
                    source,
                })?
                .ok_or(EmbeddedError::NoClusterAccount)?;
            return Ok(Account {
                name: user.name,
                uid: user.uid,
                gid: user.gid,
                switches_user: true,
            });
        }
        let name = match User::from_uid(euid) {
            Ok(Some(user)) => user.name,
            _ => euid.to_string(),
        };
        Ok(Account {
            name,
            uid: euid,
            gid: Gid::effective(),
            switches_user: false,
        })
    }

    /// A command run as this account, from `/`, with a minimal environment: the postmaster
    /// inherits it, and must not see chatledger's secrets or its working directory.
    pub(super) fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for key in ["PATH", "TZ"] {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        if self.switches_user {
            cmd.uid(self.uid.as_raw()).gid(self.gid.as_raw());
        }
        cmd
    }

    /// Hands a directory this process created to the account (a link put in its place is not
    /// followed).
    pub(super) fn give(&self, path: &Path) -> Result<(), EmbeddedError> {
        if self.switches_user {
            std::os::unix::fs::lchown(path, Some(self.uid.as_raw()), Some(self.gid.as_raw()))
                .map_err(|source| io_error("change owner of", path, source))?;
        }
        Ok(())
    }

    /// Hands a file this process opened to the account, by its descriptor: a path could have
    /// been swapped for a link meanwhile by whoever owns the directory.
    pub(super) fn give_open(&self, file: &File, path: &Path) -> Result<(), EmbeddedError> {
        if self.switches_user {
            std::os::unix::fs::fchown(file, Some(self.uid.as_raw()), Some(self.gid.as_raw()))
                .map_err(|source| io_error("change owner of", path, source))?;
        }
        Ok(())
    }

    async fn can_enter(&self, dir: &Path) -> Result<bool, EmbeddedError> {
        let mut cmd = self.command("/bin/sh");
        cmd.args(["-c", "cd -- \"$1\"", "sh"]).arg(dir);
        Ok(spawn_output(&mut cmd).await?.status.success())
    }

    /// Asks the kernel (by trying as that account) rather than reading mode bits, so ACLs
    /// and group memberships count.
    pub(super) async fn check_reachable(
        &self,
        parent: &Path,
        target: &Path,
    ) -> Result<(), EmbeddedError> {
        if self.can_enter(parent).await? {
            return Ok(());
        }
        let mut blocking = parent.to_path_buf();
        let ancestors: Vec<&Path> = parent.ancestors().collect();
        for dir in ancestors.into_iter().rev() {
            if !self.can_enter(dir).await? {
                blocking = dir.to_path_buf();
                break;
            }
        }
        Err(EmbeddedError::Unreachable {
            user: self.name.clone(),
            target: target.to_path_buf(),
            blocking,
        })
    }
}
