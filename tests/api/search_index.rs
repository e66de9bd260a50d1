//! The search index is filled off the append path (migration 0012): appends queue their messages,
//! indexers take the queue, a search first indexes its own tenant's queue. These tests hold the
//! transactions of an indexer and an erasure open against each other, in both orders, and check
//! that no erased text is ever left in the index.

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::helpers::{TestApp, json_ok, superuser};

/// Marks every message of `session` erased, as an erasure's statement does (its triggers fire),
/// in the open transaction `db`.
async fn erase_in(db: &mut PgConnection, tenant: &str, session: &str) {
    sqlx::query(
        "SELECT set_config('chatledger.tenant_id', (SELECT id FROM tenants WHERE name = $1)::text, true)",
    )
    .bind(tenant)
    .execute(&mut *db)
    .await
    .expect("bind the tenant");
    erase_unbound_in(db, session).await;
}

/// The erasing statement alone: as a superuser's manual erasure runs it, with no tenant bound
/// (row-level security does not apply to a superuser).
async fn erase_unbound_in(db: &mut PgConnection, session: &str) {
    let erased = sqlx::query(
        "UPDATE entries SET content = NULL, metadata = NULL, salt = NULL, erased_at = clock_timestamp()
          WHERE session_pk = (SELECT id FROM sessions WHERE session_id = $1) AND kind = 'message'",
    )
    .bind(session)
    .execute(&mut *db)
    .await
    .expect("erase");
    assert_eq!(erased.rows_affected(), 2);
}

/// Waits until some backend of this test's database waits for an advisory lock (the other side
/// of the race has reached it); fails the test after 10 s.
async fn until_one_waits_for_the_index_lock(db: &PgPool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
        )
        .fetch_one(db)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "neither side waited for the other: they can interleave"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The text the index holds for `session`, as the superuser sees it (no row-level security).
async fn indexed_text_of(app: &TestApp, session: &str) -> Vec<String> {
    let superuser = superuser(app).await;
    sqlx::query_scalar(
        "SELECT d.text FROM search_docs d JOIN tenants t ON t.id = d.tenant_id
          WHERE d.session_pk = (SELECT s.id FROM sessions s
                                 WHERE s.tenant_id = t.id AND s.session_id = $1)",
    )
    .bind(session)
    .fetch_all(&superuser)
    .await
    .expect("search_docs")
}

async fn search(app: &TestApp, q: &str) -> Value {
    json_ok(
        app.request_as(
            reqwest::Method::GET,
            &format!("/v1/audit/search?q={q}"),
            Some(&app.database.auditor_key),
        )
        .send()
        .await
        .expect("search"),
    )
    .await
}

/// An app whose session `raced` has one turn, queued for the index; and the owner's pool.
async fn an_app_with_a_queued_turn() -> (TestApp, PgPool) {
    let app = TestApp::spawn().await;
    app.append(
        "raced",
        &[("user", "passport zx41977"), ("assistant", "thanks")],
    )
    .await;
    let owner = app.database.owner_pool().await;
    (app, owner)
}

/// An indexer's open transaction that has taken the queued turn and holds both messages' text,
/// uncommitted.
async fn an_indexer_holding_the_turn(owner: &PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut indexer = owner.begin().await.expect("begin");
    let taken: i64 = sqlx::query_scalar("SELECT chatledger_index_some(500)")
        .fetch_one(&mut *indexer)
        .await
        .expect("index");
    assert_eq!(taken, 1, "the one append was queued");
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM search_docs")
        .fetch_one(&mut *indexer)
        .await
        .expect("search_docs");
    assert_eq!(
        held, 2,
        "the indexer holds both messages' text, uncommitted"
    );
    indexer
}

async fn assert_the_erased_text_is_gone(app: &TestApp) {
    assert_eq!(indexed_text_of(app, "raced").await, Vec::<String>::new());
    assert_eq!(
        search(app, "zx41977").await["results"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn an_erasure_waits_for_an_indexer_holding_the_text_and_then_removes_it() {
    let (app, owner) = an_app_with_a_queued_turn().await;
    let indexer = an_indexer_holding_the_turn(&owner).await;
    let erasing = tokio::spawn({
        let owner = owner.clone();
        let tenant = app.database.tenant.clone();
        async move {
            let mut erasure = owner.begin().await.expect("begin");
            erase_in(&mut erasure, &tenant, "raced").await;
            erasure.commit().await.expect("commit the erasure");
        }
    });
    until_one_waits_for_the_index_lock(&owner).await;
    indexer.commit().await.expect("commit the index");
    erasing.await.expect("the erasure finished");
    assert_the_erased_text_is_gone(&app).await;
}

#[tokio::test]
async fn a_superusers_erasure_with_no_tenant_bound_also_waits_for_the_indexer() {
    let (app, owner) = an_app_with_a_queued_turn().await;
    let indexer = an_indexer_holding_the_turn(&owner).await;
    let superuser = superuser(&app).await;
    let erasing = tokio::spawn({
        let superuser = superuser.clone();
        async move {
            let mut erasure = superuser.begin().await.expect("begin");
            erase_unbound_in(&mut erasure, "raced").await;
            erasure.commit().await.expect("commit the erasure");
        }
    });
    // Only a superuser sees what another role's backend waits for.
    until_one_waits_for_the_index_lock(&superuser).await;
    indexer.commit().await.expect("commit the index");
    erasing.await.expect("the erasure finished");
    assert_the_erased_text_is_gone(&app).await;
}

#[tokio::test]
async fn an_erasure_in_progress_keeps_indexers_off_its_tenant_and_a_search_waits_for_it() {
    let (app, owner) = an_app_with_a_queued_turn().await;
    let queued = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM search_pending")
            .fetch_one(&owner)
            .await
            .expect("queue")
    };
    let mut erasure = owner.begin().await.expect("begin");
    erase_in(&mut erasure, &app.database.tenant, "raced").await;

    let taken: i64 = sqlx::query_scalar("SELECT chatledger_index_some(500)")
        .fetch_one(&owner)
        .await
        .expect("index");
    assert_eq!(taken, 0, "a background round leaves the tenant for later");
    assert_eq!(queued().await, 1);

    let searching = tokio::spawn(
        app.request_as(
            reqwest::Method::GET,
            "/v1/audit/search?q=zx41977",
            Some(&app.database.auditor_key),
        )
        .send(),
    );
    until_one_waits_for_the_index_lock(&owner).await;
    erasure.commit().await.expect("commit the erasure");
    let found = json_ok(searching.await.expect("joined").expect("search")).await;
    assert_eq!(found["results"], serde_json::json!([]), "{found}");
    assert_eq!(indexed_text_of(&app, "raced").await, Vec::<String>::new());
    assert_eq!(
        queued().await,
        0,
        "the search took the append, and left its text out"
    );
}

#[tokio::test]
async fn a_search_finds_what_was_appended_before_it_though_no_indexer_ran() {
    let app = TestApp::spawn().await;
    app.append("fresh", &[("user", "order qq8892 arrived broken")])
        .await;
    let owner = app.database.owner_pool().await;
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM search_pending")
        .fetch_one(&owner)
        .await
        .expect("queue");
    assert_eq!(queued, 1, "the append queued its message, not indexed it");

    let found = search(&app, "qq8892").await;
    assert_eq!(
        found["results"].as_array().map(Vec::len),
        Some(1),
        "{found}"
    );
    assert_eq!(found["results"][0]["session_id"], "fresh");
    assert_eq!(
        indexed_text_of(&app, "fresh").await,
        vec!["order qq8892 arrived broken".to_owned()]
    );
}
