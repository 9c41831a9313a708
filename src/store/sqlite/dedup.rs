//! The dedup index: which `webhook-id`s are stored, and as which event.
//!
//! Why not a `UNIQUE` index on `events.webhook_id`: webhook ids arrive in
//! random order (Replicate's are `msg_` + a KSUID, random within a second), so
//! each event dirtied its own page of that index, and in WAL mode every dirty
//! page is written out again at every commit. At a dozen events per commit,
//! a dozen of the ~19 WAL frames a commit wrote were index pages, and dropping
//! the index nearly halved the commit (BENCHMARKS.md).
//!
//! So the writer keeps the ids of the newest events in memory ([`Dedup`]'s
//! staged map) and writes them into the `seen` table in sorted batches, which
//! writes each index page once per batch instead of once per event. A lookup
//! asks the staged map, then `seen`.
//!
//! Events are the truth; `seen` may lag them. `seen_upto` holds the last seq
//! whose id is in `seen`, and [`Dedup::open`] stages every event after it
//! before the writer starts, so a crash between a commit and the next flush
//! loses nothing. A trigger removes an id from `seen` when retention deletes
//! its event, so an id is free again exactly when its event is gone, as with
//! the old unique index. Retention leaves staged events alone (it deletes
//! nothing past `seen_upto`), so a flush never indexes a deleted event; and it
//! moves `seen_upto` back if it deleted the newest events, whose seqs SQLite
//! then hands out again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// Staged ids are written to `seen` once there are this many: a few hundred
/// KB of memory, and one write of the index per this many events.
pub const FLUSH_AT: usize = 4096;

/// ...or once the oldest has waited this long, so that retention (which
/// leaves staged events alone) and the next open never have much to do.
const FLUSH_AFTER: Duration = Duration::from_secs(10);

/// The writer's view of which webhook ids are stored.
#[derive(Debug)]
pub struct Dedup {
    /// Ids committed to `events` but not yet to `seen`.
    staged: HashMap<String, i64>,
    flush_at: usize,
    /// When the first id now staged was staged.
    since: Option<Instant>,
    /// After a failed flush (a full or read-only disk), not before this.
    retry_at: Option<Instant>,
}

impl Dedup {
    /// Stages the ids of the events stored after the last flush (a crash),
    /// so that lookups see every stored event. Reads only: a store opened
    /// read-only still opens (and answers 503 until it is writable).
    pub fn open(conn: &Connection, flush_at: usize) -> rusqlite::Result<Self> {
        let upto: i64 = conn.query_row("SELECT seq FROM seen_upto", [], |r| r.get(0))?;
        let staged = conn
            .prepare("SELECT webhook_id, seq FROM events WHERE seq > ?1")?
            .query_map([upto], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<HashMap<String, i64>>>()?;
        if !staged.is_empty() {
            tracing::info!(
                message = "Webhook ids of the newest events staged for the dedup index.",
                events = staged.len()
            );
        }
        Ok(Self {
            since: (!staged.is_empty()).then(Instant::now),
            staged,
            flush_at,
            retry_at: None,
        })
    }

    /// The seq of the stored event with this webhook id, if any, as seen from
    /// `conn` (the writer's connection, inside its transaction).
    pub fn lookup(&self, conn: &Connection, webhook_id: &str) -> rusqlite::Result<Option<i64>> {
        if let Some(&seq) = self.staged.get(webhook_id) {
            return Ok(Some(seq));
        }
        conn.prepare_cached("SELECT seq FROM seen WHERE webhook_id = ?1")?
            .query_row([webhook_id], |r| r.get(0))
            .optional()
    }

    /// Records an id whose event has just been committed.
    pub fn stage(&mut self, webhook_id: String, seq: i64) {
        self.since.get_or_insert_with(Instant::now);
        self.staged.insert(webhook_id, seq);
    }

    pub fn staged(&self) -> usize {
        self.staged.len()
    }

    /// Whether enough ids are staged to be worth a write, or they have
    /// waited long enough.
    pub fn due(&self) -> bool {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        self.staged.len() >= self.flush_at || self.since.is_some_and(|t| t.elapsed() >= FLUSH_AFTER)
    }

    /// Writes the staged ids into `seen`, in key order, in one transaction.
    /// On failure they stay staged (and still answer lookups), and the next
    /// try is not due for a while.
    pub fn flush(&mut self, conn: &mut Connection) -> rusqlite::Result<usize> {
        if self.staged.is_empty() {
            return Ok(0);
        }
        if let Err(e) = self.write(conn) {
            self.retry_at = Some(Instant::now() + FLUSH_AFTER);
            return Err(e);
        }
        let written = self.staged.len();
        self.staged.clear();
        self.since = None;
        self.retry_at = None;
        Ok(written)
    }

    fn write(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        let mut ids: Vec<(&String, &i64)> = self.staged.iter().collect();
        ids.sort_unstable();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            // Staged events are all still there: retention spares them.
            let mut insert = tx.prepare_cached(
                "INSERT INTO seen (webhook_id, seq) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )?;
            for (id, seq) in &ids {
                insert.execute(params![id, seq])?;
            }
            tx.execute(
                "UPDATE seen_upto SET seq = max(seq, ?1)",
                [ids.iter().map(|(_, s)| **s).max().unwrap_or(0)],
            )?;
        }
        tx.commit()
    }
}

/// After retention deleted events in `tx`: if it took the newest ones, their
/// seqs will be handed out again, so the flushed mark must not be past what
/// is left, or a crash would leave those new events out of the index.
pub fn after_prune(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE seen_upto SET seq = min(seq, (SELECT coalesce(max(seq), 0) FROM events))",
        [],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store at the current schema, opened directly.
    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        drop(super::super::SqliteStore::open(&path, Default::default()).unwrap());
        let conn = Connection::open(&path).unwrap();
        (dir, conn)
    }

    fn insert(conn: &Connection, webhook_id: &str) -> i64 {
        conn.execute(
            "INSERT INTO events (webhook_id, object_id, kind, status, model, query, body, received_at_ms)
             VALUES (?1, 'p1', 'prediction', 'succeeded', NULL, '', X'7B7D', 1000)",
            [webhook_id],
        )
        .unwrap();
        conn.last_insert_rowid()
    }

    fn upto(conn: &Connection) -> i64 {
        conn.query_row("SELECT seq FROM seen_upto", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn staged_ids_answer_before_and_after_the_flush() {
        let (_dir, mut conn) = store();
        let mut dedup = Dedup::open(&conn, 2).unwrap();
        let a = insert(&conn, "msg_a");
        dedup.stage("msg_a".into(), a);
        assert_eq!(dedup.lookup(&conn, "msg_a").unwrap(), Some(a));
        assert_eq!(dedup.lookup(&conn, "msg_b").unwrap(), None);
        assert!(!dedup.due());
        let b = insert(&conn, "msg_b");
        dedup.stage("msg_b".into(), b);
        assert!(dedup.due());
        assert_eq!(dedup.flush(&mut conn).unwrap(), 2);
        assert_eq!(dedup.staged(), 0);
        assert_eq!(dedup.lookup(&conn, "msg_a").unwrap(), Some(a));
        assert_eq!(dedup.lookup(&conn, "msg_b").unwrap(), Some(b));
        assert_eq!(upto(&conn), b);
    }

    #[test]
    fn a_failed_flush_keeps_the_ids_and_waits_before_trying_again() {
        let (dir, mut conn) = store();
        let mut dedup = Dedup::open(&conn, 1).unwrap();
        let a = insert(&conn, "msg_a");
        dedup.stage("msg_a".into(), a);
        assert!(dedup.due());
        // Another connection holds the write lock: the flush cannot write.
        let other = Connection::open(dir.path().join("relay.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        conn.busy_timeout(std::time::Duration::ZERO).unwrap();
        assert!(dedup.flush(&mut conn).is_err());
        assert_eq!(dedup.lookup(&conn, "msg_a").unwrap(), Some(a));
        assert!(!dedup.due(), "not retried at once");
        other.execute_batch("ROLLBACK").unwrap();
        dedup.retry_at = None;
        assert_eq!(dedup.flush(&mut conn).unwrap(), 1);
        assert_eq!(upto(&conn), a);
    }

    #[test]
    fn open_indexes_what_a_crash_left_unflushed() {
        let (_dir, mut conn) = store();
        let mut dedup = Dedup::open(&conn, FLUSH_AT).unwrap();
        let a = insert(&conn, "msg_a");
        dedup.stage("msg_a".into(), a);
        dedup.flush(&mut conn).unwrap();
        // Committed, staged, never flushed: the process died.
        let b = insert(&conn, "msg_b");
        dedup.stage("msg_b".into(), b);
        drop(dedup);
        let mut reopened = Dedup::open(&conn, FLUSH_AT).unwrap();
        assert_eq!(reopened.staged(), 1);
        assert_eq!(reopened.lookup(&conn, "msg_a").unwrap(), Some(a));
        assert_eq!(reopened.lookup(&conn, "msg_b").unwrap(), Some(b));
        reopened.flush(&mut conn).unwrap();
        assert_eq!(upto(&conn), b);
    }

    #[test]
    fn pruned_events_free_their_ids_and_reused_seqs_are_indexed() {
        let (_dir, mut conn) = store();
        let mut dedup = Dedup::open(&conn, FLUSH_AT).unwrap();
        for id in ["msg_a", "msg_b"] {
            let seq = insert(&conn, id);
            dedup.stage(id.into(), seq);
        }
        dedup.flush(&mut conn).unwrap();
        assert_eq!(upto(&conn), 2);
        // Retention takes everything, the newest event included.
        conn.execute("DELETE FROM events", []).unwrap();
        after_prune(&conn).unwrap();
        assert_eq!(upto(&conn), 0);
        assert_eq!(dedup.lookup(&conn, "msg_a").unwrap(), None);
        // SQLite hands seq 1 out again; a crash before the flush must not
        // leave it out of the index.
        let c = insert(&conn, "msg_c");
        assert_eq!(c, 1);
        let reopened = Dedup::open(&conn, FLUSH_AT).unwrap();
        assert_eq!(reopened.lookup(&conn, "msg_c").unwrap(), Some(1));
    }

    #[test]
    fn retention_spares_staged_events_until_they_are_flushed() {
        let (_dir, mut conn) = store();
        let mut dedup = Dedup::open(&conn, FLUSH_AT).unwrap();
        for (n, id) in ["msg_a", "msg_b"].iter().enumerate() {
            let seq = insert(&conn, id);
            dedup.stage(id.to_string(), seq);
            if n == 0 {
                dedup.flush(&mut conn).unwrap();
            }
        }
        // Both are old enough to go; only the flushed one may.
        let prune =
            |conn: &mut Connection| crate::store::sqlite::outbox::prune(conn, i64::MAX, 100);
        let seq_a = 1;
        conn.execute("UPDATE events SET routed_at_ms = 0", [])
            .unwrap();
        assert_eq!(prune(&mut conn).unwrap().0, 1);
        assert_eq!(dedup.lookup(&conn, "msg_a").unwrap(), None);
        assert!(
            conn.query_row("SELECT 1 FROM events WHERE seq = ?1", [seq_a], |_| Ok(()))
                .optional()
                .unwrap()
                .is_none()
        );
        dedup.flush(&mut conn).unwrap();
        assert_eq!(dedup.lookup(&conn, "msg_b").unwrap(), Some(2));
        assert_eq!(prune(&mut conn).unwrap().0, 1);
        assert_eq!(dedup.lookup(&conn, "msg_b").unwrap(), None);
    }
}
