//! `replicate-relay store copy`: a SQLite store into PostgreSQL and back,
//! through the command a user runs, with every state of delivery in it;
//! run twice without copying twice; refused while a daemon writes the
//! source, and onto the source itself.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use crate::common::postgres::{Database, on_database, server};
use crate::common::*;
use replicate_relay::clock::now_ms;
use replicate_relay::config::{PostgresConfig, Sensitive, StoreConfig};
use replicate_relay::event::{Kind, Status};
use replicate_relay::store::{
    self, Claimed, DeliveryFilter, DeliveryState, NewEvent, Outcome, Routing, Store,
};

fn copy(config: &Path, to: &str) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_replicate-relay"))
        .args([
            "store",
            "copy",
            "--config",
            config.to_str().unwrap(),
            "--to",
            to,
        ])
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn event(n: u32, notifiers: &[&str]) -> NewEvent {
    let now = now_ms();
    NewEvent {
        webhook_id: format!("msg_{n}"),
        object_id: format!("p{n}"),
        kind: Kind::Prediction,
        status: Status::Failed,
        model: Some("acme/m".into()),
        query: "team=ml".into(),
        body: format!(r#"{{"id":"p{n}","status":"failed"}}"#).into(),
        received_at_ms: now,
        routing: Routing {
            lifecycle: None,
            groups: Vec::new(),
            after: Vec::new(),
            dedup_key: format!("p{n}:failed"),
            deliveries: notifiers
                .iter()
                .map(|x| ("r".to_owned(), x.to_string()))
                .collect(),
            expires_at_ms: now + 3_600_000,
        },
    }
}

/// A SQLite store at `path` holding one event per state a delivery can
/// be in: p1 pending, p2 delivered, p3 dead, p4 held, p5 routed nowhere.
async fn fill(path: &Path) {
    let config = StoreConfig {
        path: path.to_owned(),
        keep: std::time::Duration::from_secs(86_400),
        postgres: None,
    };
    let s = store::open(&config, None).await.unwrap();
    s.insert(event(1, &["chat"])).await.unwrap();
    s.insert(event(2, &["mail"])).await.unwrap();
    s.insert(event(3, &["page"])).await.unwrap();
    s.insert(event(4, &["gone"])).await.unwrap();
    s.insert(event(5, &[])).await.unwrap();
    let now = now_ms();
    let sent = |c: Vec<Claimed>| c[0].delivery.id;
    let mail = sent(s.claim("mail", now, 1).await.unwrap());
    s.finish(mail, Outcome::Delivered { result: None }, now)
        .await
        .unwrap();
    let page = sent(s.claim("page", now, 1).await.unwrap());
    let dead = Outcome::Dead {
        error: "refused".into(),
    };
    s.finish(page, dead, now).await.unwrap();
    let names = ["chat", "mail", "page"].map(String::from).to_vec();
    s.recover(names, now, false).await.unwrap();
    s.close().await;
}

/// The events' ids, oldest first, and the deliveries still to send, by
/// job and notifier.
async fn contents(config: &StoreConfig) -> (Vec<String>, Vec<(String, String)>) {
    let admin = store::open_admin(config).unwrap();
    let mut events: Vec<String> = admin
        .recent(100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.object_id)
        .collect();
    events.sort();
    let mut waiting: Vec<(String, String)> = admin
        .deliveries(DeliveryFilter::All, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| {
            matches!(
                l.delivery.state,
                DeliveryState::Pending | DeliveryState::Held
            )
        })
        .map(|l| (l.object_id, l.delivery.notifier))
        .collect();
    waiting.sort();
    (events, waiting)
}

fn on_postgres(database: &Database, instance: &str) -> StoreConfig {
    StoreConfig {
        path: "unused.db".into(),
        keep: std::time::Duration::from_secs(86_400),
        postgres: Some(PostgresConfig {
            url: Sensitive::new(database.url.clone()),
            password: None,
            instance: instance.into(),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_is_copied_into_postgresql_and_back_once() {
    let Some(server) = server("a_sqlite_store_is_copied_into_postgresql_and_back_once") else {
        return;
    };
    let database = Database::create(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SECRET, "");
    let source = dir.path().join("relay.db");
    fill(&source).await;
    let sqlite = StoreConfig {
        path: source.clone(),
        keep: std::time::Duration::from_secs(86_400),
        postgres: None,
    };
    let before = contents(&sqlite).await;
    let jobs = ["p1", "p2", "p3", "p4", "p5"].map(String::from).to_vec();
    let waiting = vec![
        ("p1".to_owned(), "chat".to_owned()),
        ("p4".to_owned(), "gone".to_owned()),
    ];
    assert_eq!(before, (jobs.clone(), waiting.clone()));

    // A daemon on the source: refused, nothing copied.
    let running = store::open(&sqlite, None).await.unwrap();
    let out = copy(&config, &database.url);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("a daemon is still writing")
            && text(&out).contains("stop every daemon"),
        "{}",
        text(&out)
    );
    running.close().await;
    drop(running);

    let out = copy(&config, &database.url);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Copied 5 events with 2 deliveries still to send")
            && text(&out).contains("0 already there"),
        "{}",
        text(&out)
    );
    let pg = on_postgres(&database, "copy-test");
    // Pending again, both: the target's daemon holds `gone` at its start.
    assert_eq!(contents(&pg).await, (jobs.clone(), waiting.clone()));
    let first = store::open_admin(&pg).unwrap().recent(10).await.unwrap();

    // Again: nothing twice.
    let out = copy(&config, &database.url);
    assert!(
        out.status.success()
            && text(&out).contains("Copied 0 events")
            && text(&out).contains("5 already there"),
        "{}",
        text(&out)
    );
    assert_eq!(contents(&pg).await, (jobs.clone(), waiting.clone()));
    let body = |events: &[replicate_relay::store::StoredEvent]| {
        let mut all: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.webhook_id.clone(),
                    e.body.clone(),
                    e.received_at_ms,
                    e.query.clone(),
                )
            })
            .collect();
        all.sort();
        all
    };
    let in_sqlite = store::open_admin(&sqlite)
        .unwrap()
        .recent(10)
        .await
        .unwrap();
    assert_eq!(
        body(&first),
        body(&in_sqlite),
        "bodies, times and queries as received"
    );

    // And back, from a config on PostgreSQL into a new SQLite file.
    let back_dir = tempfile::tempdir().unwrap();
    let back_config = write_config(back_dir.path(), SECRET, "");
    on_database(&back_config, &database, "b");
    let back = back_dir.path().join("back.db");
    // A daemon on the PostgreSQL source is named.
    let daemon: Arc<dyn Store> = store::open(&on_postgres(&database, "relay-a"), None)
        .await
        .unwrap();
    let out = copy(&back_config, back.to_str().unwrap());
    assert!(
        !out.status.success() && text(&out).contains("instance relay-a"),
        "{}",
        text(&out)
    );
    daemon.close().await;
    drop(daemon);
    // Its sessions end as its pool is dropped; give the server a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let out = loop {
        let out = copy(&back_config, back.to_str().unwrap());
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(out.status.success(), "{}", text(&out));
    let sqlite_again = StoreConfig {
        path: back,
        keep: std::time::Duration::from_secs(86_400),
        postgres: None,
    };
    assert_eq!(contents(&sqlite_again).await, (jobs, waiting));

    // Onto itself: refused.
    let out = copy(&config, source.to_str().unwrap());
    assert!(
        !out.status.success() && text(&out).contains("the config's own store"),
        "{}",
        text(&out)
    );
}
