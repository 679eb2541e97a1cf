//! Calls' steps shared between the nodes of a cluster, so a tenant's event stream on any
//! node shows the calls of every node: each node publishes its own on one subject per
//! cluster (`switchyard.events.<config bucket>`) and hears the others'. Fire and forget:
//! a node that is away misses what happened meanwhile, as a stream reader would (the call
//! records, in the shared history store, are the durable account). What travels is opaque
//! here: the server encodes it.

use super::nats::Nats;
use futures_util::StreamExt;
use std::time::Duration;

/// Header naming the node that published, so it does not hear itself.
const NODE_HEADER: &str = "Switchyard-Node";
/// Largest event a node takes from another.
const MAX_EVENT: usize = 16 * 1024;

/// The event subject of one cluster, as one node sees it.
#[derive(Clone)]
pub struct EventBus {
    nats: Nats,
    subject: String,
    node: String,
}

impl EventBus {
    /// The bus of the cluster whose configuration lives in bucket `namespace`.
    pub fn new(nats: Nats, namespace: &str, node: &str) -> EventBus {
        EventBus {
            nats,
            subject: format!("switchyard.events.{namespace}"),
            node: node.to_string(),
        }
    }

    /// Tells the other nodes (dropped while NATS is away).
    pub async fn publish(&self, payload: Vec<u8>) {
        if !self.nats.connected() {
            return;
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(NODE_HEADER, self.node.as_str());
        if let Err(e) = self
            .nats
            .client
            .publish_with_headers(self.subject.clone(), headers, payload.into())
            .await
        {
            tracing::debug!(error = %e, "call event not shared");
        }
    }

    /// Hands the other nodes' events to `heard`, for as long as the process runs. Spawn it.
    pub async fn follow(self, heard: impl Fn(bytes::Bytes)) {
        loop {
            match self.nats.client.subscribe(self.subject.clone()).await {
                Ok(mut events) => {
                    while let Some(msg) = events.next().await {
                        let from_self = msg
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(NODE_HEADER))
                            .is_some_and(|n| n.as_str() == self.node);
                        if !from_self && msg.payload.len() <= MAX_EVENT {
                            heard(msg.payload);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow the cluster's call events; retrying")
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
