//! Retention: what each tenant's `settings.retention` says to forget (days; 0 keeps) leaves
//! every store. It spans the call history, blob storage and the mailboxes, so it lives above
//! all three rather than inside any of them.

use crate::blob::recording_key;
use crate::history::HistoryOp;
use crate::mailstore::MailStore;
use crate::spool::{BlobJob, Stores};
use crate::tenant::TenantStore;

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

/// One retention pass over every tenant (`settings.retention`, days; 0 keeps): expired
/// call logs and recordings leave both stores, expired voicemail leaves the mailbox (and
/// through it both stores). Each removal is logged.
pub async fn retention_pass(
    stores: &Stores,
    tenants: &TenantStore,
    mail: &MailStore,
) -> RetentionReport {
    let now = unix_now();
    let mut report = RetentionReport::default();
    let snapshot = tenants.snapshot();
    for t in snapshot.tenants() {
        let id = t.id().to_string();
        let r = t.config.settings.retention.clone();
        if r.call_logs_days > 0 {
            let before_unix = now.saturating_sub(u64::from(r.call_logs_days) * 86_400);
            stores.spool.push_history(HistoryOp::CallsExpired {
                tenant: id.clone(),
                before_unix,
            });
            report.call_log_cuts += 1;
        }
        if r.recordings_days > 0 {
            let before = now.saturating_sub(u64::from(r.recordings_days) * 86_400);
            match stores.history.recordings_before(&id, before).await {
                Ok(old) => {
                    for rec in old {
                        tracing::info!(tenant = %id, name = %rec.name, "recording expired (retention)");
                        stores.spool.push_history(HistoryOp::RecordingDeleted {
                            tenant: id.clone(),
                            name: rec.name.clone(),
                        });
                        stores.spool.push_blob(BlobJob::Delete {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::recording_key;
    use crate::blob::BlobStore;
    use crate::blob::{voicemail_key, BlobOptions};
    use crate::history::tests::record;
    use crate::history::HistoryStore;
    use crate::localdb::LocalDb;
    use crate::records::call::Disposition;
    use crate::records::voicemail::{Folder, Message};
    use crate::spool::Spool;
    use crate::tenant::TenantConfig;
    use std::sync::Arc;
    use std::time::Duration;

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

        let report = retention_pass(&stores, &tenants, &mail).await;
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
