//! `/v1/tenants`: tenant documents (ETag/If-Match) and tenant keys.

use super::error::Problem;
use super::keys::KeyInfo;
use super::page::{page_type, PageParams, PageQuery, Paging};
use super::Key;
use super::{
    authorize, body_problem, check_if_match, etag_of, load_for_write, load_tenant, ApiState,
    Principal,
};
use crate::tenant::TenantConfig;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/tenants", get(list_tenants).post(create_tenant))
        .route(
            "/v1/tenants/{tenant}",
            get(get_tenant).put(put_tenant).delete(delete_tenant),
        )
        .route("/v1/tenants/{tenant}/keys", get(list_keys).post(create_key))
        .route("/v1/tenants/{tenant}/keys/{key_id}", delete(revoke_key))
}

/// A tenant in a list.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantSummary {
    /// Tenant id.
    pub id: String,
    /// Name.
    pub name: String,
    /// SIP domains.
    pub domains: Vec<String>,
}

page_type! {
    /// One page of tenants.
    TenantPage of TenantSummary,
    items: "Tenants, by id.",
    cursor: "`next_cursor` of the previous page (tenants after this id); empty is the first page.",
    pattern: None,
}

page_type! {
    /// One page of a tenant's keys.
    KeyPage of KeyInfo,
    items: "Keys, by key id.",
    cursor: "`next_cursor` of the previous page (keys after this key id); empty is the first page.",
    pattern: None,
}

/// Request to create a tenant key.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Label for the key.
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: String,
    /// A read-only key can read but not change the tenant.
    #[serde(default)]
    pub read_only: bool,
}

/// A created key: `key` is shown this once and never again.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// What is stored about the key.
    #[serde(flatten)]
    pub info: KeyInfo,
    /// The key to use as `Authorization: Bearer KEY`.
    pub key: String,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The document as the API shows it. Secrets are write-only: trunk passwords, and users' HA1
/// hashes (for SIP digest an HA1 is as good as the password). A PUT that leaves them out keeps
/// the stored ones.
fn public(mut cfg: TenantConfig) -> TenantConfig {
    for t in &mut cfg.trunks {
        t.password = None;
    }
    for u in &mut cfg.users {
        u.ha1_md5 = None;
        u.ha1_sha256 = None;
    }
    cfg
}

fn with_etag(status: StatusCode, cfg: TenantConfig) -> Response {
    let tag = etag_of(&cfg);
    (status, [(header::ETAG, tag)], Json(public(cfg))).into_response()
}

pub(super) fn admin_only(p: &Principal) -> Result<(), Problem> {
    match p {
        Principal::Admin => Ok(()),
        // Tenant keys never learn other tenants exist.
        Principal::Tenant { .. } => Err(Problem::new(
            StatusCode::FORBIDDEN,
            "admin-only",
            "this needs the admin key",
        )),
    }
}

/// List tenants (admin: all; a tenant key: its own), by id.
#[utoipa::path(get, path = "/v1/tenants", params(PageParams<TenantPage>),
    responses((status = 200, body = TenantPage), (status = 401, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn list_tenants(
    State(st): State<Arc<ApiState>>,
    key: Key,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<TenantPage>, Problem> {
    let p = key.0.clone();
    let paging = Paging::from_query(query)?;
    let snap = st.store.snapshot();
    let all: Vec<TenantSummary> = snap
        .tenants()
        .filter(|t| p.can_read(t.id()))
        .map(|t| TenantSummary {
            id: t.config.id.clone(),
            name: t.config.name.clone(),
            domains: t.config.domains.clone(),
        })
        .collect();
    let (items, next_cursor) = paging.page(all, |t| t.id.clone());
    Ok(Json(TenantPage { items, next_cursor }))
}

/// Create a tenant (admin). Clear-text `password`/`pin` fields are hashed before storage.
#[utoipa::path(post, path = "/v1/tenants", request_body = TenantConfig,
    responses((status = 201, body = TenantConfig, headers(("ETag" = String))), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn create_tenant(
    State(st): State<Arc<ApiState>>,
    key: Key,
    body: Result<Json<TenantConfig>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    let p = key.0.clone();
    admin_only(&p)?;
    let Json(cfg) = body.map_err(body_problem)?;
    if st.store.get(&cfg.id)?.is_some() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "exists",
            format!(
                "tenant {} exists; PUT /v1/tenants/{} to change it",
                cfg.id, cfg.id
            ),
        ));
    }
    let id = cfg.id.clone();
    st.writer()
        .put(cfg, crate::cluster::Basis(None))
        .await
        .map_err(|e| match e {
            // Created through another node a moment ago.
            crate::cluster::WriteError::Conflict => Problem::new(
                StatusCode::CONFLICT,
                "exists",
                format!("tenant {id} exists; PUT /v1/tenants/{id} to change it"),
            ),
            other => other.into(),
        })?;
    let stored = load_tenant(&st, &id)?;
    Ok(with_etag(StatusCode::CREATED, stored))
}

/// A tenant's document, with its ETag.
#[utoipa::path(get, path = "/v1/tenants/{tenant}", params(("tenant" = String, Path)),
    responses((status = 200, body = TenantConfig, headers(("ETag" = String))), (status = 404, body = Problem)))]
pub(super) async fn get_tenant(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
) -> Result<Response, Problem> {
    let p = key.0.clone();
    authorize(&p, &tenant, false)?;
    let cfg = load_tenant(&st, &tenant)?;
    Ok(with_etag(StatusCode::OK, cfg))
}

/// Replace a tenant's document. `If-Match` with the current ETag is required, so two admins
/// cannot overwrite each other (412 on a stale write, 428 without `If-Match`). Trunk passwords
/// left out keep their stored value.
#[utoipa::path(put, path = "/v1/tenants/{tenant}", params(("tenant" = String, Path), ("If-Match" = String, Header)), request_body = TenantConfig,
    responses((status = 200, body = TenantConfig, headers(("ETag" = String))), (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
pub(super) async fn put_tenant(
    State(st): State<Arc<ApiState>>,
    key: Key,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Result<Json<TenantConfig>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    let p = key.0.clone();
    authorize(&p, &tenant, true)?;
    let (current, basis) = load_for_write(&st, &tenant)?;
    check_if_match(&headers, &etag_of(&current), "tenant")?;
    let Json(mut cfg) = body.map_err(body_problem)?;
    if cfg.id != tenant {
        let mut prob = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "id-mismatch",
            "the document's id differs from the URL",
        );
        prob.errors.push(super::error::FieldError {
            path: "id".into(),
            message: format!("must be {tenant}"),
        });
        return Err(prob);
    }
    for t in &mut cfg.trunks {
        if t.password.is_none() {
            t.password = current
                .trunks
                .iter()
                .find(|c| c.id == t.id)
                .and_then(|c| c.password.clone());
        }
    }
    // Users given without a new password keep their hashes.
    for u in &mut cfg.users {
        if u.password.is_none() && u.ha1_md5.is_none() && u.ha1_sha256.is_none() {
            if let Some(c) = current.users.iter().find(|c| c.username == u.username) {
                u.ha1_md5 = c.ha1_md5.clone();
                u.ha1_sha256 = c.ha1_sha256.clone();
            }
        }
    }
    super::operator::check_operator_fields(&p, &current, &cfg)?;
    st.writer().put(cfg, basis).await?;
    let stored = load_tenant(&st, &tenant)?;
    Ok(with_etag(StatusCode::OK, stored))
}

/// Delete a tenant (admin) and its keys.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}", params(("tenant" = String, Path)), responses((status = 204), (status = 404, body = Problem)))]
pub(super) async fn delete_tenant(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
) -> Result<StatusCode, Problem> {
    let p = key.0.clone();
    authorize(&p, &tenant, false)?;
    admin_only(&p)?;
    let (_, basis) = load_for_write(&st, &tenant)?;
    st.writer().delete(&tenant, basis).await?;
    st.revoke_all_keys(&tenant).await?;
    // Its data goes too: the node's voicemail and recordings, and both stores.
    st.services.forget_tenant(&tenant);
    tracing::info!(%tenant, "tenant deleted with its call logs, voicemail and recordings");
    Ok(StatusCode::NO_CONTENT)
}

/// A tenant's keys (admin), by key id.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/keys", params(("tenant" = String, Path), PageParams<KeyPage>),
    responses((status = 200, body = KeyPage), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn list_keys(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<KeyPage>, Problem> {
    let p = key.0.clone();
    authorize(&p, &tenant, false)?;
    admin_only(&p)?;
    if st.store.get(&tenant)?.is_none() {
        return Err(Problem::not_found("tenant"));
    }
    let paging = Paging::from_query(query)?;
    let (items, next_cursor) = paging.page(st.keys.list(&tenant), |k| k.id.clone());
    Ok(Json(KeyPage { items, next_cursor }))
}

/// Create a tenant key (admin). The key is in this response only.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/keys", params(("tenant" = String, Path)), request_body = NewKey,
    responses((status = 201, body = CreatedKey), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn create_key(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
    body: Result<Json<NewKey>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedKey>), Problem> {
    let p = key.0.clone();
    authorize(&p, &tenant, true)?;
    admin_only(&p)?;
    if st.store.get(&tenant)?.is_none() {
        return Err(Problem::not_found("tenant"));
    }
    let Json(req) = body.map_err(body_problem)?;
    if req.name.trim().is_empty() || req.name.chars().count() > 100 {
        let mut prob = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-key",
            "name must be 1-100 characters",
        );
        prob.errors.push(super::error::FieldError {
            path: "name".into(),
            message: "must be 1-100 characters".into(),
        });
        return Err(prob);
    }
    let (info, key) = st
        .create_key(&tenant, req.name.trim(), req.read_only, unix_now())
        .await?;
    tracing::info!(tenant = %tenant, key_id = %info.id, read_only = info.read_only, "tenant API key created");
    Ok((StatusCode::CREATED, Json(CreatedKey { info, key })))
}

/// Revoke a tenant key (admin).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/keys/{key_id}", params(("tenant" = String, Path), ("key_id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub(super) async fn revoke_key(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path((tenant, key_id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let p = key.0.clone();
    authorize(&p, &tenant, true)?;
    admin_only(&p)?;
    let removed = st.revoke_key(&tenant, &key_id).await?;
    if removed {
        tracing::info!(tenant = %tenant, key_id = %key_id, "tenant API key revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("key"))
    }
}
