//! Digests in a SQLite store: a grouped route's deliveries share their
//! group's lane, so they go one at a time and are all due together, when
//! no member has come for the group's wait or its longest wait after the
//! first has passed. The dispatcher reads a group's members when it
//! claims the first, and marks them all sent in one transaction.

use rusqlite::{Connection, params};

use super::outbox::{DELIVERY_COLUMNS, EVENT_COLUMNS, delivery_from_row, event_from_row};
use crate::store::{Delivery, Group, StoredEvent};

/// Moves the due time of `group` after a member arrived at `now_ms`,
/// inside the caller's transaction. Each member is inserted due after the
/// group's wait; only the oldest waiting member of each notifier, which
/// the lane holds the others behind, is moved: one row written per insert
/// however large the group.
pub(super) fn slide(conn: &Connection, group: &Group, now_ms: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE deliveries SET next_attempt_at_ms = MIN(?2 + ?3, created_at_ms + ?4)
         WHERE id IN (SELECT MIN(id) FROM deliveries
                      WHERE lane = ?1 AND state = 'pending' GROUP BY notifier)",
    )?
    .execute(params![
        group.lane,
        now_ms,
        group.wait_ms,
        group.max_wait_ms
    ])?;
    Ok(())
}

/// Up to `limit` members of `lane` for `notifier` still to be sent (the
/// claimed one included), oldest first, with their events, as long as
/// their bodies come to at most `max_bytes` (the first always).
pub fn members(
    conn: &Connection,
    lane: &str,
    notifier: &str,
    limit: usize,
    max_bytes: usize,
) -> rusqlite::Result<Vec<(Delivery, StoredEvent)>> {
    let deliveries: Vec<Delivery> = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries
             WHERE lane = ?1 AND notifier = ?2 AND state IN ('pending', 'sending')
             ORDER BY id LIMIT ?3"
        ))?
        .query_map(params![lane, notifier, limit as i64], delivery_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    let mut size = conn.prepare_cached("SELECT length(body) FROM events WHERE seq = ?1")?;
    let mut event = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?1"
    ))?;
    let mut out = Vec::with_capacity(deliveries.len());
    let mut bytes = 0usize;
    for d in deliveries {
        let len: i64 = size.query_row([d.event_seq], |r| r.get(0))?;
        bytes = bytes.saturating_add(len.max(0) as usize);
        if bytes > max_bytes && !out.is_empty() {
            break;
        }
        let e = event.query_row([d.event_seq], event_from_row)?;
        out.push((d, e));
    }
    Ok(out)
}

/// Marks deliveries `ids` delivered at `now_ms` with `result`, together.
pub fn delivered(
    conn: &mut Connection,
    ids: &[i64],
    result: Option<&str>,
    now_ms: i64,
) -> rusqlite::Result<usize> {
    let ids = serde_json::to_string(ids).expect("integers serialize");
    conn.execute(
        "UPDATE deliveries SET state = 'delivered', finished_at_ms = ?2, last_error = NULL,
             result = ?3
         WHERE id IN (SELECT value FROM json_each(?1)) AND state IN ('pending', 'sending')",
        params![ids, now_ms, result],
    )
}
