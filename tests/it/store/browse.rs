//! The conformance suite, continued: what the dashboard reads. Pages of
//! events under every filter, newest first and continued by keyset; a
//! time's first event; an event by number; activity by hour; each
//! notifier's load; the store's size.

use super::*;
use replicate_relay::store::browse::{EventQuery, SCAN, Source};

const HOUR: i64 = 3_600_000;

/// 30 events an hour apart from `t0`: p0…p29, every third failed, every
/// fifth a training of model acme/t, the last two found by catching up,
/// each failure routed by `alerts` to `chat`.
async fn thirty(store: &dyn Store, t0: i64) {
    for i in 0..30 {
        let status = if i % 3 == 0 {
            Status::Failed
        } else {
            Status::Succeeded
        };
        let routes: &[(&str, &str)] = if i % 3 == 0 {
            &[("alerts", "chat")]
        } else {
            &[]
        };
        let webhook = if i >= 28 {
            format!("catchup_p{i}_{status}")
        } else {
            format!("msg_{i}")
        };
        let mut e = event_at(&webhook, &format!("p{i}"), status, routes, t0 + i * HOUR);
        if i % 5 == 0 {
            e.kind = Kind::Training;
            e.model = Some("acme/t".into());
        }
        store.insert(e).await.unwrap();
    }
}

fn ids(page: &replicate_relay::store::browse::EventPage) -> Vec<String> {
    page.rows.iter().map(|r| r.object_id.clone()).collect()
}

#[tokio::test]
async fn events_are_paged_newest_first_under_every_filter() {
    each_backend!(|name, store| {
        let t0 = now_ms() - 40 * HOUR;
        thirty(store, t0).await;
        let q = |f: fn(&mut EventQuery)| {
            let mut q = EventQuery {
                limit: 4,
                ..EventQuery::default()
            };
            f(&mut q);
            q
        };
        let first = store.browse(q(|_| {})).await.unwrap();
        assert_eq!(ids(&first), ["p29", "p28", "p27", "p26"], "{name}");
        assert_eq!(first.rows[0].kind, Kind::Prediction);
        assert_eq!(first.rows[1].dead + first.rows[1].waiting, 0, "{name}");
        let p27 = &first.rows[2];
        assert_eq!((p27.waiting, p27.status.as_str()), (1, "failed"), "{name}");
        // The next page starts below the last row.
        let mut next = q(|_| {});
        next.before_seq = first.next_before;
        let second = store.browse(next).await.unwrap();
        assert_eq!(ids(&second), ["p25", "p24", "p23", "p22"], "{name}");

        let failed = store
            .browse(q(|q| q.status = Some("failed".into())))
            .await
            .unwrap();
        assert_eq!(ids(&failed), ["p27", "p24", "p21", "p18"], "{name}");
        let trainings = store
            .browse(q(|q| {
                q.kind = Some(Kind::Training);
                q.model = Some("acme/t".into());
            }))
            .await
            .unwrap();
        assert_eq!(ids(&trainings), ["p25", "p20", "p15", "p10"], "{name}");
        let routed = store
            .browse(q(|q| q.route = Some("alerts".into())))
            .await
            .unwrap();
        assert_eq!(ids(&routed), ids(&failed), "{name}");
        let caught = store
            .browse(q(|q| q.source = Some(Source::CatchUp)))
            .await
            .unwrap();
        assert_eq!(ids(&caught), ["p29", "p28"], "{name}");
        assert_eq!(caught.next_before, None, "{name}: nothing more to look at");
        let webhooks = store
            .browse(q(|q| q.source = Some(Source::Webhook)))
            .await
            .unwrap();
        assert_eq!(ids(&webhooks)[0], "p27", "{name}");
        let job = store
            .browse(q(|q| q.job = Some("p7".into())))
            .await
            .unwrap();
        assert_eq!(ids(&job), ["p7"], "{name}");
        assert!(
            store
                .browse(q(|q| q.job = Some("nope".into())))
                .await
                .unwrap()
                .rows
                .is_empty()
        );

        // A time range, through the first event at each end.
        let from = store.seq_at(t0 + 10 * HOUR).await.unwrap();
        let to = store.seq_at(t0 + 13 * HOUR - 1).await.unwrap();
        let mut range = q(|_| {});
        range.from_seq = from;
        range.to_seq = to;
        let ranged = store.browse(range).await.unwrap();
        assert_eq!(ids(&ranged), ["p12", "p11", "p10"], "{name}");
        assert_eq!(store.seq_at(t0 + 31 * HOUR).await.unwrap(), None, "{name}");
        assert_eq!(
            store.seq_at(t0 - HOUR).await.unwrap(),
            store
                .browse(q(|q| q.job = Some("p0".into())))
                .await
                .unwrap()
                .rows
                .first()
                .map(|r| r.seq),
            "{name}: before the first event is the first event"
        );
    });
}

#[tokio::test]
async fn a_rare_match_is_looked_for_a_window_at_a_time() {
    each_backend!(|name, store| {
        // The only failure, more than one window below the newest event.
        let now = now_ms();
        store
            .insert(event_at(
                "msg_rare",
                "rare",
                Status::Failed,
                &[("r", "chat")],
                now,
            ))
            .await
            .unwrap();
        for i in 0..(SCAN + 10) {
            let e = event_at(
                &format!("msg_{i}"),
                &format!("ok{i}"),
                Status::Succeeded,
                &[],
                now,
            );
            store.insert(e).await.unwrap();
        }
        let mut q = EventQuery {
            status: Some("failed".into()),
            limit: 10,
            ..EventQuery::default()
        };
        let first = store.browse(q.clone()).await.unwrap();
        assert!(first.rows.is_empty(), "{name}");
        assert!(first.scan_ended, "{name}: says it stopped looking");
        q.before_seq = first.next_before;
        let second = store.browse(q).await.unwrap();
        assert_eq!(ids(&second), ["rare"], "{name}");
        assert_eq!(second.next_before, None, "{name}");
        // Routed somewhere, the job is found at once, however far back;
        // looking through every event finds it a window at a time.
        let mut job = EventQuery {
            job: Some("rare".into()),
            limit: 10,
            ..EventQuery::default()
        };
        let at_once = store.browse(job.clone()).await.unwrap();
        assert_eq!(ids(&at_once), ["rare"], "{name}");
        assert_eq!(at_once.next_before, None, "{name}");
        job.scan = true;
        let windowed = store.browse(job).await.unwrap();
        assert!(windowed.rows.is_empty() && windowed.scan_ended, "{name}");
    });
}

#[tokio::test]
async fn an_event_its_activity_and_each_notifiers_load() {
    each_backend!(|name, store| {
        let t0 = (now_ms() / HOUR - 40) * HOUR;
        thirty(store, t0).await;
        // Deliver one failure's message, kill another's, fail a third.
        let now = now_ms();
        let claimed = store.claim("chat", now, 3).await.unwrap();
        assert_eq!(claimed.len(), 3, "{name}");
        let (a, b, c) = (&claimed[0], &claimed[1], &claimed[2]);
        store
            .finish(a.delivery.id, Outcome::Delivered { result: None }, now)
            .await
            .unwrap();
        let dead = Outcome::Dead {
            error: "HTTP 404".into(),
        };
        store.finish(b.delivery.id, dead, now).await.unwrap();
        let retry = Outcome::Retry {
            at_ms: now + HOUR,
            error: "HTTP 503".into(),
        };
        store.finish(c.delivery.id, retry, now).await.unwrap();

        let found = store.event(a.event.seq).await.unwrap().expect("the event");
        assert_eq!(found.event.object_id, a.event.object_id, "{name}");
        assert_eq!(found.deliveries.len(), 1);
        assert_eq!(found.deliveries[0].state, DeliveryState::Delivered);
        assert!(store.event(a.event.seq + 1_000).await.unwrap().is_none());

        let from = store.seq_at(t0 + 20 * HOUR).await.unwrap().unwrap();
        let activity = store.activity(from).await.unwrap();
        let total: i64 = activity.events.iter().map(|(_, _, n)| n).sum();
        assert_eq!(total, 10, "{name}: p20…p29");
        let hours: std::collections::BTreeSet<i64> =
            activity.events.iter().map(|(h, _, _)| *h).collect();
        assert_eq!(hours.len(), 10, "{name}: one an hour");
        assert!(
            activity
                .events
                .contains(&(t0 / HOUR + 21, "failed".into(), 1)),
            "{name}: {:?}",
            activity.events
        );

        let loads = store
            .notifier_loads(vec!["chat".into(), "mail".into()])
            .await
            .unwrap();
        assert_eq!(loads.len(), 2, "{name}: {loads:?}");
        assert_eq!(loads[1].notifier, "mail");
        assert_eq!(
            (
                loads[1].waiting,
                loads[1].dead,
                loads[1].last_error.as_deref()
            ),
            (0, 0, None)
        );
        let chat = &loads[0];
        assert_eq!(chat.notifier, "chat");
        assert_eq!(
            (chat.waiting, chat.dead, chat.held, chat.failing),
            (8, 1, 0, 1),
            "{name}"
        );
        assert_eq!(
            chat.failing_since_ms,
            Some(c.delivery.created_at_ms),
            "{name}"
        );
        assert_eq!(chat.last_error.as_deref(), Some("HTTP 503"), "{name}");

        assert!(store.size().await.unwrap() > 0, "{name}");

        // A page's dead deliveries retried together: those still dead.
        let ids = vec![a.delivery.id, b.delivery.id, c.delivery.id, 999_999];
        let requeued = store
            .retry(RetrySelector::DeadAmong(ids), now, HOUR)
            .await
            .unwrap();
        assert_eq!(requeued, 1, "{name}: only b was dead");
        let b_now = store
            .attempts(b.delivery.id)
            .await
            .unwrap()
            .unwrap()
            .delivery;
        assert_eq!(b_now.state, DeliveryState::Pending, "{name}");
        let a_now = store
            .attempts(a.delivery.id)
            .await
            .unwrap()
            .unwrap()
            .delivery;
        assert_eq!(a_now.state, DeliveryState::Delivered, "{name}: not resent");
    });
}
