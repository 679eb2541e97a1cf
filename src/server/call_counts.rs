//! The SIP loop's side of the cluster's heartbeats (`cluster::presence`): it shares this
//! node's live calls per tenant when they change and takes the other nodes', so the
//! endpoint admits new calls against the tenant's calls across the cluster.

use crate::cluster::presence::{Presence, StatusFn};
use crate::cluster::Nats;
use crate::sip::endpoint::Endpoint;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::watch;

/// Calls per tenant, as the heartbeats carry them.
type Counts = Arc<BTreeMap<String, u32>>;
/// The other nodes' calls per tenant, summed.
type RemoteCounts = Arc<HashMap<String, usize>>;

/// Calls per tenant shared with the cluster (nothing to do on a single node).
pub struct SharedCallCounts {
    local: watch::Sender<Counts>,
    shared_version: Option<u64>,
    remote: watch::Receiver<RemoteCounts>,
}

impl SharedCallCounts {
    /// Starts this node's heartbeats on `nats`.
    pub fn start(
        nats: &Nats,
        namespace: &str,
        node: &str,
        status: StatusFn,
    ) -> (SharedCallCounts, Presence) {
        let (local, local_rx) = watch::channel(Counts::default());
        let (presence, remote) = Presence::start(nats.clone(), namespace, node, local_rx, status);
        (
            SharedCallCounts {
                local,
                shared_version: None,
                remote,
            },
            presence,
        )
    }

    /// Hands this node's calls per tenant to the heartbeats if they changed since last time.
    pub fn share(&mut self, endpoint: &Endpoint) {
        let (version, counts) = endpoint.tenant_calls();
        if self.shared_version == Some(version) {
            return;
        }
        self.shared_version = Some(version);
        let counts = counts
            .iter()
            .map(|(t, n)| (t.clone(), u32::try_from(*n).unwrap_or(u32::MAX)))
            .collect();
        self.local.send_replace(Arc::new(counts));
    }

    /// The other nodes' calls per tenant, when they change (never, once the heartbeats stop).
    pub async fn changed(&mut self) -> RemoteCounts {
        if self.remote.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.remote.borrow_and_update().clone()
    }
}

/// [`SharedCallCounts::changed`] of a cluster node; never on a single node.
pub async fn remote_changed(counts: &mut Option<SharedCallCounts>) -> RemoteCounts {
    match counts {
        Some(c) => c.changed().await,
        None => std::future::pending().await,
    }
}
