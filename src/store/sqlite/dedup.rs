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
//! writes each index page once per batch instead of once per event; each
//! batch is written in parts that ride along in the next commits of events.
//! A lookup asks the staged map, the batch being written, then `seen`.
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

/// A batch of ids is written a sixteenth at a time, each part inside the
/// transaction of a batch of events: written at once, 4,096 ids held up the
/// requests waiting for the next commit (the slowest answers); in parts, each
/// commit grows a little and there is no extra fsync.
const PARTS: usize = 16;

/// The writer's view of which webhook ids are stored.
#[derive(Debug)]
pub struct Dedup {
    /// Ids committed to `events` but not yet to `seen`.
    staged: HashMap<String, i64>,
    /// A batch being written to `seen` a part at a time, sorted by id; the
    /// first `written` are committed. Empty when no batch is under way.
    writing: Vec<(String, i64)>,
    written: usize,
    flush_at: usize,
    /// When the oldest id not yet in `seen` was staged (or, once a batch is
    /// done, when it was done): the clock of `FLUSH_AFTER`.
    since: Option<Instant>,
    /// After a failed flush (a full or read-only disk), not before this.
    retry_at: Option<Instant>,
}

/// What a batch transaction wrote of the batch under way: the cursor to
/// move to once it commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part(usize);

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
        let mut dedup = Self {
            since: (!staged.is_empty()).then(Instant::now),
            staged,
            writing: Vec::new(),
            written: 0,
            flush_at,
            retry_at: None,
        };
        dedup.start_batch_when_full();
        Ok(dedup)
    }

    /// The seq of the stored event with this webhook id, if any, as seen from
    /// `conn` (the writer's connection, inside its transaction).
    pub fn lookup(&self, conn: &Connection, webhook_id: &str) -> rusqlite::Result<Option<i64>> {
        if let Some(&seq) = self.staged.get(webhook_id) {
            return Ok(Some(seq));
        }
        if let Ok(i) = self
            .writing
            .binary_search_by(|(id, _)| id.as_str().cmp(webhook_id))
        {
            return Ok(Some(self.writing[i].1));
        }
        conn.prepare_cached("SELECT seq FROM seen WHERE webhook_id = ?1")?
            .query_row([webhook_id], |r| r.get(0))
            .optional()
    }

    /// Records an id whose event has just been committed. Once enough are
    /// staged, they become the next batch to write, in parts.
    pub fn stage(&mut self, webhook_id: String, seq: i64) {
        self.since.get_or_insert_with(Instant::now);
        self.staged.insert(webhook_id, seq);
        self.start_batch_when_full();
    }

    fn start_batch_when_full(&mut self) {
        if self.writing.is_empty() && self.staged.len() >= self.flush_at {
            self.writing = self.staged.drain().collect();
            self.writing.sort_unstable();
            self.written = 0;
        }
    }

    /// Ids not yet in `seen`.
    pub fn staged(&self) -> usize {
        self.staged.len() + self.writing.len() - self.written
    }

    /// Writes the next part of the batch under way, inside `tx` (a batch of
    /// events). Nothing changes here until [`Dedup::committed`] says the
    /// transaction committed.
    pub fn write_part(&self, tx: &Connection) -> rusqlite::Result<Option<Part>> {
        if self.writing.is_empty() {
            return Ok(None);
        }
        let part = self.writing.len().div_ceil(PARTS).max(1);
        let end = (self.written + part).min(self.writing.len());
        insert_seen(tx, &self.writing[self.written..end])?;
        if end == self.writing.len() {
            mark_upto(tx, &self.writing)?;
        }
        Ok(Some(Part(end)))
    }

    /// The transaction that carried `part` committed.
    pub fn committed(&mut self, part: Part) {
        self.written = part.0;
        if self.written == self.writing.len() {
            self.writing.clear();
            self.written = 0;
            // What is staged now came after the batch started: count its wait
            // from here (an id thus waits at most twice `FLUSH_AFTER`).
            self.since = (!self.staged.is_empty()).then(Instant::now);
        }
    }

    /// Whether staged ids have waited long enough to be written on their
    /// own (no batches of events are carrying them).
    pub fn due(&self) -> bool {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        self.since.is_some_and(|t| t.elapsed() >= FLUSH_AFTER)
    }

    /// Writes every id not yet in `seen`, in key order, in one transaction.
    /// On failure they stay staged (and still answer lookups), and the next
    /// try is not due for a while.
    pub fn flush(&mut self, conn: &mut Connection) -> rusqlite::Result<usize> {
        let pending = self.staged();
        if pending == 0 {
            return Ok(0);
        }
        let mut rest: Vec<(String, i64)> = self.writing.drain(self.written..).collect();
        rest.extend(self.staged.drain());
        rest.sort_unstable();
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            insert_seen(&tx, &rest)?;
            mark_upto(&tx, &rest)?;
            tx.commit()
        })();
        if let Err(e) = result {
            // Back to where they were: staged, answering lookups.
            self.writing.clear();
            self.written = 0;
            self.staged.extend(rest);
            self.retry_at = Some(Instant::now() + FLUSH_AFTER);
            return Err(e);
        }
        self.writing.clear();
        self.written = 0;
        self.since = None;
        self.retry_at = None;
        Ok(pending)
    }
}

fn insert_seen(tx: &Connection, ids: &[(String, i64)]) -> rusqlite::Result<()> {
    // Staged events are all still there: retention spares them.
    let mut insert = tx.prepare_cached(
        "INSERT INTO seen (webhook_id, seq) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?;
    for (id, seq) in ids {
        insert.execute(params![id, seq])?;
    }
    Ok(())
}

/// Every event up to the batch's newest is now in `seen`: those before it
/// were in earlier batches, and those staged since are newer.
fn mark_upto(tx: &Connection, batch: &[(String, i64)]) -> rusqlite::Result<()> {
    let newest = batch.iter().map(|(_, s)| *s).max().unwrap_or(0);
    tx.execute("UPDATE seen_upto SET seq = max(seq, ?1)", [newest])?;
    Ok(())
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

    /// Commits `part` the way the writer does: inside a transaction.
    fn ride_along(dedup: &mut Dedup, conn: &mut Connection) -> Option<Part> {
        let tx = conn.transaction().unwrap();
        let part = dedup.write_part(&tx).unwrap();
        tx.commit().unwrap();
        if let Some(part) = part {
            dedup.committed(part);
        }
        part
    }

    fn in_seen(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM seen", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_batch_is_written_in_parts_and_answers_all_along() {
        let (_dir, mut conn) = store();
        let mut dedup = Dedup::open(&conn, 32).unwrap();
        let ids: Vec<(String, i64)> = (0..40)
            .map(|n| {
                let id = format!("msg_{n:02}");
                let seq = insert(&conn, &id);
                (id, seq)
            })
            .collect();
        let answers_all = |dedup: &Dedup, conn: &Connection| {
            for (id, seq) in &ids {
                assert_eq!(dedup.lookup(conn, id).unwrap(), Some(*seq), "{id}");
            }
            assert_eq!(dedup.lookup(conn, "msg_new").unwrap(), None);
        };
        for (id, seq) in &ids[..31] {
            dedup.stage(id.clone(), *seq);
        }
        assert_eq!(
            ride_along(&mut dedup, &mut conn),
            None,
            "below the batch size"
        );
        for (id, seq) in &ids[31..] {
            dedup.stage(id.clone(), *seq);
        }
        // 32 ids became a batch, written two at a time (a sixteenth); the
        // other eight wait for the next one.
        assert_eq!(dedup.staged(), 40);
        let mut parts = 0;
        while ride_along(&mut dedup, &mut conn).is_some() {
            parts += 1;
            answers_all(&dedup, &conn);
            assert_eq!(in_seen(&conn), 2 * parts);
            assert_eq!(upto(&conn), if parts < 16 { 0 } else { ids[31].1 });
        }
        assert_eq!((parts, dedup.staged()), (16, 8));
        assert_eq!(dedup.flush(&mut conn).unwrap(), 8);
        answers_all(&dedup, &conn);
        assert_eq!((in_seen(&conn), upto(&conn)), (40, ids[39].1));
    }

    #[test]
    fn a_part_in_a_transaction_that_rolls_back_is_written_again() {
        let (_dir, mut conn) = store();
        let mut dedup = Dedup::open(&conn, 2).unwrap();
        for id in ["msg_a", "msg_b"] {
            let seq = insert(&conn, id);
            dedup.stage(id.into(), seq);
        }
        let tx = conn.transaction().unwrap();
        assert_eq!(dedup.write_part(&tx).unwrap(), Some(Part(1)));
        drop(tx); // rolled back: never committed
        assert_eq!(in_seen(&conn), 0);
        assert_eq!(ride_along(&mut dedup, &mut conn), Some(Part(1)));
        assert_eq!(ride_along(&mut dedup, &mut conn), Some(Part(2)));
        assert_eq!((in_seen(&conn), dedup.staged()), (2, 0));
    }

    #[test]
    fn a_failed_flush_keeps_the_ids_and_waits_before_trying_again() {
        let (dir, mut conn) = store();
        let mut dedup = Dedup::open(&conn, 2).unwrap();
        let mut seqs = Vec::new();
        for id in ["msg_a", "msg_b", "msg_c"] {
            let seq = insert(&conn, id);
            dedup.stage(id.into(), seq);
            seqs.push(seq);
        }
        // Half of the batch written; then the disk goes away.
        ride_along(&mut dedup, &mut conn).unwrap();
        let other = Connection::open(dir.path().join("relay.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        conn.busy_timeout(std::time::Duration::ZERO).unwrap();
        assert!(dedup.flush(&mut conn).is_err());
        for (id, seq) in ["msg_a", "msg_b", "msg_c"].iter().zip(&seqs) {
            assert_eq!(dedup.lookup(&conn, id).unwrap(), Some(*seq));
        }
        assert_eq!(dedup.staged(), 2);
        assert!(!dedup.due(), "not retried at once");
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(dedup.flush(&mut conn).unwrap(), 2);
        assert_eq!((in_seen(&conn), upto(&conn)), (3, seqs[2]));
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
    fn open_starts_a_batch_when_a_crash_left_a_full_one() {
        let (_dir, mut conn) = store();
        for id in ["msg_a", "msg_b", "msg_c"] {
            insert(&conn, id);
        }
        let mut dedup = Dedup::open(&conn, 2).unwrap();
        // Carried by the next commits of events, without waiting 10 s.
        assert!(ride_along(&mut dedup, &mut conn).is_some());
        while ride_along(&mut dedup, &mut conn).is_some() {}
        assert_eq!((in_seen(&conn), dedup.staged()), (3, 0));
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
