//! The SQLite store opened beside a daemon that may be running on it, for
//! the command line's [`Admin`] work (`events`, `deliveries`, `retry`): one
//! plain connection, no writer thread, no migration, and no dedup index —
//! the daemon stages webhook ids in memory and writes them in batches, so a
//! second writer of that index would race it. SQLite's locks keep the two
//! processes' transactions apart; a running daemon picks requeued
//! deliveries up within a second.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;

use super::{browse, open_for_cli, outbox};
use crate::store::{
    Admin, BoxFuture, Cause, DeliveryFilter, Listed, RetrySelector, StoreError, StoredEvent,
};

pub struct Beside {
    conn: Arc<Mutex<Connection>>,
}

impl Beside {
    /// Opens the store at `path`, which must exist and be of this version's
    /// schema (a daemon of this version creates and migrates it).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            conn: Arc::new(Mutex::new(open_for_cli(path)?)),
        })
    }

    /// Runs `f` on the connection, off the async threads.
    fn with<T, F>(
        &self,
        f: F,
        error: fn(Cause) -> StoreError,
    ) -> BoxFuture<'_, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
                f(&conn).map_err(|e| error(Cause::new(e)))
            })
            .await
            .map_err(|e| error(Cause::new(e)))?
        })
    }
}

impl Admin for Beside {
    fn recent(&self, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.with(move |c| outbox::recent(c, limit), StoreError::Read)
    }

    fn find(
        &self,
        id: &str,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::store::Found>, StoreError>> {
        let id = id.to_owned();
        self.with(move |c| super::find::find(c, &id, limit), StoreError::Read)
    }

    fn export(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::store::copy::Exported>, StoreError>> {
        self.with(
            move |c| super::export::export(c, after_seq, limit),
            StoreError::Read,
        )
    }

    fn deliveries(
        &self,
        filter: DeliveryFilter,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Listed>, StoreError>> {
        self.with(move |c| outbox::list(c, filter, limit), StoreError::Read)
    }

    fn waiting_by_notifier(&self) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>> {
        self.with(outbox::waiting_by_notifier, StoreError::Read)
    }

    fn attempts(
        &self,
        id: i64,
    ) -> BoxFuture<'_, Result<Option<crate::store::Attempts>, StoreError>> {
        self.with(move |c| super::find::attempts(c, id), StoreError::Read)
    }

    fn browse(
        &self,
        query: crate::store::browse::EventQuery,
    ) -> BoxFuture<'_, Result<crate::store::browse::EventPage, StoreError>> {
        self.with(move |c| browse::browse(c, &query), StoreError::Read)
    }

    fn seq_at(&self, at_ms: i64) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        self.with(move |c| browse::seq_at(c, at_ms), StoreError::Read)
    }

    fn event(&self, seq: i64) -> BoxFuture<'_, Result<Option<crate::store::Found>, StoreError>> {
        self.with(move |c| browse::event(c, seq), StoreError::Read)
    }

    fn activity(
        &self,
        from_seq: i64,
    ) -> BoxFuture<'_, Result<crate::store::browse::Activity, StoreError>> {
        self.with(move |c| browse::activity(c, from_seq), StoreError::Read)
    }

    fn notifier_loads(
        &self,
        notifiers: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<crate::store::browse::NotifierLoad>, StoreError>> {
        self.with(move |c| browse::loads(c, &notifiers), StoreError::Read)
    }

    fn size(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        self.with(browse::size, StoreError::Read)
    }

    fn retry(
        &self,
        selector: RetrySelector,
        now_ms: i64,
        max_age_ms: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.with(
            move |c| outbox::retry(c, selector, now_ms, max_age_ms),
            StoreError::Write,
        )
    }
}
