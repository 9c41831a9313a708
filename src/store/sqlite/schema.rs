//! The SQLite schema and its migrations: forward-only, each in its own
//! transaction, with the service manager kept informed while a large store
//! is rebuilt.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::store::{Cause, StoreError};

/// Forward-only schema migrations; `PRAGMA user_version` is the index of the last
/// one applied. Never edit a shipped entry: append a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the events table. `webhook_id` is unique because it is the dedup key.
    "CREATE TABLE events (
        seq            INTEGER PRIMARY KEY,
        webhook_id     TEXT    NOT NULL UNIQUE,
        object_id      TEXT    NOT NULL,
        kind           TEXT    NOT NULL,
        status         TEXT    NOT NULL,
        model          TEXT,
        query          TEXT    NOT NULL,
        body           BLOB    NOT NULL,
        received_at_ms INTEGER NOT NULL
    );",
    // 2: the outbox. Events stored before it existed count as routed, so an
    // upgrade does not notify about old jobs.
    "ALTER TABLE events ADD COLUMN routed_at_ms INTEGER;
     UPDATE events SET routed_at_ms = received_at_ms;
     CREATE INDEX events_unrouted ON events (seq) WHERE routed_at_ms IS NULL;
     CREATE TABLE deliveries (
         id                 INTEGER PRIMARY KEY,
         event_seq          INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
         dedup_key          TEXT    NOT NULL,
         route              TEXT    NOT NULL,
         notifier           TEXT    NOT NULL,
         state              TEXT    NOT NULL,
         attempts           INTEGER NOT NULL DEFAULT 0,
         created_at_ms      INTEGER NOT NULL,
         next_attempt_at_ms INTEGER NOT NULL,
         expires_at_ms      INTEGER NOT NULL,
         finished_at_ms     INTEGER,
         last_error         TEXT,
         UNIQUE (dedup_key, route, notifier)
     );
     CREATE INDEX deliveries_due ON deliveries (notifier, state, next_attempt_at_ms);
     CREATE INDEX deliveries_state ON deliveries (state, id);",
    // 3: dedup moves from a unique index on `events.webhook_id` to the `seen`
    // table, written in sorted batches (see `dedup`). SQLite cannot drop a
    // UNIQUE constraint, so the table is rebuilt, seqs kept (foreign keys are
    // off while migrating, so dropping the old table deletes no deliveries).
    "CREATE TABLE events_v3 (
        seq            INTEGER PRIMARY KEY,
        webhook_id     TEXT    NOT NULL,
        object_id      TEXT    NOT NULL,
        kind           TEXT    NOT NULL,
        status         TEXT    NOT NULL,
        model          TEXT,
        query          TEXT    NOT NULL,
        body           BLOB    NOT NULL,
        received_at_ms INTEGER NOT NULL,
        routed_at_ms   INTEGER
     );
     INSERT INTO events_v3
         SELECT seq, webhook_id, object_id, kind, status, model, query, body,
                received_at_ms, routed_at_ms
         FROM events ORDER BY seq;
     DROP TABLE events;
     ALTER TABLE events_v3 RENAME TO events;
     CREATE INDEX events_unrouted ON events (seq) WHERE routed_at_ms IS NULL;
     CREATE TABLE seen (
         webhook_id TEXT    PRIMARY KEY,
         seq        INTEGER NOT NULL
     ) WITHOUT ROWID;
     INSERT INTO seen (webhook_id, seq)
         SELECT webhook_id, seq FROM events WHERE true ORDER BY webhook_id
         ON CONFLICT DO NOTHING;
     CREATE TABLE seen_upto (seq INTEGER NOT NULL);
     INSERT INTO seen_upto (seq) SELECT coalesce(max(seq), 0) FROM events;
     CREATE TRIGGER events_forget AFTER DELETE ON events BEGIN
         DELETE FROM seen WHERE webhook_id = old.webhook_id AND seq = old.seq;
     END;",
    // 4: the outbox's counts, kept by triggers as rows change (a delivery
    // deleted with its event too), so `/metrics` reads three rows rather
    // than counting the outbox. Waiting counts pending and sending as one,
    // so a claim writes nothing here; delivered is not counted at all.
    // Every process that writes the store (the daemon, `retry` beside it)
    // keeps the counts right.
    "CREATE TABLE outbox_counts (
         class TEXT    PRIMARY KEY,
         n     INTEGER NOT NULL
     ) WITHOUT ROWID;
     INSERT INTO outbox_counts (class, n) VALUES
         ('waiting', (SELECT count(*) FROM deliveries WHERE state IN ('pending', 'sending'))),
         ('dead', (SELECT count(*) FROM deliveries WHERE state = 'dead')),
         ('held', (SELECT count(*) FROM deliveries WHERE state = 'held'));
     CREATE TRIGGER outbox_count_insert AFTER INSERT ON deliveries BEGIN
         UPDATE outbox_counts SET n = n + 1
         WHERE class = iif(new.state IN ('pending', 'sending'), 'waiting', new.state);
     END;
     CREATE TRIGGER outbox_count_update AFTER UPDATE OF state ON deliveries
         WHEN iif(old.state IN ('pending', 'sending'), 'waiting', old.state)
              IS NOT iif(new.state IN ('pending', 'sending'), 'waiting', new.state) BEGIN
         UPDATE outbox_counts SET n = n - 1
         WHERE class = iif(old.state IN ('pending', 'sending'), 'waiting', old.state);
         UPDATE outbox_counts SET n = n + 1
         WHERE class = iif(new.state IN ('pending', 'sending'), 'waiting', new.state);
     END;
     CREATE TRIGGER outbox_count_delete AFTER DELETE ON deliveries BEGIN
         UPDATE outbox_counts SET n = n - 1
         WHERE class = iif(old.state IN ('pending', 'sending'), 'waiting', old.state);
     END;",
    // 5: the pauses receivers asked for (a 429's Retry-After), by rate key,
    // kept in the store so a restart does not forget them (and, on a shared
    // store, every instance keeps them).
    "CREATE TABLE pauses (
         rate_key TEXT    PRIMARY KEY,
         until_ms INTEGER NOT NULL
     ) WITHOUT ROWID;",
    // 6: a delivery may wait for another of its event and route (`after`),
    // and keeps what its notifier reported (an archive's manifest).
    "ALTER TABLE deliveries ADD COLUMN after_notifier TEXT;
     ALTER TABLE deliveries ADD COLUMN result TEXT;",
    // 7: small named values kept across restarts (how far catching up on
    // Replicate's API has come).
    "CREATE TABLE relay_state (
         name       TEXT    PRIMARY KEY,
         value      TEXT    NOT NULL,
         updated_ms INTEGER NOT NULL
     ) WITHOUT ROWID;",
    // 8: a lifecycle route's deliveries of one job and notifier go one at a
    // time, in the job's lane.
    "ALTER TABLE deliveries ADD COLUMN lane TEXT;
     CREATE INDEX deliveries_lane ON deliveries (lane, notifier) WHERE lane IS NOT NULL;",
    // 9: what each attempt did, deleted with its delivery, and the message
    // as last rendered; an event's deliveries found without reading every
    // row (the dashboard's event page, and deleting an event's deliveries
    // with it). Job ids get no index of their own: it cost a fifth of the
    // ingest rate (the deliveries' dedup keys find a routed job instead).
    "ALTER TABLE deliveries ADD COLUMN message TEXT;
     CREATE INDEX deliveries_event ON deliveries (event_seq);
     CREATE TABLE attempts (
         delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
         number      INTEGER NOT NULL,
         started_ms  INTEGER NOT NULL,
         duration_ms INTEGER NOT NULL,
         outcome     TEXT    NOT NULL,
         error       TEXT,
         status      INTEGER,
         exchanges   TEXT    NOT NULL,
         PRIMARY KEY (delivery_id, number)
     ) WITHOUT ROWID;",
];

pub(super) fn check_version(found: i64, path: &Path) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found,
            known,
        });
    }
    Ok(())
}

pub(super) fn migrate(
    conn: &mut Connection,
    path: &Path,
    while_migrating: Option<fn(bool)>,
) -> Result<(), StoreError> {
    let fail = |e: rusqlite::Error| StoreError::Open {
        path: path.display().to_string(),
        cause: Cause::explained(
            "migrating the schema failed and was rolled back, so the store is as it was. \
             Free disk space (a migration may need about twice the store's size), make the \
             store writable, or stop whatever else has it open, then start again",
            e,
        ),
    };
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(fail)?;
    check_version(current, path)?;
    if current as usize == MIGRATIONS.len() {
        return Ok(());
    }
    // Creating a new store is quick: only an upgrade is worth telling about,
    // to the service manager and in the log.
    let upgrading = current > 0;
    let while_migrating = while_migrating.filter(|_| upgrading);
    // A migration may rebuild a table (drop and rename): with foreign keys
    // on, dropping `events` would delete every delivery. SQLite ignores this
    // pragma inside a transaction, so it is set around them; each migration
    // checks the keys itself before it commits.
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(fail)?;
    if let Some(tick) = while_migrating {
        tick(true);
        let mut last = std::time::Instant::now();
        conn.progress_handler(
            100_000,
            Some(move || {
                if last.elapsed() >= Duration::from_secs(5) {
                    last = std::time::Instant::now();
                    tick(true);
                }
                false // never interrupt
            }),
        )
        .map_err(fail)?;
    }
    let migrated = (|| {
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let version = index as i64 + 1;
            if upgrading {
                tracing::info!(
                    message = "Migrating the store schema; a large store takes a while.",
                    version
                );
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            let broken: Option<String> = tx
                .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                .optional()?;
            if let Some(table) = broken {
                return Err(rusqlite::Error::InvalidParameterName(format!(
                    "migration {version} left rows in {table} without their parent"
                )));
            }
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
            if upgrading {
                tracing::info!(message = "Store schema migrated.", version);
            }
        }
        if !upgrading {
            tracing::info!(message = "Store created.", path = %path.display(), version = MIGRATIONS.len());
        }
        Ok(())
    })();
    conn.progress_handler(0, None::<fn() -> bool>)
        .map_err(fail)?;
    if let Some(tick) = while_migrating {
        tick(false);
    }
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(fail)?;
    migrated.map_err(fail)
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
