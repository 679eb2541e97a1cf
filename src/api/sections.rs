//! Sections of a tenant edited as one document each, with their own ETag: the IVR menu graph
//! (validated as a whole: references, loops without exit), the numbers (DIDs), the trunks and
//! the mailboxes. Secrets in them are write-only: trunk passwords and mailbox PIN hashes are
//! never returned and are kept when a PUT leaves them out.

use super::error::Problem;
use super::Key;
use super::{
    authorize, body_problem, check_if_match, etag_of, load_for_write, load_tenant, ApiState,
};
use crate::tenant::model::{
    Extension, IvrMenu, Limits, Mailbox, Number, OutboundRoute, TenantSettings, Trunk,
};
use crate::tenant::TenantConfig;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/tenants/{tenant}/ivrs", get(get_ivrs).put(put_ivrs))
        .route(
            "/v1/tenants/{tenant}/numbers",
            get(get_numbers).put(put_numbers),
        )
        .route(
            "/v1/tenants/{tenant}/trunks",
            get(get_trunks).put(put_trunks),
        )
        .route(
            "/v1/tenants/{tenant}/mailboxes",
            get(get_mailboxes).put(put_mailboxes),
        )
        .route(
            "/v1/tenants/{tenant}/extensions",
            get(get_extensions).put(put_extensions),
        )
        .route(
            "/v1/tenants/{tenant}/outbound-routes",
            get(get_outbound_routes).put(put_outbound_routes),
        )
        .route(
            "/v1/tenants/{tenant}/settings",
            get(get_settings).put(put_settings),
        )
        .route(
            "/v1/tenants/{tenant}/limits",
            get(get_limits).put(put_limits),
        )
}

/// One editable section of the tenant document.
trait Section: Serialize + DeserializeOwned + Clone {
    /// Name in messages.
    const NAME: &'static str;
    /// The section in a document.
    fn take(cfg: &TenantConfig) -> Self;
    /// Puts a new value in, keeping write-only secrets the new value leaves out.
    fn apply(self, cfg: &mut TenantConfig);
    /// The section as the API shows it.
    fn public(self) -> Self {
        self
    }
}

impl Section for BTreeMap<String, IvrMenu> {
    const NAME: &'static str = "IVR menus";
    fn take(cfg: &TenantConfig) -> Self {
        cfg.ivrs.clone()
    }
    fn apply(self, cfg: &mut TenantConfig) {
        cfg.ivrs = self;
    }
}

impl Section for Vec<Number> {
    const NAME: &'static str = "numbers";
    fn take(cfg: &TenantConfig) -> Self {
        cfg.numbers.clone()
    }
    fn apply(self, cfg: &mut TenantConfig) {
        cfg.numbers = self;
    }
}

impl Section for Vec<Trunk> {
    const NAME: &'static str = "trunks";
    fn take(cfg: &TenantConfig) -> Self {
        cfg.trunks.clone()
    }
    fn apply(mut self, cfg: &mut TenantConfig) {
        for t in &mut self {
            if t.password.is_none() {
                t.password = cfg
                    .trunks
                    .iter()
                    .find(|c| c.id == t.id)
                    .and_then(|c| c.password.clone());
            }
        }
        cfg.trunks = self;
    }
    fn public(mut self) -> Self {
        for t in &mut self {
            t.password = None;
        }
        self
    }
}

impl Section for Vec<Mailbox> {
    const NAME: &'static str = "mailboxes";
    fn take(cfg: &TenantConfig) -> Self {
        cfg.mailboxes.clone()
    }
    fn apply(mut self, cfg: &mut TenantConfig) {
        for m in &mut self {
            if m.pin.is_none() && m.pin_hash.is_none() {
                m.pin_hash = cfg
                    .mailboxes
                    .iter()
                    .find(|c| c.id == m.id)
                    .and_then(|c| c.pin_hash.clone());
            }
        }
        cfg.mailboxes = self;
    }
    fn public(mut self) -> Self {
        for m in &mut self {
            m.pin_hash = None;
        }
        self
    }
}

/// Plain sections: the value is the section, nothing secret in it.
macro_rules! plain_section {
    ($t:ty, $name:literal, $field:ident) => {
        impl Section for $t {
            const NAME: &'static str = $name;
            fn take(cfg: &TenantConfig) -> Self {
                cfg.$field.clone()
            }
            fn apply(self, cfg: &mut TenantConfig) {
                cfg.$field = self;
            }
        }
    };
}

plain_section!(Vec<Extension>, "extensions", extensions);
plain_section!(Vec<OutboundRoute>, "outbound routes", outbound_routes);
plain_section!(TenantSettings, "settings", settings);
plain_section!(Limits, "limits", limits);

fn respond<S: Section>(value: S) -> Response {
    let tag = etag_of(&value);
    (StatusCode::OK, [(header::ETAG, tag)], Json(value.public())).into_response()
}

async fn get_section<S: Section>(
    st: &ApiState,
    key: &Key,
    tenant: &str,
) -> Result<Response, Problem> {
    let p = key.0.clone();
    authorize(&p, tenant, false)?;
    let cfg = load_tenant(st, tenant)?;
    Ok(respond(S::take(&cfg)))
}

async fn put_section<S: Section>(
    st: &ApiState,
    key: &Key,
    headers: &HeaderMap,
    tenant: &str,
    body: Result<Json<S>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    let p = key.0.clone();
    authorize(&p, tenant, true)?;
    let (mut cfg, basis) = load_for_write(st, tenant)?;
    check_if_match(headers, &etag_of(&S::take(&cfg)), S::NAME)?;
    let Json(value) = body.map_err(body_problem)?;
    let before = cfg.clone();
    value.apply(&mut cfg);
    super::operator::check_operator_fields(&p, &before, &cfg)?;
    st.writer().put(cfg, basis).await?;
    tracing::info!(tenant = %tenant, section = S::NAME, "tenant section replaced through the admin API");
    let stored = load_tenant(st, tenant)?;
    Ok(respond(S::take(&stored)))
}

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// The IVR menu graph (menus by id), with its ETag.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/ivrs", params(("tenant" = String, Path)),
    responses((status = 200, body = BTreeMap<String, IvrMenu>, headers(("ETag" = String)))))]
pub(super) async fn get_ivrs(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
) -> Result<Response, Problem> {
    get_section::<BTreeMap<String, IvrMenu>>(&st, &key, &tenant).await
}

/// Replace the IVR menu graph, validated as one document (`If-Match` required). It reaches new
/// calls at once; a call already in a menu keeps the graph it started with.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/ivrs", params(("tenant" = String, Path), ("If-Match" = String, Header)), request_body = BTreeMap<String, IvrMenu>,
    responses((status = 200, body = BTreeMap<String, IvrMenu>, headers(("ETag" = String))), (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
pub(super) async fn put_ivrs(
    State(st): State<Arc<ApiState>>,
    key: Key,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Body<BTreeMap<String, IvrMenu>>,
) -> Result<Response, Problem> {
    put_section(&st, &key, &headers, &tenant, body).await
}

/// The tenant's numbers (DIDs) and where they go.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/numbers", params(("tenant" = String, Path)), responses((status = 200, body = [Number], headers(("ETag" = String)))))]
pub(super) async fn get_numbers(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
) -> Result<Response, Problem> {
    get_section::<Vec<Number>>(&st, &key, &tenant).await
}

/// Replace the numbers (`If-Match` required).
#[utoipa::path(put, path = "/v1/tenants/{tenant}/numbers", params(("tenant" = String, Path), ("If-Match" = String, Header)), request_body = [Number],
    responses((status = 200, body = [Number], headers(("ETag" = String))), (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
pub(super) async fn put_numbers(
    State(st): State<Arc<ApiState>>,
    key: Key,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Body<Vec<Number>>,
) -> Result<Response, Problem> {
    put_section(&st, &key, &headers, &tenant, body).await
}

/// The tenant's trunks (passwords are write-only).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/trunks", params(("tenant" = String, Path)), responses((status = 200, body = [Trunk], headers(("ETag" = String)))))]
pub(super) async fn get_trunks(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
) -> Result<Response, Problem> {
    get_section::<Vec<Trunk>>(&st, &key, &tenant).await
}

/// Replace the trunks (`If-Match` required); a trunk without `password` keeps its stored one.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/trunks", params(("tenant" = String, Path), ("If-Match" = String, Header)), request_body = [Trunk],
    responses((status = 200, body = [Trunk], headers(("ETag" = String))), (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
pub(super) async fn put_trunks(
    State(st): State<Arc<ApiState>>,
    key: Key,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Body<Vec<Trunk>>,
) -> Result<Response, Problem> {
    put_section(&st, &key, &headers, &tenant, body).await
}

/// The tenant's mailboxes (PIN hashes are write-only).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/mailboxes", params(("tenant" = String, Path)), responses((status = 200, body = [Mailbox], headers(("ETag" = String)))))]
pub(super) async fn get_mailboxes(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
) -> Result<Response, Problem> {
    get_section::<Vec<Mailbox>>(&st, &key, &tenant).await
}

/// Replace the mailboxes (`If-Match` required); give `pin` to set a PIN (stored hashed), leave
/// it out to keep the current one.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/mailboxes", params(("tenant" = String, Path), ("If-Match" = String, Header)), request_body = [Mailbox],
    responses((status = 200, body = [Mailbox], headers(("ETag" = String))), (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
pub(super) async fn put_mailboxes(
    State(st): State<Arc<ApiState>>,
    key: Key,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Body<Vec<Mailbox>>,
) -> Result<Response, Problem> {
    put_section(&st, &key, &headers, &tenant, body).await
}

/// Feature extensions (what 500, 600, `*97` … do).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/extensions", params(("tenant" = String, Path)), responses((status = 200, body = [Extension], headers(("ETag" = String)))))]
pub(super) async fn get_extensions(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
) -> Result<Response, Problem> {
    get_section::<Vec<Extension>>(&st, &key, &tenant).await
}

/// Replace the feature extensions (`If-Match` required).
#[utoipa::path(put, path = "/v1/tenants/{tenant}/extensions", params(("tenant" = String, Path), ("If-Match" = String, Header)), request_body = [Extension],
    responses((status = 200, body = [Extension], headers(("ETag" = String))), (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
pub(super) async fn put_extensions(
    State(st): State<Arc<ApiState>>,
    key: Key,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Body<Vec<Extension>>,
) -> Result<Response, Problem> {
    put_section(&st, &key, &headers, &tenant, body).await
}

/// Outbound routes: which dialed prefixes may leave through which trunk (toll-fraud control).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/outbound-routes", params(("tenant" = String, Path)), responses((status = 200, body = [OutboundRoute], headers(("ETag" = String)))))]
pub(super) async fn get_outbound_routes(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
) -> Result<Response, Problem> {
    get_section::<Vec<OutboundRoute>>(&st, &key, &tenant).await
}

/// Replace the outbound routes (`If-Match` required).
#[utoipa::path(put, path = "/v1/tenants/{tenant}/outbound-routes", params(("tenant" = String, Path), ("If-Match" = String, Header)), request_body = [OutboundRoute],
    responses((status = 200, body = [OutboundRoute], headers(("ETag" = String))), (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
pub(super) async fn put_outbound_routes(
    State(st): State<Arc<ApiState>>,
    key: Key,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Body<Vec<OutboundRoute>>,
) -> Result<Response, Problem> {
    put_section(&st, &key, &headers, &tenant, body).await
}

/// Tenant settings (recording policy, retention).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/settings", params(("tenant" = String, Path)), responses((status = 200, body = TenantSettings, headers(("ETag" = String)))))]
pub(super) async fn get_settings(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
) -> Result<Response, Problem> {
    get_section::<TenantSettings>(&st, &key, &tenant).await
}

/// Replace the tenant settings (`If-Match` required).
#[utoipa::path(put, path = "/v1/tenants/{tenant}/settings", params(("tenant" = String, Path), ("If-Match" = String, Header)), request_body = TenantSettings,
    responses((status = 200, body = TenantSettings, headers(("ETag" = String))), (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
pub(super) async fn put_settings(
    State(st): State<Arc<ApiState>>,
    key: Key,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Body<TenantSettings>,
) -> Result<Response, Problem> {
    put_section(&st, &key, &headers, &tenant, body).await
}

/// Tenant limits (concurrent calls, longest call).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/limits", params(("tenant" = String, Path)), responses((status = 200, body = Limits, headers(("ETag" = String)))))]
pub(super) async fn get_limits(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
) -> Result<Response, Problem> {
    get_section::<Limits>(&st, &key, &tenant).await
}

/// Replace the tenant limits (`If-Match` required).
#[utoipa::path(put, path = "/v1/tenants/{tenant}/limits", params(("tenant" = String, Path), ("If-Match" = String, Header)), request_body = Limits,
    responses((status = 200, body = Limits, headers(("ETag" = String))), (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
pub(super) async fn put_limits(
    State(st): State<Arc<ApiState>>,
    key: Key,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Body<Limits>,
) -> Result<Response, Problem> {
    put_section(&st, &key, &headers, &tenant, body).await
}
