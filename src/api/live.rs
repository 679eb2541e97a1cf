//! Live state owned by the SIP endpoint task: calls in progress (list, hang up) and a user's
//! registered contacts. Requests travel to the endpoint task over [`Control`] and come back
//! on a oneshot, so the endpoint stays the single owner of call state.

use super::error::Problem;
use super::live_cluster::{anywhere, ask, CallOp, OpAnswer};
use super::page::{page_type, PageParams, PageQuery, Paging};
use super::ApiState;
use super::Key;
use crate::sip::endpoint::LiveCall;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use std::sync::Arc;
use tokio::sync::oneshot;

/// A call in progress, as the admin API lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CallInfo {
    /// Id to hang the call up with (unique across a cluster's nodes).
    pub id: u64,
    /// The node the call runs on (`cluster.node_id`).
    #[serde(default)]
    pub node: String,
    /// SIP Call-ID.
    pub call_id: String,
    /// Caller (From).
    pub from: String,
    /// Called party (To).
    pub to: String,
    /// `ringing`, `answered` (200 sent, no ACK yet) or `up`.
    pub state: String,
    /// Seconds since the INVITE.
    pub duration_secs: u64,
    /// Negotiated codec.
    pub codec: Option<String>,
    /// Where the call was routed.
    pub target: String,
    /// The caller put the call on hold.
    pub on_hold: bool,
    /// Caller's source address.
    pub source: String,
    /// The call app running now (`ivr`, `voicemail`, `echo`, …).
    pub app: Option<String>,
    /// The apps the call went through (`ivr:main:1 > voicemail:100`).
    pub path: Option<String>,
}

impl CallInfo {
    /// The endpoint's view of a call with the call layer's (its app and path).
    pub fn new(c: LiveCall, app: Option<String>, path: Option<String>) -> CallInfo {
        CallInfo {
            id: c.id,
            node: String::new(),
            call_id: c.call_id,
            from: c.from,
            to: c.to,
            state: c.state.to_string(),
            duration_secs: c.duration_secs,
            codec: c.codec.map(str::to_string),
            target: c.target,
            on_hold: c.on_hold,
            source: c.source.to_string(),
            app,
            path,
        }
    }
}

/// One registered contact, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Binding {
    /// Contact URI as registered.
    pub uri: String,
    /// Unix second when it expires.
    pub expires_at: u64,
    /// Source address the REGISTER came from (where to reach a phone behind NAT).
    pub source: String,
    /// Transport the REGISTER used (`UDP`, `TCP`).
    pub transport: String,
    /// Call-ID of the registering REGISTER (RFC 3261 §10.3 step 7).
    pub call_id: String,
    /// CSeq of the registering REGISTER.
    pub cseq: u32,
    /// `q` value, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// User-Agent of the phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl From<crate::sip::registrar::Binding> for Binding {
    fn from(b: crate::sip::registrar::Binding) -> Binding {
        Binding {
            uri: b.uri,
            expires_at: b.expires_at,
            source: b.source.to_string(),
            transport: b.transport,
            call_id: b.call_id,
            cseq: b.cseq,
            q: b.q,
            user_agent: b.user_agent,
        }
    }
}

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
    /// Blind-transfer one of a tenant's calls; answers None when there is no such call, Some(false)
    /// when the destination reaches nothing.
    Transfer {
        /// Tenant id.
        tenant: String,
        /// Call id.
        id: u64,
        /// Dial string (extension, tenant number, allowed external number).
        destination: String,
        /// Answer.
        reply: oneshot::Sender<Option<bool>>,
    },
    /// Start (`start`) or stop recording a call; None: no such call, Some(false): it already
    /// is (not) recording or cannot be recorded now.
    Recording {
        /// Tenant id.
        tenant: String,
        /// Call id.
        id: u64,
        /// Start or stop.
        start: bool,
        /// Answer.
        reply: oneshot::Sender<Option<bool>>,
    },
    /// Stop (`on`) or resume taking new calls; answers whether the node is draining now (a
    /// node shutting down stays drained).
    Drain {
        /// Drain, or take calls again.
        on: bool,
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
        reply: oneshot::Sender<Vec<crate::sip::registrar::Binding>>,
    },
}

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/tenants/{tenant}/calls", get(list_calls))
        .route("/v1/tenants/{tenant}/calls/{id}", delete(hangup))
        .route("/v1/tenants/{tenant}/calls/{id}/transfer", post(transfer))
        .route(
            "/v1/tenants/{tenant}/calls/{id}/recording",
            post(start_recording).delete(stop_recording),
        )
        .route(
            "/v1/tenants/{tenant}/users/{extension}/registrations",
            get(registrations),
        )
}

page_type! {
    /// One page of a tenant's calls in progress.
    CallPage of CallInfo,
    items: "Calls, by call id.",
    cursor: "`next_cursor` of the previous page (calls after this call id, a decimal number); empty is the first page.",
    pattern: Some("^[0-9]{0,19}$"),
}

/// The outcome of an action on one call (None: no such call anywhere).
fn outcome(answer: OpAnswer) -> Option<bool> {
    match answer {
        OpAnswer::Outcome(o) => o,
        OpAnswer::Calls(_) => None,
    }
}

fn check_tenant(st: &ApiState, tenant: &str) -> Result<(), Problem> {
    match st.store.get(tenant)? {
        Some(_) => Ok(()),
        None => Err(Problem::not_found("tenant")),
    }
}

/// A tenant's calls in progress, by call id. Calls start and end between pages: a page holds
/// the calls in progress when it was asked for.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/calls", params(("tenant" = String, Path), PageParams<CallPage>),
    responses((status = 200, body = CallPage), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn list_calls(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<CallPage>, Problem> {
    key.tenant(&tenant, false)?;
    check_tenant(&st, &tenant)?;
    let paging = Paging::from_query(query)?;
    let calls = match anywhere(&st, CallOp::List { tenant }).await? {
        OpAnswer::Calls(calls) => calls,
        OpAnswer::Outcome(_) => Vec::new(),
    };
    let (items, next_cursor) = paging.page(calls, |c| c.id);
    Ok(Json(CallPage { items, next_cursor }))
}

/// Hang up a call (BYE, or a final response while it rings).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/calls/{id}", params(("tenant" = String, Path), ("id" = String, Path, description = "Call id from the list")),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn hangup(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    key.tenant(&tenant, true)?;
    // Not a call id at all: no such call (rather than a parse error in plain text).
    let id: u64 = id.parse().map_err(|_| Problem::not_found("call"))?;
    let op = CallOp::Hangup {
        tenant: tenant.clone(),
        id,
    };
    if matches!(anywhere(&st, op).await?, OpAnswer::Outcome(Some(true))) {
        tracing::info!(tenant = %tenant, call = id, "call hung up through the admin API");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("call"))
    }
}

async fn recording(
    st: &ApiState,
    key: &Key,
    tenant: String,
    id: String,
    start: bool,
) -> Result<StatusCode, Problem> {
    key.tenant(&tenant, true)?;
    let id: u64 = id.parse().map_err(|_| Problem::not_found("call"))?;
    let op = CallOp::Recording {
        tenant: tenant.clone(),
        id,
        start,
    };
    match outcome(anywhere(st, op).await?) {
        None => Err(Problem::not_found("call")),
        Some(false) => Err(Problem::new(
            StatusCode::CONFLICT,
            "recording-state",
            if start {
                "the call is already recorded, or not answered yet"
            } else {
                "the call is not being recorded"
            },
        )),
        Some(true) => {
            tracing::info!(%tenant, call = id, start, "call recording changed through the admin API");
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

/// Start recording a call in progress (stereo WAV: the caller, and the party it talks to).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/calls/{id}/recording", params(("tenant" = String, Path), ("id" = String, Path, description = "Call id from the list")),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(super) async fn start_recording(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    recording(&st, &key, tenant, id, true).await
}

/// Stop recording a call in progress.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/calls/{id}/recording", params(("tenant" = String, Path), ("id" = String, Path, description = "Call id from the list")),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(super) async fn stop_recording(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    recording(&st, &key, tenant, id, false).await
}

/// Where a call is transferred to.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// What to dial: an extension (`102`, `500`), one of the tenant's numbers, or an external
    /// number an outbound route allows.
    #[schema(min_length = 1, max_length = 32, pattern = "^[0-9A-Za-z*#+]+$")]
    pub destination: String,
}

/// Blind-transfer a call: the caller leaves whoever it talks to (or what it hears) and goes
/// to `destination`.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/calls/{id}/transfer", params(("tenant" = String, Path), ("id" = String, Path, description = "Call id from the list")),
    request_body = TransferRequest,
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn transfer(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path((tenant, id)): Path<(String, String)>,
    body: Result<Json<TransferRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, Problem> {
    key.tenant(&tenant, true)?;
    let id: u64 = id.parse().map_err(|_| Problem::not_found("call"))?;
    let Json(req) = body.map_err(super::body_problem)?;
    let valid = !req.destination.is_empty()
        && req.destination.len() <= 32
        && req
            .destination
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '#' | '+'));
    if !valid {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-destination",
            "destination must be 1-32 of 0-9, A-Z, a-z, *, #, +",
        );
        p.errors.push(super::error::FieldError {
            path: "destination".into(),
            message: "must be 1-32 of 0-9, A-Z, a-z, *, #, +".into(),
        });
        return Err(p);
    }
    let op = CallOp::Transfer {
        tenant: tenant.clone(),
        id,
        destination: req.destination.clone(),
    };
    match outcome(anywhere(&st, op).await?) {
        None => Err(Problem::not_found("call")),
        Some(false) => {
            let mut p = Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unreachable-destination",
                format!("{} reaches nothing in this tenant", req.destination),
            );
            p.errors.push(super::error::FieldError {
                path: "destination".into(),
                message: "reaches no extension, number or allowed route".into(),
            });
            Err(p)
        }
        Some(true) => {
            tracing::info!(%tenant, call = id, destination = %req.destination, "call transferred through the admin API");
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

/// A user's registered contacts: a bare array, not paged (a user has at most 10 contacts).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/users/{extension}/registrations", params(("tenant" = String, Path), ("extension" = String, Path)),
    responses((status = 200, body = [Binding]), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn registrations(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path((tenant, extension)): Path<(String, String)>,
) -> Result<Json<Vec<Binding>>, Problem> {
    key.tenant(&tenant, false)?;
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
        .await?
        .into_iter()
        .map(Binding::from)
        .collect(),
    ))
}
