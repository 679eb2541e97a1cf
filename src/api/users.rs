//! `/v1/tenants/{tenant}/users`: one user at a time, each with its own ETag, and SIP password
//! set/reset. Every change is a new revision of the tenant document through the same
//! validation and snapshot swap as everything else.

use super::error::{FieldError, Problem};
use super::page::{page_type, PageParams, PageQuery, Paging};
use super::Key;
use super::{body_problem, check_if_match, etag_of, load_for_write, load_tenant, ApiState};
use crate::tenant::model::User;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(
            "/v1/tenants/{tenant}/users",
            get(list_users).post(create_user),
        )
        .route(
            "/v1/tenants/{tenant}/users/{extension}",
            get(get_user).put(put_user).delete(delete_user),
        )
        .route(
            "/v1/tenants/{tenant}/users/{extension}/password",
            put(set_password),
        )
}

/// A new SIP password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// The password; only its digest hashes are stored.
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
}

page_type! {
    /// One page of a tenant's users.
    UserPage of User,
    items: "Users, by extension.",
    cursor: "`next_cursor` of the previous page (users after this extension); empty is the first page.",
    pattern: None,
}

/// A user as the API shows it: the HA1 hashes are write-only.
fn public(mut u: User) -> User {
    u.ha1_md5 = None;
    u.ha1_sha256 = None;
    u.password = None;
    u
}

fn with_etag(status: StatusCode, u: User) -> Response {
    let tag = etag_of(&u);
    (status, [(header::ETAG, tag)], Json(public(u))).into_response()
}

/// Problems on a one-user change are reported at the user's own path (`users.N.…` in the
/// tenant document becomes `…` relative to the user when it is about this user).
fn store_problem(e: crate::cluster::WriteError, index: usize) -> Problem {
    let mut p = Problem::from(e);
    let prefix = format!("users.{index}.");
    for err in &mut p.errors {
        if let Some(rest) = err.path.strip_prefix(&prefix) {
            err.path = rest.to_string();
        }
    }
    p
}

/// Where user `extension` sits in the document, or 404.
fn user_index(cfg: &crate::tenant::TenantConfig, extension: &str) -> Result<usize, Problem> {
    cfg.users
        .iter()
        .position(|u| u.extension == extension)
        .ok_or_else(|| Problem::not_found("user"))
}

fn caller(_st: &ApiState, key: &Key, tenant: &str, write: bool) -> Result<(), Problem> {
    key.tenant(tenant, write)
}

/// A tenant's users, by extension.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/users", params(("tenant" = String, Path), PageParams<UserPage>),
    responses((status = 200, body = UserPage), (status = 422, body = Problem)))]
pub(super) async fn list_users(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<UserPage>, Problem> {
    caller(&st, &key, &tenant, false)?;
    let cfg = load_tenant(&st, &tenant)?;
    let paging = Paging::from_query(query)?;
    let (users, next_cursor) = paging.page(cfg.users, |u| u.extension.clone());
    let items = users.into_iter().map(public).collect();
    Ok(Json(UserPage { items, next_cursor }))
}

/// One user, with its ETag.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/users/{extension}", params(("tenant" = String, Path), ("extension" = String, Path)),
    responses((status = 200, body = User, headers(("ETag" = String)))))]
pub(super) async fn get_user(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path((tenant, extension)): Path<(String, String)>,
) -> Result<Response, Problem> {
    caller(&st, &key, &tenant, false)?;
    let cfg = load_tenant(&st, &tenant)?;
    let u = cfg
        .users
        .into_iter()
        .find(|u| u.extension == extension)
        .ok_or_else(|| Problem::not_found("user"))?;
    Ok(with_etag(StatusCode::OK, u))
}

/// Create a user. Give `password` (stored as digest hashes only).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/users", params(("tenant" = String, Path)), request_body = User,
    responses((status = 201, body = User, headers(("ETag" = String))), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn create_user(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
    body: Result<Json<User>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    caller(&st, &key, &tenant, true)?;
    let (mut cfg, basis) = load_for_write(&st, &tenant)?;
    let Json(user) = body.map_err(body_problem)?;
    if cfg.users.iter().any(|u| u.extension == user.extension) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "exists",
            format!("user {} exists", user.extension),
        ));
    }
    let ext = user.extension.clone();
    cfg.users.push(user);
    let index = cfg.users.len() - 1;
    st.writer()
        .put(cfg, basis)
        .await
        .map_err(|e| store_problem(e, index))?;
    let stored = st
        .store
        .get(&tenant)?
        .and_then(|c| c.users.into_iter().find(|u| u.extension == ext))
        .ok_or_else(|| Problem::not_found("user"))?;
    Ok(with_etag(StatusCode::CREATED, stored))
}

/// Replace a user (`If-Match` required). Without `password` or hashes the stored hashes stay.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/users/{extension}", params(("tenant" = String, Path), ("extension" = String, Path), ("If-Match" = String, Header)), request_body = User,
    responses((status = 200, body = User, headers(("ETag" = String))), (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
pub(super) async fn put_user(
    State(st): State<Arc<ApiState>>,
    key: Key,
    headers: HeaderMap,
    Path((tenant, extension)): Path<(String, String)>,
    body: Result<Json<User>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    caller(&st, &key, &tenant, true)?;
    let (mut cfg, basis) = load_for_write(&st, &tenant)?;
    let index = user_index(&cfg, &extension)?;
    check_if_match(&headers, &etag_of(&cfg.users[index]), "user")?;
    let Json(mut user) = body.map_err(body_problem)?;
    if user.extension != extension {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "extension-mismatch",
            "the extension differs from the URL",
        );
        p.errors.push(FieldError {
            path: "extension".into(),
            message: format!("must be {extension}"),
        });
        return Err(p);
    }
    let current = &cfg.users[index];
    if user.password.is_none() && user.ha1_md5.is_none() && user.ha1_sha256.is_none() {
        if user.username == current.username {
            user.ha1_md5 = current.ha1_md5.clone();
            user.ha1_sha256 = current.ha1_sha256.clone();
        } else {
            // HA1 includes the username: a rename needs the password again.
            let mut p = Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "password-required",
                "a new username needs the password",
            );
            p.errors.push(FieldError {
                path: "password".into(),
                message: "required when username changes".into(),
            });
            return Err(p);
        }
    }
    cfg.users[index] = user;
    st.writer()
        .put(cfg, basis)
        .await
        .map_err(|e| store_problem(e, index))?;
    let stored = st
        .store
        .get(&tenant)?
        .and_then(|c| c.users.into_iter().find(|u| u.extension == extension))
        .ok_or_else(|| Problem::not_found("user"))?;
    Ok(with_etag(StatusCode::OK, stored))
}

/// Delete a user (refused with the referencing paths while IVRs, numbers or forwarding name it).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/users/{extension}", params(("tenant" = String, Path), ("extension" = String, Path)),
    responses((status = 204), (status = 422, body = Problem)))]
pub(super) async fn delete_user(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path((tenant, extension)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    caller(&st, &key, &tenant, true)?;
    let (mut cfg, basis) = load_for_write(&st, &tenant)?;
    let index = user_index(&cfg, &extension)?;
    cfg.users.remove(index);
    // Mailboxes owned by the user keep existing but lose their owner.
    for m in &mut cfg.mailboxes {
        if m.owner.as_deref() == Some(extension.as_str()) {
            m.owner = None;
        }
    }
    st.writer().put(cfg, basis).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set or reset a user's SIP password (registered phones must re-authenticate with it).
#[utoipa::path(put, path = "/v1/tenants/{tenant}/users/{extension}/password", params(("tenant" = String, Path), ("extension" = String, Path)), request_body = NewPassword,
    responses((status = 204), (status = 422, body = Problem)))]
pub(super) async fn set_password(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path((tenant, extension)): Path<(String, String)>,
    body: Result<Json<NewPassword>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, Problem> {
    caller(&st, &key, &tenant, true)?;
    let Json(req) = body.map_err(body_problem)?;
    let len = req.password.chars().count();
    if !(8..=128).contains(&len) {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak-password",
            "the password must be 8-128 characters",
        );
        p.errors.push(FieldError {
            path: "password".into(),
            message: "must be 8-128 characters".into(),
        });
        return Err(p);
    }
    let (mut cfg, basis) = load_for_write(&st, &tenant)?;
    let user = cfg
        .users
        .iter_mut()
        .find(|u| u.extension == extension)
        .ok_or_else(|| Problem::not_found("user"))?;
    user.password = Some(req.password);
    user.ha1_md5 = None;
    user.ha1_sha256 = None;
    st.writer().put(cfg, basis).await?;
    tracing::info!(tenant = %tenant, user = %extension, "SIP password changed through the admin API");
    Ok(StatusCode::NO_CONTENT)
}
