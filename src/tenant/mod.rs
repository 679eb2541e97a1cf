//! Tenants: the configuration model, its validation, the sled-backed store and the immutable
//! snapshot the call path reads.
//!
//! Writers (`tenant import`, later the admin API and NATS fan-out) go through
//! [`TenantStore::put`]: hash secrets → validate (errors name the path) → write to sled with a
//! new revision → flush → build a new [`Snapshot`] → swap it in atomically. Readers call
//! [`TenantStore::snapshot`] once per call and keep that `Arc` for the call's life.

pub mod model;
pub mod snapshot;
pub mod store;
pub mod validate;

pub use model::TenantConfig;
pub use snapshot::{Snapshot, SnapshotCell, Tenant};
pub use store::{TenantStore, TenantStoreError};
