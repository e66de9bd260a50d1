//! Erasure, legal holds and retention: the payload goes, the proof that something was said and
//! erased stays; a hold stops both erasure and retention until it is released.

use chatledger::auth::Scope;
use chatledger::ledger::SessionId;
use chatledger::ledger::audit::{self, AuditHead, ExportCursor, ExportStep};
use chatledger::ledger::retention;
use reqwest::Method;
use serde_json::{Value, json};

use crate::audit::{independent_verifier, verify_export, verify_export_printing};
use crate::helpers::{TestApp, assert_problem, json_ok, superuser};
use crate::testbin::run_cli;

fn as_auditor(app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.request_as(method, path, Some(&app.database.auditor_key))
}

async fn erase(app: &TestApp, session: &str, body: Value) -> reqwest::Response {
    as_auditor(
        app,
        Method::POST,
        &format!("/v1/sessions/{session}/erasure"),
    )
    .json(&body)
    .send()
    .await
    .expect("sent")
}

async fn export(app: &TestApp, session: &str) -> String {
    let response = as_auditor(app, Method::GET, &format!("/v1/sessions/{session}/export"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    response.text().await.expect("export")
}

async fn verify(app: &TestApp, session: &str) -> Value {
    json_ok(
        as_auditor(app, Method::GET, &format!("/v1/sessions/{session}/verify"))
            .send()
            .await
            .expect("sent"),
    )
    .await
}

#[tokio::test]
async fn an_erasure_removes_the_payload_everywhere_and_the_chain_still_verifies() {
    let app = TestApp::spawn().await;
    app.append(
        "gdpr",
        &[
            ("user", "my date of birth is 1984-02-29"),
            ("assistant", "noted"),
        ],
    )
    .await;
    let salts: Vec<String> = app
        .all_entries("gdpr")
        .await
        .iter()
        .map(|entry| entry["salt"].as_str().expect("salt").to_owned())
        .collect();

    let response = erase(&app, "gdpr", json!({"reason": "gdpr-17 request 4711"})).await;
    assert_eq!(response.status(), 201);
    let erased: Value = response.json().await.expect("json");
    assert_eq!(
        (erased["first_seq"].clone(), erased["last_seq"].clone()),
        (json!(3), json!(3))
    );

    let entries = app.all_entries("gdpr").await;
    for entry in &entries[..2] {
        assert_eq!(entry["erased"], true);
        assert!(
            entry["content"].is_null() && entry["metadata"].is_null() && entry["salt"].is_null()
        );
        assert_eq!(entry["payload_digest"].as_str().map(str::len), Some(64));
    }
    let record = &entries[2];
    assert_eq!(
        (
            record["kind"].clone(),
            record["role"].clone(),
            record["content"].clone()
        ),
        (json!("erasure"), Value::Null, Value::Null)
    );
    assert_eq!(
        record["metadata"],
        json!({"erased_through_seq": 2, "erased_count": 2, "reason": "gdpr-17 request 4711"})
    );
    assert_eq!(record["author"], app.database.auditor_key_id.as_str());
    assert_eq!(record["erased"], false);

    let verified = verify(&app, "gdpr").await;
    assert_eq!(
        (
            verified["ok"].clone(),
            verified["verified_through_seq"].clone(),
            verified["erased_entries"].clone()
        ),
        (json!(true), json!(3), json!(2))
    );
    let exported = export(&app, "gdpr").await;
    assert!(!exported.contains("date of birth"));
    let (status, printed) =
        verify_export_printing(&exported, Some(erased["head_hash"].as_str().expect("head")));
    assert_eq!(status, 0, "{printed}");
    assert!(printed.contains("2 erased entries"), "{printed}");
    let (status, printed) = run_cli(
        &[
            "verify",
            "--session",
            "gdpr",
            "--tenant",
            &app.database.tenant,
        ],
        None,
        Some(&app.database.owner_url),
    );
    assert_eq!(status, 0, "{printed}");
    assert!(printed.contains("2 erased entries"), "{printed}");
    let (status, printed) = independent_verifier(&exported, None);
    assert_eq!(status, 0, "{printed}");
    assert!(printed.contains("2 erased"), "{printed}");
    // Hiding a payload by marking it erased is no forgery, but editing the record is.
    let forged = exported.replacen("\"erased_count\": 2", "\"erased_count\": 1", 1);
    assert_ne!(forged, exported);
    assert_eq!(verify_export(&forged, None), 1);

    let search = json_ok(
        as_auditor(&app, Method::GET, "/v1/audit/search?q=1984")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(search["results"], json!([]));
    let filtered = json_ok(
        as_auditor(&app, Method::GET, "/v1/audit/search?session_id=gdpr")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(
        filtered["results"],
        json!([]),
        "erased entries never match, filters alone neither"
    );

    // Not even the superuser reading the table finds the text or the salts.
    let superuser = superuser(&app).await;
    let dump: String = sqlx::query_scalar("SELECT string_agg(e::text, ' ') FROM entries e")
        .fetch_one(&superuser)
        .await
        .expect("select");
    // Digits could occur in a hash or a timestamp; these words cannot.
    assert!(
        !dump.contains("date of birth") && !dump.contains("noted"),
        "{dump}"
    );
    for salt in salts {
        assert!(!dump.contains(&salt), "salt {salt} survived");
    }

    // The whole session was erased: it is closed to appends and resets, not to erasure.
    let summary = json_ok(app.get("/v1/sessions/gdpr").await).await;
    assert_eq!(summary["closed"], true);
    for path in ["/v1/sessions/gdpr/messages", "/v1/sessions/gdpr/reset"] {
        let body = if path.ends_with("reset") {
            json!({})
        } else {
            json!({"messages": [{"role": "user", "content": "again"}]})
        };
        assert_problem(app.post_json(path, &body).await, 409, "session_closed").await;
    }
    let again = erase(&app, "gdpr", json!({"reason": "again"})).await;
    assert_eq!(again.status(), 201, "erasing again is harmless");
    let entries = app.all_entries("gdpr").await;
    assert_eq!(entries.len(), 4);
    assert_eq!(
        entries[3]["metadata"],
        json!({"erased_through_seq": 3, "erased_count": 0, "reason": "again"})
    );
    assert_eq!(verify(&app, "gdpr").await["ok"], true);
}

#[tokio::test]
async fn a_partial_erasure_leaves_later_entries_and_the_session_open() {
    let app = TestApp::spawn().await;
    app.append("part", &[("user", "first secret"), ("assistant", "second")])
        .await;
    app.post_json("/v1/sessions/part/reset", &json!({})).await;
    app.append("part", &[("user", "kept")]).await;
    let response = erase(&app, "part", json!({"reason": "partial", "through_seq": 3})).await;
    assert_eq!(response.status(), 201);
    let entries = app.all_entries("part").await;
    let erased: Vec<bool> = entries
        .iter()
        .map(|e| e["erased"].as_bool().expect("erased"))
        .collect();
    assert_eq!(
        erased,
        [true, true, false, false, false],
        "the reset is not a message"
    );
    assert_eq!(entries[3]["content"], "kept");
    assert_eq!(entries[4]["metadata"]["erased_count"], 2);
    assert_eq!(
        json_ok(app.get("/v1/sessions/part").await).await["closed"],
        false
    );
    assert_eq!(
        app.append("part", &[("user", "still open")]).await["first_seq"],
        6
    );
    // The context window after the reset is unchanged by the erasure record.
    let window = json_ok(app.get("/v1/sessions/part/context").await).await;
    let contents: Vec<&str> = window["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["content"].as_str())
        .collect();
    assert_eq!(contents, ["kept", "still open"]);
    assert_eq!(verify(&app, "part").await["erased_entries"], 2);
    let exported = export(&app, "part").await;
    assert_eq!(verify_export(&exported, None), 0);
    assert_eq!(independent_verifier(&exported, None).0, 0);
}

/// Each seq an export up to `head` reads with whether it was erased, and how it ends.
async fn read_export(
    pool: &sqlx::PgPool,
    scope: Scope<'_>,
    session: &SessionId,
    head: AuditHead,
) -> (Vec<(i64, bool)>, ExportStep) {
    let mut cursor = ExportCursor::new(head);
    let mut db = pool.acquire().await.expect("db");
    let mut read = Vec::new();
    loop {
        match cursor.next(&mut db, scope, session, 1 << 20).await {
            Ok(ExportStep::Entries(entries)) => {
                read.extend(entries.iter().map(|entry| (entry.seq, entry.erased)));
            }
            Ok(end) => return (read, end),
            Err(error) => panic!("export page: {error}"),
        }
    }
}

/// Verify and export read the head first and the entries after, in other transactions. An
/// erasure that commits in between erases entries up to that head and appends its own entry
/// past it; neither may then report a break that is not in the ledger.
#[tokio::test]
async fn an_erasure_between_reading_the_head_and_the_entries_is_not_taken_for_tampering() {
    let app = TestApp::spawn().await;
    app.append("racing", &[("user", "secret"), ("assistant", "noted")])
        .await;
    app.append("racing", &[("user", "kept")]).await;
    let tenant =
        chatledger::admin::tenant_by_name(&mut app.pool.acquire().await.expect("db"), "acme")
            .await
            .expect("acme");
    let scope = Scope::operator(&tenant);
    let session = SessionId::parse("racing").expect("id");
    let head = async || {
        audit::head(&mut app.pool.acquire().await.expect("db"), scope, &session)
            .await
            .expect("head")
    };
    let before_erasure = head().await;
    assert_eq!(before_erasure.last_seq, 3);
    let response = erase(&app, "racing", json!({"reason": "r", "through_seq": 2})).await;
    assert_eq!(response.status(), 201);

    // Verify reads on to the erasure entry, which accounts for the entries it found erased.
    let verified =
        audit::verify_through(&app.pool, scope, &session, before_erasure.clone(), 1 << 20)
            .await
            .expect("read")
            .expect("intact");
    assert_eq!(
        (verified.verified_through_seq, verified.erased_entries),
        (4, 2)
    );

    // An export holds no entry past its head, so it cannot hold that one: it ends without its
    // trailer rather than with one that fails to verify.
    let (read, end) = read_export(&app.pool, scope, &session, before_erasure).await;
    assert_eq!(read, [(1, true), (2, true), (3, false)]);
    assert!(matches!(end, ExportStep::ErasedMeanwhile), "{end:?}");
    let (read, end) = read_export(&app.pool, scope, &session, head().await).await;
    assert_eq!(read, [(1, true), (2, true), (3, false), (4, false)]);
    assert!(matches!(end, ExportStep::AtHead), "{end:?}");
    assert_eq!(verify_export(&export(&app, "racing").await, None), 0);

    // A message blanked by hand, with no erasure at all, is exported as stored, trailer and all,
    // so that verifying the export shows it (it was taken for an erasure racing the export, and
    // no export of the session could be made).
    app.append("blanked", &[("user", "said"), ("assistant", "heard")])
        .await;
    sqlx::raw_sql(
        "UPDATE entries SET content = NULL, metadata = NULL, salt = NULL, erased_at = now()
          WHERE seq = 1 AND session_pk = (SELECT id FROM sessions WHERE session_id = 'blanked')",
    )
    .execute(&superuser(&app).await)
    .await
    .expect("the superuser blanks a message");
    let blanked = SessionId::parse("blanked").expect("id");
    let now = audit::head(&mut app.pool.acquire().await.expect("db"), scope, &blanked)
        .await
        .expect("head");
    let (read, end) = read_export(&app.pool, scope, &blanked, now).await;
    assert_eq!(read, [(1, true), (2, false)]);
    assert!(matches!(end, ExportStep::AtHead), "{end:?}");
    assert_ne!(verify_export(&export(&app, "blanked").await, None), 0);
}

#[tokio::test]
async fn a_retried_erasure_with_its_key_erases_once() {
    let app = TestApp::spawn().await;
    app.append("retry", &[("user", "a")]).await;
    let send = || {
        as_auditor(&app, Method::POST, "/v1/sessions/retry/erasure")
            .header("Idempotency-Key", "erase-1")
            .json(&json!({"reason": "r", "through_seq": 1}))
            .send()
    };
    let first = send().await.expect("sent");
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("json");
    let second = send().await.expect("sent");
    assert_eq!(second.status(), 201);
    assert_eq!(
        second
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().ok()),
        Some(Some("true"))
    );
    assert_eq!(second.json::<Value>().await.expect("json"), first);
    assert_eq!(app.all_entries("retry").await.len(), 2, "one erasure entry");
    // Each attempt is recorded; the replay's record says it changed nothing, not that it
    // erased nothing through seq 0.
    let log = json_ok(
        as_auditor(&app, Method::GET, "/v1/audit/access?action=erase")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let details: Vec<&Value> = log["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|record| &record["detail"])
        .collect();
    assert_eq!(
        details,
        [
            &json!({"erased_count": 1, "erased_through_seq": 1, "erasure_seq": 2, "reason": "r", "replayed": false}),
            &json!({"erasure_seq": 2, "reason": "r", "replayed": true}),
        ]
    );
    let other_body = as_auditor(&app, Method::POST, "/v1/sessions/retry/erasure")
        .header("Idempotency-Key", "erase-1")
        .json(&json!({"reason": "other"}))
        .send()
        .await
        .expect("sent");
    assert_problem(other_body, 422, "idempotency_key_reused").await;
}

/// An idempotency key's request digest is SHA-256 over the request, unsalted: after an erasure
/// it would confirm a guess of what was erased (a retry with the guessed body replayed, any
/// other refused, and anyone reading the table could test guesses offline).
#[tokio::test]
async fn an_erasure_forgets_the_request_digests_of_the_appends_it_erased() {
    let app = TestApp::spawn().await;
    let path = "/v1/sessions/guessed/messages";
    let body = |content: &str| json!({"messages": [{"role": "user", "content": content}]});
    let append = |key: &'static str, content: &'static str| {
        let app = &app;
        let request = body(content);
        async move {
            let appended = app.post_with_key(path, key, &request).await;
            assert_eq!(appended.status(), 201, "{key}");
        }
    };
    let erase_with = |key: &'static str, through_seq: i64| {
        as_auditor(&app, Method::POST, "/v1/sessions/guessed/erasure")
            .header("Idempotency-Key", key)
            .json(&json!({"reason": "gdpr", "through_seq": through_seq}))
            .send()
    };
    append("k-1", "yes").await;
    append("k-2", "maybe").await;
    assert_eq!(erase_with("e-1", 1).await.expect("sent").status(), 201);
    append("k-4", "more").await;
    append("k-5", "kept").await;
    // Erases seqs 2 and 4; the erasure entry between them (seq 3, key e-1) is no append.
    assert_eq!(erase_with("e-2", 4).await.expect("sent").status(), 201);

    // Whatever a request with an erased append's key says, it gets the same answer.
    for guess in ["yes", "no"] {
        assert_problem(
            app.post_with_key(path, "k-1", &body(guess)).await,
            422,
            "idempotency_key_reused",
        )
        .await;
    }
    // An erasure sent with such a key is refused, not taken for the append's replay.
    assert_problem(
        erase_with("k-2", 5).await.expect("sent"),
        422,
        "idempotency_key_reused",
    )
    .await;
    // Keys of what was not erased still replay their request and refuse another.
    let replayed = erase_with("e-1", 1).await.expect("sent");
    assert_eq!(replayed.status(), 201);
    assert_eq!(
        replayed
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(
        app.post_with_key(path, "k-5", &body("kept")).await.status(),
        201
    );
    assert_problem(
        app.post_with_key(path, "k-5", &body("other")).await,
        422,
        "idempotency_key_reused",
    )
    .await;
    let forgotten: Vec<(String, bool)> = sqlx::query_as(
        "SELECT k.key, k.request_digest = '\\x00'::bytea FROM idempotency_keys k
           JOIN sessions s ON s.id = k.session_pk WHERE s.session_id = 'guessed' ORDER BY k.key",
    )
    .fetch_all(&superuser(&app).await)
    .await
    .expect("keys");
    let expected = [
        ("e-1", false),
        ("e-2", false),
        ("k-1", true),
        ("k-2", true),
        ("k-4", true),
        ("k-5", false),
    ]
    .map(|(key, gone)| (key.to_owned(), gone));
    assert_eq!(
        forgotten, expected,
        "nothing of an erased request is left to test guesses against"
    );
    assert_eq!(
        app.all_entries("guessed").await.len(),
        6,
        "nothing written twice"
    );
}

#[tokio::test]
async fn a_legal_hold_blocks_erasure_until_it_is_released_and_every_step_is_recorded() {
    let app = TestApp::spawn().await;
    app.append("held", &[("user", "evidence")]).await;
    let placed = as_auditor(&app, Method::POST, "/v1/holds")
        .json(
            &json!({"name": "matter-17", "reason": "dispute", "session_ids": ["held", "not-yet"]}),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(placed.status(), 201);
    let hold: Value = placed.json().await.expect("json");
    let id = hold["id"].as_i64().expect("id");
    assert_eq!(hold["session_ids"], json!(["held", "not-yet"]));
    assert_eq!(hold["placed_by"], app.database.auditor_key_id.as_str());
    assert!(hold["released_at"].is_null());
    let second = as_auditor(&app, Method::POST, "/v1/holds")
        .json(&json!({"name": "matter-18", "reason": "another", "session_ids": []}))
        .send()
        .await
        .expect("sent");
    let second_id = second.json::<Value>().await.expect("json")["id"]
        .as_i64()
        .expect("id");
    let added = as_auditor(
        &app,
        Method::POST,
        &format!("/v1/holds/{second_id}/sessions"),
    )
    .json(&json!({"session_ids": ["held"]}))
    .send()
    .await
    .expect("sent");
    assert_eq!(added.status(), 200);
    // Adding again what it holds changes nothing, and its record says so.
    let again = as_auditor(
        &app,
        Method::POST,
        &format!("/v1/holds/{second_id}/sessions"),
    )
    .json(&json!({"session_ids": ["later", "held"]}))
    .send()
    .await
    .expect("sent");
    assert_eq!(
        json_ok(again).await["session_ids"],
        json!(["held", "later"])
    );
    assert_eq!(
        json_ok(app.get("/v1/sessions/held").await).await["holds"],
        json!([id, second_id])
    );

    let refused = assert_problem(
        erase(&app, "held", json!({"reason": "too early"})).await,
        409,
        "legal_hold",
    )
    .await;
    assert_eq!(refused["holds"], json!([id, second_id]));
    assert_eq!(
        app.all_entries("held").await.len(),
        1,
        "nothing was written"
    );
    for hold in [id, second_id] {
        let released = as_auditor(&app, Method::DELETE, &format!("/v1/holds/{hold}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(released.status(), 204);
    }
    let again = as_auditor(&app, Method::DELETE, &format!("/v1/holds/{id}"))
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), 204, "releasing twice changes nothing");
    assert_eq!(
        json_ok(app.get("/v1/sessions/held").await).await["holds"],
        json!([])
    );
    assert_eq!(
        erase(&app, "held", json!({"reason": "now"})).await.status(),
        201
    );

    let listed = json_ok(
        as_auditor(&app, Method::GET, "/v1/holds")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let holds = listed["holds"].as_array().expect("holds");
    assert_eq!(holds.len(), 2, "released holds are kept");
    assert!(holds.iter().all(|hold| hold["released_at"].is_string()));
    let extended = as_auditor(&app, Method::POST, &format!("/v1/holds/{id}/sessions"))
        .json(&json!({"session_ids": ["x"]}))
        .send()
        .await
        .expect("sent");
    assert_problem(extended, 422, "validation_failed").await;

    let log = json_ok(
        as_auditor(&app, Method::GET, "/v1/audit/access?limit=1000")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let actions: Vec<(String, i64)> = log["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| {
            ["hold_place", "hold_release", "erase"].contains(&r["action"].as_str().unwrap_or(""))
        })
        .map(|r| {
            (
                r["action"].as_str().expect("a").to_owned(),
                r["status"].as_i64().expect("s"),
            )
        })
        .collect();
    let expected: Vec<(String, i64)> = [
        ("hold_place", 201),
        ("hold_place", 201),
        ("hold_place", 200),
        ("hold_place", 200),
        ("erase", 409),
        ("hold_release", 204),
        ("hold_release", 204),
        ("hold_release", 204),
        ("erase", 201),
    ]
    .iter()
    .map(|(a, s)| (a.to_string(), *s))
    .collect();
    assert_eq!(actions, expected);
    let additions: Vec<&Value> = log["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["action"] == "hold_place" && r["status"] == 200)
        .map(|r| &r["detail"]["added"])
        .collect();
    assert_eq!(additions, [&json!(["held"]), &json!(["later"])]);

    // Holds are tenant-isolated and never deleted.
    let superuser = superuser(&app).await;
    for statement in [
        "DELETE FROM holds",
        "UPDATE holds SET name = 'x'",
        "DELETE FROM hold_sessions",
        "UPDATE holds SET released_at = NULL",
    ] {
        assert!(
            sqlx::raw_sql(statement).execute(&superuser).await.is_err(),
            "{statement}"
        );
    }
}

#[tokio::test]
async fn erasure_and_hold_input_is_checked_and_writes_nothing() {
    let app = TestApp::spawn().await;
    app.append("s", &[("user", "x")]).await;
    for (body, code) in [
        (json!({}), "validation_failed"),
        (json!({"reason": ""}), "validation_failed"),
        (json!({"reason": "x".repeat(501)}), "validation_failed"),
        (json!({"reason": "a\u{0}b"}), "validation_failed"),
        (
            json!({"reason": "x", "through_seq": 0}),
            "validation_failed",
        ),
        (json!({"reason": "x", "extra": 1}), "validation_failed"),
    ] {
        assert_problem(erase(&app, "s", body.clone()).await, 422, code).await;
    }
    assert_problem(
        erase(&app, "missing", json!({"reason": "x"})).await,
        404,
        "session_not_found",
    )
    .await;
    let as_writer = app
        .post_json("/v1/sessions/s/erasure", &json!({"reason": "x"}))
        .await;
    assert_problem(as_writer, 403, "forbidden").await;
    assert_eq!(app.all_entries("s").await.len(), 1);
    for (body, code) in [
        (json!({"name": "", "reason": "r"}), "validation_failed"),
        (
            json!({"name": "n", "reason": "r", "session_ids": ["a/b"]}),
            "validation_failed",
        ),
        (json!({"name": "n"}), "validation_failed"),
    ] {
        let response = as_auditor(&app, Method::POST, "/v1/holds")
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_problem(response, 422, code).await;
    }
    for path in ["/v1/holds/999999", "/v1/holds/x"] {
        let response = as_auditor(&app, Method::DELETE, path)
            .send()
            .await
            .expect("sent");
        assert_problem(response, 404, "not_found").await;
    }
    let listed = json_ok(
        as_auditor(&app, Method::GET, "/v1/holds")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(listed["holds"], json!([]));
}

#[tokio::test]
async fn retention_erases_exactly_the_expired_payloads_of_unheld_sessions() {
    let app = TestApp::spawn().await;
    let pool = &app.pool;
    for session in ["old-a", "old-b", "held"] {
        app.append(session, &[("user", "expired soon"), ("assistant", "also")])
            .await;
    }
    let set = app
        .request_as(
            Method::PUT,
            "/v1/admin/tenants/acme/policy",
            Some(crate::helpers::ADMIN_KEY),
        )
        .json(&json!({"retention_days": 2192, "log_writer_reads": false}))
        .send()
        .await
        .expect("sent");
    assert_eq!(set.status(), 200);
    let hold = as_auditor(&app, Method::POST, "/v1/holds")
        .json(&json!({"name": "m", "reason": "r", "session_ids": ["held"]}))
        .send()
        .await
        .expect("sent")
        .json::<Value>()
        .await
        .expect("json");

    // Nothing is due today.
    let today = retention::sweep(pool, chrono::Utc::now(), None, false)
        .await
        .expect("sweep");
    assert_eq!((today.ran, today.erased_entries), (true, 0));
    // Six years and two days on: the entries written before are expired; newer ones are not.
    let later = chrono::Utc::now() + chrono::Duration::days(2194);
    let dry = retention::sweep(pool, later, Some("acme"), true)
        .await
        .expect("dry run");
    assert_eq!(
        (dry.erased_entries, dry.erasures, dry.held_sessions),
        (4, 2, 1)
    );
    assert_eq!(
        app.all_entries("old-a").await[0]["erased"],
        false,
        "a dry run erases nothing"
    );
    let swept = retention::sweep(pool, later, None, false)
        .await
        .expect("sweep");
    assert_eq!(
        (swept.erased_entries, swept.erasures, swept.held_sessions),
        (4, 2, 1)
    );
    for session in ["old-a", "old-b"] {
        let entries = app.all_entries(session).await;
        assert_eq!(
            entries
                .iter()
                .map(|e| e["erased"].as_bool().unwrap_or(false))
                .collect::<Vec<_>>(),
            [true, true, false]
        );
        assert_eq!(
            entries[2]["metadata"],
            json!({"erased_through_seq": 2, "erased_count": 2, "reason": "retention"})
        );
        assert_eq!(entries[2]["author"], "retention");
        assert_eq!(verify(&app, session).await["ok"], true);
    }
    assert!(
        app.all_entries("held")
            .await
            .iter()
            .all(|e| e["erased"] == false)
    );
    let again = retention::sweep(pool, later, None, false)
        .await
        .expect("sweep");
    assert_eq!(
        again.erased_entries, 0,
        "what was erased stays erased, once"
    );

    let id = hold["id"].as_i64().expect("id");
    as_auditor(&app, Method::DELETE, &format!("/v1/holds/{id}"))
        .send()
        .await
        .expect("sent");
    let released = retention::sweep(pool, later, None, false)
        .await
        .expect("sweep");
    assert_eq!((released.erased_entries, released.held_sessions), (2, 0));
    let log = json_ok(
        as_auditor(&app, Method::GET, "/v1/audit/access?actor=retention")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(
        log["records"].as_array().map(Vec::len),
        Some(3),
        "one record per erasure"
    );
    // Retention ages payloads out and ends no conversation: each session it erased whole takes
    // the customer's next turn.
    for session in ["old-a", "old-b", "held"] {
        app.append(session, &[("user", "back again")]).await;
    }
}

#[tokio::test]
async fn only_the_one_way_erasure_of_a_payload_is_an_update_an_entry_takes() {
    let app = TestApp::spawn().await;
    app.append("s", &[("user", "x")]).await;
    let runtime = app.database.runtime_pool().await;
    let tenant =
        chatledger::admin::tenant_by_name(&mut runtime.acquire().await.expect("db"), "acme")
            .await
            .expect("acme");
    for statement in [
        "UPDATE entries SET content = '\"y\"'",
        "UPDATE entries SET content = NULL, metadata = NULL, salt = NULL, erased_at = now(), role = 'assistant'",
        "UPDATE entries SET content = NULL, metadata = NULL, salt = NULL",
        "UPDATE entries SET hash = hash",
    ] {
        let mut tx = runtime.begin().await.expect("begin");
        sqlx::query("SELECT set_config('chatledger.tenant_id', $1, true)")
            .bind(tenant.id.to_string())
            .execute(&mut *tx)
            .await
            .expect("bind");
        assert!(
            sqlx::raw_sql(statement).execute(&mut *tx).await.is_err(),
            "{statement}"
        );
    }
    let mut tx = runtime.begin().await.expect("begin");
    sqlx::query("SELECT set_config('chatledger.tenant_id', $1, true)")
        .bind(tenant.id.to_string())
        .execute(&mut *tx)
        .await
        .expect("bind");
    sqlx::raw_sql(
        "UPDATE entries SET content = NULL, metadata = NULL, salt = NULL, erased_at = now()",
    )
    .execute(&mut *tx)
    .await
    .expect("the one update allowed");
    assert!(
        sqlx::raw_sql("UPDATE entries SET erased_at = now()")
            .execute(&mut *tx)
            .await
            .is_err(),
        "once"
    );
}
