//! Observability: a request id per request (taken from `x-request-id` or made), one log line per
//! request with its route template, status and latency (and the cause of a 5xx), Prometheus
//! metrics, and the pool gauges. Bodies, headers and keys are never logged.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use std::time::Duration;

use axum::http::header::CONNECTION;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::problem::{ApiError, ErrorCause};
use super::server::Overflow;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Database calls in flight, to tell how many wait for a connection.
static IN_FLIGHT: AtomicI64 = AtomicI64::new(0);

/// Marks a database call in flight for as long as the guard lives.
pub struct InFlight;

impl InFlight {
    pub fn start() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let size = i64::from(state.pool.size());
    // The hot routes' connections between two requests are idle too, though out of the pool.
    let idle = (state.pool.num_idle() + state.warm.idle()) as i64;
    let waiting = (IN_FLIGHT.load(Ordering::Relaxed) - (size - idle)).max(0);
    metrics::gauge!("chatledger_db_pool_connections").set(size as f64);
    metrics::gauge!("chatledger_db_pool_idle_connections").set(idle as f64);
    metrics::gauge!("chatledger_db_pool_waiting_requests").set(waiting as f64);
    let text = crate::metrics::render();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}

/// The request's id, for handlers (the access log carries it).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Request id, metrics and the one log line of every request; a request on a connection
/// beyond the cap gets 503 unless it is a probe.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_acceptable_id(id))
        .map_or_else(|| hex::encode(rand::random::<[u8; 16]>()), str::to_owned);
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let overflowed = request.extensions().get::<Overflow>().is_some();
    let probe = matches!(request.uri().path(), "/healthz" | "/readyz");

    let mut response = if overflowed && !probe {
        let mut refused = ApiError::TooManyConnections.into_response();
        refused
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        refused
    } else {
        next.run(request).await
    };

    let status = response.status();
    let elapsed = started.elapsed();
    let labels = [
        ("method", method_label(&method).to_owned()),
        ("route", route.clone()),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("chatledger_http_requests_total", &labels).increment(1);
    if status == StatusCode::UNAUTHORIZED {
        metrics::counter!("chatledger_auth_failures_total").increment(1);
    }
    metrics::histogram!("chatledger_http_request_duration_seconds", &labels)
        .record(elapsed.as_secs_f64());
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    let status_code = status.as_u16();
    let cause = response
        .extensions()
        .get::<ErrorCause>()
        .map(|ErrorCause(cause)| cause.as_str());
    // A 503 is the database's trouble, expected during an outage and answered as designed: a
    // warning. Any other 5xx is a bug or worse.
    match cause {
        Some(cause) if status == StatusCode::SERVICE_UNAVAILABLE => {
            tracing::warn!(%request_id, %method, %route, status = status_code, latency_ms, error = cause, "request")
        }
        Some(cause) => {
            tracing::error!(%request_id, %method, %route, status = status_code, latency_ms, error = cause, "request failed")
        }
        None if status.is_server_error() => {
            tracing::warn!(%request_id, %method, %route, status = status_code, latency_ms, "request")
        }
        None => {
            tracing::info!(%request_id, %method, %route, status = status_code, latency_ms, "request")
        }
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// The request method as a metric label: a made-up method is `other`, so that it cannot grow
/// the set of series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// The request timeout, inside `observe` so that a request that hits it is answered with a
/// problem document, logged and counted like any other.
pub async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::TimedOut(limit).into_response(),
    }
}

/// A caller's request id is kept when it is short and harmless to log.
fn is_acceptable_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        for made_up in ["FOO", "BREW", "get"] {
            let method = Method::from_bytes(made_up.as_bytes()).expect("a token");
            assert_eq!(method_label(&method), "other", "{made_up}");
        }
    }

    #[test]
    fn request_ids_from_callers_must_be_short_and_plain() {
        assert!(is_acceptable_id("req-42_a.b:c"));
        assert!(!is_acceptable_id(""));
        assert!(!is_acceptable_id(&"a".repeat(129)));
        assert!(!is_acceptable_id("new\nline"));
        assert!(!is_acceptable_id("a b"));
    }
}
