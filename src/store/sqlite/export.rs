//! What `store copy` reads from a SQLite store: events a page at a time,
//! oldest first, with their deliveries' rows ([`crate::store::copy`]).

use rusqlite::Connection;

use super::outbox::{EVENT_COLUMNS, event_from_row};
use crate::store::copy::{DeliveryRow, Exported, assemble};

pub fn export(conn: &Connection, after_seq: i64, limit: usize) -> rusqlite::Result<Vec<Exported>> {
    let events = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?
        .query_map((after_seq, limit as i64), event_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(Vec::new());
    };
    let deliveries = conn
        .prepare_cached(
            "SELECT event_seq, dedup_key, route, notifier, state, expires_at_ms, after_notifier
             FROM deliveries WHERE event_seq BETWEEN ?1 AND ?2 ORDER BY id",
        )?
        .query_map((first.seq, last.seq), |r| {
            Ok(DeliveryRow {
                event_seq: r.get(0)?,
                dedup_key: r.get(1)?,
                route: r.get(2)?,
                notifier: r.get(3)?,
                state: r.get(4)?,
                expires_at_ms: r.get(5)?,
                after: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(assemble(events, deliveries))
}
