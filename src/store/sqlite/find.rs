//! What `events show` reads from a SQLite store: the events of one job
//! (or one webhook, or one sequence number), each with its deliveries.

use rusqlite::Connection;

use super::outbox::{DELIVERY_COLUMNS, EVENT_COLUMNS, delivery_from_row, event_from_row};
use crate::store::Found;

pub fn find(conn: &Connection, id: &str, limit: usize) -> rusqlite::Result<Vec<Found>> {
    let seq: i64 = id.parse().unwrap_or(-1);
    let events = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE object_id = ?1 OR webhook_id = ?1 OR seq = ?2
             ORDER BY seq DESC LIMIT ?3"
        ))?
        .query_map((id, seq, limit as i64), event_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut deliveries = conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_seq = ?1 ORDER BY id"
    ))?;
    events
        .into_iter()
        .map(|event| {
            let deliveries = deliveries
                .query_map([event.seq], delivery_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Found { event, deliveries })
        })
        .collect()
}
