//! Catching up on webhooks that never came: Replicate retries a final
//! webhook for about a minute, so a relay down longer never hears of the
//! jobs that ended meanwhile. One round ([`once`]) lists the account's
//! predictions created since the covered time minus a look-back (a long
//! training can end a day after it was created) and its trainings back to
//! the same time, and stores each finished job the store has not taken in
//! as an event, routed and delivered as any other: its webhook id is
//! `catchup_<job>_<status>`, so a round that finds it again stores nothing
//! twice, and a late webhook of the same end plans no second delivery (one
//! job end notifies once, whatever brought it). The covered time is kept
//! in the store, for a restart and for every instance.
//!
//! A listed job carries the webhook URL it was created with, when the API
//! gives it: its query is the event's, so routes on `query.<param>` match
//! as they would have.

use std::time::Duration;

use serde_json::Value;

use super::client::{Api, ApiError};
use crate::config::Config;
use crate::config::replicate::Jobs;
use crate::event::{Event, Kind, Status};
use crate::route::plan::{Received, route_event};
use crate::store::{Inserted, NewEvent, Store, StoreError};

/// Where the covered time is kept ([`Store::save_state`]), in
/// milliseconds since the Unix epoch.
pub const COVERED: &str = "replicate.catch_up.covered_ms";

/// What stops a round; the next one starts again from the covered time.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caught {
    /// Finished jobs listed in the window.
    pub finished: usize,
    /// Of those, stored now: their webhooks never came.
    pub stored: usize,
    /// Of those, left out: with `jobs = "ours"`, their webhook did not
    /// point at this relay (or the listing did not say where it pointed).
    pub others: usize,
}

/// The least time between two pages a round asks for: ten a second at
/// most, a fifth of the 3,000 a minute Replicate allows an account for
/// everything but creates, so a long catch-up leaves room for the
/// account's other clients.
const PAGE_GAP: Duration = Duration::from_millis(100);

/// Asks for pages no faster than [`PAGE_GAP`].
struct Paced<'a> {
    api: &'a Api,
    last: Option<tokio::time::Instant>,
}

impl Paced<'_> {
    async fn page(&mut self, at: &str) -> Result<(Vec<Value>, Option<String>), ApiError> {
        if let Some(last) = self.last {
            tokio::time::sleep_until(last + PAGE_GAP).await;
        }
        self.last = Some(tokio::time::Instant::now());
        self.api.page(at).await
    }
}

/// The prefix of the webhook ids catch-up gives the events it stores.
pub const WEBHOOK_PREFIX: &str = "catchup_";

/// Where a stored event came from, for `events`: `catch-up` for one this
/// module stored, `webhook` for one Replicate sent.
pub fn source(webhook_id: &str) -> &'static str {
    if webhook_id.starts_with(WEBHOOK_PREFIX) {
        "catch-up"
    } else {
        "webhook"
    }
}

/// One round at `now_ms`: every finished job created since the covered
/// time minus `look_back` that the store has not taken in is stored.
pub async fn once(
    api: &Api,
    store: &dyn Store,
    config: &Config,
    look_back: Duration,
    now_ms: i64,
) -> Result<Caught, CatchUpError> {
    let covered = store
        .load_state(COVERED)
        .await?
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(now_ms);
    let since_ms = covered.min(now_ms) - look_back.as_millis() as i64;
    let since = super::rfc3339(since_ms);
    let mut caught = Caught::default();
    let mut api = Paced { api, last: None };
    // A page at a time: a busy account lists many thousands of jobs a day.
    let mut next = Some(format!("v1/predictions?created_after={since}"));
    while let Some(at) = next.take() {
        let (page, after) = api.page(&at).await?;
        let jobs = page.into_iter().map(|p| (Kind::Prediction, p)).collect();
        take_in(store, config, jobs, now_ms, &mut caught).await?;
        next = after;
    }
    // Trainings take no date filter: newest first, until a page ends
    // before the window.
    let mut next = Some("v1/trainings".to_owned());
    while let Some(at) = next.take() {
        let (page, after) = api.page(&at).await?;
        let more = page
            .last()
            .and_then(created_at)
            .is_some_and(|oldest| oldest >= since);
        let jobs = page
            .into_iter()
            .filter(|t| created_at(t).is_some_and(|at| at >= since))
            .map(|t| (Kind::Training, t))
            .collect();
        take_in(store, config, jobs, now_ms, &mut caught).await?;
        next = after.filter(|_| more);
    }
    store
        .save_state(COVERED, now_ms.to_string(), now_ms)
        .await?;
    Ok(caught)
}

/// How long a round may hold the lock that keeps other instances on the
/// store from catching up at the same time.
const ROUND_LEASE: Duration = Duration::from_secs(10 * 60);

/// The lock's name in the store shared by several instances.
const LOCK: &str = "replicate/catch-up";

/// The daemon's catching up, as a supervised task: a round at the start,
/// then one every `catch_up` of the config live at that moment (a reload
/// turns it on, off, or changes it); nothing while it is off or has no
/// token. On a store several instances share, one round at a time.
pub async fn run(
    store: std::sync::Arc<dyn Store>,
    live: std::sync::Arc<crate::live::Live<crate::live::Setup>>,
) {
    let mut api: Option<(String, String, Api)> = None;
    loop {
        let setup = live.load();
        let config = &setup.config;
        let (Some(every), Some(token)) = (config.replicate.catch_up, &config.replicate.token)
        else {
            tokio::time::sleep(Duration::from_secs(30)).await;
            continue;
        };
        let same = api.as_ref().is_some_and(|(url, t, a)| {
            *url == config.replicate.api_url
                && t == token.expose()
                && a.within() == config.replicate.timeout
        });
        if !same {
            match Api::new(&config.replicate.api_url, token.clone())
                .map(|a| a.answering_within(config.replicate.timeout))
            {
                Ok(a) => {
                    api = Some((
                        config.replicate.api_url.clone(),
                        token.expose().to_owned(),
                        a,
                    ))
                }
                Err(e) => {
                    tracing::error!(message = "Cannot set up the Replicate API client; not catching up.", error = %e);
                    tokio::time::sleep(every).await;
                    continue;
                }
            }
        }
        let Some((_, _, client)) = &api else {
            continue;
        };
        round(client, store.as_ref(), config, every).await;
        tokio::time::sleep(every).await;
    }
}

/// One round, under the shared lock when there is one; its result logged.
async fn round(api: &Api, store: &dyn Store, config: &Config, every: Duration) {
    let now = crate::clock::now_ms();
    if let Some(shared) = store.shared() {
        let lease = now + ROUND_LEASE.max(every).as_millis() as i64;
        match shared.lock(LOCK, now, lease).await {
            Ok(crate::store::Lock::Taken) => {}
            Ok(crate::store::Lock::HeldBy { holder, .. }) => {
                tracing::debug!(message = "Another instance is catching up.", %holder);
                return;
            }
            Err(e) => {
                tracing::warn!(message = "Cannot take the catch-up lock; trying at the next round.", error = %e);
                return;
            }
        }
    }
    match once(api, store, config, config.replicate.look_back, now).await {
        Ok(Caught {
            stored: 0,
            finished,
            others,
        }) => {
            tracing::debug!(
                message = "Caught up: every finished job was already in.",
                finished,
                others
            )
        }
        Ok(Caught {
            stored,
            finished,
            others,
        }) => tracing::warn!(
            message = "Caught up on jobs whose webhooks never came; they are routed now.",
            stored,
            finished,
            others
        ),
        Err(e) => tracing::warn!(
            message = "Catching up failed; trying again at the next round.",
            error = %e,
            transient = matches!(&e, CatchUpError::Api(a) if a.is_transient()),
        ),
    }
    if let Some(shared) = store.shared() {
        let _ = shared.unlock(LOCK).await;
    }
}

/// Stores those of `jobs` that are finished and that the store has not
/// taken in, counting them into `caught`.
async fn take_in(
    store: &dyn Store,
    config: &Config,
    jobs: Vec<(Kind, Value)>,
    now_ms: i64,
    caught: &mut Caught,
) -> Result<(), CatchUpError> {
    let mut finished: Vec<(Kind, Value, Status, String)> = jobs
        .into_iter()
        .filter_map(|(kind, job)| {
            let status = Status::parse(job["status"].as_str()?);
            let id = job["id"].as_str()?.to_owned();
            status.is_terminal().then_some((kind, job, status, id))
        })
        .collect();
    caught.finished += finished.len();
    if config.replicate.jobs == Jobs::Ours {
        let all = finished.len();
        finished.retain(|(_, job, _, _)| {
            job["webhook"]
                .as_str()
                .is_some_and(|w| config.replicate.is_ours(w))
        });
        caught.others += all - finished.len();
    }
    let keys: Vec<String> = finished
        .iter()
        .map(|(_, _, status, id)| format!("{id}:{}", status.as_str()))
        .collect();
    let planned: std::collections::HashSet<String> =
        store.planned(keys.clone()).await?.into_iter().collect();
    for ((kind, job, status, id), key) in finished.into_iter().zip(keys) {
        if planned.contains(&key) {
            continue;
        }
        let query = job["webhook"]
            .as_str()
            .and_then(|w| url::Url::parse(w).ok())
            .and_then(|u| u.query().map(str::to_owned))
            .unwrap_or_default();
        let webhook_id = format!("{WEBHOOK_PREFIX}{id}_{}", status.as_str());
        let body = serde_json::to_vec(&job).unwrap_or_default();
        let model = job["model"].as_str().map(str::to_owned);
        let event =
            Event::for_routing_from(job, crate::event::parse_query(&query), kind, status.clone());
        let routing = route_event(
            config,
            &event,
            Received {
                webhook_id: &webhook_id,
                object_id: &id,
                received_at_ms: now_ms,
            },
        );
        let inserted = store
            .insert(NewEvent {
                webhook_id,
                object_id: id,
                kind,
                status,
                model,
                query,
                body: body.into(),
                received_at_ms: now_ms,
                routing,
            })
            .await?;
        if matches!(inserted, Inserted::New(_)) {
            caught.stored += 1;
        }
    }
    Ok(())
}

fn created_at(job: &Value) -> Option<String> {
    job["created_at"].as_str().map(str::to_owned)
}
