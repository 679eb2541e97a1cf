//! The node's one connection to NATS, shared by everything the cluster keeps there.

use async_nats::jetstream::{self, kv};
use std::time::Duration;

/// One attempt of a JetStream request waits this long for its answer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// A NATS client, its JetStream context, and word of each reconnection.
#[derive(Clone)]
pub struct Nats {
    /// The client (connection state, requests).
    pub client: async_nats::Client,
    /// JetStream, each request bounded by [`ATTEMPT_TIMEOUT`].
    pub js: jetstream::Context,
    /// Counts connections made, and watches found stuck: every watch starts over when it
    /// changes (the client's push consumers do not always survive a server going away,
    /// nats.rs #1596).
    pub connections: tokio::sync::watch::Receiver<u64>,
    restarts: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

impl Nats {
    /// Starts connecting to `urls` and returns at once: the client keeps trying in the
    /// background, for ever, so a node starts (and serves from its snapshot) without NATS.
    pub async fn connect(urls: &[String], node_id: &str) -> Result<Nats, async_nats::ConnectError> {
        let (tx, connections) = tokio::sync::watch::channel(0u64);
        let tx = std::sync::Arc::new(tx);
        let restarts = tx.clone();
        let options = async_nats::ConnectOptions::new()
            .name(node_id)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 250).min(2000))
            })
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("connected to NATS");
                            tx.send_modify(|n| *n += 1);
                        }
                        async_nats::Event::Disconnected => tracing::warn!("lost NATS"),
                        other => tracing::debug!(event = %other, "NATS"),
                    }
                }
            });
        let client = options.connect(urls.to_vec()).await?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(ATTEMPT_TIMEOUT);
        Ok(Nats {
            client,
            js,
            connections,
            restarts,
        })
    }

    /// Starts every watch over: one was found behind the bucket while NATS answers, so the
    /// consumers may have been lost with a server (and not only that watch's).
    pub fn restart_watches(&self) {
        self.restarts.send_modify(|n| *n += 1);
    }

    /// Whether the client has a server now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// [`Self::bucket`] for a write an admin waits on: 503 material at once without NATS,
    /// and within `timeout` otherwise.
    pub async fn writable_bucket(
        &self,
        spec: &BucketSpec,
        timeout: Duration,
    ) -> Result<kv::Store, super::WriteError> {
        use super::WriteError::Unavailable;
        if !self.connected() {
            return Err(Unavailable("NATS is not reachable".into()));
        }
        tokio::time::timeout(timeout, self.bucket(spec))
            .await
            .map_err(|_| Unavailable(format!("bucket {} did not answer in time", spec.name)))?
            .map_err(Unavailable)
    }

    /// Opens key-value bucket `name`, creating it when missing. The stream is made here
    /// rather than with `create_key_value`, which first reads the account's limits in a shape
    /// NATS 2.9 (Debian's) does not send; the settings are the ones NATS clients give a bucket.
    pub async fn bucket(&self, spec: &BucketSpec) -> Result<kv::Store, String> {
        let name = &spec.name;
        if let Ok(kv) = self.js.get_key_value(name).await {
            return Ok(kv);
        }
        self.js
            .create_stream(jetstream::stream::Config {
                name: format!("KV_{name}"),
                description: Some(spec.description.to_string()),
                subjects: vec![format!("$KV.{name}.>")],
                max_messages_per_subject: 1,
                max_messages: -1,
                max_bytes: -1,
                max_age: spec.max_age,
                max_message_size: spec.max_value_size,
                storage: jetstream::stream::StorageType::File,
                num_replicas: spec.replicas,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: jetstream::stream::DiscardPolicy::New,
                duplicate_window: Duration::from_secs(120).min(if spec.max_age.is_zero() {
                    Duration::MAX
                } else {
                    spec.max_age
                }),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create bucket {name}: {e}"))?;
        self.js
            .get_key_value(name)
            .await
            .map_err(|e| format!("cannot open bucket {name}: {e}"))
    }
}

/// A key-value bucket as the node creates it when missing.
#[derive(Debug, Clone)]
pub struct BucketSpec {
    /// Bucket name.
    pub name: String,
    /// What it holds (the stream's description).
    pub description: &'static str,
    /// Copies the NATS cluster keeps.
    pub replicas: usize,
    /// Entries older than this go (zero: never).
    pub max_age: Duration,
    /// Largest value.
    pub max_value_size: i32,
}

/// Waits up to `timeout` for NATS to confirm `request`: an admin's write answers 503 material
/// (`Unavailable`) on a timeout or a refusal, never hangs.
pub async fn confirmed<T, E: std::fmt::Display>(
    timeout: Duration,
    request: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, super::WriteError> {
    use super::WriteError::Unavailable;
    tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| Unavailable("NATS did not confirm in time".into()))?
        .map_err(|e| Unavailable(e.to_string()))
}

/// A keyed change for [`publish_latest`]: the bucket key and its new value (`None`: delete).
pub type KeyChange = (String, Option<Vec<u8>>);

/// Publishes keyed changes to a bucket in the order they come, keeping only the latest
/// unpublished value of each key while NATS is away (so what waits is bounded by the number
/// of keys this node writes, not by how often they change). `what` names them in the log;
/// `published` is told each change the bucket took.
pub async fn publish_latest(
    nats: Nats,
    spec: BucketSpec,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<KeyChange>,
    what: &'static str,
    published: impl Fn(&KeyChange) + Send + 'static,
) {
    let mut pending: std::collections::BTreeMap<String, Option<Vec<u8>>> = Default::default();
    let mut bucket: Option<kv::Store> = None;
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some((key, value)) => {
                    pending.insert(key, value);
                }
                None => return,
            }
        }
        while let Ok((key, value)) = rx.try_recv() {
            pending.insert(key, value);
        }
        if bucket.is_none() && nats.connected() {
            match nats.bucket(&spec).await {
                Ok(kv) => bucket = Some(kv),
                Err(e) => tracing::warn!(error = %e, what, "bucket unavailable"),
            }
        }
        let Some(kv) = bucket.as_ref().filter(|_| nats.connected()) else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let keys: Vec<String> = pending.keys().cloned().collect();
        for key in keys {
            let Some(value) = pending.get(&key).cloned() else {
                continue;
            };
            let result = match value.clone() {
                None => kv.delete(&key).await.map_err(|e| e.to_string()),
                Some(value) => kv
                    .put(&key, value.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            match result {
                Ok(()) => {
                    // A newer value that came meanwhile stays for the next round.
                    if pending.get(&key) == Some(&value) {
                        pending.remove(&key);
                    }
                    published(&(key, value));
                }
                Err(e) => {
                    tracing::warn!(error = %e, what, waiting = pending.len(), "change not shared yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

/// Follows every key of `kv`: first the latest value of each (so a node that starts, or
/// starts over after NATS was away, learns what it missed; a plain watch would only give
/// changes from now on), then each change, handing every entry to `apply` (which returns
/// false to stop). Returns when the watch fails, or with `Ok` when NATS reconnects or
/// watches are restarted (`connections` changes): [`keep_watching`] then starts it over.
pub async fn follow_bucket<F, Fut>(
    kv: &kv::Store,
    mut connections: tokio::sync::watch::Receiver<u64>,
    mut apply: F,
) -> Result<(), String>
where
    F: FnMut(kv::Entry) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    use futures_util::StreamExt;
    let mut watch = kv
        .watch_with_history(">")
        .await
        .map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            next = watch.next() => match next {
                Some(Ok(entry)) => {
                    if !apply(entry).await {
                        return Ok(());
                    }
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("watch ended".into()),
            },
            _ = connections.changed() => return Ok(()),
        }
    }
}

/// Runs `once` (a watch of a bucket) whenever NATS is connected, and again whenever it
/// returns: on an error, on a new connection, when the node's watches are restarted. `once`
/// gets the connection counter to select on. `what` names the watch in the log.
pub async fn keep_watching<F, Fut>(nats: Nats, what: &'static str, mut once: F)
where
    F: FnMut(tokio::sync::watch::Receiver<u64>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut connections = nats.connections.clone();
    loop {
        connections.borrow_and_update();
        if nats.connected() {
            if let Err(e) = once(connections.clone()).await {
                tracing::warn!(error = %e, what, "watch stopped; starting it again");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
