//! `replicate-relay store copy`: a store's events, and what they still
//! have to send, carried into another store (SQLite to PostgreSQL and
//! back) through the two stores' doors alone: [`Admin::export`] reads the
//! source a page at a time, oldest first, and [`Store::insert`] writes
//! each event into the target as the intake would, with its waiting
//! deliveries as its routing.
//!
//! What the target's own rules give: an event already there (the same
//! webhook id) is not copied twice, so a copy can run again, or into a
//! store other instances already write; a delivery already made there for
//! the same job end, route and notifier is not planned again. Deliveries
//! already delivered or dead stay behind (their events come, so `events`
//! and dedup see them); waiting ones arrive due at once with their
//! original deadline, attempts counted afresh; held ones are held again
//! by the target's daemon if their notifier is still missing.

use bytes::Bytes;

use super::{Admin, Inserted, NewEvent, Routing, Store, StoreError, StoredEvent};

/// One event as a copy carries it.
#[derive(Debug, Clone)]
pub struct Exported {
    pub event: StoredEvent,
    /// The key its deliveries are deduplicated by (job and final status).
    pub dedup_key: String,
    /// The (route, notifier) pairs still to send: pending, sending or held.
    pub waiting: Vec<(String, String)>,
    /// The latest deadline among those.
    pub expires_at_ms: i64,
    /// `(route, notifier)` that the route's other deliveries wait for.
    pub after: Vec<(String, String)>,
}

/// One delivery row as a backend reads it for [`assemble`].
#[derive(Debug)]
pub struct DeliveryRow {
    pub event_seq: i64,
    pub dedup_key: String,
    pub route: String,
    pub notifier: String,
    pub state: String,
    pub expires_at_ms: i64,
    /// The notifier it waits for.
    pub after: Option<String>,
}

/// `events` (oldest first) with their delivery rows, as [`Exported`].
pub fn assemble(events: Vec<StoredEvent>, deliveries: Vec<DeliveryRow>) -> Vec<Exported> {
    let mut by_event: std::collections::HashMap<i64, Vec<DeliveryRow>> = Default::default();
    for d in deliveries {
        by_event.entry(d.event_seq).or_default().push(d);
    }
    events
        .into_iter()
        .map(|event| {
            let rows = by_event.remove(&event.seq).unwrap_or_default();
            let waiting: Vec<&DeliveryRow> = rows
                .iter()
                .filter(|d| matches!(d.state.as_str(), "pending" | "sending" | "held"))
                .collect();
            Exported {
                dedup_key: rows.first().map_or_else(
                    || format!("{}:{}", event.object_id, event.status),
                    |d| d.dedup_key.clone(),
                ),
                expires_at_ms: waiting
                    .iter()
                    .map(|d| d.expires_at_ms)
                    .max()
                    .unwrap_or(event.received_at_ms),
                waiting: waiting
                    .iter()
                    .map(|d| (d.route.clone(), d.notifier.clone()))
                    .collect(),
                after: {
                    let mut after: Vec<(String, String)> = waiting
                        .iter()
                        .filter_map(|d| Some((d.route.clone(), d.after.clone()?)))
                        .collect();
                    after.sort();
                    after.dedup();
                    after
                },
                event,
            }
        })
        .collect()
}

/// What a copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Events written into the target.
    pub events: usize,
    /// Events the target already had (the same webhook id).
    pub already_there: usize,
    /// Deliveries still to send, carried with the new events.
    pub waiting: usize,
}

/// How many events are read and written at once: the target commits them
/// together, as it does concurrent webhooks.
const PAGE: usize = 256;

/// Copies every event of `from` into `to`, calling `progress` after each
/// page; stops at the first error, leaving what was copied (running the
/// copy again carries on: what is there is not copied twice).
pub async fn copy(
    from: &dyn Admin,
    to: &dyn Store,
    mut progress: impl FnMut(Copied),
) -> Result<Copied, StoreError> {
    let mut done = Copied::default();
    let mut after = 0;
    loop {
        let page = from.export(after, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(done);
        };
        after = last.event.seq;
        let inserts: Vec<_> = page
            .into_iter()
            .map(|e| {
                let waiting = e.waiting.len();
                let insert = to.insert(NewEvent {
                    webhook_id: e.event.webhook_id,
                    object_id: e.event.object_id,
                    kind: e.event.kind,
                    status: e.event.status,
                    model: e.event.model,
                    query: e.event.query,
                    body: Bytes::from(e.event.body),
                    received_at_ms: e.event.received_at_ms,
                    routing: Routing {
                        dedup_key: e.dedup_key,
                        deliveries: e.waiting,
                        expires_at_ms: e.expires_at_ms,
                        after: e.after,
                        // A copied delivery runs outside its job's lane:
                        // rare (only a job mid-life at the copy), and
                        // it is still sent.
                        lifecycle: None,
                        groups: Vec::new(),
                    },
                });
                async move { (insert.await, waiting) }
            })
            .collect();
        for (inserted, waiting) in futures_util::future::join_all(inserts).await {
            match inserted? {
                Inserted::New(_) => {
                    done.events += 1;
                    done.waiting += waiting;
                }
                Inserted::Duplicate(_) => done.already_there += 1,
            }
        }
        progress(done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Kind, Status};

    fn event(seq: i64) -> StoredEvent {
        StoredEvent {
            seq,
            webhook_id: format!("msg_{seq}"),
            object_id: format!("p{seq}"),
            kind: Kind::Prediction,
            status: Status::Failed,
            model: None,
            query: String::new(),
            body: b"{}".to_vec(),
            received_at_ms: 1_000,
        }
    }

    fn row(event_seq: i64, notifier: &str, state: &str, expires_at_ms: i64) -> DeliveryRow {
        DeliveryRow {
            after: None,
            event_seq,
            dedup_key: format!("p{event_seq}:failed"),
            route: "r".into(),
            notifier: notifier.into(),
            state: state.into(),
            expires_at_ms,
        }
    }

    #[test]
    fn only_what_waits_is_carried_with_its_latest_deadline() {
        let out = assemble(
            vec![event(1), event(2), event(3)],
            vec![
                row(1, "a", "pending", 5),
                row(1, "b", "delivered", 9),
                row(1, "c", "held", 7),
                row(1, "d", "sending", 6),
                row(1, "e", "dead", 8),
                row(2, "a", "delivered", 5),
            ],
        );
        let waiting: Vec<Vec<&str>> = out
            .iter()
            .map(|e| e.waiting.iter().map(|(_, n)| n.as_str()).collect())
            .collect();
        assert_eq!(waiting, [vec!["a", "c", "d"], vec![], vec![]]);
        assert_eq!(out[0].expires_at_ms, 7);
        assert_eq!(out[1].dedup_key, "p2:failed");
        // An event routed nowhere keeps a key of its job end.
        assert_eq!(out[2].dedup_key, "p3:failed");
        assert_eq!(out[2].expires_at_ms, 1_000);
        assert_eq!(
            out.iter().map(|e| e.event.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }
}
