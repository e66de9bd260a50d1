//! The compliance officer's reads: the access log (one record per read or change, written with
//! it, tenant-isolated) and audit search (substrings in any script, filters, paging).

use chatledger::auth::KeyRole;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

use crate::helpers::{ADMIN_KEY, TestApp, assert_problem, json_ok, superuser};

/// Every access record of the tenant of `auditor`, through the API.
async fn records(app: &TestApp, auditor: &str, query: &str) -> Vec<Value> {
    let page = json_ok(
        app.request_as(
            Method::GET,
            &format!("/v1/audit/access?limit=1000&{query}"),
            Some(auditor),
        )
        .send()
        .await
        .expect("sent"),
    )
    .await;
    page["records"].as_array().expect("records").clone()
}

/// The records written since `seen` records were known, and `seen` moved past them and past
/// the record this listing writes itself.
async fn new_records(app: &TestApp, auditor: &str, seen: &mut usize) -> Vec<Value> {
    let all = records(app, auditor, "").await;
    let fresh = all[*seen..].to_vec();
    *seen = all.len() + 1;
    fresh
}

fn get(app: &TestApp, path: &str, key: &str) -> reqwest::RequestBuilder {
    app.request_as(Method::GET, path, Some(key))
}

#[tokio::test]
async fn every_read_by_a_reader_or_auditor_writes_exactly_one_record_and_writer_reads_follow_the_policy()
 {
    let app = TestApp::spawn().await;
    let db = app.database.clone();
    app.append(
        "s1",
        &[("user", "My order number is 8892"), ("assistant", "Thanks")],
    )
    .await;
    let mut seen = records(&app, &db.auditor_key, "").await.len() + 1;

    let reader_id = chatledger::auth::lookup(
        &app.pool,
        &chatledger::auth::Credential::from_secret(&db.reader_key),
    )
    .await
    .expect("reader")
    .key_id
    .to_string();
    // Each read, and the one record (besides the listing's own) it must write.
    let reads: Vec<(&str, &str, &str, Value)> = vec![
        (
            "/v1/sessions/s1",
            "read_session",
            "s1",
            json!({"last_seq": 2}),
        ),
        (
            "/v1/sessions/s1/messages?after_seq=0&limit=10",
            "read_messages",
            "s1",
            json!({"first_seq": 1, "last_seq": 2, "count": 2}),
        ),
        (
            "/v1/sessions/s1/context?limit=1",
            "read_context",
            "s1",
            json!({"first_seq": 2, "last_seq": 2, "count": 1}),
        ),
    ];
    for (path, action, session, detail) in &reads {
        let response = get(&app, path, &db.reader_key).send().await.expect("sent");
        assert_eq!(response.status(), 200, "{path}");
        let fresh = new_records(&app, &db.auditor_key, &mut seen).await;
        assert_eq!(fresh.len(), 1, "{path}: {fresh:?}");
        let record = &fresh[0];
        assert_eq!(record["action"], *action, "{path}");
        assert_eq!(record["actor"], reader_id.as_str());
        assert_eq!(record["role"], "reader");
        assert_eq!(record["session_id"], *session);
        assert_eq!(record["detail"], *detail, "{path}");
        assert_eq!(record["status"], 200);
        assert_eq!(record["tenant"], "acme");
        assert_eq!(record["client_addr"], "127.0.0.1");
        assert!(
            record["request_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty())
        );
        assert!(
            !record.to_string().contains("order number"),
            "no content in a record"
        );
    }
    // The session list, and a read of a session that does not exist (recorded with its 404).
    assert_eq!(
        get(&app, "/v1/sessions", &db.reader_key)
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    assert_eq!(
        get(&app, "/v1/sessions/nope", &db.reader_key)
            .send()
            .await
            .expect("sent")
            .status(),
        404
    );
    let fresh = new_records(&app, &db.auditor_key, &mut seen).await;
    assert_eq!(fresh.len(), 2, "{fresh:?}");
    assert_eq!(fresh[0]["action"], "list_sessions");
    assert_eq!(fresh[0]["detail"]["count"], 1);
    assert_eq!(
        (fresh[1]["action"].clone(), fresh[1]["status"].clone()),
        (json!("read_session"), json!(404))
    );
    // So are attempts on a seq or a hold that does not exist.
    let proof = get(&app, "/v1/sessions/s1/proof?seq=99", &db.auditor_key)
        .send()
        .await
        .expect("sent");
    assert_eq!(proof.status(), 404);
    let release = app
        .request_as(Method::DELETE, "/v1/holds/999999", Some(&db.auditor_key))
        .send()
        .await
        .expect("sent");
    assert_eq!(release.status(), 404);
    let fresh = new_records(&app, &db.auditor_key, &mut seen).await;
    let attempts: Vec<(Value, Value)> = fresh
        .iter()
        .map(|record| (record["action"].clone(), record["status"].clone()))
        .collect();
    assert_eq!(
        attempts,
        [
            (json!("proof"), json!(404)),
            (json!("hold_release"), json!(404))
        ]
    );

    // A writer's reads (a bot loading its context) are not recorded by default...
    for path in [
        "/v1/sessions/s1/context",
        "/v1/sessions/s1",
        "/v1/sessions/s1/messages",
    ] {
        assert_eq!(
            get(&app, path, &db.writer_key)
                .send()
                .await
                .expect("sent")
                .status(),
            200
        );
    }
    let fresh = new_records(&app, &db.auditor_key, &mut seen).await;
    assert!(fresh.is_empty(), "{fresh:?}");
    // ...and are once the tenant's policy says so, on this server at once.
    let set = app
        .request_as(
            Method::PUT,
            "/v1/admin/tenants/acme/policy",
            Some(ADMIN_KEY),
        )
        .json(&json!({"retention_days": null, "log_writer_reads": true}))
        .send()
        .await
        .expect("sent");
    assert_eq!(set.status(), 200);
    let policy = json_ok(
        app.request_as(
            Method::GET,
            "/v1/admin/tenants/acme/policy",
            Some(ADMIN_KEY),
        )
        .send()
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!(
        policy,
        json!({"retention_days": null, "log_writer_reads": true})
    );
    // The policy notification may take a moment to reach the listener; a writer read is
    // recorded from the moment it has.
    let mut recorded = false;
    for _ in 0..200 {
        assert_eq!(
            get(&app, "/v1/sessions/s1/context", &db.writer_key)
                .send()
                .await
                .expect("sent")
                .status(),
            200
        );
        let fresh = new_records(&app, &db.auditor_key, &mut seen).await;
        if fresh
            .iter()
            .any(|record| record["action"] == "read_context" && record["role"] == "writer")
        {
            recorded = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(recorded, "writer reads are recorded under log_writer_reads");
    let policy_set = records(&app, &db.auditor_key, "action=policy_set").await;
    assert_eq!(policy_set.len(), 1);
    assert_eq!(policy_set[0]["actor"], "admin");
    assert_eq!(policy_set[0]["role"], "admin");
    assert_eq!(
        policy_set[0]["detail"],
        json!({"retention_days": null, "log_writer_reads": true})
    );
}

#[tokio::test]
async fn audits_and_admin_changes_are_recorded_under_the_tenant_they_concern() {
    let app = TestApp::spawn().await;
    let db = app.database.clone();
    app.append("s1", &[("user", "hello")]).await;
    for path in [
        "/v1/sessions/s1/verify",
        "/v1/sessions/s1/export",
        "/v1/audit/search?q=hello",
    ] {
        assert_eq!(
            get(&app, path, &db.auditor_key)
                .send()
                .await
                .expect("sent")
                .status(),
            200,
            "{path}"
        );
    }
    let all = records(&app, &db.auditor_key, "").await;
    let actions: Vec<&str> = all.iter().filter_map(|r| r["action"].as_str()).collect();
    for action in ["tenant_create", "key_create", "verify", "export", "search"] {
        assert!(actions.contains(&action), "{action}: {actions:?}");
    }
    let verify = all
        .iter()
        .find(|r| r["action"] == "verify")
        .expect("verify");
    assert_eq!(
        verify["detail"],
        json!({"ok": true, "verified_through_seq": 1, "erased_entries": 0})
    );
    let export = all
        .iter()
        .find(|r| r["action"] == "export")
        .expect("export");
    assert_eq!(export["detail"], json!({"first_seq": 1, "last_seq": 1}));
    let search = all
        .iter()
        .find(|r| r["action"] == "search")
        .expect("search");
    assert_eq!(search["detail"]["q"], json!(["hello"]));
    assert_eq!(search["detail"]["count"], 1);
    // The operator created acme and its keys in the test fixture.
    let created = all
        .iter()
        .find(|r| r["action"] == "tenant_create")
        .expect("created");
    assert_eq!(
        (created["actor"].clone(), created["role"].clone()),
        (json!("operator"), json!("operator"))
    );
    assert_eq!(created["status"], 201);

    // Over HTTP the admin's key changes land in the key's tenant, not in anyone else's.
    let made: Value = app
        .request_as(Method::POST, "/v1/admin/keys", Some(ADMIN_KEY))
        .json(&json!({"tenant": "acme", "role": "reader", "label": "new"}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let id = made["id"].as_str().expect("id");
    let revoked = app
        .request_as(
            Method::DELETE,
            &format!("/v1/admin/keys/{id}"),
            Some(ADMIN_KEY),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(revoked.status(), 204);
    let keys = records(&app, &db.auditor_key, "actor=admin").await;
    let actions: Vec<&str> = keys.iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(actions, ["key_create", "key_revoke"]);
    // Each record holds the status the admin was answered.
    let statuses: Vec<&Value> = keys.iter().map(|r| &r["status"]).collect();
    assert_eq!(statuses, [&json!(201), &json!(204)]);
    assert_eq!(keys[0]["detail"]["key_id"], id);
    assert_eq!(
        keys[1]["detail"],
        json!({"key_id": id, "revoked_now": true})
    );
    assert!(
        !keys.iter().any(|r| r.to_string().contains("clk_")),
        "no secret in a record"
    );
}

#[tokio::test]
async fn a_read_whose_record_cannot_be_written_fails_with_503_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let db = app.database.clone();
    app.append("s1", &[("user", "secret contents")]).await;
    let before = records(&app, &db.auditor_key, "").await.len();
    let superuser = superuser(&app).await;
    sqlx::raw_sql(
        "CREATE FUNCTION test_refuse_records() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'the access log is full'; END $$;
         CREATE TRIGGER test_refuse_records BEFORE INSERT ON access_records
             FOR EACH ROW EXECUTE FUNCTION test_refuse_records();",
    )
    .execute(&superuser)
    .await
    .expect("inject the failure");
    for (path, key) in [
        ("/v1/sessions/s1/context", &db.reader_key),
        ("/v1/sessions/s1/messages", &db.auditor_key),
        ("/v1/sessions/s1/export", &db.auditor_key),
        ("/v1/audit/search?q=secret", &db.auditor_key),
        ("/v1/sessions/s1/verify", &db.auditor_key),
    ] {
        let response = get(&app, path, key).send().await.expect("sent");
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().ok()),
            Some(Some("1"))
        );
        let problem = assert_problem(response, 503, "unavailable").await;
        assert!(
            !problem.to_string().contains("secret"),
            "{path}: nothing returned"
        );
    }
    // A writer's unrecorded read is not affected.
    assert_eq!(
        get(&app, "/v1/sessions/s1/context", &db.writer_key)
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    sqlx::raw_sql("DROP TRIGGER test_refuse_records ON access_records")
        .execute(&superuser)
        .await
        .expect("heal");
    assert_eq!(
        records(&app, &db.auditor_key, "").await.len(),
        before + 1,
        "only the listing"
    );
}

#[tokio::test]
async fn the_access_log_is_append_only_and_isolated_by_tenant_even_without_the_apps_filter() {
    let app = TestApp::spawn().await;
    let db = app.database.clone();
    let globex_writer = db.tenant_with_key("globex", KeyRole::Writer).await;
    let globex_auditor = db.key_for("globex", KeyRole::Auditor).await;
    app.append("acme-secret", &[("user", "acme order 8892")])
        .await;
    app.request_as(
        Method::POST,
        "/v1/sessions/globex-1/messages",
        Some(&globex_writer),
    )
    .json(&json!({"messages": [{"role": "user", "content": "globex order 8892"}]}))
    .send()
    .await
    .expect("sent");
    assert_eq!(
        get(&app, "/v1/sessions/acme-secret", &db.reader_key)
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );

    // Globex's auditor sees only globex's records and hits.
    let theirs = records(&app, &globex_auditor, "").await;
    assert!(!theirs.is_empty());
    assert!(
        theirs
            .iter()
            .all(|r| r["tenant"] == "globex" && r["session_id"] != "acme-secret")
    );
    let hits = json_ok(
        get(&app, "/v1/audit/search?q=8892", &globex_auditor)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let sessions: Vec<&str> = hits["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|h| h["session_id"].as_str())
        .collect();
    assert_eq!(sessions, ["globex-1"]);
    assert_problem(
        get(
            &app,
            "/v1/audit/access?session_id=acme-secret",
            &db.writer_key,
        )
        .send()
        .await
        .expect("sent"),
        403,
        "forbidden",
    )
    .await;

    // The runtime role with globex bound sees globex's rows alone, filter or no filter.
    let runtime = db.runtime_pool().await;
    let globex_id: i64 = sqlx::query_scalar("SELECT id FROM tenants WHERE name = 'globex'")
        .fetch_one(&runtime)
        .await
        .expect("globex");
    let mut tx = runtime.begin().await.expect("begin");
    sqlx::query("SELECT set_config('chatledger.tenant_id', $1, true)")
        .bind(globex_id.to_string())
        .execute(&mut *tx)
        .await
        .expect("bind");
    let rows = sqlx::query("SELECT DISTINCT tenant_id FROM access_records")
        .fetch_all(&mut *tx)
        .await
        .expect("select");
    let tenants: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(tenants, [globex_id]);
    tx.rollback().await.expect("rollback");
    let unbound: i64 = sqlx::query_scalar("SELECT count(*) FROM access_records")
        .fetch_one(&runtime)
        .await
        .expect("select");
    assert_eq!(unbound, 0, "no tenant bound, no row");

    // Nobody, a superuser included, edits or removes a record.
    let owner = superuser(&app).await;
    for statement in [
        "UPDATE access_records SET actor = 'someone-else'",
        "DELETE FROM access_records",
        "TRUNCATE access_records",
    ] {
        let refused = sqlx::raw_sql(statement).execute(&owner).await;
        assert!(refused.is_err(), "{statement} must be refused");
    }
}

#[tokio::test]
async fn client_addresses_come_from_x_forwarded_for_only_through_a_trusted_proxy() {
    let trusted = TestApp::spawn_trusting(vec!["127.0.0.1".parse().expect("ip")]).await;
    let db = trusted.database.clone();
    trusted.append("s1", &[("user", "x")]).await;
    let forwarded = |app: &TestApp| {
        get(app, "/v1/sessions/s1", &db.reader_key)
            .header("X-Forwarded-For", "203.0.113.9, 10.0.0.1")
    };
    assert_eq!(
        forwarded(&trusted).send().await.expect("sent").status(),
        200
    );
    let untrusted = TestApp::spawn_on(db.clone()).await;
    assert_eq!(
        forwarded(&untrusted).send().await.expect("sent").status(),
        200
    );
    let reads = records(&trusted, &db.auditor_key, "action=read_session").await;
    let addresses: Vec<&str> = reads
        .iter()
        .filter_map(|r| r["client_addr"].as_str())
        .collect();
    assert_eq!(addresses, ["203.0.113.9", "127.0.0.1"]);
}

#[tokio::test]
async fn the_access_log_pages_and_filters() {
    let app = TestApp::spawn().await;
    let db = app.database.clone();
    app.append("a", &[("user", "x")]).await;
    app.append("b", &[("user", "x")]).await;
    for path in ["/v1/sessions/a", "/v1/sessions/b", "/v1/sessions/a/context"] {
        get(&app, path, &db.reader_key).send().await.expect("sent");
    }
    let for_a = records(&app, &db.auditor_key, "session_id=a").await;
    let actions: Vec<&str> = for_a.iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(actions, ["read_session", "read_context"]);
    // Keyset pages of 2 walk every record once, ascending.
    let all = records(&app, &db.auditor_key, "").await;
    let mut walked = Vec::new();
    let mut after = 0;
    loop {
        let page = json_ok(
            get(
                &app,
                &format!("/v1/audit/access?limit=2&after_id={after}&to=2999-01-01T00:00:00Z"),
                &db.auditor_key,
            )
            .send()
            .await
            .expect("sent"),
        )
        .await;
        let ids: Vec<i64> = page["records"]
            .as_array()
            .expect("records")
            .iter()
            .filter_map(|r| r["id"].as_i64())
            .collect();
        walked.extend(ids);
        match page["next_after_id"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    let first_ids: Vec<i64> = all.iter().filter_map(|r| r["id"].as_i64()).collect();
    assert_eq!(walked[..first_ids.len()], first_ids[..]);
    assert!(walked.windows(2).all(|pair| pair[0] < pair[1]));
    let none = records(&app, &db.auditor_key, "from=2999-01-01T00:00:00Z").await;
    assert!(none.is_empty());
    for bad in [
        "limit=0",
        "limit=1001",
        "after_id=-1",
        "from=yesterday",
        "action=peek",
        "session_id=a%2Fb",
        "limit=1&limit=2",
    ] {
        assert_problem(
            get(&app, &format!("/v1/audit/access?{bad}"), &db.auditor_key)
                .send()
                .await
                .expect("sent"),
            400,
            if bad.starts_with("session_id") {
                "invalid_session_id"
            } else {
                "invalid_parameter"
            },
        )
        .await;
    }
}

/// Appends a user message with metadata to `session` as the test's writer.
async fn say(app: &TestApp, session: &str, role: &str, content: Value, metadata: Value) {
    let response = app
        .post_json(
            &format!("/v1/sessions/{session}/messages"),
            &json!({"messages": [{"role": role, "content": content, "metadata": metadata}]}),
        )
        .await;
    assert_eq!(response.status(), 201);
}

async fn search(app: &TestApp, query: &str) -> Value {
    json_ok(
        get(
            app,
            &format!("/v1/audit/search?{query}"),
            &app.database.auditor_key,
        )
        .send()
        .await
        .expect("sent"),
    )
    .await
}

/// Every page of `query` (which sets its own `limit`), following `next` until the last.
async fn search_pages(app: &TestApp, query: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = search(app, &format!("{query}{cursor}")).await;
        let next = page["next"].as_str().map(|next| format!("&after={next}"));
        pages.push(page);
        match next {
            Some(next) => cursor = next,
            None => return pages,
        }
    }
}

fn hits(page: &Value) -> Vec<(String, i64)> {
    page["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|hit| {
            (
                hit["session_id"].as_str().expect("session").to_owned(),
                hit["seq"].as_i64().expect("seq"),
            )
        })
        .collect()
}

#[tokio::test]
async fn search_finds_substrings_in_any_script_and_every_message_kind() {
    let app = TestApp::spawn().await;
    say(&app, "zh", "user", json!("我的订单号是 8892"), json!({})).await;
    say(&app, "zh", "user", json!("我想退货"), json!({})).await;
    say(
        &app,
        "de",
        "user",
        json!("Die ÜBERWEISUNG ist unterwegs"),
        json!({}),
    )
    .await;
    say(
        &app,
        "en",
        "assistant",
        json!([{"type": "text", "text": "Your order has shipped"}, "tracking 77-ab"]),
        json!({}),
    )
    .await;
    say(
        &app,
        "en",
        "tool",
        json!("{}"),
        json!({"result": {"carrier": "Parcelnet"}}),
    )
    .await;
    say(&app, "en", "user", json!("100% sure_thing"), json!({})).await;
    // Σ lower-cases to ς at a word's end and to σ inside one.
    say(
        &app,
        "el",
        "user",
        json!("Ο ΛΟΓΑΡΙΑΣΜΟΣ μου 4455"),
        json!({}),
    )
    .await;
    say(&app, "el", "user", json!("ΣΊΣΥΦΟΣüüü straße"), json!({})).await;

    assert_eq!(hits(&search(&app, "q=8892").await), [("zh".to_owned(), 1)]);
    let term = |text: &str| {
        format!(
            "q={}",
            form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
        )
    };
    for greek in ["ΛΟΓΑΡΙΑΣ", "λογαριας", "λογαριασμος"] {
        assert_eq!(
            hits(&search(&app, &term(greek)).await),
            [("el".to_owned(), 1)],
            "{greek}"
        );
    }
    assert_eq!(
        hits(&search(&app, &term("ΣΊΣΥΦΟΣ")).await),
        [("el".to_owned(), 2)]
    );
    assert_eq!(
        search(&app, &term("σίσυφος")).await["results"][0]["snippet"],
        "[[ΣΊΣΥΦΟΣ]]üüü straße"
    );
    assert_eq!(
        hits(&search(&app, "q=%E9%80%80%E8%B4%A7").await),
        [("zh".to_owned(), 2)],
        "退货"
    );
    assert_eq!(
        hits(&search(&app, "q=%C3%BCberweisung").await),
        [("de".to_owned(), 1)],
        "überweisung"
    );
    assert_eq!(
        hits(&search(&app, "q=SHIPPED").await),
        [("en".to_owned(), 1)]
    );
    assert_eq!(
        hits(&search(&app, "q=77-ab").await),
        [("en".to_owned(), 1)],
        "a string block"
    );
    assert_eq!(
        hits(&search(&app, "q=parcelnet").await),
        [("en".to_owned(), 2)],
        "a metadata value"
    );
    assert_eq!(
        hits(&search(&app, "q=%22order%20has%22").await),
        [("en".to_owned(), 1)],
        "a phrase"
    );
    assert!(
        hits(&search(&app, "q=%22has%20order%22").await).is_empty(),
        "words out of order"
    );
    assert!(
        hits(&search(&app, "q=order%20parcelnet").await).is_empty(),
        "every term in one entry"
    );
    assert_eq!(
        hits(&search(&app, "q=100%25").await),
        [("en".to_owned(), 3)],
        "LIKE characters are literal"
    );
    assert!(hits(&search(&app, "q=1_0").await).is_empty());
    assert!(
        hits(&search(&app, "q=type").await).is_empty(),
        "block keys are not text"
    );

    let page = search(&app, "q=8892%20%E8%AE%A2%E5%8D%95").await;
    let hit = &page["results"][0];
    assert_eq!(hit["snippet"], "我的[[订单]]号是 [[8892]]");
    assert_eq!(hit["role"], "user");
    assert_eq!(hit["author"], app.database.writer_key_id.as_str());
    assert_eq!(hit["entry"]["content"], "我的订单号是 8892");
    assert_eq!(hit["entry"]["hash"].as_str().map(str::len), Some(64));
    assert_eq!(
        search(&app, "q=%C3%BCberweisung").await["results"][0]["snippet"],
        "Die [[ÜBERWEISUNG]] ist unterwegs"
    );
}

/// A 2-character term gives the trigram index nothing; its pages come from a wider walk of the
/// newest messages (migration 0015), which must page exactly as the index does.
#[tokio::test]
async fn the_cursor_walks_a_two_character_term_once_newest_first() {
    let app = TestApp::spawn().await;
    for n in 0..8 {
        let text = if n % 4 == 3 {
            format!("订单 {n} 已发货")
        } else {
            format!("我想退货 {n}")
        };
        say(&app, &format!("s{}", n % 3), "user", json!(text), json!({})).await;
    }
    let newest_first: Vec<String> = [6, 5, 4, 2, 1, 0]
        .iter()
        .map(|n| format!("我想退货 {n}"))
        .collect();
    let walked: Vec<String> = search_pages(&app, "q=%E9%80%80%E8%B4%A7&limit=2")
        .await
        .iter()
        .flat_map(|page| page["results"].as_array().expect("results").clone())
        .map(|h| h["entry"]["content"].as_str().expect("content").to_owned())
        .collect();
    assert_eq!(walked, newest_first, "every match once, newest first");
}

#[tokio::test]
async fn search_filters_combine_and_the_cursor_walks_every_result_once_newest_first() {
    let app = TestApp::spawn().await;
    let db = app.database.clone();
    for n in 0..7 {
        say(
            &app,
            &format!("s{}", n % 2),
            if n % 3 == 0 { "assistant" } else { "user" },
            json!(format!("refund request {n}")),
            json!({"n": n, "tag": if n < 4 { "early" } else { "late" }}),
        )
        .await;
    }
    let all = hits(&search(&app, "q=refund&limit=200").await);
    assert_eq!(all.len(), 7);
    let newest_first: Vec<String> = (0..7)
        .rev()
        .map(|n| format!("refund request {n}"))
        .collect();
    let page = search(&app, "q=refund&limit=200").await;
    let contents: Vec<String> = page["results"]
        .as_array()
        .expect("r")
        .iter()
        .map(|h| h["entry"]["content"].as_str().expect("c").to_owned())
        .collect();
    assert_eq!(contents, newest_first);

    let walked: Vec<(String, i64)> = search_pages(&app, "q=refund&limit=3")
        .await
        .iter()
        .flat_map(hits)
        .collect();
    assert_eq!(walked, all, "every result once, in order");

    assert_eq!(hits(&search(&app, "q=refund&session_id=s1").await).len(), 3);
    assert_eq!(
        hits(&search(&app, "q=refund&role=assistant").await).len(),
        3
    );
    assert_eq!(
        hits(&search(&app, "role=assistant&session_id=s0").await).len(),
        2,
        "filters alone"
    );
    assert_eq!(
        hits(&search(&app, &format!("author={}", db.writer_key_id)).await).len(),
        7
    );
    assert_eq!(
        hits(&search(&app, "q=refund&metadata=%7B%22tag%22%3A%22late%22%7D").await).len(),
        3
    );
    assert_eq!(
        hits(&search(&app, "q=refund&from=2999-01-01T00:00:00Z").await).len(),
        0
    );
    assert_eq!(
        hits(
            &search(
                &app,
                "q=refund&to=2999-01-01T00:00:00Z&from=2000-01-01T00:00:00%2B02:00"
            )
            .await
        )
        .len(),
        7
    );

    for bad in [
        "",
        "limit=5",
        "q=x&limit=0",
        "q=x&limit=201",
        "q=x&role=robot",
        "q=x&from=yesterday",
        "q=x&metadata=%5B1%5D",
        "q=x&metadata=nope",
        // {"a":1,"a":2}: a key twice.
        "q=x&metadata=%7B%22a%22%3A1%2C%22a%22%3A2%7D",
        "q=x&after=garbage",
        "q=%22unclosed",
        "q=x&q=y",
    ] {
        assert_problem(
            get(&app, &format!("/v1/audit/search?{bad}"), &db.auditor_key)
                .send()
                .await
                .expect("sent"),
            400,
            "invalid_parameter",
        )
        .await;
    }
    assert_problem(
        get(
            &app,
            "/v1/audit/search?q=x&session_id=a%2Fb",
            &db.auditor_key,
        )
        .send()
        .await
        .expect("sent"),
        400,
        "invalid_session_id",
    )
    .await;
    assert_problem(
        get(&app, "/v1/audit/search?q=x", &db.reader_key)
            .send()
            .await
            .expect("sent"),
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn the_operators_audit_commands_read_the_same_data_and_are_recorded_as_the_operator() {
    let app = TestApp::spawn().await;
    let db = app.database.clone();
    say(&app, "cli", "user", json!("我的订单号是 8892"), json!({})).await;
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_chatledger"))
            .args(args)
            .args(["--database-url", &db.owner_url])
            .output()
            .expect("the binary runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    };
    let found = run(&["audit", "search", "--tenant", "acme", "8892"]);
    let hit: Value = serde_json::from_str(found.lines().next().expect("a hit")).expect("json");
    assert_eq!(
        (hit["session_id"].clone(), hit["seq"].clone()),
        (json!("cli"), json!(1))
    );
    assert_eq!(hit["snippet"], "我的订单号是 [[8892]]");
    let log = run(&["audit", "access", "--tenant", "acme"]);
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect();
    let search = lines
        .iter()
        .find(|r| r["action"] == "search")
        .expect("the search is recorded");
    assert_eq!(
        (search["actor"].clone(), search["role"].clone()),
        (json!("operator"), json!("operator"))
    );
    let listed = records(
        &app,
        &db.auditor_key,
        "actor=operator&action=read_access_log",
    )
    .await;
    assert_eq!(listed.len(), 1);
}
