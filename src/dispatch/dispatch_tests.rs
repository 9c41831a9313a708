//! The dispatcher's pure decisions: pauses within max_pause, and a
//! panicking notifier retried, then dead with its message.

use super::*;
use crate::store::{Delivery, DeliveryState};

#[test]
fn a_pause_is_what_was_asked_within_max_pause() {
    let hour = Duration::from_secs(3600);
    for (asked, want) in [
        (Duration::ZERO, Duration::from_millis(1)),
        (Duration::from_secs(30), Duration::from_millis(30_001)),
        (Duration::from_secs(999_999_999), hour),
        (Duration::from_secs(u64::MAX), hour),
        (Duration::MAX, hour),
    ] {
        assert_eq!(pause_for(asked, hour), want, "{asked:?}");
    }
    assert_eq!(millis(Duration::MAX), i64::MAX);
}

#[test]
fn a_panicking_notifier_is_retried_then_dead_with_the_panic_message() {
    let delivery = |attempts| Delivery {
        after: None,
        result: None,
        lane: None,
        id: 7,
        event_seq: 1,
        route: "r".into(),
        notifier: "chat".into(),
        state: DeliveryState::Sending,
        attempts,
        created_at_ms: 0,
        next_attempt_at_ms: 0,
        expires_at_ms: i64::MAX,
        last_error: None,
    };
    for attempts in 1..PANICS_BEFORE_DEAD {
        let before = now_ms();
        match panicked(&delivery(attempts), "index out of bounds") {
            Outcome::Retry { at_ms, error } => {
                assert!(at_ms > before, "attempt {attempts} waits");
                assert_eq!(error, "the `chat` notifier panicked: index out of bounds");
            }
            other => panic!("attempt {attempts}: {other:?}"),
        }
    }
    assert_eq!(
        panicked(&delivery(PANICS_BEFORE_DEAD), "index out of bounds"),
        Outcome::Dead {
            error: "the `chat` notifier panicked: index out of bounds".into()
        }
    );
}
