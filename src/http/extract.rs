//! Extractors that turn requests into domain values, rejecting with our problem documents in the
//! documented order: authentication, role, path parameters, content type, body.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::AppState;
use super::problem::ApiError;
use crate::ledger::{IdempotencyKey, Invalid, InvalidKind, Scope, SessionId};

/// A caller allowed to append (role writer).
pub struct Writer(pub Scope);

/// A caller allowed to read sessions (role reader or stronger).
pub struct Reader(pub Scope);

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Writer(state.default_scope.clone()))
    }
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Reader(state.default_scope.clone()))
    }
}

/// The `{session_id}` path parameter, parsed.
pub struct SessionPath(pub SessionId);

impl<S: Send + Sync> FromRequestParts<S> for SessionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Invalid::new(InvalidKind::SessionId, "session_id is not valid UTF-8"))?;
        Ok(SessionPath(SessionId::parse(&raw)?))
    }
}

/// The optional `Idempotency-Key` header, parsed.
pub struct IdempotencyKeyHeader(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        match parts.headers.get("idempotency-key") {
            None => Ok(IdempotencyKeyHeader(None)),
            Some(value) => Ok(IdempotencyKeyHeader(Some(IdempotencyKey::parse(
                value.as_bytes(),
            )?))),
        }
    }
}

/// A JSON request body as a value: 415 for another media type, 413 beyond the body limit, 400
/// for malformed JSON, 422 for numbers no JSON implementation can hold. An empty body without a
/// Content-Type is `{}`.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let has_content_type = match request.headers().get(CONTENT_TYPE) {
            None => false,
            Some(_) if is_json(request.headers()) => true,
            Some(_) => return Err(ApiError::UnsupportedMediaType),
        };
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::MalformedJson(rejection.body_text())
                }
            })?;
        if !has_content_type {
            return if bytes.is_empty() {
                Ok(JsonBody(Value::Object(Default::default())))
            } else {
                Err(ApiError::UnsupportedMediaType)
            };
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| {
                let message = error.to_string();
                if message.starts_with("number out of range") {
                    Invalid::new(
                        InvalidKind::Number,
                        format!("body holds a number beyond any float: {message}"),
                    )
                    .into()
                } else {
                    ApiError::MalformedJson(message)
                }
            })
    }
}

/// `application/json`, optionally with `charset=utf-8`.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let mut parts = value.split(';').map(str::trim);
    let essence_ok = parts
        .next()
        .is_some_and(|essence| essence.eq_ignore_ascii_case("application/json"));
    essence_ok
        && parts.filter(|param| !param.is_empty()).all(|param| {
            param.split_once('=').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("charset")
                    && value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
        })
}

/// Raw query parameters; each handler parses the ones it knows.
pub struct QueryParams(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|_| Invalid::new(InvalidKind::Parameter, "the query string is malformed"))?;
        Ok(QueryParams(pairs))
    }
}

impl QueryParams {
    /// The single value of `name`, if present; a repeated parameter is invalid.
    pub fn get(&self, name: &str) -> Result<Option<&str>, Invalid> {
        let mut values = self
            .0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(Invalid::new(
                InvalidKind::Parameter,
                format!("{name} is given more than once"),
            ));
        }
        Ok(first)
    }

    /// An integer parameter within `min..=max`, or `default` when absent.
    pub fn integer(
        &self,
        name: &str,
        min: i64,
        max: i64,
        default: Option<i64>,
    ) -> Result<Option<i64>, Invalid> {
        match self.get(name)? {
            None => Ok(default),
            Some(raw) => match raw.parse::<i64>() {
                Ok(value) if (min..=max).contains(&value) => Ok(Some(value)),
                _ => Err(Invalid::new(
                    InvalidKind::Parameter,
                    format!("{name} must be an integer from {min} to {max}"),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_media_types_allow_only_a_utf8_charset() {
        let check = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).expect("header"));
            is_json(&headers)
        };
        assert!(check("application/json"));
        assert!(check("Application/JSON; charset=UTF-8"));
        assert!(check("application/json;charset=\"utf-8\""));
        assert!(!check("application/json; charset=latin1"));
        assert!(!check("text/plain"));
        assert!(!check("application/jsonx"));
    }
}
