//! Admin routes: tenants and API keys. The admin key reads no conversation.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{Admin, Body, PathSegment};
use super::problem::{AdminProblems, ApiError};
use crate::admin::{self, KeyInfo, Policy};
use crate::auth::KeyRole;
use crate::ledger::Timestamp;

/// Body of a tenant creation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 1 to 63 of a-z 0-9 -.
    name: String,
}

/// A tenant.
#[derive(Serialize, ToSchema)]
pub struct TenantView {
    name: String,
    #[schema(value_type = String)]
    created_at: Timestamp,
}

/// Body of a key creation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    tenant: String,
    role: KeyRole,
    /// At most 200 characters.
    label: Option<String>,
}

/// An API key, without its secret.
#[derive(Serialize, ToSchema)]
pub struct KeyView {
    id: String,
    tenant: String,
    role: KeyRole,
    label: Option<String>,
    #[schema(value_type = String)]
    created_at: Timestamp,
    #[schema(value_type = Option<String>)]
    revoked_at: Option<Timestamp>,
}

/// A new API key with its secret, shown only this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    id: String,
    key: String,
    tenant: String,
    role: KeyRole,
    label: Option<String>,
    #[schema(value_type = String)]
    created_at: Timestamp,
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
            created_at: key.created_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// Create a tenant.
#[utoipa::path(
    post, path = "/v1/admin/tenants", tag = "admin", request_body = CreateTenant,
    responses((status = 201, body = TenantView), AdminProblems),
    security(("bearer" = []))
)]
pub async fn create_tenant(
    State(state): State<AppState>,
    admin: Admin,
    body: Body<CreateTenant>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    let (accessor, name) = (admin.accessor(), body.value.name);
    let tenant = state
        .run(|pool| async move { admin::create_tenant(&pool, &accessor, &name).await })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TenantView {
            name: tenant.name,
            created_at: tenant.created_at,
        }),
    ))
}

/// Create an API key for a tenant; its secret is in this response only.
#[utoipa::path(
    post, path = "/v1/admin/keys", tag = "admin", request_body = CreateKey,
    responses((status = 201, body = CreatedKey), AdminProblems),
    security(("bearer" = []))
)]
pub async fn create_key(
    State(state): State<AppState>,
    admin: Admin,
    body: Body<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let CreateKey {
        tenant,
        role,
        label,
    } = body.value;
    let accessor = admin.accessor();
    let created = state
        .run(|pool| async move {
            admin::create_key(&pool, &accessor, &tenant, role, label.as_deref()).await
        })
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
            created_at: info.created_at,
        }),
    ))
}

/// List every API key, without secrets.
#[utoipa::path(
    get, path = "/v1/admin/keys", tag = "admin",
    responses((status = 200, body = KeyList), AdminProblems),
    security(("bearer" = []))
)]
pub async fn list_keys(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<KeyList>, ApiError> {
    let keys = state
        .run(|pool| async move { admin::list_keys(&pool).await })
        .await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(KeyView::from).collect(),
    }))
}

/// Revoke an API key, at once and for good.
#[utoipa::path(
    delete, path = "/v1/admin/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "the key's id")),
    responses((status = 204, description = "Revoked"), AdminProblems),
    security(("bearer" = []))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    admin: Admin,
    PathSegment(id): PathSegment,
) -> Result<StatusCode, ApiError> {
    let accessor = admin.accessor();
    state
        .run(|pool| async move { admin::revoke_key(&pool, &accessor, &id).await.map(drop) })
        .await?;
    // Other servers hear of it from the database; this one must not wait for that.
    state.keys.invalidate();
    Ok(StatusCode::NO_CONTENT)
}

/// A tenant's policy.
#[utoipa::path(
    get, path = "/v1/admin/tenants/{name}/policy", tag = "admin",
    params(("name" = String, Path, description = "the tenant's name")),
    responses((status = 200, body = Policy), AdminProblems),
    security(("bearer" = []))
)]
pub async fn get_policy(
    State(state): State<AppState>,
    _admin: Admin,
    PathSegment(name): PathSegment,
) -> Result<Json<Policy>, ApiError> {
    let policy = state
        .run(|pool| async move { admin::policy(&pool, &name).await })
        .await?;
    Ok(Json(policy))
}

/// Set a tenant's policy: retention and whether writers' reads are recorded.
#[utoipa::path(
    put, path = "/v1/admin/tenants/{name}/policy", tag = "admin",
    params(("name" = String, Path, description = "the tenant's name")),
    request_body = Policy,
    responses((status = 200, body = Policy), AdminProblems),
    security(("bearer" = []))
)]
pub async fn set_policy(
    State(state): State<AppState>,
    admin: Admin,
    PathSegment(name): PathSegment,
    body: Body<Policy>,
) -> Result<Json<Policy>, ApiError> {
    let (accessor, policy) = (admin.accessor(), body.value);
    let policy = state
        .run(|pool| async move { admin::set_policy(&pool, &accessor, &name, policy).await })
        .await?;
    Ok(Json(policy))
}
