//! Probes for orchestrators; none needs a key.

use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 200 when the database answers and every migration is applied, else 503.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, body = String), (status = 503, body = String))
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    let pool = state.pool.clone();
    match tokio::spawn(async move { crate::db::ready(&pool).await }).await {
        Ok(Ok(true)) => (StatusCode::OK, "ready"),
        Ok(Ok(false)) => (StatusCode::SERVICE_UNAVAILABLE, "migrations pending"),
        Ok(Err(_)) | Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable"),
    }
}
