//! What `events show` reads from a SQLite store: the events of one job
//! (or one webhook, or one sequence number), each with its deliveries;
//! and one delivery's attempts.

use rusqlite::Connection;

use super::outbox::{DELIVERY_COLUMNS, EVENT_COLUMNS, delivery_from_row, event_from_row};
use crate::store::{AttemptRecord, Attempts, Found};

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

pub fn attempts(conn: &Connection, id: i64) -> rusqlite::Result<Option<Attempts>> {
    use rusqlite::OptionalExtension;
    let found = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS}, message FROM deliveries WHERE id = ?1"
        ))?
        .query_row([id], |r| {
            Ok((delivery_from_row(r)?, r.get::<_, Option<String>>(13)?))
        })
        .optional()?;
    let Some((delivery, message)) = found else {
        return Ok(None);
    };
    let list = conn
        .prepare_cached(
            "SELECT number, started_ms, duration_ms, outcome, error, status, exchanges
             FROM attempts WHERE delivery_id = ?1 ORDER BY number",
        )?
        .query_map([id], |r| {
            Ok(AttemptRecord {
                number: r.get(0)?,
                started_ms: r.get(1)?,
                duration_ms: r.get(2)?,
                outcome: r.get(3)?,
                error: r.get(4)?,
                status: r.get(5)?,
                exchanges: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(Attempts {
        delivery,
        message,
        list,
    }))
}
