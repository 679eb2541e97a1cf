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
