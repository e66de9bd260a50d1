//! Keys, roles and tenant isolation: nobody gets in where they do not belong.

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

use crate::helpers::{ADMIN_KEY, TestApp, assert_problem, json_ok};
use crate::testbin::run_cli;
use chatledger::auth::{Credential, KeyRole as Role};

/// Every session route with a body that would succeed for the right caller.
fn session_routes(session: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, "/v1/sessions".to_owned(), None),
        (Method::GET, format!("/v1/sessions/{session}"), None),
        (
            Method::GET,
            format!("/v1/sessions/{session}/messages"),
            None,
        ),
        (Method::GET, format!("/v1/sessions/{session}/context"), None),
        (
            Method::POST,
            format!("/v1/sessions/{session}/messages"),
            Some(json!({"messages": [{"role": "user", "content": "hi"}]})),
        ),
        (
            Method::POST,
            format!("/v1/sessions/{session}/reset"),
            Some(json!({})),
        ),
        (Method::GET, format!("/v1/sessions/{session}/verify"), None),
        (Method::GET, format!("/v1/sessions/{session}/export"), None),
    ]
}

/// Which key roles may use a session route: writers write, auditors audit, all three read.
fn allowed(route: &(Method, String, Option<Value>), role: &str) -> bool {
    let (method, path, _) = route;
    if *method == Method::POST {
        role == "writer"
    } else if path.ends_with("/verify") || path.ends_with("/export") {
        role == "auditor"
    } else {
        true
    }
}

fn admin_routes() -> Vec<(Method, String, Option<Value>)> {
    vec![
        (
            Method::POST,
            "/v1/admin/tenants".to_owned(),
            Some(json!({"name": "newco"})),
        ),
        (
            Method::POST,
            "/v1/admin/keys".to_owned(),
            Some(json!({"tenant": "acme", "role": "reader"})),
        ),
        (Method::GET, "/v1/admin/keys".to_owned(), None),
        (
            Method::DELETE,
            "/v1/admin/keys/key_00000000000000000000000000".to_owned(),
            None,
        ),
    ]
}

async fn call(
    app: &TestApp,
    route: &(Method, String, Option<Value>),
    key: Option<&str>,
) -> reqwest::Response {
    let (method, path, body) = route;
    let request = app.request_as(method.clone(), path, key);
    let request = match body {
        Some(body) => request.json(body),
        None => request,
    };
    request.send().await.expect("request sent")
}

/// The entry of `GET /v1/admin/keys` that `matching` picks, and the whole listing as sent.
async fn listed_key(app: &TestApp, matching: impl Fn(&Value) -> bool) -> (Value, String) {
    let response = app
        .request_as(Method::GET, "/v1/admin/keys", Some(ADMIN_KEY))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("text");
    let listed: Value = serde_json::from_str(&text).expect("json");
    let entry = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|key| matching(key))
        .expect("listed")
        .clone();
    (entry, text)
}

#[tokio::test]
async fn missing_malformed_unknown_and_revoked_keys_are_401_on_every_v1_route() {
    let app = TestApp::spawn().await;
    app.append("s", &[("user", "hi")]).await;
    let revoked = app
        .database
        .tenant_with_key("revoked-co", Role::Writer)
        .await;
    let admin = app
        .request_as(Method::GET, "/v1/admin/keys", Some(ADMIN_KEY))
        .send()
        .await
        .expect("list");
    let keys: Value = json_ok(admin).await;
    let revoked_id = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|key| key["tenant"] == "revoked-co")
        .and_then(|key| key["id"].as_str())
        .expect("revoked-co key")
        .to_owned();
    let response = app
        .request_as(
            Method::DELETE,
            &format!("/v1/admin/keys/{revoked_id}"),
            Some(ADMIN_KEY),
        )
        .send()
        .await;
    assert_eq!(response.expect("revoke").status(), 204);

    let routes: Vec<_> = session_routes("s")
        .into_iter()
        .chain(admin_routes())
        .collect();
    for route in &routes {
        assert_problem(call(&app, route, None).await, 401, "unauthenticated").await;
        assert_problem(
            call(&app, route, Some("clk_not-a-real-key")).await,
            401,
            "unauthenticated",
        )
        .await;
        assert_problem(
            call(&app, route, Some(&revoked)).await,
            401,
            "unauthenticated",
        )
        .await;
        for malformed in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            &app.database.writer_key,
        ] {
            let (method, path, _) = route;
            let response = reqwest::Client::new()
                .request(method.clone(), app.url(path))
                .header("Authorization", malformed)
                .send()
                .await
                .expect("request sent");
            assert_problem(response, 401, "unauthenticated").await;
        }
    }
    // Authentication is checked before anything else, even a bad session id or body.
    let response = app
        .request_as(Method::POST, "/v1/sessions/bad%20id/messages", None)
        .header("content-type", "text/plain")
        .body("nope")
        .send()
        .await
        .expect("sent");
    assert_problem(response, 401, "unauthenticated").await;
    let response = app
        .request_as(Method::POST, "/v1/sessions/s/messages", Some(&revoked))
        .json(&json!({"messages": []}))
        .send()
        .await
        .expect("sent");
    assert_problem(response, 401, "unauthenticated").await;
}

#[tokio::test]
async fn each_role_reaches_exactly_its_routes() {
    let app = TestApp::spawn().await;
    app.append("s", &[("user", "hi")]).await;
    let database = &app.database;
    let (writer, reader, auditor) = (
        &database.writer_key,
        &database.reader_key,
        &database.auditor_key,
    );
    for (index, route) in session_routes("s").iter().enumerate() {
        for (name, key) in [("writer", writer), ("reader", reader), ("auditor", auditor)] {
            let response = call(&app, route, Some(key)).await;
            if !allowed(route, name) {
                assert_problem(response, 403, "forbidden").await;
            } else {
                assert!(
                    response.status().is_success(),
                    "{name} on route {index}: {}",
                    response.status()
                );
            }
        }
        // The admin key manages tenants and keys and reads no conversation.
        assert_problem(call(&app, route, Some(ADMIN_KEY)).await, 403, "forbidden").await;
    }
    for route in &admin_routes() {
        for key in [writer, reader, auditor] {
            assert_problem(call(&app, route, Some(key)).await, 403, "forbidden").await;
        }
    }
    // The role is checked before the path and the body; a key whose role may use the route gets
    // the input error.
    let bad_append = (
        Method::POST,
        "/v1/sessions/bad%20id/messages".to_owned(),
        Some(json!({"messages": []})),
    );
    let bad_read = (Method::GET, "/v1/sessions/bad%20id".to_owned(), None);
    for (route, key, status, code) in [
        (&bad_append, reader.as_str(), 403, "forbidden"),
        (&bad_read, ADMIN_KEY, 403, "forbidden"),
        (&bad_read, reader, 400, "invalid_session_id"),
    ] {
        assert_problem(call(&app, route, Some(key)).await, status, code).await;
    }
}

#[tokio::test]
async fn another_tenants_session_is_404_exactly_like_a_missing_one_and_ids_do_not_collide() {
    let app = TestApp::spawn().await;
    let theirs = app.database.tenant_with_key("globex", Role::Writer).await;
    let their_auditor = app.database.key_for("globex", Role::Auditor).await;
    app.append("shared-id", &[("user", "acme's secret loan details")])
        .await;
    app.append("acme-only", &[("user", "acme only")]).await;

    for route in session_routes("acme-only") {
        let (method, path, body) = &route;
        if path == "/v1/sessions" || (method == Method::POST && path.ends_with("/messages")) {
            continue;
        }
        let key = if allowed(&route, "writer") {
            &theirs
        } else {
            &their_auditor
        };
        let foreign = call(&app, &route, Some(key)).await;
        let missing_route = (
            method.clone(),
            path.replace("acme-only", "never-created"),
            body.clone(),
        );
        let missing = call(&app, &missing_route, Some(key)).await;
        let foreign = assert_problem(foreign, 404, "session_not_found").await;
        let missing = assert_problem(missing, 404, "session_not_found").await;
        assert_eq!(
            foreign, missing,
            "{method} {path}: indistinguishable from a missing session"
        );
    }

    // The same session id in another tenant is another conversation.
    let response = app
        .request_as(
            Method::POST,
            "/v1/sessions/shared-id/messages",
            Some(&theirs),
        )
        .json(
            &json!({"expected_seq": 0, "messages": [{"role": "user", "content": "globex hello"}]}),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(
        response.status(),
        201,
        "globex's shared-id is new to globex"
    );
    let page: Value = json_ok(
        app.request_as(
            Method::GET,
            "/v1/sessions/shared-id/messages",
            Some(&theirs),
        )
        .send()
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["entries"][0]["content"], "globex hello");
    let listed: Value = json_ok(
        app.request_as(Method::GET, "/v1/sessions", Some(&theirs))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(listed["sessions"].as_array().map(Vec::len), Some(1));
    let ours = app.all_entries("shared-id").await;
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0]["content"], "acme's secret loan details");
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_by_another_instance() {
    let first = TestApp::spawn().await;
    let second = TestApp::spawn_on(first.database.clone()).await;
    let key = first.database.tenant_with_key("leaky", Role::Writer).await;
    let append = |app: &TestApp| {
        app.request_as(Method::POST, "/v1/sessions/s/messages", Some(&key))
            .json(&json!({"messages": [{"role": "user", "content": "x"}]}))
            .send()
    };
    assert_eq!(append(&second).await.expect("sent").status(), 201);
    let (listed, _) = listed_key(&first, |key| key["tenant"] == "leaky").await;
    let id = listed["id"].as_str().expect("id").to_owned();
    let revoke = first
        .request_as(
            Method::DELETE,
            &format!("/v1/admin/keys/{id}"),
            Some(ADMIN_KEY),
        )
        .send()
        .await;
    assert_eq!(revoke.expect("sent").status(), 204);
    assert_problem(append(&second).await.expect("sent"), 401, "unauthenticated").await;
    assert_problem(append(&first).await.expect("sent"), 401, "unauthenticated").await;
}

#[tokio::test]
async fn admin_routes_create_tenants_and_keys_list_them_without_secrets_and_revoke() {
    let app = TestApp::spawn().await;
    let admin = |method: Method, path: &str| app.request_as(method, path, Some(ADMIN_KEY));
    let tenant = admin(Method::POST, "/v1/admin/tenants")
        .json(&json!({"name": "initech"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(tenant.status(), 201);
    let tenant: Value = tenant.json().await.expect("json");
    assert_eq!(tenant["name"], "initech");
    let duplicate = admin(Method::POST, "/v1/admin/tenants")
        .json(&json!({"name": "initech"}))
        .send()
        .await
        .expect("sent");
    assert_problem(duplicate, 409, "already_exists").await;
    for bad in [
        json!({"name": "Initech"}),
        json!({"name": ""}),
        json!({}),
        json!({"name": "x", "extra": 1}),
    ] {
        let response = admin(Method::POST, "/v1/admin/tenants")
            .json(&bad)
            .send()
            .await
            .expect("sent");
        assert_problem(response, 422, "validation_failed").await;
    }

    let created = admin(Method::POST, "/v1/admin/keys")
        .json(&json!({"tenant": "initech", "role": "writer", "label": "support-bot"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("json");
    let secret = created["key"].as_str().expect("key").to_owned();
    assert!(secret.starts_with("clk_") && secret.len() >= 40);
    assert_eq!(
        (created["tenant"].as_str(), created["role"].as_str()),
        (Some("initech"), Some("writer"))
    );
    assert_eq!(created["label"], "support-bot");
    assert!(
        created["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("key_"))
    );

    let unknown = admin(Method::POST, "/v1/admin/keys")
        .json(&json!({"tenant": "nobody", "role": "reader"}))
        .send()
        .await;
    assert_problem(unknown.expect("sent"), 422, "unknown_tenant").await;
    let as_admin = admin(Method::POST, "/v1/admin/keys")
        .json(&json!({"tenant": "initech", "role": "admin"}))
        .send()
        .await;
    assert_problem(as_admin.expect("sent"), 422, "validation_failed").await;

    let (entry, text) = listed_key(&app, |key| key["id"] == created["id"]).await;
    assert!(!text.contains(&secret), "the list holds no secret");
    assert!(entry.get("key").is_none());
    assert_eq!(entry["revoked_at"], Value::Null);

    // The new key works, then is revoked; revoking again is harmless, an unknown id is 404.
    let append = || {
        app.request_as(Method::POST, "/v1/sessions/s/messages", Some(&secret))
            .json(&json!({"messages": [{"role": "user", "content": "x"}]}))
            .send()
    };
    let written: Value = append().await.expect("sent").json().await.expect("json");
    let entries = app
        .request_as(Method::GET, "/v1/sessions/s/messages", Some(&secret))
        .send()
        .await
        .expect("sent");
    let entries: Value = json_ok(entries).await;
    assert_eq!(
        entries["entries"][0]["author"], created["id"],
        "author is the id of the key that wrote"
    );
    assert_eq!(written["last_seq"], 1);
    let id = created["id"].as_str().expect("id");
    for _ in 0..2 {
        let revoked = admin(Method::DELETE, &format!("/v1/admin/keys/{id}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(revoked.status(), 204);
    }
    assert_problem(append().await.expect("sent"), 401, "unauthenticated").await;
    let missing = admin(
        Method::DELETE,
        "/v1/admin/keys/key_00000000000000000000000000",
    )
    .send()
    .await
    .expect("sent");
    assert_problem(missing, 404, "not_found").await;
    let (entry, _) = listed_key(&app, |key| key["id"] == created["id"]).await;
    assert!(entry["revoked_at"].is_string());
}

#[tokio::test]
async fn row_level_security_confines_a_query_without_tenant_filter_to_the_bound_tenant() {
    let app = TestApp::spawn().await;
    let globex = app.database.tenant_with_key("globex", Role::Writer).await;
    app.append("acme-1", &[("user", "a1")]).await;
    app.append("acme-2", &[("user", "a2")]).await;
    let response = app
        .request_as(
            Method::POST,
            "/v1/sessions/globex-1/messages",
            Some(&globex),
        )
        .header("Idempotency-Key", "g-1")
        .json(&json!({"messages": [{"role": "user", "content": "g1"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);

    // The app's own path: the runtime role, a pooled connection, the tenant bound by the same
    // binding every function makes first; then queries that forgot their tenant filter.
    let runtime = app.database.runtime_pool().await;
    for (key, sessions, entries, idempotency) in [
        (&app.database.reader_key, vec!["acme-1", "acme-2"], 2, 0),
        (&globex, vec!["globex-1"], 1, 1),
    ] {
        let caller = chatledger::auth::lookup(&runtime, &Credential::from_secret(key))
            .await
            .expect("a live key");
        let mut tx = runtime.begin().await.expect("begin");
        sqlx::query("SELECT set_config('chatledger.tenant_id', $1, true)")
            .bind(caller.tenant.id.to_string())
            .execute(&mut *tx)
            .await
            .expect("bind the tenant");
        let rows = sqlx::query("SELECT session_id FROM sessions ORDER BY session_id")
            .fetch_all(&mut *tx)
            .await
            .expect("q");
        let seen: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        assert_eq!(seen, sessions);
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM entries")
            .fetch_one(&mut *tx)
            .await
            .expect("q");
        assert_eq!(count, entries);
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
            .fetch_one(&mut *tx)
            .await
            .expect("q");
        assert_eq!(count, idempotency);
        // Writing into another tenant is refused by the policy's WITH CHECK as well.
        let other_tenant: i64 = sqlx::query_scalar("SELECT max(id) + 100 FROM tenants")
            .fetch_one(&mut *tx)
            .await
            .expect("q");
        let insert = sqlx::query(
            "INSERT INTO sessions (tenant_id, session_id, created_at, updated_at, head_hash) VALUES ($1, 'x', now(), now(), '\\x00')",
        )
        .bind(other_tenant)
        .execute(&mut *tx)
        .await;
        assert!(insert.is_err());
        tx.rollback().await.expect("rollback");
    }
    // After the transaction the binding is gone: a pooled connection sees nothing.
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&runtime)
        .await
        .expect("q");
    assert_eq!(count, 0);
}

#[tokio::test]
async fn the_server_refuses_to_run_requests_as_the_table_owner() {
    let app = TestApp::spawn().await;
    let owner = app.database.owner_pool().await;
    let error = chatledger::db::check_runtime_role(&owner)
        .await
        .expect_err("the owner is refused");
    assert!(
        error.to_string().contains("owns the ledger tables"),
        "{error}"
    );
    let runtime = app.database.runtime_pool().await;
    chatledger::db::check_runtime_role(&runtime)
        .await
        .expect("the runtime role is accepted");
}

#[tokio::test]
async fn a_dump_of_the_database_holds_no_plaintext_key() {
    let app = TestApp::spawn().await;
    app.append("s", &[("user", "hello")]).await;
    let pg_dump = crate::testpg::tool("pg_dump");
    let options = &app.database.owner;
    let mut command = std::process::Command::new(pg_dump);
    command
        .args(["--no-owner", "--enable-row-security", "--dbname"])
        .arg(options.get_database().expect("db"));
    if let Some(socket) = options.get_socket() {
        command.arg("--host").arg(socket);
    } else {
        command
            .arg("--host")
            .arg(options.get_host())
            .arg("--port")
            .arg(options.get_port().to_string());
    }
    command.arg("--username").arg(options.get_username());
    let output = command.output().expect("pg_dump runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dump = String::from_utf8_lossy(&output.stdout);
    assert!(
        dump.contains("COPY public.api_keys"),
        "the dump includes the key table"
    );
    for key in [
        &app.database.writer_key,
        &app.database.reader_key,
        &app.database.auditor_key,
    ] {
        assert!(
            !dump.contains(key.as_str()),
            "a plaintext key is in the dump"
        );
        assert!(
            !dump.contains(&key[4..]),
            "a key's secret part is in the dump"
        );
    }
    assert!(!dump.contains(ADMIN_KEY));
}

#[tokio::test]
async fn the_command_line_creates_tenants_and_keys_lists_and_revokes_them() {
    let app = TestApp::spawn().await;
    let run = |args: &[&str]| run_cli(args, None, Some(&app.database.owner_url));
    let (status, stdout) = run(&["tenants", "create", "umbrella"]);
    assert_eq!(status, 0, "{stdout}");
    assert_eq!(
        run(&["tenants", "create", "umbrella"]).0,
        1,
        "a duplicate tenant fails"
    );
    let (status, key) = run(&[
        "keys", "create", "--tenant", "umbrella", "--role", "writer", "--label", "cli-bot",
    ]);
    assert_eq!(status, 0);
    let key = key.trim().to_owned();
    assert!(key.starts_with("clk_"), "{key}");
    assert_eq!(
        run(&["keys", "create", "--tenant", "nobody", "--role", "writer"]).0,
        1
    );
    assert_eq!(
        run(&["keys", "create", "--tenant", "umbrella", "--role", "admin"]).0,
        1
    );

    let append = || {
        app.request_as(Method::POST, "/v1/sessions/s/messages", Some(&key))
            .json(&json!({"messages": [{"role": "user", "content": "x"}]}))
            .send()
    };
    assert_eq!(
        append().await.expect("sent").status(),
        201,
        "a key from the command line works at once"
    );

    let (status, listing) = run(&["keys", "list"]);
    assert_eq!(status, 0);
    assert!(
        !listing.contains(&key) && !listing.contains(&key[4..]),
        "no secret in the listing"
    );
    let line = listing
        .lines()
        .find(|line| line.contains("cli-bot"))
        .expect("listed");
    let id = line.split_whitespace().next().expect("id").to_owned();
    assert!(id.starts_with("key_"));

    assert_eq!(
        run(&["keys", "revoke", &id]),
        (0, format!("revoked {id}\n"))
    );
    assert_problem(append().await.expect("sent"), 401, "unauthenticated").await;
    assert_eq!(
        run(&["keys", "revoke", &id]),
        (0, format!("{id} was revoked already\n")),
        "a retried revocation succeeds and says what it found"
    );
    assert_eq!(
        run(&["keys", "revoke", "key_00000000000000000000000000"]).0,
        1
    );
    // A mistyped tenant is an error, not a sweep that found nothing due.
    assert_eq!(
        run(&["retention", "run", "--dry-run", "--tenant", "nosuch"]),
        (1, String::new())
    );
    assert_eq!(
        run(&["retention", "run", "--dry-run", "--tenant", "umbrella"]).0,
        0
    );
}
