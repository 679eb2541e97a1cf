//! The service at a glance and a node taken out of rotation.
//!
//! - `GET /v1/cluster` (admin key): every node with its state, live calls, registrations,
//!   spool, configuration revision and lag, as its heartbeat last told (`cluster::presence`);
//!   this node's row is computed now. A node alone lists itself.
//! - `POST /v1/node/drain` / `DELETE /v1/node/drain` (admin key): this node stops taking new
//!   calls (INVITEs and OPTIONS answer 503, so a SIP load balancer probing with OPTIONS moves
//!   new calls to other nodes; `/health/ready` answers 503 for HTTP balancers) while its live
//!   calls go on, or takes calls again. SIGTERM drains the same way and then exits.

use super::error::Problem;
use super::live::Control;
use super::live_cluster::ask;
use super::tenants::admin_only;
use super::{ApiState, Key, StoreInfo};
use axum::extract::State;
use axum::Json;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One node of the service, as `/v1/cluster` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct NodeStatus {
    /// The node's name (`cluster.node_id`).
    pub node: String,
    /// `ready`; `draining` (takes no new calls, live ones go on); `degraded` (its
    /// configuration source is unreachable or behind, or a store is failing: calls go on);
    /// `unready` (SIP not up yet); `gone` (no heartbeat for 3.5 s).
    pub state: String,
    /// Switchyard version.
    pub version: String,
    /// Calls in progress there.
    pub live_calls: u64,
    /// Contacts registered through it.
    pub registrations: u64,
    /// Its spool towards each store: depth, oldest entry, how long failing.
    pub stores: Vec<StoreInfo>,
    /// Its configuration source, revision and lag.
    pub config: crate::cluster::ConfigReport,
    /// Seconds since its last heartbeat (0 for the node answering).
    pub last_seen_secs: u64,
}

/// Every node of the service.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    /// The node that answered.
    pub this_node: String,
    /// Every node, this one first, then the others by name (gone ones are listed for an hour).
    pub nodes: Vec<NodeStatus>,
}

/// Whether this node takes new calls.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DrainState {
    /// True: new calls are refused with 503 (and OPTIONS answer 503).
    pub draining: bool,
}

impl ApiState {
    /// This node's row of the cluster page, from the figures it keeps (never waits).
    pub fn node_status(&self) -> NodeStatus {
        let config = self.config_report();
        let stores = self.store_infos();
        let failing = stores.iter().any(|s| s.failing_secs > 0);
        let state = if !self.live.sip_ready.load(Ordering::Relaxed) {
            "unready"
        } else if self.live.draining.load(Ordering::Relaxed) {
            "draining"
        } else if config.state != "ok" || failing {
            "degraded"
        } else {
            "ready"
        };
        NodeStatus {
            node: self.node_id(),
            state: state.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            live_calls: self.live.calls_active.load(Ordering::Relaxed),
            registrations: self.live.registrations.load(Ordering::Relaxed),
            stores,
            config,
            last_seen_secs: 0,
        }
    }
}

/// Every node of the service with its state (admin key).
#[utoipa::path(get, path = "/v1/cluster", responses((status = 200, body = ClusterView), (status = 403, body = Problem)))]
pub async fn cluster(
    State(st): State<Arc<ApiState>>,
    key: Key,
) -> Result<Json<ClusterView>, Problem> {
    admin_only(&key.0)?;
    let me = st.node_status();
    let mut nodes = vec![me.clone()];
    let peers = st
        .call_bus()
        .and_then(|b| b.presence())
        .map(|p| p.peers())
        .unwrap_or_default();
    for peer in peers {
        let Ok(mut row) = serde_json::from_value::<NodeStatus>(peer.beat.status.clone()) else {
            continue;
        };
        row.node = peer.beat.node.clone();
        row.last_seen_secs = peer.silent_for.as_secs();
        if !peer.alive {
            row.state = "gone".into();
        }
        nodes.push(row);
    }
    Ok(Json(ClusterView {
        this_node: me.node,
        nodes,
    }))
}

async fn set_draining(st: &ApiState, on: bool) -> Result<Json<DrainState>, Problem> {
    let draining = ask(st, |reply| Control::Drain { on, reply }).await?;
    // The row and the heartbeats show it at once, not at the next metrics copy.
    st.live.draining.store(draining, Ordering::Relaxed);
    Ok(Json(DrainState { draining }))
}

/// Stop taking new calls on this node; live calls go on (admin key).
#[utoipa::path(post, path = "/v1/node/drain", responses((status = 200, body = DrainState), (status = 403, body = Problem)))]
pub async fn drain(State(st): State<Arc<ApiState>>, key: Key) -> Result<Json<DrainState>, Problem> {
    admin_only(&key.0)?;
    tracing::info!("draining through the admin API: refusing new calls");
    set_draining(&st, true).await
}

/// Take new calls again (admin key). A node shutting down (SIGTERM) stays drained.
#[utoipa::path(delete, path = "/v1/node/drain", responses((status = 200, body = DrainState), (status = 403, body = Problem)))]
pub async fn undrain(
    State(st): State<Arc<ApiState>>,
    key: Key,
) -> Result<Json<DrainState>, Problem> {
    admin_only(&key.0)?;
    tracing::info!("drain ended through the admin API: taking calls");
    set_draining(&st, false).await
}
