//! Test harness: a fresh database per test and app instances serving it on port 0.

use std::time::Duration;

use chatledger::auth::AdminKey;
use chatledger::http::{self, AppState, HttpSettings};
use chatledger::ledger::Limits;
use reqwest::header::AUTHORIZATION;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The admin key of every test server.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef0123456789";

pub use crate::testdb::TestDatabase;

/// One running chatledger server.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub database: TestDatabase,
    pub pool: PgPool,
    server: JoinHandle<std::io::Result<()>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestApp {
    /// A server on a fresh database.
    pub async fn spawn() -> Self {
        Self::spawn_on(TestDatabase::new().await).await
    }

    /// Another server on an existing database.
    pub async fn spawn_on(database: TestDatabase) -> Self {
        let pool = database.runtime_pool().await;
        Self::spawn_with(database, pool, Limits::default()).await
    }

    /// A server on a fresh database that takes `X-Forwarded-For` from these peers.
    pub async fn spawn_trusting(proxies: Vec<std::net::IpAddr>) -> Self {
        let database = TestDatabase::new().await;
        let pool = database.runtime_pool().await;
        Self::spawn_with_state(database, pool.clone(), |state| state.trusting(proxies)).await
    }

    /// A server whose requests use `pool`, which may point anywhere (even at nothing).
    pub async fn spawn_with(database: TestDatabase, pool: PgPool, limits: Limits) -> Self {
        Self::spawn_with_limits(database, pool, limits).await
    }

    async fn spawn_with_limits(database: TestDatabase, pool: PgPool, limits: Limits) -> Self {
        Self::spawn_configured(database, pool, limits, HttpSettings::default(), |state| {
            state
        })
        .await
    }

    async fn spawn_with_state(
        database: TestDatabase,
        pool: PgPool,
        configure: impl FnOnce(AppState) -> AppState,
    ) -> Self {
        Self::spawn_configured(
            database,
            pool,
            Limits::default(),
            HttpSettings::default(),
            configure,
        )
        .await
    }

    /// A server with every setting a test may change.
    pub async fn spawn_configured(
        database: TestDatabase,
        pool: PgPool,
        limits: Limits,
        settings: HttpSettings,
        configure: impl FnOnce(AppState) -> AppState,
    ) -> Self {
        let admin = AdminKey::new(ADMIN_KEY).expect("admin key");
        let state = configure(AppState::new(pool.clone(), limits, admin));
        Self::serve(database, pool, state, &settings).await
    }

    async fn serve(
        database: TestDatabase,
        pool: PgPool,
        state: AppState,
        settings: &HttpSettings,
    ) -> Self {
        let router = http::router(state, settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("address"));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(http::serve(listener, router, async {
            let _ = stopped.await;
        }));
        // Requests carry the writer key unless a test says otherwise.
        let mut headers = reqwest::header::HeaderMap::new();
        let bearer = format!("Bearer {}", database.writer_key);
        headers.insert(AUTHORIZATION, bearer.parse().expect("header value"));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .default_headers(headers)
            .build()
            .expect("client");
        Self {
            address,
            client,
            database,
            pool,
            server,
            shutdown: Some(shutdown),
        }
    }

    /// Stops the server abruptly: no graceful shutdown, connections dropped.
    pub async fn kill(mut self) {
        self.server.abort();
        let _ = (&mut self.server).await;
        self.pool.close().await;
        self.shutdown.take();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_with_key(&self, path: &str, key: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// Appends `messages` (role, content) pairs and returns the 201 body.
    pub async fn append(&self, session: &str, messages: &[(&str, &str)]) -> Value {
        let messages: Vec<Value> = messages
            .iter()
            .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
            .collect();
        let response = self
            .post_json(
                &format!("/v1/sessions/{session}/messages"),
                &serde_json::json!({"messages": messages}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("json body")
    }

    /// Every entry of a session, paging through `messages`.
    pub async fn all_entries(&self, session: &str) -> Vec<Value> {
        let mut entries = Vec::new();
        let mut after = 0;
        loop {
            let page: Value = json_ok(
                self.get(&format!(
                    "/v1/sessions/{session}/messages?after_seq={after}&limit=1000"
                ))
                .await,
            )
            .await;
            entries.extend(page["entries"].as_array().expect("entries").iter().cloned());
            match page["next_after_seq"].as_i64() {
                Some(next) => after = next,
                None => return entries,
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Asserts a 200 and returns the JSON body.
pub async fn json_ok(response: Response) -> Value {
    assert_eq!(response.status(), StatusCode::OK, "unexpected status");
    response.json().await.expect("json body")
}

/// The response's Content-Type, or "" without one.
pub fn content_type(response: &Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Asserts a problem document with `status` and `code`, and returns it.
pub async fn assert_problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status for {code}");
    assert_eq!(content_type(&response), "application/problem+json");
    let problem: Value = response.json().await.expect("problem body");
    assert_eq!(problem["code"], code, "{problem}");
    assert_eq!(problem["status"], status);
    assert!(
        problem["title"].is_string()
            && problem["detail"].is_string()
            && problem["type"].is_string()
    );
    problem
}

impl TestApp {
    /// A request to `path` made with `key`, or with no Authorization header at all.
    pub fn request_as(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        // A fresh client, so the default writer key is not sent along.
        let request = reqwest::Client::new().request(method, self.url(path));
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }
}

/// The cluster's superuser on the app's database: the strongest attacker there is.
pub async fn superuser(app: &TestApp) -> sqlx::PgPool {
    superuser_on(app.database.name(), &[]).await
}

/// The cluster's superuser on `database`, with these settings for its sessions.
pub async fn superuser_on(database: &str, settings: &[(&str, &str)]) -> sqlx::PgPool {
    let url = std::env::var("CHATLEDGER_TEST_SUPERUSER_URL")
        .expect("CHATLEDGER_TEST_SUPERUSER_URL is not set: run ./scripts/test.sh");
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("superuser URL");
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.database(database).options(settings.iter().copied()))
        .await
        .expect("superuser connects")
}
