//! What `events show` reads from a PostgreSQL store: the events of one
//! job (or one webhook, or one sequence number), each with its deliveries;
//! and one delivery's attempts.

use tokio_postgres::GenericClient;

use super::outbox::{DELIVERY_COLUMNS, EVENT_COLUMNS, Result, delivery_from_row, event_from_row};
use crate::store::{AttemptRecord, Attempts, Found};

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

pub async fn attempts(c: &impl GenericClient, id: i64) -> Result<Option<Attempts>> {
    let sql = format!("SELECT {DELIVERY_COLUMNS}, message FROM deliveries WHERE id = $1");
    let Some(row) = c.query_opt(&sql, &[&id]).await? else {
        return Ok(None);
    };
    let delivery = delivery_from_row(&row)?;
    let message: Option<String> = row.try_get(13)?;
    let list = c
        .query(
            "SELECT number, started_ms, duration_ms, outcome, error, status, exchanges
             FROM attempts WHERE delivery_id = $1 ORDER BY number",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(AttemptRecord {
                number: r.try_get(0)?,
                started_ms: r.try_get(1)?,
                duration_ms: r.try_get(2)?,
                outcome: r.try_get(3)?,
                error: r.try_get(4)?,
                status: r.try_get(5)?,
                exchanges: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Attempts {
        delivery,
        message,
        list,
    }))
}
