//! The store: where an event is made durable before the intake answers 2xx, and
//! where every planned notification waits (the outbox) until it is delivered or
//! dead.
//!
//! [`Store`] is the interface the rest of the daemon uses, so a PostgreSQL backend
//! can sit beside [`sqlite::SqliteStore`] later without touching intake, routing
//! or dispatch. Writes are asynchronous (the caller awaits its own commit, which
//! may be shared with other requests).

mod attempts;
pub mod browse;
pub mod copy;
mod error;
pub mod postgres;
mod routing;
pub mod sqlite;

use bytes::Bytes;

use crate::event::{Kind, Status};

pub use attempts::{AttemptLog, AttemptRecord, Attempts, outcome_name};
pub use error::{Cause, StoreError};
pub(crate) use routing::NOT_WAITING;
pub use routing::{BEGAN, Group, KEPT_WITH_DELIVERIES, Lifecycle, Routing, RoutingPlan, THREAD};
pub use sqlite::SqliteStore;

/// A boxed future, as the traits' methods return (`futures-util`'s).
pub use futures_util::future::BoxFuture;

/// An event the intake has verified and wants stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The sender's `webhook-id`: the same across retries, so it is the dedup key.
    pub webhook_id: String,
    /// The prediction or training id.
    pub object_id: String,
    pub kind: Kind,
    pub status: Status,
    pub model: Option<String>,
    /// The webhook URL's raw query string (routing hints such as `team=vision`).
    pub query: String,
    /// The body exactly as received: the signature covers these bytes.
    pub body: Bytes,
    /// Milliseconds since the Unix epoch.
    pub received_at_ms: i64,
    /// The deliveries routing decided on at intake, written in the same
    /// transaction as the event (no second write, no reading the body back).
    pub routing: Routing,
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Newly stored under this sequence number.
    New(i64),
    /// This `webhook-id` was already stored, under this sequence number.
    Duplicate(i64),
}

/// A stored event, as listed by `replicate-relay events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub webhook_id: String,
    pub object_id: String,
    pub kind: Kind,
    pub status: Status,
    pub model: Option<String>,
    pub query: String,
    pub body: Vec<u8>,
    pub received_at_ms: i64,
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// Claimed by a worker; back to pending if the daemon stops before it ends.
    Sending,
    Delivered,
    /// Given up: a permanent error, or transient ones past `max_age`.
    Dead,
    /// Its notifier is not in the config: kept, unsent, until a notifier of
    /// that name returns (then pending again). Never pruned.
    Held,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sending => "sending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
            DeliveryState::Held => "held",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryState::Pending,
            "sending" => DeliveryState::Sending,
            "delivered" => DeliveryState::Delivered,
            "dead" => DeliveryState::Dead,
            "held" => DeliveryState::Held,
            _ => return None,
        })
    }
}

/// One planned notification: an event, sent by a route to a notifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub event_seq: i64,
    pub route: String,
    pub notifier: String,
    pub state: DeliveryState,
    /// Attempts started so far (including one in progress).
    pub attempts: i64,
    pub created_at_ms: i64,
    pub next_attempt_at_ms: i64,
    pub expires_at_ms: i64,
    pub last_error: Option<String>,
    /// The notifier on the same event and route it waits for, if any.
    pub after: Option<String>,
    /// What the notifier reported when it delivered (an archive's
    /// manifest, as JSON).
    pub result: Option<String>,
    /// The lane it goes in one at a time with others: its job's on a
    /// lifecycle route, its group's on a grouped one.
    pub lane: Option<String>,
}

/// A delivery claimed for sending, with the event it carries.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    pub event: StoredEvent,
    /// The delivery it waited for, as that one ended.
    pub awaited: Option<Delivery>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent; with what the notifier reported, if anything.
    Delivered {
        result: Option<String>,
    },
    /// Try again at this time.
    Retry {
        at_ms: i64,
        error: String,
    },
    Dead {
        error: String,
    },
}

/// Which deliveries to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFilter {
    All,
    /// Pending or sending.
    Pending,
    Dead,
    /// Waiting for a notifier that is not in the config.
    Held,
}

/// Outbox counters for metrics and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Pending or sending.
    pub pending: i64,
    pub dead: i64,
    /// Waiting for a notifier that is not in the config.
    pub held: i64,
    /// When the oldest pending delivery was created.
    pub oldest_pending_ms: Option<i64>,
}

/// What [`Store::recover`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Left `sending` by a daemon that stopped; pending again.
    pub requeued: usize,
    /// Held just now, by notifier: its name is not in the config.
    pub held: Vec<(String, usize)>,
    /// Held before, pending again: a notifier of that name is back.
    pub resumed: usize,
}

/// One event with every delivery it got, for `replicate-relay events show`.
#[derive(Debug, Clone)]
pub struct Found {
    pub event: StoredEvent,
    /// In the order they were planned.
    pub deliveries: Vec<Delivery>,
}

/// A delivery with a summary of its event, for `replicate-relay deliveries`.
#[derive(Debug, Clone)]
pub struct Listed {
    pub delivery: Delivery,
    pub kind: Kind,
    pub object_id: String,
    pub status: Status,
}

/// What `replicate-relay retry` and the dashboard requeue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrySelector {
    /// This delivery, even a delivered one (a deliberate resend).
    One(i64),
    AllDead,
    /// Those of these deliveries that are dead now (a page of them, one
    /// of which may have been retried meanwhile).
    DeadAmong(Vec<i64>),
}

/// What the command line asks of a store, beside a running daemon or in
/// it: the events and the outbox, and requeuing by hand. Every [`Store`]
/// answers these; [`open_admin`] opens a store for them alone.
pub trait Admin: Send + Sync {
    /// The most recent events, newest first.
    fn recent(&self, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>>;

    /// The events of job `id` (or of webhook `id`, or numbered `id` in the
    /// store), newest first, at most `limit`, each with its deliveries.
    fn find(&self, id: &str, limit: usize) -> BoxFuture<'_, Result<Vec<Found>, StoreError>>;

    /// Deliveries matching `filter`, newest first, with their events' summary.
    fn deliveries(
        &self,
        filter: DeliveryFilter,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Listed>, StoreError>>;

    /// Delivery `id` with every attempt recorded for it, if it is stored.
    fn attempts(&self, id: i64) -> BoxFuture<'_, Result<Option<Attempts>, StoreError>>;

    /// A page of events matching `query`, newest first, each with its
    /// deliveries counted ([`browse`]).
    fn browse(
        &self,
        query: browse::EventQuery,
    ) -> BoxFuture<'_, Result<browse::EventPage, StoreError>>;

    /// The first event received at or after `at_ms`, by sequence number.
    fn seq_at(&self, at_ms: i64) -> BoxFuture<'_, Result<Option<i64>, StoreError>>;

    /// Event number `seq` with its deliveries.
    fn event(&self, seq: i64) -> BoxFuture<'_, Result<Option<Found>, StoreError>>;

    /// Events by hour and status, and delivery times, from event `from_seq` on.
    fn activity(&self, from_seq: i64) -> BoxFuture<'_, Result<browse::Activity, StoreError>>;

    /// The deliveries of each of `notifiers` waiting, held, dead and failing.
    fn notifier_loads(
        &self,
        notifiers: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<browse::NotifierLoad>, StoreError>>;

    /// The bytes the store takes.
    fn size(&self) -> BoxFuture<'_, Result<i64, StoreError>>;

    /// Deliveries still to send (pending, sending or held), counted by
    /// notifier name, in name order: what `check` compares with a config.
    fn waiting_by_notifier(&self) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>>;

    /// Requeues deliveries for an attempt now, with a fresh `max_age_ms`
    /// window. A delivered one is sent again only when named by id (a
    /// deliberate resend); one being sent is left alone. Returns how many.
    fn retry(
        &self,
        selector: RetrySelector,
        now_ms: i64,
        max_age_ms: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// Up to `limit` events after sequence number `after_seq`, oldest
    /// first, each with what it still has to send: what `store copy`
    /// carries to another store.
    fn export(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<copy::Exported>, StoreError>>;
}

/// Opens the store `config` names for the daemon, creating or migrating
/// it as needed; `while_migrating` is told when a long migration starts
/// (`true`) and ends. The one place a backend is chosen: a second one is a
/// folder beside `sqlite/` and an arm here.
pub async fn open(
    config: &crate::config::StoreConfig,
    while_migrating: Option<fn(bool)>,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if let Some(target) = &config.postgres {
        return Ok(std::sync::Arc::new(
            postgres::PostgresStore::open(target).await?,
        ));
    }
    let path = config.path.clone();
    let options = sqlite::SqliteOptions {
        while_migrating,
        ..sqlite::SqliteOptions::default()
    };
    let opened = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path, options))
        .await
        .map_err(|e| StoreError::Open {
            path: config.path.display().to_string(),
            cause: Cause::explained("opening the store stopped", e),
        })??;
    Ok(std::sync::Arc::new(opened))
}

/// Opens the store `config` names for [`Admin`] work (the command line)
/// beside a daemon that may be running on it: it creates nothing and
/// migrates nothing, and leaves what the daemon owns (its writer, the dedup
/// index) alone.
pub fn open_admin(config: &crate::config::StoreConfig) -> Result<Box<dyn Admin>, StoreError> {
    if let Some(target) = &config.postgres {
        return Ok(Box::new(postgres::PostgresAdmin::open(target)?));
    }
    Ok(Box::new(sqlite::beside::Beside::open(&config.path)?))
}

/// Who is writing the store `config` names: a description of each daemon
/// running on it (none when it is quiet), so `store copy` can refuse to
/// copy a store that is still taking webhooks.
pub async fn daemons_on(config: &crate::config::StoreConfig) -> Result<Vec<String>, StoreError> {
    if let Some(target) = &config.postgres {
        return postgres::PostgresAdmin::open(target)?.daemons().await;
    }
    Ok(sqlite::daemon_lock::held(&config.path)
        .then(|| format!("a daemon on this host holds {}", config.path.display()))
        .into_iter()
        .collect())
}

/// The durable event store.
pub trait Store: Admin + Send + Sync + 'static {
    /// Stores `event` and resolves once it is committed to disk (or known to be a
    /// duplicate). Never resolves `Ok` for data that is not durable.
    fn insert(&self, event: NewEvent) -> BoxFuture<'static, Result<Inserted, StoreError>>;

    /// `Ok` when the store can be read and takes writes: its last write
    /// succeeded, or, after one failed, a write made to check succeeds.
    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Finishes pending writes and stops the writer. Inserts after this fail with
    /// [`StoreError::Closed`].
    fn close(&self) -> BoxFuture<'_, ()>;

    /// Resolves when an insert has created deliveries (or after a while).
    fn deliveries_arrived(&self) -> BoxFuture<'_, ()>;

    /// The events an older release stored unrouted, when this backend can
    /// hold any ([`Unrouted`]); none for a backend that never could.
    fn leftovers(&self) -> Option<&dyn Unrouted> {
        None
    }

    /// Marks up to `limit` due deliveries of `notifier` as sending and returns them.
    fn claim(
        &self,
        notifier: &str,
        now_ms: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Claimed>, StoreError>>;

    /// Records how an attempt ended.
    fn finish(
        &self,
        id: i64,
        outcome: Outcome,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.finish_logged(id, outcome, now_ms, None)
    }

    /// Records how an attempt ended and, with `log`, what it did (kept
    /// until the delivery is pruned); recording the same attempt again
    /// replaces it.
    fn finish_logged(
        &self,
        id: i64,
        outcome: Outcome,
        now_ms: i64,
        log: Option<AttemptLog>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// When the earliest pending delivery of any of `notifiers` is due.
    fn next_due(&self, notifiers: Vec<String>) -> BoxFuture<'_, Result<Option<i64>, StoreError>>;

    /// Brings the outbox in line with the notifiers in the config: pending
    /// deliveries of a notifier not in `notifiers` are held (kept, never
    /// sent or pruned), held ones whose notifier is back are pending again
    /// (due now, with as long a window ahead as they had), and with
    /// `requeue_sending` (at start) those a stopped or crashed daemon left
    /// `sending` go back to pending (at-least-once).
    fn recover(
        &self,
        notifiers: Vec<String>,
        now_ms: i64,
        requeue_sending: bool,
    ) -> BoxFuture<'_, Result<Recovered, StoreError>>;

    /// Up to `limit` deliveries of group `lane` for `notifier` still to be
    /// sent (the one claimed included), oldest first, with their events,
    /// as long as the events' bodies come to at most `max_bytes` (the first
    /// always): what one digest tells.
    fn group_members(
        &self,
        lane: String,
        notifier: String,
        limit: usize,
        max_bytes: usize,
    ) -> BoxFuture<'_, Result<Vec<(Delivery, StoredEvent)>, StoreError>>;

    /// Marks deliveries `ids` (a digest's members) delivered, together,
    /// with `result`; returns how many were still to be sent.
    fn group_delivered(
        &self,
        ids: Vec<i64>,
        result: Option<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// Puts this instance's claims on `notifier`'s deliveries back to
    /// pending, due at `now_ms`, except those in `holding` (still being
    /// sent): a claim whose commit went through while its answer was lost
    /// (the store went away mid-commit), or whose result could not be
    /// recorded, would otherwise wait out its lease. Returns how many.
    fn release(
        &self,
        notifier: String,
        holding: Vec<i64>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// Deletes finished (delivered or dead) deliveries that ended before
    /// `cutoff_ms`, and events received before it that have nothing left to
    /// send (nothing pending, sending or held), a little at a time.
    /// Returns (events, deliveries) deleted.
    fn prune(&self, cutoff_ms: i64) -> BoxFuture<'_, Result<(usize, usize), StoreError>>;

    /// Renews this instance's claim on delivery `id`, still being sent at
    /// `now_ms`, so that no other instance takes it over; a store with one
    /// daemon has no lease to renew.
    fn keep_claim(&self, id: i64, now_ms: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        let _ = (id, now_ms);
        Box::pin(async { Ok(()) })
    }

    /// Outbox counters.
    fn outbox_stats(&self) -> BoxFuture<'_, Result<OutboxStats, StoreError>>;

    /// When the oldest delivery still to send (pending or sending) was
    /// made, for each of `notifiers` that has one: how long an archive has
    /// left before Replicate deletes the files. It reads every waiting
    /// delivery of those notifiers, so it is asked for the few whose wait
    /// matters, at a scrape.
    fn oldest_waiting(
        &self,
        notifiers: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>>;

    /// Records that the receiver known by `rate_key` asked for nothing to be
    /// sent before `until_ms` (a 429's `Retry-After`); a later pause already
    /// recorded stays.
    fn pause(&self, rate_key: &str, until_ms: i64) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The pauses still running at `now_ms`, by rate key: every instance on
    /// the store keeps them.
    fn pauses(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>>;

    /// The value kept under `name` ([`Store::save_state`]), if any.
    fn load_state(&self, name: &str) -> BoxFuture<'_, Result<Option<String>, StoreError>>;

    /// Keeps `value` under `name`, across restarts and for every instance.
    fn save_state(
        &self,
        name: &str,
        value: String,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Those of `keys` (dedup keys: `job:status`) under which some delivery
    /// was planned: job ends already taken in, by a webhook or otherwise.
    fn planned(&self, keys: Vec<String>) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// Files and locks every instance on this store sees ([`Shared`]), when
    /// several instances can share it; none for a store of one host, whose
    /// daemon keeps such files on its own disk.
    fn shared(&self) -> Option<&dyn Shared> {
        None
    }
}

/// What asking for a lock found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lock {
    /// This instance holds it, until the time asked for.
    Taken,
    /// Another instance holds it until `until_ms`.
    HeldBy { holder: String, until_ms: i64 },
}

/// Named files and leased locks shared by every instance on a store, as
/// Caddy's storage is: the ACME account, certificate and key, the answers
/// to an order's challenges (so whichever instance the CA reaches can
/// answer), and the lock under which one instance orders at a time.
pub trait Shared: Send + Sync {
    /// The file called `name`, if there is one.
    fn load(&self, name: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>>;

    /// Writes every file in `files` (name, contents), all or none.
    fn save(&self, files: Vec<(String, Vec<u8>)>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Deletes the files whose names start with `prefix`; returns how many.
    fn delete(&self, prefix: &str) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// Takes the lock `name` for this instance until `until_ms` when it is
    /// free, expired (at `now_ms`) or already this instance's (then the
    /// lease moves to `until_ms`).
    fn lock(
        &self,
        name: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> BoxFuture<'_, Result<Lock, StoreError>>;

    /// Lets go of the lock `name` if this instance holds it.
    fn unlock(&self, name: &str) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// Events stored without routing by the releases before routing moved into
/// the intake (SQLite schema 2, whose router task routed them afterwards).
/// A store upgraded from one may still hold some; the daemon routes them
/// once at start, before it listens. A backend that never held such events
/// (every new one) does not implement this.
pub trait Unrouted {
    /// Events not yet routed, oldest first.
    fn unrouted(&self, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>>;

    /// Creates the planned deliveries and marks their events routed, atomically.
    /// Returns how many deliveries were created (duplicates are not).
    fn record_routing(&self, plans: Vec<RoutingPlan>) -> BoxFuture<'_, Result<usize, StoreError>>;
}
