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

mod attempt;
pub mod backoff;
mod began;
mod digest;
mod held;
mod life;

use attempt::deliver;
#[cfg(test)]
use attempt::{PANICS_BEFORE_DEAD, millis, panicked, pause_for};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::now_ms;
use crate::live::{Live, Setup};
#[cfg(test)]
use crate::store::Outcome;
use crate::store::Store;
use crate::supervise::Supervisor;

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

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
