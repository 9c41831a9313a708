//! The PostgreSQL store's tables, and migrating them: each step runs in a
//! transaction holding an advisory lock, so two instances starting together
//! migrate once (the second waits, then finds nothing left to do).

use tokio_postgres::Client;

/// The lock every migration holds (an arbitrary constant, "relay" in ASCII).
const MIGRATION_LOCK: i64 = 0x72_65_6c_61_79;

/// Each step, in order; the store's version is how many have run.
const STEPS: &[&str] = &[
    // 1: events, deduplicated by webhook id; the outbox, deduplicated by
    // (job and final status, route, notifier), with a lease on what is
    // being sent so an instance that died lets another take it over.
    "CREATE TABLE events (
         seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
         webhook_id     TEXT   NOT NULL UNIQUE,
         object_id      TEXT   NOT NULL,
         kind           TEXT   NOT NULL,
         status         TEXT   NOT NULL,
         model          TEXT,
         query          TEXT   NOT NULL,
         body           BYTEA  NOT NULL,
         received_at_ms BIGINT NOT NULL
     );
     CREATE INDEX events_received ON events (received_at_ms);
     CREATE TABLE deliveries (
         id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
         event_seq          BIGINT NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
         dedup_key          TEXT   NOT NULL,
         route              TEXT   NOT NULL,
         notifier           TEXT   NOT NULL,
         state              TEXT   NOT NULL,
         attempts           BIGINT NOT NULL DEFAULT 0,
         created_at_ms      BIGINT NOT NULL,
         next_attempt_at_ms BIGINT NOT NULL,
         expires_at_ms      BIGINT NOT NULL,
         finished_at_ms     BIGINT,
         lease_until_ms     BIGINT,
         claimed_by         TEXT,
         last_error         TEXT,
         UNIQUE (dedup_key, route, notifier)
     );
     CREATE INDEX deliveries_due ON deliveries (notifier, state, next_attempt_at_ms);
     CREATE INDEX deliveries_event ON deliveries (event_seq);
     CREATE INDEX deliveries_waiting ON deliveries (id) WHERE state IN ('pending', 'sending');
     CREATE INDEX deliveries_dead ON deliveries (id) WHERE state = 'dead';
     CREATE INDEX deliveries_held ON deliveries (id) WHERE state = 'held';
     CREATE INDEX deliveries_finished ON deliveries (finished_at_ms)
         WHERE state IN ('delivered', 'dead');",
    // 2: the pauses receivers asked for (a 429's Retry-After), by rate key,
    // so one instance's 429 pauses every instance.
    "CREATE TABLE pauses (
         rate_key TEXT   PRIMARY KEY,
         until_ms BIGINT NOT NULL
     );",
    // 3: files and leased locks every instance shares (the ACME account,
    // certificate and challenge answers; the lock one order holds).
    "CREATE TABLE shared_files (
         name       TEXT   PRIMARY KEY,
         contents   BYTEA  NOT NULL,
         updated_ms BIGINT NOT NULL
     );
     CREATE TABLE shared_locks (
         name     TEXT   PRIMARY KEY,
         holder   TEXT   NOT NULL,
         until_ms BIGINT NOT NULL
     );",
    // 4: the unique keys compared byte by byte ("C"), whatever the
    // database's collation: equality is the same under any deterministic
    // one, nothing reads their order, and a locale's comparison made each
    // insert into such an index slower (400,000 webhook ids: ICU en-US
    // 3.9 s, "C" 3.1 s, on the machine of BENCHMARKS.md).
    "ALTER TABLE events ALTER COLUMN webhook_id TYPE TEXT COLLATE \"C\";
     ALTER TABLE deliveries
         ALTER COLUMN dedup_key TYPE TEXT COLLATE \"C\",
         ALTER COLUMN route TYPE TEXT COLLATE \"C\",
         ALTER COLUMN notifier TYPE TEXT COLLATE \"C\";",
    // 5: a delivery may wait for another of its event and route (`after`),
    // and keeps what its notifier reported (an archive's manifest).
    "ALTER TABLE deliveries ADD COLUMN after_notifier TEXT COLLATE \"C\",
                            ADD COLUMN result TEXT;",
    // 6: small named values every instance shares (how far catching up on
    // Replicate's API has come).
    "CREATE TABLE relay_state (
         name       TEXT COLLATE \"C\" PRIMARY KEY,
         value      TEXT   NOT NULL,
         updated_ms BIGINT NOT NULL
     );",
    // 7: a lifecycle route's deliveries of one job and notifier go one at a
    // time, in the job's lane.
    "ALTER TABLE deliveries ADD COLUMN lane TEXT COLLATE \"C\";
     CREATE INDEX deliveries_lane ON deliveries (lane, notifier) WHERE lane IS NOT NULL;",
    // 8: what each attempt did, deleted with its delivery, and the message
    // as last rendered.
    "ALTER TABLE deliveries ADD COLUMN message TEXT;
     CREATE TABLE attempts (
         delivery_id BIGINT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
         number      BIGINT NOT NULL,
         started_ms  BIGINT NOT NULL,
         duration_ms BIGINT NOT NULL,
         outcome     TEXT   NOT NULL,
         error       TEXT,
         status      INTEGER,
         exchanges   TEXT   NOT NULL,
         PRIMARY KEY (delivery_id, number)
     );",
];

/// The version this build writes.
pub const VERSION: i64 = STEPS.len() as i64;

/// Brings the database to [`VERSION`], one step per transaction under the
/// migration lock. A database written by a newer build is refused.
pub async fn migrate(client: &mut Client) -> Result<(), MigrateError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS relay_schema (version BIGINT NOT NULL);
             INSERT INTO relay_schema (version)
                 SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM relay_schema);",
        )
        .await
        .map_err(MigrateError::Database)?;
    loop {
        let tx = client.transaction().await.map_err(MigrateError::Database)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(MigrateError::Database)?;
        let version: i64 = tx
            .query_one("SELECT version FROM relay_schema", &[])
            .await
            .map_err(MigrateError::Database)?
            .get(0);
        if version > VERSION {
            return Err(MigrateError::TooNew {
                found: version,
                known: VERSION,
            });
        }
        if version == VERSION {
            return tx.commit().await.map_err(MigrateError::Database);
        }
        tx.batch_execute(STEPS[version as usize])
            .await
            .map_err(MigrateError::Database)?;
        tx.execute("UPDATE relay_schema SET version = $1", &[&(version + 1)])
            .await
            .map_err(MigrateError::Database)?;
        tx.commit().await.map_err(MigrateError::Database)?;
        tracing::info!(message = "Store migrated.", version = version + 1);
    }
}

/// Why migrating failed.
#[derive(Debug)]
pub enum MigrateError {
    Database(tokio_postgres::Error),
    TooNew { found: i64, known: i64 },
}
