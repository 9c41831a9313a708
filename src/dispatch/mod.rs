//! Dispatch: from stored events to sent messages, through the outbox.
//!
//! - routing decides an event's deliveries (the intake calls
//!   [`crate::route::plan::route_event`] for each event as it stores it, so
//!   they are written in the event's own transaction);
//! - the [`Dispatcher`], a task driven by the store so a restart loses
//!   nothing, claims due deliveries per notifier (within each
//!   notifier's concurrency limit, and never while its workspace is paused by a
//!   429), renders and sends them, and records the result: delivered, retried
//!   later with exponential backoff, or dead with the reason.
//!
//! Both follow the live config: a reload changes routes and notifiers for the
//! next event and the next claim, while sends in flight finish with the config
//! they started with.

pub mod backoff;
mod began;
mod digest;
mod held;
mod life;

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::now_ms;
use crate::event::Event;
use crate::live::{Live, Setup};
use crate::notify::{Attempt, DeliveryError};
use crate::store::{Claimed, Outcome, Store};
use crate::supervise::{Supervisor, panic_message};
use crate::{notify, telemetry};

/// The running dispatcher.
pub struct Pipeline {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    dispatcher: JoinHandle<()>,
}

/// What the dispatcher and every delivery task share.
struct Shared {
    store: Arc<dyn Store>,
    /// The current config and notifier clients; swapped by a reload.
    live: Arc<Live<Setup>>,
    /// Rate key → when sending may resume (a 429's `Retry-After`).
    pauses: Mutex<HashMap<String, i64>>,
    /// Wakes the dispatcher: new deliveries, a slot freed, a reload.
    wake: tokio::sync::Notify,
}

impl Shared {
    fn paused_until(&self, rate_key: &str, now: i64) -> Option<i64> {
        self.pauses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(rate_key)
            .copied()
            .filter(|until| *until > now)
    }

    fn pause(&self, rate_key: String, until: i64) {
        let mut pauses = self.pauses.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = pauses.entry(rate_key).or_insert(until);
        *entry = (*entry).max(until);
    }
}

/// Starts dispatching, following the config in `live`, restarted by
/// `supervisor` if it panics.
pub fn start(
    store: Arc<dyn Store>,
    live: Arc<Live<Setup>>,
    supervisor: &Arc<Supervisor>,
) -> Pipeline {
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        store,
        live,
        pauses: Mutex::new(HashMap::new()),
        wake: tokio::sync::Notify::new(),
    });
    let s = shared.clone();
    let dispatcher = supervisor.spawn("dispatcher", move || {
        Dispatcher::new(s.clone()).run(stopped.clone())
    });
    Pipeline {
        shared,
        stop,
        dispatcher,
    }
}

impl Pipeline {
    /// Makes the dispatcher look again now (after a reload).
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Stops claiming new work and waits up to `deadline` for sends in flight.
    /// Whatever is unsent stays in the outbox for the next start. Returns whether
    /// everything in flight finished in time.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        let _ = self.stop.send(true);
        let mut dispatcher = self.dispatcher;
        match tokio::time::timeout(deadline, &mut dispatcher).await {
            Ok(_) => true,
            Err(_) => {
                tracing::warn!(
                    message = "Sends still in flight at the shutdown deadline; they will be retried at the next start.",
                    ?deadline
                );
                dispatcher.abort();
                false
            }
        }
    }
}

struct Dispatcher {
    shared: Arc<Shared>,
    /// Per notifier: its concurrency limit and the slots enforcing it.
    slots: BTreeMap<String, (usize, Arc<Semaphore>)>,
    /// When the pauses recorded in the store were last read.
    pauses_read_at: i64,
}

/// How often the pauses recorded in the store (by another instance on a
/// shared store, or before a restart) are read.
const PAUSES_EVERY_MS: i64 = 500;

impl Dispatcher {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            slots: BTreeMap::new(),
            pauses_read_at: i64::MIN,
        }
    }

    /// Takes in the pauses the store holds, at most every
    /// [`PAUSES_EVERY_MS`]: a 429 another instance saw pauses this one too.
    async fn read_pauses(&mut self, now: i64) {
        if now.saturating_sub(self.pauses_read_at) < PAUSES_EVERY_MS {
            return;
        }
        self.pauses_read_at = now;
        match self.shared.store.pauses(now).await {
            Ok(pauses) => {
                for (key, until) in pauses {
                    self.shared.pause(key, until);
                }
            }
            Err(e) => {
                tracing::warn!(message = "Could not read the receivers' pauses from the store.", error = %e)
            }
        }
    }

    /// The slots of notifier `name` under `setup`; a changed limit gets fresh
    /// slots (sends holding old ones finish undisturbed).
    fn slots(&mut self, setup: &Setup, name: &str) -> Arc<Semaphore> {
        let limit = setup
            .config
            .notifiers
            .get(name)
            .map_or(1, |n| n.concurrency);
        let entry = self
            .slots
            .entry(name.to_owned())
            .or_insert_with(|| (limit, Arc::new(Semaphore::new(limit))));
        if entry.0 != limit {
            *entry = (limit, Arc::new(Semaphore::new(limit)));
        }
        entry.1.clone()
    }

    /// Holds the deliveries of notifiers gone from the config, resumes
    /// those whose notifier is back and, at start, puts back those a
    /// stopped daemon left `sending`.
    async fn recover(&self, setup: &Setup, at_start: bool) {
        let names: Vec<String> = setup.senders.keys().cloned().collect();
        match self.shared.store.recover(names, now_ms(), at_start).await {
            Ok(r) => {
                if r.requeued > 0 {
                    tracing::info!(
                        message = "Sends a stopped daemon left unfinished are due again.",
                        requeued = r.requeued
                    );
                }
                for (notifier, held) in &r.held {
                    tracing::warn!(
                        message = "Deliveries held: their notifier is not in the config. Add a notifier of that name back to send them (`replicate-relay deliveries --held` lists them).",
                        notifier = %notifier,
                        held,
                    );
                }
                if r.resumed > 0 {
                    tracing::info!(
                        message = "Held deliveries resumed: their notifier is back.",
                        resumed = r.resumed
                    );
                }
            }
            Err(e) => tracing::error!(message = "Outbox recovery failed.", error = %e),
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut setup = self.shared.live.load();
        self.recover(&setup, true).await;
        let mut tasks = JoinSet::new();
        let mut held = held::Held::default();
        while !*stop.borrow() {
            while let Some(joined) = tasks.try_join_next_with_id() {
                held.ended(joined);
            }
            let current = self.shared.live.load();
            if !Arc::ptr_eq(&current, &setup) {
                setup = current;
                self.recover(&setup, false).await;
            }
            let now = now_ms();
            self.read_pauses(now).await;
            let mut claimable = Vec::new();
            let mut wake_at = now + 1_000;
            for (name, sender) in &setup.senders {
                if let Some(until) = self.shared.paused_until(&sender.rate_key(), now) {
                    wake_at = wake_at.min(until);
                    continue;
                }
                let slots = self.slots(&setup, name);
                let free = slots.available_permits();
                if free == 0 {
                    continue;
                }
                if let Some(holding) = held.to_square(name) {
                    match self.shared.store.release(name.clone(), holding, now).await {
                        Ok(released) => {
                            held.squared(name);
                            if released > 0 {
                                tracing::warn!(message = "Claims the store kept while their answer or result was lost are due again.", notifier = %name, released);
                            }
                        }
                        Err(e) => {
                            tracing::error!(message = "Cannot square claims with the store; retrying in a second.", notifier = %name, error = %e);
                            continue;
                        }
                    }
                }
                match self.shared.store.claim(name, now, free).await {
                    Ok(claimed) => {
                        for c in claimed {
                            let permit = slots
                                .clone()
                                .try_acquire_owned()
                                .expect("claimed no more than the free slots");
                            let id = c.delivery.id;
                            let task =
                                tasks.spawn(deliver(self.shared.clone(), setup.clone(), c, permit));
                            held.took(task.id(), name, id);
                        }
                    }
                    Err(e) => {
                        held.claim_failed(name);
                        // The store is failing (full disk, say): try again in
                        // a second rather than spinning on the due deliveries
                        // and flooding the log.
                        tracing::error!(message = "Cannot claim deliveries; retrying in a second.", notifier = %name, error = %e);
                        continue;
                    }
                }
                if slots.available_permits() > 0 {
                    claimable.push(name.clone());
                }
            }
            if !claimable.is_empty()
                && let Ok(Some(due)) = self.shared.store.next_due(claimable).await
            {
                wake_at = wake_at.min(due);
            }
            let wait = Duration::from_millis((wake_at - now_ms()).clamp(1, 1_000) as u64);
            tokio::select! {
                _ = self.shared.wake.notified() => {}
                _ = self.shared.store.deliveries_arrived() => {}
                _ = tokio::time::sleep(wait) => {}
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => held.ended(joined),
                _ = stop.changed() => {}
            }
        }
        // Stopping: claim nothing more, let what is in flight finish.
        while tasks.join_next().await.is_some() {}
    }
}

/// One attempt at one delivery, from render to recorded result; says
/// whether the result was recorded.
async fn deliver(
    shared: Arc<Shared>,
    setup: Arc<Setup>,
    claimed: Claimed,
    _slot: OwnedSemaphorePermit,
) -> bool {
    let d = &claimed.delivery;
    // A notifier that panics fails this delivery, and nothing else.
    let sending = AssertUnwindSafe(attempt(&shared, &setup, &claimed)).catch_unwind();
    let mut sending = std::pin::pin!(sending);
    // A long send (an archive of several gigabytes) keeps its claim, so
    // another instance on a shared store does not take it over midway.
    let mut keep = tokio::time::interval_at(
        tokio::time::Instant::now() + KEEP_CLAIM_EVERY,
        KEEP_CLAIM_EVERY,
    );
    let ended = loop {
        tokio::select! {
            ended = &mut sending => break ended,
            _ = keep.tick() => {
                if let Err(e) = shared.store.keep_claim(d.id, now_ms()).await {
                    tracing::warn!(message = "Cannot extend the claim on a delivery still being sent.", delivery = d.id, error = %e);
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
    // The send happened (or not) whatever the store says next: keep trying to
    // record it. If that never works, the delivery stays `sending` and the
    // dispatcher puts it back once the store answers — at least once, never
    // lost.
    let mut wait = Duration::from_millis(100);
    let mut recorded = false;
    for _ in 0..8 {
        match shared.store.finish(d.id, outcome.clone(), now_ms()).await {
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
fn pause_for(asked: Duration, max_pause: Duration) -> Duration {
    asked
        .saturating_add(Duration::from_millis(1))
        .min(max_pause)
}

/// `d` in whole milliseconds, as far as an i64 of them goes.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Attempts at a delivery whose notifier panics before it is dead: a panic is
/// a bug, and retrying for `max_age` would only repeat it.
const PANICS_BEFORE_DEAD: i64 = 3;

/// The outcome of an attempt whose rendering or sending panicked: retried
/// soon, dead with the panic's message after [`PANICS_BEFORE_DEAD`].
fn panicked(d: &crate::store::Delivery, message: &str) -> Outcome {
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

async fn attempt(shared: &Shared, setup: &Setup, claimed: &Claimed) -> Outcome {
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

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
