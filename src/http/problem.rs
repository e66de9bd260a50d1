//! The one mapping from errors to RFC 9457 problem documents. 5xx bodies stay generic; their
//! cause travels in a response extension and is logged once by the error-logging middleware.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::ledger::{self, InvalidKind};

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("missing or invalid API key")]
    Unauthenticated,
    #[error("the API key's role may not do this")]
    Forbidden,
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ledger::Invalid> for ApiError {
    fn from(invalid: ledger::Invalid) -> Self {
        ApiError::Ledger(ledger::Error::Invalid(invalid))
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
}

/// The cause of a 5xx response, for the logging middleware.
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ledger::Error as L;
        match self {
            ApiError::Ledger(L::Invalid(invalid)) => match invalid.kind {
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
            ApiError::Ledger(L::Unauthenticated) | ApiError::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Unauthenticated",
            ),
            ApiError::Ledger(L::Forbidden) | ApiError::Forbidden => {
                (StatusCode::FORBIDDEN, "forbidden", "Forbidden")
            }
            ApiError::Ledger(L::AlreadyExists(_)) => {
                (StatusCode::CONFLICT, "already_exists", "Already exists")
            }
            ApiError::Ledger(L::UnknownTenant) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_tenant",
                "Unknown tenant",
            ),
            ApiError::Ledger(L::NotFound) | ApiError::NotFound => {
                (StatusCode::NOT_FOUND, "not_found", "Not found")
            }
            ApiError::Ledger(L::SessionNotFound) => (
                StatusCode::NOT_FOUND,
                "session_not_found",
                "Session not found",
            ),
            ApiError::Ledger(L::SeqConflict { .. }) => {
                (StatusCode::CONFLICT, "seq_conflict", "Sequence conflict")
            }
            ApiError::Ledger(L::IdempotencyKeyReused) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
            ),
            ApiError::Ledger(L::Unavailable(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            ApiError::Ledger(L::Database(_)) | ApiError::Internal(_) => (
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
            ApiError::Ledger(ledger::Error::Unavailable(_)) => {
                "the database is unavailable or overloaded; retry later".to_owned()
            }
            ApiError::Ledger(ledger::Error::Database(_)) | ApiError::Internal(_) => {
                "an internal error occurred; it has been logged".to_owned()
            }
            ApiError::Ledger(ledger::Error::SessionNotFound) => "no such session".to_owned(),
            ApiError::Unauthenticated | ApiError::Ledger(ledger::Error::Unauthenticated) => {
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
                ApiError::Ledger(ledger::Error::SeqConflict { current_seq }) => Some(*current_seq),
                _ => None,
            },
        };
        let mut response = (status, Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
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
