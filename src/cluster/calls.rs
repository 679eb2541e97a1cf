//! Asking the other nodes of a cluster about their live calls: NATS request/reply.
//!
//! A call lives on the node that took it (its SIP dialog and media are there); the admin API
//! of any node lists and acts on every node's calls by asking over one subject per cluster,
//! `switchyard.calls.<config bucket>`. A listing gathers every other node's answer; an action
//! on one call (hang up, transfer, record) is answered only by the node that holds it. What
//! travels is opaque to this module: the admin API encodes its requests and answers.
//!
//! NATS is the cluster's own bus: operators secure it (credentials, TLS, a private network)
//! as they secure the configuration bucket. A node still checks every request as its own API
//! would (tenant of the call, sizes), and never answers its own requests.

use super::nats::Nats;
use super::presence::Presence;
use futures_util::StreamExt;
use std::future::Future;
use std::time::{Duration, Instant};

/// Header naming the node that asks, so it does not answer itself.
const NODE_HEADER: &str = "Switchyard-Node";
/// Longest a listing waits for the nodes it expects (those whose heartbeats it hears, see
/// [`Presence`]); without heartbeats, for the first answer.
const FIRST_LISTING: Duration = Duration::from_millis(300);
/// Longest an action on one call waits for the node that holds it.
const FIRST_ACTION: Duration = Duration::from_secs(1);
/// After an answer, how long a listing waits for more.
const QUIET: Duration = Duration::from_millis(150);
/// Largest request a node takes.
const MAX_REQUEST: usize = 16 * 1024;

/// The call bus of one cluster, as one node sees it.
#[derive(Clone)]
pub struct CallBus {
    nats: Nats,
    subject: String,
    node: String,
    presence: Option<Presence>,
}

impl CallBus {
    /// The bus of the cluster whose configuration lives in bucket `namespace`.
    pub fn new(nats: Nats, namespace: &str, node: &str) -> CallBus {
        CallBus {
            nats,
            subject: format!("switchyard.calls.{namespace}"),
            node: node.to_string(),
            presence: None,
        }
    }

    /// Listings wait for the nodes `presence` knows to be alive, and no longer (a node
    /// alone answers at once).
    pub fn with_presence(mut self, presence: Option<Presence>) -> CallBus {
        self.presence = presence;
        self
    }

    /// Who else is alive, when heartbeats run.
    pub fn presence(&self) -> Option<&Presence> {
        self.presence.as_ref()
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Asks every other node; returns their answers. `first_only`: stop at the first (an
    /// action that only the call's node answers). Without NATS: no answers.
    pub async fn gather(&self, request: Vec<u8>, first_only: bool) -> Vec<bytes::Bytes> {
        if !self.nats.connected() {
            return Vec::new();
        }
        let alive = self.presence.as_ref().map(Presence::alive_peers);
        if alive == Some(0) {
            return Vec::new();
        }
        let expected = if first_only { None } else { alive };
        let client = &self.nats.client;
        let inbox = client.new_inbox();
        let Ok(mut answers) = client.subscribe(inbox.clone()).await else {
            return Vec::new();
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(NODE_HEADER, self.node.as_str());
        if client
            .publish_with_reply_and_headers(self.subject.clone(), inbox, headers, request.into())
            .await
            .is_err()
        {
            return Vec::new();
        }
        let deadline = Instant::now()
            + if first_only {
                FIRST_ACTION
            } else {
                FIRST_LISTING
            };
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Expecting a known number of answers, wait for them all (within the deadline).
            let wait = if out.is_empty() || expected.is_some() {
                left
            } else {
                QUIET.min(left)
            };
            match tokio::time::timeout(wait, answers.next()).await {
                Ok(Some(m)) => {
                    out.push(m.payload);
                    if first_only || expected.is_some_and(|n| out.len() >= n) {
                        break;
                    }
                }
                _ => break,
            }
        }
        let _ = answers.unsubscribe().await;
        out
    }

    /// Answers other nodes' requests with `handler` (None: no answer) for as long as the
    /// process runs. Spawn it.
    pub async fn serve<F, Fut>(self, handler: F)
    where
        F: Fn(bytes::Bytes) -> Fut,
        Fut: Future<Output = Option<Vec<u8>>>,
    {
        loop {
            match self.nats.client.subscribe(self.subject.clone()).await {
                Ok(mut requests) => {
                    // The client subscribes again by itself after a reconnection.
                    while let Some(msg) = requests.next().await {
                        let from_self = msg
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(NODE_HEADER))
                            .is_some_and(|n| n.as_str() == self.node);
                        let Some(reply_to) = msg.reply.clone() else {
                            continue;
                        };
                        if from_self || msg.payload.len() > MAX_REQUEST {
                            continue;
                        }
                        if let Some(answer) = handler(msg.payload).await {
                            if let Err(e) = self.nats.client.publish(reply_to, answer.into()).await
                            {
                                tracing::debug!(error = %e, "call bus answer not sent");
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot listen on the call bus; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
