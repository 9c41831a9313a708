//! Why the store failed, in words for the person reading the log, with the
//! backend's own error kept behind them ([`Cause`]) so a caller can look at
//! it and `{:#}` shows the whole chain. Backend-neutral: SQLite's errors and
//! a future PostgreSQL client's arrive the same way.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// Store failures. Every one of them means "do not acknowledge": the intake
/// turns them into 503 so the sender retries.
///
/// The text of a [`Cause`] is part of the message, so a plain `{}` says what
/// went wrong; `source()` continues from what lies behind the cause, so the
/// chain never repeats itself.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// The store cannot be opened, created or migrated.
    Open { path: String, cause: Cause },
    /// A write did not commit.
    Write(Cause),
    /// A read failed.
    Read(Cause),
    /// The store is closed (the daemon is stopping).
    Closed,
    /// The store was written by a newer version.
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
}

impl StoreError {
    /// What the backend reported, when it did.
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            StoreError::Open { cause, .. } | StoreError::Write(cause) | StoreError::Read(cause) => {
                Some(cause)
            }
            StoreError::Closed | StoreError::TooNew { .. } => None,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open { path, cause } => {
                write!(f, "cannot open the store at {path}: {cause}")
            }
            StoreError::Write(cause) => write!(f, "the store could not commit: {cause}"),
            StoreError::Read(cause) => write!(f, "the store could not be read: {cause}"),
            StoreError::Closed => f.write_str("the store is closed (the daemon is stopping)"),
            StoreError::TooNew { path, found, known } => write!(
                f,
                "the store at {path} has schema version {found}, newer than this binary knows ({known}); run a newer replicate-relay"
            ),
        }
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause().and_then(|c| c.0.source())
    }
}

/// What a backend reported: its error, or words of ours in front of it
/// where its own do not say what to do. Shared, because one failed group
/// commit answers every request that was in it.
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync + 'static>);

impl Cause {
    /// The backend's error as it is.
    pub fn new(error: impl Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }

    /// `text` in front of the backend's `error`, which stays reachable.
    pub fn explained(text: impl Into<String>, error: impl Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(Explained {
            text: text.into(),
            source: Some(Box::new(error)),
        }))
    }

    /// A cause found by the store itself, with no error behind it.
    pub fn text(text: impl Into<String>) -> Self {
        Self(Arc::new(Explained {
            text: text.into(),
            source: None,
        }))
    }

    /// The first error of type `T` in the cause's chain, to branch on what
    /// the backend said (a full disk, a lock held elsewhere).
    pub fn find<T: Error + 'static>(&self) -> Option<&T> {
        let mut next: Option<&(dyn Error + 'static)> = Some(self.0.as_ref());
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<T>() {
                return Some(found);
            }
            next = e.source();
        }
        None
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug)]
struct Explained {
    text: String,
    source: Option<Box<dyn Error + Send + Sync + 'static>>,
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Error for Explained {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{:#}` as anyhow prints it: each error of the chain once.
    fn chain(e: &dyn Error) -> String {
        let mut out = e.to_string();
        let mut next = e.source();
        while let Some(s) = next {
            out.push_str(": ");
            out.push_str(&s.to_string());
            next = s.source();
        }
        out
    }

    #[test]
    fn the_backend_error_is_kept_and_shown_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let cases: Vec<(StoreError, &str, bool)> = vec![
            (
                StoreError::Write(Cause::new(io())),
                "the store could not commit: No space left on device",
                true,
            ),
            (
                StoreError::Write(Cause::explained("the store file is read-only", io())),
                "the store could not commit: the store file is read-only: No space left on device",
                true,
            ),
            (
                StoreError::Open {
                    path: "/x/relay.db".into(),
                    cause: Cause::text("no such file"),
                },
                "cannot open the store at /x/relay.db: no such file",
                false,
            ),
            (
                StoreError::Closed,
                "the store is closed (the daemon is stopping)",
                false,
            ),
        ];
        for (error, shown, has_io) in cases {
            assert_eq!(chain(&error), shown);
            let found = error.cause().and_then(Cause::find::<std::io::Error>);
            assert_eq!(found.is_some(), has_io, "{error}");
            if let Some(io) = found {
                assert_eq!(io.kind(), std::io::ErrorKind::StorageFull);
            }
        }
    }
}
