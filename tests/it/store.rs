//! The store's conformance suite: what any backend behind the `Store` trait
//! must do, checked through the trait alone, one named test per behaviour,
//! each on a fresh store of every backend. It runs against SQLite here; a
//! PostgreSQL backend adds one line to `backends()` and must pass it too.

use std::path::Path;
use std::sync::Arc;

use crate::common::postgres::Database;
use replicate_relay::clock::now_ms;
use replicate_relay::config::{PostgresConfig, Sensitive, StoreConfig};
use replicate_relay::event::{Kind, Status};
use replicate_relay::store::{
    self, DeliveryFilter, DeliveryState, Inserted, NewEvent, OutboxStats, Outcome, Recovered,
    RetrySelector, Routing, Store, StoreError,
};

/// Each backend under test, by name.
#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The backends to run: SQLite always, PostgreSQL where `RELAY_TEST_POSTGRES`
/// names a server (skipped, saying so, where not; never under `CI=true`).
fn backends() -> Vec<(&'static str, Backend)> {
    let mut all = vec![("sqlite", Backend::Sqlite)];
    if crate::common::postgres::server("the store conformance suite on PostgreSQL").is_some() {
        all.push(("postgres", Backend::Postgres));
    }
    all
}

/// A fresh store of `backend`, opened as the daemon opens one (through
/// `store::open`), with what must live as long as it.
async fn open(backend: Backend, dir: &Path) -> (Arc<dyn Store>, Option<Database>) {
    let keep = std::time::Duration::from_secs(30 * 86_400);
    let (config, database) = match backend {
        Backend::Sqlite => (
            StoreConfig {
                path: dir.join("relay.db"),
                keep,
                postgres: None,
            },
            None,
        ),
        Backend::Postgres => {
            let server = std::env::var("RELAY_TEST_POSTGRES").expect("checked by backends()");
            let database = Database::create(&server).await;
            let config = StoreConfig {
                path: dir.join("unused.db"),
                keep,
                postgres: Some(PostgresConfig {
                    url: Sensitive::new(database.url.clone()),
                    password: None,
                    instance: "test".into(),
                }),
            };
            (config, Some(database))
        }
    };
    (store::open(&config, None).await.unwrap(), database)
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
            lifecycle: None,
            groups: Vec::new(),
            after: Vec::new(),
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

/// Runs `$body` on a fresh store of every backend, with `$name` the
/// backend's name and `$store` the store (`&dyn Store`).
macro_rules! each_backend {
    (|$name:ident, $store:ident| $body:block) => {
        for (backend, kind) in backends() {
            let dir = tempfile::tempdir().unwrap();
            let (opened, _database) = open(kind, dir.path()).await;
            {
                let $name = backend;
                let $store: &dyn Store = opened.as_ref();
                $body
            }
            opened.close().await;
        }
    };
}

/// The first failure of job p1, routed to `chat` and `mail` by route `r`.
fn p1_failed() -> NewEvent {
    event(
        "msg_1",
        "p1",
        Status::Failed,
        &[("r", "chat"), ("r", "mail")],
    )
}

#[tokio::test]
async fn a_webhook_id_is_stored_once_and_read_back_newest_first() {
    each_backend!(|name, store| {
        let first = store.insert(p1_failed()).await.unwrap();
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
    });
}

#[tokio::test]
async fn one_job_end_notifies_each_route_and_notifier_once() {
    each_backend!(|name, store| {
        store.insert(p1_failed()).await.unwrap();
        // The same final state under another webhook id: stored, but no
        // new deliveries.
        store
            .insert(event("msg_2", "p1", Status::Failed, &[("r", "chat")]))
            .await
            .unwrap();
        let all = store.deliveries(DeliveryFilter::All, 10).await.unwrap();
        assert_eq!(all.len(), 2, "{name}: {all:?}");
        assert!(
            all.iter()
                .all(|l| l.delivery.state == DeliveryState::Pending),
            "{name}"
        );
        stats_agree(name, store, "after inserts").await;
    });
}

#[tokio::test]
async fn an_event_routed_nowhere_is_stored_with_nothing_to_deliver() {
    each_backend!(|name, store| {
        let unrouted = store
            .insert(event("msg_3", "p2", Status::Succeeded, &[]))
            .await
            .unwrap();
        assert!(matches!(unrouted, Inserted::New(_)), "{name}");
        store
            .insert(event("msg_4", "p3", Status::Succeeded, &[("r", "chat")]))
            .await
            .unwrap();
        assert_eq!(store.recent(10).await.unwrap().len(), 2, "{name}");
        let all = store.deliveries(DeliveryFilter::All, 10).await.unwrap();
        assert_eq!(all.len(), 1, "{name}: {all:?}");
        assert_eq!(all[0].object_id, "p3", "{name}");
    });
}

#[tokio::test]
async fn a_claim_takes_only_due_deliveries_of_its_notifier_up_to_the_limit() {
    each_backend!(|name, store| {
        store.insert(p1_failed()).await.unwrap();
        store
            .insert(event("msg_4", "p3", Status::Succeeded, &[("r", "chat")]))
            .await
            .unwrap();
        let now = now_ms() + 1_000;
        let claimed = store.claim("chat", now, 1).await.unwrap();
        assert_eq!(claimed.len(), 1, "{name}: the limit holds");
        assert_eq!(claimed[0].delivery.state, DeliveryState::Sending);
        assert_eq!(claimed[0].delivery.attempts, 1);
        assert_eq!(claimed[0].event.object_id, "p1", "{name}: oldest first");
        let second = store.claim("chat", now, 10).await.unwrap();
        assert_eq!(second.len(), 1, "{name}: the other chat delivery");
        assert_eq!(second[0].event.object_id, "p3", "{name}");
        stats_agree(name, store, "after claims").await;
        assert!(
            store.claim("chat", now, 10).await.unwrap().is_empty(),
            "{name}: nothing claimed twice"
        );
    });
}

#[tokio::test]
async fn outcomes_are_delivered_retried_later_or_dead_with_the_reason() {
    each_backend!(|name, store| {
        store.insert(p1_failed()).await.unwrap();
        store
            .insert(event("msg_4", "p3", Status::Succeeded, &[("r", "chat")]))
            .await
            .unwrap();
        let now = now_ms() + 1_000;
        let chat = store.claim("chat", now, 10).await.unwrap();
        assert_eq!(chat.len(), 2, "{name}");
        store
            .finish(
                chat[0].delivery.id,
                Outcome::Delivered { result: None },
                now,
            )
            .await
            .unwrap();
        let retry = Outcome::Retry {
            at_ms: now + 60_000,
            error: "HTTP 503".into(),
        };
        store.finish(chat[1].delivery.id, retry, now).await.unwrap();
        assert_eq!(
            store.next_due(vec!["chat".into()]).await.unwrap(),
            Some(now + 60_000),
            "{name}: the retry is due then"
        );
        assert!(
            store.claim("chat", now + 1, 10).await.unwrap().is_empty(),
            "{name}: not before"
        );
        assert_eq!(
            store.claim("chat", now + 60_000, 10).await.unwrap().len(),
            1,
            "{name}: and then"
        );
        let mail = store.claim("mail", now, 10).await.unwrap();
        let dead = Outcome::Dead {
            error: "550 no such user".into(),
        };
        store.finish(mail[0].delivery.id, dead, now).await.unwrap();
        let dead = store.deliveries(DeliveryFilter::Dead, 10).await.unwrap();
        assert_eq!(dead.len(), 1, "{name}");
        assert_eq!(
            dead[0].delivery.last_error.as_deref(),
            Some("550 no such user")
        );
        let stats = store.outbox_stats().await.unwrap();
        assert_eq!((stats.pending, stats.dead), (1, 1), "{name}: {stats:?}");
        stats_agree(name, store, "after outcomes").await;
    });
}

#[tokio::test]
async fn dead_deliveries_are_requeued_by_hand_and_sending_ones_at_start() {
    each_backend!(|name, store| {
        store.insert(p1_failed()).await.unwrap();
        let now = now_ms() + 1_000;
        let mail = store.claim("mail", now, 10).await.unwrap();
        let dead = Outcome::Dead {
            error: "550 no such user".into(),
        };
        store.finish(mail[0].delivery.id, dead, now).await.unwrap();
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
                .is_empty(),
            "{name}"
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
        assert_eq!(store.claim("mail", now + 2, 10).await.unwrap().len(), 1);
        stats_agree(name, store, "after requeuing").await;
    });
}

#[tokio::test]
async fn a_removed_notifiers_deliveries_are_held_then_resume_when_it_returns() {
    each_backend!(|name, store| {
        store.insert(p1_failed()).await.unwrap();
        let now = now_ms() + 1_000;
        let recovered = store
            .recover(vec!["chat".into()], now, false)
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
            store.claim("mail", now + 1, 10).await.unwrap().is_empty(),
            "{name}: held is never sent"
        );
        assert_eq!(
            store.waiting_by_notifier().await.unwrap(),
            [("chat".to_owned(), 1), ("mail".to_owned(), 1)],
            "{name}: held still waits to be sent"
        );
        stats_agree(name, store, "after holding").await;
        let recovered = store
            .recover(vec!["chat".into(), "mail".into()], now + 2, false)
            .await
            .unwrap();
        assert_eq!(recovered.resumed, 1, "{name}: back when its notifier is");
        let resumed = store.claim("mail", now + 2, 10).await.unwrap();
        assert_eq!(resumed.len(), 1, "{name}: due at once");
        assert_eq!(resumed[0].event.object_id, "p1", "{name}");
        stats_agree(name, store, "after resuming").await;
    });
}

#[tokio::test]
async fn pruning_never_deletes_what_is_held_nor_its_event() {
    each_backend!(|name, store| {
        let old = now_ms() - 30 * 86_400_000;
        store
            .insert(event_at(
                "msg_1",
                "p1",
                Status::Failed,
                &[("r", "mail")],
                old,
            ))
            .await
            .unwrap();
        store.recover(vec![], old + 1, false).await.unwrap();
        // However late the prune, what is held stays, and its event.
        store.prune(now_ms() + 365 * 86_400_000).await.unwrap();
        assert_eq!(
            store
                .deliveries(DeliveryFilter::Held, 10)
                .await
                .unwrap()
                .len(),
            1,
            "{name}: pruning keeps what is held"
        );
        store
            .recover(vec!["mail".into()], now_ms(), false)
            .await
            .unwrap();
        let resumed = store.claim("mail", now_ms(), 10).await.unwrap();
        assert_eq!(resumed.len(), 1, "{name}");
        assert_eq!(resumed[0].event.object_id, "p1", "{name}: its event kept");
    });
}

#[tokio::test]
async fn pruning_deletes_what_is_old_and_finished_and_nothing_else() {
    each_backend!(|name, store| {
        let now = now_ms();
        let old = now - 10 * 86_400_000;
        // Old and delivered, old and still waiting, old and dead, new and delivered.
        for (id, at) in [
            ("old_sent", old),
            ("old_waiting", old),
            ("old_dead", old),
            ("new_sent", now),
        ] {
            store
                .insert(event_at(
                    &format!("msg_{id}"),
                    id,
                    Status::Succeeded,
                    &[("r", id)],
                    at,
                ))
                .await
                .unwrap();
        }
        for (id, outcome, at) in [
            ("old_sent", Outcome::Delivered { result: None }, old + 1_000),
            (
                "old_dead",
                Outcome::Dead {
                    error: "gone".into(),
                },
                old + 1_000,
            ),
            ("new_sent", Outcome::Delivered { result: None }, now),
        ] {
            // Due when written (by the store's clock, which may be past
            // `now` on a busy machine): claimed a minute on.
            let claimed = store.claim(id, now_ms() + 60_000, 10).await.unwrap();
            assert_eq!(claimed.len(), 1, "{name}: {id}");
            store
                .finish(claimed[0].delivery.id, outcome, at)
                .await
                .unwrap();
        }
        store.health().await.unwrap();
        assert_eq!(
            store.prune(now - 30 * 86_400_000).await.unwrap(),
            (0, 0),
            "{name}: nothing is older than that"
        );
        // Events go once nothing of theirs is left to send; a backend may
        // keep one a while longer (SQLite until its dedup index has it).
        let (events, deliveries) = store.prune(now - 86_400_000).await.unwrap();
        assert_eq!(deliveries, 2, "{name}: the old delivered and dead ones go");
        assert!(events <= 2, "{name}: {events} events");
        let left: Vec<String> = store
            .deliveries(DeliveryFilter::All, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.object_id)
            .collect();
        assert_eq!(left, ["new_sent", "old_waiting"], "{name}: the rest stay");
        let events: Vec<String> = store
            .recent(10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.object_id)
            .collect();
        for kept in ["new_sent", "old_waiting"] {
            assert!(
                events.iter().any(|e| e == kept),
                "{name}: {kept}'s event stays"
            );
        }
        stats_agree(name, store, "after pruning").await;
    });
}

#[tokio::test]
async fn an_insert_after_close_is_refused() {
    for (name, kind) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _database) = open(kind, dir.path()).await;
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

#[tokio::test]
async fn a_receivers_pause_is_kept_until_it_ends_the_latest_winning() {
    each_backend!(|name, store| {
        let now = now_ms();
        store.pause("slack:abc", now + 60_000).await.unwrap();
        // An earlier end recorded later does not shorten it.
        store.pause("slack:abc", now + 30_000).await.unwrap();
        store.pause("discord:x", now - 1).await.unwrap();
        assert_eq!(
            store.pauses(now).await.unwrap(),
            [("slack:abc".to_owned(), now + 60_000)],
            "{name}: the running pause, not the ended one"
        );
        assert!(
            store.pauses(now + 60_000).await.unwrap().is_empty(),
            "{name}: over when it ends"
        );
    });
}

#[tokio::test]
async fn the_same_webhook_twice_at_once_is_stored_once() {
    each_backend!(|name, store| {
        // Concurrent inserts share a commit: the same id twice in one batch.
        let inserts: Vec<_> = (0..8)
            .map(|i| {
                let id = if i % 2 == 0 { "msg_same" } else { "msg_other" };
                store.insert(event(
                    id,
                    &format!("p{id}"),
                    Status::Failed,
                    &[("r", "chat")],
                ))
            })
            .collect();
        let answers = futures_util::future::join_all(inserts).await;
        let answers: Vec<Inserted> = answers.into_iter().map(Result::unwrap).collect();
        let new = answers
            .iter()
            .filter(|a| matches!(a, Inserted::New(_)))
            .count();
        assert_eq!(new, 2, "{name}: {answers:?}");
        for pair in answers.chunks(2).skip(1) {
            assert!(
                matches!(pair[0], Inserted::Duplicate(_)),
                "{name}: {answers:?}"
            );
        }
        assert_eq!(store.recent(10).await.unwrap().len(), 2, "{name}");
        assert_eq!(
            store
                .deliveries(DeliveryFilter::All, 10)
                .await
                .unwrap()
                .len(),
            2,
            "{name}"
        );
    });
}

mod attempts;
mod browse;
mod claims;
mod groups;
mod results;
mod shared;
