//! The local durable spool between the call engine and the stores, so nothing is lost while
//! the history store or blob storage is slow or down.
//!
//! Two queues of files under `data_dir/spool/`:
//!
//! - `history/`: batches of [`HistoryOp`]s (call records, voicemail and recording metadata,
//!   audit entries, retention deletes). A writer thread takes whatever is queued, writes it as
//!   one file (temporary name, fsync, rename, directory fsync), so a burst of call ends costs
//!   one fsync rather than one per call. Names are `MILLIS-SEQ-COUNT.json`: their order is
//!   the order of the ops, and the count gives the depth without reading them.
//! - `blob/`: one [`BlobJob`] per file (upload a local file to a key, delete a key or a
//!   prefix), in order.
//!
//! Two drain tasks ([`drain_history`], [`drain_blobs`]) move the oldest entries to the stores:
//! history in batches of up to [`HISTORY_BATCH`] ops in one transaction, blobs one job at a
//! time; on failure they back off exponentially (1 s doubling to 30 s) and retry the same
//! entry, and the file is removed only after the store has accepted it. Every op is
//! idempotent (see [`crate::history`] and [`crate::blob`]), so a crash between the store's
//! acceptance and the file's removal replays it harmlessly; a restart resumes the spool.
//!
//! The one window left is between [`Spool::push_history`] and the writer thread's fsync
//! (a few milliseconds): a crash there loses what was queued. Whoever must not acknowledge
//! before the fsync (the admin API) waits for [`Spool::synced`].
//!
//! When a write fails (a full disk), the writer keeps the entries in memory, in order, and
//! retries every second; nothing already in the spool is touched, [`Spool::synced`] answers
//! with the error, and `/health/ready` reports the spool as failing until a write succeeds.
//!
//! [`SpoolStatus`] carries depth, oldest age and how long a store has been failing, for
//! `/metrics` and `/health/ready`.

use crate::blob::{BlobError, BlobStore};
use crate::history::{HistoryOp, HistoryStore};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Most history ops applied in one transaction.
pub const HISTORY_BATCH: usize = 500;

/// An uploads/deletes job for blob storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum BlobJob {
    /// Upload `file` to `key`; remove the local file afterwards when `remove_local`.
    Put {
        /// Key.
        key: String,
        /// Local file.
        file: PathBuf,
        /// Remove the local copy once stored.
        remove_local: bool,
        /// Not before this unix millisecond (the recorder thread closes files a moment
        /// after the call's end).
        not_before_ms: u64,
        /// Metadata to write once stored, with the stored size filled in (a recording's
        /// final length is known only when the recorder has closed the file).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        then: Option<HistoryOp>,
    },
    /// Delete `key`.
    Delete {
        /// Key.
        key: String,
    },
    /// Delete everything under `prefix` (a tenant deleted).
    DeletePrefix {
        /// Prefix.
        prefix: String,
    },
}

enum Item {
    History(HistoryOp),
    Blob(BlobJob),
    /// Answered once everything queued before it is on disk (or with why it is not).
    Barrier(tokio::sync::oneshot::Sender<Result<(), String>>),
}

/// Entries the writer keeps in memory while the disk refuses them; beyond this the oldest
/// are dropped (with an error in the log) rather than exhaust memory.
const MAX_UNWRITTEN: usize = 1_000_000;

/// Health figures of one queue and the store behind it.
#[derive(Debug, Default)]
pub struct QueueStatus {
    /// Entries waiting (ops for history, jobs for blobs).
    pub depth: AtomicU64,
    /// Unix ms of the oldest waiting entry (0: none).
    pub oldest_ms: AtomicU64,
    /// Entries moved to the store since start.
    pub moved: AtomicU64,
    /// Failed attempts since start.
    pub failures: AtomicU64,
    failing_since: Mutex<Option<Instant>>,
    last_error: Mutex<String>,
}

impl QueueStatus {
    fn ok(&self) {
        let was = self
            .failing_since
            .lock()
            .map(|mut f| f.take())
            .unwrap_or(None);
        if let Some(since) = was {
            tracing::info!(
                after_s = since.elapsed().as_secs(),
                "store reachable again; spool draining"
            );
        }
    }

    fn fail(&self, error: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.failing_since.lock() {
            f.get_or_insert_with(Instant::now);
        }
        if let Ok(mut e) = self.last_error.lock() {
            *e = error.to_string();
        }
    }

    /// How long the store has been failing (None while it works).
    pub fn failing_for(&self) -> Option<Duration> {
        self.failing_since
            .lock()
            .ok()
            .and_then(|f| f.map(|s| s.elapsed()))
    }

    /// The last error seen.
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// Age of the oldest waiting entry.
    pub fn oldest_age(&self) -> Duration {
        match self.oldest_ms.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            ms => Duration::from_millis(unix_ms().saturating_sub(ms)),
        }
    }
}

/// Both queues' figures.
#[derive(Debug, Default)]
pub struct SpoolStatus {
    /// The history queue.
    pub history: QueueStatus,
    /// The blob queue.
    pub blob: QueueStatus,
    /// Writing the spool itself (the local disk): failing while it is full or broken.
    pub disk: QueueStatus,
}

/// The spool handle (cheap to clone). See the module documentation.
#[derive(Clone)]
pub struct Spool {
    tx: mpsc::Sender<Item>,
    history_dir: PathBuf,
    blob_dir: PathBuf,
    wake_history: Arc<Notify>,
    wake_blob: Arc<Notify>,
    /// Items handed to the writer thread and not yet on disk.
    unwritten: Arc<AtomicU64>,
    /// Figures for metrics and health.
    pub status: Arc<SpoolStatus>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.history_dir.parent())
            .finish()
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn entry_name(count: usize) -> String {
    format!(
        "{:013}-{:09}-{count}.json",
        unix_ms(),
        SEQ.fetch_add(1, Ordering::Relaxed) % 1_000_000_000
    )
}

/// Writes `bytes` to `dir/name` durably: temporary file, fsync, rename, directory fsync.
fn write_durable(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Entries of a queue folder, oldest first (temporary files are skipped).
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "json")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// (count, unix ms) from an entry's name.
fn name_figures(p: &Path) -> (u64, u64) {
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = stem.split('-');
    let ms = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let count = parts.nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    (count, ms)
}

impl Spool {
    /// Opens (creating) the spool under `dir` and starts its writer thread. Call records left
    /// by older builds in `dir/cdr/` are moved into the history queue.
    pub fn open(dir: &Path) -> std::io::Result<Spool> {
        let history_dir = dir.join("history");
        let blob_dir = dir.join("blob");
        std::fs::create_dir_all(&history_dir)?;
        std::fs::create_dir_all(&blob_dir)?;
        let (tx, rx) = mpsc::channel::<Item>();
        let spool = Spool {
            tx,
            history_dir: history_dir.clone(),
            blob_dir: blob_dir.clone(),
            wake_history: Arc::new(Notify::new()),
            wake_blob: Arc::new(Notify::new()),
            unwritten: Arc::new(AtomicU64::new(0)),
            status: Arc::new(SpoolStatus::default()),
        };
        spool.migrate_legacy_cdr(&dir.join("cdr"))?;
        spool.refresh_figures();
        let w = Writer {
            history_dir,
            blob_dir,
            wake_history: spool.wake_history.clone(),
            wake_blob: spool.wake_blob.clone(),
            unwritten: spool.unwritten.clone(),
            status: spool.status.clone(),
        };
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || w.run(rx))?;
        Ok(spool)
    }

    fn migrate_legacy_cdr(&self, legacy: &Path) -> std::io::Result<()> {
        let files = entries(legacy);
        if files.is_empty() {
            return Ok(());
        }
        let mut ops = Vec::new();
        for f in &files {
            match std::fs::read(f)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                Some(rec) => ops.push(HistoryOp::CallRecord(Box::new(rec))),
                None => {
                    tracing::warn!(file = %f.display(), "unreadable old call record left in place")
                }
            }
        }
        for chunk in ops.chunks(HISTORY_BATCH) {
            let bytes = serde_json::to_vec(chunk).map_err(std::io::Error::other)?;
            write_durable(&self.history_dir, &entry_name(chunk.len()), &bytes)?;
        }
        for f in files {
            let _ = std::fs::remove_file(f);
        }
        tracing::info!(
            records = ops.len(),
            "call records from the old spool queued for the history store"
        );
        Ok(())
    }

    /// Queues a history op (written durably by the writer thread within milliseconds).
    pub fn push_history(&self, op: HistoryOp) {
        self.unwritten.fetch_add(1, Ordering::SeqCst);
        let _ = self.tx.send(Item::History(op));
    }

    /// Waits until everything queued before this call is fsynced in the spool; `Err` names
    /// why not (a full disk: the entries are kept in memory and retried).
    pub async fn synced(&self) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Item::Barrier(tx)).is_err() {
            return Err("the spool writer has stopped".into());
        }
        rx.await
            .unwrap_or_else(|_| Err("the spool writer has stopped".into()))
    }

    /// Queues a blob job.
    pub fn push_blob(&self, job: BlobJob) {
        self.unwritten.fetch_add(1, Ordering::SeqCst);
        let _ = self.tx.send(Item::Blob(job));
    }

    /// Queues the upload of `file` to `key` (after a 2 s grace for the recorder thread).
    pub fn upload(&self, key: String, file: PathBuf, remove_local: bool) {
        self.push_blob(BlobJob::Put {
            key,
            file,
            remove_local,
            not_before_ms: unix_ms() + 2000,
            then: None,
        });
    }

    /// True when nothing waits in the history queue (so a history write made now cannot
    /// overtake an older one).
    pub fn history_idle(&self) -> bool {
        self.unwritten.load(Ordering::SeqCst) == 0 && entries(&self.history_dir).is_empty()
    }

    /// Recomputes depth and oldest age from the folders.
    pub fn refresh_figures(&self) {
        for (dir, q) in [
            (&self.history_dir, &self.status.history),
            (&self.blob_dir, &self.status.blob),
        ] {
            let e = entries(dir);
            let depth: u64 = e.iter().map(|p| name_figures(p).0).sum();
            q.depth.store(depth, Ordering::Relaxed);
            q.oldest_ms.store(
                e.first().map(|p| name_figures(p).1).unwrap_or(0),
                Ordering::Relaxed,
            );
        }
    }

    /// Waits until both queues are empty or `timeout` passes; true when empty.
    pub async fn wait_empty(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.unwritten.load(Ordering::SeqCst) == 0
                && entries(&self.history_dir).is_empty()
                && entries(&self.blob_dir).is_empty()
            {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct Writer {
    history_dir: PathBuf,
    blob_dir: PathBuf,
    wake_history: Arc<Notify>,
    wake_blob: Arc<Notify>,
    unwritten: Arc<AtomicU64>,
    status: Arc<SpoolStatus>,
}

impl Writer {
    fn run(self, rx: mpsc::Receiver<Item>) {
        let mut ops: Vec<HistoryOp> = Vec::new();
        let mut jobs: std::collections::VecDeque<BlobJob> = std::collections::VecDeque::new();
        loop {
            // With entries waiting for a disk that refused them, wake up to retry.
            let first = if ops.is_empty() && jobs.is_empty() {
                match rx.recv() {
                    Ok(i) => Some(i),
                    Err(_) => return,
                }
            } else {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(i) => Some(i),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            };
            let mut barriers = Vec::new();
            let mut next = first;
            while let Some(item) = next.take() {
                match item {
                    Item::History(op) => ops.push(op),
                    Item::Blob(job) => jobs.push_back(job),
                    Item::Barrier(b) => barriers.push(b),
                }
                if ops.len() < HISTORY_BATCH * 4 {
                    next = rx.try_recv().ok();
                }
            }
            let written = self.write_history(&mut ops) && self.write_blobs(&mut jobs);
            if written {
                self.status.disk.ok();
            }
            self.bound(&mut ops, &mut jobs);
            let answer = if ops.is_empty() && jobs.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "spool write failed ({}); {} entries kept in memory and retried",
                    self.status.disk.last_error(),
                    ops.len() + jobs.len()
                ))
            };
            for b in barriers {
                let _ = b.send(answer.clone());
            }
        }
    }

    /// Writes `ops` in batches; what could not be written stays in `ops`. False on a failure.
    fn write_history(&self, ops: &mut Vec<HistoryOp>) -> bool {
        while !ops.is_empty() {
            let n = ops.len().min(HISTORY_BATCH);
            let name = entry_name(n);
            let res = serde_json::to_vec(&ops[..n])
                .map_err(std::io::Error::other)
                .and_then(|b| write_durable(&self.history_dir, &name, &b));
            if let Err(e) = res {
                self.disk_failed(&e, "history");
                return false;
            }
            ops.drain(..n);
            let st = &self.status.history;
            st.depth.fetch_add(n as u64, Ordering::Relaxed);
            let _ =
                st.oldest_ms
                    .compare_exchange(0, unix_ms(), Ordering::Relaxed, Ordering::Relaxed);
            self.unwritten.fetch_sub(n as u64, Ordering::SeqCst);
            self.wake_history.notify_one();
        }
        true
    }

    /// Writes blob jobs in order; what could not be written stays in `jobs`.
    fn write_blobs(&self, jobs: &mut std::collections::VecDeque<BlobJob>) -> bool {
        while let Some(job) = jobs.front() {
            let res = serde_json::to_vec(job)
                .map_err(std::io::Error::other)
                .and_then(|b| write_durable(&self.blob_dir, &entry_name(1), &b));
            if let Err(e) = res {
                self.disk_failed(&e, "blob");
                return false;
            }
            jobs.pop_front();
            let st = &self.status.blob;
            st.depth.fetch_add(1, Ordering::Relaxed);
            let _ =
                st.oldest_ms
                    .compare_exchange(0, unix_ms(), Ordering::Relaxed, Ordering::Relaxed);
            self.unwritten.fetch_sub(1, Ordering::SeqCst);
            self.wake_blob.notify_one();
        }
        true
    }

    fn disk_failed(&self, e: &std::io::Error, queue: &str) {
        // Once per failing stretch at error level; the figures say how long it lasts.
        if self.status.disk.failing_for().is_none() {
            tracing::error!(error = %e, queue, "cannot write the spool (disk full?): entries kept in memory and retried every second");
        }
        self.status.disk.fail(&e.to_string());
    }

    /// Keeps memory bounded while the disk refuses writes.
    fn bound(&self, ops: &mut Vec<HistoryOp>, jobs: &mut std::collections::VecDeque<BlobJob>) {
        if ops.len() > MAX_UNWRITTEN {
            let drop = ops.len() - MAX_UNWRITTEN;
            ops.drain(..drop);
            self.unwritten.fetch_sub(drop as u64, Ordering::SeqCst);
            tracing::error!(
                dropped = drop,
                "spool disk still failing: oldest history entries dropped"
            );
        }
        while jobs.len() > MAX_UNWRITTEN {
            jobs.pop_front();
            self.unwritten.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Exponential backoff between failed attempts.
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        d
    }

    fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}

async fn wait(notify: &Notify, max: Duration) {
    let _ = tokio::time::timeout(max, notify.notified()).await;
}

/// Moves history batches to the store until the process ends. See the module documentation.
pub async fn drain_history(spool: Spool, store: Arc<HistoryStore>) {
    let mut backoff = Backoff(Backoff::FIRST);
    loop {
        let files = entries(&spool.history_dir);
        if files.is_empty() {
            spool.refresh_figures();
            wait(&spool.wake_history, Duration::from_secs(5)).await;
            continue;
        }
        let mut batch: Vec<HistoryOp> = Vec::new();
        let mut used: Vec<PathBuf> = Vec::new();
        for f in files {
            if !used.is_empty() && batch.len() + name_figures(&f).0 as usize > HISTORY_BATCH {
                break;
            }
            match std::fs::read(&f).map_err(|e| e.to_string()).and_then(|b| {
                serde_json::from_slice::<Vec<HistoryOp>>(&b).map_err(|e| e.to_string())
            }) {
                Ok(ops) => batch.extend(ops),
                Err(e) => {
                    // Kept for a person to look at, out of the queue's way.
                    let bad = f.with_extension("bad");
                    tracing::error!(file = %f.display(), error = %e, "unreadable spool entry moved aside");
                    let _ = std::fs::rename(&f, bad);
                    continue;
                }
            }
            used.push(f);
        }
        if used.is_empty() {
            continue;
        }
        match store.apply(&batch).await {
            Ok(()) => {
                for f in &used {
                    let _ = std::fs::remove_file(f);
                }
                spool
                    .status
                    .history
                    .moved
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                spool.status.history.ok();
                backoff.reset();
                spool.refresh_figures();
            }
            Err(e) => {
                let delay = backoff.next();
                tracing::warn!(error = %e, waiting = batch.len(), retry_in_s = delay.as_secs(), "history store write failed; kept in the spool");
                spool.status.history.fail(&e.to_string());
                spool.refresh_figures();
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Moves blob jobs to the store until the process ends. See the module documentation.
pub async fn drain_blobs(spool: Spool, store: BlobStore) {
    let mut backoff = Backoff(Backoff::FIRST);
    loop {
        let files = entries(&spool.blob_dir);
        let Some(f) = files.first() else {
            spool.refresh_figures();
            wait(&spool.wake_blob, Duration::from_secs(5)).await;
            continue;
        };
        let job: BlobJob = match std::fs::read(f)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(file = %f.display(), error = %e, "unreadable spool entry moved aside");
                let _ = std::fs::rename(f, f.with_extension("bad"));
                continue;
            }
        };
        if let BlobJob::Put { not_before_ms, .. } = &job {
            let now = unix_ms();
            if *not_before_ms > now {
                tokio::time::sleep(Duration::from_millis((*not_before_ms - now).min(5000))).await;
            }
        }
        match run_job(&store, &job).await {
            Ok(size) => {
                if let (BlobJob::Put { then: Some(op), .. }, Some(size)) = (&job, size) {
                    // Durably queued before the job goes, so a crash in between replays
                    // the (idempotent) upload rather than losing the metadata.
                    let op = with_stored_size(op.clone(), size);
                    if let Err(e) = serde_json::to_vec(&[op])
                        .map_err(std::io::Error::other)
                        .and_then(|b| write_durable(&spool.history_dir, &entry_name(1), &b))
                    {
                        tracing::error!(error = %e, "cannot queue a stored blob's metadata");
                    }
                    spool.wake_history.notify_one();
                }
                let _ = std::fs::remove_file(f);
                if let BlobJob::Put {
                    file,
                    remove_local: true,
                    ..
                } = &job
                {
                    let _ = std::fs::remove_file(file);
                }
                spool.status.blob.moved.fetch_add(1, Ordering::Relaxed);
                spool.status.blob.ok();
                backoff.reset();
                spool.refresh_figures();
            }
            Err(e) => {
                let delay = backoff.next();
                tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "blob store write failed; kept in the spool");
                spool.status.blob.fail(&e.to_string());
                spool.refresh_figures();
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// `op` with the size the store holds (a recording's final size).
fn with_stored_size(op: HistoryOp, size: u64) -> HistoryOp {
    match op {
        HistoryOp::RecordingStored { tenant, name, .. } => HistoryOp::RecordingStored {
            tenant,
            name,
            size_bytes: size,
        },
        op => op,
    }
}

/// Runs a job; for a put, the stored size (None when the file was gone).
async fn run_job(store: &BlobStore, job: &BlobJob) -> Result<Option<u64>, BlobError> {
    match job {
        BlobJob::Put { key, file, .. } => match store.put_file(key, file).await {
            Ok(size) => {
                tracing::debug!(%key, size, "blob stored");
                Ok(Some(size))
            }
            Err(BlobError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                // Deleted before it could be uploaded (a delete job follows in the queue).
                tracing::info!(%key, "local file gone before upload; skipped");
                Ok(None)
            }
            Err(e) => Err(e),
        },
        BlobJob::Delete { key } => store.delete(key).await.map(|_| None),
        BlobJob::DeletePrefix { prefix } => {
            let n = store.delete_prefix(prefix).await?;
            tracing::info!(%prefix, removed = n, "blobs removed");
            Ok(None)
        }
    }
}

mod stores;
pub use stores::Stores;

#[cfg(test)]
mod tests;
