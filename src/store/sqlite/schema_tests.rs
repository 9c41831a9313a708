//! The schema's tests: a new store's settings, the upgrade from the
//! previous release, and what each refusal to open says.

use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;

use super::*;
use crate::store::sqlite::connection::configure;
use crate::store::sqlite::tests::event;
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{Inserted, Store, StoreError, Unrouted};

#[test]
fn pragmas_and_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    let conn = Connection::open(&path).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
    // What each of the store's connections runs with.
    configure(&conn, Duration::from_secs(1)).unwrap();
    let pragma = |name: &str| -> i64 { conn.pragma_query_value(None, name, |r| r.get(0)).unwrap() };
    assert_eq!(pragma("synchronous"), 2, "FULL: a commit is fsynced");
    assert_eq!(pragma("wal_autocheckpoint"), 500);
    assert_eq!(pragma("foreign_keys"), 1);
}

#[tokio::test]
async fn a_version_2_store_keeps_its_events_deliveries_and_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    {
        // What the previous release left: schema 2, events with the dedup
        // key as a unique column, and a pending delivery.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute_batch(
            "INSERT INTO events (webhook_id, object_id, kind, status, model, query, body,
                                 received_at_ms, routed_at_ms)
             VALUES ('msg_old1', 'p1', 'prediction', 'failed', NULL, '', X'7B7D', 1000, 1000),
                    ('msg_old2', 'p2', 'training', 'succeeded', 'a/b', 'team=x', X'7B7D', 2000, NULL);
             INSERT INTO deliveries (event_seq, dedup_key, route, notifier, state,
                                     created_at_ms, next_attempt_at_ms, expires_at_ms)
             VALUES (1, 'k1', 'r', 'n', 'pending', 1000, 1000, 9000);",
        )
        .unwrap();
    }
    static TICKS: AtomicU64 = AtomicU64::new(0);
    let options = SqliteOptions {
        while_migrating: Some(|going| {
            TICKS.fetch_add(if going { 1 } else { 10 }, Ordering::SeqCst);
        }),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&path, options.clone()).unwrap();
    assert_eq!(
        TICKS.load(Ordering::SeqCst),
        11,
        "told the service manager, twice"
    );
    assert_eq!(
        store.insert(event("msg_old1")).await.unwrap(),
        Inserted::Duplicate(1)
    );
    assert_eq!(
        store.insert(event("msg_new")).await.unwrap(),
        Inserted::New(3)
    );
    assert_eq!(
        store.insert(event("msg_new")).await.unwrap(),
        Inserted::Duplicate(3)
    );
    let unrouted = store.unrouted(10).await.unwrap();
    assert_eq!(unrouted.len(), 1, "the old event; new ones arrive routed");
    assert_eq!((unrouted[0].seq, unrouted[0].query.as_str()), (2, "team=x"));
    let stats = store.outbox_stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.dead, stats.oldest_pending_ms),
        (1, 0, Some(1000)),
        "the old delivery counted when the counts were made"
    );
    store.close().await;

    let conn = Connection::open(&path).unwrap();
    let delivery: (i64, String) = conn
        .query_row("SELECT event_seq, state FROM deliveries", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        delivery,
        (1, "pending".to_string()),
        "dropping the old table deleted nothing"
    );
    let fk: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk, 0);
    // The foreign key still cascades from the rebuilt table.
    conn.pragma_update(None, "foreign_keys", true).unwrap();
    conn.execute("DELETE FROM events WHERE seq = 1", [])
        .unwrap();
    let left: i64 = conn
        .query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    let pending: i64 = conn
        .query_row(
            "SELECT n FROM outbox_counts WHERE class = 'waiting'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pending, 0, "the cascade kept the count");
    drop(conn);

    // Up to date: nothing to migrate, nothing to say.
    drop(SqliteStore::open(&path, options.clone()).unwrap());
    assert_eq!(TICKS.load(Ordering::SeqCst), 11);
    // A new store: quick, nothing to say either.
    drop(SqliteStore::open(&dir.path().join("new.db"), options).unwrap());
    assert_eq!(TICKS.load(Ordering::SeqCst), 11);
}

#[test]
fn a_failed_migration_leaves_the_store_as_it_was_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(MIGRATIONS[0]).unwrap();
    conn.execute_batch(MIGRATIONS[1]).unwrap();
    conn.pragma_update(None, "user_version", 2).unwrap();
    // Another process holds the write lock for longer than we wait.
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let options = SqliteOptions {
        busy_timeout: Duration::from_millis(10),
        ..SqliteOptions::default()
    };
    let err = SqliteStore::open(&path, options).err().unwrap().to_string();
    assert!(err.contains("rolled back"), "{err}");
    assert!(err.contains("then start again"), "{err}");
    conn.execute_batch("ROLLBACK").unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
}

#[test]
fn an_unreadable_dedup_index_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE seen_upto")
        .unwrap();
    let err = SqliteStore::open(&path, SqliteOptions::default())
        .err()
        .unwrap();
    // As `serve` prints it: the advice, then SQLite's own words.
    let err = format!("{:#}", anyhow::Error::from(err));
    assert!(err.contains("no such table: seen_upto"), "{err}");
    assert!(err.contains("PRAGMA integrity_check"), "{err}");
}

#[test]
fn a_store_from_a_newer_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path, SqliteOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("newer replicate-relay"));
}

#[test]
fn opening_a_missing_store_beside_says_what_to_do() {
    let Err(err) = crate::store::sqlite::beside::Beside::open(Path::new("/nonexistent/relay.db"))
    else {
        panic!("opened a missing store")
    };
    assert!(err.to_string().contains("replicate-relay serve"), "{err}");
}

#[test]
fn the_store_is_private_and_never_a_link_to_another_file() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/relay.db");
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    assert_eq!(mode(&dir.path().join("state")), 0o700);
    for file in ["relay.db", "relay.db-wal", "relay.db-shm"] {
        assert_eq!(mode(&dir.path().join("state").join(file)), 0o600, "{file}");
    }
    drop(store);

    // One made readable by others (by an older release, or by hand) is
    // narrowed at the next start.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    assert_eq!(mode(&path), 0o600);

    // A link where the store or its WAL should be is refused, naming it.
    let elsewhere = dir.path().join("elsewhere.db");
    std::fs::write(&elsewhere, b"").unwrap();
    let linked = dir.path().join("linked.db");
    std::os::unix::fs::symlink(&elsewhere, &linked).unwrap();
    let Err(e) = SqliteStore::open(&linked, SqliteOptions::default()) else {
        panic!("a link was opened");
    };
    assert!(e.to_string().contains("is a symbolic link"), "{e}");
    let wal_linked = dir.path().join("wal.db");
    std::os::unix::fs::symlink(&elsewhere, dir.path().join("wal.db-wal")).unwrap();
    let Err(e) = SqliteStore::open(&wal_linked, SqliteOptions::default()) else {
        panic!("a linked WAL was opened");
    };
    assert!(
        e.to_string().contains("wal.db-wal is a symbolic link"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(&elsewhere).unwrap(),
        b"",
        "nothing written through a link"
    );

    // A link higher up the path is fine: systemd's DynamicUser makes the
    // state directory one.
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::os::unix::fs::symlink(&private, dir.path().join("state-link")).unwrap();
    drop(
        SqliteStore::open(
            &dir.path().join("state-link/relay.db"),
            SqliteOptions::default(),
        )
        .unwrap(),
    );
    assert_eq!(mode(&private.join("relay.db")), 0o600);
}
