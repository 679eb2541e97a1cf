//! Tenant API keys shared by the nodes of a cluster, in a NATS JetStream key-value bucket.
//!
//! A key made through one node's admin API works on every node; a key revoked through one
//! stops working on every node once they apply the deletion (milliseconds). The bucket holds
//! what each node's database holds: the SHA-256 of the key (as the bucket key, in hex) and the
//! key's record (tenant, name, read-only, created), never the key itself. Every node mirrors
//! the bucket into its own database and authenticates from there, so keys keep working while
//! NATS is away; creating and revoking need NATS and answer 503 without it.
//!
//! The records' shape belongs to the admin API: this module moves opaque JSON and asks a
//! [`KeyMirror`] to apply it.

use super::nats::{confirmed, follow_bucket, keep_watching, BucketSpec, Nats};
use super::WriteError;
use async_nats::jetstream::kv;
use std::sync::Arc;
use std::time::Duration;

/// The node's own key table, as the cluster keeps it in step.
pub trait KeyMirror: Send + Sync + 'static {
    /// Every key held here: (SHA-256 in hex, record as JSON).
    fn local_keys(&self) -> Vec<(String, Vec<u8>)>;
    /// Stores (`Some`) or removes (`None`) the key with this hash. A record that is not one
    /// is refused (logged) by the implementation.
    fn apply(&self, hash_hex: &str, record: Option<&[u8]>);
}

/// Publishes key changes and keeps the node's table in step with the cluster's.
#[derive(Clone)]
pub struct SharedKeys {
    nats: Nats,
    spec: BucketSpec,
    mirror: Arc<dyn KeyMirror>,
    timeout: Duration,
}

impl SharedKeys {
    /// Starts the mirror (in the background) of bucket `bucket`.
    pub fn start(
        nats: Nats,
        bucket: &str,
        replicas: usize,
        timeout: Duration,
        mirror: Arc<dyn KeyMirror>,
    ) -> SharedKeys {
        let shared = SharedKeys {
            nats,
            spec: BucketSpec {
                name: bucket.to_string(),
                description: "Switchyard tenant API keys (SHA-256 of each key and its record)",
                replicas,
                max_age: Duration::ZERO,
                max_value_size: 4096,
            },
            mirror,
            timeout,
        };
        let watcher = shared.clone();
        tokio::spawn(keep_watching(
            shared.nats.clone(),
            "API keys",
            move |connections| {
                let watcher = watcher.clone();
                async move { watcher.mirror_once(connections).await }
            },
        ));
        shared
    }

    /// Publishes a new key's record; the node takes it at once.
    pub async fn create(&self, hash_hex: &str, record: Vec<u8>) -> Result<(), WriteError> {
        let kv = self.bucket().await?;
        confirmed(self.timeout, kv.create(hash_hex, record.clone().into())).await?;
        self.mirror.apply(hash_hex, Some(&record));
        Ok(())
    }

    /// Revokes a key on every node; this one at once.
    pub async fn revoke(&self, hash_hex: &str) -> Result<(), WriteError> {
        let kv = self.bucket().await?;
        confirmed(self.timeout, kv.delete(hash_hex)).await?;
        self.mirror.apply(hash_hex, None);
        Ok(())
    }

    async fn bucket(&self) -> Result<kv::Store, WriteError> {
        self.nats.writable_bucket(&self.spec, self.timeout).await
    }

    /// Pushes keys the bucket never had (made before the node joined), drops keys the bucket
    /// revoked, then follows every change.
    async fn mirror_once(
        &self,
        connections: tokio::sync::watch::Receiver<u64>,
    ) -> Result<(), String> {
        let kv = self.nats.bucket(&self.spec).await?;
        for (hash, record) in self.mirror.local_keys() {
            match kv.entry(&hash).await.map_err(|e| e.to_string())? {
                None => {
                    kv.create(&hash, record.into())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Some(e) if e.operation != kv::Operation::Put => self.mirror.apply(&hash, None),
                Some(_) => {}
            }
        }
        follow_bucket(&kv, connections, |entry| async move {
            let valid = entry.key.len() == 64 && entry.key.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid {
                tracing::warn!(key = ?entry.key, "API key bucket: not a key of ours; ignored");
            } else if entry.operation == kv::Operation::Put {
                self.mirror.apply(&entry.key, Some(&entry.value));
            } else {
                self.mirror.apply(&entry.key, None);
            }
            true
        })
        .await
    }
}
