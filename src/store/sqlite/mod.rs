//! The SQLite store: WAL mode, `synchronous=FULL`, one writer thread doing group
//! commit.
//!
//! Why one writer: SQLite allows one writer at a time, and an fsync costs far more
//! than an insert. So every request hands its event to a channel, one thread
//! takes whatever is waiting (up to a batch limit) into a single transaction, and
//! each request awaits the outcome of the commit that carried it. Under load many
//! requests share one fsync; alone, a request pays exactly one.
//!
//! An event arrives routed, carrying its deliveries, which are inserted in the
//! event's transaction. Other outbox writes (claims, results, routing what a
//! schema-2 release left unrouted) run on the same writer thread, between
//! batches, so there is never a second writer to wait for. Duplicate webhook
//! ids are found by `dedup`, which the writer owns. Reads (health checks,
//! the `events` command) use their own connection, which WAL lets run beside
//! the writer without blocking it, and so do checkpoints (see `checkpoint`).

pub mod beside;
mod browse;
mod checkpoint;
mod connection;
pub mod daemon_lock;
mod dedup;
mod export;
mod find;
pub mod group;
pub mod outbox;
mod schema;
mod state;
mod writer;

pub use checkpoint::CheckpointLimits;
pub use connection::open_for_cli;

use connection::{Reopen, configure, lock, read_only};
use schema::migrate;
use writer::{Cmd, Pending, WriterState};

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::clock::now_ms;

use super::{
    BoxFuture, Cause, Claimed, Inserted, NewEvent, OutboxStats, Outcome, RoutingPlan, Store,
    StoreError, StoredEvent, Unrouted,
};

/// Tuning knobs; the defaults suit a small VM.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long a write waits for another process's lock before failing (503).
    /// Replicate waits a few seconds for an answer, so this stays short.
    pub busy_timeout: Duration,
    /// The most events one transaction carries.
    pub max_batch: usize,
    /// Pending inserts beyond this make new requests wait (backpressure).
    pub queue: usize,
    /// When the WAL is copied back into the database (see `checkpoint`).
    pub checkpoints: CheckpointLimits,
    /// Told `true` when an existing store's migrations start and every 5 s
    /// while they make progress, `false` when they are done: a migration that
    /// rebuilds a table takes about 45 s per million events, longer than a
    /// service manager waits for a start by default. (Creating a new store
    /// is quick and says nothing.)
    pub while_migrating: Option<fn(bool)>,
    /// Webhook ids written to the dedup index at a time (see `dedup`).
    pub dedup_batch: usize,
    /// How long after a failed write the health check tries a write of its
    /// own (see `health`).
    pub recheck_after: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(2),
            max_batch: 512,
            queue: 8192,
            checkpoints: CheckpointLimits::default(),
            while_migrating: None,
            dedup_batch: dedup::FLUSH_AT,
            recheck_after: Duration::from_secs(5),
        }
    }
}

/// The SQLite-backed [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    /// `None` once closed; inserts then fail fast with `Closed`.
    sender: Mutex<Option<mpsc::Sender<Cmd>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Read connection, behind a mutex because `Connection` is not `Sync`.
    reader: Arc<Mutex<Connection>>,
    /// What the writer reports back: last error, commit counts.
    writer_state: Arc<WriterState>,
    recheck_after: Duration,
    /// The WAL as the checkpoint thread sees it.
    #[cfg(test)]
    wal: Arc<checkpoint::WalState>,
    /// This daemon's alone until closed ([`daemon_lock`]).
    held: Mutex<Option<daemon_lock::DaemonLock>>,
}

/// How often the dispatcher looks at the store even without a
/// signal.
const POLL: Duration = Duration::from_secs(1);

/// Counters of the writer since the store was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    pub commits: u64,
    pub events: u64,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, migrates it, and starts the
    /// writer thread.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let open_err = |cause: Cause| StoreError::Open {
            path: path.display().to_string(),
            cause,
        };
        let sqlite = |e: rusqlite::Error| open_err(Cause::new(e));
        connection::private_file(path).map_err(|why| open_err(Cause::text(why)))?;
        let held = daemon_lock::take(path).map_err(|e| open_err(Cause::new(e)))?;
        let mut conn = connection::open(path).map_err(sqlite)?;
        configure(&conn, options.busy_timeout).map_err(sqlite)?;
        migrate(&mut conn, path, options.while_migrating)?;
        let dedup = dedup::Dedup::open(&conn, options.dedup_batch.max(1))
            .map_err(|e| {
                open_err(Cause::explained(format!(
                    "cannot read the dedup index, so the store may be damaged: with the daemon stopped, run `sqlite3 {} 'PRAGMA integrity_check'` and restore the store from a backup if it reports problems",
                    path.display()
                ), e))
            })?;

        // A write-protected file opens read-only without complaint. Say so now
        // and answer 503 (DESIGN.md), rather than refusing to start. SQLite
        // never makes such a connection writable, so the writer and the
        // checkpoint thread open theirs again once the file is (`Reopen`).
        let writer_state = Arc::new(WriterState::default());
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            let msg = read_only(&path.display().to_string());
            tracing::error!(message = "Store opened read-only; answering 503 until it is writable (checked every second).", path = %path.display());
            *lock(&writer_state.error) = Some((Cause::text(msg), std::time::Instant::now()));
        }

        let reader = connection::open(path).map_err(sqlite)?;
        configure(&reader, options.busy_timeout).map_err(sqlite)?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(sqlite)?;

        // Checkpoints run beside the writer, on their own connection.
        let checkpointer = connection::open(path).map_err(sqlite)?;
        configure(&checkpointer, options.busy_timeout).map_err(sqlite)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(sqlite)?;

        let (tx, rx) = mpsc::channel(options.queue);
        let state = writer_state.clone();
        let max_batch = options.max_batch.max(1);
        let dedup_batch = options.dedup_batch.max(1);
        let limits = options.checkpoints;
        let wal = checkpoint::watch_wal(&mut conn).map_err(sqlite)?;
        #[cfg(test)]
        let wal_seen = wal.clone();
        let writer_again = Reopen::new("writer", path, options.busy_timeout);
        let checkpoints_again = Reopen::new("checkpoints", path, options.busy_timeout);
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                checkpoint::run_beside(
                    &wal,
                    checkpointer,
                    checkpoints_again,
                    limits,
                    |checkpoints| {
                        writer::run(
                            (conn, dedup),
                            &writer_again,
                            rx,
                            &state,
                            max_batch,
                            dedup_batch,
                            checkpoints,
                        )
                    },
                )
            })
            .map_err(|e| open_err(Cause::explained("cannot start the writer thread", e)))?;

        Ok(Self {
            path: path.to_owned(),
            sender: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            reader: Arc::new(Mutex::new(reader)),
            writer_state,
            recheck_after: options.recheck_after,
            #[cfg(test)]
            wal: wal_seen,
            held: Mutex::new(Some(held)),
        })
    }

    /// Commits and events written since open.
    pub fn writer_stats(&self) -> WriterStats {
        WriterStats {
            commits: self.writer_state.commits.load(Ordering::Relaxed),
            events: self.writer_state.events.load(Ordering::Relaxed),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the writer thread (between insert batches) and returns its result.
    fn write<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let sender = lock(&self.sender).clone();
        Box::pin(async move {
            let sender = sender.ok_or(StoreError::Closed)?;
            let (reply, answer) = oneshot::channel();
            let job = Box::new(move |conn: &mut Connection| {
                let _ = reply.send(f(conn).map_err(|e| StoreError::Write(Cause::new(e))));
            });
            sender
                .send(Cmd::Run(job))
                .await
                .map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| writer::stopped())?
        })
    }

    /// Commits a write that leaves the data as it was, on the writer thread:
    /// success clears the last write error, failure restarts its clock. It
    /// changes `seen_upto` and back in one transaction (SQLite skips an update
    /// to the same value, writing nothing), so its page goes through the WAL
    /// and its fsync as an event's would.
    fn probe_write(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        let state = self.writer_state.clone();
        self.write(move |conn| {
            let result = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.execute("UPDATE seen_upto SET seq = seq + 1", [])?;
                tx.execute("UPDATE seen_upto SET seq = seq - 1", [])?;
                tx.commit()
            })();
            let mut error = lock(&state.error);
            match &result {
                Ok(()) => *error = None,
                Err(_) => {
                    if let Some((_, at)) = error.as_mut() {
                        *at = std::time::Instant::now();
                    }
                }
            }
            result
        })
    }

    /// Runs `f` on the read connection, off the async threads.
    fn read<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let reader = self.reader.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                f(&lock(&reader)).map_err(|e| StoreError::Read(Cause::new(e)))
            })
            .await
            .map_err(|e| StoreError::Read(Cause::new(e)))?
        })
    }
}

impl crate::store::Admin for SqliteStore {
    fn recent(&self, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.read(move |conn| outbox::recent(conn, limit))
    }

    fn find(
        &self,
        id: &str,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::store::Found>, StoreError>> {
        let id = id.to_owned();
        self.read(move |conn| find::find(conn, &id, limit))
    }

    fn export(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::store::copy::Exported>, StoreError>> {
        self.read(move |conn| export::export(conn, after_seq, limit))
    }

    fn deliveries(
        &self,
        filter: crate::store::DeliveryFilter,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::store::Listed>, StoreError>> {
        self.read(move |conn| outbox::list(conn, filter, limit))
    }

    fn waiting_by_notifier(&self) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>> {
        self.read(outbox::waiting_by_notifier)
    }

    fn attempts(
        &self,
        id: i64,
    ) -> BoxFuture<'_, Result<Option<crate::store::Attempts>, StoreError>> {
        self.read(move |conn| find::attempts(conn, id))
    }

    fn browse(
        &self,
        query: crate::store::browse::EventQuery,
    ) -> BoxFuture<'_, Result<crate::store::browse::EventPage, StoreError>> {
        self.read(move |conn| browse::browse(conn, &query))
    }

    fn seq_at(&self, at_ms: i64) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        self.read(move |conn| browse::seq_at(conn, at_ms))
    }

    fn event(&self, seq: i64) -> BoxFuture<'_, Result<Option<crate::store::Found>, StoreError>> {
        self.read(move |conn| browse::event(conn, seq))
    }

    fn activity(
        &self,
        from_seq: i64,
    ) -> BoxFuture<'_, Result<crate::store::browse::Activity, StoreError>> {
        self.read(move |conn| browse::activity(conn, from_seq))
    }

    fn notifier_loads(
        &self,
        notifiers: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<crate::store::browse::NotifierLoad>, StoreError>> {
        self.read(move |conn| browse::loads(conn, &notifiers))
    }

    fn size(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        self.read(browse::size)
    }

    fn retry(
        &self,
        selector: crate::store::RetrySelector,
        now_ms: i64,
        max_age_ms: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.write(move |conn| outbox::retry(conn, selector, now_ms, max_age_ms))
    }
}

impl Store for SqliteStore {
    fn insert(&self, event: NewEvent) -> BoxFuture<'static, Result<Inserted, StoreError>> {
        let sender = lock(&self.sender).clone();
        // While the writer restarts after a panic, answer at once (503)
        // rather than queue a request the sender will have given up on.
        let down = self.writer_state.down();
        Box::pin(async move {
            if let Some(error) = down {
                return Err(error);
            }
            let sender = sender.ok_or(StoreError::Closed)?;
            let (reply, answer) = oneshot::channel();
            sender
                .send(Cmd::Insert(Pending { event, reply }))
                .await
                .map_err(|_| StoreError::Closed)?;
            // A dropped reply means the writer died before answering: not stored.
            answer.await.map_err(|_| writer::stopped())?
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let reader = self.reader.clone();
        let write_error = lock(&self.writer_state.error).clone();
        let open = lock(&self.sender).is_some();
        Box::pin(async move {
            if !open {
                return Err(StoreError::Closed);
            }
            if let Some(error) = self.writer_state.down() {
                return Err(error);
            }
            if let Some((cause, at)) = write_error {
                // Only a commit clears a write error, and a load balancer that
                // takes a 503 instance out of rotation sends it no webhooks to
                // commit. So once writes have failed for a while with none
                // since, check with a write of our own whether the store takes
                // writes again (space freed, lock released). Not at once: a
                // one-page write can pass where the webhook just refused did
                // not (a nearly full disk), and health would contradict it.
                if at.elapsed() < self.recheck_after || self.probe_write().await.is_err() {
                    return Err(StoreError::Write(cause));
                }
            }
            tokio::task::spawn_blocking(move || {
                lock(&reader)
                    .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .optional()
                    .map(|_| ())
                    .map_err(|e| StoreError::Read(Cause::new(e)))
            })
            .await
            .map_err(|e| StoreError::Read(Cause::new(e)))?
        })
    }

    fn deliveries_arrived(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = tokio::time::timeout(POLL, self.writer_state.planned.notified()).await;
        })
    }

    fn leftovers(&self) -> Option<&dyn Unrouted> {
        Some(self)
    }

    fn claim(
        &self,
        notifier: &str,
        now_ms: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Claimed>, StoreError>> {
        let notifier = notifier.to_owned();
        self.write(move |conn| outbox::claim(conn, &notifier, now_ms, limit))
    }

    fn finish_logged(
        &self,
        id: i64,
        outcome: Outcome,
        now_ms: i64,
        log: Option<crate::store::AttemptLog>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.write(move |conn| outbox::finish(conn, id, &outcome, now_ms, log.as_ref()))
    }

    fn next_due(&self, notifiers: Vec<String>) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        self.read(move |conn| outbox::next_due(conn, &notifiers))
    }

    fn recover(
        &self,
        notifiers: Vec<String>,
        now_ms: i64,
        requeue_sending: bool,
    ) -> BoxFuture<'_, Result<crate::store::Recovered, StoreError>> {
        self.write(move |conn| outbox::recover(conn, &notifiers, now_ms, requeue_sending))
    }

    fn group_members(
        &self,
        lane: String,
        notifier: String,
        limit: usize,
        max_bytes: usize,
    ) -> BoxFuture<'_, Result<Vec<(crate::store::Delivery, crate::store::StoredEvent)>, StoreError>>
    {
        self.write(move |conn| group::members(conn, &lane, &notifier, limit, max_bytes))
    }

    fn group_delivered(
        &self,
        ids: Vec<i64>,
        result: Option<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.write(move |conn| group::delivered(conn, &ids, result.as_deref(), now_ms))
    }

    fn release(
        &self,
        notifier: String,
        holding: Vec<i64>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.write(move |conn| outbox::release(conn, &notifier, &holding, now_ms))
    }

    fn prune(&self, cutoff_ms: i64) -> BoxFuture<'_, Result<(usize, usize), StoreError>> {
        Box::pin(async move {
            let (mut events, mut deliveries) = (0, 0);
            loop {
                // One small transaction per round, queued behind intake
                // batches like any other write.
                let (e, d) = self
                    .write(move |conn| outbox::prune(conn, cutoff_ms, 1_000))
                    .await?;
                events += e;
                deliveries += d;
                if e == 0 && d == 0 {
                    return Ok((events, deliveries));
                }
                tokio::task::yield_now().await;
            }
        })
    }

    fn outbox_stats(&self) -> BoxFuture<'_, Result<OutboxStats, StoreError>> {
        self.read(outbox::stats)
    }

    fn oldest_waiting(
        &self,
        notifiers: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>> {
        self.read(move |conn| outbox::oldest_waiting(conn, &notifiers))
    }

    fn pause(&self, rate_key: &str, until_ms: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        let rate_key = rate_key.to_owned();
        self.write(move |conn| outbox::pause(conn, &rate_key, until_ms))
    }

    fn load_state(&self, name: &str) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        let name = name.to_owned();
        self.read(move |conn| state::load(conn, &name))
    }

    fn save_state(
        &self,
        name: &str,
        value: String,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let name = name.to_owned();
        self.write(move |conn| state::save(conn, &name, &value, now_ms))
    }

    fn planned(&self, keys: Vec<String>) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.read(move |conn| state::planned(conn, &keys))
    }

    fn pauses(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>> {
        self.read(move |conn| outbox::pauses(conn, now_ms))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        // Dropping the last sender lets the writer drain what is queued and exit.
        lock(&self.sender).take();
        let writer = lock(&self.writer).take();
        Box::pin(async move {
            if let Some(handle) = writer {
                let _ = tokio::task::spawn_blocking(move || handle.join()).await;
            }
            // Written for the last time: another process may take it now.
            lock(&self.held).take();
        })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Without an explicit close, still let queued commits finish.
        lock(&self.sender).take();
        if let Some(handle) = lock(&self.writer).take() {
            let _ = handle.join();
        }
    }
}

impl Unrouted for SqliteStore {
    fn unrouted(&self, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.read(move |conn| outbox::unrouted(conn, limit))
    }

    fn record_routing(&self, plans: Vec<RoutingPlan>) -> BoxFuture<'_, Result<usize, StoreError>> {
        let now = now_ms();
        self.write(move |conn| outbox::record_routing(conn, &plans, now))
    }
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;
