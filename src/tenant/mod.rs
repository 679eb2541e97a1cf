//! Tenants: the configuration model, its validation, the sled-backed store and the immutable
//! snapshot the call path reads.
//!
//! Writers (`tenant import`, the admin API on a single node) go through
//! [`TenantStore::put`]: hash secrets → validate (errors name the path) → write to sled with a
//! new revision → flush → build a new [`Snapshot`] → swap it in atomically. Readers call
//! [`TenantStore::snapshot`] once per call and keep that `Arc` for the call's life.
//!
//! In a cluster the authority is a NATS JetStream key-value bucket (`crate::cluster`): writers
//! check with [`TenantStore::prepare`] and publish there, and every node applies what the
//! bucket holds, in the bucket's order, with [`TenantStore::apply_replicated`].

pub mod model;
pub mod snapshot;
pub mod store;
pub mod validate;

pub use model::TenantConfig;
pub use snapshot::{Snapshot, SnapshotCell, Tenant};
pub use store::{ReplicaOutcome, TenantStore, TenantStoreError};
