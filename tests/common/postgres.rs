//! PostgreSQL's own programs, for tests that drive a cluster or dump a database themselves:
//! shared by the test binaries (`#[path]`-included, so each uses only part of it). They are
//! found where the server finds its own (src/db/embedded.rs; scripts/postgres.sh for the shell):
//! `$PATH`, `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn has_server_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// The directory holding `initdb` and `pg_ctl`, if any.
pub fn bin_dir() -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| has_server_binaries(dir)));
    let from_pg_config = || {
        Command::new("pg_config")
            .arg("--bindir")
            .stdin(Stdio::null())
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
            .filter(|dir| has_server_binaries(dir))
    };
    let from_usr_lib = || {
        std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let version: Vec<u32> = name
                    .split('.')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .ok()?;
                Some((version, entry.path().join("bin")))
            })
            .filter(|(_, dir)| has_server_binaries(dir))
            .max()
            .map(|(_, dir)| dir)
    };
    from_path.or_else(from_pg_config).or_else(from_usr_lib)
}

/// A PostgreSQL program: the one beside the server's `pg_ctl`, else the first in `$PATH` (a
/// client-only installation has `pg_dump` but no server).
pub fn tool(name: &str) -> PathBuf {
    bin_dir()
        .map(|dir| dir.join(name))
        .filter(|path| path.is_file())
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
        .unwrap_or_else(|| panic!("PostgreSQL's {name} is installed"))
}

/// `pg_ctl -D pg_dir args...`, as the `postgres` account when running as root (as the embedded
/// cluster does), from `/`.
pub fn pg_ctl(pg_dir: &Path, args: &[&str]) -> Command {
    let pg_ctl = bin_dir()
        .expect("PostgreSQL's pg_ctl and initdb are installed")
        .join("pg_ctl");
    let mut command = if nix::unistd::Uid::effective().is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(pg_ctl);
        command
    } else {
        Command::new(pg_ctl)
    };
    command
        .arg("-D")
        .arg(pg_dir)
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null());
    command
}

/// Stops the cluster in its directory if a failing test leaves it running (a server killed on
/// drop would not stop its embedded cluster).
pub struct ClusterGuard(pub PathBuf);

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        if self.0.join("postmaster.pid").exists() {
            let _ = pg_ctl(&self.0, &["stop", "-m", "immediate", "-w"]).output();
        }
    }
}
