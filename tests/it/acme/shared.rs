//! Two instances on one PostgreSQL store share one ACME certificate: one
//! orders while the other waits, the CA's challenge is answered by the
//! instance it reaches (not the one ordering), and both serve what was
//! obtained, from the store.

use std::time::Duration;

use super::{DOMAIN, setup, wait_served};
use crate::common::postgres::{Database, on_database};
use crate::common::serve::Serve;
use crate::common::stand_ins::free_port;
use replicate_relay::config::{PostgresConfig, Sensitive, StoreConfig};
use replicate_relay::store::Lock;

/// The store of `database`, as instance `instance` opens it.
async fn store_as(
    database: &Database,
    instance: &str,
    dir: &std::path::Path,
) -> std::sync::Arc<dyn replicate_relay::store::Store> {
    let config = StoreConfig {
        path: dir.join("unused.db"),
        keep: Duration::from_secs(86_400),
        postgres: Some(PostgresConfig {
            url: Sensitive::new(database.url.clone()),
            password: None,
            instance: instance.into(),
        }),
    };
    replicate_relay::store::open(&config, None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_certificate_and_answer_each_others_tls_alpn_challenges() {
    two_instances_share_one_certificate(
        "two_instances_share_one_certificate_and_answer_each_others_tls_alpn_challenges",
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_certificate_and_answer_each_others_http01_challenges() {
    two_instances_share_one_certificate(
        "two_instances_share_one_certificate_and_answer_each_others_http01_challenges",
        true,
    )
    .await;
}

/// Instance a orders; pebble checks the challenge (HTTP-01 with `http`,
/// else TLS-ALPN-01) on instance b's ports only.
async fn two_instances_share_one_certificate(test: &str, http: bool) {
    let Some(server) = crate::common::postgres::server(test) else {
        return;
    };
    let (port_b, http_a, http_b) = (free_port(), free_port(), free_port());
    let s = if http {
        let extra = format!("http_listen = \"127.0.0.1:{http_a}\"\n");
        setup(test, None, http_b, &extra)
    } else {
        setup(test, Some(port_b), 1, "")
    };
    let Some(s) = s else {
        return;
    };
    let database = Database::create(&server).await;
    on_database(&s.config, &database, "a");
    let text = std::fs::read_to_string(&s.config).unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let config_b = dir_b.path().join("relay.toml");
    std::fs::write(
        &config_b,
        text.replace(
            &format!("127.0.0.1:{}\"", s.port),
            &format!("127.0.0.1:{port_b}\""),
        )
        .replace(
            &format!("127.0.0.1:{}\"", s.metrics_port),
            &format!("127.0.0.1:{}\"", free_port()),
        )
        .replace(
            &format!("127.0.0.1:{http_a}\""),
            &format!("127.0.0.1:{http_b}\""),
        )
        .replace("instance = \"a\"", "instance = \"b\""),
    )
    .unwrap();

    // Instance a holds the order lock (as if it were ordering), so b,
    // started first, waits rather than ordering itself.
    let slug = s
        .pebble
        .directory
        .replace("https://", "")
        .replace([':', '/'], "-");
    let lock = format!("acme/{slug}/{DOMAIN}/order");
    let as_a = store_as(&database, "a", s.dir.path()).await;
    let now = replicate_relay::clock::now_ms();
    let shared = as_a.shared().unwrap();
    assert_eq!(
        shared.lock(&lock, now, now + 3_600_000).await.unwrap(),
        Lock::Taken
    );

    let b = Serve::start(&config_b, &[]);
    assert!(
        b.wait_log(
            "Another instance holds the ACME order",
            Duration::from_secs(20)
        )
        .await,
        "{}",
        b.log()
    );
    assert_eq!(s.pebble.orders(), 0);

    // a orders; the CA reaches b, which answers from the store.
    let a = Serve::start(&s.config, &[]);
    let leaf_a = wait_served(&s.pebble, s.port, &a).await;
    let leaf_b = wait_served(&s.pebble, port_b, &b).await;
    assert_eq!(leaf_a, leaf_b, "both serve the one certificate");
    assert_eq!(s.pebble.orders(), 1, "{}", s.pebble.log());
    assert!(
        b.log()
            .contains("Serving the ACME certificate another instance obtained"),
        "{}",
        b.log()
    );
    assert!(!b.log().contains("Ordering an ACME"), "{}", b.log());
    // Kept in the store, not in a's cache directory; the lock let go.
    assert!(!s.issuer_dir().exists(), "files written beside the store");
    assert!(
        shared
            .load(&format!("acme/{slug}/{DOMAIN}/cert.pem"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        shared
            .load(&format!("acme/{slug}/account.json"))
            .await
            .unwrap()
            .is_some()
    );
    // The answers are gone with the order.
    assert_eq!(
        shared
            .delete(&format!("acme/{slug}/{DOMAIN}/challenge/"))
            .await
            .unwrap(),
        0
    );
    assert!(
        a.wait_log("ACME certificate obtained", Duration::from_secs(5))
            .await,
        "{}",
        a.log()
    );
    as_a.close().await;
    let as_c = store_as(&database, "c", s.dir.path()).await;
    let free = as_c.shared().unwrap().lock(&lock, now, now + 1).await;
    assert_eq!(free.unwrap(), Lock::Taken, "a let go of the order lock");
    as_c.close().await;

    // A restart of b serves the stored certificate and orders nothing.
    b.signal("TERM");
    b.wait(Duration::from_secs(15)).await;
    let b = Serve::start(&config_b, &[]);
    assert!(
        b.wait_log(
            "Serving the cached ACME certificate",
            Duration::from_secs(10)
        )
        .await,
        "{}",
        b.log()
    );
    assert_eq!(wait_served(&s.pebble, port_b, &b).await, leaf_a);
    assert_eq!(s.pebble.orders(), 1);
}

/// A daemon that had its own certificate (SQLite, `cache_dir`) moved onto
/// an empty PostgreSQL store: the store takes the host's certificate, and
/// nothing is ordered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_to_postgresql_keeps_the_certificate_the_host_had() {
    const TEST: &str = "moving_to_postgresql_keeps_the_certificate_the_host_had";
    let Some(server) = crate::common::postgres::server(TEST) else {
        return;
    };
    let Some(s) = setup(TEST, None, 1, "") else {
        return;
    };
    let on_sqlite = Serve::start(&s.config, &[]);
    let first = wait_served(&s.pebble, s.port, &on_sqlite).await;
    assert!(
        on_sqlite
            .wait_log("ACME certificate obtained", Duration::from_secs(10))
            .await,
        "{}",
        on_sqlite.log()
    );
    on_sqlite.signal("TERM");
    on_sqlite.wait(Duration::from_secs(15)).await;

    // `url` added, `path` kept: `cache_dir` defaults beside it.
    let database = Database::create(&server).await;
    let text = std::fs::read_to_string(&s.config).unwrap().replacen(
        "[store]\n",
        &format!("[store]\nurl = \"{}\"\ninstance = \"a\"\n", database.url),
        1,
    );
    std::fs::write(&s.config, text).unwrap();
    let on_postgres = Serve::start(&s.config, &[]);
    assert!(
        on_postgres
            .wait_log(
                "Serving the cached ACME certificate",
                Duration::from_secs(10)
            )
            .await,
        "{}",
        on_postgres.log()
    );
    assert!(
        on_postgres
            .log()
            .contains("Took this host's ACME files into the store"),
        "{}",
        on_postgres.log()
    );
    assert_eq!(wait_served(&s.pebble, s.port, &on_postgres).await, first);
    assert_eq!(s.pebble.orders(), 1, "moving ordered again");
    let slug = s
        .pebble
        .directory
        .replace("https://", "")
        .replace([':', '/'], "-");
    let store = store_as(&database, "b", s.dir.path()).await;
    let shared = store.shared().unwrap();
    // The account is taken in when an order first needs it.
    for name in [
        format!("acme/{slug}/{DOMAIN}/cert.pem"),
        format!("acme/{slug}/{DOMAIN}/key.pem"),
    ] {
        assert!(
            shared.load(&name).await.unwrap().is_some(),
            "{name} not taken in"
        );
    }
    store.close().await;
}
