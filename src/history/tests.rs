//! One suite, run against SQLite always and against PostgreSQL when
//! `SWITCHYARD_TEST_POSTGRES_URL` names a server (`.ci/run` sets it), each run in a database
//! of its own.

use super::*;
use crate::records::call::{EndedBy, LegRecord, Quality};

pub(crate) fn record(
    tenant: &str,
    id: &str,
    start: u64,
    disp: Disposition,
    user: Option<&str>,
) -> CallRecord {
    CallRecord {
        id: id.into(),
        tenant: tenant.into(),
        call_id: format!("{id}@test"),
        direction: if user.is_some() {
            Direction::Internal
        } else {
            Direction::Inbound
        },
        from: user.unwrap_or("+15551234").into(),
        from_user: user.map(String::from),
        to: "500".into(),
        start_unix: start,
        answer_unix: (disp == Disposition::Answered).then_some(start + 2),
        end_unix: start + 12,
        duration_secs: 12,
        billed_secs: if disp == Disposition::Answered { 10 } else { 0 },
        disposition: disp,
        ended_by: EndedBy::Caller,
        hangup_cause: crate::records::call::HangupCause::CallerHangup,
        sip_code: None,
        path: "ivr:main:1 > user:100".into(),
        voicemail: None,
        recording: None,
        quality: (disp == Disposition::Answered).then_some(Quality {
            packets_sent: 500,
            packets_received: 498,
            packets_lost: 2,
            jitter_ms: 1.5,
            mos: 4.2,
        }),
        legs: vec![LegRecord {
            leg: 7,
            start_unix: start,
            answer_unix: Some(start + 2),
            end_unix: Some(start + 12),
            ended_by: Some(EndedBy::Caller),
            sip_code: None,
            quality: None,
        }],
    }
}

async fn suite(store: HistoryStore) {
    store.ping().await.unwrap();
    let day = 86_400 * 20_000;
    let mut ops = vec![
        HistoryOp::CallRecord(Box::new(record(
            "t1",
            "a",
            day + 10,
            Disposition::Answered,
            Some("100"),
        ))),
        HistoryOp::CallRecord(Box::new(record(
            "t1",
            "b",
            day + 20,
            Disposition::NoAnswer,
            Some("100"),
        ))),
        HistoryOp::CallRecord(Box::new(record(
            "t1",
            "c",
            day + 86_400,
            Disposition::Answered,
            Some("101"),
        ))),
        HistoryOp::CallRecord(Box::new(record(
            "t1",
            "d",
            day + 86_400,
            Disposition::Busy,
            None,
        ))),
        HistoryOp::CallRecord(Box::new(record(
            "t2",
            "e",
            day + 30,
            Disposition::Answered,
            Some("100"),
        ))),
    ];
    store.apply(&ops).await.unwrap();
    // A replayed batch (crash after commit, before the spool file went) changes nothing.
    ops.truncate(2);
    store.apply(&ops).await.unwrap();
    assert_eq!(store.counts("t1").await.unwrap()[0], 4);
    assert_eq!(store.counts("t2").await.unwrap()[0], 1);

    // Newest first, ties by id, and pages follow the cursor.
    let all = store
        .calls("t1", &CallFilter::default(), None, 10)
        .await
        .unwrap();
    let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["d", "c", "b", "a"]);
    assert_eq!(
        all[3],
        record("t1", "a", day + 10, Disposition::Answered, Some("100")),
        "round trip"
    );
    let p1 = store
        .calls("t1", &CallFilter::default(), None, 3)
        .await
        .unwrap();
    let cur = CallCursor::after(p1.last().unwrap());
    assert_eq!(CallCursor::decode(&cur.encode()), Some(cur.clone()));
    let p2 = store
        .calls("t1", &CallFilter::default(), Some(&cur), 3)
        .await
        .unwrap();
    assert_eq!(p2.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["a"]);

    // Filters.
    let f = CallFilter {
        user: Some("100".into()),
        ..CallFilter::default()
    };
    assert_eq!(store.calls("t1", &f, None, 10).await.unwrap().len(), 2);
    let f = CallFilter {
        number: Some("+15551234".into()),
        ..CallFilter::default()
    };
    assert_eq!(store.calls("t1", &f, None, 10).await.unwrap().len(), 1);
    let f = CallFilter {
        from: Some((day + 15) as i64),
        to: Some((day + 86_400) as i64),
        ..CallFilter::default()
    };
    assert_eq!(store.calls("t1", &f, None, 10).await.unwrap()[0].id, "b");
    let f = CallFilter {
        disposition: Some(Disposition::Busy),
        direction: Some(Direction::Inbound),
        ..CallFilter::default()
    };
    assert_eq!(store.calls("t1", &f, None, 10).await.unwrap()[0].id, "d");
    // Tenant isolation: another tenant's id is not found.
    assert!(store.call("t1", "e").await.unwrap().is_none());
    assert_eq!(store.call("t2", "e").await.unwrap().unwrap().id, "e");

    // Aggregates come from the database.
    let s = store
        .call_stats("t1", &CallFilter::default())
        .await
        .unwrap();
    assert_eq!((s.calls, s.answered), (4, 2));
    assert!((s.answer_rate - 0.5).abs() < 1e-9);
    assert!((s.average_duration_secs - 10.0).abs() < 1e-9);
    assert_eq!(s.average_mos, Some(4.2));
    assert_eq!(s.per_day.len(), 2);
    assert_eq!((s.per_day[0].calls, s.per_day[0].answered), (2, 1));
    assert_eq!(s.per_day[1].day, "2024-10-05");
    assert_eq!(
        s.per_user
            .iter()
            .map(|u| (u.user.as_str(), u.calls))
            .collect::<Vec<_>>(),
        [("100", 2), ("101", 1)]
    );
    let empty = store
        .call_stats("nobody", &CallFilter::default())
        .await
        .unwrap();
    assert_eq!((empty.calls, empty.average_mos), (0, None));

    // Voicemail and recordings: upserts and deletes, by tenant.
    let msg = Message {
        id: "m1".into(),
        mailbox: "100".into(),
        caller: "101".into(),
        received_unix: day,
        duration_ms: 2500,
        folder: Folder::New,
        call: 3,
    };
    store
        .apply(&[
            HistoryOp::Voicemail {
                tenant: "t1".into(),
                message: msg.clone(),
            },
            HistoryOp::Voicemail {
                tenant: "t1".into(),
                message: Message {
                    folder: Folder::Saved,
                    ..msg.clone()
                },
            },
            HistoryOp::Recording {
                tenant: "t1".into(),
                recording: Recording {
                    name: "r1.wav".into(),
                    call_log: Some("a".into()),
                    created_unix: day,
                    duration_ms: 1000,
                    size_bytes: 32044,
                },
            },
            HistoryOp::Audit {
                tenant: "t1".into(),
                entry: AuditEntry {
                    id: "x1".into(),
                    at_unix: day,
                    actor: "admin".into(),
                    action: "PUT".into(),
                    target: "/v1/tenants/t1/users/100".into(),
                    status: 200,
                },
            },
        ])
        .await
        .unwrap();
    let vm = store.voicemail("t1").await.unwrap();
    assert_eq!(vm.len(), 1);
    assert_eq!(vm[0].folder, Folder::Saved);
    assert!(store.voicemail("t2").await.unwrap().is_empty());
    assert_eq!(store.recordings("t1").await.unwrap()[0].size_bytes, 32044);
    assert!(store.recording("t2", "r1.wav").await.unwrap().is_none());
    assert_eq!(
        store.recordings_before("t1", day + 1).await.unwrap().len(),
        1
    );
    assert_eq!(store.audit("t1", 10).await.unwrap()[0].status, 200);

    // Retention and tenant removal.
    store
        .apply(&[HistoryOp::CallsExpired {
            tenant: "t1".into(),
            before_unix: day + 86_400,
        }])
        .await
        .unwrap();
    assert_eq!(store.counts("t1").await.unwrap()[0], 2);
    assert_eq!(
        store.counts("t2").await.unwrap()[0],
        1,
        "other tenant untouched"
    );
    store
        .apply(&[
            HistoryOp::VoicemailDeleted {
                tenant: "t1".into(),
                mailbox: "100".into(),
                id: "m1".into(),
            },
            HistoryOp::RecordingDeleted {
                tenant: "t1".into(),
                name: "r1.wav".into(),
            },
        ])
        .await
        .unwrap();
    assert_eq!(store.counts("t1").await.unwrap(), [2, 0, 0, 1]);
    store
        .apply(&[HistoryOp::TenantDeleted {
            tenant: "t1".into(),
        }])
        .await
        .unwrap();
    assert_eq!(store.counts("t1").await.unwrap(), [0, 0, 0, 0]);
    assert_eq!(store.counts("t2").await.unwrap()[0], 1);

    // Opening again finds the schema in place.
    assert_eq!(store.stored_version().await.unwrap(), schema_version());
}

#[tokio::test]
async fn sqlite_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("h.sqlite").display());
    suite(HistoryStore::open(&url, 4).unwrap()).await;
}

#[tokio::test]
async fn postgres_suite() {
    let Ok(base) = std::env::var("SWITCHYARD_TEST_POSTGRES_URL") else {
        crate::test_support::peer_missing(
            "PostgreSQL (SWITCHYARD_TEST_POSTGRES_URL; integration/services/start.sh)",
        );
        return;
    };
    let (url, drop) = fresh_postgres(&base).await;
    suite(HistoryStore::open(&url, 4).unwrap()).await;
    drop.await;
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("h.sqlite").display());
    let s = HistoryStore::open(&url, 1).unwrap();
    s.ping().await.unwrap();
    sqlx::query("INSERT INTO switchyard_schema (version, applied_unix) VALUES (999, 0)")
        .execute(&s.pool)
        .await
        .unwrap();
    s.close().await;
    let s = HistoryStore::open(&url, 1).unwrap();
    assert!(matches!(
        s.ping().await,
        Err(HistoryError::NewerSchema { found: 999, .. })
    ));
}

#[test]
fn passwords_are_redacted() {
    assert_eq!(
        redact_url("postgres://u:secret@db:5432/x"),
        "postgres://u:***@db:5432/x"
    );
    assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
}

/// A database of its own on the server at `base` (a URL naming any database); the future
/// drops it.
pub(crate) async fn fresh_postgres(base: &str) -> (String, impl std::future::Future<Output = ()>) {
    sqlx::any::install_default_drivers();
    let name = format!("sy_test_{:016x}", rand::random::<u64>());
    let admin = sqlx::AnyPool::connect(base).await.unwrap();
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let url = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => format!("{}/{name}", &base[..i]),
        _ => format!("{base}/{name}"),
    };
    let n = name.clone();
    (url, async move {
        let _ = sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {n} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
    })
}

/// Nodes of a cluster starting together on one fresh database: every one comes up, and the
/// schema is migrated once.
#[tokio::test]
async fn nodes_starting_together_migrate_once() {
    let Ok(base) = std::env::var("SWITCHYARD_TEST_POSTGRES_URL") else {
        crate::test_support::peer_missing(
            "PostgreSQL (SWITCHYARD_TEST_POSTGRES_URL; integration/services/start.sh)",
        );
        return;
    };
    let (url, drop) = fresh_postgres(&base).await;
    let stores: Vec<HistoryStore> = (0..4)
        .map(|_| HistoryStore::open(&url, 2).unwrap())
        .collect();
    let results = futures_util::future::join_all(stores.iter().map(|s| s.ready())).await;
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    let rows = sqlx::query("SELECT COUNT(*) AS n FROM switchyard_schema")
        .fetch_one(&stores[0].pool)
        .await
        .unwrap();
    assert_eq!(
        rows.try_get::<i64, _>("n").unwrap(),
        MIGRATIONS.len() as i64
    );
    for s in stores {
        s.close().await;
    }
    drop.await;
}
