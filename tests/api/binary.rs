//! The real binary on its embedded default: first start initialises a private cluster, a restart
//! finds everything again, SIGTERM shuts down gracefully with exit status 0.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

struct Server {
    child: Child,
    address: String,
}

/// Starts `chatledger serve` on port 0 with its embedded cluster in `data_dir`, and waits for the
/// line that says where it listens.
async fn start(data_dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatledger"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chatledger starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let address = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.expect("read log") {
            let Ok(record) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if record["fields"]["message"] == "chatledger listening" {
                return record["fields"]["address"]
                    .as_str()
                    .expect("address")
                    .to_owned();
            }
        }
        panic!("chatledger exited before listening");
    })
    .await
    .expect("chatledger listens within two minutes");
    // Keep draining the log so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server {
        child,
        address: format!("http://{address}"),
    }
}

impl Server {
    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("exits")
            .expect("status")
    }
}

#[tokio::test]
async fn the_embedded_default_keeps_data_across_restarts_and_stops_cleanly() {
    let data_dir =
        std::env::temp_dir().join(format!("chatledger-binary-{:016x}", rand::random::<u64>()));
    let client = reqwest::Client::new();

    let server = start(&data_dir).await;
    assert!(
        data_dir.join("pg").join("PG_VERSION").exists(),
        "a private cluster lives in <data-dir>/pg"
    );
    let admin_key_file = data_dir.join("admin.key");
    let mode = std::fs::metadata(&admin_key_file)
        .expect("admin.key generated")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let admin_key = std::fs::read_to_string(&admin_key_file)
        .expect("admin key")
        .trim()
        .to_owned();
    let tenant = client
        .post(format!("{}/v1/admin/tenants", server.address))
        .bearer_auth(&admin_key)
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .expect("create tenant");
    assert_eq!(tenant.status(), 201);
    let key: Value = client
        .post(format!("{}/v1/admin/keys", server.address))
        .bearer_auth(&admin_key)
        .json(&json!({"tenant": "acme", "role": "writer", "label": "support-bot"}))
        .send()
        .await
        .expect("create key")
        .json()
        .await
        .expect("json");
    let key = key["key"].as_str().expect("key").to_owned();
    let response = client
        .post(format!("{}/v1/sessions/user-42/messages", server.address))
        .bearer_auth(&key)
        .json(&json!({"messages": [{"role": "user", "content": "My order number is 8892"}]}))
        .send()
        .await
        .expect("append");
    assert_eq!(response.status(), 201);
    let receipt: Value = response.json().await.expect("json");
    assert!(server.terminate().await.success(), "SIGTERM exits 0");
    assert!(
        !data_dir.join("pg").join("postmaster.pid").exists(),
        "the cluster was stopped with the server"
    );

    let server = start(&data_dir).await;
    let summary: Value = client
        .get(format!("{}/v1/sessions/user-42", server.address))
        .bearer_auth(&key)
        .send()
        .await
        .expect("summary")
        .json()
        .await
        .expect("json");
    assert_eq!(summary["last_seq"], 1);
    assert_eq!(summary["head_hash"], receipt["head_hash"]);
    assert!(server.terminate().await.success());

    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Starts `chatledger serve` on an external database (a test database) with an admin key file.
async fn start_external(database: &crate::helpers::TestDatabase, admin_key_file: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatledger"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--admin-key-file")
        .arg(admin_key_file)
        .env("DATABASE_URL", &database.owner_url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chatledger starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let address = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read log") {
            let Ok(record) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if record["fields"]["message"] == "chatledger listening" {
                return record["fields"]["address"]
                    .as_str()
                    .expect("address")
                    .to_owned();
            }
        }
        panic!("chatledger exited before listening");
    })
    .await
    .expect("chatledger listens");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server {
        child,
        address: format!("http://{address}"),
    }
}

/// Peak resident memory of a process so far, in bytes.
fn peak_rss(pid: u32) -> u64 {
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

#[tokio::test]
async fn a_large_export_streams_in_constant_memory() {
    let database = crate::helpers::TestDatabase::new().await;
    let admin_key_file =
        std::env::temp_dir().join(format!("chatledger-admin-{:016x}", rand::random::<u64>()));
    std::fs::write(&admin_key_file, crate::helpers::ADMIN_KEY).expect("admin key file");
    let server = start_external(&database, &admin_key_file).await;
    let client = reqwest::Client::new();

    // 10,000 entries of 4 KiB: an export of about 45 MB.
    let text = "x".repeat(4096);
    let batch: Vec<Value> = (0..100)
        .map(|_| json!({"role": "user", "content": text}))
        .collect();
    let body = serde_json::to_vec(&json!({"messages": batch})).expect("json");
    for _ in 0..100 {
        let response = client
            .post(format!("{}/v1/sessions/big/messages", server.address))
            .bearer_auth(&database.writer_key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("append");
        assert_eq!(response.status(), 201);
    }
    let pid = server.child.id().expect("running");
    let before = peak_rss(pid);

    let mut response = client
        .get(format!("{}/v1/sessions/big/export", server.address))
        .bearer_auth(&database.auditor_key)
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), 200);
    let export_path = std::env::temp_dir().join(format!(
        "chatledger-big-{:016x}.ndjson",
        rand::random::<u64>()
    ));
    let mut file = std::fs::File::create(&export_path).expect("export file");
    let mut exported = 0_u64;
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        exported += chunk.len() as u64;
        std::io::Write::write_all(&mut file, &chunk).expect("write");
    }
    let growth = peak_rss(pid).saturating_sub(before);
    println!(
        "exported {exported} bytes; server peak RSS {before} -> {} bytes (+{growth})",
        peak_rss(pid)
    );
    assert!(
        exported > 40_000_000,
        "the export holds every entry: {exported} bytes"
    );
    assert!(
        growth < exported / 4,
        "the server's peak memory grew by {growth} bytes for a {exported}-byte export"
    );

    let verdict = std::process::Command::new(env!("CARGO_BIN_EXE_chatledger"))
        .arg("verify-export")
        .arg(&export_path)
        .output()
        .expect("verify-export runs");
    assert_eq!(
        verdict.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verdict.stdout)
    );
    assert!(server.terminate().await.success());
    let _ = std::fs::remove_file(&export_path);
    let _ = std::fs::remove_file(&admin_key_file);
}
