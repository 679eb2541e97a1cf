//! Live state owned by the SIP endpoint task: calls in progress (list, hang up) and a user's
//! registered contacts. Requests travel to the endpoint task over [`Control`] and come back
//! on a oneshot, so the endpoint stays the single owner of call state.

use super::error::Problem;
use super::{authenticate, authorize, ApiState};
use crate::sip::endpoint::CallInfo;
use crate::sip::registrar::Binding;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get};
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;

/// A request to the endpoint task.
#[derive(Debug)]
pub enum Control {
    /// List a tenant's calls.
    Calls {
        /// Tenant id.
        tenant: String,
        /// Answer.
        reply: oneshot::Sender<Vec<CallInfo>>,
    },
    /// Hang up one of a tenant's calls; answers false when there is no such call for it.
    Hangup {
        /// Tenant id.
        tenant: String,
        /// Call id.
        id: u64,
        /// Answer.
        reply: oneshot::Sender<bool>,
    },
    /// A user's registered contacts.
    Registrations {
        /// Tenant id.
        tenant: String,
        /// User extension.
        extension: String,
        /// Answer.
        reply: oneshot::Sender<Vec<Binding>>,
    },
}

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/tenants/{tenant}/calls", get(list_calls))
        .route("/v1/tenants/{tenant}/calls/{id}", delete(hangup))
        .route(
            "/v1/tenants/{tenant}/users/{extension}/registrations",
            get(registrations),
        )
}

fn unavailable() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "sip-unavailable",
        "the SIP endpoint is not running",
    )
}

async fn ask<T>(
    st: &ApiState,
    make: impl FnOnce(oneshot::Sender<T>) -> Control,
) -> Result<T, Problem> {
    let tx = st.control.as_ref().ok_or_else(unavailable)?;
    let (reply, rx) = oneshot::channel();
    tx.send(make(reply)).await.map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

fn check_tenant(st: &ApiState, tenant: &str) -> Result<(), Problem> {
    match st.store.get(tenant)? {
        Some(_) => Ok(()),
        None => Err(Problem::not_found("tenant")),
    }
}

/// A tenant's calls in progress.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/calls", params(("tenant" = String, Path)),
    responses((status = 200, body = [CallInfo]), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn list_calls(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<CallInfo>>, Problem> {
    let p = authenticate(&st, &headers, peer.ip())?;
    authorize(&p, &tenant, false)?;
    check_tenant(&st, &tenant)?;
    let t = tenant.clone();
    Ok(Json(
        ask(&st, |reply| Control::Calls { tenant: t, reply }).await?,
    ))
}

/// Hang up a call (BYE, or a final response while it rings).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/calls/{id}", params(("tenant" = String, Path), ("id" = String, Path, description = "Call id from the list")),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn hangup(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let p = authenticate(&st, &headers, peer.ip())?;
    authorize(&p, &tenant, true)?;
    // Not a call id at all: no such call (rather than a parse error in plain text).
    let id: u64 = id.parse().map_err(|_| Problem::not_found("call"))?;
    let t = tenant.clone();
    if ask(&st, |reply| Control::Hangup {
        tenant: t,
        id,
        reply,
    })
    .await?
    {
        tracing::info!(tenant = %tenant, call = id, "call hung up through the admin API");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("call"))
    }
}

/// A user's registered contacts.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/users/{extension}/registrations", params(("tenant" = String, Path), ("extension" = String, Path)),
    responses((status = 200, body = [Binding]), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn registrations(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((tenant, extension)): Path<(String, String)>,
) -> Result<Json<Vec<Binding>>, Problem> {
    let p = authenticate(&st, &headers, peer.ip())?;
    authorize(&p, &tenant, false)?;
    let snap = st.store.snapshot();
    let known = snap
        .tenant(&tenant)
        .is_some_and(|t| t.user_by_extension(&extension).is_some());
    if !known {
        return Err(Problem::not_found("user"));
    }
    Ok(Json(
        ask(&st, |reply| Control::Registrations {
            tenant,
            extension,
            reply,
        })
        .await?,
    ))
}
