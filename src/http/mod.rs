//! The HTTP API: the router, shared state, and graceful serving. Every handler reads the same
//! way: extractors (key and role first, then path, headers, body), one ledger call through
//! `AppState::run`, then the answer shaped by `views`.

mod admin;
mod audit;
mod extract;
mod holds;
mod observe;
pub mod openapi;
mod ops;
pub mod problem;
mod sessions;
mod views;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{delete, get, post};
use axum::serve::ListenerExt;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;

use crate::access::{self, Accessor, Recorded};
use crate::auth::{AdminKey, Caller, Credential, KeyCache};
use crate::db::listen::{Listener, Subscriber};
use crate::error::Error;
use crate::ledger::{Appended, Limits};
use crate::metrics;
use problem::ApiError;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub limits: Limits,
    pub admin_key: AdminKey,
    keys: Arc<KeyCache>,
    /// Peers whose `X-Forwarded-For` names the client (`--trusted-proxy`).
    trusted_proxies: Arc<[IpAddr]>,
    openapi: Arc<serde_json::Value>,
    _listener: Arc<Listener>,
}

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
        let subscribers: Vec<std::sync::Weak<dyn Subscriber>> =
            vec![Arc::downgrade(&keys) as std::sync::Weak<dyn Subscriber>];
        let listener = Listener::spawn((*pool.connect_options()).clone(), subscribers);
        Self {
            pool,
            limits,
            admin_key,
            keys,
            trusted_proxies: Arc::new([]),
            openapi: Arc::new(openapi),
            _listener: Arc::new(listener),
        }
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

    /// Work on conversation data for `caller`, recorded in the access log with it (unless the
    /// tenant's policy leaves a writer's reads out), in its own task like `run`.
    async fn recorded<W: Recorded>(
        &self,
        caller: Caller,
        accessor: Accessor,
        work: W,
    ) -> Result<W::Output, ApiError> {
        self.run(move |pool| async move {
            access::run_recorded(
                &pool,
                caller.scope(),
                caller.log_writer_reads,
                &accessor,
                work,
            )
            .await
        })
        .await
    }

    /// The 201 of an append, counted.
    fn created(&self, appended: Appended) -> views::Created {
        metrics::appended(&appended);
        views::Created(appended)
    }
}

/// The whole API as a router; tests drive it without a socket.
pub fn router(state: AppState, settings: &HttpSettings) -> Router {
    let v1 = Router::new()
        .route("/sessions", get(sessions::list_sessions))
        .route("/sessions/{session_id}", get(sessions::get_session))
        .route(
            "/sessions/{session_id}/messages",
            post(sessions::append_messages).get(sessions::list_messages),
        )
        .route("/sessions/{session_id}/reset", post(sessions::reset))
        .route("/sessions/{session_id}/context", get(sessions::context))
        .route("/sessions/{session_id}/verify", get(audit::verify))
        .route("/sessions/{session_id}/export", get(audit::export))
        .route("/sessions/{session_id}/erasure", post(holds::erase))
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
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(middleware::from_fn(observe::observe))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
        .with_state(state)
}

async fn openapi_document(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Json<serde_json::Value> {
    Json(state.openapi.as_ref().clone())
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Small responses go out at once rather than waiting on Nagle's algorithm.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
