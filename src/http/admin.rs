//! Admin routes: tenants and API keys. The admin key reads no conversation.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::extract::{Admin, JsonBody};
use super::problem::{ApiError, Problem};
use super::{AppState, detached};
use crate::auth::{self, KeyInfo, Role};
use crate::ledger::hash::format_timestamp;
use crate::ledger::{Invalid, InvalidKind};

/// Body of a tenant creation.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct CreateTenant {
    /// 1 to 63 of a-z 0-9 -.
    name: String,
}

/// A tenant.
#[derive(Serialize, ToSchema)]
pub struct TenantView {
    name: String,
    created_at: String,
}

/// Body of a key creation.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct CreateKey {
    tenant: String,
    /// writer, reader or auditor.
    role: String,
    label: Option<String>,
}

/// An API key, without its secret.
#[derive(Serialize, ToSchema)]
pub struct KeyView {
    id: String,
    tenant: String,
    role: String,
    label: Option<String>,
    created_at: String,
    revoked_at: Option<String>,
}

/// A new API key with its secret, shown only this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    id: String,
    key: String,
    tenant: String,
    role: String,
    label: Option<String>,
    created_at: String,
}

/// All API keys, without secrets.
#[derive(Serialize, ToSchema)]
pub struct KeyList {
    keys: Vec<KeyView>,
}

impl From<KeyInfo> for KeyView {
    fn from(key: KeyInfo) -> Self {
        Self {
            id: key.id,
            tenant: key.tenant,
            role: key.role,
            label: key.label,
            created_at: format_timestamp(key.created_at),
            revoked_at: key.revoked_at.map(format_timestamp),
        }
    }
}

fn string_field<'a>(
    body: &'a Value,
    name: &str,
    required: bool,
) -> Result<Option<&'a str>, Invalid> {
    match body.get(name) {
        Some(Value::String(value)) => Ok(Some(value)),
        None | Some(Value::Null) if !required => Ok(None),
        None => Err(Invalid::new(
            InvalidKind::Validation,
            format!("{name} is required"),
        )),
        Some(_) => Err(Invalid::new(
            InvalidKind::Validation,
            format!("{name} must be a string"),
        )),
    }
}

fn only_fields(body: &Value, known: &[&str]) -> Result<(), Invalid> {
    let object = body
        .as_object()
        .ok_or_else(|| Invalid::new(InvalidKind::Validation, "body must be a JSON object"))?;
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(unknown) => Err(Invalid::new(
            InvalidKind::Validation,
            format!("unknown field {unknown}"),
        )),
        None => Ok(()),
    }
}

/// Create a tenant.
#[utoipa::path(
    post, path = "/v1/admin/tenants", tag = "admin", request_body = CreateTenant,
    responses(
        (status = 201, body = TenantView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_tenant(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    only_fields(&body, &["name"])?;
    let name = string_field(&body, "name", true)?
        .unwrap_or_default()
        .to_owned();
    let pool = state.pool.clone();
    let tenant = detached(async move { auth::create_tenant(&pool, &name).await }).await?;
    Ok((
        StatusCode::CREATED,
        Json(TenantView {
            name: tenant.name,
            created_at: format_timestamp(tenant.created_at),
        }),
    ))
}

/// Create an API key for a tenant; its secret is in this response only.
#[utoipa::path(
    post, path = "/v1/admin/keys", tag = "admin", request_body = CreateKey,
    responses(
        (status = 201, body = CreatedKey),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_key(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    only_fields(&body, &["tenant", "role", "label"])?;
    let tenant = string_field(&body, "tenant", true)?
        .unwrap_or_default()
        .to_owned();
    let role = string_field(&body, "role", true)?.unwrap_or_default();
    let role = Role::parse(role).ok_or_else(|| {
        Invalid::new(
            InvalidKind::Validation,
            "role must be writer, reader or auditor",
        )
    })?;
    let label = string_field(&body, "label", false)?.map(str::to_owned);
    let pool = state.pool.clone();
    let created =
        detached(async move { auth::create_key(&pool, &tenant, role, label.as_deref()).await })
            .await?;
    let info = created.info;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            id: info.id,
            key: created.secret,
            tenant: info.tenant,
            role: info.role,
            label: info.label,
            created_at: format_timestamp(info.created_at),
        }),
    ))
}

/// List every API key, without secrets.
#[utoipa::path(
    get, path = "/v1/admin/keys", tag = "admin",
    responses(
        (status = 200, body = KeyList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_keys(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<KeyList>, ApiError> {
    let pool = state.pool.clone();
    let keys = detached(async move { auth::list_keys(&pool).await }).await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(KeyView::from).collect(),
    }))
}

/// Revoke an API key, at once and for good.
#[utoipa::path(
    delete, path = "/v1/admin/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "the key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let pool = state.pool.clone();
    detached(async move { auth::revoke_key(&pool, &id).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}
