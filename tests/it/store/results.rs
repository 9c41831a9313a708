//! The conformance suite, continued: what a delivery waits for (`after`)
//! and what its notifier reported, one job's events found with their
//! deliveries, and each notifier's oldest waiting delivery.

use super::*;

/// p1's failure routed by `r` to `keep` and `chat`, chat after keep, and
/// by `s` to `mail`, which waits for nothing.
fn p1_after_keep() -> NewEvent {
    let mut e = event(
        "msg_after",
        "p1",
        Status::Failed,
        &[("r", "keep"), ("r", "chat"), ("s", "mail")],
    );
    e.routing.after = vec![("r".into(), "keep".into())];
    e
}

#[tokio::test]
async fn a_delivery_after_another_waits_for_it_and_sees_how_it_ended() {
    for ending in ["delivered", "dead"] {
        each_backend!(|name, store| {
            store.insert(p1_after_keep()).await.unwrap();
            let now = now_ms() + 1_000;
            assert!(
                store.claim("chat", now, 10).await.unwrap().is_empty(),
                "{name}: chat waits while keep is pending"
            );
            assert_eq!(
                store.next_due(vec!["chat".into()]).await.unwrap(),
                None,
                "{name}: a waiting delivery is not due (the dispatcher would spin)"
            );
            let mail = store.claim("mail", now, 10).await.unwrap();
            assert_eq!(mail.len(), 1, "{name}: another route does not wait");
            assert!(mail[0].awaited.is_none());
            let keep = store.claim("keep", now, 10).await.unwrap();
            assert_eq!(keep.len(), 1, "{name}");
            assert!(keep[0].awaited.is_none(), "{name}: keep waits for nothing");
            assert!(
                store.claim("chat", now, 10).await.unwrap().is_empty(),
                "{name}: nor while keep is being sent"
            );
            let outcome = match ending {
                "delivered" => Outcome::Delivered {
                    result: Some(r#"{"files":[]}"#.into()),
                },
                _ => Outcome::Dead {
                    error: "Replicate deleted the outputs".into(),
                },
            };
            store
                .finish(keep[0].delivery.id, outcome, now)
                .await
                .unwrap();
            assert!(
                store.next_due(vec!["chat".into()]).await.unwrap().is_some(),
                "{name}: due once keep ended"
            );
            let chat = store.claim("chat", now, 10).await.unwrap();
            assert_eq!(chat.len(), 1, "{name}: {ending}");
            assert_eq!(chat[0].delivery.after.as_deref(), Some("keep"));
            let awaited = chat[0].awaited.as_ref().expect("what it waited for");
            assert_eq!(awaited.notifier, "keep");
            match ending {
                "delivered" => {
                    assert_eq!(awaited.state, DeliveryState::Delivered, "{name}");
                    assert_eq!(awaited.result.as_deref(), Some(r#"{"files":[]}"#));
                }
                _ => {
                    assert_eq!(awaited.state, DeliveryState::Dead, "{name}");
                    assert_eq!(
                        awaited.last_error.as_deref(),
                        Some("Replicate deleted the outputs")
                    );
                }
            }
            stats_agree(name, store, "after waiting").await;
        });
    }
}

#[tokio::test]
async fn an_event_is_found_by_job_webhook_or_number_with_its_deliveries() {
    each_backend!(|name, store| {
        let Inserted::New(first) = store.insert(p1_failed()).await.unwrap() else {
            panic!("{name}")
        };
        store
            .insert(event("msg_2", "p1", Status::Succeeded, &[("r", "chat")]))
            .await
            .unwrap();
        store
            .insert(event("msg_3", "p2", Status::Failed, &[("r", "chat")]))
            .await
            .unwrap();
        let now = now_ms() + 1_000;
        for claimed in store.claim("mail", now, 10).await.unwrap() {
            let result = Some(r#"{"files":[]}"#.to_owned());
            let outcome = Outcome::Delivered { result };
            store
                .finish(claimed.delivery.id, outcome, now)
                .await
                .unwrap();
        }
        let by_job = store.find("p1", 10).await.unwrap();
        let seqs: Vec<&str> = by_job.iter().map(|f| f.event.webhook_id.as_str()).collect();
        assert_eq!(
            seqs,
            ["msg_2", "msg_1"],
            "{name}: the job's events, newest first"
        );
        let failed = &by_job[1];
        let routed: Vec<(&str, DeliveryState)> = failed
            .deliveries
            .iter()
            .map(|d| (d.notifier.as_str(), d.state))
            .collect();
        assert_eq!(
            routed,
            [
                ("chat", DeliveryState::Pending),
                ("mail", DeliveryState::Delivered)
            ],
            "{name}"
        );
        assert_eq!(
            failed.deliveries[1].result.as_deref(),
            Some(r#"{"files":[]}"#),
            "{name}: what the notifier reported"
        );
        assert_eq!(
            store.find("msg_3", 10).await.unwrap()[0].event.object_id,
            "p2"
        );
        let by_seq = store.find(&first.to_string(), 10).await.unwrap();
        assert_eq!(by_seq.len(), 1, "{name}");
        assert_eq!(by_seq[0].event.webhook_id, "msg_1");
        assert!(store.find("nothing", 10).await.unwrap().is_empty());
        assert_eq!(
            store.find("p1", 1).await.unwrap().len(),
            1,
            "{name}: the limit"
        );
    });
}

#[tokio::test]
async fn the_oldest_waiting_delivery_is_known_by_notifier() {
    each_backend!(|name, store| {
        let before = now_ms();
        store
            .insert(event(
                "msg_1",
                "p1",
                Status::Failed,
                &[("r", "keep"), ("r", "chat")],
            ))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        store
            .insert(event("msg_2", "p2", Status::Failed, &[("r", "keep")]))
            .await
            .unwrap();
        let oldest = store
            .oldest_waiting(vec!["chat".into(), "keep".into(), "mail".into()])
            .await
            .unwrap();
        let names: Vec<&str> = oldest.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["chat", "keep"], "{name}");
        let first = oldest[1].1;
        assert!(
            first >= before && oldest[0].1 == first,
            "{name}: {oldest:?}"
        );
        // Being sent still counts; delivered does not.
        let now = now_ms() + 1_000;
        let claimed = store.claim("keep", now, 1).await.unwrap();
        assert_eq!(
            store
                .oldest_waiting(vec!["chat".into(), "keep".into(), "mail".into()])
                .await
                .unwrap()[1]
                .1,
            first,
            "{name}"
        );
        let outcome = Outcome::Delivered { result: None };
        store
            .finish(claimed[0].delivery.id, outcome, now)
            .await
            .unwrap();
        let oldest = store
            .oldest_waiting(vec!["chat".into(), "keep".into(), "mail".into()])
            .await
            .unwrap();
        assert_eq!(oldest[0].1, first, "{name}");
        assert!(oldest[1].1 >= first + 20, "{name}: {oldest:?}");
    });
}

#[tokio::test]
async fn named_values_are_kept_and_planned_job_ends_are_known() {
    each_backend!(|name, store| {
        assert_eq!(store.load_state("catch-up").await.unwrap(), None, "{name}");
        let at = now_ms();
        store
            .save_state("catch-up", "2026-12-03T10:00:00Z".into(), at)
            .await
            .unwrap();
        store
            .save_state("catch-up", "2026-12-03T11:00:00Z".into(), at + 1)
            .await
            .unwrap();
        assert_eq!(
            store.load_state("catch-up").await.unwrap().as_deref(),
            Some("2026-12-03T11:00:00Z"),
            "{name}: the latest value"
        );
        assert_eq!(store.load_state("other").await.unwrap(), None);

        store.insert(p1_failed()).await.unwrap();
        // Stored, but routed nowhere: no delivery was planned for it.
        store
            .insert(event("msg_9", "p9", Status::Succeeded, &[]))
            .await
            .unwrap();
        let keys = ["p1:failed", "p1:succeeded", "p9:succeeded", "p2:failed"]
            .map(String::from)
            .to_vec();
        assert_eq!(store.planned(keys).await.unwrap(), ["p1:failed"], "{name}");
    });
}

/// When a delivery's attempts began is kept as long as deliveries are:
/// retention deletes the old records and nothing else.
#[tokio::test]
async fn attempt_begins_go_with_the_retention_and_other_values_stay() {
    each_backend!(|name, store| {
        let at = now_ms();
        let old = format!("{}msg_relay_old", store::BEGAN);
        let new = format!("{}msg_relay_new", store::BEGAN);
        store
            .save_state(&old, "1 2".into(), at - 10_000)
            .await
            .unwrap();
        store.save_state(&new, "3 4".into(), at).await.unwrap();
        store
            .save_state("catch-up", "x".into(), at - 10_000)
            .await
            .unwrap();
        store.prune(at - 5_000).await.unwrap();
        assert_eq!(store.load_state(&old).await.unwrap(), None, "{name}");
        assert_eq!(
            store.load_state(&new).await.unwrap().as_deref(),
            Some("3 4")
        );
        assert_eq!(
            store.load_state("catch-up").await.unwrap().as_deref(),
            Some("x"),
            "{name}: not a begin record"
        );
    });
}
