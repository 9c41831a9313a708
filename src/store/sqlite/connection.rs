//! The store's connections: how each is opened and configured, opened
//! beside a running daemon for the command line, and opened again when it
//! came up read-only.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::Connection;

use super::schema::{MIGRATIONS, check_version};
use crate::store::{Cause, StoreError};

/// Opens the store at `path` beside a running daemon, as a plain connection:
/// no migrations, no writer thread ([`super::beside`] is built on it; tests use it
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
    let conn = open(path).map_err(sqlite)?;
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

pub(super) fn configure(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
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
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A connection to the store file. Not SQLite's NOFOLLOW, which refuses a
/// link anywhere in the path, and under systemd's DynamicUser the state
/// directory itself is one (`/var/lib/replicate-relay` → `private/…`):
/// [`private_file`] refuses a link in the file's own place instead.
pub(super) fn open(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open(path)
}

/// Makes the store file private before SQLite opens it: created with mode
/// 0600 (its WAL and shared-memory files take the same mode from it), an
/// existing one narrowed to 0600, its directory created 0700; a symbolic
/// link where the file or its WAL should be is refused. The file is
/// created with O_EXCL, so a link planted first is never followed, and
/// once it exists, in a sticky directory such as /tmp, nobody else can
/// swap it for one. Under systemd the unit's UMask and StateDirectory do
/// this already; elsewhere nothing did.
pub(super) fn private_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        let meta = match std::fs::symlink_metadata(&file) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if suffix.is_empty() {
                    // O_CREAT|O_EXCL: never follows a link, never opens another's file.
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&file)
                        .map_err(|e| format!("cannot create {}: {e}", file.display()))?;
                }
                continue;
            }
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        if meta.file_type().is_symlink() {
            return Err(format!(
                "{} is a symbolic link; give the store's real path in [store] path",
                file.display()
            ));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("cannot make {} private (mode 0600): {e}", file.display()))?;
            tracing::info!(message = "Made a store file private to this user (mode 0600).", file = %file.display());
        }
    }
    Ok(())
}

/// Opens a thread's connection again when the one it holds was opened
/// read-only (the store was write-protected at start): SQLite never makes
/// such a connection writable, so without this the store would answer 503
/// until a restart, long after the file was fixed.
pub(super) struct Reopen {
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

    pub(super) fn new(role: &'static str, path: &Path, busy_timeout: Duration) -> Self {
        Self {
            role,
            path: path.to_owned(),
            busy_timeout,
            last_try: Cell::new(None),
        }
    }

    /// A new connection, configured as at start (for a thread that starts
    /// again after a panic).
    pub(super) fn open(&self) -> rusqlite::Result<Connection> {
        let conn = open(&self.path)?;
        configure(&conn, self.busy_timeout)?;
        Ok(conn)
    }

    /// A writable connection opened by `open`, configured as at start and
    /// then by `setup` (the thread's own settings), if `conn` is read-only,
    /// the last try was over a second ago, and the store can now be written.
    pub(super) fn if_read_only(
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
pub(super) fn read_only(path: &str) -> String {
    format!(
        "{path} is read-only (its permissions, an immutable flag, or a read-only mount), so events cannot be stored; make it and its directory writable by the user the daemon runs as (the daemon tries it again every second, no restart needed)"
    )
}
