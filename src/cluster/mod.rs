//! Running as one of several nodes.
//!
//! A node alone keeps tenant documents in its own database ([`TenantStore`]). In a cluster
//! (`[cluster] nats_url` set) the authority is a NATS JetStream key-value bucket
//! ([`config::ConfigReplica`]): writers publish there with compare-and-set on the tenant's
//! revision, and every node watches the bucket from the last revision it applied into its
//! local snapshot. Calls always read the local snapshot, so they go on while NATS is away;
//! only writes need NATS, and they answer 503 without it rather than change one node alone.
//!
//! [`TenantWriter`] is what the admin API and the tenant inbox write through: the local store
//! on a single node, the bucket in a cluster.
//!
//! Registrations are shared the same way ([`bindings`]): each node publishes the bindings it
//! takes to a second bucket and merges the other nodes' into its registrar's lookups. Tenant
//! API keys ([`keys`]), prompt versions ([`prompts`]) and voicemail ([`voicemail`]) have
//! buckets of their own, and live
//! calls are asked about over NATS request/reply ([`calls`]). Every node tells the others
//! once a second that it is alive and how many calls each tenant has on it ([`presence`]):
//! tenant call limits hold across the cluster, and listings know how many answers to expect.

pub mod bindings;
pub mod calls;
pub mod config;
pub mod events;
pub mod keys;
pub mod nats;
pub mod outbox;
pub mod presence;
pub mod prompts;
pub mod voicemail;

use crate::tenant::{TenantConfig, TenantStore, TenantStoreError};
use std::sync::Arc;

pub use bindings::{RemoteBindings, SharedBindings};
pub use config::{ConfigReplica, ConfigReport};
pub use nats::Nats;

/// Why a tenant write through a cluster's authority did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Refused by validation, or the local store failed.
    #[error(transparent)]
    Store(#[from] TenantStoreError),
    /// The document changed at the authority since the version the write was based on (a
    /// write through another node): read it again.
    #[error("the tenant changed on another node since it was read")]
    Conflict,
    /// The authority did not answer in time (NATS unreachable, no quorum).
    #[error("the cluster's configuration store is unavailable: {0}")]
    Unavailable(String),
}

/// The version of a tenant a write replaces: its revision at the cluster's authority, or
/// none for a tenant that should not exist there yet. Take it from the same snapshot the
/// document was read from (see `Snapshot::source_revision_of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Basis(pub Option<u64>);

/// Where tenant writes go.
#[derive(Clone)]
pub enum TenantWriter {
    /// This node's database (a single node).
    Local(Arc<TenantStore>),
    /// The cluster's key-value bucket, applied on every node.
    Cluster(Arc<ConfigReplica>),
}

impl TenantWriter {
    /// Validates and stores `cfg`, replacing the version named by `basis`.
    pub async fn put(&self, cfg: TenantConfig, basis: Basis) -> Result<(), WriteError> {
        match self {
            TenantWriter::Local(store) => store.put(cfg).map(|_| ()).map_err(WriteError::from),
            TenantWriter::Cluster(replica) => replica.put(cfg, basis).await,
        }
    }

    /// Deletes tenant `id`.
    pub async fn delete(&self, id: &str, basis: Basis) -> Result<(), WriteError> {
        match self {
            TenantWriter::Local(store) => store.delete(id).map(|_| ()).map_err(WriteError::from),
            TenantWriter::Cluster(replica) => replica.delete(id, basis).await,
        }
    }
}

/// Where node `node_id` starts numbering its calls in a cluster: a block of 2^32 ids chosen
/// by the node's name, so the admin API's call ids are unique across nodes (the ids stay
/// below 2^53, exact in JSON numbers). Two names landing in one block (1 in a million per
/// pair) would share ids; each node then acts on its own call of that id.
pub fn first_call_id(node_id: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(node_id.as_bytes());
    let block = u64::from(u32::from_be_bytes([0, h[0], h[1], h[2]]) & 0xf_ffff);
    ((block + 1) << 32) + 1
}
