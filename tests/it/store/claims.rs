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
