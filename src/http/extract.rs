//! Extractors that turn requests into domain values, rejecting with our problem documents in the
//! documented order: authentication, role, path parameters, content type, body.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use std::marker::PhantomData;

use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::problem::ApiError;
use super::{AppState, detached};
use crate::auth::{self, Credential, Role};
use crate::ledger::{IdempotencyKey, Invalid, InvalidKind, SessionId};

/// The presented key: `Authorization: Bearer <key>`; anything else is 401 at once.
enum Caller {
    Admin,
    Key(Credential),
}

impl Caller {
    fn from_parts(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::Unauthenticated)?;
        let value = header.to_str().map_err(|_| ApiError::Unauthenticated)?;
        let (scheme, secret) = value.split_once(' ').ok_or(ApiError::Unauthenticated)?;
        let secret = secret.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() {
            return Err(ApiError::Unauthenticated);
        }
        let credential = Credential::from_secret(secret);
        Ok(if state.admin_key.matches(&credential) {
            Caller::Admin
        } else {
            Caller::Key(credential)
        })
    }

    /// A tenant key for a session route; the admin key is known but may read no conversation.
    fn tenant_key(parts: &Parts, state: &AppState) -> Result<Credential, ApiError> {
        match Self::from_parts(parts, state)? {
            Caller::Admin => Err(ApiError::Forbidden),
            Caller::Key(credential) => Ok(credential),
        }
    }
}

/// A tenant key presented for a route of role `R`. Whether the key is live and its role strong
/// enough is decided by the database in the same call that does the work (see `admit`).
pub struct TenantKey<R: RequiredRole>(pub Credential, PhantomData<R>);

/// The role a route needs.
pub trait RequiredRole: Send + Sync {
    const ROLE: Role;
}

pub struct WriterRole;
pub struct ReaderRole;
pub struct AuditorRole;

impl RequiredRole for WriterRole {
    const ROLE: Role = Role::Writer;
}
impl RequiredRole for ReaderRole {
    const ROLE: Role = Role::Reader;
}
impl RequiredRole for AuditorRole {
    const ROLE: Role = Role::Auditor;
}

pub type Writer = TenantKey<WriterRole>;
pub type Reader = TenantKey<ReaderRole>;
pub type Auditor = TenantKey<AuditorRole>;

impl<R: RequiredRole> FromRequestParts<AppState> for TenantKey<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(TenantKey(Caller::tenant_key(parts, state)?, PhantomData))
    }
}

impl<R: RequiredRole> TenantKey<R> {
    /// Passes valid input through untouched (the work itself authenticates). Invalid input is
    /// reported only after the key has been checked, so that authentication and role problems
    /// come first, as API.md orders them.
    pub async fn admit<T>(
        &self,
        state: &AppState,
        input: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let error = match input {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let (pool, credential) = (state.pool.clone(), self.0.clone());
        detached(async move { auth::verify(&pool, &credential, R::ROLE).await }).await?;
        Err(error)
    }
}

/// The admin key.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_parts(parts, state)? {
            Caller::Admin => Ok(Admin),
            Caller::Key(credential) => {
                let pool = state.pool.clone();
                let known =
                    detached(async move { auth::is_known_key(&pool, &credential).await }).await?;
                Err(if known {
                    ApiError::Forbidden
                } else {
                    ApiError::Unauthenticated
                })
            }
        }
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
