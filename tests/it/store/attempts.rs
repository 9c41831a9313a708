//! The conformance suite, continued: what each attempt did is kept with
//! its delivery, read back in order, replaced when recorded again, and
//! pruned with the delivery.

use super::*;
use replicate_relay::store::AttemptLog;

fn log(number: i64, started_ms: i64, status: Option<i32>, answer: &str) -> AttemptLog {
    AttemptLog {
        number,
        started_ms,
        duration_ms: 120,
        status,
        exchanges:
            serde_json::json!({"kept": [{"request": "POST x", "status": status, "answer": answer}]})
                .to_string(),
        message: Some(format!(
            r#"{{"kind":"webhook","message":{{"n":{number}}}}}"#
        )),
    }
}

#[tokio::test]
async fn attempts_are_kept_in_order_replaced_when_recorded_again_and_pruned_with_their_delivery() {
    each_backend!(|name, store| {
        store.insert(p1_failed()).await.unwrap();
        let now = now_ms();
        let chat = store.claim("chat", now, 10).await.unwrap();
        let id = chat[0].delivery.id;
        let retry = Outcome::Retry {
            at_ms: now,
            error: "HTTP 500".into(),
        };
        store
            .finish_logged(id, retry, now, Some(log(1, now, Some(500), "busy")))
            .await
            .unwrap();
        let again = store.claim("chat", now + 1, 10).await.unwrap();
        assert_eq!(again[0].delivery.attempts, 2, "{name}");
        let dead = Outcome::Dead {
            error: "HTTP 404".into(),
        };
        // Recorded twice (a commit whose answer was lost): one attempt.
        for _ in 0..2 {
            store
                .finish_logged(
                    id,
                    dead.clone(),
                    now + 2,
                    Some(log(2, now + 1, Some(404), "gone")),
                )
                .await
                .unwrap();
        }
        // The other delivery's attempt does not mix in.
        let mail = store.claim("mail", now, 10).await.unwrap();
        store
            .finish_logged(
                mail[0].delivery.id,
                Outcome::Delivered { result: None },
                now,
                Some(log(1, now, Some(250), "ok")),
            )
            .await
            .unwrap();

        let found = store.attempts(id).await.unwrap().expect("the delivery");
        assert_eq!(found.delivery.state, DeliveryState::Dead, "{name}");
        let outcomes: Vec<(i64, &str, Option<i32>, Option<&str>)> = found
            .list
            .iter()
            .map(|a| (a.number, a.outcome.as_str(), a.status, a.error.as_deref()))
            .collect();
        assert_eq!(
            outcomes,
            [
                (1, "retry", Some(500), Some("HTTP 500")),
                (2, "dead", Some(404), Some("HTTP 404"))
            ],
            "{name}"
        );
        assert!(found.list[1].exchanges.contains("gone"), "{name}");
        assert_eq!(found.list[1].started_ms, now + 1);
        assert_eq!(found.list[1].duration_ms, 120);
        assert_eq!(
            found.message.as_deref(),
            Some(r#"{"kind":"webhook","message":{"n":2}}"#),
            "{name}: the last rendering"
        );
        // A finish without a log (an older caller) records no attempt.
        assert!(
            store.attempts(id + 1_000).await.unwrap().is_none(),
            "{name}"
        );

        // Pruned with the delivery: a new delivery that reuses nothing
        // finds none of them.
        let pruned = store.prune(now + 10).await.unwrap();
        assert_eq!(pruned.1, 2, "{name}: both finished deliveries");
        assert!(store.attempts(id).await.unwrap().is_none(), "{name}");
        // SQLite gives a freed id again: its new delivery starts with no
        // attempts, so they went with the old one.
        store
            .insert(event(
                "msg_9",
                "p9",
                Status::Failed,
                &[("r", "chat"), ("r", "mail")],
            ))
            .await
            .unwrap();
        for l in store.deliveries(DeliveryFilter::All, 10).await.unwrap() {
            let fresh = store.attempts(l.delivery.id).await.unwrap().unwrap();
            assert!(fresh.list.is_empty(), "{name}: {:?}", fresh.list);
            assert!(fresh.message.is_none(), "{name}");
        }
    });
}
