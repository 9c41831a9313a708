//! The store: where an event is made durable before the intake answers 2xx.
//!
//! [`Store`] is the small interface the rest of the daemon uses, so a PostgreSQL
//! backend can sit beside [`sqlite::SqliteStore`] later without touching the
//! intake. Writes are asynchronous (the caller awaits its own commit, which may be
//! shared with other requests); reads are for the command line and health checks.

pub mod sqlite;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::event::Kind;

pub use sqlite::SqliteStore;

/// A boxed future, so the trait stays object-safe (`Arc<dyn Store>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An event the intake has verified and wants stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The sender's `webhook-id`: the same across retries, so it is the dedup key.
    pub webhook_id: String,
    /// The prediction or training id.
    pub object_id: String,
    pub kind: Kind,
    pub status: String,
    pub model: Option<String>,
    /// The webhook URL's raw query string (routing hints such as `team=vision`).
    pub query: String,
    /// The body exactly as received: the signature covers these bytes.
    pub body: Bytes,
    /// Milliseconds since the Unix epoch.
    pub received_at_ms: i64,
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
    pub kind: String,
    pub status: String,
    pub model: Option<String>,
    pub query: String,
    pub body: Vec<u8>,
    pub received_at_ms: i64,
}

/// Store failures. Every one of them means "do not acknowledge": the intake turns
/// them into 503 so the sender retries.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("the store could not commit: {0}")]
    Write(String),
    #[error("the store could not be read: {0}")]
    Read(String),
    #[error("the store is closed (the daemon is stopping)")]
    Closed,
    #[error(
        "the store at {path} has schema version {found}, newer than this binary knows ({known}); run a newer replicate-relay"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
}

/// The durable event store.
pub trait Store: Send + Sync + 'static {
    /// Stores `event` and resolves once it is committed to disk (or known to be a
    /// duplicate). Never resolves `Ok` for data that is not durable.
    fn insert(&self, event: NewEvent) -> BoxFuture<'static, Result<Inserted, StoreError>>;

    /// The most recent events, newest first.
    fn recent(&self, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>>;

    /// `Ok` when the store can be read and its last write (if any) succeeded.
    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Finishes pending writes and stops the writer. Inserts after this fail with
    /// [`StoreError::Closed`].
    fn close(&self) -> BoxFuture<'_, ()>;
}
