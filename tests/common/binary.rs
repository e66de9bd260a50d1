//! The real `chatledger` binary as a child process, shared by the test binaries
//! (`#[path]`-included, so each uses only part of it): `serve` on an external database or on its
//! embedded cluster, started on port 0 or on a given port (again after a SIGKILL), its log kept
//! while it runs, stopped with SIGTERM or SIGKILL; one-shot command-line runs; temp dirs.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The binary cargo built for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_chatledger");

/// How long a server may take to listen (an embedded first start runs initdb).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(120);

/// How many of the last log lines [`Logs::tail`] shows.
const TAIL_LINES: usize = 30;

/// A private directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("chatledger-{label}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to the file `name` in this directory and returns its path.
    pub fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }

    /// A file holding `key`, for `--admin-key-file`.
    pub fn admin_key_file(&self, key: &str) -> PathBuf {
        self.file("admin.key", key)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a server keeps its data.
#[derive(Debug, Clone)]
pub enum Store {
    /// An external database (an owner URL) and the admin key file that goes with it.
    External {
        url: String,
        admin_key_file: PathBuf,
    },
    /// The embedded cluster in a data directory (DATABASE_URL removed from the environment).
    Embedded { data_dir: PathBuf },
}

/// The servers' log lines, shared across restarts: a short tail, a count of ERROR lines and,
/// when asked for, every line.
#[derive(Default)]
pub struct Logs {
    tail: Mutex<VecDeque<String>>,
    errors: AtomicUsize,
    every_line: Option<Mutex<Vec<String>>>,
}

impl Logs {
    /// Logs that also keep every line, for tests that read the whole log.
    pub fn keeping_every_line() -> Self {
        Self {
            every_line: Some(Mutex::default()),
            ..Self::default()
        }
    }

    fn push(&self, line: String) {
        if serde_json::from_str::<Value>(&line).is_ok_and(|record| record["level"] == "ERROR") {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(every_line) = &self.every_line {
            every_line.lock().expect("log").push(line.clone());
        }
        let mut tail = self.tail.lock().expect("log tail");
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }

    /// ERROR lines logged so far (each 5xx is logged once).
    pub fn errors(&self) -> usize {
        self.errors.load(Ordering::Relaxed)
    }

    /// The last lines, for failure messages.
    pub fn tail(&self) -> String {
        let tail = self.tail.lock().expect("log tail");
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Every line so far; only for [`Logs::keeping_every_line`].
    pub fn lines(&self) -> Vec<String> {
        self.every_line
            .as_ref()
            .expect("Logs::keeping_every_line")
            .lock()
            .expect("log")
            .clone()
    }
}

/// `chatledger serve`, running.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    pub port: u16,
}

impl Server {
    /// Starts `chatledger serve` with JSON logs on 127.0.0.1:`port` (0: any free port), plus
    /// `extra` flags, and waits until it listens. A server that exits first (for example because
    /// the port is still taken) is an error carrying the end of its log.
    pub async fn start(
        store: &Store,
        port: u16,
        extra: &[&str],
        logs: &Arc<Logs>,
    ) -> Result<Self, String> {
        Self::start_through(&[], store, port, extra, logs).await
    }

    /// [`Server::start`], the binary run by `wrapper` (a program and its first arguments, which
    /// must `exec` the rest: `sh -c '...; exec "$@"' sh`, say); empty for none.
    pub async fn start_through(
        wrapper: &[&str],
        store: &Store,
        port: u16,
        extra: &[&str],
        logs: &Arc<Logs>,
    ) -> Result<Self, String> {
        let mut command = match wrapper.split_first() {
            Some((program, arguments)) => {
                let mut command = Command::new(program);
                command.args(arguments).arg(BIN);
                command
            }
            None => Command::new(BIN),
        };
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--log-format", "json"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match store {
            Store::External {
                url,
                admin_key_file,
            } => command
                .env("DATABASE_URL", url)
                .arg("--admin-key-file")
                .arg(admin_key_file),
            Store::Embedded { data_dir } => command
                .env_remove("DATABASE_URL")
                .arg("--data-dir")
                .arg(data_dir),
        };
        let mut child = command.spawn().map_err(|error| format!("spawn: {error}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let listening = tokio::time::timeout(LISTEN_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let address = serde_json::from_str::<Value>(&line)
                    .ok()
                    .filter(|record| record["fields"]["message"] == "chatledger listening")
                    .and_then(|record| record["fields"]["address"].as_str().map(str::to_owned));
                logs.push(line);
                if address.is_some() {
                    return address;
                }
            }
            None
        })
        .await;
        let Ok(Some(address)) = listening else {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(format!(
                "chatledger did not listen; its log ends with:\n{}",
                logs.tail()
            ));
        };
        // Keep draining the log so that the server never blocks on a full pipe.
        let drain = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                drain.push(line);
            }
        });
        let port = address
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .ok_or_else(|| format!("no port in {address}"))?;
        Ok(Self {
            child,
            address: format!("http://{address}"),
            port,
        })
    }

    /// Starts on exactly `port`, retrying (bounded) while a killed predecessor still holds it.
    pub async fn start_on(store: &Store, port: u16, extra: &[&str], logs: &Arc<Logs>) -> Self {
        let mut last_error = String::new();
        for _ in 0..20 {
            match Self::start(store, port, extra, logs).await {
                Ok(server) => return server,
                Err(error) => last_error = error,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chatledger could not start on port {port}: {last_error}");
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id().expect("server still running")
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.id() as i32)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL: no shutdown at all, in-flight requests cut off.
    pub async fn kill(mut self) {
        kill(self.pid(), Signal::SIGKILL).expect("SIGKILL");
        self.child.wait().await.expect("killed server reaped");
    }

    /// SIGTERM, then the exit status (bounded wait).
    pub async fn terminate(mut self) -> ExitStatus {
        kill(self.pid(), Signal::SIGTERM).expect("SIGTERM");
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the server exits within a minute of SIGTERM")
            .expect("exit status")
    }
}

/// A port that was free a moment ago, for a server that must come back on the same address.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}

/// Peak resident memory of a process so far, in bytes (VmHWM).
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .expect("kB");
    kib * 1024
}

/// Runs one `chatledger` command to its end: `stdin` fed to it (else an empty stdin), its
/// DATABASE_URL set to `database_url` or removed. Returns the exit code (-1 for a signal) and
/// stdout.
pub fn run_cli(args: &[&str], stdin: Option<&str>, database_url: Option<&str>) -> (i32, String) {
    let mut command = std::process::Command::new(BIN);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match database_url {
        Some(url) => command.env("DATABASE_URL", url),
        None => command.env_remove("DATABASE_URL"),
    };
    let mut child = command.spawn().expect("chatledger runs");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).expect("stdin");
    }
    let output = child.wait_with_output().expect("exits");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}
