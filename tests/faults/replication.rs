//! Two throwaway PostgreSQL clusters on this machine with streaming replication: a primary and
//! a standby made with `pg_basebackup -R` on a replication slot, each on its own unix socket
//! (no TCP). The standby is synchronous (`synchronous_standby_names`, `synchronous_commit = on`)
//! or asynchronous. As root, PostgreSQL runs as the `postgres` account (as scripts/cluster.sh
//! and the embedded cluster do).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::testbin::TempDir;
use crate::testpg::{ClusterGuard, bin_dir, pg_ctl, tool};

/// The database chatledger uses, owned by a role that is not a superuser.
pub const DATABASE: &str = "chatledger";
pub const OWNER: &str = "chatledger_owner";
const SLOT: &str = "standby1";

/// One cluster of the pair.
pub struct Node {
    pub data: PathBuf,
    pub socket: PathBuf,
    pub port: u16,
    _guard: ClusterGuard,
}

impl Node {
    /// `postgres://ROLE@localhost/DATABASE?host=SOCKET&port=PORT`.
    pub fn url(&self, role: &str, database: &str) -> String {
        format!(
            "postgres://{role}@localhost/{database}?host={}&port={}",
            self.socket.display(),
            self.port
        )
    }

    /// A small pool as the superuser on `database`.
    pub async fn superuser(&self, database: &str) -> PgPool {
        let options =
            PgConnectOptions::from_str(&self.url("postgres", database)).expect("node URL parses");
        PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .expect("superuser connects")
    }

    /// The postmaster's process id, from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> i32 {
        let pid =
            std::fs::read_to_string(self.data.join("postmaster.pid")).expect("postmaster.pid");
        pid.lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .expect("a pid on the first line")
    }
}

/// A primary and its standby.
pub struct Pair {
    pub primary: Node,
    pub standby: Node,
    /// chatledger's URL naming both hosts, primary first (libpq's `?host=...&port=...` form).
    pub url: String,
    _dir: TempDir,
}

/// A program of the same installation as the server's `pg_ctl` (which may be a link into it), else
/// the first in `$PATH`.
fn server_tool(name: &str) -> PathBuf {
    bin_dir()
        .and_then(|dir| std::fs::canonicalize(dir.join("pg_ctl")).ok())
        .and_then(|pg_ctl| pg_ctl.parent().map(|dir| dir.join(name)))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| tool(name))
}

fn as_cluster_account(program: &Path) -> std::process::Command {
    let mut command = if nix::unistd::Uid::effective().is_root() {
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        std::process::Command::new(program)
    };
    command.current_dir("/").stdin(Stdio::null());
    command
}

async fn run(mut command: std::process::Command, what: &str) {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let output = tokio::process::Command::from(command)
        .output()
        .await
        .unwrap_or_else(|error| panic!("{what} runs: {error}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A directory the cluster's account owns, mode 0700.
fn owned_dir(path: &Path) {
    std::fs::create_dir(path).expect("create cluster dir");
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    if nix::unistd::Uid::effective().is_root() {
        let account = nix::unistd::User::from_name("postgres")
            .expect("passwd lookup")
            .expect("running as root, a `postgres` account runs PostgreSQL");
        nix::unistd::chown(path, Some(account.uid), Some(account.gid)).expect("chown");
    }
}

/// Appends settings to a cluster's postgresql.conf, as its account.
async fn configure(data: &Path, settings: &[(&str, String)]) {
    let mut text = String::from("\n# tests/faults/replication.rs\n");
    for (name, value) in settings {
        text.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
    }
    let mut command = as_cluster_account(Path::new("/bin/sh"));
    command
        .args(["-c", "cat >>\"$1\"", "sh"])
        .arg(data.join("postgresql.conf"))
        .stdin(Stdio::piped());
    let mut child = tokio::process::Command::from(command)
        .spawn()
        .expect("sh runs");
    let mut stdin = child.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, text.as_bytes())
        .await
        .expect("write settings");
    drop(stdin);
    assert!(child.wait().await.expect("sh exits").success());
}

async fn start(data: &Path, log: &Path) {
    let log = log.to_str().expect("UTF-8 path");
    run(
        pg_ctl(data, &["-l", log, "-w", "-t", "60", "start"]),
        "pg_ctl start",
    )
    .await;
}

/// Polls `query` (one boolean) on `pool` until it is true, within `deadline`.
pub async fn wait_until(pool: &PgPool, query: &str, deadline: Duration, what: &str) {
    let started = Instant::now();
    loop {
        let done: Option<bool> = sqlx::query_scalar(query).fetch_one(pool).await.ok();
        if done == Some(true) {
            return;
        }
        assert!(started.elapsed() < deadline, "{what} within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Pair {
    /// Starts a primary, its standby streaming from a slot, and (if `synchronous`) makes the
    /// standby synchronous; returns once the standby streams (in `sync` state if asked).
    pub async fn start(label: &str, synchronous: bool) -> Self {
        let dir = TempDir::new(label);
        let path = dir.path().to_owned();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o711))
            .expect("chmod");
        for name in ["primary", "standby", "s1", "s2", "log"] {
            owned_dir(&path.join(name));
        }
        let primary_data = path.join("primary");
        let standby_data = path.join("standby");
        let primary_guard = ClusterGuard(primary_data.clone());
        let standby_guard = ClusterGuard(standby_data.clone());

        let mut initdb = as_cluster_account(&tool("initdb"));
        initdb.arg("-D").arg(&primary_data).args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=reject",
            "--encoding=UTF8",
            "--locale=C",
            "--lc-ctype=C.UTF-8",
            "--no-sync",
        ]);
        run(initdb, "initdb").await;
        // Process kills, not machine crashes, are what the fault tests inject: the kernel keeps
        // written pages, so fsync adds only cost here.
        configure(
            &primary_data,
            &[
                ("listen_addresses", String::new()),
                (
                    "unix_socket_directories",
                    path.join("s1").display().to_string(),
                ),
                ("port", "5432".into()),
                ("fsync", "off".into()),
                ("wal_level", "replica".into()),
                ("max_wal_senders", "4".into()),
                ("max_connections", "100".into()),
            ],
        )
        .await;
        start(&primary_data, &path.join("log/primary.log")).await;
        let primary = Node {
            data: primary_data,
            socket: path.join("s1"),
            port: 5432,
            _guard: primary_guard,
        };
        let admin = primary.superuser("postgres").await;
        for statement in [
            format!("CREATE ROLE {OWNER} LOGIN CREATEDB CREATEROLE"),
            format!("CREATE DATABASE {DATABASE} OWNER {OWNER}"),
            format!("SELECT pg_create_physical_replication_slot('{SLOT}')"),
        ] {
            sqlx::query(&statement)
                .execute(&admin)
                .await
                .expect("set up the primary");
        }

        // The standby: a base backup that writes standby.signal and primary_conninfo (-R) and
        // streams from the slot, on its own socket; after a promotion it has no standby of its
        // own, so it must not wait for one.
        let mut basebackup = as_cluster_account(&server_tool("pg_basebackup"));
        basebackup
            .arg("-D")
            .arg(&standby_data)
            .arg("-h")
            .arg(&primary.socket)
            // A fast checkpoint: the default spread one waits most of checkpoint_timeout.
            .args([
                "-p", "5432", "-U", "postgres", "-R", "-S", SLOT, "-X", "stream", "-c", "fast",
            ]);
        run(basebackup, "pg_basebackup").await;
        configure(
            &standby_data,
            &[
                (
                    "unix_socket_directories",
                    path.join("s2").display().to_string(),
                ),
                ("port", "5433".into()),
                ("cluster_name", SLOT.into()),
                ("synchronous_standby_names", String::new()),
                ("hot_standby", "on".into()),
                // How soon the standby tries again for WAL, and so notices a promotion request
                // after its primary died (default 5 s).
                ("wal_retrieve_retry_interval", "200ms".into()),
            ],
        )
        .await;
        start(&standby_data, &path.join("log/standby.log")).await;
        let standby = Node {
            data: standby_data,
            socket: path.join("s2"),
            port: 5433,
            _guard: standby_guard,
        };
        wait_until(
            &admin,
            &format!(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_replication
                                 WHERE application_name = '{SLOT}' AND state = 'streaming')"
            ),
            Duration::from_secs(30),
            "the standby streams",
        )
        .await;
        if synchronous {
            for statement in [
                format!("ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 ({SLOT})'"),
                "ALTER SYSTEM SET synchronous_commit = 'on'".to_owned(),
                "SELECT pg_reload_conf()".to_owned(),
            ] {
                sqlx::query(&statement)
                    .execute(&admin)
                    .await
                    .expect("make the standby synchronous");
            }
            wait_until(
                &admin,
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_replication
                                     WHERE application_name = '{SLOT}' AND sync_state = 'sync')"
                ),
                Duration::from_secs(30),
                "the standby is synchronous",
            )
            .await;
        }
        admin.close().await;
        let url = format!(
            "postgres://{OWNER}@localhost/{DATABASE}?host={},{}&port={},{}",
            primary.socket.display(),
            standby.socket.display(),
            primary.port,
            standby.port
        );
        Pair {
            primary,
            standby,
            url,
            _dir: dir,
        }
    }

    /// `pg_ctl promote` of the standby, waiting until it accepts writes.
    pub async fn promote(&self) {
        run(
            pg_ctl(&self.standby.data, &["promote", "-w", "-t", "60"]),
            "pg_ctl promote",
        )
        .await;
    }

    /// The primary's WAL sender to the standby (to pause it: a standby falling behind).
    pub async fn wal_sender_pid(&self) -> i32 {
        let pool = self.primary.superuser("postgres").await;
        let pid: i32 = sqlx::query_scalar(&format!(
            "SELECT pid FROM pg_stat_replication WHERE application_name = '{SLOT}'"
        ))
        .fetch_one(&pool)
        .await
        .expect("the primary has a WAL sender");
        pool.close().await;
        pid
    }
}
