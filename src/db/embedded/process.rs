//! Process control of the embedded cluster: finding PostgreSQL's programs, initdb, pg_ctl, and
//! waiting for the server to accept connections.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions, Connection};
use tokio::process::Command;

use super::files::{ensure_owned_dir, log_tail};
use super::settings::{INITDB_ARGS, ensure_owner_and_database};
use super::{EmbeddedCluster, EmbeddedError, PORT, SUPERUSER, TIMEOUT, io_error};

impl EmbeddedCluster {
    /// Runs initdb in a staging directory and renames it into place, so an interrupted first
    /// start never leaves a half-initialised cluster behind.
    pub(super) async fn initdb(&self, data_dir: &Path) -> Result<(), EmbeddedError> {
        match fs::read_dir(&self.pg_dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(EmbeddedError::NotACluster(self.pg_dir.clone()));
                }
                fs::remove_dir(&self.pg_dir)
                    .map_err(|source| io_error("remove empty directory", &self.pg_dir, source))?;
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_error("read", &self.pg_dir, source)),
        }

        let staging = data_dir.join("pg.initdb");
        match fs::remove_dir_all(&staging) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_error("remove leftover", &staging, source)),
        }
        ensure_owned_dir(&staging, &self.account, 0o700)?;

        tracing::info!(data_dir = %self.pg_dir.display(), "initialising embedded PostgreSQL");
        let mut cmd = self.account.command(self.bin_dir.join("initdb"));
        cmd.arg("-D").arg(&staging).args(INITDB_ARGS);
        run_checked(cmd).await?;
        fs::rename(&staging, &self.pg_dir)
            .map_err(|source| io_error("rename into place", &staging, source))
    }

    pub(super) async fn is_running(&self) -> Result<bool, EmbeddedError> {
        let pid_file = self.pg_dir.join("postmaster.pid");
        match fs::symlink_metadata(&pid_file) {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(io_error("inspect", &pid_file, source)),
        }
        // Exit status 3 means "not running": the pid file is stale, and the postmaster
        // overwrites stale pid files itself on start.
        let mut cmd = self.pg_ctl_command(&["status"]);
        let output = spawn_output(&mut cmd).await?;
        Ok(output.status.success())
    }

    pub(super) async fn pg_ctl_start(&self) -> Result<(), EmbeddedError> {
        let log_path = self.pg_dir.join("log").join("postgres.log");
        let log = log_path.to_string_lossy();
        let timeout = TIMEOUT.as_secs().to_string();
        match self
            .pg_ctl(&["-l", &log, "-w", "-t", &timeout, "start"])
            .await
        {
            Ok(_) => Ok(()),
            Err(EmbeddedError::CommandFailed {
                command,
                status,
                output,
            }) => Err(EmbeddedError::CommandFailed {
                command,
                status,
                output: format!(
                    "{output}\nlast lines of {log}:\n{}",
                    log_tail(&log_path, 20)
                ),
            }),
            Err(err) => Err(err),
        }
    }

    fn pg_ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.account.command(self.bin_dir.join("pg_ctl"));
        cmd.arg("-D").arg(&self.pg_dir).args(args);
        cmd
    }

    pub(super) async fn pg_ctl(&self, args: &[&str]) -> Result<Output, EmbeddedError> {
        run_checked(self.pg_ctl_command(args)).await
    }

    /// Connects as the superuser, retrying while the server starts up; `None` once the
    /// postmaster turns out not to be running (checked about once a second).
    pub(super) async fn connect_superuser(&self) -> Result<Option<PgConnection>, EmbeddedError> {
        let options = PgConnectOptions::new_without_pgpass()
            .socket(&self.socket_dir)
            .port(PORT)
            .username(SUPERUSER)
            .database("postgres")
            .ssl_mode(PgSslMode::Disable)
            .application_name("chatledger-bootstrap")
            .disable_statement_logging();
        let deadline = Instant::now() + TIMEOUT;
        let mut next_liveness_check = Instant::now() + Duration::from_secs(1);
        loop {
            match PgConnection::connect_with(&options).await {
                Ok(conn) => return Ok(Some(conn)),
                Err(source) if Instant::now() >= deadline => {
                    return Err(EmbeddedError::NotAccepting {
                        data_dir: self.pg_dir.clone(),
                        socket_dir: self.socket_dir.clone(),
                        source,
                    });
                }
                Err(_) => {}
            }
            if Instant::now() >= next_liveness_check {
                if !self.is_running().await? {
                    return Ok(None);
                }
                next_liveness_check = Instant::now() + Duration::from_secs(1);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(super) async fn bootstrap(&self, conn: Option<PgConnection>) -> Result<(), EmbeddedError> {
        let mut conn = match conn {
            Some(conn) => conn,
            None => self
                .connect_superuser()
                .await?
                .ok_or_else(|| EmbeddedError::Exited(self.pg_dir.clone()))?,
        };
        let result = ensure_owner_and_database(&mut conn).await;
        if let Err(err) = conn.close().await {
            tracing::debug!(error = %err, "closing the bootstrap connection failed");
        }
        result.map_err(EmbeddedError::Bootstrap)
    }
}
/// Where `initdb` and `pg_ctl` live: `$PATH`, then `pg_config --bindir`, then the newest
/// `/usr/lib/postgresql/*/bin`.
pub(super) async fn find_bin_dir() -> Result<PathBuf, EmbeddedError> {
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|dir| has_server_binaries(dir))
    {
        return Ok(dir);
    }
    if let Ok(output) = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .await
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_server_binaries(&dir) {
            return Ok(dir);
        }
    }
    let versions = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned));
    newest_version(versions)
        .map(|version| Path::new("/usr/lib/postgresql").join(version).join("bin"))
        .filter(|dir| has_server_binaries(dir))
        .ok_or(EmbeddedError::BinariesNotFound)
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl"].iter().all(|name| {
        fs::metadata(dir.join(name))
            .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Picks the highest version among directory names like `9.6`, `15`, `16`.
fn newest_version(names: impl IntoIterator<Item = String>) -> Option<String> {
    names
        .into_iter()
        .filter_map(|name| {
            let version: Result<Vec<u32>, _> = name.split('.').map(str::parse).collect();
            version.ok().map(|version| (version, name))
        })
        .max()
        .map(|(_, name)| name)
}
pub(super) async fn spawn_output(cmd: &mut Command) -> Result<Output, EmbeddedError> {
    cmd.output().await.map_err(|source| EmbeddedError::Spawn {
        command: describe(cmd),
        source,
    })
}

pub(super) async fn run_checked(mut cmd: Command) -> Result<Output, EmbeddedError> {
    let output = spawn_output(&mut cmd).await?;
    if output.status.success() {
        return Ok(output);
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(EmbeddedError::CommandFailed {
        command: describe(&cmd),
        status: output.status,
        output: text.trim_end().to_owned(),
    })
}

fn describe(cmd: &Command) -> String {
    let std = cmd.as_std();
    std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_version_compares_numerically() {
        let names = ["9.6", "15", "12", "README", "16"].map(String::from);
        assert_eq!(newest_version(names).as_deref(), Some("16"));
        assert_eq!(newest_version(Vec::new()), None);
    }
}
