//! The admin HTTP API (axum): JSON in and out, RFC 9457 problem documents for every error,
//! Bearer keys (the admin key from settings; tenant keys created here, stored hashed), ETags
//! with `If-Match` on configuration documents, an OpenAPI 3.1 document generated from these
//! handlers at `/openapi.json` with an interactive page at `/docs`, health and Prometheus
//! metrics.
//!
//! Tenant isolation is enforced in one place, [`authorize`]: a tenant key asking for another
//! tenant's resources gets the same 404 as for a tenant that does not exist.
//!
//! Configuration changes go through [`TenantStore::put`] — the same validation and snapshot
//! swap as `tenant import` — so they reach new calls at once and never calls in progress.

mod audio;
mod calllog;
pub mod cluster_view;
pub mod error;
mod events;
pub mod keys;
pub mod live;
pub mod live_cluster;
mod metrics;
pub mod openapi;
mod operator;
mod page;
mod prompts;
mod sections;
mod tenants;
mod users;
mod voicemail;
pub mod web;

use crate::sip::auth_guard::{AuthGuard, GuardLimits};
use crate::tenant::TenantStore;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
pub use error::Problem;
pub use keys::{ApiKeys, Principal};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use utoipa::OpenApi;

/// Figures the SIP and media side publish for `/metrics` and `/health/ready`.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// SIP listeners are bound and the endpoint runs.
    pub sip_ready: AtomicBool,
    /// Calls in progress.
    pub calls_active: AtomicU64,
    /// Calls started since start-up.
    pub calls_started: AtomicU64,
    /// Calls ended since start-up.
    pub calls_ended: AtomicU64,
    /// Registered contacts.
    pub registrations: AtomicU64,
    /// Malformed SIP messages.
    pub sip_malformed: AtomicU64,
    /// TLS handshakes that failed or timed out (`tls:`, `wss:`).
    pub sip_tls_handshake_failures: AtomicU64,
    /// Trunk name lookups that failed or found nothing.
    pub trunk_dns_failures: AtomicU64,
    /// Trunk legs moved on to the next target.
    pub trunk_failovers: AtomicU64,
    /// Trunk calls that failed because the trunk's name had no target.
    pub trunk_unresolved: AtomicU64,
    /// Offers refused for their SRTP.
    pub srtp_offers_refused: AtomicU64,
    /// Attended transfers refused (`Replaces` naming no dialog of the transferor's).
    pub sip_replaces_refused: AtomicU64,
    /// RFC 5923 `alias` offers refused (a name the certificate does not hold, or too many).
    pub sip_aliases_refused: AtomicU64,
    /// SRTP packets dropped (failed authentication, replays).
    pub srtp_packets_refused: AtomicU64,
    /// Failed digest authentications.
    pub sip_auth_failures: AtomicU64,
    /// Requests refused because their (user, address) or address is blocked.
    pub sip_auth_refused: AtomicU64,
    /// Blocks started by too many failures.
    pub sip_auth_blocks: AtomicU64,
    /// Media legs.
    pub media_legs: AtomicU64,
    /// RTP packets received.
    pub rtp_packets_in: AtomicU64,
    /// RTP packets sent.
    pub rtp_packets_out: AtomicU64,
    /// Media ticks that started over 2 ms late.
    pub rtp_late_ticks: AtomicU64,
    /// The node takes no new calls (SIGTERM, or `POST /v1/node/drain`).
    pub draining: AtomicBool,
}

/// Everything handlers share.
pub struct ApiState {
    /// Tenant documents and the snapshot.
    pub store: Arc<TenantStore>,
    /// Keys.
    pub keys: ApiKeys,
    /// SIP/media figures.
    pub live: Arc<LiveStats>,
    /// Requests to the SIP endpoint task (None when it does not run, e.g. in unit tests).
    pub control: Option<tokio::sync::mpsc::Sender<live::Control>>,
    /// Voicemail store and message-waiting notices shared with the call apps.
    pub services: Arc<crate::call::Services>,
    limiter: Mutex<AuthGuard>,
    responses: Mutex<BTreeMap<u16, u64>>,
    /// Seconds a store may fail before `/health/ready` says not ready.
    store_failing_after: AtomicU64,
    /// What the phone page fills in.
    pub phone_defaults: Mutex<web::PhoneDefaults>,
    /// SIP listeners as bound (`udp 0.0.0.0:5060`), for `/v1/node`.
    pub listeners: Mutex<Vec<String>>,
    /// Who may read `/metrics` without a key.
    pub metrics_access: MetricsAccess,
    /// The cluster's configuration authority, when this node is one of several.
    replica: std::sync::OnceLock<Arc<crate::cluster::ConfigReplica>>,
    /// The other nodes' live calls, when this node is one of several.
    call_bus: std::sync::OnceLock<crate::cluster::calls::CallBus>,
    /// This node's name, for the calls it lists.
    node_id: std::sync::OnceLock<String>,
    /// The cluster's tenant API keys, when this node is one of several.
    shared_keys: std::sync::OnceLock<crate::cluster::keys::SharedKeys>,
    /// The cluster's prompt versions, when this node is one of several.
    shared_prompts: std::sync::OnceLock<crate::cluster::prompts::SharedPrompts>,
}

/// Who may read `/metrics` without a key (`api.metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricsAccess {
    /// Clients on the loopback interface (a local Prometheus or agent); others need a key.
    #[default]
    Loopback,
    /// Any key (admin or tenant) for everybody.
    Key,
    /// Anyone who reaches the API port.
    Open,
}

impl ApiState {
    /// Shared state for the router.
    pub fn new(
        store: Arc<TenantStore>,
        keys: ApiKeys,
        live: Arc<LiveStats>,
        control: Option<tokio::sync::mpsc::Sender<live::Control>>,
        services: Arc<crate::call::Services>,
        auth_max_failures: u32,
        metrics_access: MetricsAccess,
    ) -> Arc<ApiState> {
        Arc::new(ApiState {
            store,
            keys,
            live,
            control,
            services,
            limiter: Mutex::new(AuthGuard::new(GuardLimits {
                max_failures: auth_max_failures,
                max_users: u32::MAX,
                window: Duration::from_secs(60),
                block: Duration::from_secs(300),
                block_max: Duration::from_secs(3600),
            })),
            responses: Mutex::new(BTreeMap::new()),
            store_failing_after: AtomicU64::new(60),
            phone_defaults: Mutex::new(web::PhoneDefaults::default()),
            listeners: Mutex::new(Vec::new()),
            metrics_access,
            replica: std::sync::OnceLock::new(),
            call_bus: std::sync::OnceLock::new(),
            node_id: std::sync::OnceLock::new(),
            shared_keys: std::sync::OnceLock::new(),
            shared_prompts: std::sync::OnceLock::new(),
        })
    }

    /// From now on prompt uploads and deletions are announced to the cluster's other nodes.
    pub fn share_prompts(&self, shared: crate::cluster::prompts::SharedPrompts) {
        let _ = self.shared_prompts.set(shared);
    }

    /// The cluster's prompt versions, in a cluster.
    pub fn shared_prompts(&self) -> Option<&crate::cluster::prompts::SharedPrompts> {
        self.shared_prompts.get()
    }

    /// From now on tenant keys are made and revoked through the cluster's key bucket.
    pub fn share_keys(&self, shared: crate::cluster::keys::SharedKeys) {
        let _ = self.shared_keys.set(shared);
    }

    /// Makes a key for `tenant` (in a cluster: usable on every node).
    pub async fn create_key(
        &self,
        tenant: &str,
        name: &str,
        read_only: bool,
        now: u64,
    ) -> Result<(keys::KeyInfo, String), Problem> {
        let Some(shared) = self.shared_keys.get() else {
            return self
                .keys
                .create(tenant, name, read_only, now)
                .map_err(|e| Problem::from(crate::tenant::TenantStoreError::Db(e)));
        };
        let (hash, info, key) = ApiKeys::mint(tenant, name, read_only, now);
        let record = serde_json::to_vec(&info).map_err(|e| {
            Problem::from(crate::tenant::TenantStoreError::Db(
                crate::localdb::LocalDbError::Decode {
                    key: info.id.clone(),
                    source: e,
                },
            ))
        })?;
        shared.create(&hex::encode(hash), record).await?;
        Ok((info, key))
    }

    /// Revokes `tenant`'s key `id` (in a cluster: on every node); false when there is none.
    pub async fn revoke_key(&self, tenant: &str, id: &str) -> Result<bool, Problem> {
        let Some(shared) = self.shared_keys.get() else {
            return self
                .keys
                .revoke(tenant, id)
                .map_err(|e| Problem::from(crate::tenant::TenantStoreError::Db(e)));
        };
        match self.keys.find(tenant, id) {
            Some(hash) => {
                shared.revoke(&hex::encode(hash)).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Revokes every key of `tenant`.
    pub async fn revoke_all_keys(&self, tenant: &str) -> Result<(), Problem> {
        for k in self.keys.list(tenant) {
            self.revoke_key(tenant, &k.id).await?;
        }
        Ok(())
    }

    /// Names this node (`cluster.node_id`, else the host name) in what it lists.
    pub fn set_node_id(&self, id: String) {
        let _ = self.node_id.set(id);
    }

    /// This node's name.
    pub fn node_id(&self) -> String {
        self.node_id.get().cloned().unwrap_or_default()
    }

    /// The call bus, in a cluster.
    pub fn call_bus(&self) -> Option<&crate::cluster::calls::CallBus> {
        self.call_bus.get()
    }

    /// From now on tenant writes go through the cluster's configuration authority, and the
    /// live-call endpoints see every node's calls.
    pub fn join_cluster(
        self: &Arc<Self>,
        replica: Arc<crate::cluster::ConfigReplica>,
        bus: crate::cluster::calls::CallBus,
    ) {
        let _ = self.replica.set(replica);
        if self.call_bus.set(bus.clone()).is_ok() {
            live_cluster::serve_call_bus(self.clone(), bus);
        }
    }

    /// Where tenant writes go: the cluster's authority, else this node's store.
    pub fn writer(&self) -> crate::cluster::TenantWriter {
        match self.replica.get() {
            Some(r) => crate::cluster::TenantWriter::Cluster(r.clone()),
            None => crate::cluster::TenantWriter::Local(self.store.clone()),
        }
    }

    /// Where tenant configuration comes from, and how up to date this node is.
    pub fn config_report(&self) -> crate::cluster::ConfigReport {
        match self.replica.get() {
            Some(r) => r.report(),
            None => crate::cluster::ConfigReport {
                source: "local".into(),
                state: "ok".into(),
                revision: self.store.revision(),
                head_revision: self.store.revision(),
                lag_revisions: 0,
                lag_seconds: 0,
                rejected: 0,
                detail: None,
            },
        }
    }

    /// How long a store may fail before the node reports not ready.
    pub fn set_store_failing_after(&self, d: Duration) {
        self.store_failing_after
            .store(d.as_secs(), Ordering::Relaxed);
    }

    /// The history store, blob storage and spool (503 when this node runs without them).
    pub fn stores(&self) -> Result<&crate::spool::Stores, Problem> {
        self.services.stores.as_ref().ok_or_else(|| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-stores",
                "this node has no history store or blob storage",
            )
        })
    }
}

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Switchyard admin API", description = "Tenants, keys, health and metrics of a Switchyard node."),
    paths(
        health_live,
        health_ready,
        node,
        cluster_view::cluster,
        cluster_view::drain,
        cluster_view::undrain,
        tenants::list_tenants,
        tenants::create_tenant,
        tenants::get_tenant,
        tenants::put_tenant,
        tenants::delete_tenant,
        tenants::list_keys,
        tenants::create_key,
        tenants::revoke_key,
        live::list_calls,
        events::call_events,
        live::hangup,
        live::transfer,
        calllog::list_call_logs,
        calllog::get_call_log,
        calllog::call_stats,
        calllog::list_recordings,
        calllog::get_recording,
        calllog::delete_recording,
        calllog::audit_log,
        prompts::list_prompts,
        prompts::put_prompt,
        prompts::get_prompt,
        prompts::delete_prompt,
        voicemail::list_messages,
        voicemail::get_message,
        voicemail::update_message,
        voicemail::delete_message,
        voicemail::message_audio,
        live::start_recording,
        live::stop_recording,
        live::registrations,
        users::list_users,
        users::get_user,
        users::create_user,
        users::put_user,
        users::delete_user,
        users::set_password,
        sections::get_ivrs,
        sections::put_ivrs,
        sections::get_numbers,
        sections::put_numbers,
        sections::get_trunks,
        sections::put_trunks,
        sections::get_mailboxes,
        sections::put_mailboxes,
        sections::get_extensions,
        sections::put_extensions,
        sections::get_outbound_routes,
        sections::put_outbound_routes,
        sections::get_settings,
        sections::put_settings,
        sections::get_limits,
        sections::put_limits,
    ),
    components(schemas(Problem, error::FieldError, NodeInfo, StoreInfo, cluster_view::NodeStatus, cluster_view::ClusterView, cluster_view::DrainState, crate::cluster::ConfigReport, keys::KeyInfo, tenants::TenantSummary, tenants::NewKey, tenants::CreatedKey, Health, live::CallInfo, crate::call::events::CallNotice, crate::call::events::NoticeKind, live::Binding, users::NewPassword, live::TransferRequest, voicemail::MessageUpdate, crate::mailstore::Message, crate::mailstore::Folder, calllog::CallLogPage, calllog::RecordingPage, crate::history::Recording, crate::history::AuditEntry, calllog::AuditPage, prompts::PromptPage, prompts::PromptListItem, tenants::TenantPage, tenants::KeyPage, users::UserPage, live::CallPage, voicemail::MessagePage, crate::promptstore::PromptInfo, crate::history::CallStats, crate::history::DayCount, crate::history::UserCount, crate::call::cdr::CallRecord, crate::call::cdr::LegRecord, crate::call::cdr::Quality, crate::call::cdr::Direction, crate::call::cdr::Disposition, crate::records::call::EndedBy, crate::records::call::HangupCause)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document as served at `/openapi.json`.
pub fn document() -> serde_json::Value {
    openapi::finish(serde_json::to_value(ApiDoc::openapi()).unwrap_or_default())
}

/// The router with every route.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/health/live", get(health_live))
        .route("/health/ready", get(health_ready))
        .route("/metrics", get(metrics))
        .route("/v1/node", get(node))
        .route(
            "/v1/node/drain",
            axum::routing::post(cluster_view::drain).delete(cluster_view::undrain),
        )
        .route("/v1/cluster", get(cluster_view::cluster))
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/docs")
                .external_url_unchecked("/openapi.json", document()),
        )
        .merge(tenants::routes())
        .merge(live::routes())
        .merge(events::routes())
        .merge(voicemail::routes())
        .merge(calllog::routes())
        .merge(prompts::routes())
        .merge(web::routes())
        .merge(users::routes())
        .merge(sections::routes())
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "not-found", "no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "this route does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .with_state(state)
}

async fn count_responses(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let changes = method != axum::http::Method::GET && method != axum::http::Method::HEAD;
    let actor = changes
        .then(|| req.headers().get(header::AUTHORIZATION))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|k| st.keys.authenticate(k.trim()));
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    if let Ok(mut m) = st.responses.lock() {
        *m.entry(status).or_default() += 1;
    }
    // The audit log: every change an authenticated caller made (or tried) under /v1.
    if let Some(actor) = actor {
        if let (Some(stores), Some(rest)) = (&st.services.stores, path.strip_prefix("/v1/")) {
            let tenant = rest
                .strip_prefix("tenants/")
                .and_then(|r| r.split('/').next())
                .filter(|t| !t.is_empty())
                .unwrap_or("-")
                .to_string();
            let at_unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            stores.spool.push_history(crate::history::HistoryOp::Audit {
                tenant,
                entry: crate::history::AuditEntry {
                    id: format!("{at_unix}-{:016x}", rand::random::<u64>()),
                    at_unix,
                    actor: match actor {
                        Principal::Admin => "admin".into(),
                        Principal::Tenant { key_id, .. } => format!("key:{key_id}"),
                    },
                    action: method.to_string(),
                    target: path,
                    status,
                },
            });
            // A change is acknowledged only once what it queued (its audit entry, voicemail
            // and prompt metadata before it) is fsynced in the spool.
            if let Err(why) = stores.spool.synced().await {
                tracing::error!(%why, "admin API change not durable in the spool");
                return Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "spool-unavailable",
                    format!("the change was made but could not be made durable: {why}"),
                )
                .retry_after(10)
                .into_response();
            }
        }
    }
    resp
}

/// The checked API key of a request: every route that needs a key takes this extractor, so
/// authentication happens in one place. What the key may do with a tenant is
/// [`Key::tenant`] (tenant isolation, read-only keys).
#[derive(Debug, Clone)]
pub struct Key(pub Principal);

impl axum::extract::FromRequestParts<Arc<ApiState>> for Key {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        st: &Arc<ApiState>,
    ) -> Result<Key, Problem> {
        // Served with connect info: the peer address counts unknown keys per source.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        authenticate(st, &parts.headers, peer).map(Key)
    }
}

impl Key {
    /// The key may act on `tenant` (write when `write`); see [`authorize`].
    pub fn tenant(&self, tenant: &str, write: bool) -> Result<(), Problem> {
        authorize(&self.0, tenant, write)
    }
}

/// Checks the Bearer key; `Err` is the response to send (401, or 429 once an address has
/// sent too many unknown keys).
///
/// The key is checked first: a valid key always works, whatever junk other clients behind the
/// same address (a proxy, a NAT) sent. Only unknown keys are counted and refused.
pub fn authenticate(
    st: &ApiState,
    headers: &HeaderMap,
    peer: IpAddr,
) -> Result<Principal, Problem> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(p) = key.and_then(|k| st.keys.authenticate(k)) {
        return Ok(p);
    }
    let unauthorized = Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or unknown API key (Authorization: Bearer KEY)",
    );
    if key.is_none() {
        return Err(unauthorized);
    }
    let now = Instant::now();
    let Ok(mut l) = st.limiter.lock() else {
        return Err(unauthorized);
    };
    if l.check(peer, "", now).is_some() {
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-failures",
            "too many unknown keys from this address; try later",
        )
        .retry_after(300));
    }
    if let Some((_, lasts)) = l.failure(peer, "", now) {
        tracing::warn!(source = %peer, secs = lasts.as_secs(), "admin API: too many unknown keys; the address is refused (valid keys still work)");
    }
    Err(unauthorized)
}

/// A tenant's stored document, or the 404 every route gives for a missing tenant.
pub fn load_tenant(st: &ApiState, tenant: &str) -> Result<crate::tenant::TenantConfig, Problem> {
    st.store
        .get(tenant)?
        .ok_or_else(|| Problem::not_found("tenant"))
}

/// A tenant's document to change, with the version a write of it replaces (both from one
/// snapshot, so a change applied in between cannot slip under the write).
pub fn load_for_write(
    st: &ApiState,
    tenant: &str,
) -> Result<(crate::tenant::TenantConfig, crate::cluster::Basis), Problem> {
    let snap = st.store.snapshot();
    let cfg = snap
        .tenant(tenant)
        .map(|t| t.config.clone())
        .ok_or_else(|| Problem::not_found("tenant"))?;
    Ok((cfg, crate::cluster::Basis(snap.source_revision_of(tenant))))
}

/// Key of the ETag MAC; see [`set_etag_secret`].
static ETAG_KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();

/// Keys ETags with `secret` (the node's `sip.nonce_secret`, so every node of a cluster gives
/// the same ETag for the same document). Without it a random key is used.
pub fn set_etag_secret(secret: &[u8; 32]) {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"switchyard etag v1");
    h.update(secret);
    let _ = ETAG_KEY.set(h.finalize().into());
}

/// Strong ETag of a configuration object: a keyed MAC of its stored JSON. The documents hold
/// HA1 hashes and trunk passwords, so a plain hash would let a read-only key confirm password
/// guesses offline; the MAC reveals nothing without the node's secret.
pub fn etag_of<T: serde::Serialize>(v: &T) -> String {
    use hmac::{Hmac, Mac};
    let key = ETAG_KEY.get_or_init(rand::random);
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let Ok(mut m) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) else {
        return "\"0\"".into();
    };
    m.update(&bytes);
    format!("\"{}\"", &hex::encode(m.finalize().into_bytes())[..24])
}

/// Optimistic concurrency for writes: `If-Match` must be present (428) and name the current
/// ETag or `*` (412 otherwise), so two admins cannot overwrite each other silently.
pub fn check_if_match(headers: &HeaderMap, current: &str, what: &str) -> Result<(), Problem> {
    let Some(if_match) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) else {
        return Err(Problem::new(
            StatusCode::PRECONDITION_REQUIRED,
            "if-match-required",
            "send If-Match with the ETag from GET",
        ));
    };
    let tag = if_match.trim();
    if tag != "*" && tag != current {
        return Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "stale",
            format!("the {what} changed since you read it; GET it again"),
        ));
    }
    Ok(())
}

/// A JSON body that could not be read: 400 naming the field and position, as serde reports it.
pub fn body_problem(e: axum::extract::rejection::JsonRejection) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "invalid-body", e.body_text())
}

/// Tenant isolation: the principal may act on `tenant` (write when `write`). Another tenant's
/// resources look exactly like missing ones.
pub fn authorize(p: &Principal, tenant: &str, write: bool) -> Result<(), Problem> {
    if !p.can_read(tenant) {
        return Err(Problem::not_found("tenant"));
    }
    if write && !p.can_write(tenant) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "read-only-key",
            "this key is read-only",
        ));
    }
    Ok(())
}

/// Health answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    /// Why not ready, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where tenant configuration comes from (readiness only). A degraded source leaves the
    /// node ready: calls are served from its snapshot; admin writes answer 503.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<crate::cluster::ConfigReport>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health/live", security(()), responses((status = 200, body = Health)))]
async fn health_live() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        reason: None,
        config: None,
    })
}

/// Readiness: SIP listeners are bound, and neither the history store nor blob storage has
/// been failing for longer than `history.failing_after_secs` (calls still work then, and the
/// spool keeps what cannot be written, but a load balancer should prefer another node).
#[utoipa::path(get, path = "/health/ready", security(()), responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn health_ready(State(st): State<Arc<ApiState>>) -> Response {
    let failing_after = Duration::from_secs(st.store_failing_after.load(Ordering::Relaxed));
    let store_problem = st
        .services
        .stores
        .as_ref()
        .and_then(|s| s.failing(failing_after));
    let draining = st.live.draining.load(Ordering::Relaxed);
    let (ok, reason) = if !st.live.sip_ready.load(Ordering::Relaxed) {
        (false, Some("SIP listeners not ready".to_string()))
    } else if draining {
        (
            false,
            Some("draining: new calls go to other nodes".to_string()),
        )
    } else if let Some(why) = store_problem {
        (false, Some(why))
    } else {
        (true, None)
    };
    let body = Json(Health {
        status: match (ok, draining) {
            (true, _) => "ok",
            (false, true) => "draining",
            (false, false) => "unavailable",
        }
        .into(),
        reason,
        config: Some(st.config_report()),
    });
    if ok {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// A store as the node sees it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StoreInfo {
    /// `history store` or `blob storage`.
    pub name: String,
    /// Entries waiting in the local spool for it.
    pub spool_depth: u64,
    /// Age of the oldest waiting entry.
    pub oldest_age_secs: u64,
    /// How long it has been failing (0: working).
    pub failing_secs: u64,
}

/// This node: version, SIP listeners and stores (no addresses of the stores, no other
/// tenants' figures).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct NodeInfo {
    /// Switchyard version.
    pub version: String,
    /// SIP listeners (`udp 0.0.0.0:5060`).
    pub listeners: Vec<String>,
    /// The history store and blob storage.
    pub stores: Vec<StoreInfo>,
    /// Where tenant configuration comes from, and how up to date this node is.
    pub config: crate::cluster::ConfigReport,
}

/// This node's version, SIP listeners and store health (any valid key).
#[utoipa::path(get, path = "/v1/node", responses((status = 200, body = NodeInfo), (status = 401, body = Problem)))]
async fn node(State(st): State<Arc<ApiState>>, _key: Key) -> Result<Json<NodeInfo>, Problem> {
    Ok(Json(NodeInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        listeners: st.listeners.lock().map(|l| l.clone()).unwrap_or_default(),
        stores: st.store_infos(),
        config: st.config_report(),
    }))
}

impl ApiState {
    /// This node's spool towards each store.
    pub fn store_infos(&self) -> Vec<StoreInfo> {
        self.services
            .stores
            .as_ref()
            .map(|s| {
                let sp = &s.spool.status;
                [
                    ("history store", &sp.history),
                    ("blob storage", &sp.blob),
                    ("spool disk", &sp.disk),
                ]
                .into_iter()
                .map(|(name, q)| StoreInfo {
                    name: name.into(),
                    spool_depth: q.depth.load(Ordering::Relaxed),
                    oldest_age_secs: q.oldest_age().as_secs(),
                    failing_secs: q.failing_for().map(|d| d.as_secs()).unwrap_or(0),
                })
                .collect()
            })
            .unwrap_or_default()
    }
}

/// Prometheus text format.
async fn metrics(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let open = match st.metrics_access {
        MetricsAccess::Open => true,
        MetricsAccess::Loopback => peer.ip().is_loopback(),
        MetricsAccess::Key => false,
    };
    if !open {
        if let Err(p) = authenticate(&st, &headers, peer.ip()) {
            return p.into_response();
        }
    }
    match metrics::exposition(&st) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics could not be encoded");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
