//! Extractors that turn requests into domain values, rejecting with our problem documents in the
//! order API.md "Conventions" gives: authentication, role, path parameters, content type, body.
//! Axum runs a handler's extractors in argument order and the body extractor last, so a handler
//! that lists them in that order checks them in that order; the key is checked (against the
//! cache or the database) before a byte of the body is read.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use tokio::sync::OwnedSemaphorePermit;

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;

use super::AppState;
use super::observe::RequestId;
use super::problem::ApiError;
use crate::access::{Accessor, Actor, Origin};
use crate::auth::{Caller, Credential, KeyRole};
use crate::error::{Error, Invalid, InvalidKind};
use crate::ledger::{IdempotencyKey, SessionId};

/// `Authorization: Bearer <key>`; anything else is 401 at once.
fn bearer(parts: &Parts) -> Result<Credential, Error> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or(Error::Unauthenticated)?;
    let (scheme, secret) = value.split_once(' ').ok_or(Error::Unauthenticated)?;
    let secret = secret.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() {
        return Err(Error::Unauthenticated);
    }
    Ok(Credential::from_secret(secret))
}

/// The role a route needs.
pub trait RequiredRole: Send + Sync {
    const ROLE: KeyRole;
}

pub struct WriterRole;
pub struct ReaderRole;
pub struct AuditorRole;

impl RequiredRole for WriterRole {
    const ROLE: KeyRole = KeyRole::Writer;
}
impl RequiredRole for ReaderRole {
    const ROLE: KeyRole = KeyRole::Reader;
}
impl RequiredRole for AuditorRole {
    const ROLE: KeyRole = KeyRole::Auditor;
}

/// A live tenant key whose role may act where role `R` is needed, and where its request came
/// from.
pub struct Authed<R: RequiredRole> {
    pub caller: Caller,
    /// The key as presented, to check again later that it is still live (a live tail).
    pub credential: Credential,
    pub origin: Origin,
    role: PhantomData<R>,
}

impl<R: RequiredRole> Authed<R> {
    /// Who acts, from where, for the access log.
    pub fn accessor(&self) -> Accessor {
        Accessor {
            actor: Actor::key(&self.caller),
            origin: self.origin.clone(),
        }
    }
}

pub type Writer = Authed<WriterRole>;
pub type Reader = Authed<ReaderRole>;
pub type Auditor = Authed<AuditorRole>;

impl<R: RequiredRole> FromRequestParts<AppState> for Authed<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let credential = bearer(parts)?;
        // The admin key is known, but reads no conversation.
        if state.admin_key.matches(&credential) {
            return Err(Error::Forbidden.into());
        }
        let caller = state.authenticate(&credential).await?;
        if !caller.role.satisfies(R::ROLE) {
            return Err(Error::Forbidden.into());
        }
        Ok(Authed {
            caller,
            credential,
            origin: origin(parts, state),
            role: PhantomData,
        })
    }
}

/// The admin key, and where its request came from.
pub struct Admin {
    pub origin: Origin,
}

impl Admin {
    /// The admin, from where, for the access log.
    pub fn accessor(&self) -> Accessor {
        Accessor {
            actor: Actor::Admin,
            origin: self.origin.clone(),
        }
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let credential = bearer(parts)?;
        if state.admin_key.matches(&credential) {
            return Ok(Admin {
                origin: origin(parts, state),
            });
        }
        // A tenant key is known, and too weak; anything else is unknown.
        state.authenticate(&credential).await?;
        Err(Error::Forbidden.into())
    }
}

/// The request id, and the peer's address, or the first address of `X-Forwarded-For` when the
/// peer is a trusted proxy.
fn origin(parts: &Parts, state: &AppState) -> Origin {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    let forwarded = || {
        parts
            .headers
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .and_then(|first| first.trim().parse::<IpAddr>().ok())
    };
    let client = match peer {
        Some(peer) if state.trusted_proxies.contains(&peer) => forwarded().or(Some(peer)),
        other => other,
    };
    Origin {
        request_id: parts
            .extensions
            .get::<RequestId>()
            .map(|RequestId(id)| id.clone()),
        client_addr: client.map(|address| address.to_string()),
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

/// A path parameter other than the session id: one that cannot be read (not UTF-8, say) names
/// nothing, so it is 404 `not_found`.
pub struct PathSegment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathSegment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(segment)| PathSegment(segment))
            .map_err(|_| ApiError::NotFound)
    }
}

/// The optional `Idempotency-Key` header, parsed.
pub struct IdempotencyHeader(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all("idempotency-key").iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(IdempotencyHeader(None)),
            (Some(value), None) => Ok(IdempotencyHeader(Some(IdempotencyKey::parse(
                value.as_bytes(),
            )?))),
            // Which one a retry would send again is anyone's guess.
            (Some(_), Some(_)) => Err(Invalid::new(
                InvalidKind::IdempotencyKey,
                "send one Idempotency-Key header, not several",
            )
            .into()),
        }
    }
}

/// A JSON request body of type `T`, kept also as sent (for idempotency fingerprints): 415 for
/// another media type, 413 beyond the body limit, 400 for malformed JSON, 422 naming the field
/// for JSON of the wrong shape. An empty body without a Content-Type is `{}`.
pub struct Body<T> {
    pub value: T,
    pub raw: Bytes,
    /// This body's share of the server's budget for bodies in memory.
    _budget: OwnedSemaphorePermit,
}

impl<T> Body<T> {
    /// The body as a JSON value, as sent.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.raw).unwrap_or_default()
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let declared_json = match request.headers().get(CONTENT_TYPE) {
            None => false,
            Some(_) if is_json(request.headers()) => true,
            Some(_) => return Err(ApiError::UnsupportedMediaType),
        };
        // A body is read only once its size fits the budget of bodies in memory; a declared
        // size beyond the limit is refused before any of it is read.
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok());
        if declared.is_some_and(|length| length > state.max_body_bytes) {
            return Err(ApiError::PayloadTooLarge);
        }
        let budget = state
            .body_budget(declared.unwrap_or(state.max_body_bytes))
            .await?;
        let mut raw = read_body(request, declared, state.max_body_bytes).await?;
        if !declared_json {
            if !raw.is_empty() {
                return Err(ApiError::UnsupportedMediaType);
            }
            raw = Bytes::from_static(b"{}");
        }
        let value = parse_json(&raw)?;
        Ok(Body {
            value,
            raw,
            _budget: budget,
        })
    }
}

/// The whole body, refused past `limit` bytes, in one buffer of its declared size: collected
/// from its frames and then copied, a body of the limit would need twice its share of the budget.
async fn read_body(
    request: Request,
    declared: Option<usize>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let mut body = request.into_body();
    let mut raw = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            ApiError::MalformedJson(format!("the body could not be read: {error}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if raw.len() + data.len() > limit {
                return Err(ApiError::PayloadTooLarge);
            }
            raw.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(raw))
}

/// Parses `bytes` as `T`, telling malformed JSON (400) from JSON of the wrong shape (422, naming
/// the place).
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Well-formedness first, so that a truncated body is malformed whatever its first field.
    let text = std::str::from_utf8(bytes)
        .map_err(|error| ApiError::MalformedJson(format!("the body is not UTF-8: {error}")))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|error| shape_error(".", error))?;
    if crate::ledger::json::has_lone_surrogate(text) {
        return Err(ApiError::MalformedJson(
            "the body escapes a lone surrogate, which is no character".to_owned(),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let Object(value) = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        shape_error(&path, error.into_inner())
    })?;
    deserializer
        .end()
        .map_err(|error| ApiError::MalformedJson(error.to_string()))?;
    Ok(value)
}

/// `T` from a JSON object only: a struct serde derives also takes an array of its fields in
/// their order (`[0, [...]]` for an append), which is no body of the API.
pub struct Object<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly<T>(PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
            type Value = T;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(ObjectOnly(PhantomData))
            .map(Object)
    }
}

/// For a field that is a list of objects (`#[serde(deserialize_with = "objects")]`).
pub fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    let objects: Vec<Object<T>> = serde::Deserialize::deserialize(deserializer)?;
    Ok(objects.into_iter().map(|Object(value)| value).collect())
}

fn shape_error(path: &str, error: serde_json::Error) -> ApiError {
    let message = error.to_string();
    if message.starts_with("number out of range") {
        return Invalid::new(
            InvalidKind::Number,
            format!("{path} holds a number beyond any double: {message}"),
        )
        .into();
    }
    match error.classify() {
        serde_json::error::Category::Data => {
            let at = if path == "." { "body" } else { path };
            Invalid::validation(format!("{at}: {}", in_json_terms(&message))).into()
        }
        _ => ApiError::MalformedJson(message),
    }
}

/// serde's message in the words of JSON, which the caller sent: "expected struct
/// AppendMessages" names one of our types, "expected i32" a Rust one. Only serde's own words
/// change: a value quoted from the body sits between "invalid type: " and the last ", expected ".
fn in_json_terms(message: &str) -> String {
    let mut plain = message.to_owned();
    for (rust, json) in [
        ("invalid type: sequence", "invalid type: an array"),
        ("invalid type: map", "invalid type: an object"),
    ] {
        if let Some(rest) = plain.strip_prefix(rust) {
            plain = format!("{json}{rest}");
        }
    }
    let Some(at) = plain.rfind(", expected ") else {
        return plain;
    };
    let (said, expected) = plain.split_at(at + ", expected ".len());
    let end = |text: &str| text.find([' ', ',']).unwrap_or(text.len());
    let (what, rest) = if let Some(named) = expected.strip_prefix("struct ") {
        ("an object", &named[end(named)..])
    } else {
        let word = &expected[..end(expected)];
        let what = match word {
            "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "isize" | "usize" => {
                "an integer"
            }
            "f32" | "f64" => "a number",
            _ => return plain,
        };
        (what, &expected[word.len()..])
    };
    format!("{said}{what}{rest}")
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

/// Query parameters as `T`: a repeated or malformed one is 400 `invalid_parameter`, an unknown
/// one is ignored.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("").as_bytes();
        let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query));
        serde_path_to_error::deserialize(deserializer)
            .map(Query)
            .map_err(|error| {
                let path = error.path().to_string();
                let message = error.into_inner().to_string();
                let detail = if path == "." {
                    message
                } else {
                    format!("{path}: {message}")
                };
                Invalid::parameter(detail).into()
            })
    }
}

/// `value`, or `default`, within `min..=max`, else `invalid_parameter` naming `name`.
pub fn bounded(
    name: &str,
    value: Option<i64>,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, Invalid> {
    let value = value.unwrap_or(default);
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(Invalid::parameter(format!(
            "{name} must be an integer from {min} to {max}"
        )))
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

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Shape {
        expected_seq: Option<i64>,
        messages: Vec<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        role: String,
    }

    #[test]
    fn bodies_of_the_wrong_shape_name_the_field_and_malformed_ones_are_400() {
        let problem = |body: &str| match parse_json::<Shape>(body.as_bytes()) {
            Err(ApiError::Domain(Error::Invalid(invalid))) => (invalid.kind, invalid.detail),
            Err(ApiError::MalformedJson(message)) => (InvalidKind::Parameter, message),
            other => panic!("{body}: {other:?}", other = other.map(|_| ())),
        };
        let (kind, detail) = problem(r#"{"messages": [{"role": 1}]}"#);
        assert_eq!(kind, InvalidKind::Validation);
        assert!(detail.starts_with("messages[0].role: "), "{detail}");
        let (kind, detail) = problem(r#"{"messages": [], "colour": 1}"#);
        assert_eq!(kind, InvalidKind::Validation);
        assert!(detail.contains("colour"), "{detail}");
        let (kind, detail) = problem(r#"{"expected_seq": 1.5, "messages": []}"#);
        assert_eq!(kind, InvalidKind::Validation);
        assert!(detail.starts_with("expected_seq: "), "{detail}");
        let (kind, _) = problem(r#"{"messages": [], "messages": []}"#);
        assert_eq!(kind, InvalidKind::Validation);
        assert_eq!(problem(r#"{"messages": [}"#).0, InvalidKind::Parameter);
        assert_eq!(problem(r#"{"messages": []} x"#).0, InvalidKind::Parameter);
        assert_eq!(
            problem(r#"{"expected_seq": 1e400, "messages": []}"#).0,
            InvalidKind::Number
        );
    }

    #[test]
    fn shape_errors_speak_of_json_not_rust_types() {
        let detail = |body: &str| match parse_json::<Shape>(body.as_bytes()) {
            Err(ApiError::Domain(Error::Invalid(invalid))) => invalid.detail,
            other => panic!("{body}: {other:?}", other = other.map(|_| ())),
        };
        let said = detail("[1]");
        assert!(
            said.starts_with("body: invalid type: an array, expected an object"),
            "{said}"
        );
        let said = detail(r#"{"expected_seq": "5", "messages": []}"#);
        assert!(
            said.starts_with(r#"expected_seq: invalid type: string "5", expected an integer"#),
            "{said}"
        );
        let said = detail(r#"{"expected_seq": 1e20, "messages": []}"#);
        assert!(said.contains("expected an integer"), "{said}");
        let said = detail(r#"{"messages": {}}"#);
        assert!(
            said.starts_with("messages: invalid type: an object, expected a sequence"),
            "{said}"
        );
        for said in [
            detail("[1]"),
            detail(r#"{"expected_seq": true, "messages": []}"#),
        ] {
            assert!(!said.contains("Shape") && !said.contains("i64"), "{said}");
        }
    }

    #[test]
    fn a_body_and_each_message_are_objects_never_arrays_of_their_fields() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Listed {
            expected_seq: Option<i64>,
            #[serde(deserialize_with = "objects")]
            messages: Vec<Inner>,
        }
        let detail = |body: &str| match parse_json::<Listed>(body.as_bytes()) {
            Err(ApiError::Domain(Error::Invalid(invalid))) => invalid.detail,
            other => panic!("{body}: {other:?}", other = other.map(|_| ())),
        };
        let said = detail(r#"[0, [{"role": "user"}]]"#);
        assert!(
            said.starts_with("body: invalid type: an array, expected an object"),
            "{said}"
        );
        let said = detail(r#"{"messages": [["user"]]}"#);
        assert!(
            said.starts_with("messages[0]: invalid type: an array, expected an object"),
            "{said}"
        );
        let parsed = parse_json::<Listed>(br#"{"messages": [{"role": "user"}]}"#).expect("objects");
        assert_eq!(parsed.messages[0].role, "user");
    }
}
