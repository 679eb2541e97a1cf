//! Registrations shared by the nodes of a cluster, in a NATS JetStream key-value bucket.
//!
//! Each node publishes the bindings it takes (REGISTERs it answered) under keys of its own,
//! `<tenant>.<hex user>.<hex node>`, so nodes never overwrite each other and a user may be
//! registered through several nodes at once. Every node watches the bucket and hands the
//! other nodes' bindings to its registrar (`Endpoint::set_remote_bindings`), where lookups
//! merge them with its own: a phone registered through node A rings for a call arriving at
//! node B within the watch's delay, and keeps ringing after A is gone, until its
//! registration expires (the expiry is inside each binding; the bucket's `max_age` clears
//! what nobody deletes).
//!
//! Why a key-value bucket rather than PostgreSQL: lookups stay in memory on the SIP loop,
//! changes arrive pushed rather than polled, and NATS is already the cluster's configuration
//! authority. Why not the SIP loop: publishing waits on the network, so changes go through a
//! channel to a task here, which keeps the latest unpublished list per user and retries while
//! NATS is away (bounded by the number of users this node registers).

use super::nats::{follow_bucket, keep_watching, publish_latest, BucketSpec, KeyChange, Nats};
use crate::sip::registrar::{split_key, Binding, BindingsChanged};
use async_nats::jetstream::kv;
use std::time::Duration;
use tokio::sync::mpsc;

/// Another node's bindings for one user, for the endpoint.
#[derive(Debug, Clone)]
pub struct RemoteBindings {
    /// Tenant id.
    pub tenant: String,
    /// The user's extension.
    pub user: String,
    /// The node that took them.
    pub node: String,
    /// Its bindings for the user now (empty: none).
    pub bindings: Vec<Binding>,
}

/// Publishes this node's bindings and watches the other nodes'.
#[derive(Clone)]
pub struct SharedBindings {
    changes: mpsc::UnboundedSender<KeyChange>,
    node: String,
}

/// Where the bindings bucket is and who this node is.
#[derive(Debug, Clone)]
pub struct BindingsSettings {
    /// The bucket.
    pub bucket: String,
    /// Copies the NATS cluster keeps.
    pub replicas: usize,
    /// This node's name (part of its keys).
    pub node_id: String,
    /// The longest registration granted: entries older than this plus a margin go.
    pub max_expires: Duration,
}

impl SharedBindings {
    /// Starts the publisher and the watch; other nodes' bindings come out of the receiver.
    pub fn start(
        settings: BindingsSettings,
        nats: Nats,
    ) -> (SharedBindings, mpsc::Receiver<RemoteBindings>) {
        let (changes, rx) = mpsc::unbounded_channel();
        let (remote_tx, remote_rx) = mpsc::channel(1024);
        let spec = BucketSpec {
            name: settings.bucket.clone(),
            description: "Switchyard registrations by tenant, user and node",
            replicas: settings.replicas,
            max_age: settings.max_expires + Duration::from_secs(300),
            max_value_size: 64 * 1024,
        };
        tokio::spawn(publish_latest(
            nats.clone(),
            spec.clone(),
            rx,
            "registrations",
            |_| {},
        ));
        let node = settings.node_id.clone();
        tokio::spawn(keep_watching(
            nats.clone(),
            "registrations",
            move |connections| {
                let (nats, spec, node, remote) =
                    (nats.clone(), spec.clone(), node.clone(), remote_tx.clone());
                async move { watch_once(&nats, &spec, &node, &remote, connections).await }
            },
        ));
        (
            SharedBindings {
                changes,
                node: settings.node_id,
            },
            remote_rx,
        )
    }

    /// Queues a change of this node's bindings for the bucket (never waits).
    pub fn publish(&self, change: BindingsChanged) {
        let Some((tenant, user)) = split_key(&change.key) else {
            return;
        };
        let key = bucket_key(tenant, user, &self.node);
        let value = if change.bindings.is_empty() {
            None
        } else {
            match serde_json::to_vec(&change.bindings) {
                Ok(json) => Some(json),
                Err(_) => return,
            }
        };
        if self.changes.send((key, value)).is_err() {
            tracing::error!("registration publisher gone: a change was not shared");
        }
    }
}

/// The bucket key of `tenant`'s `user` as registered through `node`. Users and node names
/// are hex-encoded: bucket keys allow few characters.
fn bucket_key(tenant: &str, user: &str, node: &str) -> String {
    format!("{tenant}.{}.{}", hex::encode(user), hex::encode(node))
}

/// The (tenant, user, node) of a bucket key, if it is one of ours.
fn parse_key(key: &str) -> Option<(String, String, String)> {
    let mut parts = key.split('.');
    let (tenant, user, node) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || tenant.is_empty()
        || !tenant
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return None;
    }
    let text = |h: &str| hex::decode(h).ok().and_then(|b| String::from_utf8(b).ok());
    Some((tenant.to_string(), text(user)?, text(node)?))
}

async fn watch_once(
    nats: &Nats,
    spec: &BucketSpec,
    node: &str,
    remote: &mpsc::Sender<RemoteBindings>,
    connections: tokio::sync::watch::Receiver<u64>,
) -> Result<(), String> {
    let kv = nats.bucket(spec).await?;
    follow_bucket(&kv, connections, |entry| async move {
        match decode(&entry, node) {
            Some(update) => remote.send(update).await.is_ok(),
            None => true,
        }
    })
    .await
}

/// Another node's entry as bindings; `None` for this node's own keys and for anything that
/// is not a key or value of ours (logged).
fn decode(entry: &kv::Entry, own: &str) -> Option<RemoteBindings> {
    let Some((tenant, user, node)) = parse_key(&entry.key) else {
        tracing::warn!(key = ?entry.key, "registrations bucket: not a key of ours; ignored");
        return None;
    };
    if node == own {
        return None;
    }
    let bindings = match entry.operation {
        kv::Operation::Put => match serde_json::from_slice::<Vec<Binding>>(&entry.value) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(key = ?entry.key, error = %e, "registrations bucket: bad value; ignored");
                return None;
            }
        },
        kv::Operation::Delete | kv::Operation::Purge => Vec::new(),
    };
    Some(RemoteBindings {
        tenant,
        user,
        node,
        bindings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_any_user_and_node_name_and_refuse_what_is_not_ours() {
        let k = bucket_key("demo", "101", "node a.1");
        assert!(k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
        assert_eq!(
            parse_key(&k),
            Some(("demo".into(), "101".into(), "node a.1".into()))
        );
        for bad in [
            "demo.3130",
            "demo.31.32.33",
            "Demo.31.32",
            "demo.zz.32",
            "demo.ff.32",
            ".31.32",
        ] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }
}
