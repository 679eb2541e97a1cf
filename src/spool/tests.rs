use super::*;
use crate::blob::BlobOptions;
use crate::history::{AuditEntry, HistoryStore};

fn audit(id: &str) -> HistoryOp {
    HistoryOp::Audit {
        tenant: "t1".into(),
        entry: AuditEntry {
            id: id.into(),
            at_unix: 1,
            actor: "admin".into(),
            action: "PUT".into(),
            target: "/x".into(),
            status: 200,
        },
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn history_ops_wait_for_a_failing_store_then_arrive_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    for i in 0..30 {
        spool.push_history(audit(&format!("a{i}")));
    }
    until("the writer", || {
        spool.status.history.depth.load(Ordering::Relaxed) == 30
    })
    .await;
    // A store that cannot open its file: every attempt fails, nothing leaves the spool.
    let broken = Arc::new(
        HistoryStore::open(
            &format!("sqlite://{}/missing/dir/h.sqlite", dir.path().display()),
            1,
        )
        .unwrap(),
    );
    let task = tokio::spawn(drain_history(spool.clone(), broken));
    until("a failure", || spool.status.history.failing_for().is_some()).await;
    task.abort();
    assert_eq!(spool.status.history.depth.load(Ordering::Relaxed), 30);
    assert!(!entries(&spool.history_dir).is_empty());

    // The store comes back (here: a working one); everything arrives, exactly once.
    let url = format!("sqlite://{}", dir.path().join("h.sqlite").display());
    let store = Arc::new(HistoryStore::open(&url, 1).unwrap());
    // One batch was already applied before a "crash" left its file behind: replays are no-ops.
    store.apply(&[audit("a0"), audit("a1")]).await.unwrap();
    let task = tokio::spawn(drain_history(spool.clone(), store.clone()));
    until("the drain", || entries(&spool.history_dir).is_empty()).await;
    task.abort();
    assert_eq!(store.counts("t1").await.unwrap()[3], 30);
    spool.refresh_figures();
    assert_eq!(spool.status.history.depth.load(Ordering::Relaxed), 0);
    assert!(spool.status.history.failing_for().is_none());
}

#[tokio::test]
async fn spool_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        spool.push_history(audit("b1"));
        until("the writer", || !entries(&spool.history_dir).is_empty()).await;
    }
    // A new process opens the same folder and finds the entry waiting.
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    assert_eq!(spool.status.history.depth.load(Ordering::Relaxed), 1);
    let url = format!("sqlite://{}", dir.path().join("h.sqlite").display());
    let store = Arc::new(HistoryStore::open(&url, 1).unwrap());
    let task = tokio::spawn(drain_history(spool.clone(), store.clone()));
    assert!(spool.wait_empty(Duration::from_secs(5)).await);
    task.abort();
    assert_eq!(store.counts("t1").await.unwrap()[3], 1);
}

#[tokio::test]
async fn blob_jobs_upload_in_order_and_remove_local_copies() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    let blobs = BlobStore::open(
        &format!("file://{}", dir.path().join("blobs").display()),
        &BlobOptions::default(),
    )
    .unwrap();
    let a = dir.path().join("a.wav");
    let b = dir.path().join("b.wav");
    std::fs::write(&a, b"aaaa").unwrap();
    std::fs::write(&b, b"bbbb").unwrap();
    let put = |key: &str, file: &Path, remove_local| BlobJob::Put {
        key: key.into(),
        file: file.into(),
        remove_local,
        not_before_ms: 0,
        then: None,
    };
    spool.push_blob(put("tenants/t1/recordings/a.wav", &a, true));
    spool.push_blob(put("tenants/t1/voicemail/100/b.wav", &b, false));
    spool.push_blob(BlobJob::Delete {
        key: "tenants/t1/voicemail/100/b.wav".into(),
    });
    // A job whose file is gone (deleted before upload) is skipped, not retried forever.
    spool.push_blob(put(
        "tenants/t1/recordings/gone.wav",
        &dir.path().join("gone.wav"),
        true,
    ));
    let task = tokio::spawn(drain_blobs(spool.clone(), blobs.clone()));
    assert!(spool.wait_empty(Duration::from_secs(10)).await);
    task.abort();
    assert_eq!(
        blobs.list("tenants/t1/").await.unwrap(),
        vec!["tenants/t1/recordings/a.wav".to_string()]
    );
    assert!(!a.exists(), "recording's local copy removed after upload");
    assert!(b.exists(), "voicemail's local copy kept");
    assert_eq!(
        &blobs
            .get_bytes("tenants/t1/recordings/a.wav")
            .await
            .unwrap()[..],
        b"aaaa"
    );
}

#[test]
fn entry_names_sort_in_push_order_and_carry_counts() {
    let a = PathBuf::from(entry_name(3));
    let b = PathBuf::from(entry_name(1));
    assert!(a < b);
    assert_eq!(name_figures(&a).0, 3);
    assert!(name_figures(&a).1 > 1_600_000_000_000);
}

#[tokio::test]
async fn a_refusing_disk_keeps_entries_and_says_so_until_it_works() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    spool.push_history(audit("before"));
    assert_eq!(spool.synced().await, Ok(()));
    assert_eq!(entries(&spool.history_dir).len(), 1);
    // The queue folder becomes unwritable (as on a full disk: every create fails).
    let hist = spool.history_dir.clone();
    let aside = dir.path().join("aside");
    std::fs::rename(&hist, &aside).unwrap();
    std::fs::write(&hist, b"not a folder").unwrap();
    for i in 0..3 {
        spool.push_history(audit(&format!("during{i}")));
    }
    let err = spool
        .synced()
        .await
        .expect_err("the write cannot be durable");
    assert!(err.contains("kept in memory"), "{err}");
    assert!(spool.status.disk.failing_for().is_some());
    // What was spooled before is untouched; the disk recovers and the kept entries land.
    std::fs::remove_file(&hist).unwrap();
    std::fs::rename(&aside, &hist).unwrap();
    until("the retry", || entries(&hist).len() == 2).await;
    assert_eq!(spool.synced().await, Ok(()));
    assert!(spool.status.disk.failing_for().is_none());
    let all: Vec<HistoryOp> = entries(&hist)
        .iter()
        .flat_map(|f| serde_json::from_slice::<Vec<HistoryOp>>(&std::fs::read(f).unwrap()).unwrap())
        .collect();
    assert_eq!(all.len(), 4);
}
