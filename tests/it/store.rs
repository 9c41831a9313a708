//! The store's conformance suite: what any backend behind the `Store` trait
//! must do, checked through the trait alone. It runs against SQLite here; a
//! PostgreSQL backend adds one line to `backends()` and must pass it too.

use std::path::Path;
use std::sync::Arc;

use replicate_relay::clock::now_ms;
use replicate_relay::event::{Kind, Status};
use replicate_relay::store::sqlite::{SqliteOptions, SqliteStore};
use replicate_relay::store::{
    DeliveryFilter, DeliveryState, Inserted, NewEvent, OutboxStats, Outcome, Recovered,
    RetrySelector, Routing, Store, StoreError,
};

/// Each backend under test: a name and how to open a fresh store in a dir.
type Open = fn(&Path) -> Arc<dyn Store>;

fn backends() -> Vec<(&'static str, Open)> {
    vec![("sqlite", |dir| {
        Arc::new(SqliteStore::open(&dir.join("relay.db"), SqliteOptions::default()).unwrap())
    })]
}

fn event(webhook_id: &str, object_id: &str, status: Status, routes: &[(&str, &str)]) -> NewEvent {
    event_at(webhook_id, object_id, status, routes, now_ms())
}

/// [`event`], received at `now`.
fn event_at(
    webhook_id: &str,
    object_id: &str,
    status: Status,
    routes: &[(&str, &str)],
    now: i64,
) -> NewEvent {
    NewEvent {
        webhook_id: webhook_id.into(),
        object_id: object_id.into(),
        kind: Kind::Prediction,
        status: status.clone(),
        model: Some("acme/m".into()),
        query: "team=ml".into(),
        body: format!(r#"{{"id":"{object_id}","status":"{status}"}}"#).into(),
        received_at_ms: now,
        routing: Routing {
            dedup_key: format!("{object_id}:{status}"),
            deliveries: routes
                .iter()
                .map(|(r, n)| (r.to_string(), n.to_string()))
                .collect(),
            expires_at_ms: now + 3_600_000,
        },
    }
}

/// The outbox's counts, as the store keeps them, equal what a listing finds.
async fn stats_agree(name: &str, store: &dyn Store, when: &str) {
    let all = store.deliveries(DeliveryFilter::All, 1_000).await.unwrap();
    let waiting = |l: &&replicate_relay::store::Listed| {
        matches!(
            l.delivery.state,
            DeliveryState::Pending | DeliveryState::Sending
        )
    };
    let want = OutboxStats {
        held: all
            .iter()
            .filter(|l| l.delivery.state == DeliveryState::Held)
            .count() as i64,
        pending: all.iter().filter(waiting).count() as i64,
        dead: all
            .iter()
            .filter(|l| l.delivery.state == DeliveryState::Dead)
            .count() as i64,
        oldest_pending_ms: all
            .iter()
            .filter(waiting)
            .map(|l| l.delivery.created_at_ms)
            .min(),
    };
    assert_eq!(store.outbox_stats().await.unwrap(), want, "{name}: {when}");
}

#[tokio::test]
async fn every_backend_conforms() {
    for (name, open) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        conformance(name, store.as_ref()).await;
        store.close().await;
        assert!(
            matches!(
                store.insert(event("late", "p9", Status::Failed, &[])).await,
                Err(StoreError::Closed)
            ),
            "{name}: an insert after close is refused"
        );
    }
}

async fn conformance(name: &str, store: &dyn Store) {
    // Insert, duplicate, and reading back.
    let first = store
        .insert(event(
            "msg_1",
            "p1",
            Status::Failed,
            &[("r", "chat"), ("r", "mail")],
        ))
        .await
        .unwrap();
    let Inserted::New(seq) = first else {
        panic!("{name}: {first:?}")
    };
    assert_eq!(
        store
            .insert(event("msg_1", "p1", Status::Failed, &[("r", "chat")]))
            .await
            .unwrap(),
        Inserted::Duplicate(seq),
        "{name}: a repeated webhook id is a duplicate"
    );
    // The same final state under another webhook id: stored, but no new
    // deliveries (one job's end notifies each route and notifier once).
    let again = store
        .insert(event("msg_2", "p1", Status::Failed, &[("r", "chat")]))
        .await
        .unwrap();
    assert!(matches!(again, Inserted::New(s) if s > seq), "{name}");
    let recent = store.recent(10).await.unwrap();
    assert_eq!(recent.len(), 2, "{name}");
    assert_eq!(recent[0].webhook_id, "msg_2", "{name}: newest first");
    assert_eq!(recent[1].kind, Kind::Prediction);
    assert_eq!(recent[1].status, Status::Failed);
    assert_eq!(recent[1].query, "team=ml");
    stats_agree(name, store, "after inserts").await;
    let all = store.deliveries(DeliveryFilter::All, 10).await.unwrap();
    assert_eq!(all.len(), 2, "{name}: {all:?}");
    assert!(
        all.iter()
            .all(|l| l.delivery.state == DeliveryState::Pending)
    );

    // An event routed to no notifier is stored all the same, with nothing
    // to deliver; another routed at insert adds its delivery.
    assert!(matches!(
        store
            .insert(event("msg_3", "p2", Status::Succeeded, &[]))
            .await
            .unwrap(),
        Inserted::New(_)
    ));
    store
        .insert(event("msg_4", "p3", Status::Succeeded, &[("r", "chat")]))
        .await
        .unwrap();
    assert_eq!(store.recent(10).await.unwrap().len(), 4, "{name}");
    assert_eq!(
        store
            .deliveries(DeliveryFilter::All, 10)
            .await
            .unwrap()
            .len(),
        3,
        "{name}"
    );

    // Claiming: only due deliveries of that notifier, at most `limit`.
    let now = now_ms() + 1_000;
    let claimed = store.claim("chat", now, 1).await.unwrap();
    assert_eq!(claimed.len(), 1, "{name}: the limit holds");
    assert_eq!(claimed[0].delivery.state, DeliveryState::Sending);
    assert_eq!(claimed[0].delivery.attempts, 1);
    assert_eq!(claimed[0].event.object_id, "p1");
    let second = store.claim("chat", now, 10).await.unwrap();
    assert_eq!(second.len(), 1, "{name}: the other chat delivery");
    stats_agree(name, store, "after claims").await;
    assert!(
        store.claim("chat", now, 10).await.unwrap().is_empty(),
        "{name}"
    );

    // Outcomes: delivered, retried later, dead.
    store
        .finish(claimed[0].delivery.id, Outcome::Delivered, now)
        .await
        .unwrap();
    store
        .finish(
            second[0].delivery.id,
            Outcome::Retry {
                at_ms: now + 60_000,
                error: "HTTP 503".into(),
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        store.next_due(vec!["chat".into()]).await.unwrap(),
        Some(now + 60_000),
        "{name}: the retry is due then"
    );
    assert!(
        store.claim("chat", now + 1, 10).await.unwrap().is_empty(),
        "{name}: not before"
    );
    let mail = store.claim("mail", now, 10).await.unwrap();
    store
        .finish(
            mail[0].delivery.id,
            Outcome::Dead {
                error: "550 no such user".into(),
            },
            now,
        )
        .await
        .unwrap();
    let dead = store.deliveries(DeliveryFilter::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{name}");
    assert_eq!(
        dead[0].delivery.last_error.as_deref(),
        Some("550 no such user")
    );
    let stats = store.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (1, 1), "{name}: {stats:?}");
    stats_agree(name, store, "after outcomes").await;

    // Requeuing by hand, and recovery at start.
    assert_eq!(
        store
            .retry(RetrySelector::AllDead, now, 3_600_000)
            .await
            .unwrap(),
        1,
        "{name}"
    );
    assert!(
        store
            .deliveries(DeliveryFilter::Dead, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let sending = store.claim("mail", now + 1, 10).await.unwrap();
    assert_eq!(sending.len(), 1, "{name}: requeued, due now");
    let recovered = store
        .recover(vec!["chat".into(), "mail".into()], now + 2, true)
        .await
        .unwrap();
    assert_eq!(
        recovered,
        Recovered {
            requeued: 1,
            ..Recovered::default()
        },
        "{name}: sending goes back to pending"
    );
    let recovered = store
        .recover(vec!["chat".into()], now + 3, false)
        .await
        .unwrap();
    assert_eq!(
        recovered.held,
        [("mail".to_owned(), 1)],
        "{name}: a notifier gone from the config holds its deliveries"
    );
    let held = store.deliveries(DeliveryFilter::Held, 10).await.unwrap();
    assert_eq!(held.len(), 1, "{name}");
    assert_eq!(held[0].delivery.state, DeliveryState::Held);
    assert!(
        store.claim("mail", now + 4, 10).await.unwrap().is_empty(),
        "{name}: held is never sent"
    );
    assert_eq!(
        store.waiting_by_notifier().await.unwrap(),
        [("chat".to_owned(), 1), ("mail".to_owned(), 1)],
        "{name}"
    );
    stats_agree(name, store, "after requeue and holding").await;
    // Retention, however late, never deletes what is held, nor its event.
    store.prune(now + 365 * 86_400_000).await.unwrap();
    assert_eq!(
        store
            .deliveries(DeliveryFilter::Held, 10)
            .await
            .unwrap()
            .len(),
        1,
        "{name}: pruning keeps what is held"
    );
    let recovered = store
        .recover(vec!["chat".into(), "mail".into()], now + 5, false)
        .await
        .unwrap();
    assert_eq!(recovered.resumed, 1, "{name}: back when its notifier is");
    let resumed = store.claim("mail", now + 5, 10).await.unwrap();
    assert_eq!(resumed.len(), 1, "{name}: due at once");
    assert_eq!(resumed[0].event.object_id, "p1", "{name}: its event kept");
    stats_agree(name, store, "after resuming").await;

    // Health, and retention (nothing recent is pruned).
    store.health().await.unwrap();
    assert_eq!(
        store.prune(now - 3_600_000).await.unwrap(),
        (0, 0),
        "{name}"
    );

    // Retention deletes what is old and finished, and nothing else.
    let old = now - 10 * 86_400_000;
    store
        .insert(event_at(
            "msg_old",
            "p_old",
            Status::Succeeded,
            &[("r", "chat")],
            old,
        ))
        .await
        .unwrap();
    let before = store.deliveries(DeliveryFilter::All, 100).await.unwrap();
    let claimed = store.claim("chat", now + 10, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "{name}: the old one is due");
    assert_eq!(claimed[0].event.object_id, "p_old");
    store
        .finish(claimed[0].delivery.id, Outcome::Delivered, old + 1_000)
        .await
        .unwrap();
    let (_, deliveries) = store.prune(now - 86_400_000).await.unwrap();
    assert_eq!(deliveries, 1, "{name}: the old delivered one goes");
    let after = store.deliveries(DeliveryFilter::All, 100).await.unwrap();
    assert_eq!(after.len(), before.len() - 1, "{name}: the rest stay");
    assert!(
        after.iter().all(|l| l.object_id != "p_old"),
        "{name}: {after:?}"
    );
    stats_agree(name, store, "after pruning").await;
}
