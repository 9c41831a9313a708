//! One attempt at one delivery, from its render to its recorded
//! result: the message (a group's digest, or the delivery's own), the
//! records some kinds keep around a send (when an attempt began, what a
//! job's life posted), the send under a panic guard and a renewed claim,
//! and the outcome the receiver's answer calls for.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;

use super::{Shared, backoff, began, digest, life};
use crate::clock::now_ms;
use crate::event::Event;
use crate::live::Setup;
use crate::notify::{Attempt, DeliveryError};
use crate::store::{AttemptLog, Claimed, Outcome};
use crate::supervise::panic_message;
use crate::{notify, telemetry};

/// One attempt at one delivery, from render to recorded result; says
/// whether the result was recorded.
pub(super) async fn deliver(
    shared: Arc<Shared>,
    setup: Arc<Setup>,
    claimed: Claimed,
    _slot: OwnedSemaphorePermit,
) -> bool {
    let d = &claimed.delivery;
    let started_ms = now_ms();
    let started = tokio::time::Instant::now();
    let mut shown = None;
    // A notifier that panics fails this delivery, and nothing else; what it
    // asked and was answered is kept either way.
    let (ended, exchanges) = {
        let sending = notify::exchange::capture(
            AssertUnwindSafe(attempt(&shared, &setup, &claimed, &mut shown)).catch_unwind(),
        );
        let mut sending = std::pin::pin!(sending);
        // A long send (an archive of several gigabytes) keeps its claim, so
        // another instance on a shared store does not take it over midway.
        let mut keep = tokio::time::interval_at(
            tokio::time::Instant::now() + KEEP_CLAIM_EVERY,
            KEEP_CLAIM_EVERY,
        );
        loop {
            tokio::select! {
                ended = &mut sending => break ended,
                _ = keep.tick() => {
                    if let Err(e) = shared.store.keep_claim(d.id, now_ms()).await {
                        tracing::warn!(message = "Cannot extend the claim on a delivery still being sent.", delivery = d.id, error = %e);
                    }
                }
            }
        }
    };
    let outcome = match ended {
        Ok(outcome) => outcome,
        Err(panic) => panicked(d, &panic_message(panic.as_ref())),
    };
    let result = match outcome {
        Outcome::Delivered { .. } => "sent",
        Outcome::Retry { .. } => "retried",
        Outcome::Dead { .. } => "dead",
    };
    telemetry::delivery(&d.notifier, result);
    let log = AttemptLog {
        number: d.attempts,
        started_ms,
        duration_ms: millis(started.elapsed()),
        status: exchanges.last_status().map(i32::from),
        exchanges: serde_json::to_string(&exchanges).unwrap_or_default(),
        message: shown,
    };
    // The send happened (or not) whatever the store says next: keep trying to
    // record it. If that never works, the delivery stays `sending` and the
    // dispatcher puts it back once the store answers — at least once, never
    // lost.
    let mut wait = Duration::from_millis(100);
    let mut recorded = false;
    for _ in 0..8 {
        let finished =
            shared
                .store
                .finish_logged(d.id, outcome.clone(), now_ms(), Some(log.clone()));
        match finished.await {
            Ok(()) => {
                recorded = true;
                break;
            }
            Err(e) => {
                tracing::error!(message = "Cannot record a delivery result; retrying.", delivery = d.id, error = %e);
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
    shared.wake.notify_one();
    recorded
}

/// How often a send still running renews its claim on the delivery
/// (well within the shared store's lease).
const KEEP_CLAIM_EVERY: Duration = Duration::from_secs(60);

/// The pause a receiver's `Retry-After` of `asked` gets: at most
/// `max_pause`, and a millisecond more than asked, since `now` is whole
/// milliseconds cut down and Retry-After is a minimum.
pub(super) fn pause_for(asked: Duration, max_pause: Duration) -> Duration {
    asked
        .saturating_add(Duration::from_millis(1))
        .min(max_pause)
}

/// `d` in whole milliseconds, as far as an i64 of them goes.
pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Attempts at a delivery whose notifier panics before it is dead: a panic is
/// a bug, and retrying for `max_age` would only repeat it.
pub(super) const PANICS_BEFORE_DEAD: i64 = 3;

/// The outcome of an attempt whose rendering or sending panicked: retried
/// soon, dead with the panic's message after [`PANICS_BEFORE_DEAD`].
pub(super) fn panicked(d: &crate::store::Delivery, message: &str) -> Outcome {
    telemetry::delivery_panicked(&d.notifier);
    tracing::error!(message = "A notifier panicked on a delivery.", delivery = d.id, notifier = %d.notifier, attempt = d.attempts, panic = %message);
    let error = format!("the `{}` notifier panicked: {message}", d.notifier);
    if d.attempts >= PANICS_BEFORE_DEAD {
        Outcome::Dead { error }
    } else {
        Outcome::Retry {
            at_ms: now_ms() + backoff::delay(d.attempts, backoff::random_unit()).as_millis() as i64,
            error,
        }
    }
}

/// The message as the store keeps it for the dashboard: its kind and its
/// fields, or, past [`SHOWN_KEPT`] bytes, the start of its text.
fn shown(kind: &str, message: &dyn crate::render::Message) -> String {
    let whole = serde_json::json!({"kind": kind, "message": message.preview_json()}).to_string();
    if whole.len() <= SHOWN_KEPT {
        return whole;
    }
    let text = notify::exchange::cut(&message.preview(), SHOWN_KEPT);
    serde_json::json!({"kind": kind, "cut": true, "text": text}).to_string()
}

/// Bytes of a rendered message kept for the dashboard.
const SHOWN_KEPT: usize = 64 * 1024;

async fn attempt(
    shared: &Shared,
    setup: &Setup,
    claimed: &Claimed,
    shown_as: &mut Option<String>,
) -> Outcome {
    let d = &claimed.delivery;
    let (Some(notifier), Some(sender)) = (
        setup.config.notifiers.get(&d.notifier),
        setup.senders.get(&d.notifier),
    ) else {
        // Claimed under a config that had it, so not reached today; were it
        // reached, the next look at the config holds it rather than losing it.
        return Outcome::Retry {
            at_ms: now_ms() + 1_000,
            error: format!("notifier `{}` is not in the config", d.notifier),
        };
    };
    let event = match Event::from_body(&claimed.event.body, &claimed.event.query) {
        Ok(event) => event,
        Err(e) => {
            return Outcome::Dead {
                error: format!("the stored event cannot be read: {e}"),
            };
        }
    };
    // A group's member sends the group's digest; anything else its own
    // message.
    let (message, members) = match digest::route_of(setup, d) {
        Some(route) => {
            match digest::message(shared.store.as_ref(), setup, notifier, route, d).await {
                Ok((message, ids)) => (message, Some(ids)),
                Err(e) => {
                    return Outcome::Retry {
                        at_ms: now_ms() + 1_000,
                        error: format!("cannot read the group's members: {e}"),
                    };
                }
            }
        }
        None => (
            notify::message(
                &setup.templates,
                notifier,
                &d.route,
                &event,
                &claimed.event.body,
                claimed.awaited.as_ref(),
            ),
            None,
        ),
    };
    *shown_as = Some(shown(notifier.settings.kind().name(), message.as_ref()));
    let message_id = notify::message_id(
        &claimed.event.webhook_id,
        &d.route,
        &d.notifier,
        d.created_at_ms,
    );
    let earlier = if sender.records_begins() {
        match began::record(shared.store.as_ref(), &message_id, now_ms()).await {
            Ok(earlier) => earlier,
            Err(e) => {
                return Outcome::Retry {
                    at_ms: now_ms() + 1_000,
                    error: format!(
                        "cannot record the attempt's start in the store, so nothing was sent: {e}"
                    ),
                };
            }
        }
    } else {
        None
    };
    let job = &claimed.event.object_id;
    let life = match life::load(shared.store.as_ref(), setup, d, &event, job).await {
        Ok(life) => life,
        Err(e) => {
            return Outcome::Retry {
                at_ms: now_ms() + 1_000,
                error: format!("cannot read what the job's earlier messages were: {e}"),
            };
        }
    };
    let attempt = Attempt {
        number: d.attempts,
        route: &d.route,
        message_id: &message_id,
        earlier,
        life: life.as_ref(),
    };
    let result = sender.send_reporting(message.as_ref(), attempt).await;
    if let (Some(ids), Ok(_)) = (&members, &result) {
        let told = ids.len();
        let result = Some(serde_json::json!({"digest": told}).to_string());
        // Sent: if they are not all marked, the next digest tells the rest
        // again, which loses nothing.
        if let Err(e) = shared
            .store
            .group_delivered(ids.clone(), result, now_ms())
            .await
        {
            tracing::warn!(message = "Cannot mark a digest's jobs as sent; the next digest may tell them again.", delivery = d.id, error = %e);
        }
    }
    if let (Some(_), Ok(Some(thread))) = (&life, &result) {
        // Sent: if this is not kept, the job's next message is a new one
        // rather than an update, which loses nothing.
        let kept = shared
            .store
            .save_state(&life::key(d, job), thread.to_string(), now_ms())
            .await;
        if let Err(e) = kept {
            tracing::warn!(message = "Cannot keep what a job's message posted; its next message will be a new one.", delivery = d.id, error = %e);
        }
    }
    let now = now_ms();
    match result {
        Ok(report) => {
            let since_receipt_ms = now - claimed.event.received_at_ms;
            telemetry::delivery_latency(&d.notifier, since_receipt_ms.max(0) as f64 / 1000.0);
            tracing::info!(
                message = "Delivered.",
                delivery = d.id,
                notifier = %d.notifier,
                route = %d.route,
                attempt = d.attempts,
                since_receipt_ms,
            );
            Outcome::Delivered {
                result: report.map(|r| r.to_string()),
            }
        }
        Err(DeliveryError::Permanent { reason }) => {
            tracing::warn!(message = "Delivery dead: permanent error.", delivery = d.id, notifier = %d.notifier, %reason);
            Outcome::Dead { error: reason }
        }
        Err(DeliveryError::Transient {
            reason,
            retry_after,
        }) => {
            let mut delay = backoff::delay(d.attempts, backoff::random_unit());
            if let Some(asked) = retry_after {
                telemetry::rate_limited(&d.notifier);
                let after = pause_for(asked, setup.config.delivery.max_pause);
                if after < asked {
                    tracing::warn!(
                        message = "A receiver asked to wait longer than delivery.max_pause; pausing it for max_pause instead.",
                        notifier = %d.notifier,
                        asked_s = asked.as_secs(),
                        max_pause = %humantime::format_duration(setup.config.delivery.max_pause),
                    );
                }
                let until = now.saturating_add(millis(after));
                shared.pause(sender.rate_key(), until);
                // Kept in the store too: every instance on it pauses, and a
                // restart does not forget.
                if let Err(e) = shared.store.pause(&sender.rate_key(), until).await {
                    tracing::warn!(message = "Could not record a receiver's pause in the store.", notifier = %d.notifier, error = %e);
                }
                delay = delay.max(after);
            }
            let at_ms = now.saturating_add(millis(delay));
            if at_ms > d.expires_at_ms {
                let error = format!(
                    "gave up after {} attempts over {}: {reason}",
                    d.attempts,
                    humantime::format_duration(Duration::from_secs(
                        ((now - d.created_at_ms).max(0) / 1000) as u64
                    ))
                );
                tracing::warn!(message = "Delivery dead: retried until max_age.", delivery = d.id, notifier = %d.notifier, %error);
                Outcome::Dead { error }
            } else {
                tracing::info!(message = "Delivery failed; will retry.", delivery = d.id, notifier = %d.notifier, attempt = d.attempts, retry_in_ms = delay.as_millis() as u64, %reason);
                Outcome::Retry {
                    at_ms,
                    error: reason,
                }
            }
        }
    }
}
