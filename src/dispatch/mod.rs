//! Dispatch: from stored events to sent messages, through the outbox.
//!
//! Two tasks, both driven by the store so a restart loses nothing:
//! - the [router] routes events that are stored but not yet routed, writing
//!   their deliveries and marking them routed in one transaction;
//! - the [`Dispatcher`] claims due deliveries per notifier (within each
//!   notifier's concurrency limit, and never while its workspace is paused by a
//!   429), renders and sends them, and records the result: delivered, retried
//!   later with exponential backoff, or dead with the reason.

pub mod backoff;
pub mod router;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::config::Config;
use crate::event::Event;
use crate::notify::{Attempt, DeliveryError, Notify};
use crate::render;
use crate::store::sqlite::now_ms;
use crate::store::{Claimed, Outcome, Store};

/// The running router and dispatcher.
pub struct Pipeline {
    stop: watch::Sender<bool>,
    router: JoinHandle<()>,
    dispatcher: JoinHandle<()>,
}

/// What every delivery task shares.
struct Shared {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    senders: BTreeMap<String, Arc<dyn Notify>>,
    /// Rate key → when sending may resume (a 429's `Retry-After`).
    pauses: Mutex<HashMap<String, i64>>,
    /// Wakes the dispatcher: new deliveries, or a slot freed.
    wake: tokio::sync::Notify,
}

impl Shared {
    fn paused_until(&self, rate_key: &str, now: i64) -> Option<i64> {
        self.pauses
            .lock()
            .unwrap()
            .get(rate_key)
            .copied()
            .filter(|until| *until > now)
    }

    fn pause(&self, rate_key: String, until: i64) {
        let mut pauses = self.pauses.lock().unwrap();
        let entry = pauses.entry(rate_key).or_insert(until);
        *entry = (*entry).max(until);
    }
}

/// Starts routing and dispatching for `config`'s notifiers.
pub fn start(
    store: Arc<dyn Store>,
    config: Arc<Config>,
    senders: BTreeMap<String, Arc<dyn Notify>>,
) -> Pipeline {
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        store,
        config,
        senders,
        pauses: Mutex::new(HashMap::new()),
        wake: tokio::sync::Notify::new(),
    });
    let router = tokio::spawn(router::run(shared.clone(), stopped.clone()));
    let dispatcher = tokio::spawn(Dispatcher::new(shared).run(stopped));
    Pipeline {
        stop,
        router,
        dispatcher,
    }
}

impl Pipeline {
    /// Stops claiming new work and waits up to `deadline` for sends in flight.
    /// Whatever is unsent stays in the outbox for the next start. Returns whether
    /// everything in flight finished in time.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        let _ = self.stop.send(true);
        let _ = self.router.await;
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
    slots: BTreeMap<String, Arc<Semaphore>>,
}

impl Dispatcher {
    fn new(shared: Arc<Shared>) -> Self {
        let slots = shared
            .config
            .notifiers
            .iter()
            .map(|(name, n)| (name.clone(), Arc::new(Semaphore::new(n.concurrency))))
            .collect();
        Self { shared, slots }
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let names: Vec<String> = self.shared.senders.keys().cloned().collect();
        match self.shared.store.recover(names, now_ms()).await {
            Ok((0, 0)) => {}
            Ok((requeued, orphaned)) => {
                tracing::info!(message = "Outbox recovered.", requeued, orphaned)
            }
            Err(e) => tracing::error!(message = "Outbox recovery failed.", error = %e),
        }
        let mut tasks = JoinSet::new();
        while !*stop.borrow() {
            let now = now_ms();
            let mut claimable = Vec::new();
            let mut wake_at = now + 1_000;
            for (name, sender) in &self.shared.senders {
                if let Some(until) = self.shared.paused_until(&sender.rate_key(), now) {
                    wake_at = wake_at.min(until);
                    continue;
                }
                let slots = &self.slots[name];
                let free = slots.available_permits();
                if free == 0 {
                    continue;
                }
                match self.shared.store.claim(name, now, free).await {
                    Ok(claimed) => {
                        for c in claimed {
                            let permit = slots
                                .clone()
                                .try_acquire_owned()
                                .expect("claimed no more than the free slots");
                            tasks.spawn(deliver(self.shared.clone(), c, permit));
                        }
                    }
                    Err(e) => {
                        tracing::error!(message = "Cannot claim deliveries.", notifier = %name, error = %e)
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
                _ = tokio::time::sleep(wait) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = stop.changed() => {}
            }
        }
        // Stopping: claim nothing more, let what is in flight finish.
        while tasks.join_next().await.is_some() {}
    }
}

/// One attempt at one delivery, from render to recorded result.
async fn deliver(shared: Arc<Shared>, claimed: Claimed, _slot: OwnedSemaphorePermit) {
    let d = &claimed.delivery;
    let outcome = attempt(&shared, &claimed).await;
    // The send happened (or not) whatever the store says next: keep trying to
    // record it. If that never works, the delivery stays `sending` and is
    // retried at the next start — at least once, never lost.
    let mut wait = Duration::from_millis(100);
    for _ in 0..8 {
        match shared.store.finish(d.id, outcome.clone(), now_ms()).await {
            Ok(()) => break,
            Err(e) => {
                tracing::error!(message = "Cannot record a delivery result; retrying.", delivery = d.id, error = %e);
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
    shared.wake.notify_one();
}

async fn attempt(shared: &Shared, claimed: &Claimed) -> Outcome {
    let d = &claimed.delivery;
    let (Some(notifier), Some(sender)) = (
        shared.config.notifiers.get(&d.notifier),
        shared.senders.get(&d.notifier),
    ) else {
        return Outcome::Dead {
            error: format!("notifier `{}` is no longer in the config", d.notifier),
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
    let message = render::message(
        &shared.config.templates,
        notifier,
        &d.route,
        &event,
        &claimed.event.body,
    );
    let attempt = Attempt {
        delivery_id: d.id,
        number: d.attempts,
        route: &d.route,
    };
    let result = sender.send(&message, attempt).await;
    let now = now_ms();
    match result {
        Ok(()) => {
            tracing::info!(
                message = "Delivered.",
                delivery = d.id,
                notifier = %d.notifier,
                route = %d.route,
                attempt = d.attempts,
                since_receipt_ms = now - claimed.event.received_at_ms,
            );
            Outcome::Delivered
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
            if let Some(after) = retry_after {
                shared.pause(sender.rate_key(), now + after.as_millis() as i64);
                delay = delay.max(after);
            }
            let at_ms = now + delay.as_millis() as i64;
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
