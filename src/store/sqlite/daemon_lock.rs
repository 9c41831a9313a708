//! The lock a daemon holds on its SQLite store while it runs: an exclusive
//! `flock` on `<store>-lock` beside the database, taken at open and let go
//! when the process ends, however it ends (the kernel drops it).
//!
//! Two daemons on one file would each keep webhook ids staged in memory
//! (`dedup`) that the other cannot see, and `store copy` must not read a
//! store that is still taking webhooks: both ask this lock. It is a file of
//! its own, not the database: closing any descriptor of the database would
//! drop SQLite's own (POSIX) locks on it in this process.

use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// Held while the store is open: the lock file, locked.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
}

/// The lock file of the store at `path`.
pub fn path_of(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push("-lock");
    PathBuf::from(name)
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another replicate-relay daemon is running on this store (it holds {}): stop it, or give this daemon a [store] path of its own",
        .0.display()
    )]
    Held(PathBuf),
    #[error("cannot create or lock {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Takes the lock of the store at `store`, or says who holds it.
pub fn take(store: &Path) -> Result<DaemonLock, LockError> {
    let path = path_of(store);
    let file = open(&path).map_err(|source| LockError::File {
        path: path.clone(),
        source,
    })?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(DaemonLock { _file: file }),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(LockError::Held(path)),
        Err(e) => Err(LockError::File {
            path,
            source: e.into(),
        }),
    }
}

/// Whether a daemon holds the lock of the store at `store` now.
pub fn held(store: &Path) -> bool {
    matches!(take(store), Err(LockError::Held(_)))
}

fn open(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("relay.db");
        assert!(!held(&store));
        let first = take(&store).unwrap();
        assert!(held(&store));
        let second = take(&store).unwrap_err();
        assert!(
            second
                .to_string()
                .contains("another replicate-relay daemon"),
            "{second}"
        );
        drop(first);
        assert!(!held(&store));
        take(&store).unwrap();
        assert_eq!(path_of(&store), dir.path().join("relay.db-lock"));
    }
}
