//! The shared files and locks ([`Shared`]) of a store several instances
//! share: what the ACME certificate and its order rely on. A store for one
//! host has none (its daemon keeps those files on disk).

use std::sync::Arc;

use super::{Backend, backends, open};
use crate::common::postgres::Database;
use replicate_relay::clock::now_ms;
use replicate_relay::config::{PostgresConfig, Sensitive, StoreConfig};
use replicate_relay::store::{self, Lock, Shared, Store};

/// Two stores on one fresh PostgreSQL database, as instances `one` and
/// `two`; `None` where no server is configured (skipped, saying so).
async fn two_instances() -> Option<(Arc<dyn Store>, Arc<dyn Store>, Database)> {
    let server = crate::common::postgres::server("the shared files and locks on PostgreSQL")?;
    let database = Database::create(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let open = |instance: &str| StoreConfig {
        path: dir.path().join("unused.db"),
        keep: std::time::Duration::from_secs(86_400),
        postgres: Some(PostgresConfig {
            url: Sensitive::new(database.url.clone()),
            password: None,
            instance: instance.into(),
        }),
    };
    let one = store::open(&open("one"), None).await.unwrap();
    let two = store::open(&open("two"), None).await.unwrap();
    Some((one, two, database))
}

fn shared(store: &Arc<dyn Store>) -> &dyn Shared {
    store.shared().expect("a PostgreSQL store is shared")
}

#[tokio::test]
async fn only_a_store_several_instances_share_has_shared_files() {
    for (name, backend) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let (opened, _database) = open(backend, dir.path()).await;
        let want = matches!(backend, Backend::Postgres);
        assert_eq!(opened.shared().is_some(), want, "{name}");
        opened.close().await;
    }
}

#[tokio::test]
async fn shared_files_are_written_together_read_by_all_and_deleted_by_prefix() {
    let Some((one, two, _database)) = two_instances().await else {
        return;
    };
    let (a, b) = (shared(&one), shared(&two));
    assert_eq!(a.load("acme/x/cert.pem").await.unwrap(), None);
    a.save(vec![
        ("acme/x/cert.pem".into(), b"C1".to_vec()),
        ("acme/x/key.pem".into(), b"K1".to_vec()),
        // LIKE's wildcards in a name are plain characters.
        ("acme/x%/other".into(), b"O".to_vec()),
        ("acme/x_/other".into(), b"O".to_vec()),
    ])
    .await
    .unwrap();
    a.save(vec![("acme/x/cert.pem".into(), b"C2".to_vec())])
        .await
        .unwrap();
    assert_eq!(
        b.load("acme/x/cert.pem").await.unwrap(),
        Some(b"C2".to_vec())
    );
    assert_eq!(
        b.load("acme/x/key.pem").await.unwrap(),
        Some(b"K1".to_vec())
    );
    // Binary contents come back as written.
    let bytes: Vec<u8> = (0..=255).collect();
    b.save(vec![("bin".into(), bytes.clone())]).await.unwrap();
    assert_eq!(a.load("bin").await.unwrap(), Some(bytes));

    assert_eq!(b.delete("acme/x/").await.unwrap(), 2);
    assert_eq!(a.load("acme/x/cert.pem").await.unwrap(), None);
    assert_eq!(a.load("acme/x%/other").await.unwrap(), Some(b"O".to_vec()));
    assert_eq!(a.delete("acme/x%").await.unwrap(), 1);
    assert_eq!(a.load("acme/x_/other").await.unwrap(), Some(b"O".to_vec()));
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn a_shared_lock_is_one_instances_until_it_lets_go_or_its_lease_ends() {
    let Some((one, two, _database)) = two_instances().await else {
        return;
    };
    let (a, b) = (shared(&one), shared(&two));
    let now = now_ms();
    let name = "acme/x/order";
    assert_eq!(a.lock(name, now, now + 60_000).await.unwrap(), Lock::Taken);
    assert_eq!(
        b.lock(name, now, now + 60_000).await.unwrap(),
        Lock::HeldBy {
            holder: "one".into(),
            until_ms: now + 60_000
        }
    );
    // The holder moves its own lease (a failed order holds it through its pause).
    assert_eq!(a.lock(name, now, now + 5_000).await.unwrap(), Lock::Taken);
    // Another instance's unlock does nothing.
    b.unlock(name).await.unwrap();
    assert!(matches!(
        b.lock(name, now + 4_999, now + 60_000).await.unwrap(),
        Lock::HeldBy { holder, .. } if holder == "one"
    ));
    // A lease that ended (its holder died) is taken over.
    assert_eq!(
        b.lock(name, now + 5_000, now + 60_000).await.unwrap(),
        Lock::Taken
    );
    assert!(matches!(
        a.lock(name, now + 5_000, now + 60_000).await.unwrap(),
        Lock::HeldBy { holder, .. } if holder == "two"
    ));
    b.unlock(name).await.unwrap();
    assert_eq!(a.lock(name, now, now + 60_000).await.unwrap(), Lock::Taken);
    // Other names are other locks.
    assert_eq!(
        b.lock("acme/y/order", now, now + 60_000).await.unwrap(),
        Lock::Taken
    );

    // Asked for at once, again and again: one instance gets it each time.
    for round in 0..20 {
        let name = format!("race/{round}");
        let (x, y) = tokio::join!(
            a.lock(&name, now, now + 60_000),
            b.lock(&name, now, now + 60_000)
        );
        let taken = [x.unwrap(), y.unwrap()]
            .iter()
            .filter(|l| **l == Lock::Taken)
            .count();
        assert_eq!(taken, 1, "round {round}");
    }
    one.close().await;
    two.close().await;
}
