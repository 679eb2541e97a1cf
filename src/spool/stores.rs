//! [`Stores`]: the history store, blob storage and the spool in front of them, as the rest of
//! the server sees them. Writes go through the spool (or straight to the store when nothing
//! waits in the spool and the store answers, so an admin sees their own change at once);
//! reads go to the stores.

use super::{BlobJob, Spool};
use crate::apps::mailstore::MailStore;
use crate::blob::{recording_key, tenant_prefix, BlobStore};
use crate::call::cdr::CallRecord;
use crate::history::{stereo_wav_ms, HistoryOp, HistoryStore, Recording};
use crate::tenant::TenantStore;
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

/// What one retention pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    /// Tenants whose call logs were cut.
    pub call_log_cuts: usize,
    /// Recordings removed.
    pub recordings: usize,
    /// Voicemail messages removed.
    pub voicemail: usize,
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

    /// One retention pass over every tenant (`settings.retention`, days; 0 keeps): expired
    /// call logs and recordings leave both stores, expired voicemail leaves the mailbox (and
    /// through it both stores). Each removal is logged.
    pub async fn retention_pass(&self, tenants: &TenantStore, mail: &MailStore) -> RetentionReport {
        let now = unix_now();
        let mut report = RetentionReport::default();
        let snapshot = tenants.snapshot();
        for t in snapshot.tenants() {
            let id = t.id().to_string();
            let r = t.config.settings.retention.clone();
            if r.call_logs_days > 0 {
                let before_unix = now.saturating_sub(u64::from(r.call_logs_days) * 86_400);
                self.spool.push_history(HistoryOp::CallsExpired {
                    tenant: id.clone(),
                    before_unix,
                });
                report.call_log_cuts += 1;
            }
            if r.recordings_days > 0 {
                let before = now.saturating_sub(u64::from(r.recordings_days) * 86_400);
                match self.history.recordings_before(&id, before).await {
                    Ok(old) => {
                        for rec in old {
                            tracing::info!(tenant = %id, name = %rec.name, "recording expired (retention)");
                            self.spool.push_history(HistoryOp::RecordingDeleted {
                                tenant: id.clone(),
                                name: rec.name.clone(),
                            });
                            self.spool.push_blob(BlobJob::Delete {
                                key: recording_key(&id, &rec.name),
                            });
                            report.recordings += 1;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %id, error = %e, "retention: recordings skipped this pass")
                    }
                }
            }
            if r.voicemail_days > 0 {
                let before = now.saturating_sub(u64::from(r.voicemail_days) * 86_400);
                for mb in &t.config.mailboxes {
                    let Ok(list) = mail.list(&id, &mb.id) else {
                        continue;
                    };
                    for m in list.iter().filter(|m| m.received_unix < before) {
                        if mail.delete(&id, &mb.id, &m.id).is_ok() {
                            tracing::info!(tenant = %id, mailbox = %mb.id, id = %m.id, "voicemail expired (retention)");
                            report.voicemail += 1;
                        }
                    }
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::mailstore::{Folder, Message};
    use crate::blob::{voicemail_key, BlobOptions};
    use crate::call::cdr::Disposition;
    use crate::history::tests::record;
    use crate::localdb::LocalDb;
    use crate::tenant::TenantConfig;

    #[tokio::test]
    async fn retention_removes_expired_items_from_both_stores_and_tenant_deletion_everything() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores {
            spool: Spool::open(&dir.path().join("spool")).unwrap(),
            history: Arc::new(
                HistoryStore::open(
                    &format!("sqlite://{}", dir.path().join("h.sqlite").display()),
                    1,
                )
                .unwrap(),
            ),
            blobs: BlobStore::open(
                &format!("file://{}", dir.path().join("blobs").display()),
                &BlobOptions::default(),
            )
            .unwrap(),
        };
        stores.spawn_drains();
        let db = LocalDb::open(dir.path()).unwrap();
        let tenants = TenantStore::open(db, None).unwrap();
        let mut demo: TenantConfig = serde_json::from_str(crate::server::DEMO_TENANT).unwrap();
        demo.settings.retention.call_logs_days = 30;
        demo.settings.retention.recordings_days = 30;
        demo.settings.retention.voicemail_days = 30;
        tenants.put(demo).unwrap();
        let mail = MailStore::new(dir.path().join("voicemail")).with_spool(stores.spool.clone());

        let now = unix_now();
        let old = now - 40 * 86_400;
        let recent = now - 86_400;
        for (id, start) in [("old", old), ("new", recent)] {
            stores.call_finished(record("demo", id, start, Disposition::Answered, None));
            let path = dir.path().join(format!("{start}-1-1.wav"));
            std::fs::write(&path, vec![0u8; 44 + 3200]).unwrap();
            stores.recording_finished("demo", id, &path);
            let (mid, wav) = mail.new_message("demo", "100", start, 1).unwrap();
            std::fs::write(&wav, vec![0u8; 44 + 1600]).unwrap();
            mail.commit(
                "demo",
                &Message {
                    id: mid,
                    mailbox: "100".into(),
                    caller: "+15551234".into(),
                    received_unix: start,
                    duration_ms: 100,
                    folder: Folder::New,
                    call: 1,
                },
            )
            .unwrap();
        }
        assert!(stores.spool.wait_empty(Duration::from_secs(20)).await);
        assert_eq!(stores.history.counts("demo").await.unwrap()[..3], [2, 2, 2]);
        assert_eq!(stores.blobs.list("tenants/demo/").await.unwrap().len(), 4);

        let report = stores.retention_pass(&tenants, &mail).await;
        assert_eq!(
            report,
            RetentionReport {
                call_log_cuts: 1,
                recordings: 1,
                voicemail: 1
            }
        );
        assert!(stores.spool.wait_empty(Duration::from_secs(20)).await);
        let calls = stores
            .history
            .calls("demo", &Default::default(), None, 10)
            .await
            .unwrap();
        assert_eq!(
            calls.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["new"]
        );
        assert_eq!(stores.history.counts("demo").await.unwrap()[..3], [1, 1, 1]);
        let left = mail.list("demo", "100").unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].received_unix, recent);
        let keys = stores.blobs.list("tenants/demo/").await.unwrap();
        assert_eq!(
            keys,
            vec![
                recording_key("demo", &format!("{recent}-1-1.wav")),
                voicemail_key("demo", "100", &left[0].id),
            ]
        );

        // A deleted tenant leaves nothing behind in either store.
        stores.tenant_deleted("demo");
        assert!(stores.spool.wait_empty(Duration::from_secs(20)).await);
        assert_eq!(stores.history.counts("demo").await.unwrap(), [0, 0, 0, 0]);
        assert!(stores.blobs.list("tenants/demo/").await.unwrap().is_empty());
    }
}
