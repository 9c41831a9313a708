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
mod checkpoint;
mod dedup;
pub mod outbox;

pub use checkpoint::CheckpointLimits;

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::clock::now_ms;

use super::{
    BoxFuture, Cause, Claimed, Inserted, NewEvent, OutboxStats, Outcome, RoutingPlan, Store,
    StoreError, StoredEvent, Unrouted,
};

/// Forward-only schema migrations; `PRAGMA user_version` is the index of the last
/// one applied. Never edit a shipped entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the events table. `webhook_id` is unique because it is the dedup key.
    "CREATE TABLE events (
        seq            INTEGER PRIMARY KEY,
        webhook_id     TEXT    NOT NULL UNIQUE,
        object_id      TEXT    NOT NULL,
        kind           TEXT    NOT NULL,
        status         TEXT    NOT NULL,
        model          TEXT,
        query          TEXT    NOT NULL,
        body           BLOB    NOT NULL,
        received_at_ms INTEGER NOT NULL
    );",
    // 2: the outbox. Events stored before it existed count as routed, so an
    // upgrade does not notify about old jobs.
    "ALTER TABLE events ADD COLUMN routed_at_ms INTEGER;
     UPDATE events SET routed_at_ms = received_at_ms;
     CREATE INDEX events_unrouted ON events (seq) WHERE routed_at_ms IS NULL;
     CREATE TABLE deliveries (
         id                 INTEGER PRIMARY KEY,
         event_seq          INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
         dedup_key          TEXT    NOT NULL,
         route              TEXT    NOT NULL,
         notifier           TEXT    NOT NULL,
         state              TEXT    NOT NULL,
         attempts           INTEGER NOT NULL DEFAULT 0,
         created_at_ms      INTEGER NOT NULL,
         next_attempt_at_ms INTEGER NOT NULL,
         expires_at_ms      INTEGER NOT NULL,
         finished_at_ms     INTEGER,
         last_error         TEXT,
         UNIQUE (dedup_key, route, notifier)
     );
     CREATE INDEX deliveries_due ON deliveries (notifier, state, next_attempt_at_ms);
     CREATE INDEX deliveries_state ON deliveries (state, id);",
    // 3: dedup moves from a unique index on `events.webhook_id` to the `seen`
    // table, written in sorted batches (see `dedup`). SQLite cannot drop a
    // UNIQUE constraint, so the table is rebuilt, seqs kept (foreign keys are
    // off while migrating, so dropping the old table deletes no deliveries).
    "CREATE TABLE events_v3 (
        seq            INTEGER PRIMARY KEY,
        webhook_id     TEXT    NOT NULL,
        object_id      TEXT    NOT NULL,
        kind           TEXT    NOT NULL,
        status         TEXT    NOT NULL,
        model          TEXT,
        query          TEXT    NOT NULL,
        body           BLOB    NOT NULL,
        received_at_ms INTEGER NOT NULL,
        routed_at_ms   INTEGER
     );
     INSERT INTO events_v3
         SELECT seq, webhook_id, object_id, kind, status, model, query, body,
                received_at_ms, routed_at_ms
         FROM events ORDER BY seq;
     DROP TABLE events;
     ALTER TABLE events_v3 RENAME TO events;
     CREATE INDEX events_unrouted ON events (seq) WHERE routed_at_ms IS NULL;
     CREATE TABLE seen (
         webhook_id TEXT    PRIMARY KEY,
         seq        INTEGER NOT NULL
     ) WITHOUT ROWID;
     INSERT INTO seen (webhook_id, seq)
         SELECT webhook_id, seq FROM events WHERE true ORDER BY webhook_id
         ON CONFLICT DO NOTHING;
     CREATE TABLE seen_upto (seq INTEGER NOT NULL);
     INSERT INTO seen_upto (seq) SELECT coalesce(max(seq), 0) FROM events;
     CREATE TRIGGER events_forget AFTER DELETE ON events BEGIN
         DELETE FROM seen WHERE webhook_id = old.webhook_id AND seq = old.seq;
     END;",
];

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

/// One insert waiting for its commit.
struct Pending {
    event: NewEvent,
    reply: oneshot::Sender<Result<Inserted, StoreError>>,
}

/// Work for the writer thread. Inserts travel by value: boxing them would add
/// an allocation per webhook to save channel slots.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Inserts are batched into shared commits.
    Insert(Pending),
    /// Any other write runs alone, between batches.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
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
}

/// How often the router and the dispatcher look at the store even without a
/// signal.
const POLL: Duration = Duration::from_secs(1);

/// Shared between the writer thread and the store handle.
#[derive(Debug, Default)]
struct WriterState {
    /// The last write error and when it happened (or was last confirmed),
    /// cleared by the next successful commit.
    error: Mutex<Option<(Cause, std::time::Instant)>>,
    /// Transactions committed, and events they carried: their ratio is the
    /// group-commit batch size.
    commits: AtomicU64,
    events: AtomicU64,
    /// Signalled after a commit that created deliveries.
    planned: Notify,
}

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
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                open_err(Cause::explained(
                    format!("cannot create directory {}", dir.display()),
                    e,
                ))
            })?;
        }
        let mut conn = open_writer(path).map_err(sqlite)?;
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

        let reader = Connection::open(path).map_err(sqlite)?;
        configure(&reader, options.busy_timeout).map_err(sqlite)?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(sqlite)?;

        // Checkpoints run beside the writer, on their own connection.
        let checkpointer = Connection::open(path).map_err(sqlite)?;
        configure(&checkpointer, options.busy_timeout).map_err(sqlite)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(sqlite)?;

        let (tx, rx) = mpsc::channel(options.queue);
        let state = writer_state.clone();
        let max_batch = options.max_batch.max(1);
        let limits = options.checkpoints;
        let wal = checkpoint::watch_wal(&mut conn).map_err(sqlite)?;
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
                        writer_loop(
                            conn,
                            writer_again,
                            rx,
                            &state,
                            max_batch,
                            dedup,
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
            answer.await.map_err(|_| StoreError::Closed)?
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

/// Opens the store at `path` beside a running daemon, as a plain connection:
/// no migrations, no writer thread ([`beside`] is built on it; tests use it
/// to put a store in a state only a crash leaves).
pub fn open_for_cli(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |cause: Cause| StoreError::Open {
        path: path.display().to_string(),
        cause,
    };
    let sqlite = |e: rusqlite::Error| open_err(Cause::new(e));
    if !path.exists() {
        return Err(open_err(Cause::text(
            "no such file (has `replicate-relay serve` run with this config yet?)",
        )));
    }
    let conn = Connection::open(path).map_err(sqlite)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite)?;
    check_version(version, path)?;
    if version < MIGRATIONS.len() as i64 {
        return Err(open_err(Cause::text(format!(
            "schema version {version} is older than this binary's; start `replicate-relay serve` once to migrate it"
        ))));
    }
    Ok(conn)
}

fn configure(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy_timeout)?;
    // WAL: readers never block the writer; FULL: the WAL is fsynced at every
    // commit, which is what makes a 2xx mean "on disk".
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") && !conn.is_readonly(rusqlite::MAIN_DB)? {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the filesystem does not support WAL mode (journal_mode is {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Deliveries go when their event is pruned.
    conn.pragma_update(None, "foreign_keys", true)?;
    // Keep the WAL file from growing without bound after a burst.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    // Where SQLite checkpoints by itself (only on the writer, if the
    // checkpoint thread cannot start), every request waits for it: half
    // SQLite's default halves that stall (BENCHMARKS.md). Normally the writer
    // turns this off and checkpoints run beside it (`checkpoint`).
    conn.pragma_update(None, "wal_autocheckpoint", 500)?;
    Ok(())
}

/// A mutex's guard even when a thread panicked holding it: what these guard
/// (the writer's sender, the last write error, the reader's connection)
/// stays valid, and a poisoned lock must not turn every later webhook and
/// health check into a panic.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The writer's connection. Not yet configured.
fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open(path)
}

/// Opens a thread's connection again when the one it holds was opened
/// read-only (the store was write-protected at start): SQLite never makes
/// such a connection writable, so without this the store would answer 503
/// until a restart, long after the file was fixed.
struct Reopen {
    /// Whose connection, for the log.
    role: &'static str,
    path: PathBuf,
    busy_timeout: Duration,
    last_try: Cell<Option<std::time::Instant>>,
}

impl Reopen {
    /// How often a read-only connection is tried again: an `open` and a few
    /// pragmas, while every write fails anyway.
    const EVERY: Duration = Duration::from_secs(1);

    fn new(role: &'static str, path: &Path, busy_timeout: Duration) -> Self {
        Self {
            role,
            path: path.to_owned(),
            busy_timeout,
            last_try: Cell::new(None),
        }
    }

    /// A writable connection opened by `open`, configured as at start and
    /// then by `setup` (the thread's own settings), if `conn` is read-only,
    /// the last try was over a second ago, and the store can now be written.
    fn if_read_only(
        &self,
        conn: &Connection,
        open: impl FnOnce(&Path) -> rusqlite::Result<Connection>,
        setup: impl FnOnce(&mut Connection) -> rusqlite::Result<()>,
    ) -> Option<Connection> {
        if !conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false)
            || self
                .last_try
                .get()
                .is_some_and(|at| at.elapsed() < Self::EVERY)
        {
            return None;
        }
        self.last_try.set(Some(std::time::Instant::now()));
        let mut fresh = open(&self.path).ok()?;
        if fresh.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            return None;
        }
        match configure(&fresh, self.busy_timeout).and_then(|()| setup(&mut fresh)) {
            Ok(()) => {
                tracing::info!(message = "The store is writable again.", path = %self.path.display(), connection = self.role);
                Some(fresh)
            }
            Err(e) => {
                tracing::warn!(message = "The store is writable again but could not be set up; trying again in a second.", error = %e);
                None
            }
        }
    }
}

/// Why a store opened read-only cannot store events, and what to do.
fn read_only(path: &str) -> String {
    format!(
        "{path} is read-only (its permissions, an immutable flag, or a read-only mount), so events cannot be stored; make it and its directory writable by the user the daemon runs as (the daemon tries it again every second, no restart needed)"
    )
}

fn check_version(found: i64, path: &Path) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found,
            known,
        });
    }
    Ok(())
}

fn migrate(
    conn: &mut Connection,
    path: &Path,
    while_migrating: Option<fn(bool)>,
) -> Result<(), StoreError> {
    let fail = |e: rusqlite::Error| StoreError::Open {
        path: path.display().to_string(),
        cause: Cause::explained(
            "migrating the schema failed and was rolled back, so the store is as it was. \
             Free disk space (a migration may need about twice the store's size), make the \
             store writable, or stop whatever else has it open, then start again",
            e,
        ),
    };
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(fail)?;
    check_version(current, path)?;
    if current as usize == MIGRATIONS.len() {
        return Ok(());
    }
    // Creating a new store is quick: only an upgrade is worth telling about,
    // to the service manager and in the log.
    let upgrading = current > 0;
    let while_migrating = while_migrating.filter(|_| upgrading);
    // A migration may rebuild a table (drop and rename): with foreign keys
    // on, dropping `events` would delete every delivery. SQLite ignores this
    // pragma inside a transaction, so it is set around them; each migration
    // checks the keys itself before it commits.
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(fail)?;
    if let Some(tick) = while_migrating {
        tick(true);
        let mut last = std::time::Instant::now();
        conn.progress_handler(
            100_000,
            Some(move || {
                if last.elapsed() >= Duration::from_secs(5) {
                    last = std::time::Instant::now();
                    tick(true);
                }
                false // never interrupt
            }),
        )
        .map_err(fail)?;
    }
    let migrated = (|| {
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let version = index as i64 + 1;
            if upgrading {
                tracing::info!(
                    message = "Migrating the store schema; a large store takes a while.",
                    version
                );
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            let broken: Option<String> = tx
                .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                .optional()?;
            if let Some(table) = broken {
                return Err(rusqlite::Error::InvalidParameterName(format!(
                    "migration {version} left rows in {table} without their parent"
                )));
            }
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
            if upgrading {
                tracing::info!(message = "Store schema migrated.", version);
            }
        }
        if !upgrading {
            tracing::info!(message = "Store created.", path = %path.display(), version = MIGRATIONS.len());
        }
        Ok(())
    })();
    conn.progress_handler(0, None::<fn() -> bool>)
        .map_err(fail)?;
    if let Some(tick) = while_migrating {
        tick(false);
    }
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(fail)?;
    migrated.map_err(fail)
}

fn writer_loop(
    mut conn: Connection,
    reopen: Reopen,
    mut rx: mpsc::Receiver<Cmd>,
    state: &WriterState,
    max_batch: usize,
    mut dedup: dedup::Dedup,
    checkpoints: &checkpoint::Checkpoints<'_>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        // Gather the inserts that are waiting; a non-insert command ends the
        // batch and runs right after it, so order is kept.
        let mut after = None;
        match first {
            Cmd::Insert(p) => batch.push(p),
            Cmd::Run(job) => after = Some(job),
        }
        while after.is_none() && batch.len() < max_batch {
            match rx.try_recv() {
                Ok(Cmd::Insert(p)) => batch.push(p),
                Ok(Cmd::Run(job)) => after = Some(job),
                Err(_) => break,
            }
        }
        if let Some(fresh) = reopen.if_read_only(&conn, open_writer, |c| checkpoints.adopt(c)) {
            conn = fresh;
        }
        if !batch.is_empty() {
            commit_batch(&mut conn, &mut batch, state, &mut dedup);
        }
        if dedup.due() {
            flush_dedup(&mut conn, &mut dedup);
        }
        if let Some(job) = after {
            // A panic in one job must not take the writer (and with it every
            // future insert) down: the job's caller sees its reply dropped.
            let run = std::panic::AssertUnwindSafe(|| job(&mut conn));
            if std::panic::catch_unwind(run).is_err() {
                tracing::error!("A store job panicked; the writer carries on.");
            }
        }
        // Outbox writes and retention fill the WAL too, webhooks or not.
        checkpoints.after_commit(&conn);
    }
    // Channel closed and drained: every accepted insert has been answered.
    // Not needed for correctness (the next open stages what is left), but
    // it leaves that open nothing to read.
    flush_dedup(&mut conn, &mut dedup);
    tracing::debug!("store writer stopped");
}

/// Writes the staged webhook ids to the dedup index. A failure loses nothing:
/// they stay staged, answering lookups, until a later flush succeeds.
fn flush_dedup(conn: &mut Connection, dedup: &mut dedup::Dedup) {
    if let Err(e) = dedup.flush(conn) {
        tracing::warn!(message = "Could not write the dedup index; the ids stay in memory and it is tried again in 10 s. Check free disk space and that the store is writable.", error = %e, staged = dedup.staged());
    }
}

fn commit_batch(
    conn: &mut Connection,
    batch: &mut Vec<Pending>,
    state: &WriterState,
    dedup: &mut dedup::Dedup,
) {
    let started = std::time::Instant::now();
    match write_batch(conn, batch, dedup) {
        Ok((outcomes, planned, part)) => {
            if let Some(part) = part {
                dedup.committed(part);
            }
            crate::telemetry::store_commit(started.elapsed().as_secs_f64(), batch.len());
            lock(&state.error).take();
            state.commits.fetch_add(1, Ordering::Relaxed);
            state
                .events
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            for (Pending { event, reply }, outcome) in batch.drain(..).zip(outcomes) {
                if let Inserted::New(seq) = outcome {
                    dedup.stage(event.webhook_id, seq);
                }
                // The requester may have gone (client hung up); the event is
                // stored all the same and a retry will be a duplicate.
                let _ = reply.send(Ok(outcome));
            }
            if planned > 0 {
                state.planned.notify_one();
            }
        }
        Err(e) => {
            // SQLite's own words for this ("attempt to write a readonly
            // database") do not say what to do about it.
            let cause = if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
                Cause::explained(read_only(conn.path().unwrap_or("the store")), e)
            } else {
                Cause::new(e)
            };
            tracing::error!(message = "Store commit failed; answering 503 so the sender retries. Check free disk space and that the store file and its directory are writable.", error = %cause, batch = batch.len());
            *lock(&state.error) = Some((cause.clone(), std::time::Instant::now()));
            for pending in batch.drain(..) {
                let _ = pending.reply.send(Err(StoreError::Write(cause.clone())));
            }
        }
    }
}

/// Inserts a batch of events, and the deliveries of those routed at intake, in
/// one transaction, with the next part of the dedup index's batch under way.
/// Returns each event's outcome, how many deliveries were created, and the
/// dedup part written.
fn write_batch(
    conn: &mut Connection,
    batch: &[Pending],
    dedup: &dedup::Dedup,
) -> rusqlite::Result<(Vec<Inserted>, usize, Option<dedup::Part>)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut planned = 0;
    let now = now_ms();
    // Ids new in this batch: they are staged only once it commits.
    let mut fresh: HashMap<&str, i64> = HashMap::with_capacity(batch.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events
                 (webhook_id, object_id, kind, status, model, query, body, received_at_ms,
                  routed_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for Pending { event: e, .. } in batch {
            let known = match fresh.get(e.webhook_id.as_str()) {
                Some(&seq) => Some(seq),
                None => dedup.lookup(&tx, &e.webhook_id)?,
            };
            if let Some(seq) = known {
                outcomes.push(Inserted::Duplicate(seq));
                continue;
            }
            insert.execute(params![
                e.webhook_id,
                e.object_id,
                e.kind.as_str(),
                e.status.as_str(),
                e.model,
                e.query,
                &e.body[..],
                e.received_at_ms,
                now,
            ])?;
            let seq = tx.last_insert_rowid();
            fresh.insert(&e.webhook_id, seq);
            planned += outbox::insert_deliveries(&tx, seq, &e.routing, now)?;
            outcomes.push(Inserted::New(seq));
        }
    }
    let part = dedup.write_part(&tx)?;
    tx.commit()?;
    Ok((outcomes, planned, part))
}

pub(crate) fn query_recent(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<StoredEvent>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {} FROM events ORDER BY seq DESC LIMIT ?1",
        outbox::EVENT_COLUMNS
    ))?;
    stmt.query_map([limit as i64], outbox::event_from_row)?
        .collect()
}

impl crate::store::Admin for SqliteStore {
    fn recent(&self, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.read(move |conn| query_recent(conn, limit))
    }

    fn deliveries(
        &self,
        filter: crate::store::DeliveryFilter,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::store::Listed>, StoreError>> {
        self.read(move |conn| outbox::list(conn, filter, limit))
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
        Box::pin(async move {
            let sender = sender.ok_or(StoreError::Closed)?;
            let (reply, answer) = oneshot::channel();
            sender
                .send(Cmd::Insert(Pending { event, reply }))
                .await
                .map_err(|_| StoreError::Closed)?;
            // A dropped reply means the writer died before answering: not stored.
            answer.await.map_err(|_| StoreError::Closed)?
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

    fn claim(
        &self,
        notifier: &str,
        now_ms: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Claimed>, StoreError>> {
        let notifier = notifier.to_owned();
        self.write(move |conn| outbox::claim(conn, &notifier, now_ms, limit))
    }

    fn finish(
        &self,
        id: i64,
        outcome: Outcome,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.write(move |conn| outbox::finish(conn, id, &outcome, now_ms))
    }

    fn next_due(&self, notifiers: Vec<String>) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        self.read(move |conn| outbox::next_due(conn, &notifiers))
    }

    fn recover(
        &self,
        notifiers: Vec<String>,
        now_ms: i64,
        requeue_sending: bool,
    ) -> BoxFuture<'_, Result<(usize, usize), StoreError>> {
        self.write(move |conn| outbox::recover(conn, &notifiers, now_ms, requeue_sending))
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

    fn close(&self) -> BoxFuture<'_, ()> {
        // Dropping the last sender lets the writer drain what is queued and exit.
        lock(&self.sender).take();
        let writer = lock(&self.writer).take();
        Box::pin(async move {
            if let Some(handle) = writer {
                let _ = tokio::task::spawn_blocking(move || handle.join()).await;
            }
        })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Without an explicit close, still let queued commits finish.
        self.sender.get_mut().unwrap().take();
        if let Some(handle) = self.writer.get_mut().unwrap().take() {
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
mod tests {
    use super::*;
    use crate::event::Kind;
    use crate::store::{Admin, Unrouted};

    fn event(webhook_id: &str) -> NewEvent {
        NewEvent {
            webhook_id: webhook_id.into(),
            object_id: "p1".into(),
            kind: Kind::Prediction,
            status: crate::event::Status::Succeeded,
            model: Some("acme/m".into()),
            query: "team=vision".into(),
            body: bytes::Bytes::from_static(br#"{"id":"p1","status":"succeeded"}"#),
            received_at_ms: 1_700_000_000_000,
            routing: crate::store::Routing {
                dedup_key: format!("webhook:{webhook_id}"),
                deliveries: Vec::new(),
                expires_at_ms: 1_700_000_600_000,
            },
        }
    }

    #[tokio::test]
    async fn insert_dedup_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/relay.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let first = store.insert(event("msg_a")).await.unwrap();
        let Inserted::New(seq) = first else {
            panic!("{first:?}")
        };
        assert_eq!(
            store.insert(event("msg_a")).await.unwrap(),
            Inserted::Duplicate(seq)
        );
        assert!(matches!(
            store.insert(event("msg_b")).await.unwrap(),
            Inserted::New(_)
        ));
        let recent = store.recent(10).await.unwrap();
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].webhook_id, "msg_b");
        assert_eq!(recent[1].query, "team=vision");
        store.health().await.unwrap();
        store.close().await;
        assert!(matches!(
            store.insert(event("msg_c")).await,
            Err(StoreError::Closed)
        ));
        // Beside the store, as the command line reads it.
        let beside = crate::store::open_beside(&path).unwrap();
        assert_eq!(beside.recent(1).await.unwrap()[0].webhook_id, "msg_b");
    }

    #[tokio::test]
    async fn deliveries_routed_at_intake_share_the_event_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let routed = |webhook_id: &str| NewEvent {
            routing: crate::store::Routing {
                dedup_key: "p1:succeeded".into(),
                deliveries: vec![
                    ("done".into(), "slack".into()),
                    ("done".into(), "mail".into()),
                ],
                expires_at_ms: 1_700_000_600_000,
            },
            ..event(webhook_id)
        };
        let Inserted::New(first) = store.insert(routed("msg_a")).await.unwrap() else {
            panic!("not new")
        };
        // The same webhook again, then another webhook carrying the same final
        // state: neither creates a delivery.
        store.insert(routed("msg_a")).await.unwrap();
        store.insert(routed("msg_b")).await.unwrap();
        // Routed to no notifier: stored, marked routed, no delivery.
        store.insert(event("msg_c")).await.unwrap();
        store.close().await;

        let conn = open_for_cli(&path).unwrap();
        let deliveries: Vec<(i64, String, String, i64)> = conn
            .prepare("SELECT event_seq, notifier, state, expires_at_ms FROM deliveries ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            deliveries,
            [
                (first, "slack".into(), "pending".into(), 1_700_000_600_000),
                (first, "mail".into(), "pending".into(), 1_700_000_600_000),
            ]
        );
        assert!(
            outbox::unrouted(&conn, 10).unwrap().is_empty(),
            "every event is marked routed in its own commit"
        );
    }

    /// Frames (4 KB pages and their headers) the WAL file of `db` has room for.
    fn wal_frames(db: &Path) -> u64 {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(wal).unwrap().len() / (4096 + 24)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_keep_the_wal_short_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let options = SqliteOptions {
            checkpoints: CheckpointLimits {
                restart: 100,
                max: 400,
            },
            ..SqliteOptions::default()
        };
        let store = Arc::new(SqliteStore::open(&path, options).unwrap());
        // About a page per event, so thousands of WAL frames in all.
        let body = bytes::Bytes::from(format!(r#"{{"id":"p1","logs":"{}"}}"#, "x".repeat(3000)));
        for round in 0..30 {
            let tasks: Vec<_> = (0..100)
                .map(|i| {
                    let store = store.clone();
                    let event = NewEvent {
                        body: body.clone(),
                        ..event(&format!("msg_{round}_{i}"))
                    };
                    tokio::spawn(async move { store.insert(event).await })
                })
                .collect();
            for task in tasks {
                assert!(matches!(task.await.unwrap(), Ok(Inserted::New(_))));
            }
        }
        // 3,000 pages were written; a WAL that never restarted would hold them
        // all.
        let frames = wal_frames(&path);
        assert!(frames < 1_500, "the WAL holds {frames} frames");
        store.close().await;
        drop(store);
        let conn = open_for_cli(&path).unwrap();
        let count: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 3_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_other_than_inserts_are_checkpointed_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        // Events stored unrouted, as an older version left them.
        {
            let mut conn = Connection::open(&path).unwrap();
            migrate(&mut conn, &path, None).unwrap();
            let tx = conn.transaction().unwrap();
            let body = "x".repeat(3000);
            for i in 0..6_000 {
                tx.execute(
                    "INSERT INTO events (webhook_id, object_id, kind, status, query, body, received_at_ms)
                     VALUES (?1, 'p', 'prediction', 'succeeded', '', ?2, 1000)",
                    params![format!("msg_{i}"), body],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let options = SqliteOptions {
            checkpoints: CheckpointLimits {
                restart: 100,
                max: 400,
            },
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(&path, options).unwrap();
        // The router routes them all (every row rewritten), and no webhook
        // arrives meanwhile.
        for first in (1..=6_000).step_by(250) {
            let plans = (first..first + 250)
                .map(|seq| RoutingPlan {
                    event_seq: seq,
                    routing: crate::store::Routing {
                        dedup_key: format!("k{seq}"),
                        deliveries: vec![],
                        expires_at_ms: 0,
                    },
                })
                .collect();
            store.record_routing(plans).await.unwrap();
        }
        assert!(store.unrouted(1).await.unwrap().is_empty());
        // 6,000 pages were rewritten; a WAL that never restarted would hold
        // them all.
        let frames = wal_frames(&path);
        assert!(frames < 3_000, "the WAL holds {frames} frames");
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_inserts_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
        // Hold the write lock so the writer stalls on its first batch while the
        // other inserts queue up behind it, as they do under load during an fsync.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.insert(event(&format!("msg_{i}"))).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        other.execute_batch("COMMIT").unwrap();
        for task in tasks {
            assert!(matches!(task.await.unwrap(), Ok(Inserted::New(_))));
        }
        let stats = store.writer_stats();
        assert_eq!(stats.events, 100);
        assert!(
            stats.commits <= 3,
            "100 waiting inserts took {} commits",
            stats.commits
        );
    }

    /// After a failed write, health stays failed for `recheck_after`, then
    /// checks with a write of its own: it recovers by itself once the store
    /// takes writes again, with no webhook to commit, and until then stays
    /// failed with the original reason.
    #[tokio::test]
    async fn health_rechecks_with_a_write_of_its_own_after_a_failed_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let recheck = Duration::from_millis(300);
        let options = SqliteOptions {
            busy_timeout: Duration::from_millis(50),
            recheck_after: recheck,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(&path, options).unwrap();
        store.insert(event("msg_before")).await.unwrap();
        store.health().await.unwrap();
        let version = |c: &Connection| -> i64 {
            c.query_row("PRAGMA data_version", [], |r| r.get(0))
                .unwrap()
        };

        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert!(matches!(
            store.insert(event("msg_locked")).await,
            Err(StoreError::Write(_))
        ));
        let Err(StoreError::Write(first)) = store.health().await else {
            panic!("health is failed right after a failed write")
        };
        // Past the interval, the check's own write fails too: still failed,
        // with the reason the webhook got.
        tokio::time::sleep(recheck).await;
        let Err(StoreError::Write(again)) = store.health().await else {
            panic!("health is failed while the lock is held")
        };
        assert_eq!(again.to_string(), first.to_string());

        // Writable again: not said at once (the failure was just confirmed),
        // then said without any webhook, by a commit that changed nothing.
        other.execute_batch("ROLLBACK").unwrap();
        let before = version(&other);
        assert!(store.health().await.is_err());
        assert_eq!(version(&other), before, "no check within the interval");
        tokio::time::sleep(recheck).await;
        store.health().await.unwrap();
        assert_ne!(version(&other), before, "the check committed a write");
        let upto: i64 = other
            .query_row("SELECT seq FROM seen_upto", [], |r| r.get(0))
            .unwrap();
        assert_eq!(upto, 0, "dedup's mark is where it was");
        assert!(matches!(
            store.insert(event("msg_before")).await,
            Ok(Inserted::Duplicate(_))
        ));
        store.close().await;
    }

    /// (A store write-protected at start, then fixed, is in tests/intake.rs:
    /// it needs `chattr`, as root bypasses permissions.)
    #[test]
    fn a_read_only_connection_is_opened_again_at_most_once_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
        let reopen = Reopen::new("test", &path, Duration::from_secs(1));
        let writable = Connection::open(&path).unwrap();
        assert!(
            reopen
                .if_read_only(&writable, |p| Connection::open(p), |_| Ok(()))
                .is_none(),
            "a writable connection is kept"
        );
        let held =
            Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let fresh = reopen
            .if_read_only(
                &held,
                |p| Connection::open(p),
                |c| c.pragma_update(None, "wal_autocheckpoint", 0),
            )
            .expect("opened again");
        assert!(!fresh.is_readonly(rusqlite::MAIN_DB).unwrap());
        let pragma =
            |name: &str| -> i64 { fresh.pragma_query_value(None, name, |r| r.get(0)).unwrap() };
        assert_eq!(pragma("synchronous"), 2, "configured like the first");
        assert_eq!(pragma("foreign_keys"), 1);
        assert_eq!(pragma("wal_autocheckpoint"), 0, "then set up by the thread");
        assert!(
            reopen
                .if_read_only(&held, |p| Connection::open(p), |_| Ok(()))
                .is_none(),
            "not again within a second"
        );
        // Still read-only when opened: nothing to swap in.
        let later = Reopen::new("test", &path, Duration::from_secs(1));
        let read_only_open =
            |p: &Path| Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY);
        assert!(
            later
                .if_read_only(&held, read_only_open, |_| Ok(()))
                .is_none()
        );
        // The thread's own set-up failing: nothing to swap in either.
        let failing = Reopen::new("test", &path, Duration::from_secs(1));
        assert!(
            failing
                .if_read_only(
                    &held,
                    |p| Connection::open(p),
                    |c| c.execute_batch("no such statement"),
                )
                .is_none()
        );
    }

    #[test]
    fn pragmas_and_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        // What each of the store's connections runs with.
        configure(&conn, Duration::from_secs(1)).unwrap();
        let pragma =
            |name: &str| -> i64 { conn.pragma_query_value(None, name, |r| r.get(0)).unwrap() };
        assert_eq!(pragma("synchronous"), 2, "FULL: a commit is fsynced");
        assert_eq!(pragma("wal_autocheckpoint"), 500);
        assert_eq!(pragma("foreign_keys"), 1);
    }

    /// Random ids, many repeated, through small dedup batches and reopens:
    /// each answer must be what a plain set of seen ids says, and the first
    /// event's seq for a repeat.
    #[tokio::test]
    async fn dedup_agrees_with_a_model_across_batches_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let options = SqliteOptions {
            dedup_batch: 7,
            ..SqliteOptions::default()
        };
        let mut model: HashMap<String, i64> = HashMap::new();
        let mut store = SqliteStore::open(&path, options.clone()).unwrap();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for round in 0..2_000 {
            // xorshift: reproducible without a dependency.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let id = format!("msg_{}", state % 400);
            let answers: Vec<_> =
                futures_util::future::join_all((0..3).map(|_| store.insert(event(&id)))).await;
            for answer in answers {
                match (answer.unwrap(), model.get(&id)) {
                    (Inserted::New(seq), None) => {
                        model.insert(id.clone(), seq);
                    }
                    (Inserted::Duplicate(seq), Some(&first)) => assert_eq!(seq, first, "{id}"),
                    (got, want) => panic!("round {round}, {id}: {got:?}, model says {want:?}"),
                }
            }
            if round % 300 == 299 {
                store.close().await;
                store = SqliteStore::open(&path, options.clone()).unwrap();
            }
        }
        store.close().await;
        let conn = Connection::open(&path).unwrap();
        let (events, seen): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM seen)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let ids = model.len() as i64;
        assert_eq!((events, seen), (ids, ids));
    }

    #[tokio::test]
    async fn a_version_2_store_keeps_its_events_deliveries_and_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        {
            // What the previous release left: schema 2, events with the dedup
            // key as a unique column, and a pending delivery.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute_batch(
                "INSERT INTO events (webhook_id, object_id, kind, status, model, query, body,
                                     received_at_ms, routed_at_ms)
                 VALUES ('msg_old1', 'p1', 'prediction', 'failed', NULL, '', X'7B7D', 1000, 1000),
                        ('msg_old2', 'p2', 'training', 'succeeded', 'a/b', 'team=x', X'7B7D', 2000, NULL);
                 INSERT INTO deliveries (event_seq, dedup_key, route, notifier, state,
                                         created_at_ms, next_attempt_at_ms, expires_at_ms)
                 VALUES (1, 'k1', 'r', 'n', 'pending', 1000, 1000, 9000);",
            )
            .unwrap();
        }
        static TICKS: AtomicU64 = AtomicU64::new(0);
        let options = SqliteOptions {
            while_migrating: Some(|going| {
                TICKS.fetch_add(if going { 1 } else { 10 }, Ordering::SeqCst);
            }),
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(&path, options.clone()).unwrap();
        assert_eq!(
            TICKS.load(Ordering::SeqCst),
            11,
            "told the service manager, twice"
        );
        assert_eq!(
            store.insert(event("msg_old1")).await.unwrap(),
            Inserted::Duplicate(1)
        );
        assert_eq!(
            store.insert(event("msg_new")).await.unwrap(),
            Inserted::New(3)
        );
        assert_eq!(
            store.insert(event("msg_new")).await.unwrap(),
            Inserted::Duplicate(3)
        );
        let unrouted = store.unrouted(10).await.unwrap();
        assert_eq!(unrouted.len(), 1, "the old event; new ones arrive routed");
        assert_eq!((unrouted[0].seq, unrouted[0].query.as_str()), (2, "team=x"));
        store.close().await;

        let conn = Connection::open(&path).unwrap();
        let delivery: (i64, String) = conn
            .query_row("SELECT event_seq, state FROM deliveries", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(
            delivery,
            (1, "pending".to_string()),
            "dropping the old table deleted nothing"
        );
        let fk: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(fk, 0);
        // The foreign key still cascades from the rebuilt table.
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        conn.execute("DELETE FROM events WHERE seq = 1", [])
            .unwrap();
        let left: i64 = conn
            .query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
        drop(conn);

        // Up to date: nothing to migrate, nothing to say.
        drop(SqliteStore::open(&path, options.clone()).unwrap());
        assert_eq!(TICKS.load(Ordering::SeqCst), 11);
        // A new store: quick, nothing to say either.
        drop(SqliteStore::open(&dir.path().join("new.db"), options).unwrap());
        assert_eq!(TICKS.load(Ordering::SeqCst), 11);
    }

    #[test]
    fn a_failed_migration_leaves_the_store_as_it_was_and_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        // Another process holds the write lock for longer than we wait.
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let options = SqliteOptions {
            busy_timeout: Duration::from_millis(10),
            ..SqliteOptions::default()
        };
        let err = SqliteStore::open(&path, options).err().unwrap().to_string();
        assert!(err.contains("rolled back"), "{err}");
        assert!(err.contains("then start again"), "{err}");
        conn.execute_batch("ROLLBACK").unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 2);
    }

    #[test]
    fn an_unreadable_dedup_index_says_what_to_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute_batch("DROP TABLE seen_upto")
            .unwrap();
        let err = SqliteStore::open(&path, SqliteOptions::default())
            .err()
            .unwrap();
        // As `serve` prints it: the advice, then SQLite's own words.
        let err = format!("{:#}", anyhow::Error::from(err));
        assert!(err.contains("no such table: seen_upto"), "{err}");
        assert!(err.contains("PRAGMA integrity_check"), "{err}");
    }

    #[test]
    fn a_store_from_a_newer_binary_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteStore::open(&path, SqliteOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
        assert!(err.to_string().contains("newer replicate-relay"));
    }

    #[test]
    fn opening_a_missing_store_beside_says_what_to_do() {
        let Err(err) = crate::store::open_beside(Path::new("/nonexistent/relay.db")) else {
            panic!("opened a missing store")
        };
        assert!(err.to_string().contains("replicate-relay serve"), "{err}");
    }
}
