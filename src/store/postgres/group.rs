//! Digests in a PostgreSQL store: as in SQLite (`store/sqlite/group.rs`),
//! a grouped route's deliveries share their group's lane and due time; any
//! instance may send a group, one at a time (the lane), and marks its
//! members sent together.

use tokio_postgres::GenericClient;

use super::outbox::{DELIVERY_COLUMNS, EVENT_COLUMNS, Result, delivery_from_row, event_from_row};
use crate::store::{Delivery, Group, StoredEvent};

/// See [`super::super::sqlite::group`]'s `slide`: only the oldest waiting
/// member of each notifier carries the group's due time.
pub async fn slide(c: &impl GenericClient, group: &Group, now_ms: i64) -> Result<()> {
    c.execute(
        "UPDATE deliveries SET next_attempt_at_ms = LEAST($2::int8 + $3::int8, created_at_ms + $4::int8)
         WHERE id IN (SELECT min(id) FROM deliveries
                      WHERE lane = $1 AND state = 'pending' GROUP BY notifier)",
        &[&group.lane, &now_ms, &group.wait_ms, &group.max_wait_ms],
    )
    .await?;
    Ok(())
}

/// See [`super::super::sqlite::group::members`].
pub async fn members(
    c: &impl GenericClient,
    lane: &str,
    notifier: &str,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<(Delivery, StoredEvent)>> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries
         WHERE lane = $1 AND notifier = $2 AND state IN ('pending', 'sending')
         ORDER BY id LIMIT $3"
    );
    let deliveries: Vec<Delivery> = c
        .query(&sql, &[&lane, &notifier, &(limit as i64)])
        .await?
        .iter()
        .map(delivery_from_row)
        .collect::<Result<_>>()?;
    // Their sizes first: only the bodies within the budget are read.
    let seqs: Vec<i64> = deliveries.iter().map(|d| d.event_seq).collect();
    let sizes: std::collections::HashMap<i64, i64> = c
        .query(
            "SELECT seq, octet_length(body)::int8 FROM events WHERE seq = ANY($1)",
            &[&seqs],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_>>()?;
    let mut bytes = 0usize;
    let mut kept = 0;
    for d in &deliveries {
        let len = sizes.get(&d.event_seq).copied().unwrap_or(0).max(0) as usize;
        bytes = bytes.saturating_add(len);
        if bytes > max_bytes && kept > 0 {
            break;
        }
        kept += 1;
    }
    let mut deliveries = deliveries;
    deliveries.truncate(kept);
    let seqs: Vec<i64> = deliveries.iter().map(|d| d.event_seq).collect();
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq = ANY($1)");
    let events: Vec<StoredEvent> = c
        .query(&sql, &[&seqs])
        .await?
        .iter()
        .map(event_from_row)
        .collect::<Result<_>>()?;
    Ok(deliveries
        .into_iter()
        .filter_map(|d| {
            let e = events.iter().find(|e| e.seq == d.event_seq)?.clone();
            Some((d, e))
        })
        .collect())
}

/// See [`super::super::sqlite::group::delivered`].
pub async fn delivered(
    c: &impl GenericClient,
    ids: &[i64],
    result: Option<&str>,
    now_ms: i64,
) -> Result<usize> {
    let n = c
        .execute(
            "UPDATE deliveries SET state = 'delivered', finished_at_ms = $2, last_error = NULL,
                 lease_until_ms = NULL, result = $3
             WHERE id = ANY($1) AND state IN ('pending', 'sending')",
            &[&ids, &now_ms, &result],
        )
        .await?;
    Ok(n as usize)
}
