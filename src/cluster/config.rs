//! Tenant configuration from a NATS JetStream key-value bucket: the cluster's authority.
//!
//! One key per tenant (the tenant id), the value its JSON document with secrets already
//! hashed. The bucket's revision (its stream sequence) grows with every change to any key, so
//! "the last revision applied" is one number per node, kept in the node's database beside
//! the documents ([`TenantStore::source_revision`]).
//!
//! - **Start**: the node serves its snapshot at once; a task connects (retrying for ever),
//!   finds or creates the bucket, pushes tenants the node holds that the bucket lacks (a node
//!   joining with a configuration of its own, `--demo`), and watches the bucket from the
//!   revision after the last one applied. Every entry is checked as an API write would be and
//!   applied in the bucket's order ([`TenantStore::apply_replicated`]); one that fails is
//!   logged and counted, never applied in part.
//! - **Writes** ([`ConfigReplica::put`]): checked here first, then published with
//!   compare-and-set on the tenant's revision as the writer read it, so a change made through
//!   another node meanwhile fails the write (412) instead of being overwritten. The write
//!   returns once this node has applied it, so a read that follows sees it.
//! - **NATS away**: calls go on from the snapshot; writes answer 503; the status reports the
//!   source as degraded with the lag in revisions and seconds. When NATS is back the watch
//!   starts again from the last revision applied. A watch that falls behind the bucket and
//!   stays behind (the client's push consumer can miss the end of an outage) is started over.
//! - **Bucket made anew** (its last revision is below the node's): the node forgets the old
//!   revisions, reads the bucket from the start and pushes what it lacks.

use super::nats::{BucketSpec, Nats, ATTEMPT_TIMEOUT};
use super::{Basis, WriteError};
use crate::tenant::{ReplicaOutcome, TenantConfig, TenantStore};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Settings the replica needs (from `[cluster]`).
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// The key-value bucket.
    pub bucket: String,
    /// Copies the NATS cluster keeps of a bucket this node creates.
    pub replicas: usize,
    /// How long a write waits for NATS.
    pub request_timeout: Duration,
}

/// A watch that is this long behind the bucket while NATS answers is started over (with
/// every other watch of the node).
const STUCK_AFTER: Duration = Duration::from_secs(2);
/// The client this long without a server: NATS is gone, writes answer 503 at once.
const GONE_AFTER: Duration = Duration::from_secs(3);

/// The configuration authority as this node sees it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ConfigReport {
    /// `local` (a single node) or `nats`.
    pub source: String,
    /// `ok`, or `degraded` (NATS unreachable or the node behind it; calls go on from the
    /// snapshot, admin writes answer 503).
    pub state: String,
    /// The last revision of the bucket applied here.
    pub revision: u64,
    /// The bucket's last revision when it last answered.
    pub head_revision: u64,
    /// Revisions not applied yet.
    pub lag_revisions: u64,
    /// Seconds since the node was last known to be up to date (0: it is).
    pub lag_seconds: u64,
    /// Documents from the bucket that failed validation here and were not applied.
    pub rejected: u64,
    /// Why degraded, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Figures the watch and the status poll keep.
#[derive(Default)]
struct Status {
    reachable: AtomicBool,
    head: AtomicU64,
    applied: AtomicU64,
    rejected: AtomicU64,
    /// When the node was last known to be up to date, as ms since `started`.
    caught_up_ms: AtomicU64,
    /// When the client was last seen connected, as ms since `started`.
    connected_ms: AtomicU64,
    detail: Mutex<Option<String>>,
}

/// The cluster's tenant configuration, applied into the local store.
pub struct ConfigReplica {
    settings: ReplicaSettings,
    nats: Nats,
    store: Arc<TenantStore>,
    bucket: tokio::sync::Mutex<Option<kv::Store>>,
    status: Status,
    started: Instant,
    /// The last revision applied, for writers waiting to see their own write.
    applied_tx: tokio::sync::watch::Sender<u64>,
    /// Asks the watch to start over (stuck, or the bucket was made anew).
    restart: tokio::sync::Notify,
}

impl ConfigReplica {
    /// Starts watching the bucket in the background and returns at once (the node serves
    /// from its snapshot meanwhile). Needs a Tokio runtime.
    pub fn start(
        settings: ReplicaSettings,
        nats: Nats,
        store: Arc<TenantStore>,
    ) -> Arc<ConfigReplica> {
        let applied = store.source_revision().unwrap_or(0);
        let (applied_tx, _) = tokio::sync::watch::channel(applied);
        let connections = nats.connections.clone();
        let replica = Arc::new(ConfigReplica {
            settings,
            nats,
            store,
            bucket: tokio::sync::Mutex::new(None),
            status: Status::default(),
            started: Instant::now(),
            applied_tx,
            restart: tokio::sync::Notify::new(),
        });
        replica.status.applied.store(applied, Ordering::Relaxed);
        tokio::spawn(replica.clone().watch_loop(connections));
        tokio::spawn(replica.clone().status_loop());
        tracing::info!(bucket = %replica.settings.bucket, revision = applied, "tenant configuration comes from NATS JetStream; serving the local snapshot until caught up");
        replica
    }

    /// How the authority looks from here.
    pub fn report(&self) -> ConfigReport {
        let s = &self.status;
        let reachable = s.reachable.load(Ordering::Relaxed);
        let applied = s.applied.load(Ordering::Relaxed);
        let head = s.head.load(Ordering::Relaxed);
        let lag_revisions = head.saturating_sub(applied);
        let now_ms = self.started.elapsed().as_millis() as u64;
        let lag_seconds = if reachable && lag_revisions == 0 {
            0
        } else {
            now_ms.saturating_sub(s.caught_up_ms.load(Ordering::Relaxed)) / 1000
        };
        let detail = s.detail.lock().ok().and_then(|d| d.clone());
        let ok = reachable && lag_revisions == 0;
        ConfigReport {
            source: "nats".into(),
            state: if ok { "ok" } else { "degraded" }.into(),
            revision: applied,
            head_revision: head,
            lag_revisions,
            lag_seconds,
            rejected: s.rejected.load(Ordering::Relaxed),
            detail: if ok {
                None
            } else {
                Some(detail.unwrap_or_else(|| "catching up with the bucket".into()))
            },
        }
    }

    /// Publishes `cfg` (checked here first) if the tenant is still at `basis`, and waits until
    /// this node has applied it.
    pub async fn put(&self, cfg: TenantConfig, basis: Basis) -> Result<(), WriteError> {
        self.fail_fast_when_nats_is_gone()?;
        let (cfg, json) = self.store.prepare(cfg)?;
        self.bucket_or_unavailable().await?;
        let revision = self
            .publish_guarded(&cfg.id, Some(bytes::Bytes::from(json)), basis)
            .await?;
        tracing::info!(tenant = %cfg.id, revision, "tenant published to the cluster");
        self.wait_applied(|_| self.status.applied.load(Ordering::Relaxed) >= revision)
            .await;
        Ok(())
    }

    /// Deletes tenant `id` at the authority if it is still at `basis`, and waits until this
    /// node has applied it.
    pub async fn delete(&self, id: &str, basis: Basis) -> Result<(), WriteError> {
        self.fail_fast_when_nats_is_gone()?;
        self.bucket_or_unavailable().await?;
        let revision = self.publish_guarded(id, None, basis).await?;
        tracing::info!(tenant = %id, revision, "tenant deletion published to the cluster");
        self.wait_applied(|_| self.status.applied.load(Ordering::Relaxed) >= revision)
            .await;
        Ok(())
    }

    /// Publishes tenant `id`'s new document (`None`: its deletion) if the tenant is still at
    /// `basis`, and returns the change's revision.
    ///
    /// Compare-and-set on the bucket as a whole, not on the key: NATS 2.9 checks a key's
    /// expected revision (`Nats-Expected-Last-Subject-Sequence`) before the write is
    /// replicated, so two writes racing through two nodes of a clustered bucket can both pass
    /// (nats-server #4320; 146 of 200 such races on Debian's 2.9.10 here), while the stream's
    /// expected last sequence is checked as the write is applied. So a write names the last
    /// revision this node has applied: the bucket accepts it only if nothing was written
    /// since, and then the tenant's revision in this node's snapshot is its revision in the
    /// bucket, which must be `basis`. When something else was written meanwhile (another
    /// tenant, most often), the node applies it and looks again.
    ///
    /// A failure other than that is retried until `request_timeout`: while JetStream elects
    /// a new leader (a NATS server lost) writes are refused for some seconds, and an admin
    /// should see a slower answer, not an error. An attempt whose answer was lost may have
    /// been stored; the tenant then shows this very document, which counts as success.
    async fn publish_guarded(
        &self,
        id: &str,
        value: Option<bytes::Bytes>,
        basis: Basis,
    ) -> Result<u64, WriteError> {
        let subject = format!("$KV.{}.{}", self.settings.bucket, id);
        let deadline = Instant::now() + self.settings.request_timeout;
        let mut unanswered = false;
        loop {
            let seen = self.status.applied.load(Ordering::Relaxed);
            let snapshot = self.store.snapshot();
            let now_at = snapshot.source_revision_of(id);
            if now_at != basis.0 {
                let mine = match (&value, snapshot.tenant(id)) {
                    (Some(v), Some(t)) => serde_json::to_vec(&t.config).is_ok_and(|j| j == *v),
                    (None, None) => true,
                    _ => false,
                };
                return match (unanswered && mine, now_at) {
                    (true, Some(rev)) => Ok(rev),
                    (true, None) => Ok(seen),
                    (false, _) => Err(WriteError::Conflict),
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WriteError::Unavailable(
                    "NATS did not confirm the write in time".into(),
                ));
            }
            let message = match &value {
                Some(v) => PublishMessage::build().payload(v.clone()),
                None => PublishMessage::build().header("KV-Operation", "DEL"),
            }
            .expected_last_sequence(seen);
            let attempt = tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), async {
                self.nats
                    .js
                    .send_publish(subject.clone(), message)
                    .await?
                    .await
            })
            .await;
            match attempt {
                Ok(Ok(ack)) => return Ok(ack.sequence),
                Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    // Written meanwhile: apply it here, then look at the tenant again.
                    let mut rx = self.applied_tx.subscribe();
                    let _ =
                        tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), rx.wait_for(|r| *r > seen))
                            .await;
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "configuration write not accepted yet; retrying");
                    unanswered = true;
                }
                Err(_) => unanswered = true,
            }
            self.fail_fast_when_nats_is_gone()?;
            tokio::time::sleep(Duration::from_millis(200).min(left)).await;
        }
    }

    /// Writes wait out a short loss of NATS (a reconnect, a leader election), but not an
    /// outage: once the client has been without a server for a few seconds they answer at
    /// once.
    fn fail_fast_when_nats_is_gone(&self) -> Result<(), WriteError> {
        if self.nats.connected() {
            return Ok(());
        }
        let now_ms = self.started.elapsed().as_millis() as u64;
        let last = self.status.connected_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) > GONE_AFTER.as_millis() as u64 {
            Err(WriteError::Unavailable("NATS is not reachable".into()))
        } else {
            Ok(())
        }
    }

    async fn bucket_or_unavailable(&self) -> Result<kv::Store, WriteError> {
        tokio::time::timeout(self.settings.request_timeout, self.bucket())
            .await
            .map_err(|_| WriteError::Unavailable("the bucket did not answer in time".into()))?
            .map_err(WriteError::Unavailable)
    }

    /// Waits (bounded) until `done` holds after an applied revision; a write is durable at
    /// the authority already, so running out of time only delays when this node shows it.
    async fn wait_applied(&self, done: impl Fn(u64) -> bool) {
        let mut rx = self.applied_tx.subscribe();
        let waited =
            tokio::time::timeout(self.settings.request_timeout, rx.wait_for(|r| done(*r))).await;
        if !matches!(waited, Ok(Ok(_))) {
            tracing::warn!("a configuration write is stored in NATS but not applied on this node yet; it shows here once the watch catches up");
        }
    }

    /// The bucket, found or created on first use.
    async fn bucket(&self) -> Result<kv::Store, String> {
        let mut slot = self.bucket.lock().await;
        if let Some(kv) = slot.as_ref() {
            return Ok(kv.clone());
        }
        let kv = self
            .nats
            .bucket(&BucketSpec {
                name: self.settings.bucket.clone(),
                description: "Switchyard tenant documents",
                replicas: self.settings.replicas,
                // One value per tenant is all a node needs: the revision numbers, not the
                // history, are what lets a node resume.
                max_age: Duration::ZERO,
                // A tenant document is far smaller; anything bigger is not one.
                max_value_size: 1 << 20,
            })
            .await?;
        *slot = Some(kv.clone());
        Ok(kv)
    }

    fn degraded(&self, why: String) {
        if let Ok(mut d) = self.status.detail.lock() {
            if d.as_deref() != Some(why.as_str()) {
                tracing::warn!(reason = %why, "cluster configuration source degraded; calls go on from the local snapshot, admin writes answer 503");
            }
            *d = Some(why);
        }
    }

    /// Connects, pushes what the bucket lacks, then applies the bucket's changes in order;
    /// starts over from the last applied revision whenever the watch ends or is told to.
    async fn watch_loop(self: Arc<Self>, mut connections: tokio::sync::watch::Receiver<u64>) {
        loop {
            if let Err(why) = self.watch_once(&mut connections).await {
                self.degraded(why);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn watch_once(
        &self,
        connections: &mut tokio::sync::watch::Receiver<u64>,
    ) -> Result<(), String> {
        connections.borrow_and_update();
        let kv = self.bucket().await?;
        self.push_local_only(&kv).await?;
        let from = self.store.source_revision().map_err(|e| e.to_string())? + 1;
        let mut watch = kv
            .watch_all_from_revision(from)
            .await
            .map_err(|e| format!("cannot watch bucket: {e}"))?;
        tracing::debug!(from, "watching the tenant bucket");
        loop {
            tokio::select! {
                next = watch.next() => match next {
                    Some(Ok(entry)) => self.apply(entry).await?,
                    Some(Err(e)) => return Err(format!("watch failed: {e}")),
                    None => return Err("watch ended".into()),
                },
                _ = self.restart.notified() => return Ok(()),
                // A new connection: the old watch's consumer may be gone with the server.
                _ = connections.changed() => return Ok(()),
            }
        }
    }

    /// Tenants this node holds that never came from the bucket go there if the bucket has no
    /// such tenant; where it has one, the bucket's copy wins and replaces the node's.
    async fn push_local_only(&self, kv: &kv::Store) -> Result<(), String> {
        let store = self.store.clone();
        let local = tokio::task::spawn_blocking(move || store.local_only())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        for (id, json) in local {
            match kv.create(&id, json.into()).await {
                Ok(revision) => {
                    tracing::info!(tenant = %id, revision, "tenant of this node pushed to the cluster's empty slot")
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let entry = kv
                        .entry(&id)
                        .await
                        .map_err(|e| format!("cannot read tenant {id}: {e}"))?;
                    let Some(entry) = entry else { continue };
                    let doc = (entry.operation == kv::Operation::Put).then_some(entry.value);
                    let store = self.store.clone();
                    let key = id.clone();
                    let outcome = tokio::task::spawn_blocking(move || {
                        store.adopt_replicated(&key, doc.as_deref(), entry.revision)
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                    tracing::warn!(tenant = %id, ?outcome, "this node's copy of the tenant differs from the cluster's: the cluster's wins (change tenants through the admin API or a running node's inbox)");
                }
                Err(e) => return Err(format!("cannot push tenant {id}: {e}")),
            }
        }
        Ok(())
    }

    async fn apply(&self, entry: kv::Entry) -> Result<(), String> {
        let doc = (entry.operation == kv::Operation::Put).then_some(entry.value);
        let store = self.store.clone();
        let key = entry.key.clone();
        let revision = entry.revision;
        let outcome = tokio::task::spawn_blocking(move || {
            store.apply_replicated(&key, doc.as_deref(), revision)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("local store failed: {e}"))?;
        // The key came over the network: it reaches the log only as a debug-quoted string.
        match &outcome {
            ReplicaOutcome::Stored => {
                tracing::info!(tenant = ?entry.key, revision, "tenant applied from the cluster")
            }
            ReplicaOutcome::Deleted => {
                tracing::info!(tenant = ?entry.key, revision, "tenant deletion applied from the cluster")
            }
            ReplicaOutcome::AlreadyApplied => {}
            ReplicaOutcome::Rejected(why) => {
                self.status.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(tenant = ?entry.key, revision, reason = %why, "tenant document from the cluster refused; this node keeps the previous version");
            }
        }
        let applied = self.store.source_revision().unwrap_or(revision);
        self.status.applied.store(applied, Ordering::Relaxed);
        if self.status.head.load(Ordering::Relaxed) <= applied {
            self.status.head.store(applied, Ordering::Relaxed);
            self.mark_caught_up();
        }
        self.applied_tx.send_replace(applied);
        Ok(())
    }

    fn mark_caught_up(&self) {
        self.status
            .caught_up_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        if let Ok(mut d) = self.status.detail.lock() {
            if d.take().is_some() {
                tracing::info!("cluster configuration source healthy again");
            }
        }
    }

    /// Every second: is NATS there, how far is this node behind the bucket; starts the watch
    /// over when it is stuck behind or the bucket was made anew.
    async fn status_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut behind_since: Option<Instant> = None;
        loop {
            tick.tick().await;
            if self.nats.connected() {
                self.status
                    .connected_ms
                    .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            let head = match self.head_revision().await {
                Ok(h) => h,
                Err(why) => {
                    // Behind stays behind: an election that makes the head unreadable for a
                    // while must not hide a watch that stopped.
                    self.status.reachable.store(false, Ordering::Relaxed);
                    self.degraded(why);
                    continue;
                }
            };
            self.status.reachable.store(true, Ordering::Relaxed);
            self.status.head.store(head, Ordering::Relaxed);
            let applied = self.status.applied.load(Ordering::Relaxed);
            if head < applied {
                tracing::warn!(head, applied, "the tenant bucket is behind this node: it was made anew; reading it from the start");
                if let Err(e) = self.store.reset_source() {
                    tracing::error!(error = %e, "cannot reset the local configuration revisions");
                    continue;
                }
                self.status.applied.store(0, Ordering::Relaxed);
                self.applied_tx.send_replace(0);
                self.restart.notify_one();
                continue;
            }
            if head == applied {
                behind_since = None;
                self.mark_caught_up();
            } else {
                let since = *behind_since.get_or_insert_with(Instant::now);
                self.degraded(format!("{} revision(s) behind the bucket", head - applied));
                if since.elapsed() > STUCK_AFTER {
                    tracing::warn!(
                        head,
                        applied,
                        "the bucket watch is stuck behind; starting the watches over"
                    );
                    self.nats.restart_watches();
                    behind_since = None;
                }
            }
        }
    }

    async fn head_revision(&self) -> Result<u64, String> {
        if !self.nats.connected() {
            return Err("NATS is not reachable".into());
        }
        let name = format!("KV_{}", self.settings.bucket);
        let info = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
            let mut stream = self
                .nats
                .js
                .get_stream(&name)
                .await
                .map_err(|e| e.to_string())?;
            stream
                .info()
                .await
                .map(|i| i.state.last_sequence)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|_| "NATS did not answer in time".to_string())?;
        info.map_err(|e| format!("cannot read the bucket's state: {e}"))
    }
}
