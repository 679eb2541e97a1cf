//! [`Stores`]: the history store, blob storage and the spool in front of them, as the rest of
//! the server sees them. Writes go through the spool (or straight to the store when nothing
//! waits in the spool and the store answers, so an admin sees their own change at once);
//! reads go to the stores.

use super::{BlobJob, Spool};
use crate::blob::{recording_key, tenant_prefix, BlobStore};
use crate::history::{stereo_wav_ms, HistoryOp, HistoryStore, Recording};
use crate::records::call::CallRecord;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct Stores {
    /// The spool every write goes through.
    pub spool: Spool,
    /// The history store, for reads.
    pub history: Arc<HistoryStore>,
    /// Blob storage, for reads.
    pub blobs: BlobStore,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Stores {
    /// Starts the two drain tasks (on the current tokio runtime).
    pub fn spawn_drains(&self) {
        tokio::spawn(super::drain_history(
            self.spool.clone(),
            self.history.clone(),
        ));
        tokio::spawn(super::drain_blobs(self.spool.clone(), self.blobs.clone()));
    }

    /// A finished call's record.
    pub fn call_finished(&self, rec: CallRecord) {
        self.spool
            .push_history(HistoryOp::CallRecord(Box::new(rec)));
    }

    /// A finished call recording at `path` (`UNIX-CALL-TAG.wav`): its metadata now (from the
    /// file as it is), its audio to blob storage, and the metadata again with the stored size.
    pub fn recording_finished(&self, tenant: &str, call_log: &str, path: &Path) {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return;
        };
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(44);
        let created_unix = name
            .split('-')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(unix_now);
        let recording = Recording {
            name: name.clone(),
            call_log: Some(call_log.to_string()),
            created_unix,
            duration_ms: stereo_wav_ms(size),
            size_bytes: size,
        };
        self.spool.push_history(HistoryOp::Recording {
            tenant: tenant.to_string(),
            recording,
        });
        self.spool.push_blob(BlobJob::Put {
            key: recording_key(tenant, &name),
            file: path.to_path_buf(),
            remove_local: true,
            not_before_ms: unix_now() * 1000 + 2000,
            then: Some(HistoryOp::RecordingStored {
                tenant: tenant.to_string(),
                name,
                size_bytes: size,
            }),
        });
    }

    /// Writes `op` to the history store now when nothing older waits in the spool and the
    /// store answers within a few seconds; otherwise queues it.
    pub async fn write_now(&self, op: HistoryOp) {
        if self.spool.history_idle() {
            let ops = [op];
            match tokio::time::timeout(Duration::from_secs(3), self.history.apply(&ops)).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => tracing::warn!(error = %e, "history store write failed; spooled"),
                Err(_) => tracing::warn!("history store slow; write spooled"),
            }
            let [op] = ops;
            self.spool.push_history(op);
        } else {
            self.spool.push_history(op);
        }
    }

    /// A recording deleted: its metadata and audio (and a local copy not yet uploaded).
    pub async fn delete_recording(&self, tenant: &str, name: &str, local: Option<PathBuf>) {
        self.write_now(HistoryOp::RecordingDeleted {
            tenant: tenant.to_string(),
            name: name.to_string(),
        })
        .await;
        if let Some(p) = local {
            let _ = std::fs::remove_file(p);
        }
        self.spool.push_blob(BlobJob::Delete {
            key: recording_key(tenant, name),
        });
    }

    /// A tenant deleted: everything it had in both stores.
    pub fn tenant_deleted(&self, tenant: &str) {
        self.spool.push_history(HistoryOp::TenantDeleted {
            tenant: tenant.to_string(),
        });
        self.spool.push_blob(BlobJob::DeletePrefix {
            prefix: tenant_prefix(tenant),
        });
    }

    /// Why the node is not ready, when a store has been failing longer than `after`.
    pub fn failing(&self, after: Duration) -> Option<String> {
        let s = &self.spool.status;
        // The spool's own disk refusing writes is not ready at once: nothing new is durable.
        if s.disk.failing_for().is_some() {
            return Some(format!("spool disk failing: {}", s.disk.last_error()));
        }
        for (what, q) in [("history store", &s.history), ("blob storage", &s.blob)] {
            if let Some(d) = q.failing_for().filter(|d| *d >= after) {
                return Some(format!(
                    "{what} failing for {} s: {}",
                    d.as_secs(),
                    q.last_error()
                ));
            }
        }
        None
    }
}
