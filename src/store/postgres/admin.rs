//! What the command line asks of a PostgreSQL store, on a pool of its
//! own ([`PostgresAdmin`]: events, deliveries, requeues, the daemons
//! connected), and the same answered by the daemon's store.

use deadpool_postgres::Pool;
use futures_util::future::BoxFuture;

use super::{
    COMMAND_LINE, DAEMON, PostgresStore, Target, browse, export, find, outbox, pool, read_error,
    write_error,
};
use crate::store::{Admin, DeliveryFilter, Listed, RetrySelector, StoreError, StoredEvent};

/// The command line's reads and requeues, on a pool.
pub struct PostgresAdmin {
    pub(super) pool: Pool,
}

impl PostgresAdmin {
    /// Connects to `target` without migrating anything.
    pub fn open(target: &Target) -> Result<Self, StoreError> {
        Ok(Self {
            pool: pool(target, COMMAND_LINE)?,
        })
    }

    /// The daemons connected to this database now, by instance and
    /// address: a daemon's sessions carry its instance name.
    pub async fn daemons(&self) -> Result<Vec<String>, StoreError> {
        let c = self.pool.get().await.map_err(read_error)?;
        let rows = c
            .query(
                "SELECT substr(application_name, $2), coalesce(host(client_addr), 'a local socket')
                 FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()
                   AND left(application_name, char_length($1)) = $1
                 GROUP BY 1, 2 ORDER BY 1, 2",
                &[&DAEMON, &(DAEMON.len() as i32 + 1)],
            )
            .await
            .map_err(read_error)?;
        rows.iter()
            .map(|r| {
                let (instance, from): (String, String) = (
                    r.try_get(0).map_err(read_error)?,
                    r.try_get(1).map_err(read_error)?,
                );
                Ok(format!("instance {instance}, connected from {from}"))
            })
            .collect()
    }
}

impl Admin for PostgresAdmin {
    fn browse(
        &self,
        query: crate::store::browse::EventQuery,
    ) -> BoxFuture<'_, Result<crate::store::browse::EventPage, StoreError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(read_error)?;
            browse::browse(&**c, &query).await.map_err(read_error)
        })
    }

    fn seq_at(&self, at_ms: i64) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(read_error)?;
            browse::seq_at(&**c, at_ms).await.map_err(read_error)
        })
    }

    fn event(&self, seq: i64) -> BoxFuture<'_, Result<Option<crate::store::Found>, StoreError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(read_error)?;
            browse::event(&**c, seq).await.map_err(read_error)
        })
    }

    fn activity(
        &self,
        from_seq: i64,
    ) -> BoxFuture<'_, Result<crate::store::browse::Activity, StoreError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(read_error)?;
            browse::activity(&**c, from_seq).await.map_err(read_error)
        })
    }

    fn notifier_loads(
        &self,
        notifiers: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<crate::store::browse::NotifierLoad>, StoreError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(read_error)?;
            browse::loads(&**c, &notifiers).await.map_err(read_error)
        })
    }

    fn size(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(read_error)?;
            browse::size(&**c).await.map_err(read_error)
        })
    }

    fn attempts(
        &self,
        id: i64,
    ) -> BoxFuture<'_, Result<Option<crate::store::Attempts>, StoreError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(read_error)?;
            find::attempts(&**c, id).await.map_err(read_error)
        })
    }

    fn recent(&self, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(read_error)?;
            outbox::recent(&**c, limit).await.map_err(read_error)
        })
    }

    fn find(
        &self,
        id: &str,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::store::Found>, StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let c = self.pool.get().await.map_err(read_error)?;
            find::find(&**c, &id, limit).await.map_err(read_error)
        })
    }

    fn export(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::store::copy::Exported>, StoreError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(read_error)?;
            export::export(&**c, after_seq, limit)
                .await
                .map_err(read_error)
        })
    }

    fn deliveries(
        &self,
        filter: DeliveryFilter,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Listed>, StoreError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(read_error)?;
            outbox::list(&**c, filter, limit).await.map_err(read_error)
        })
    }

    fn waiting_by_notifier(&self) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(read_error)?;
            outbox::waiting_by_notifier(&**c).await.map_err(read_error)
        })
    }

    fn retry(
        &self,
        selector: RetrySelector,
        now_ms: i64,
        max_age_ms: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(write_error)?;
            outbox::retry(&**c, selector, now_ms, max_age_ms)
                .await
                .map_err(write_error)
        })
    }
}

impl Admin for PostgresStore {
    fn recent(&self, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.admin.recent(limit)
    }

    fn attempts(
        &self,
        id: i64,
    ) -> BoxFuture<'_, Result<Option<crate::store::Attempts>, StoreError>> {
        self.admin.attempts(id)
    }

    fn browse(
        &self,
        query: crate::store::browse::EventQuery,
    ) -> BoxFuture<'_, Result<crate::store::browse::EventPage, StoreError>> {
        self.admin.browse(query)
    }

    fn seq_at(&self, at_ms: i64) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        self.admin.seq_at(at_ms)
    }

    fn event(&self, seq: i64) -> BoxFuture<'_, Result<Option<crate::store::Found>, StoreError>> {
        self.admin.event(seq)
    }

    fn activity(
        &self,
        from_seq: i64,
    ) -> BoxFuture<'_, Result<crate::store::browse::Activity, StoreError>> {
        self.admin.activity(from_seq)
    }

    fn notifier_loads(
        &self,
        notifiers: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<crate::store::browse::NotifierLoad>, StoreError>> {
        self.admin.notifier_loads(notifiers)
    }

    fn size(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        self.admin.size()
    }

    fn find(
        &self,
        id: &str,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::store::Found>, StoreError>> {
        self.admin.find(id, limit)
    }

    fn export(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::store::copy::Exported>, StoreError>> {
        self.admin.export(after_seq, limit)
    }

    fn deliveries(
        &self,
        filter: DeliveryFilter,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Listed>, StoreError>> {
        self.admin.deliveries(filter, limit)
    }

    fn waiting_by_notifier(&self) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>> {
        self.admin.waiting_by_notifier()
    }

    fn retry(
        &self,
        selector: RetrySelector,
        now_ms: i64,
        max_age_ms: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.admin.retry(selector, now_ms, max_age_ms)
    }
}
