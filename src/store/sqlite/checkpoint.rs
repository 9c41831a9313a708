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
//! background copy never catches up (a disk that cannot keep up, or a thread
//! that has not run yet), the writer does the whole checkpoint itself past a
//! hard limit, as SQLite's automatic checkpoint would, so the WAL stays
//! bounded either way.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use super::Reopen;

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

/// What is known of the WAL.
#[derive(Debug, Default)]
pub struct WalState {
    /// Frames in the WAL after the writer's last commit (SQLite reports it).
    frames: AtomicI64,
    /// Frames in the WAL when a background pass last copied all of them.
    pub(super) caught_up: AtomicI64,
    /// Held by whoever checkpoints: SQLite refuses a second checkpoint at once
    /// (without waiting), so the writer would otherwise miss its turn every
    /// time a background pass happens to be running.
    turn: Mutex<()>,
    /// Makes the next background pass panic.
    #[cfg(test)]
    pub panic_next_pass: std::sync::atomic::AtomicBool,
}

/// Has SQLite tell the writer's connection how long the WAL is after each of
/// its commits (the hook its own automatic checkpoint uses).
pub fn watch_wal(writer: &mut Connection) -> rusqlite::Result<Arc<WalState>> {
    let wal = Arc::new(WalState::default());
    hook(writer, &wal)?;
    Ok(wal)
}

fn hook(writer: &mut Connection, wal: &Arc<WalState>) -> rusqlite::Result<()> {
    let seen = wal.clone();
    writer.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames| {
        seen.frames.store(i64::from(frames), Ordering::Relaxed);
        Ok(())
    }))
}

/// The writer's side: tells the background thread about commits, and finishes
/// checkpoints when it is time.
pub struct Checkpoints<'a> {
    wal: &'a Arc<WalState>,
    limits: CheckpointLimits,
    committed: SyncSender<()>,
    /// Set when there is no background thread (it could not start, or it
    /// stopped): checkpoints are then handed back to SQLite, once.
    alone: Cell<bool>,
    handed_back: Cell<bool>,
    /// The last checkpoint error logged, so a failure that repeats at every
    /// commit (a full disk) is said once.
    last_error: RefCell<Option<String>>,
}

impl Checkpoints<'_> {
    /// Sets up a new connection of the writer's (one reopened, see
    /// `Reopen`) as the one it replaces was: the WAL hook, and automatic
    /// checkpoints off unless they were handed back to SQLite.
    pub fn adopt(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        hook(conn, self.wal)?;
        let every = if self.handed_back.get() { 500 } else { 0 };
        conn.pragma_update(None, "wal_autocheckpoint", every)
    }

    /// Called by the writer after each round of writes (a batch of inserts,
    /// another write, or both).
    pub fn after_commit(&self, conn: &Connection) {
        // Wake the background thread; one pending wake-up is enough.
        if !self.alone.get()
            && let Err(TrySendError::Disconnected(())) = self.committed.try_send(())
        {
            tracing::error!("The checkpoint thread has stopped; SQLite checkpoints on the writer.");
            self.alone.set(true);
        }
        if self.alone.get() {
            // SQLite's automatic checkpoint (which replaces the WAL hook).
            if !self.handed_back.replace(true)
                && let Err(e) = conn.pragma_update(None, "wal_autocheckpoint", 500)
            {
                tracing::error!(message = "Cannot turn automatic checkpoints back on; the WAL file will grow until the daemon is restarted.", error = %e);
            }
            return;
        }
        let frames = self.wal.frames.load(Ordering::Relaxed);
        let caught_up = self.wal.caught_up.load(Ordering::Relaxed);
        let mode = if frames >= self.limits.max {
            // Past the limit the writer waits (at most the busy timeout) for
            // readers, so that its next write surely restarts the WAL.
            "RESTART"
        } else if caught_up >= self.limits.restart {
            // One report of the background thread, one try; if a reader is
            // in the way, the next report tries again.
            self.wal.caught_up.store(0, Ordering::Relaxed);
            "PASSIVE"
        } else {
            return;
        };
        let result = {
            let _turn = self.wal.turn.lock().unwrap_or_else(|e| e.into_inner());
            checkpoint(conn, mode)
        };
        match result {
            Ok(_) => {
                self.last_error.take();
            }
            Err(e) => {
                if is_new(&mut self.last_error.borrow_mut(), e.to_string()) {
                    tracing::warn!(message = "Checkpoint failed; will try again after each commit (said once while the error stays the same). Check free disk space and that the store file is writable.", error = %e);
                }
            }
        }
    }
}

/// Runs `with_checkpoints` (the writer's loop) beside a background checkpoint
/// thread on `conn`, which stops when the writer's loop returns. `wal` comes
/// from [`watch_wal`] on the writer's connection.
pub fn run_beside<R>(
    wal: &Arc<WalState>,
    conn: Connection,
    reopen: Reopen,
    limits: CheckpointLimits,
    with_checkpoints: impl FnOnce(&Checkpoints<'_>) -> R,
) -> R {
    let (committed, commits) = std::sync::mpsc::sync_channel(1);
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn_scoped(scope, || background(conn, reopen, wal, commits));
        let alone = match spawned {
            Ok(_) => false,
            Err(e) => {
                tracing::error!(message = "Cannot start the checkpoint thread; SQLite checkpoints on the writer.", error = %e);
                true
            }
        };
        let checkpoints = Checkpoints {
            wal,
            limits,
            committed,
            alone: Cell::new(alone),
            handed_back: Cell::new(false),
            last_error: RefCell::new(None),
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

/// The checkpoint thread: [`copy_after_commits`] until the writer stops,
/// run again on a new connection after a backoff if it panics. Meanwhile
/// the writer's own checkpoints past the hard limit keep the WAL bounded.
fn background(conn: Connection, reopen: Reopen, wal: &WalState, commits: Receiver<()>) {
    let mut first = Some(conn);
    crate::supervise::run_restarting(
        "store-checkpoint",
        || {
            let conn = first.take().unwrap_or_else(|| {
                reopen
                    .open()
                    .unwrap_or_else(|e| panic!("cannot open the checkpoint connection again: {e}"))
            });
            copy_after_commits(conn, &reopen, wal, &commits)
        },
        |_| {},
    )
}

fn copy_after_commits(
    mut conn: Connection,
    reopen: &Reopen,
    wal: &WalState,
    commits: &Receiver<()>,
) {
    let mut last_error: Option<String> = None;
    // Sleeps until a commit happens: an idle daemon does not wake up.
    while commits.recv().is_ok() {
        std::thread::sleep(GATHER);
        while commits.try_recv().is_ok() {}
        #[cfg(test)]
        if wal
            .panic_next_pass
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("a panic a test asked for, in a checkpoint pass");
        }
        let result = {
            let _turn = wal.turn.lock().unwrap_or_else(|e| e.into_inner());
            checkpoint(&conn, "PASSIVE")
        };
        match result {
            Ok((frames, copied)) => {
                if copied == frames {
                    wal.caught_up.store(frames, Ordering::Relaxed);
                }
                last_error = None;
            }
            Err(e) => {
                if is_new(&mut last_error, e.to_string()) {
                    tracing::warn!(message = "Background checkpoint failed; will try again (said once while the error stays the same). Check free disk space and that the store file is writable.", error = %e);
                }
                if let Some(fresh) = reopen.if_read_only(&conn, super::connection::open, |_| Ok(()))
                {
                    conn = fresh;
                }
            }
        }
    }
}

/// Whether `error` differs from the last one logged (it becomes the last one):
/// a failure that repeats every few milliseconds is said once.
fn is_new(last: &mut Option<String>, error: String) -> bool {
    if last.as_ref() == Some(&error) {
        return false;
    }
    *last = Some(error);
    true
}

/// A checkpoint in `mode`: `PASSIVE` copies what it can without waiting for
/// anyone; `RESTART` waits for readers so that the next write restarts the WAL.
/// Returns (frames in the WAL, frames copied so far).
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_error_is_new_once() {
        let mut last = None;
        let cases = [
            ("disk full", true),
            ("disk full", false),
            ("disk full", false),
            ("read-only", true),
            ("disk full", true),
        ];
        for (error, new) in cases {
            assert_eq!(is_new(&mut last, error.into()), new, "{error}");
        }
    }

    #[test]
    fn without_the_background_thread_sqlite_checkpoints_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("relay.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        let wal = watch_wal(&mut conn).unwrap();
        let (committed, commits) = std::sync::mpsc::sync_channel(1);
        drop(commits); // the thread has stopped
        let checkpoints = Checkpoints {
            wal: &wal,
            limits: CheckpointLimits::default(),
            committed,
            alone: Cell::new(false),
            handed_back: Cell::new(false),
            last_error: RefCell::new(None),
        };
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        assert!(wal.frames.load(Ordering::Relaxed) > 0, "the hook reports");
        checkpoints.after_commit(&conn);
        checkpoints.after_commit(&conn);
        let every: i64 = conn
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .unwrap();
        assert_eq!(every, 500);
        assert!(checkpoints.alone.get() && checkpoints.handed_back.get());
    }
}
