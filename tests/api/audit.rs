//! Audits: verify recomputes the chain and names the first break; exports verify offline, with
//! our verifier and with an independent one; tampering as a superuser is always caught.

use std::process::Command;
use std::str::FromStr;

use chatledger::ledger::hash::{EntryHeader, entry_hash, payload_digest};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use crate::helpers::{TestApp, assert_problem, json_ok};
use crate::testbin::run_cli;

impl TestApp {
    async fn verify(&self, session: &str) -> Value {
        let path = format!("/v1/sessions/{session}/verify");
        json_ok(
            self.request_as(Method::GET, &path, Some(&self.database.auditor_key))
                .send()
                .await
                .expect("sent"),
        )
        .await
    }

    async fn export(&self, session: &str) -> String {
        let path = format!("/v1/sessions/{session}/export");
        let response = self
            .request_as(Method::GET, &path, Some(&self.database.auditor_key))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/x-ndjson");
        response.text().await.expect("body")
    }

    /// What arrives of an export that may be cut short (a stream the server aborts).
    async fn export_received(&self, session: &str) -> String {
        let path = format!("/v1/sessions/{session}/export");
        let mut response = self
            .request_as(Method::GET, &path, Some(&self.database.auditor_key))
            .send()
            .await
            .expect("sent");
        let mut received = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            received.extend_from_slice(&chunk);
        }
        String::from_utf8(received).expect("utf-8")
    }

    /// A superuser connection to this test's database, with triggers off for the session.
    async fn superuser(&self) -> PgPool {
        let url = std::env::var("CHATLEDGER_TEST_SUPERUSER_URL")
            .expect("CHATLEDGER_TEST_SUPERUSER_URL is not set: run ./scripts/test.sh");
        let options = PgConnectOptions::from_str(&url)
            .expect("superuser URL")
            .database(self.database.owner.get_database().expect("database"))
            .options([("session_replication_role", "replica")]);
        PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("superuser connects")
    }

    /// A session of six messages (three turns, one sent with an idempotency key).
    async fn six(&self, session: &str) -> Value {
        self.append(session, &[("user", "q1"), ("assistant", "a1")])
            .await;
        let body = json!({"messages": [{"role": "user", "content": "q2", "metadata": {"n": 1.5}}, {"role": "assistant", "content": [{"type": "text", "text": "a2"}, "bare"]}]});
        let response = self
            .post_with_key(&format!("/v1/sessions/{session}/messages"), "turn-2", &body)
            .await;
        assert_eq!(response.status(), 201);
        self.append(session, &[("user", "q3"), ("assistant", "a3 ✓")])
            .await
    }
}

fn temp_file(contents: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "chatledger-export-{:016x}.ndjson",
        rand::random::<u64>()
    ));
    std::fs::write(&path, contents).expect("write export");
    path
}

pub(crate) fn verify_export(contents: &str, expect_head: Option<&str>) -> i32 {
    verify_export_printing(contents, expect_head).0
}

/// `chatledger verify-export` of `contents`: its exit status and what it printed.
pub(crate) fn verify_export_printing(contents: &str, expect_head: Option<&str>) -> (i32, String) {
    let path = temp_file(contents);
    let path_text = path.to_str().expect("utf-8 path");
    let mut args = vec!["verify-export", path_text];
    if let Some(head) = expect_head {
        args.extend(["--expect-head", head]);
    }
    let verdict = run_cli(&args, None, None);
    let _ = std::fs::remove_file(&path);
    verdict
}

pub(crate) fn independent_verifier(contents: &str, expect_head: Option<&str>) -> (i32, String) {
    let python = std::env::var("CHATLEDGER_TEST_PYTHON")
        .expect("CHATLEDGER_TEST_PYTHON is not set: run ./scripts/test.sh, which prepares it");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/independent/verify_export.py"
    );
    let path = temp_file(contents);
    let mut command = Command::new(python);
    command.arg(script).arg(&path);
    if let Some(head) = expect_head {
        command.arg(head);
    }
    let output = command.output().expect("python runs");
    let _ = std::fs::remove_file(&path);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn an_intact_session_verifies_and_its_export_verifies_offline_and_independently() {
    let app = TestApp::spawn().await;
    let first = app.six("audited").await;
    app.post_json(
        "/v1/sessions/audited/reset",
        &json!({"metadata": {"why": "topic"}}),
    )
    .await;
    let last = app
        .append(
            "audited",
            &[("user", "Grüße 👋 \u{2028} \"quoted\""), ("assistant", "")],
        )
        .await;

    let verdict = app.verify("audited").await;
    assert_eq!(
        verdict,
        json!({"ok": true, "verified_through_seq": 9, "head_hash": last["head_hash"], "erased_entries": 0})
    );

    let export = app.export("audited").await;
    let lines: Vec<Value> = export
        .lines()
        .map(|line| serde_json::from_str(line).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 10, "nine entries and a trailer");
    assert_eq!(lines[0]["tenant"], json!(app.database.tenant));
    assert_eq!(lines[0]["session_id"], "audited");
    assert_eq!(lines[6]["kind"], "context_reset");
    let trailer = &lines[9]["export_trailer"];
    assert_eq!(trailer["last_seq"], 9);
    assert_eq!(trailer["head_hash"], last["head_hash"]);
    assert_eq!(trailer["tenant"], json!(app.database.tenant));
    assert!(
        trailer["exported_at"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z') && at.len() == 27)
    );

    // Receipts: a head hash a client got from a 201, then and later.
    let early_receipt = first["head_hash"].as_str().expect("receipt");
    let late_receipt = last["head_hash"].as_str().expect("receipt");
    assert_eq!(verify_export(&export, None), 0);
    assert_eq!(verify_export(&export, Some(early_receipt)), 0);
    assert_eq!(verify_export(&export, Some(late_receipt)), 0);
    assert_eq!(
        verify_export(&export, Some(&"ab".repeat(32))),
        1,
        "a receipt the chain never reached"
    );
    for not_a_hash in ["zz", "abc", &"a".repeat(63), &"ab".repeat(33)] {
        assert_eq!(
            verify_export(&export, Some(not_a_hash)),
            2,
            "--expect-head {not_a_hash} is an error, not a broken export"
        );
    }
    assert_eq!(
        run_cli(&["verify-export", "-"], Some(&export), None).0,
        0,
        "reads standard input"
    );

    let (status, printed) = independent_verifier(&export, Some(early_receipt));
    assert_eq!(status, 0, "independent verifier: {printed}");
    let (status, _) = independent_verifier(&export.replacen("q2", "q9", 1), None);
    assert_eq!(status, 1, "the independent verifier can fail");
}

#[tokio::test]
async fn the_offline_verifier_fails_on_every_edit_that_matters_and_only_those() {
    let app = TestApp::spawn().await;
    app.six("offline").await;
    let export = app.export("offline").await;
    let lines: Vec<&str> = export.lines().collect();
    let join = |lines: &[&str]| {
        lines
            .iter()
            .map(|line| format!("{line}\n"))
            .collect::<String>()
    };

    // Reformatting JSON (key order, spacing) changes no value.
    let reformatted: String = lines
        .iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect("json");
            format!(
                "{}\n",
                serde_json::to_string_pretty(&value)
                    .expect("json")
                    .replace('\n', " ")
            )
        })
        .collect();
    assert_eq!(verify_export(&reformatted, None), 0);

    let edits: Vec<(&str, String)> = vec![
        ("content", export.replacen("\"q3\"", "\"Q3\"", 1)),
        ("metadata number", export.replacen("1.5", "1.25", 1)),
        (
            "role",
            export.replacen("\"role\":\"user\"", "\"role\":\"system\"", 1),
        ),
        ("idempotency key", export.replacen("turn-2", "turn-3", 1)),
        ("salt", {
            let salt = serde_json::from_str::<Value>(lines[1]).expect("json")["salt"]
                .as_str()
                .expect("salt")
                .to_owned();
            export.replacen(&salt, &format!("00{}", &salt[2..]), 1)
        }),
        ("created_at", {
            let at = serde_json::from_str::<Value>(lines[2]).expect("json")["created_at"]
                .as_str()
                .expect("at")
                .to_owned();
            export.replacen(&at, &at.replace("Z", "+00:00"), 1)
        }),
        (
            "a middle line removed",
            join(&[&lines[..2], &lines[3..]].concat()),
        ),
        (
            "two lines swapped",
            join(&[
                lines[0], lines[2], lines[1], lines[3], lines[4], lines[5], lines[6],
            ]),
        ),
        ("trailer removed (truncated)", join(&lines[..6])),
        ("last entry and trailer removed", join(&lines[..5])),
        (
            "trailer last_seq",
            export.replacen("\"last_seq\":6", "\"last_seq\":5", 1),
        ),
        (
            "a line after the trailer",
            format!("{export}{}\n", lines[0]),
        ),
        (
            "another session's line",
            export.replacen("\"session_id\":\"offline\"", "\"session_id\":\"other\"", 1),
        ),
    ];
    for (what, edited) in edits {
        assert_ne!(edited, export, "{what}: the edit applies");
        assert_eq!(verify_export(&edited, None), 1, "{what}");
    }
    assert_eq!(
        run_cli(&["verify-export", "/nonexistent/export.ndjson"], None, None).0,
        2,
        "unreadable"
    );
    assert_eq!(
        verify_export("this is not an export\n", None),
        2,
        "not an export at all"
    );
}

/// Six entries in a fresh session, then `tamper` as a superuser with triggers off.
async fn tampered(app: &TestApp, session: &str, tamper: &[&str]) {
    app.six(session).await;
    let superuser = app.superuser().await;
    for statement in tamper {
        let sql = statement.replace(
            "$SESSION",
            &format!("(SELECT id FROM sessions WHERE session_id = '{session}')"),
        );
        sqlx::query(&sql)
            .execute(&superuser)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
    }
}

#[tokio::test]
async fn tampering_as_a_superuser_is_detected_with_the_right_first_bad_seq() {
    let app = TestApp::spawn().await;
    let cases: Vec<(&str, Vec<&str>, i64, &str)> = vec![
        (
            "content",
            vec![
                "UPDATE entries SET content = '\"edited\"' WHERE session_pk = $SESSION AND seq = 3",
            ],
            3,
            "payload_digest_mismatch",
        ),
        (
            // Blanked as an erasure blanks, with no erasure entry to account for it: a message
            // removed without a trace of who did it or why.
            "erased-by-hand",
            vec![
                "UPDATE entries SET content = NULL, metadata = NULL, salt = NULL, erased_at = now() WHERE session_pk = $SESSION AND seq = 3",
            ],
            3,
            "payload_digest_mismatch",
        ),
        (
            "role",
            vec!["UPDATE entries SET role = 'system' WHERE session_pk = $SESSION AND seq = 4"],
            4,
            "hash_mismatch",
        ),
        (
            "created-at",
            vec![
                "UPDATE entries SET created_at = created_at + interval '1 second' WHERE session_pk = $SESSION AND seq = 2",
            ],
            2,
            "hash_mismatch",
        ),
        (
            "deleted-middle",
            vec!["DELETE FROM entries WHERE session_pk = $SESSION AND seq = 3"],
            3,
            "seq_gap",
        ),
        (
            "swapped-pair",
            vec![
                "UPDATE entries SET seq = 1003 WHERE session_pk = $SESSION AND seq = 3",
                "UPDATE entries SET seq = 3 WHERE session_pk = $SESSION AND seq = 4",
                "UPDATE entries SET seq = 4 WHERE session_pk = $SESSION AND seq = 1003",
            ],
            3,
            "prev_hash_mismatch",
        ),
        (
            "truncated-tail",
            vec!["DELETE FROM entries WHERE session_pk = $SESSION AND seq >= 5"],
            5,
            "seq_gap",
        ),
        (
            "extra-row",
            vec![
                "INSERT INTO entries SELECT tenant_id, session_pk, 7, kind, role, content, metadata, created_at, idempotency_key, author, salt, payload_digest, hash, hash FROM entries WHERE session_pk = $SESSION AND seq = 6",
            ],
            7,
            "head_mismatch",
        ),
        (
            "head",
            vec![
                "UPDATE sessions SET head_hash = '\\x00000000000000000000000000000000000000000000000000000000000000ff' WHERE id = $SESSION",
            ],
            6,
            "head_mismatch",
        ),
    ];
    let mut broken = Vec::new();
    for (name, tamper, first_bad_seq, reason) in &cases {
        let session = format!("t-{name}");
        tampered(&app, &session, tamper).await;
        let verdict = app.verify(&session).await;
        assert_eq!(
            verdict,
            json!({"ok": false, "first_bad_seq": first_bad_seq, "reason": reason}),
            "{name}"
        );
        let (status, printed) = run_cli(
            &[
                "verify",
                "--session",
                &session,
                "--tenant",
                &app.database.tenant,
            ],
            None,
            Some(&app.database.owner_url),
        );
        assert_eq!(status, 1, "{name}");
        assert!(
            printed.contains(&format!("BROKEN at seq {first_bad_seq} ({reason})")),
            "{name}: {printed}"
        );
        broken.push(session);
    }

    // A row rewritten with its own payload digest and hash recomputed: the next link breaks,
    // or, for the last row, the head.
    for (seq, first_bad_seq, reason) in [(3, 4, "prev_hash_mismatch"), (6, 6, "head_mismatch")] {
        let session = format!("t-recomputed-{seq}");
        app.six(&session).await;
        rewrite_consistently(&app, &session, seq).await;
        let verdict = app.verify(&session).await;
        assert_eq!(
            verdict,
            json!({"ok": false, "first_bad_seq": first_bad_seq, "reason": reason}),
            "recomputed {seq}"
        );
        let export = app.export(&session).await;
        assert_eq!(verify_export(&export, None), 1, "recomputed {seq}: offline");
        broken.push(session);
    }

    // Exports of tampered sessions fail offline too (a truncated one ends without a trailer).
    for name in [
        "content",
        "erased-by-hand",
        "role",
        "created-at",
        "deleted-middle",
        "swapped-pair",
        "truncated-tail",
        "head",
    ] {
        let export = app.export_received(&format!("t-{name}")).await;
        assert_eq!(verify_export(&export, None), 1, "{name}: offline");
        assert_eq!(
            independent_verifier(&export, None).0,
            1,
            "{name}: independently"
        );
    }

    // --all streams through every session and lists each broken one.
    app.six("intact").await;
    let (status, printed) = run_cli(&["verify", "--all"], None, Some(&app.database.owner_url));
    assert_eq!(status, 1);
    for session in &broken {
        assert!(
            printed.contains(&format!("/{session}: BROKEN")),
            "{session} listed: {printed}"
        );
    }
    assert!(!printed.contains("/intact: BROKEN"));
    assert!(
        printed.contains(&format!(
            "verified {} sessions: 1 intact, {} broken",
            broken.len() + 1,
            broken.len()
        )),
        "{printed}"
    );
}

/// Edits a row's content and recomputes its payload digest and hash, as an attacker who knows
/// the rules would.
async fn rewrite_consistently(app: &TestApp, session: &str, seq: i64) {
    let superuser = app.superuser().await;
    let row = sqlx::query(
        "SELECT e.salt, e.prev_hash, e.metadata, e.kind, e.role, e.created_at, e.idempotency_key, e.author
           FROM entries e JOIN sessions s ON s.id = e.session_pk WHERE s.session_id = $1 AND e.seq = $2",
    )
    .bind(session)
    .bind(seq)
    .fetch_one(&superuser)
    .await
    .expect("row");
    let salt: Vec<u8> = row.get("salt");
    let prev: Vec<u8> = row.get("prev_hash");
    let metadata: Value = row.get("metadata");
    let content = json!("forged");
    let digest = payload_digest(&salt, Some(&content), metadata.as_object().expect("object"));
    let created_at = chatledger::ledger::Timestamp(row.get("created_at"));
    let (kind, role, key, author): (String, Option<String>, Option<String>, String) = (
        row.get("kind"),
        row.get("role"),
        row.get("idempotency_key"),
        row.get("author"),
    );
    let header = EntryHeader {
        tenant: &app.database.tenant,
        session_id: session,
        seq,
        kind: &kind,
        role: role.as_deref(),
        created_at,
        idempotency_key: key.as_deref(),
        author: &author,
        payload_digest: &digest,
    };
    let hash = entry_hash(&prev, &header);
    sqlx::query(
        "UPDATE entries SET content = $1, payload_digest = $2, hash = $3
          WHERE session_pk = (SELECT id FROM sessions WHERE session_id = $4) AND seq = $5",
    )
    .bind(&content)
    .bind(&digest[..])
    .bind(&hash[..])
    .bind(session)
    .bind(seq)
    .execute(&superuser)
    .await
    .expect("rewrite");
}

#[tokio::test]
async fn verify_and_export_are_for_auditors_and_answer_404_for_missing_sessions() {
    let app = TestApp::spawn().await;
    app.append("s", &[("user", "hi")]).await;
    for route in ["/v1/sessions/s/verify", "/v1/sessions/s/export"] {
        for key in [&app.database.writer_key, &app.database.reader_key] {
            assert_problem(
                app.request_as(Method::GET, route, Some(key))
                    .send()
                    .await
                    .expect("sent"),
                403,
                "forbidden",
            )
            .await;
        }
        let missing = route.replace("/s/", "/nope/");
        let response = app
            .request_as(Method::GET, &missing, Some(&app.database.auditor_key))
            .send()
            .await;
        assert_problem(response.expect("sent"), 404, "session_not_found").await;
    }
    let (status, printed) = run_cli(
        &["verify", "--session", "s", "--tenant", &app.database.tenant],
        None,
        Some(&app.database.owner_url),
    );
    assert_eq!(status, 0);
    assert!(printed.contains("intact through seq 1"), "{printed}");
    let (status, _) = run_cli(
        &[
            "verify",
            "--session",
            "nope",
            "--tenant",
            &app.database.tenant,
        ],
        None,
        Some(&app.database.owner_url),
    );
    assert_eq!(
        status, 2,
        "a missing session is an error, not a broken chain"
    );
}
