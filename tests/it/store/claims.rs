//! The conformance suite, continued: claims an instance no longer holds
//! (a claim whose commit answer was lost, a result that could not be
//! recorded) are released, and those it holds are kept.

use super::*;

#[tokio::test]
async fn claims_not_held_are_released_and_held_ones_kept() {
    each_backend!(|name, store| {
        store.insert(p1_failed()).await.unwrap();
        store
            .insert(event(
                "msg_2",
                "p2",
                Status::Failed,
                &[("r", "chat"), ("r", "mail")],
            ))
            .await
            .unwrap();
        let now = now_ms() + 1_000;
        let chat = store.claim("chat", now, 10).await.unwrap();
        assert_eq!(chat.len(), 2, "{name}");
        let mail = store.claim("mail", now, 10).await.unwrap();
        assert_eq!(mail.len(), 2, "{name}");
        let (held, lost) = (chat[0].delivery.id, chat[1].delivery.id);

        let released = store
            .release("chat".into(), vec![held], now + 5)
            .await
            .unwrap();
        assert_eq!(released, 1, "{name}: only the chat claim not held");
        assert_eq!(
            store.next_due(vec!["chat".into()]).await.unwrap(),
            Some(now + 5),
            "{name}: due at once, not at its lease's end"
        );
        let again = store.claim("chat", now + 5, 10).await.unwrap();
        assert_eq!(again.len(), 1, "{name}");
        assert_eq!(again[0].delivery.id, lost, "{name}");
        assert!(
            store.claim("mail", now + 5, 10).await.unwrap().is_empty(),
            "{name}: another notifier's claims are left alone"
        );
        store
            .finish(held, Outcome::Delivered { result: None }, now + 6)
            .await
            .unwrap();
        assert_eq!(
            store
                .release("chat".into(), vec![lost], now + 7)
                .await
                .unwrap(),
            0,
            "{name}: a delivered one is not sending"
        );
        stats_agree(name, store, "after releasing").await;
    });
}

/// p1's webhook `msg` in `status` on lifecycle route `life` to `chat`.
fn life(msg: &str, status: Status) -> NewEvent {
    let mut e = event(msg, "p1", status.clone(), &[("life", "chat")]);
    let key = (!status.is_terminal()).then(|| "p1:start".to_owned());
    e.routing.lifecycle = Some(store::Lifecycle {
        lane: "p1".into(),
        routes: vec![("life".into(), key)],
    });
    e
}

#[tokio::test]
async fn a_jobs_lifecycle_deliveries_go_one_at_a_time_oldest_first() {
    each_backend!(|name, store| {
        store
            .insert(life("msg_start", Status::Starting))
            .await
            .unwrap();
        // Later non-final webhooks of the job plan no second start.
        store
            .insert(life("msg_processing", Status::Processing))
            .await
            .unwrap();
        store
            .insert(life("msg_end", Status::Succeeded))
            .await
            .unwrap();
        // Another job's life is not held up by p1's.
        let mut other = event("msg_p2", "p2", Status::Failed, &[("life", "chat")]);
        other.routing.lifecycle = Some(store::Lifecycle {
            lane: "p2".into(),
            routes: vec![("life".into(), None)],
        });
        store.insert(other).await.unwrap();
        let now = now_ms() + 1_000;

        let first = store.claim("chat", now, 10).await.unwrap();
        let ids: Vec<(&str, &str)> = first
            .iter()
            .map(|c| (c.event.object_id.as_str(), c.event.webhook_id.as_str()))
            .collect();
        assert_eq!(
            ids,
            [("p1", "msg_start"), ("p2", "msg_p2")],
            "{name}: p1's start first, its end waits"
        );
        assert!(
            store.claim("chat", now, 10).await.unwrap().is_empty(),
            "{name}"
        );
        assert_eq!(
            store
                .next_due(vec!["chat".into()])
                .await
                .unwrap()
                .filter(|at| *at <= now),
            None,
            "{name}: the waiting end is not due (the dispatcher would spin)"
        );
        let start = first[0].delivery.id;
        store
            .finish(start, Outcome::Delivered { result: None }, now)
            .await
            .unwrap();
        let end = store.claim("chat", now, 10).await.unwrap();
        assert_eq!(end.len(), 1, "{name}");
        assert_eq!(end[0].event.webhook_id, "msg_end", "{name}");
        stats_agree(name, store, "after a job's life").await;
    });
}
