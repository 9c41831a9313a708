//! The writer thread: one connection, group commit. Every insert waiting
//! in the channel joins one transaction and one fsync; any other write runs
//! alone between two batches, so there is never a second writer to wait for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::{Notify, mpsc, oneshot};

use super::connection::{Reopen, lock, open, read_only};
use super::{checkpoint, dedup, outbox};
use crate::clock::now_ms;
use crate::store::{Cause, Inserted, NewEvent, StoreError};

/// One insert waiting for its commit.
pub(super) struct Pending {
    pub(super) event: NewEvent,
    pub(super) reply: oneshot::Sender<Result<Inserted, StoreError>>,
}

/// Work for the writer thread. Inserts travel by value: boxing them would add
/// an allocation per webhook to save channel slots.
#[allow(clippy::large_enum_variant)]
pub(super) enum Cmd {
    /// Inserts are batched into shared commits.
    Insert(Pending),
    /// Any other write runs alone, between batches.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// Shared between the writer thread and the store handle.
#[derive(Debug, Default)]
pub(super) struct WriterState {
    /// The last write error and when it happened (or was last confirmed),
    /// cleared by the next successful commit.
    pub(super) error: Mutex<Option<(Cause, std::time::Instant)>>,
    /// Transactions committed, and events they carried: their ratio is the
    /// group-commit batch size.
    pub(super) commits: AtomicU64,
    pub(super) events: AtomicU64,
    /// Signalled after a commit that created deliveries.
    pub(super) planned: Notify,
    /// While the writer restarts after a panic: the panic's message.
    pub(super) restarting: Mutex<Option<String>>,
    /// Times the writer started again after a panic.
    pub(super) restarts: AtomicU64,
    /// Makes the next commit panic once it has committed: the worst moment,
    /// with events on disk that the writer's memory does not know.
    #[cfg(test)]
    pub(super) panic_after_commit: std::sync::atomic::AtomicBool,
}

impl WriterState {
    /// The error writes get while the writer is down.
    pub(super) fn down(&self) -> Option<StoreError> {
        lock(&self.restarting).as_ref().map(|panic| {
            StoreError::Write(Cause::text(format!(
                "the store's writer panicked ({panic}) and is being restarted; see the log"
            )))
        })
    }
}

/// The error of a write whose reply never came: the writer panicked while
/// it was in its hands (and is being restarted).
pub(super) fn stopped() -> StoreError {
    StoreError::Write(Cause::text(
        "the store's writer stopped before this write was answered (see the log); it is restarted",
    ))
}

/// The writer thread: [`writer_loop`] until the channel closes. When it
/// panics, it runs again on a connection and dedup state read afresh from
/// disk, after a backoff ([`crate::supervise::run_restarting`]): whatever
/// the panic interrupted (a transaction rolled back, ids committed but not
/// staged) is known again from the store itself, as after a crash. The
/// requests of the interrupted batch get 503, so their senders retry.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    first: (Connection, dedup::Dedup),
    reopen: &Reopen,
    mut rx: mpsc::Receiver<Cmd>,
    state: &WriterState,
    max_batch: usize,
    dedup_batch: usize,
    checkpoints: &checkpoint::Checkpoints<'_>,
) {
    let mut first = Some(first);
    crate::supervise::run_restarting(
        "store-writer",
        || {
            let (conn, dedup) = first.take().unwrap_or_else(|| {
                let again = reopen.open().and_then(|mut conn| {
                    checkpoints.adopt(&mut conn)?;
                    let dedup = dedup::Dedup::open(&conn, dedup_batch)?;
                    Ok((conn, dedup))
                });
                // Failing again is one more panic: logged, counted and
                // retried after a longer wait.
                again.unwrap_or_else(|e| panic!("cannot open the store's writer again: {e}"))
            });
            writer_loop(conn, reopen, &mut rx, state, max_batch, dedup, checkpoints)
        },
        |down| {
            if down.is_none() {
                state.restarts.fetch_add(1, Ordering::Relaxed);
            }
            *lock(&state.restarting) = down;
        },
    )
}

fn writer_loop(
    mut conn: Connection,
    reopen: &Reopen,
    rx: &mut mpsc::Receiver<Cmd>,
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
        if let Some(fresh) = reopen.if_read_only(&conn, open, |c| checkpoints.adopt(c)) {
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
            #[cfg(test)]
            if state.panic_after_commit.swap(false, Ordering::SeqCst) {
                panic!("a panic a test asked for, after a commit");
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
