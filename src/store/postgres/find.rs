//! What `events show` reads from a PostgreSQL store: the events of one
//! job (or one webhook, or one sequence number), each with its deliveries.

use tokio_postgres::GenericClient;

use super::outbox::{DELIVERY_COLUMNS, EVENT_COLUMNS, Result, delivery_from_row, event_from_row};
use crate::store::Found;

pub async fn find(c: &impl GenericClient, id: &str, limit: usize) -> Result<Vec<Found>> {
    let seq: i64 = id.parse().unwrap_or(-1);
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE object_id = $1 OR webhook_id = $1 OR seq = $2
         ORDER BY seq DESC LIMIT $3"
    );
    let events = c
        .query(&sql, &[&id, &seq, &(limit as i64)])
        .await?
        .iter()
        .map(event_from_row)
        .collect::<Result<Vec<_>>>()?;
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_seq = $1 ORDER BY id");
    let mut found = Vec::with_capacity(events.len());
    for event in events {
        let deliveries = c
            .query(&sql, &[&event.seq])
            .await?
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>>>()?;
        found.push(Found { event, deliveries });
    }
    Ok(found)
}
