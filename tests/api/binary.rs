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
