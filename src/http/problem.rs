//! The one mapping from errors to RFC 9457 problem documents, and the problem responses each kind
//! of route documents. 5xx bodies stay generic; their cause travels in a response extension and
//! is logged once by the observing middleware.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};

use crate::error::{Error, Invalid, InvalidKind};

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] Error),
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the request took longer than {0:?}")]
    TimedOut(std::time::Duration),
    #[error("the server has too many open connections")]
    TooManyConnections,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::Domain(Error::Invalid(invalid))
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:chatledger:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// Stable snake_case identifier to branch on.
    pub code: &'static str,
    /// With `seq_conflict`: the session's last seq (0 for a missing session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_seq: Option<i64>,
    /// With `legal_hold`: the ids of the holds that cover the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds: Option<Vec<i64>>,
}

/// The cause of a 5xx response, for the logging middleware.
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Domain(Error::Invalid(invalid)) => match invalid.kind {
                InvalidKind::Malformed => {
                    (StatusCode::BAD_REQUEST, "malformed_json", "Malformed JSON")
                }
                InvalidKind::SessionId => (
                    StatusCode::BAD_REQUEST,
                    "invalid_session_id",
                    "Invalid session id",
                ),
                InvalidKind::IdempotencyKey => (
                    StatusCode::BAD_REQUEST,
                    "invalid_idempotency_key",
                    "Invalid Idempotency-Key",
                ),
                InvalidKind::Parameter => (
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    "Invalid parameter",
                ),
                InvalidKind::Validation => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    "Validation failed",
                ),
                InvalidKind::Text => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_text",
                    "Text cannot be stored",
                ),
                InvalidKind::Number => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_number",
                    "Number outside the I-JSON range",
                ),
                InvalidKind::TooLarge => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "Payload too large",
                ),
            },
            ApiError::Domain(Error::Unauthenticated) => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Unauthenticated",
            ),
            ApiError::Domain(Error::Forbidden) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::Domain(Error::AlreadyExists(_)) => {
                (StatusCode::CONFLICT, "already_exists", "Already exists")
            }
            ApiError::Domain(Error::UnknownTenant) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_tenant",
                "Unknown tenant",
            ),
            ApiError::Domain(Error::NotFound) | ApiError::NotFound => {
                (StatusCode::NOT_FOUND, "not_found", "Not found")
            }
            ApiError::Domain(Error::SessionNotFound) => (
                StatusCode::NOT_FOUND,
                "session_not_found",
                "Session not found",
            ),
            ApiError::Domain(Error::TooManyRequests(_)) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "Too many requests",
            ),
            ApiError::Domain(Error::SessionClosed) => {
                (StatusCode::CONFLICT, "session_closed", "Session closed")
            }
            ApiError::Domain(Error::LegalHold { .. }) => {
                (StatusCode::CONFLICT, "legal_hold", "Under legal hold")
            }
            ApiError::Domain(Error::SeqConflict { .. }) => {
                (StatusCode::CONFLICT, "seq_conflict", "Sequence conflict")
            }
            ApiError::Domain(Error::IdempotencyKeyReused) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
            ),
            ApiError::Domain(
                Error::Unavailable(_) | Error::RecordNotWritten(_) | Error::ReplicaBehind,
            )
            | ApiError::TimedOut(_)
            | ApiError::TooManyConnections => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            ApiError::Domain(Error::Database(_) | Error::Corrupt(_)) | ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Internal error",
            ),
            ApiError::MalformedJson(_) => {
                (StatusCode::BAD_REQUEST, "malformed_json", "Malformed JSON")
            }
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::Domain(Error::Unavailable(_)) => {
                "the database is unavailable or overloaded; retry later".to_owned()
            }
            ApiError::Domain(Error::ReplicaBehind) => {
                "the read replica has not yet replayed this API key (created moments ago); retry shortly".to_owned()
            }
            ApiError::Domain(Error::RecordNotWritten(_)) => {
                "the access record of this request could not be written, so nothing is returned; retry later".to_owned()
            }
            ApiError::Domain(Error::Database(_) | Error::Corrupt(_)) | ApiError::Internal(_) => {
                "an internal error occurred; it has been logged".to_owned()
            }
            ApiError::Domain(Error::SessionNotFound) => "no such session".to_owned(),
            ApiError::Domain(Error::Unauthenticated) => {
                "send a valid, unrevoked API key as 'Authorization: Bearer <key>'".to_owned()
            }
            ApiError::UnsupportedMediaType => {
                "send the body as application/json (charset utf-8)".to_owned()
            }
            ApiError::PayloadTooLarge => "the request body exceeds the configured limit".to_owned(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        let problem = Problem {
            problem_type: format!("urn:chatledger:problem:{code}"),
            title,
            status: status.as_u16(),
            detail: self.detail(),
            code,
            current_seq: match &self {
                ApiError::Domain(Error::SeqConflict { current_seq }) => Some(*current_seq),
                _ => None,
            },
            holds: match &self {
                ApiError::Domain(Error::LegalHold { holds }) => Some(holds.clone()),
                _ => None,
            },
        };
        let mut response = (status, Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status.is_server_error() {
            response
                .extensions_mut()
                .insert(ErrorCause(self.to_string()));
        }
        response
    }
}

/// The problems of an append or reset: bad input of every kind, a stale writer.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum WriteProblems {
    #[response(
        status = 400,
        description = "Malformed JSON, session id, idempotency key or parameter",
        content_type = "application/problem+json"
    )]
    BadRequest(#[to_schema] Problem),
    #[response(
        status = 401,
        description = "Missing, unknown or revoked key",
        content_type = "application/problem+json"
    )]
    Unauthenticated(#[to_schema] Problem),
    #[response(
        status = 403,
        description = "The key's role may not do this",
        content_type = "application/problem+json"
    )]
    Forbidden(#[to_schema] Problem),
    #[response(
        status = 404,
        description = "No such session (resets only)",
        content_type = "application/problem+json"
    )]
    NotFound(#[to_schema] Problem),
    #[response(
        status = 409,
        description = "expected_seq is stale (seq_conflict, with current_seq), the session is closed (session_closed), or it is held (legal_hold, with holds)",
        content_type = "application/problem+json"
    )]
    Conflict(#[to_schema] Problem),
    #[response(
        status = 413,
        description = "Body or message beyond the configured limit",
        content_type = "application/problem+json"
    )]
    TooLarge(#[to_schema] Problem),
    #[response(
        status = 415,
        description = "The body is not application/json",
        content_type = "application/problem+json"
    )]
    UnsupportedMediaType(#[to_schema] Problem),
    #[response(
        status = 422,
        description = "Invalid body: validation_failed, invalid_text, invalid_number, idempotency_key_reused",
        content_type = "application/problem+json"
    )]
    Unprocessable(#[to_schema] Problem),
    #[response(
        status = 503,
        description = "The database is unavailable; retry after Retry-After",
        content_type = "application/problem+json"
    )]
    Unavailable(#[to_schema] Problem),
}

/// The problems of a read of one session.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum ReadProblems {
    #[response(
        status = 400,
        description = "Malformed session id or parameter",
        content_type = "application/problem+json"
    )]
    BadRequest(#[to_schema] Problem),
    #[response(
        status = 401,
        description = "Missing, unknown or revoked key",
        content_type = "application/problem+json"
    )]
    Unauthenticated(#[to_schema] Problem),
    #[response(
        status = 403,
        description = "The key's role may not do this",
        content_type = "application/problem+json"
    )]
    Forbidden(#[to_schema] Problem),
    #[response(
        status = 404,
        description = "No such session in the key's tenant",
        content_type = "application/problem+json"
    )]
    NotFound(#[to_schema] Problem),
    #[response(
        status = 429,
        description = "Verifies and exports: every slot is taken; retry after Retry-After",
        content_type = "application/problem+json"
    )]
    TooMany(#[to_schema] Problem),
    #[response(
        status = 503,
        description = "The database is unavailable; retry after Retry-After",
        content_type = "application/problem+json"
    )]
    Unavailable(#[to_schema] Problem),
}

/// The problems of a live tail: no session to miss (it waits), a key's streams all open.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum TailProblems {
    #[response(
        status = 400,
        description = "Malformed session id, parameter or Last-Event-ID",
        content_type = "application/problem+json"
    )]
    BadRequest(#[to_schema] Problem),
    #[response(
        status = 401,
        description = "Missing, unknown or revoked key",
        content_type = "application/problem+json"
    )]
    Unauthenticated(#[to_schema] Problem),
    #[response(
        status = 403,
        description = "The key's role may not do this",
        content_type = "application/problem+json"
    )]
    Forbidden(#[to_schema] Problem),
    #[response(
        status = 429,
        description = "The key has its maximum of open streams on this server; retry after Retry-After",
        content_type = "application/problem+json"
    )]
    TooMany(#[to_schema] Problem),
    #[response(
        status = 503,
        description = "The database is unavailable; retry after Retry-After",
        content_type = "application/problem+json"
    )]
    Unavailable(#[to_schema] Problem),
}

/// The problems of a listing: no session to miss.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum ListProblems {
    #[response(
        status = 400,
        description = "Malformed parameter",
        content_type = "application/problem+json"
    )]
    BadRequest(#[to_schema] Problem),
    #[response(
        status = 401,
        description = "Missing, unknown or revoked key",
        content_type = "application/problem+json"
    )]
    Unauthenticated(#[to_schema] Problem),
    #[response(
        status = 403,
        description = "The key's role may not do this",
        content_type = "application/problem+json"
    )]
    Forbidden(#[to_schema] Problem),
    #[response(
        status = 503,
        description = "The database is unavailable; retry after Retry-After",
        content_type = "application/problem+json"
    )]
    Unavailable(#[to_schema] Problem),
}

/// The problems of an admin change.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum AdminProblems {
    #[response(
        status = 400,
        description = "Malformed JSON",
        content_type = "application/problem+json"
    )]
    BadRequest(#[to_schema] Problem),
    #[response(
        status = 401,
        description = "Missing or unknown key",
        content_type = "application/problem+json"
    )]
    Unauthenticated(#[to_schema] Problem),
    #[response(
        status = 403,
        description = "Not the admin key",
        content_type = "application/problem+json"
    )]
    Forbidden(#[to_schema] Problem),
    #[response(
        status = 404,
        description = "No such key",
        content_type = "application/problem+json"
    )]
    NotFound(#[to_schema] Problem),
    #[response(
        status = 409,
        description = "Exists already",
        content_type = "application/problem+json"
    )]
    Conflict(#[to_schema] Problem),
    #[response(
        status = 413,
        description = "Body beyond the configured limit",
        content_type = "application/problem+json"
    )]
    TooLarge(#[to_schema] Problem),
    #[response(
        status = 415,
        description = "The body is not application/json",
        content_type = "application/problem+json"
    )]
    UnsupportedMediaType(#[to_schema] Problem),
    #[response(
        status = 422,
        description = "Invalid body, unknown tenant",
        content_type = "application/problem+json"
    )]
    Unprocessable(#[to_schema] Problem),
    #[response(
        status = 503,
        description = "The database is unavailable; retry after Retry-After",
        content_type = "application/problem+json"
    )]
    Unavailable(#[to_schema] Problem),
}
