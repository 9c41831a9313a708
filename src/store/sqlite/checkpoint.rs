//! Checkpoints beside the writer: copying the WAL back into the database file.
//!
//! Why not SQLite's automatic checkpoint: it runs on the writer, inside the
//! commit that crosses the threshold, and every request waits for it (pages
//! copied, then the database fsynced). That stall is what the slowest answers
//! were made of. Here a thread with its own connection copies frames shortly
//! after commits (`PASSIVE`: it never blocks the writer, which keeps
//! appending meanwhile).
//!
//! A WAL only starts over from its beginning once every frame in it has been
//! copied, and under steady load the writer always adds frames while the
//! background copy runs. So once the WAL is long enough, and the background
//! copy has just caught up, the writer finishes the few frames left itself,
//! between two batches; its next transaction then restarts the WAL. If the
//! background copy never catches up (a disk that cannot keep up), the writer
//! does the whole checkpoint itself past a hard limit, as SQLite would, so the
//! WAL stays bounded either way.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use rusqlite::Connection;

/// When to checkpoint, in WAL frames (pages).
#[derive(Debug, Clone, Copy)]
pub struct CheckpointLimits {
    /// Once the background copy has caught up with a WAL this long, the writer
    /// finishes it so the WAL restarts.
    pub restart: i64,
    /// Past this, the writer checkpoints whatever the background copy did.
    pub max: i64,
}

impl Default for CheckpointLimits {
    fn default() -> Self {
        // 4,000 pages of 4 KB: a 16 MB WAL, well under `journal_size_limit`.
        Self {
            restart: 4_000,
            max: 16_000,
        }
    }
}

/// What the background thread last saw of the WAL.
#[derive(Debug, Default)]
pub struct WalState {
    /// Frames in the WAL.
    frames: AtomicI64,
    /// Frames in the WAL when a background pass last copied all of them.
    caught_up: AtomicI64,
}

/// The writer's side: tells the background thread about commits, and finishes
/// checkpoints when it is time.
pub struct Checkpoints<'a> {
    wal: &'a WalState,
    limits: CheckpointLimits,
    committed: SyncSender<()>,
    /// Set when the background thread could not start: the writer's first
    /// commit then hands checkpoints back to SQLite.
    alone: Cell<bool>,
}

impl Checkpoints<'_> {
    /// Called by the writer after each commit, between batches.
    pub fn after_commit(&self, conn: &Connection) {
        if self.alone.replace(false) {
            if let Err(e) = conn.pragma_update(None, "wal_autocheckpoint", 500) {
                tracing::error!(message = "Cannot turn automatic checkpoints back on.", error = %e);
            }
            return;
        }
        // Wake the background thread; one pending wake-up is enough.
        if let Err(TrySendError::Disconnected(())) = self.committed.try_send(()) {
            tracing::warn!("The checkpoint thread has stopped; the writer checkpoints alone.");
        }
        let frames = self.wal.frames.load(Ordering::Relaxed);
        let caught_up = self.wal.caught_up.load(Ordering::Relaxed);
        if caught_up >= self.limits.restart || frames >= self.limits.max {
            // Reset first so that one report triggers one checkpoint.
            self.wal.caught_up.store(0, Ordering::Relaxed);
            self.wal.frames.store(0, Ordering::Relaxed);
            if let Err(e) = passive(conn) {
                tracing::warn!(message = "Checkpoint failed; will try again.", error = %e);
            }
        }
    }
}

/// Runs `with_checkpoints` (the writer's loop) beside a background checkpoint
/// thread on `conn`, which stops when the writer's loop returns.
pub fn run_beside<R>(
    conn: Connection,
    limits: CheckpointLimits,
    with_checkpoints: impl FnOnce(&Checkpoints<'_>) -> R,
) -> R {
    let wal = WalState::default();
    let (committed, commits) = std::sync::mpsc::sync_channel(1);
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn_scoped(scope, || background(conn, &wal, commits));
        let alone = match spawned {
            Ok(_) => false,
            Err(e) => {
                tracing::error!(message = "Cannot start the checkpoint thread; SQLite checkpoints on the writer.", error = %e);
                true
            }
        };
        let checkpoints = Checkpoints {
            wal: &wal,
            limits,
            committed,
            alone: Cell::new(alone),
        };
        // Dropping `checkpoints` (and its sender) at the end of this block
        // stops the background thread; the scope then waits for it.
        with_checkpoints(&checkpoints)
    })
}

/// How long the background thread lets commits gather before copying them:
/// short passes keep each database fsync small, so the WAL fsyncs that
/// requests wait for do not queue behind a big one.
const GATHER: Duration = Duration::from_millis(5);

fn background(conn: Connection, wal: &WalState, commits: Receiver<()>) {
    let mut last_error: Option<String> = None;
    // Sleeps until a commit happens: an idle daemon does not wake up.
    while commits.recv().is_ok() {
        std::thread::sleep(GATHER);
        while commits.try_recv().is_ok() {}
        match passive(&conn) {
            Ok((frames, copied)) => {
                wal.frames.store(frames, Ordering::Relaxed);
                if copied == frames {
                    wal.caught_up.store(frames, Ordering::Relaxed);
                }
                last_error = None;
            }
            Err(e) => {
                // Say it once, not every few milliseconds.
                let e = e.to_string();
                if last_error.as_ref() != Some(&e) {
                    tracing::warn!(message = "Background checkpoint failed; will try again.", error = %e);
                    last_error = Some(e);
                }
            }
        }
    }
}

/// A `PASSIVE` checkpoint: copies what it can without waiting for anyone.
/// Returns (frames in the WAL, frames copied so far).
fn passive(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}
