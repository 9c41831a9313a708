//! The SQLite store's own tests: what only this backend does (group
//! commit, checkpoints, the dedup index, read-only disks, restarts after a
//! panic; the schema's are beside it).
//! What every backend must do is in `tests/it/store.rs`.

use std::collections::HashMap;

use rusqlite::params;

use super::*;
use crate::event::Kind;
use crate::store::{Admin, Unrouted};

pub(super) fn event(webhook_id: &str) -> NewEvent {
    NewEvent {
        webhook_id: webhook_id.into(),
        object_id: "p1".into(),
        kind: Kind::Prediction,
        status: crate::event::Status::Succeeded,
        model: Some("acme/m".into()),
        query: "team=vision".into(),
        body: bytes::Bytes::from_static(br#"{"id":"p1","status":"succeeded"}"#),
        received_at_ms: 1_700_000_000_000,
        routing: crate::store::Routing {
            lifecycle: None,
            groups: Vec::new(),
            after: Vec::new(),
            dedup_key: format!("webhook:{webhook_id}"),
            deliveries: Vec::new(),
            expires_at_ms: 1_700_000_600_000,
        },
    }
}

#[tokio::test]
async fn insert_dedup_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/relay.db");
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let first = store.insert(event("msg_a")).await.unwrap();
    let Inserted::New(seq) = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        store.insert(event("msg_a")).await.unwrap(),
        Inserted::Duplicate(seq)
    );
    assert!(matches!(
        store.insert(event("msg_b")).await.unwrap(),
        Inserted::New(_)
    ));
    let recent = store.recent(10).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].webhook_id, "msg_b");
    assert_eq!(recent[1].query, "team=vision");
    store.health().await.unwrap();
    store.close().await;
    assert!(matches!(
        store.insert(event("msg_c")).await,
        Err(StoreError::Closed)
    ));
    // Beside the store, as the command line reads it.
    let beside = crate::store::sqlite::beside::Beside::open(&path).unwrap();
    assert_eq!(beside.recent(1).await.unwrap()[0].webhook_id, "msg_b");
}

#[tokio::test]
async fn deliveries_routed_at_intake_share_the_event_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let routed = |webhook_id: &str| NewEvent {
        routing: crate::store::Routing {
            lifecycle: None,
            groups: Vec::new(),
            after: Vec::new(),
            dedup_key: "p1:succeeded".into(),
            deliveries: vec![
                ("done".into(), "slack".into()),
                ("done".into(), "mail".into()),
            ],
            expires_at_ms: 1_700_000_600_000,
        },
        ..event(webhook_id)
    };
    let Inserted::New(first) = store.insert(routed("msg_a")).await.unwrap() else {
        panic!("not new")
    };
    // The same webhook again, then another webhook carrying the same final
    // state: neither creates a delivery.
    store.insert(routed("msg_a")).await.unwrap();
    store.insert(routed("msg_b")).await.unwrap();
    // Routed to no notifier: stored, marked routed, no delivery.
    store.insert(event("msg_c")).await.unwrap();
    store.close().await;

    let conn = open_for_cli(&path).unwrap();
    let deliveries: Vec<(i64, String, String, i64)> = conn
        .prepare("SELECT event_seq, notifier, state, expires_at_ms FROM deliveries ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        deliveries,
        [
            (first, "slack".into(), "pending".into(), 1_700_000_600_000),
            (first, "mail".into(), "pending".into(), 1_700_000_600_000),
        ]
    );
    assert!(
        outbox::unrouted(&conn, 10).unwrap().is_empty(),
        "every event is marked routed in its own commit"
    );
}

/// Frames (4 KB pages and their headers) the WAL file of `db` has room for.
fn wal_frames(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).unwrap().len() / (4096 + 24)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_keep_the_wal_short_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    let options = SqliteOptions {
        checkpoints: CheckpointLimits {
            restart: 100,
            max: 400,
        },
        ..SqliteOptions::default()
    };
    let store = Arc::new(SqliteStore::open(&path, options).unwrap());
    // About a page per event, so thousands of WAL frames in all.
    let body = bytes::Bytes::from(format!(r#"{{"id":"p1","logs":"{}"}}"#, "x".repeat(3000)));
    for round in 0..30 {
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let store = store.clone();
                let event = NewEvent {
                    body: body.clone(),
                    ..event(&format!("msg_{round}_{i}"))
                };
                tokio::spawn(async move { store.insert(event).await })
            })
            .collect();
        for task in tasks {
            assert!(matches!(task.await.unwrap(), Ok(Inserted::New(_))));
        }
    }
    // 3,000 pages were written; a WAL that never restarted would hold them
    // all.
    let frames = wal_frames(&path);
    assert!(frames < 1_500, "the WAL holds {frames} frames");
    store.close().await;
    drop(store);
    let conn = open_for_cli(&path).unwrap();
    let count: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 3_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_other_than_inserts_are_checkpointed_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    // Events stored unrouted, as an older version left them.
    {
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &path, None).unwrap();
        let tx = conn.transaction().unwrap();
        let body = "x".repeat(3000);
        for i in 0..6_000 {
            tx.execute(
                "INSERT INTO events (webhook_id, object_id, kind, status, query, body, received_at_ms)
                 VALUES (?1, 'p', 'prediction', 'succeeded', '', ?2, 1000)",
                params![format!("msg_{i}"), body],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let options = SqliteOptions {
        checkpoints: CheckpointLimits {
            restart: 100,
            max: 400,
        },
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&path, options).unwrap();
    // The router routes them all (every row rewritten), and no webhook
    // arrives meanwhile.
    for first in (1..=6_000).step_by(250) {
        let plans = (first..first + 250)
            .map(|seq| RoutingPlan {
                event_seq: seq,
                routing: crate::store::Routing {
                    lifecycle: None,
                    groups: Vec::new(),
                    after: Vec::new(),
                    dedup_key: format!("k{seq}"),
                    deliveries: vec![],
                    expires_at_ms: 0,
                },
            })
            .collect();
        store.record_routing(plans).await.unwrap();
    }
    assert!(store.unrouted(1).await.unwrap().is_empty());
    // 6,000 pages were rewritten; a WAL that never restarted would hold
    // them all.
    let frames = wal_frames(&path);
    assert!(frames < 3_000, "the WAL holds {frames} frames");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    // Hold the write lock so the writer stalls on its first batch while the
    // other inserts queue up behind it, as they do under load during an fsync.
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.insert(event(&format!("msg_{i}"))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    other.execute_batch("COMMIT").unwrap();
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Ok(Inserted::New(_))));
    }
    let stats = store.writer_stats();
    assert_eq!(stats.events, 100);
    assert!(
        stats.commits <= 3,
        "100 waiting inserts took {} commits",
        stats.commits
    );
}

/// After a failed write, health stays failed for `recheck_after`, then
/// checks with a write of its own: it recovers by itself once the store
/// takes writes again, with no webhook to commit, and until then stays
/// failed with the original reason.
#[tokio::test]
async fn health_rechecks_with_a_write_of_its_own_after_a_failed_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    let recheck = Duration::from_millis(300);
    let options = SqliteOptions {
        busy_timeout: Duration::from_millis(50),
        recheck_after: recheck,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&path, options).unwrap();
    store.insert(event("msg_before")).await.unwrap();
    store.health().await.unwrap();
    let version = |c: &Connection| -> i64 {
        c.query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap()
    };

    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert!(matches!(
        store.insert(event("msg_locked")).await,
        Err(StoreError::Write(_))
    ));
    let Err(StoreError::Write(first)) = store.health().await else {
        panic!("health is failed right after a failed write")
    };
    // Past the interval, the check's own write fails too: still failed,
    // with the reason the webhook got.
    tokio::time::sleep(recheck).await;
    let Err(StoreError::Write(again)) = store.health().await else {
        panic!("health is failed while the lock is held")
    };
    assert_eq!(again.to_string(), first.to_string());

    // Writable again: not said at once (the failure was just confirmed),
    // then said without any webhook, by a commit that changed nothing.
    other.execute_batch("ROLLBACK").unwrap();
    let before = version(&other);
    assert!(store.health().await.is_err());
    assert_eq!(version(&other), before, "no check within the interval");
    tokio::time::sleep(recheck).await;
    store.health().await.unwrap();
    assert_ne!(version(&other), before, "the check committed a write");
    let upto: i64 = other
        .query_row("SELECT seq FROM seen_upto", [], |r| r.get(0))
        .unwrap();
    assert_eq!(upto, 0, "dedup's mark is where it was");
    assert!(matches!(
        store.insert(event("msg_before")).await,
        Ok(Inserted::Duplicate(_))
    ));
    store.close().await;
}

/// (A store write-protected at start, then fixed, is in tests/it/intake/lasting.rs:
/// it needs `chattr`, as root bypasses permissions.)
#[test]
fn a_read_only_connection_is_opened_again_at_most_once_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    let reopen = Reopen::new("test", &path, Duration::from_secs(1));
    let writable = Connection::open(&path).unwrap();
    assert!(
        reopen
            .if_read_only(&writable, |p| Connection::open(p), |_| Ok(()))
            .is_none(),
        "a writable connection is kept"
    );
    let held =
        Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let fresh = reopen
        .if_read_only(
            &held,
            |p| Connection::open(p),
            |c| c.pragma_update(None, "wal_autocheckpoint", 0),
        )
        .expect("opened again");
    assert!(!fresh.is_readonly(rusqlite::MAIN_DB).unwrap());
    let pragma =
        |name: &str| -> i64 { fresh.pragma_query_value(None, name, |r| r.get(0)).unwrap() };
    assert_eq!(pragma("synchronous"), 2, "configured like the first");
    assert_eq!(pragma("foreign_keys"), 1);
    assert_eq!(pragma("wal_autocheckpoint"), 0, "then set up by the thread");
    assert!(
        reopen
            .if_read_only(&held, |p| Connection::open(p), |_| Ok(()))
            .is_none(),
        "not again within a second"
    );
    // Still read-only when opened: nothing to swap in.
    let later = Reopen::new("test", &path, Duration::from_secs(1));
    let read_only_open =
        |p: &Path| Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY);
    assert!(
        later
            .if_read_only(&held, read_only_open, |_| Ok(()))
            .is_none()
    );
    // The thread's own set-up failing: nothing to swap in either.
    let failing = Reopen::new("test", &path, Duration::from_secs(1));
    assert!(
        failing
            .if_read_only(
                &held,
                |p| Connection::open(p),
                |c| c.execute_batch("no such statement"),
            )
            .is_none()
    );
}

/// Random ids, many repeated, through small dedup batches and reopens:
/// each answer must be what a plain set of seen ids says, and the first
/// event's seq for a repeat.
#[tokio::test]
async fn dedup_agrees_with_a_model_across_batches_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    let options = SqliteOptions {
        dedup_batch: 7,
        ..SqliteOptions::default()
    };
    let mut model: HashMap<String, i64> = HashMap::new();
    let mut store = SqliteStore::open(&path, options.clone()).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..2_000 {
        // xorshift: reproducible without a dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let id = format!("msg_{}", state % 400);
        let answers: Vec<_> =
            futures_util::future::join_all((0..3).map(|_| store.insert(event(&id)))).await;
        for answer in answers {
            match (answer.unwrap(), model.get(&id)) {
                (Inserted::New(seq), None) => {
                    model.insert(id.clone(), seq);
                }
                (Inserted::Duplicate(seq), Some(&first)) => assert_eq!(seq, first, "{id}"),
                (got, want) => panic!("round {round}, {id}: {got:?}, model says {want:?}"),
            }
        }
        if round % 300 == 299 {
            store.close().await;
            store = SqliteStore::open(&path, options.clone()).unwrap();
        }
    }
    store.close().await;
    let conn = Connection::open(&path).unwrap();
    let (events, seen): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM seen)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let ids = model.len() as i64;
    assert_eq!((events, seen), (ids, ids));
}

#[path = "sqlite_restart_tests.rs"]
mod restarts;
