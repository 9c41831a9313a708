//! The PostgreSQL store's shared files and leased locks ([`Shared`]): what
//! every instance on the database sees of the ACME certificate, and the
//! lock one order holds. A lock is a row with a holder and a lease, taken
//! in one statement (an upsert that only replaces an expired lease or the
//! holder's own), so two instances asking at once cannot both get it, and
//! one that died holding it lets go when its lease ends.

use crate::store::{BoxFuture, Lock, Shared, StoreError};

use super::{PostgresStore, read_error, write_error};

impl Shared for PostgresStore {
    fn load(&self, name: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        let name = name.to_owned();
        Box::pin(async move {
            let c = self.admin.pool.get().await.map_err(read_error)?;
            let row = c
                .query_opt(
                    "SELECT contents FROM shared_files WHERE name = $1",
                    &[&name],
                )
                .await
                .map_err(read_error)?;
            row.map(|r| r.try_get(0)).transpose().map_err(read_error)
        })
    }

    fn save(&self, files: Vec<(String, Vec<u8>)>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut c = self.admin.pool.get().await.map_err(write_error)?;
            let tx = c.transaction().await.map_err(write_error)?;
            for (name, contents) in &files {
                tx.execute(
                    "INSERT INTO shared_files (name, contents, updated_ms)
                     VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                     ON CONFLICT (name) DO UPDATE
                         SET contents = excluded.contents, updated_ms = excluded.updated_ms",
                    &[name, contents],
                )
                .await
                .map_err(write_error)?;
            }
            tx.commit().await.map_err(write_error)
        })
    }

    fn delete(&self, prefix: &str) -> BoxFuture<'_, Result<usize, StoreError>> {
        let prefix = prefix.to_owned();
        Box::pin(async move {
            let c = self.admin.pool.get().await.map_err(write_error)?;
            // Compared as text, not LIKE: a name may hold `%` or `_`.
            let n = c
                .execute(
                    "DELETE FROM shared_files WHERE left(name, char_length($1)) = $1",
                    &[&prefix],
                )
                .await
                .map_err(write_error)?;
            Ok(n as usize)
        })
    }

    fn lock(
        &self,
        name: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> BoxFuture<'_, Result<Lock, StoreError>> {
        let name = name.to_owned();
        Box::pin(async move {
            let c = self.admin.pool.get().await.map_err(write_error)?;
            // Twice at most: a lock let go between the two statements is
            // free, so it is asked for again.
            for _ in 0..2 {
                let taken = c
                    .query_opt(
                        "INSERT INTO shared_locks AS l (name, holder, until_ms) VALUES ($1, $2, $4)
                         ON CONFLICT (name) DO UPDATE
                             SET holder = excluded.holder, until_ms = excluded.until_ms
                             WHERE l.holder = excluded.holder OR l.until_ms <= $3
                         RETURNING holder",
                        &[&name, &self.instance, &now_ms, &until_ms],
                    )
                    .await
                    .map_err(write_error)?;
                if taken.is_some() {
                    return Ok(Lock::Taken);
                }
                let held = c
                    .query_opt(
                        "SELECT holder, until_ms FROM shared_locks WHERE name = $1",
                        &[&name],
                    )
                    .await
                    .map_err(read_error)?;
                if let Some(row) = held {
                    return Ok(Lock::HeldBy {
                        holder: row.try_get(0).map_err(read_error)?,
                        until_ms: row.try_get(1).map_err(read_error)?,
                    });
                }
            }
            Ok(Lock::HeldBy {
                holder: "another instance".into(),
                until_ms: now_ms,
            })
        })
    }

    fn unlock(&self, name: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let name = name.to_owned();
        Box::pin(async move {
            let c = self.admin.pool.get().await.map_err(write_error)?;
            c.execute(
                "DELETE FROM shared_locks WHERE name = $1 AND holder = $2",
                &[&name, &self.instance],
            )
            .await
            .map_err(write_error)?;
            Ok(())
        })
    }
}
