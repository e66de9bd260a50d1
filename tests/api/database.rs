//! What the database itself guarantees, and how the service behaves when it is gone.

use std::time::{Duration, Instant};

use chatledger::db;
use chatledger::db::warm::Warm;
use chatledger::error::Error;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{TestApp, TestDatabase, assert_problem, superuser_on};

#[tokio::test]
async fn the_database_refuses_update_delete_and_truncate_even_for_the_owner() {
    let app = TestApp::spawn().await;
    let body = json!({"messages": [{"role": "user", "content": "immutable"}, {"role": "assistant", "content": "truly"}]});
    assert_eq!(
        app.post_with_key("/v1/sessions/sealed/messages", "sealed-1", &body)
            .await
            .status(),
        201
    );
    let owner = app.database.owner_pool().await;
    let attacks = [
        "UPDATE entries SET content = '\"edited\"'",
        "DELETE FROM entries",
        "TRUNCATE entries CASCADE",
        "UPDATE idempotency_keys SET first_seq = 0",
        // The one update a key takes is forgetting its request digest, as an erasure does.
        "UPDATE idempotency_keys SET request_digest = sha256('guess')",
        "UPDATE idempotency_keys SET request_digest = '\\x00', last_seq = 0",
        "DELETE FROM idempotency_keys",
        "TRUNCATE idempotency_keys",
        "UPDATE sessions SET last_seq = last_seq - 1",
        "UPDATE sessions SET session_id = 'other'",
        "UPDATE sessions SET head_hash = head_hash, last_seq = last_seq",
        "DELETE FROM sessions",
        "TRUNCATE sessions CASCADE",
        // The one update an entry takes is the erasure of its payload, whole and once.
        "UPDATE entries SET content = NULL, metadata = NULL, salt = NULL, erased_at = now(), author = 'x'",
        "UPDATE entries SET content = NULL, erased_at = now()",
        "UPDATE entries SET metadata = NULL, salt = NULL, content = NULL",
        "UPDATE api_keys SET label = 'renamed'",
        "UPDATE api_keys SET role = 'writer', revoked_at = now()",
        "DELETE FROM api_keys",
        "TRUNCATE api_keys CASCADE",
    ];
    for attack in attacks {
        // The owner is not bound by row-level security here only through FORCE; bind the tenant so
        // that rows are visible and the triggers, not RLS, are what refuses.
        let mut tx = owner.begin().await.expect("begin");
        sqlx::query("SELECT set_config('chatledger.tenant_id', (SELECT id::text FROM tenants WHERE name = 'acme'), true)")
            .execute(&mut *tx)
            .await
            .expect("bind tenant");
        let error = sqlx::query(attack)
            .execute(&mut *tx)
            .await
            .expect_err(attack);
        tx.rollback().await.expect("rollback");
        let message = error.to_string();
        assert!(
            [
                "not allowed",
                "may only advance",
                "may only be revoked",
                "may only have its payload erased",
                "may only forget its request digest"
            ]
            .iter()
            .any(|refusal| message.contains(refusal)),
            "{attack}: {message}"
        );
    }
    let runtime = app.database.runtime_pool().await;
    for attack in [
        "UPDATE entries SET author = 'x'",
        "DELETE FROM entries",
        "TRUNCATE entries",
        "DELETE FROM sessions",
    ] {
        let error = sqlx::query(attack)
            .execute(&runtime)
            .await
            .expect_err(attack);
        assert!(
            error.to_string().contains("permission denied"),
            "{attack}: {error}"
        );
    }
    assert_eq!(app.all_entries("sealed").await.len(), 2);
}

#[tokio::test]
async fn the_runtime_role_is_unprivileged_timed_out_and_sees_no_row_without_a_tenant() {
    let app = TestApp::spawn().await;
    app.append("hidden", &[("user", "secret")]).await;
    let runtime = app.database.runtime_pool().await;
    let (user, superuser, bypass): (String, bool, bool) = sqlx::query_as(
        "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&runtime)
    .await
    .expect("role");
    assert_eq!(user, "chatledger_app");
    assert!(!superuser && !bypass);
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&runtime)
        .await
        .expect("show");
    assert_eq!(timeout, "5s");
    let idle: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(&runtime)
        .await
        .expect("show");
    assert_eq!(idle, "10s");
    for table in ["entries", "sessions", "idempotency_keys"] {
        let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&runtime)
            .await
            .expect("count");
        assert_eq!(count, 0, "{table} is invisible without a tenant");
    }
}

#[tokio::test]
async fn an_unreachable_database_gives_a_quick_503_with_retry_after_and_readiness_fails() {
    let database = TestDatabase::new().await;
    let dead = PgConnectOptions::new()
        .socket("/nonexistent-chatledger-socket-dir")
        .database("nothing");
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(dead);
    let app = TestApp::spawn_with(database, pool, Default::default()).await;

    let started = Instant::now();
    let response = app
        .post_json(
            "/v1/sessions/x/messages",
            &json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let problem = assert_problem(response, 503, "unavailable").await;
    assert!(
        !problem.to_string().contains("nonexistent"),
        "no internals leak: {problem}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered instead of hanging"
    );
    assert_problem(app.get("/v1/sessions/x/context").await, 503, "unavailable").await;
    assert_eq!(app.get("/readyz").await.status(), 503);
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// Longer than the pool's alive-bypass window: a connection idle this long is pinged before use.
const IDLE_PAST_BYPASS: Duration = db::ALIVE_BYPASS.saturating_add(Duration::from_millis(100));

/// Ends every connection the server's pool holds on the test database, waits until PostgreSQL
/// shows them gone (new ones may open meanwhile), and returns how many there were.
async fn cut_pooled_connections(app: &TestApp) -> i64 {
    let superuser = superuser_on("postgres", &[]).await;
    let cut: Vec<i32> = sqlx::query_scalar(
        // Materialized, so that the filter picks the victims before anything is terminated.
        "WITH pool AS MATERIALIZED (
             SELECT pid FROM pg_stat_activity
              WHERE datname = $1 AND application_name = 'chatledger')
         SELECT pid FROM pool WHERE pg_terminate_backend(pid)",
    )
    .bind(app.database.name())
    .fetch_all(&superuser)
    .await
    .expect("terminate");
    assert!(!cut.is_empty(), "the pool held a connection");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
        .bind(&cut)
        .fetch_one(&superuser)
        .await
        .expect("activity")
        > 0
    {
        assert!(Instant::now() < deadline, "the backends did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cut.len() as i64
}

#[tokio::test]
async fn a_pooled_connection_the_database_closed_is_a_503_at_worst_and_replaced_once_idle() {
    let app = TestApp::spawn().await;
    app.append("pooled", &[("user", "hello")]).await;
    assert_eq!(app.get("/v1/sessions/pooled/context").await.status(), 200);

    // Used within the alive-bypass window, a dead connection is handed out unpinged:
    // its request is a 503 to retry, never a 500, and the connection is dropped.
    let cut = cut_pooled_connections(&app).await;
    let mut unavailable = 0;
    loop {
        let status = app.get("/v1/sessions/pooled/context").await.status();
        match status.as_u16() {
            200 => break,
            503 => unavailable += 1,
            other => panic!("a cut connection answers 200 or 503, not {other}"),
        }
        assert!(
            unavailable <= cut,
            "each cut connection fails one request at most"
        );
    }
    for _ in 0..3 {
        assert_eq!(app.get("/v1/sessions/pooled/context").await.status(), 200);
    }

    // Idle for longer than the window, each pooled connection is pinged before use, and a dead
    // one replaced: no request sees it.
    cut_pooled_connections(&app).await;
    tokio::time::sleep(IDLE_PAST_BYPASS).await;
    for _ in 0..3 {
        assert_eq!(app.get("/v1/sessions/pooled/context").await.status(), 200);
    }
}

#[tokio::test]
async fn a_database_closed_to_new_connections_is_a_503_and_open_again_serves() {
    let app = TestApp::spawn().await;
    app.append("maintenance", &[("user", "hello")]).await;
    // From another database: once this one refuses connections, it refuses the superuser too.
    let superuser = superuser_on("postgres", &[]).await;
    let allow = |allowed: bool| {
        let superuser = superuser.clone();
        let statement = format!(
            "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS {allowed}",
            app.database.name()
        );
        async move {
            sqlx::query(&statement)
                .execute(&superuser)
                .await
                .expect("alter database");
        }
    };
    allow(false).await;
    // The pool's connections gone and idle past the alive-bypass window, a request must open a
    // new one, which PostgreSQL refuses with SQLSTATE 55000.
    cut_pooled_connections(&app).await;
    tokio::time::sleep(IDLE_PAST_BYPASS).await;
    let refused = app.get("/v1/sessions/maintenance/context").await;
    allow(true).await;
    assert_eq!(
        refused.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_problem(refused, 503, "unavailable").await;
    assert_eq!(
        app.get("/v1/sessions/maintenance/context").await.status(),
        200
    );
}

#[tokio::test]
async fn probes_and_the_openapi_document_need_no_key_and_cover_every_route() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    let document: serde_json::Value = app.get("/openapi.json").await.json().await.expect("json");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|version| version.starts_with("3.1"))
    );
    let paths = document["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/v1/sessions", &["get"][..]),
        ("/v1/sessions/{session_id}", &["get"]),
        ("/v1/sessions/{session_id}/messages", &["get", "post"]),
        ("/v1/sessions/{session_id}/reset", &["post"]),
        ("/v1/sessions/{session_id}/context", &["get"]),
        ("/v1/sessions/{session_id}/events", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
    ] {
        for method in methods {
            assert!(
                paths.get(path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} documented"
            );
        }
    }
}

/// Tables without `tenant_id` that hold no tenant's rows of their own, or global tables that a
/// sharded deployment would replicate to every node (Citus reference tables): docs/scaling.md.
/// The checkpoint log is one tree for the whole deployment, ordered across tenants: its tables
/// are global (a sharded deployment keeps them on the coordinator, fed by every shard).
const GLOBAL_TABLES: &[&str] = &[
    "_sqlx_migrations",
    "tenants",
    "api_keys",
    "tail_secret",
    "tlog_pending",
    "tlog_leaves",
    "tlog_hashes",
    "tlog_checkpoints",
];

#[tokio::test]
async fn every_tenant_scoped_table_keys_on_tenant_id_so_that_it_can_be_sharded_by_tenant() {
    let database = TestDatabase::new().await;
    let owner = database.owner_pool().await;
    // Every ordinary table of chatledger's schema; whether it has tenant_id; and each primary
    // key, unique constraint and unique index on it that leaves tenant_id out.
    let tables: Vec<(String, bool, Vec<String>)> = sqlx::query_as(
        "SELECT c.relname::text,
                EXISTS (SELECT 1 FROM pg_attribute a
                         WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped),
                coalesce(array_agg(i.relname::text ORDER BY i.relname)
                             FILTER (WHERE i.relname IS NOT NULL), '{}')
           FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_index x ON x.indrelid = c.oid AND x.indisunique
                AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                                 WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                                   AND a.attnum = ANY (x.indkey::int2[]))
           LEFT JOIN pg_class i ON i.oid = x.indexrelid
          WHERE n.oid = (SELECT relnamespace FROM pg_class WHERE oid = 'entries'::regclass)
            AND c.relkind IN ('r', 'p')
          GROUP BY c.oid, c.relname
          ORDER BY c.relname",
    )
    .fetch_all(&owner)
    .await
    .expect("the catalog answers");
    let scoped: Vec<&str> = tables
        .iter()
        .filter(|(name, _, _)| !GLOBAL_TABLES.contains(&name.as_str()))
        .map(|(name, _, _)| name.as_str())
        .collect();
    for expected in [
        "sessions",
        "entries",
        "idempotency_keys",
        "access_records",
        "holds",
    ] {
        assert!(
            scoped.contains(&expected),
            "{expected} is tenant-scoped: {scoped:?}"
        );
    }
    let mut problems = Vec::new();
    for (name, has_tenant_id, keys_without_tenant) in &tables {
        if GLOBAL_TABLES.contains(&name.as_str()) {
            continue;
        }
        if !has_tenant_id {
            problems.push(format!(
                "{name} has no tenant_id: give it one, or list it in GLOBAL_TABLES if it is \
                 global (a reference table when sharded)"
            ));
        }
        for key in keys_without_tenant {
            problems.push(format!("{name}: {key} is unique without tenant_id"));
        }
    }
    assert!(
        problems.is_empty(),
        "not shardable by tenant_id:\n{}",
        problems.join("\n")
    );
    owner.close().await;
}

#[tokio::test]
async fn a_multi_host_url_with_no_writable_host_is_refused_without_echoing_it() {
    let dir =
        std::env::temp_dir().join(format!("chatledger-nohost-{:016x}", rand::random::<u64>()));
    let url = format!(
        "postgres://owner:hunter2@localhost/db?host={0}/a,{0}/b&port=5432,5433",
        dir.display()
    );
    let opened =
        chatledger::db::Database::open(Some(&url), &dir, chatledger::db::IfNoCluster::Refuse).await;
    let message = match opened {
        Ok(_) => panic!("no host accepts writes, yet the database opened"),
        Err(error) => error.to_string(),
    };
    assert!(
        message.contains("none of the 2 database hosts accepts writes"),
        "{message}"
    );
    assert!(
        !message.contains("hunter2") && !message.contains("/a"),
        "{message}"
    );
}

/// The server process a connection talks to.
async fn backend_pid(db: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(db)
        .await
        .expect("pg_backend_pid")
}

/// A runtime pool of `size` connections.
async fn runtime_pool_of(database: &TestDatabase, size: u32) -> sqlx::PgPool {
    let settings = db::PoolSettings {
        max_connections: size,
        ..db::PoolSettings::default()
    };
    db::runtime_pool(&database.owner, &settings)
        .await
        .expect("pool")
}

/// A connection that answered cleanly goes from one request straight to the next (no ping on
/// the way), and back to the pool when its lease ends.
#[tokio::test]
async fn a_warm_connection_serves_the_next_request_until_its_lease_ends() {
    let database = TestDatabase::new().await;
    let pool = database.runtime_pool().await;
    let warm = Warm::new(pool.clone());
    let mut first = warm.acquire().await.expect("acquire");
    let pid = backend_pid(&mut first).await;
    warm.release(first, &Ok::<(), Error>(()));
    assert_eq!(warm.idle(), 1);
    let mut second = warm.acquire().await.expect("acquire");
    assert_eq!(
        backend_pid(&mut second).await,
        pid,
        "not the connection just released"
    );
    assert_eq!(warm.idle(), 0);
    // A refusal says nothing about the connection.
    let idle_in_pool = pool.num_idle();
    warm.release(second, &Err::<(), _>(Error::SeqConflict { current_seq: 3 }));
    assert_eq!(warm.idle(), 1);
    assert_eq!(
        pool.num_idle(),
        idle_in_pool,
        "the pool has it back before its lease ended"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while warm.idle() > 0 || pool.num_idle() == idle_in_pool {
        assert!(
            Instant::now() < deadline,
            "the connection did not go back to the pool after its lease"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What may have left a connection unfit for another request sends it back to the pool, which
/// pings it; so does a switch of the primary, for every connection leased before it.
#[tokio::test]
async fn a_connection_in_doubt_in_a_transaction_or_from_before_a_switch_is_not_handed_on() {
    let database = TestDatabase::new().await;
    let pool = database.runtime_pool().await;
    let warm = Warm::new(pool.clone());
    let failed = warm.acquire().await.expect("acquire");
    warm.release(
        failed,
        &Err::<(), _>(Error::Database(sqlx::Error::RowNotFound)),
    );
    assert_eq!(warm.idle(), 0, "kept after a database error");
    let mut open = warm.acquire().await.expect("acquire");
    let transaction = sqlx::Connection::begin(&mut *open).await.expect("begin");
    // Left open, as a bug in the work would leave it.
    std::mem::forget(transaction);
    warm.release(open, &Ok::<(), Error>(()));
    assert_eq!(warm.idle(), 0, "kept in a transaction");

    let before = warm.acquire().await.expect("acquire");
    let leased_at = before.since();
    warm.release(before, &Ok::<(), Error>(()));
    assert_eq!(warm.idle(), 1);
    // What the failover monitor does when the primary moves.
    pool.set_connect_options((*pool.connect_options()).clone());
    let after = warm.acquire().await.expect("acquire");
    assert!(
        after.since() > leased_at,
        "a connection leased before the switch was handed on"
    );
    assert_eq!(warm.idle(), 0);
}

/// Requests cycling connections through the stack leave the pool's other users (the indexer,
/// audits) their turn: each connection goes back within its lease.
#[tokio::test]
async fn warm_connections_do_not_starve_the_pools_other_users() {
    let database = TestDatabase::new().await;
    let pool = runtime_pool_of(&database, 2).await;
    let warm = Warm::new(pool.clone());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut hot = Vec::new();
    for _ in 0..4 {
        let (warm, done) = (warm.clone(), done.clone());
        hot.push(tokio::spawn(async move {
            let mut requests = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let mut db = warm.acquire().await.expect("hot acquire");
                backend_pid(&mut db).await;
                warm.release(db, &Ok::<(), Error>(()));
                requests += 1;
            }
            requests
        }));
    }
    // Both connections are in the hot loop before the other user asks.
    while pool.size() < 2 {
        tokio::task::yield_now().await;
    }
    let other = pool.acquire().await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut requests = 0;
    for task in hot {
        requests += task.await.expect("hot task");
    }
    assert!(
        other.is_ok(),
        "the pool's other user waited out its acquire timeout: {other:?}"
    );
    assert!(requests > 0);
}

/// A request that waits for a connection gets the next one released, before any request that
/// comes later and without the round trip through the pool.
#[tokio::test]
async fn a_request_waiting_for_a_connection_gets_the_next_one_released() {
    let database = TestDatabase::new().await;
    let pool = runtime_pool_of(&database, 1).await;
    let warm = Warm::new(pool.clone());
    let mut held = warm.acquire().await.expect("acquire");
    let (pid, leased_at) = (backend_pid(&mut held).await, held.since());
    let waiter = tokio::spawn({
        let warm = warm.clone();
        async move {
            let mut db = warm.acquire().await.expect("waiting acquire");
            (backend_pid(&mut db).await, db.since())
        }
    });
    while warm.waiting() == 0 {
        tokio::task::yield_now().await;
    }
    warm.release(held, &Ok::<(), Error>(()));
    assert_eq!(warm.idle(), 0, "left on the stack while a request waited");
    let (waiter_pid, waiter_since) = waiter.await.expect("waiter");
    assert_eq!(waiter_pid, pid);
    assert_eq!(
        waiter_since, leased_at,
        "the waiter's connection came from the pool, not from the request before it"
    );
}
