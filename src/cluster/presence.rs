//! Who else is in the cluster, and how busy: one heartbeat per node over NATS.
//!
//! Every node publishes a [`Heartbeat`] on `switchyard.nodes.<config bucket>` once a second,
//! and at once (at most every [`MIN_GAP`]) when its live calls per tenant change. Every node
//! keeps the latest heartbeat of each other node in [`Peers`], a pure table that takes
//! heartbeats and time. A node not heard from for [`GONE_AFTER`] is gone: its calls stop
//! counting (they died with it, or it lost NATS and is counted by nobody until it is back),
//! and call listings stop waiting for its answer.
//!
//! What the heartbeats give:
//! - **Tenant limits across the cluster.** A new call is admitted against this node's own
//!   calls of the tenant plus the other nodes' last told counts (`Endpoint::set_remote_calls`).
//!   How exact: a call admitted on one node is known to the others within one publish (about
//!   [`MIN_GAP`] plus the NATS round trip, a few milliseconds on a LAN), so calls arriving at
//!   different nodes inside that window can together go over the limit by at most one per
//!   node; a node cut off from NATS admits against the counts it last heard for
//!   [`GONE_AFTER`], then against its own calls alone.
//! - **How many answers to expect** when the admin API asks every node about its live calls.
//!
//! Heartbeats use core NATS publish, not JetStream: they are worth nothing a second later, so
//! a lost one is simply replaced by the next. NATS is the cluster's trusted bus (as for the
//! configuration bucket); a node still bounds what it keeps from it.

use super::nats::Nats;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often a node tells that it is alive.
pub const BEAT: Duration = Duration::from_secs(1);
/// The shortest gap between two heartbeats (call counts that change faster are batched).
pub const MIN_GAP: Duration = Duration::from_millis(100);
/// A node silent this long is gone (three heartbeats missed).
pub const GONE_AFTER: Duration = Duration::from_millis(3_500);
/// A gone node is forgotten after this long (it stays listed as gone until then).
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Most nodes remembered; a new node beyond this replaces the one gone longest, if any.
pub const MAX_NODES: usize = 256;
/// Largest heartbeat taken.
const MAX_BEAT_BYTES: usize = 256 * 1024;
/// Longest node name taken.
const MAX_NODE_NAME: usize = 128;

/// What a node tells the others every second.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    /// The node's name (`cluster.node_id`).
    pub node: String,
    /// When the node's process started (unix ms): a restarted node starts counting again.
    pub started_unix_ms: u64,
    /// Counts up with every heartbeat of one process, so late ones are told apart.
    pub seq: u64,
    /// Live calls per tenant (tenants with none are left out).
    pub tenant_calls: BTreeMap<String, u32>,
    /// What the node reports of itself for the cluster's health page (opaque here).
    #[serde(default)]
    pub status: serde_json::Value,
}

/// Another node as this node last heard of it.
#[derive(Debug, Clone)]
pub struct PeerView {
    /// Its latest heartbeat.
    pub beat: Heartbeat,
    /// How long ago that heartbeat arrived.
    pub silent_for: Duration,
    /// Heard from within [`GONE_AFTER`].
    pub alive: bool,
}

/// The other nodes' latest heartbeats (sans-IO: heartbeats and time in, figures out).
#[derive(Debug)]
pub struct Peers {
    me: String,
    nodes: HashMap<String, (Heartbeat, Instant)>,
}

/// Why a heartbeat was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeatRefused {
    /// Our own, echoed back by NATS.
    #[error("our own heartbeat")]
    Own,
    /// Older than one already taken from that node's process.
    #[error("an older heartbeat than one already taken")]
    Stale,
    /// A node name that is empty or too long.
    #[error("a node name that is empty or too long")]
    BadName,
    /// [`MAX_NODES`] alive nodes are known already.
    #[error("too many nodes")]
    TooMany,
}

impl Peers {
    /// The table of node `me` (whose own heartbeats are ignored).
    pub fn new(me: &str) -> Peers {
        Peers {
            me: me.to_string(),
            nodes: HashMap::new(),
        }
    }

    /// Takes a heartbeat that arrived at `now`.
    pub fn receive(&mut self, beat: Heartbeat, now: Instant) -> Result<(), BeatRefused> {
        if beat.node == self.me {
            return Err(BeatRefused::Own);
        }
        if beat.node.is_empty() || beat.node.len() > MAX_NODE_NAME {
            return Err(BeatRefused::BadName);
        }
        if let Some((old, _)) = self.nodes.get(&beat.node) {
            let older = (beat.started_unix_ms, beat.seq) <= (old.started_unix_ms, old.seq);
            if older {
                return Err(BeatRefused::Stale);
            }
        } else if self.nodes.len() >= MAX_NODES {
            let longest_gone = self
                .nodes
                .iter()
                .filter(|(_, (_, seen))| now.saturating_duration_since(*seen) >= GONE_AFTER)
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(name, _)| name.clone());
            match longest_gone {
                Some(name) => {
                    self.nodes.remove(&name);
                }
                None => return Err(BeatRefused::TooMany),
            }
        }
        self.nodes.insert(beat.node.clone(), (beat, now));
        Ok(())
    }

    /// Live calls per tenant on the nodes alive at `now`, summed.
    pub fn remote_calls(&self, now: Instant) -> HashMap<String, usize> {
        let mut sum: HashMap<String, usize> = HashMap::new();
        for (beat, _) in self.alive(now) {
            for (tenant, n) in &beat.tenant_calls {
                *sum.entry(tenant.clone()).or_default() += *n as usize;
            }
        }
        sum
    }

    /// How many other nodes are alive at `now`.
    pub fn alive_count(&self, now: Instant) -> usize {
        self.alive(now).count()
    }

    /// Every node remembered, by name.
    pub fn view(&self, now: Instant) -> Vec<PeerView> {
        let mut out: Vec<PeerView> = self
            .nodes
            .values()
            .map(|(beat, seen)| {
                let silent_for = now.saturating_duration_since(*seen);
                PeerView {
                    beat: beat.clone(),
                    silent_for,
                    alive: silent_for < GONE_AFTER,
                }
            })
            .collect();
        out.sort_by(|a, b| a.beat.node.cmp(&b.beat.node));
        out
    }

    /// Forgets nodes gone for [`FORGET_AFTER`].
    pub fn forget_old(&mut self, now: Instant) {
        self.nodes
            .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < FORGET_AFTER);
    }

    fn alive(&self, now: Instant) -> impl Iterator<Item = &(Heartbeat, Instant)> {
        self.nodes
            .values()
            .filter(move |(_, seen)| now.saturating_duration_since(*seen) < GONE_AFTER)
    }
}

/// What a node reports of itself in its heartbeats (the cluster page's row for it).
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// This node's view of the cluster's other nodes, kept up to date by two tasks.
#[derive(Clone)]
pub struct Presence {
    peers: Arc<Mutex<Peers>>,
}

impl Presence {
    /// Starts publishing this node's heartbeats (its calls per tenant from `local_calls`,
    /// its status from `status`) and listening to the others'. The other nodes' calls per
    /// tenant come out of the returned receiver whenever they change.
    pub fn start(
        nats: Nats,
        namespace: &str,
        node: &str,
        local_calls: watch::Receiver<Arc<BTreeMap<String, u32>>>,
        status: StatusFn,
    ) -> (Presence, watch::Receiver<Arc<HashMap<String, usize>>>) {
        let subject = format!("switchyard.nodes.{namespace}");
        let peers = Arc::new(Mutex::new(Peers::new(node)));
        let (remote_tx, remote_rx) = watch::channel(Arc::new(HashMap::new()));
        tokio::spawn(publish_beats(
            nats.clone(),
            subject.clone(),
            node.to_string(),
            local_calls,
            status,
        ));
        tokio::spawn(listen(nats, subject, peers.clone(), remote_tx));
        (Presence { peers }, remote_rx)
    }

    /// How many other nodes are alive now.
    pub fn alive_peers(&self) -> usize {
        self.peers
            .lock()
            .map(|p| p.alive_count(Instant::now()))
            .unwrap_or(0)
    }

    /// Every other node remembered, alive or gone, by name.
    pub fn peers(&self) -> Vec<PeerView> {
        self.peers
            .lock()
            .map(|p| p.view(Instant::now()))
            .unwrap_or_default()
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Publishes a heartbeat every [`BEAT`], and soon after the calls per tenant change.
async fn publish_beats(
    nats: Nats,
    subject: String,
    node: String,
    mut local_calls: watch::Receiver<Arc<BTreeMap<String, u32>>>,
    status: StatusFn,
) {
    let started_unix_ms = unix_ms();
    let mut seq = 0u64;
    let mut last = tokio::time::Instant::now() - BEAT;
    let mut calls_open = true;
    loop {
        tokio::select! {
            changed = local_calls.changed(), if calls_open => {
                if changed.is_err() {
                    // The SIP loop is gone (shutting down): keep beating with the last counts.
                    calls_open = false;
                    continue;
                }
                tokio::time::sleep_until(last + MIN_GAP).await;
            }
            _ = tokio::time::sleep_until(last + BEAT) => {}
        }
        last = tokio::time::Instant::now();
        if !nats.connected() {
            // Published while away, beats would queue in the client; the next one will do.
            continue;
        }
        seq += 1;
        let beat = Heartbeat {
            node: node.clone(),
            started_unix_ms,
            seq,
            tenant_calls: (**local_calls.borrow_and_update()).clone(),
            status: status(),
        };
        let Ok(json) = serde_json::to_vec(&beat) else {
            continue;
        };
        if let Err(e) = nats.client.publish(subject.clone(), json.into()).await {
            tracing::debug!(error = %e, "heartbeat not sent");
        }
    }
}

/// Takes the other nodes' heartbeats into `peers`, and tells the other nodes' calls per
/// tenant whenever they change (a heartbeat, or a node going silent).
async fn listen(
    nats: Nats,
    subject: String,
    peers: Arc<Mutex<Peers>>,
    remote: watch::Sender<Arc<HashMap<String, usize>>>,
) {
    let tell = |peers: &Arc<Mutex<Peers>>| {
        let now = Instant::now();
        let Ok(mut p) = peers.lock() else { return };
        p.forget_old(now);
        let sums = p.remote_calls(now);
        remote.send_if_modified(|old| {
            let changed = **old != sums;
            if changed {
                *old = Arc::new(sums);
            }
            changed
        });
    };
    loop {
        match nats.client.subscribe(subject.clone()).await {
            Ok(mut beats) => {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tokio::select! {
                        msg = beats.next() => {
                            let Some(msg) = msg else { break };
                            if msg.payload.len() > MAX_BEAT_BYTES {
                                continue;
                            }
                            let Ok(beat) = serde_json::from_slice::<Heartbeat>(&msg.payload) else {
                                tracing::debug!("unreadable heartbeat ignored");
                                continue;
                            };
                            let taken = peers
                                .lock()
                                .map(|mut p| p.receive(beat, Instant::now()))
                                .unwrap_or(Err(BeatRefused::TooMany));
                            match taken {
                                Ok(()) => tell(&peers),
                                Err(BeatRefused::TooMany) => {
                                    tracing::warn!("heartbeat of a node beyond the {MAX_NODES} known ignored");
                                }
                                Err(_) => {}
                            }
                        }
                        _ = tick.tick() => tell(&peers),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen to heartbeats; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(node: &str, seq: u64, calls: &[(&str, u32)]) -> Heartbeat {
        Heartbeat {
            node: node.into(),
            started_unix_ms: 1000,
            seq,
            tenant_calls: calls.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
            status: serde_json::Value::Null,
        }
    }

    #[test]
    fn calls_of_alive_nodes_are_summed_and_gone_nodes_stop_counting() {
        let t0 = Instant::now();
        let mut p = Peers::new("a");
        p.receive(beat("b", 1, &[("t1", 2), ("t2", 1)]), t0)
            .unwrap();
        p.receive(beat("c", 1, &[("t1", 3)]), t0 + Duration::from_secs(2))
            .unwrap();
        let at = t0 + Duration::from_secs(3);
        assert_eq!(p.remote_calls(at).get("t1"), Some(&5));
        assert_eq!(p.remote_calls(at).get("t2"), Some(&1));
        assert_eq!(p.alive_count(at), 2);
        // b silent for GONE_AFTER: its calls no longer count, it is listed as gone.
        let later = t0 + GONE_AFTER;
        assert_eq!(p.remote_calls(later).get("t1"), Some(&3));
        assert_eq!(p.remote_calls(later).get("t2"), None);
        let view = p.view(later);
        assert_eq!(view.len(), 2);
        assert!(!view[0].alive && view[0].beat.node == "b");
        assert!(view[1].alive);
        p.forget_old(t0 + FORGET_AFTER);
        assert_eq!(p.view(t0 + FORGET_AFTER).len(), 1, "b forgotten, c not yet");
    }

    #[test]
    fn own_late_and_nameless_heartbeats_are_refused() {
        let t0 = Instant::now();
        let mut p = Peers::new("a");
        assert_eq!(p.receive(beat("a", 1, &[]), t0), Err(BeatRefused::Own));
        assert_eq!(p.receive(beat("", 1, &[]), t0), Err(BeatRefused::BadName));
        let long = "n".repeat(MAX_NODE_NAME + 1);
        assert_eq!(
            p.receive(beat(&long, 1, &[]), t0),
            Err(BeatRefused::BadName)
        );
        p.receive(beat("b", 5, &[("t", 1)]), t0).unwrap();
        assert_eq!(
            p.receive(beat("b", 4, &[("t", 9)]), t0),
            Err(BeatRefused::Stale)
        );
        assert_eq!(p.remote_calls(t0).get("t"), Some(&1));
        // The same node restarted: its counting starts again.
        let mut restarted = beat("b", 1, &[("t", 2)]);
        restarted.started_unix_ms = 2000;
        p.receive(restarted, t0).unwrap();
        assert_eq!(p.remote_calls(t0).get("t"), Some(&2));
    }

    #[test]
    fn the_table_is_bounded_and_makes_room_from_gone_nodes_only() {
        let t0 = Instant::now();
        let mut p = Peers::new("a");
        for i in 0..MAX_NODES {
            p.receive(beat(&format!("n{i}"), 1, &[]), t0).unwrap();
        }
        assert_eq!(
            p.receive(beat("late", 1, &[]), t0),
            Err(BeatRefused::TooMany)
        );
        // n0 keeps beating; the others go silent and one of them makes room.
        let later = t0 + GONE_AFTER + Duration::from_secs(1);
        p.receive(beat("n0", 2, &[]), later - Duration::from_secs(1))
            .unwrap();
        p.receive(beat("late", 1, &[]), later).unwrap();
        assert_eq!(p.view(later).len(), MAX_NODES);
        assert!(p.view(later).iter().any(|v| v.beat.node == "n0"));
    }
}
