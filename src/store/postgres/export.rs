//! What `store copy` reads from a PostgreSQL store: events a page at a
//! time, oldest first, with their deliveries' rows
//! ([`crate::store::copy`]).

use tokio_postgres::GenericClient;

use super::outbox::{EVENT_COLUMNS, Result, event_from_row};
use crate::store::copy::{DeliveryRow, Exported, assemble};

pub async fn export(c: &impl GenericClient, after_seq: i64, limit: usize) -> Result<Vec<Exported>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2");
    let events = c
        .query(&sql, &[&after_seq, &(limit as i64)])
        .await?
        .iter()
        .map(event_from_row)
        .collect::<Result<Vec<_>>>()?;
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(Vec::new());
    };
    let rows = c
        .query(
            "SELECT event_seq, dedup_key, route, notifier, state, expires_at_ms, after_notifier
             FROM deliveries WHERE event_seq BETWEEN $1 AND $2 ORDER BY id",
            &[&first.seq, &last.seq],
        )
        .await?;
    let deliveries = rows
        .iter()
        .map(|r| {
            Ok(DeliveryRow {
                event_seq: r.try_get(0)?,
                dedup_key: r.try_get(1)?,
                route: r.try_get(2)?,
                notifier: r.try_get(3)?,
                state: r.try_get(4)?,
                expires_at_ms: r.try_get(5)?,
                after: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(assemble(events, deliveries))
}
