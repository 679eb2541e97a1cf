//! Tenants' prompts kept in step across a cluster's nodes.
//!
//! The audio is in the shared blob storage already (every upload is mirrored there through
//! the spool); what the nodes share here is which prompts exist and which version: a
//! key-value bucket with one key per prompt, `<tenant>.<hex name>`, holding the SHA-256 of
//! its audio. An upload through any node publishes the new digest, a deletion deletes the
//! key. Every node watches the bucket (the latest of every key, then each change): a digest
//! its own copy lacks is fetched from blob storage (retried while the uploading node's spool
//! is still moving it there) and checked against the digest before it replaces anything; a
//! deletion removes the node's copy. A node that was away catches up from the bucket, which
//! keeps deletions, where the minute-by-minute fetch of missing prompts never removed one.
//!
//! Without NATS, uploads and deletions answer 503: a change on one node only would diverge.

use super::nats::{confirmed, follow_bucket, keep_watching, BucketSpec, Nats};
use super::WriteError;
use crate::blob::{prompt_key, BlobStore};
use crate::promptstore::{valid_name, PromptStore};
use async_nats::jetstream::kv;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// How long a node keeps trying to fetch a prompt another node published.
const FETCH_FOR: Duration = Duration::from_secs(120);

/// Publishes this node's prompt changes and applies the other nodes'.
#[derive(Clone)]
pub struct SharedPrompts {
    nats: Nats,
    spec: BucketSpec,
    prompts: PromptStore,
    blobs: BlobStore,
    timeout: Duration,
}

/// What the bucket says of one prompt.
#[derive(serde::Serialize, serde::Deserialize)]
struct Version {
    /// SHA-256 of the converted audio, hex.
    sha256: String,
}

impl SharedPrompts {
    /// Starts keeping `prompts` in step with bucket `bucket`, fetching audio from `blobs`.
    pub fn start(
        nats: Nats,
        bucket: &str,
        replicas: usize,
        timeout: Duration,
        prompts: PromptStore,
        blobs: BlobStore,
    ) -> SharedPrompts {
        let shared = SharedPrompts {
            nats,
            spec: BucketSpec {
                name: bucket.to_string(),
                description: "Switchyard tenants' prompts: the SHA-256 of each one's audio",
                replicas,
                max_age: Duration::ZERO,
                max_value_size: 1024,
            },
            prompts,
            blobs,
            timeout,
        };
        let watcher = shared.clone();
        tokio::spawn(keep_watching(
            shared.nats.clone(),
            "prompts",
            move |connections| {
                let watcher = watcher.clone();
                async move { watcher.mirror_once(connections).await }
            },
        ));
        shared
    }

    /// Fails with 503 when NATS is away, before anything changes on this node.
    pub async fn check_available(&self) -> Result<(), WriteError> {
        self.bucket().await.map(|_| ())
    }

    /// Tells the other nodes that `tenant`'s prompt `name` is now this node's copy.
    pub async fn uploaded(&self, tenant: &str, name: &str) -> Result<(), WriteError> {
        let digest = self
            .prompts
            .digest(tenant, name)
            .ok_or_else(|| WriteError::Unavailable("the prompt is not on this node".into()))?;
        let value = serde_json::to_vec(&Version {
            sha256: hex::encode(digest),
        })
        .map_err(|e| WriteError::Unavailable(e.to_string()))?;
        let kv = self.bucket().await?;
        confirmed(self.timeout, kv.put(bucket_key(tenant, name), value.into())).await?;
        Ok(())
    }

    /// Tells the other nodes that `tenant`'s prompt `name` is gone.
    pub async fn deleted(&self, tenant: &str, name: &str) -> Result<(), WriteError> {
        let kv = self.bucket().await?;
        confirmed(self.timeout, kv.delete(bucket_key(tenant, name))).await?;
        Ok(())
    }

    async fn bucket(&self) -> Result<kv::Store, WriteError> {
        self.nats.writable_bucket(&self.spec, self.timeout).await
    }

    /// Publishes prompts the bucket never had (from before the node joined), then follows
    /// every change.
    async fn mirror_once(
        &self,
        connections: tokio::sync::watch::Receiver<u64>,
    ) -> Result<(), String> {
        let kv = self.nats.bucket(&self.spec).await?;
        for (tenant, name) in self.prompts.all() {
            let key = bucket_key(&tenant, &name);
            if kv.entry(&key).await.map_err(|e| e.to_string())?.is_none() {
                if let Some(digest) = self.prompts.digest(&tenant, &name) {
                    let value = serde_json::to_vec(&Version {
                        sha256: hex::encode(digest),
                    })
                    .map_err(|e| e.to_string())?;
                    // Another node may publish it at the same moment: its version wins.
                    let _ = kv.create(&key, value.into()).await;
                }
            }
        }
        follow_bucket(&kv, connections, |entry| async move {
            self.apply(&entry);
            true
        })
        .await
    }

    fn apply(&self, entry: &kv::Entry) {
        let Some((tenant, name)) = parse_key(&entry.key) else {
            tracing::warn!(key = ?entry.key, "prompt bucket: not a key of ours; ignored");
            return;
        };
        if entry.operation != kv::Operation::Put {
            if self.prompts.forget(&tenant, &name) {
                tracing::info!(%tenant, prompt = %name, "prompt deleted through another node: removed here");
            }
            return;
        }
        let Some(want) = serde_json::from_slice::<Version>(&entry.value)
            .ok()
            .and_then(|v| hex::decode(v.sha256).ok())
            .and_then(|d| <[u8; 32]>::try_from(d).ok())
        else {
            tracing::warn!(key = ?entry.key, "prompt bucket: not a version of ours; ignored");
            return;
        };
        if self.prompts.digest(&tenant, &name) == Some(want) {
            return;
        }
        let (prompts, blobs) = (self.prompts.clone(), self.blobs.clone());
        tokio::spawn(async move {
            let key = prompt_key(&tenant, &name);
            let deadline = tokio::time::Instant::now() + FETCH_FOR;
            loop {
                // The uploading node's spool may still be moving the audio to blob storage.
                if let Ok(bytes) = blobs.get_bytes(&key).await {
                    if <[u8; 32]>::from(Sha256::digest(&bytes)) == want {
                        match prompts.install(&tenant, &name, &bytes) {
                            Ok(()) => {
                                tracing::info!(%tenant, prompt = %name, "prompt uploaded through another node: fetched")
                            }
                            Err(e) => {
                                tracing::warn!(%tenant, prompt = %name, error = %e, "fetched prompt not stored")
                            }
                        }
                        return;
                    }
                }
                if tokio::time::Instant::now() > deadline {
                    tracing::warn!(%tenant, prompt = %name, "prompt published by another node never reached blob storage; the minute sync keeps looking");
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

/// The bucket key of `tenant`'s prompt `name` (names hex-encoded, as bucket keys allow few
/// characters).
fn bucket_key(tenant: &str, name: &str) -> String {
    format!("{tenant}.{}", hex::encode(name))
}

/// The (tenant, name) of a bucket key, if it is one of ours.
fn parse_key(key: &str) -> Option<(String, String)> {
    let (tenant, name) = key.split_once('.')?;
    let tenant_ok = !tenant.is_empty()
        && tenant
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let name = String::from_utf8(hex::decode(name).ok()?).ok()?;
    (tenant_ok && valid_name(&name)).then(|| (tenant.to_string(), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_refuse_what_is_not_a_prompt() {
        let k = bucket_key("demo", "welcome_2");
        assert_eq!(parse_key(&k), Some(("demo".into(), "welcome_2".into())));
        let dotdot = format!("demo.{}", hex::encode("../etc"));
        for bad in ["demo", "Demo.61", "demo.zz", dotdot.as_str(), ".61"] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }
}
