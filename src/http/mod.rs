//! The HTTP API: the router, shared state, and graceful serving. Every handler reads the same
//! way: extractors (key and role first, then path, headers, body), one ledger call through
//! `AppState::run`, then the answer shaped by `views`.

mod admin;
mod audit;
mod checkpoints;
mod console;
mod extract;
mod holds;
mod observe;
pub mod openapi;
mod ops;
pub mod problem;
mod server;
mod sessions;
mod tail;
mod views;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::OpenApi;

use crate::access::{self, Accessor, Recorded};
use crate::auth::{AdminKey, Caller, Credential, KeyCache};
use crate::db::listen::{Listener, Subscriber};
use crate::db::warm::Warm;
use crate::error::Error;
use crate::ledger::{Appended, Limits, PageLimit};
use crate::metrics;
use crate::tail::{Advance, Announcer, Hub};
use problem::ApiError;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// The pool with the hot routes' just-released connections in front of it.
    warm: Arc<Warm>,
    /// A read replica for compliance reads (`--replica-url`); `None`: they read the primary.
    replica: Option<PgPool>,
    /// How long the replica may take to say how far behind it is: a replica that does not
    /// answer (a frozen server, which no server-side statement timeout stops) is a 503 then.
    replica_timeout: std::time::Duration,
    pub limits: Limits,
    pub admin_key: AdminKey,
    /// The largest request body accepted.
    max_body_bytes: usize,
    keys: Arc<KeyCache>,
    /// Peers whose `X-Forwarded-For` names the client (`--trusted-proxy`).
    trusted_proxies: Arc<[IpAddr]>,
    /// Verifies and exports running now; a slot is held for the whole of one.
    audits: Arc<Semaphore>,
    /// Bytes of request bodies held now, in KiB, across all requests.
    body_budget: Arc<Semaphore>,
    body_budget_kib: usize,
    openapi: Arc<serde_json::Value>,
    /// The live tails of this server and what wakes them.
    tail: Arc<Hub>,
    /// Tells every server's tails of this server's committed appends.
    announcer: Announcer,
    /// The checkpoint log's verifier key (`GET /v1/checkpoint/key`).
    log_key: Option<Arc<str>>,
    _listener: Arc<Listener>,
}

/// A verify or export in progress.
pub struct AuditSlot(#[allow(dead_code)] OwnedSemaphorePermit);

const DEFAULT_AUDITS: usize = 4;
const DEFAULT_BODY_BUDGET_KIB: usize = 64 * 1024;

/// HTTP-level settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl AppState {
    /// State for serving `pool`; starts this server's notification listener, which lives as
    /// long as the state does.
    pub fn new(pool: PgPool, limits: Limits, admin_key: AdminKey) -> Self {
        let openapi = serde_json::to_value(openapi::ApiDoc::openapi()).unwrap_or_default();
        metrics::prometheus();
        let keys = Arc::new(KeyCache::default());
        let tail = Arc::new(Hub::default());
        let subscribers: Vec<std::sync::Weak<dyn Subscriber>> = vec![
            Arc::downgrade(&keys) as std::sync::Weak<dyn Subscriber>,
            Arc::downgrade(&tail) as std::sync::Weak<dyn Subscriber>,
        ];
        let listener = Listener::spawn(pool.clone(), subscribers);
        let announcer = Announcer::spawn(pool.clone());
        Self {
            announcer,
            warm: Warm::new(pool.clone()),
            pool,
            replica: None,
            replica_timeout: std::time::Duration::from_secs(5),
            limits,
            admin_key,
            keys,
            trusted_proxies: Arc::new([]),
            audits: Arc::new(Semaphore::new(DEFAULT_AUDITS)),
            body_budget: Arc::new(Semaphore::new(DEFAULT_BODY_BUDGET_KIB)),
            body_budget_kib: DEFAULT_BODY_BUDGET_KIB,
            max_body_bytes: HttpSettings::default().max_body_bytes,
            openapi: Arc::new(openapi),
            tail,
            log_key: None,
            _listener: Arc::new(listener),
        }
    }

    /// At most `streams` live tails open per key on this server.
    pub fn streams_per_key(self, streams: usize) -> Self {
        self.tail.set_max_per_key(streams);
        self
    }

    /// Ends every live tail (the stream's body ends cleanly), now and from now on: the first
    /// step of a graceful shutdown, since a stream would otherwise never finish.
    pub fn close_streams(&self) {
        self.tail.close();
    }

    /// Live tails open now.
    pub fn open_streams(&self) -> usize {
        self.tail.open_streams()
    }

    /// At most `audits` verifies and exports at once, and `body_bytes` of request bodies in
    /// memory at once.
    pub fn bounded(mut self, audits: usize, body_bytes: usize) -> Self {
        self.audits = Arc::new(Semaphore::new(audits.max(1)));
        self.body_budget_kib = body_bytes.div_ceil(1024).max(1);
        self.body_budget = Arc::new(Semaphore::new(self.body_budget_kib));
        self
    }

    /// A slot for a verify or export, or 429 when all are taken.
    fn audit_slot(&self) -> Result<AuditSlot, ApiError> {
        self.audits
            .clone()
            .try_acquire_owned()
            .map(AuditSlot)
            .map_err(|_| {
                Error::TooManyRequests(
                    "every verify and export slot of this server is taken".into(),
                )
                .into()
            })
    }

    /// Waits until `bytes` of body fit in the budget (a body larger than the whole budget waits
    /// for all of it); the permit gives them back.
    async fn body_budget(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let total = u32::try_from(self.body_budget_kib).unwrap_or(u32::MAX);
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, total.max(1));
        self.body_budget
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(|_| ApiError::Internal("the body budget is closed".into()))
    }

    /// The page limit of a read of at most `entries`.
    fn page_limit(&self, entries: i64) -> PageLimit {
        PageLimit {
            entries,
            bytes: self.limits.max_page_bytes as i64,
        }
    }

    /// Sends compliance reads (search, export, verify, the access-log listing) to `replica`;
    /// their access records, bot reads and every write stay on the primary.
    pub fn reading_from(mut self, replica: PgPool, timeout: std::time::Duration) -> Self {
        self.replica = Some(replica);
        self.replica_timeout = timeout;
        self
    }

    /// Where compliance reads go: the replica if there is one, else the primary.
    fn reads(&self) -> &PgPool {
        self.replica.as_ref().unwrap_or(&self.pool)
    }

    /// The replica's lag in milliseconds, to show the reader how stale the answer may be;
    /// `None` without a replica.
    async fn staleness(&self) -> Result<Option<i64>, ApiError> {
        let Some(replica) = self.replica.clone() else {
            return Ok(None);
        };
        let timeout = self.replica_timeout;
        self.run(move |primary| async move {
            match tokio::time::timeout(timeout, crate::db::replica_lag_ms(&primary, &replica)).await
            {
                Ok(lag) => Ok(Some(lag?)),
                Err(_) => Err(Error::Unavailable(sqlx::Error::PoolTimedOut)),
            }
        })
        .await
    }

    /// Like `recorded`, for a compliance read: on the replica if there is one (its record still
    /// written on the primary, in this request), with the replica's lag.
    async fn recorded_read<W: Recorded>(
        &self,
        caller: Caller,
        accessor: Accessor,
        work: W,
    ) -> Result<(W::Output, Option<i64>), ApiError> {
        let Some(replica) = self.replica.clone() else {
            return Ok((self.recorded(caller, accessor, work).await?, None));
        };
        let lag = self.staleness().await?;
        let output = self
            .run(move |pool| async move {
                access::run_recorded_on(
                    &pool,
                    &replica,
                    caller.scope(),
                    caller.log_writer_reads,
                    &accessor,
                    work,
                )
                .await
            })
            .await?;
        Ok((output, lag))
    }

    /// The result of work on `reads()`, with a replica's errors read as a replica's.
    fn of_reads<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        match &self.replica {
            Some(_) => result.map_err(Error::on_replica),
            None => result,
        }
    }

    /// Like `run`, with the pool compliance reads go to.
    async fn run_read<T, F, Fut>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(PgPool) -> Fut,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let _in_flight = observe::InFlight::start();
        match tokio::spawn(work(self.reads().clone())).await {
            Ok(result) => self
                .of_reads(result)
                .inspect_err(metrics::failed)
                .map_err(ApiError::from),
            Err(join) => Err(ApiError::Internal(format!("database task failed: {join}"))),
        }
    }

    /// Serves this verifier key as the checkpoint log's.
    pub fn logging(mut self, verifier_key: String) -> Self {
        self.log_key = Some(verifier_key.into());
        self
    }

    /// Trusts `X-Forwarded-For` from these peers.
    pub fn trusting(mut self, proxies: Vec<IpAddr>) -> Self {
        self.trusted_proxies = proxies.into();
        self
    }

    /// The live key behind `credential`.
    async fn authenticate(&self, credential: &Credential) -> Result<Caller, ApiError> {
        self.keys
            .authenticate(&self.pool, credential)
            .await
            .inspect_err(metrics::failed)
            .map_err(ApiError::from)
    }

    /// Runs one unit of database work in its own task, so that a client hanging up never drops
    /// a future halfway through a database call: the work finishes (or fails) as a whole.
    async fn run<T, F, Fut>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(PgPool) -> Fut,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let _in_flight = observe::InFlight::start();
        match tokio::spawn(work(self.pool.clone())).await {
            Ok(result) => result.inspect_err(metrics::failed).map_err(ApiError::from),
            Err(join) => Err(ApiError::Internal(format!("database task failed: {join}"))),
        }
    }

    /// Like `run`, for one request's single statement on a warm connection (`db::warm`).
    async fn run_warm<T, F, Fut>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Warm>) -> Fut,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let warm = self.warm.clone();
        self.run(move |_| work(warm)).await
    }

    /// Work on conversation data for `caller`, recorded in the access log with it (unless the
    /// tenant's policy leaves a writer's reads out), in its own task like `run`.
    async fn recorded<W: Recorded>(
        &self,
        caller: Caller,
        accessor: Accessor,
        work: W,
    ) -> Result<W::Output, ApiError> {
        self.run_warm(move |warm| async move {
            access::run_recorded_warm(
                &warm,
                caller.scope(),
                caller.log_writer_reads,
                &accessor,
                work,
            )
            .await
        })
        .await
    }

    /// The 201 of a committed append of `tenant_id`'s, counted and announced to the live tails.
    fn created(&self, tenant_id: i64, appended: Appended) -> views::Created {
        metrics::appended(&appended);
        if !appended.replayed {
            self.announcer.announce(Advance::of(tenant_id, &appended));
        }
        views::Created(appended)
    }
}

/// The whole API as a router; tests drive it without a socket.
pub fn router(mut state: AppState, settings: &HttpSettings) -> Router {
    state.max_body_bytes = settings.max_body_bytes;
    let v1 = Router::new()
        .route("/sessions", get(sessions::list_sessions))
        .route("/sessions/{session_id}", get(sessions::get_session))
        .route(
            "/sessions/{session_id}/messages",
            post(sessions::append_messages).get(sessions::list_messages),
        )
        .route("/sessions/{session_id}/reset", post(sessions::reset))
        .route("/sessions/{session_id}/context", get(sessions::context))
        .route("/sessions/{session_id}/events", get(tail::events))
        .route("/sessions/{session_id}/verify", get(audit::verify))
        .route("/sessions/{session_id}/export", get(audit::export))
        .route("/sessions/{session_id}/erasure", post(holds::erase))
        .route("/sessions/{session_id}/proof", get(checkpoints::proof))
        .route("/checkpoint", get(checkpoints::latest))
        .route("/checkpoint/key", get(checkpoints::key))
        .route("/checkpoint/consistency", get(checkpoints::consistency))
        .route("/holds", post(holds::place).get(holds::list))
        .route("/holds/{id}", delete(holds::release))
        .route("/holds/{id}/sessions", post(holds::add_sessions))
        .route("/audit/search", get(audit::search))
        .route("/audit/access", get(audit::access_log))
        .route("/admin/tenants", post(admin::create_tenant))
        .route(
            "/admin/tenants/{name}/policy",
            get(admin::get_policy).put(admin::set_policy),
        )
        .route("/admin/keys", post(admin::create_key).get(admin::list_keys))
        .route("/admin/keys/{id}", delete(admin::revoke_key));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/openapi.json", get(openapi_document))
        .route("/metrics", get(observe::metrics))
        .merge(console::router())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            settings.request_timeout,
            observe::time_limit,
        ))
        .layer(middleware::from_fn(observe::observe))
        .with_state(state)
}

async fn openapi_document(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Json<serde_json::Value> {
    Json(state.openapi.as_ref().clone())
}

pub use server::{ServeSettings, raise_open_file_limit};

/// The header of an answer read from the replica: how many milliseconds its data may be behind
/// the primary (docs/scaling.md).
pub const REPLICA_LAG_HEADER: &str = "chatledger-replica-lag-ms";

/// Adds the replica's lag to an answer read from it.
fn with_staleness(
    mut response: axum::response::Response,
    lag: Option<i64>,
) -> axum::response::Response {
    if let Some(lag) = lag {
        response.headers_mut().insert(
            axum::http::HeaderName::from_static(REPLICA_LAG_HEADER),
            axum::http::HeaderValue::from(lag),
        );
    }
    response
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes in-flight requests
/// (within the default drain limit).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, router, shutdown, ServeSettings::default()).await
}

/// `serve` with these connection settings.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    settings: ServeSettings,
) -> std::io::Result<()> {
    server::serve(listener, router, shutdown, settings).await
}
