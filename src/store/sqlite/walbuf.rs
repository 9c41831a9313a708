//! A VFS shim over SQLite's own unix VFS that hands each commit's WAL frames
//! to the kernel in one write instead of two per frame.
//!
//! Why: SQLite writes a WAL frame as two `pwrite`s, its 24-byte header and
//! then its page, so a commit of ten webhooks is about eighteen system calls
//! before its fsync. On the store writer, the thread every webhook's answer
//! waits on, `perf` put a quarter of its CPU time in `pwrite` (BENCHMARKS.md).
//!
//! How: a WAL file opened through this VFS keeps writes that continue one
//! another in memory, and writes them out (one `pwrite`) before anything that
//! could look at the file: a sync, a read that overlaps them, a size query, a
//! truncation, a file control, a non-contiguous write, or close. Every other
//! file (the database, the journal) is the unix VFS's own, untouched.
//!
//! Why this is safe: SQLite publishes new frames to other connections (in the
//! wal-index) only after the commit's sync, and with `synchronous=FULL` every
//! commit syncs the WAL; so by the time any other connection or process can
//! read a frame, it is in the file, and it is on disk when the commit returns,
//! as before. Without a sync at each commit (`synchronous=NORMAL` or `OFF`)
//! frames could be published while still here, so this VFS is for the store's
//! writer connection only, which is always `FULL` (`configure`, tested).
//! Frames of a transaction that fails or rolls back are beyond the committed
//! end of the WAL whether they were written or not, as without this shim.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::mem::size_of;
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name connections open the store's writer with.
pub const NAME: &CStr = c"relay-walbuf";

/// The most bytes kept before they are written anyway: 15 frames of 4 KB
/// pages, where a commit of ten webhooks is about nine. Bigger transactions
/// (retention, the dedup index) are written in parts of this size.
const CAPACITY: usize = 64 * 1024;

/// A WAL file as SQLite sees it. SQLite allocates `szOsFile` bytes for every
/// file it opens through this VFS: this struct at the start, the unix VFS's
/// own file after it at `REAL_AT`.
#[repr(C)]
struct WalFile {
    /// What SQLite reads: the methods table. Must be first.
    base: ffi::sqlite3_file,
    /// The unix VFS's file, inside the same allocation.
    real: *mut ffi::sqlite3_file,
    /// Bytes not yet written, for the file from offset `start`.
    pending: Vec<u8>,
    start: i64,
}

/// Where the unix VFS's file starts, 16-byte aligned.
const REAL_AT: usize = size_of::<WalFile>().next_multiple_of(16);

/// The unix VFS (the default one), which does all the actual work.
fn real_vfs() -> *mut ffi::sqlite3_vfs {
    REAL.get()
        .copied()
        .unwrap_or(ptr::null_mut::<ffi::sqlite3_vfs>() as usize) as *mut _
}
static REAL: OnceLock<usize> = OnceLock::new();

/// Registers the VFS (once per process; later calls return the first
/// result). Not the default: only connections that name it use it.
pub fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: SQLite is initialised by this call if it was not, and the
            // VFS registered is leaked: SQLite keeps the pointer for the life
            // of the process.
            unsafe {
                let real = ffi::sqlite3_vfs_find(ptr::null());
                if real.is_null() {
                    return Err("SQLite has no default VFS".to_owned());
                }
                REAL.get_or_init(|| real as usize);
                let r = &*real;
                // Every VFS has these (version 1); checked so that the calls
                // below cannot fail on a missing one.
                if r.xOpen.is_none()
                    || r.xDelete.is_none()
                    || r.xAccess.is_none()
                    || r.xFullPathname.is_none()
                {
                    return Err("SQLite's default VFS lacks a required method".to_owned());
                }
                let vfs = Box::new(ffi::sqlite3_vfs {
                    iVersion: r.iVersion,
                    szOsFile: (REAL_AT as c_int) + r.szOsFile,
                    mxPathname: r.mxPathname,
                    pNext: ptr::null_mut(),
                    zName: NAME.as_ptr(),
                    pAppData: ptr::null_mut(),
                    xOpen: Some(open),
                    xDelete: Some(delete),
                    xAccess: Some(access),
                    xFullPathname: Some(full_pathname),
                    // The unix VFS's remaining methods ignore their VFS
                    // argument (they are marked UNUSED_PARAMETER in its
                    // source), so they are shared as they are.
                    xDlOpen: r.xDlOpen,
                    xDlError: r.xDlError,
                    xDlSym: r.xDlSym,
                    xDlClose: r.xDlClose,
                    xRandomness: r.xRandomness,
                    xSleep: r.xSleep,
                    xCurrentTime: r.xCurrentTime,
                    xGetLastError: r.xGetLastError,
                    xCurrentTimeInt64: r.xCurrentTimeInt64,
                    xSetSystemCall: r.xSetSystemCall,
                    xGetSystemCall: r.xGetSystemCall,
                    xNextSystemCall: r.xNextSystemCall,
                });
                match ffi::sqlite3_vfs_register(Box::leak(vfs), 0) {
                    ffi::SQLITE_OK => Ok(()),
                    rc => Err(format!(
                        "cannot register the WAL-writing VFS (SQLite code {rc})"
                    )),
                }
            }
        })
        .clone()
}

/// The VFS methods that take a path: the unix VFS's, called with the unix VFS
/// (they were checked present at registration).
macro_rules! vfs_pass {
    ($name:ident ( $($arg:ident : $ty:ty),* ) => $method:ident) => {
        unsafe extern "C" fn $name(_: *mut ffi::sqlite3_vfs, $($arg: $ty),*) -> c_int {
            let r = real_vfs();
            unsafe { ((*r).$method.unwrap())(r, $($arg),*) }
        }
    };
}

vfs_pass!(delete(name: *const c_char, sync: c_int) => xDelete);
vfs_pass!(access(name: *const c_char, flags: c_int, out: *mut c_int) => xAccess);
vfs_pass!(full_pathname(name: *const c_char, n: c_int, out: *mut c_char) => xFullPathname);

unsafe extern "C" fn open(
    _: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let r = real_vfs();
    // SAFETY: `file` points to `szOsFile` bytes (REAL_AT + the unix VFS's
    // size), uninitialised; SQLite calls xClose later only if `pMethods` is
    // set when this returns.
    unsafe {
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            // Not the WAL: the unix VFS's own file, at the start, as if
            // this VFS were not there.
            return ((*r).xOpen.unwrap())(r, name, file, flags, out_flags);
        }
        let real = file.cast::<u8>().add(REAL_AT).cast::<ffi::sqlite3_file>();
        (*real).pMethods = ptr::null();
        let mut rc = ((*r).xOpen.unwrap())(r, name, real, flags, out_flags);
        let methods = (*real).pMethods;
        // Read, write and close are what this file calls unconditionally.
        if rc == ffi::SQLITE_OK
            && (methods.is_null()
                || (*methods).xRead.is_none()
                || (*methods).xWrite.is_none()
                || (*methods).xClose.is_none())
        {
            rc = ffi::SQLITE_CANTOPEN;
        }
        if rc != ffi::SQLITE_OK {
            if let Some(close) = methods.as_ref().and_then(|m| m.xClose) {
                close(real);
            }
            (*file).pMethods = ptr::null();
            return rc;
        }
        ptr::write(
            file.cast::<WalFile>(),
            WalFile {
                base: ffi::sqlite3_file {
                    pMethods: &WAL_METHODS,
                },
                real,
                pending: Vec::new(),
                start: 0,
            },
        );
        ffi::SQLITE_OK
    }
}

/// The WAL file behind SQLite's handle.
///
/// SAFETY: `file` must be a handle `open` initialised as a `WalFile`, which
/// every handle with `WAL_METHODS` is; SQLite uses a handle from one thread at
/// a time.
unsafe fn wal<'a>(file: *mut ffi::sqlite3_file) -> &'a mut WalFile {
    unsafe { &mut *file.cast::<WalFile>() }
}

impl WalFile {
    fn real_methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: set by the unix VFS's successful xOpen, valid until close.
        unsafe { &*(*self.real).pMethods }
    }

    /// Writes out what is pending. On failure what was pending is dropped:
    /// it belongs to the transaction that is now failing.
    fn flush(&mut self) -> c_int {
        if self.pending.is_empty() {
            return ffi::SQLITE_OK;
        }
        let write = self.real_methods().xWrite.unwrap();
        // SAFETY: the pending bytes are valid for their length, which is at
        // most CAPACITY and so fits a c_int.
        let rc = unsafe {
            write(
                self.real,
                self.pending.as_ptr().cast(),
                self.pending.len() as c_int,
                self.start,
            )
        };
        self.pending.clear();
        rc
    }

    fn pending_end(&self) -> i64 {
        self.start + self.pending.len() as i64
    }
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: see `wal`; the WalFile is dropped here and SQLite does not use
    // the handle again.
    unsafe {
        let w = wal(file);
        let flushed = w.flush();
        let closed = (w.real_methods().xClose.unwrap())(w.real);
        ptr::drop_in_place(file.cast::<WalFile>());
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    offset: i64,
) -> c_int {
    let w = unsafe { wal(file) };
    // A frame of the transaction in progress, read back (a spilled page, or
    // checksums being recomputed): it must come from the file.
    if !w.pending.is_empty() && offset < w.pending_end() && offset + i64::from(amt) > w.start {
        let rc = w.flush();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    unsafe { (w.real_methods().xRead.unwrap())(w.real, buf, amt, offset) }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amt: c_int,
    offset: i64,
) -> c_int {
    let w = unsafe { wal(file) };
    let len = usize::try_from(amt).unwrap_or(0);
    let follows = w.pending.is_empty() || offset == w.pending_end();
    if !follows || w.pending.len() + len > CAPACITY {
        // Anything else (a frame of this transaction rewritten, say) goes
        // after what is pending, in order.
        let rc = w.flush();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if len > CAPACITY {
        return unsafe { (w.real_methods().xWrite.unwrap())(w.real, data, amt, offset) };
    }
    if w.pending.is_empty() {
        w.start = offset;
        if w.pending.capacity() == 0 {
            w.pending.reserve_exact(CAPACITY);
        }
    }
    // SAFETY: SQLite passes `amt` readable bytes at `data`.
    w.pending
        .extend_from_slice(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) });
    ffi::SQLITE_OK
}

/// A file method that does the unix VFS's work: after writing out what is
/// pending (`flush`) for those that look at the file's bytes, as is
/// (`pass`) for the others. SQLite calls none of the shared-memory or mmap
/// ones on a WAL file; a method the unix VFS lacks answers "not found"
/// rather than panic.
macro_rules! forward {
    (flush $name:ident ( $($arg:ident : $ty:ty),* ) => $method:ident) => {
        forward!(@ true, $name($($arg: $ty),*) => $method);
    };
    (pass $name:ident ( $($arg:ident : $ty:ty),* ) => $method:ident) => {
        forward!(@ false, $name($($arg: $ty),*) => $method);
    };
    (@ $flush:expr, $name:ident ( $($arg:ident : $ty:ty),* ) => $method:ident) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> c_int {
            let w = unsafe { wal(file) };
            if $flush {
                let rc = w.flush();
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
            }
            match w.real_methods().$method {
                Some(f) => unsafe { f(w.real, $($arg),*) },
                None => ffi::SQLITE_NOTFOUND,
            }
        }
    };
}

forward!(flush sync(flags: c_int) => xSync);
forward!(flush truncate(size: i64) => xTruncate);
forward!(flush file_size(size: *mut i64) => xFileSize);
forward!(flush file_control(op: c_int, arg: *mut c_void) => xFileControl);
forward!(flush fetch(offset: i64, amt: c_int, out: *mut *mut c_void) => xFetch);
forward!(pass lock(level: c_int) => xLock);
forward!(pass unlock(level: c_int) => xUnlock);
forward!(pass check_reserved_lock(out: *mut c_int) => xCheckReservedLock);
forward!(pass sector_size() => xSectorSize);
forward!(pass device_characteristics() => xDeviceCharacteristics);
forward!(pass shm_map(page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) => xShmMap);
forward!(pass shm_lock(offset: c_int, n: c_int, flags: c_int) => xShmLock);
forward!(pass shm_unmap(delete: c_int) => xShmUnmap);
forward!(pass unfetch(offset: i64, p: *mut c_void) => xUnfetch);

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    let w = unsafe { wal(file) };
    if let Some(f) = w.real_methods().xShmBarrier {
        unsafe { f(w.real) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags, params};
    use std::collections::BTreeMap;

    /// A small deterministic generator (xorshift), so a failure replays.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn writer(path: &std::path::Path) -> Connection {
        register().unwrap();
        let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), NAME).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        // A tiny page cache, so big transactions spill frames before their
        // commit and read them back: the paths where pending bytes are read
        // or rewritten.
        conn.pragma_update(None, "cache_size", 8).unwrap();
        conn
    }

    fn contents(conn: &Connection) -> BTreeMap<i64, Vec<u8>> {
        conn.prepare("SELECT k, v FROM t")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Random transactions of every size (one row, to spilling ones bigger
    /// than the buffer, rewriting their own pages), some rolled back, with
    /// checkpoints that restart the WAL: after each, a connection through
    /// the plain unix VFS, which reads the WAL file itself, sees exactly what
    /// was committed. A frame published before it reached the file would show
    /// as missing rows or a corrupt database.
    #[test]
    fn another_connection_sees_every_commit_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut w = writer(&path);
        w.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")
            .unwrap();
        let plain = Connection::open(&path).unwrap();
        let mut model = BTreeMap::new();
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let (mut spilled, mut big, mut rolled_back) = (0, 0, 0);
        for round in 0..120 {
            let rows = match rng.below(10) {
                0 => 100 + rng.below(100), // spills, and is bigger than CAPACITY
                1..=3 => 20 + rng.below(30),
                _ => 1 + rng.below(10),
            };
            let commit = rng.below(5) != 0;
            let mut changes = BTreeMap::new();
            let tx = w.transaction().unwrap();
            for _ in 0..rows {
                let k = rng.below(400) as i64;
                let len = 100 + rng.below(6000) as usize;
                let v = vec![(round as u8) ^ (k as u8); len];
                tx.execute(
                    "INSERT INTO t (k, v) VALUES (?1, ?2)
                     ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                    params![k, v],
                )
                .unwrap();
                changes.insert(k, v);
            }
            if rows > 100 {
                big += 1;
            }
            if tx.cache_flush().is_ok() && rows > 20 {
                spilled += 1;
            }
            if commit {
                tx.commit().unwrap();
                model.extend(changes);
            } else {
                tx.rollback().unwrap();
                rolled_back += 1;
            }
            if rng.below(8) == 0 {
                let mode = ["PASSIVE", "RESTART", "TRUNCATE"][rng.below(3) as usize];
                plain
                    .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
                    .unwrap();
            }
            assert_eq!(contents(&plain), model, "round {round}");
        }
        assert!(
            big > 5 && spilled > 5 && rolled_back > 5,
            "{big} {spilled} {rolled_back}"
        );
        drop(w);
        let check: String = plain
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        drop(plain);
        // And from the file alone, in a fresh process's view.
        let reopened = Connection::open(&path).unwrap();
        assert_eq!(contents(&reopened), model);
    }

    /// Only WAL files are wrapped; the database file is the unix VFS's own.
    #[test]
    fn only_the_wal_goes_through_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let w = writer(&path);
        w.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")
            .unwrap();
        let methods = |op: c_int| -> *const ffi::sqlite3_io_methods {
            let mut file: *mut ffi::sqlite3_file = ptr::null_mut();
            // SAFETY: these file controls write the file handle's pointer.
            unsafe {
                let rc = ffi::sqlite3_file_control(
                    w.handle(),
                    c"main".as_ptr(),
                    op,
                    (&raw mut file).cast(),
                );
                assert_eq!(rc, ffi::SQLITE_OK);
                (*file).pMethods
            }
        };
        assert!(ptr::eq(
            methods(ffi::SQLITE_FCNTL_JOURNAL_POINTER),
            &WAL_METHODS
        ));
        assert!(!ptr::eq(
            methods(ffi::SQLITE_FCNTL_FILE_POINTER),
            &WAL_METHODS
        ));
    }
}
