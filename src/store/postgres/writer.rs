//! Group commit on PostgreSQL: inserts waiting at once share one
//! transaction, and each resolves only when the server has acknowledged its
//! commit. A webhook id seen before (by this instance or another, even in
//! the same transaction) is answered as a duplicate with the stored event's
//! sequence number; deliveries are deduplicated by (job and final status,
//! route, notifier), and new ones are announced with `NOTIFY` at commit.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{Notify, mpsc, oneshot};

use super::{CHANNEL, write_error};
use crate::store::{Inserted, NewEvent, StoreError};

/// Inserts queued for the writer before callers wait (backpressure).
pub const QUEUE: usize = 4_096;
/// The most events one transaction carries.
const MAX_BATCH: usize = 256;

/// An insert waiting for its commit.
pub struct Pending {
    pub event: NewEvent,
    pub done: oneshot::Sender<Result<Inserted, StoreError>>,
}

/// Takes what is queued, a batch at a time, until the channel closes.
pub async fn run(pool: Pool, mut queue: mpsc::Receiver<Pending>, arrived: Arc<Notify>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let events: Vec<&NewEvent> = batch.iter().map(|p| &p.event).collect();
        match commit(&pool, &events).await {
            Ok((answers, created)) => {
                if created {
                    // This instance's own dispatcher, at once; others by NOTIFY.
                    arrived.notify_waiters();
                }
                for (pending, answer) in batch.drain(..).zip(answers) {
                    let _ = pending.done.send(Ok(answer));
                }
            }
            Err(e) => {
                tracing::warn!(message = "The store could not commit.", error = %e);
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One transaction for `events`: each event and its deliveries. Returns
/// what each insert did, and whether any delivery was created.
async fn commit(pool: &Pool, events: &[&NewEvent]) -> Result<(Vec<Inserted>, bool), StoreError> {
    let mut client = pool.get().await.map_err(write_error)?;
    let tx = client.transaction().await.map_err(write_error)?;
    let insert_event = tx
        .prepare_cached(
            "INSERT INTO events
                 (webhook_id, object_id, kind, status, model, query, body, received_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (webhook_id) DO NOTHING
             RETURNING seq",
        )
        .await
        .map_err(write_error)?;
    let stored = tx
        .prepare_cached("SELECT seq FROM events WHERE webhook_id = $1")
        .await
        .map_err(write_error)?;
    let insert_delivery = tx
        .prepare_cached(
            "INSERT INTO deliveries
                 (event_seq, dedup_key, route, notifier, state, created_at_ms,
                  next_attempt_at_ms, expires_at_ms)
             VALUES ($1, $2, $3, $4, 'pending', $5, $5, $6)
             ON CONFLICT (dedup_key, route, notifier) DO NOTHING",
        )
        .await
        .map_err(write_error)?;
    let mut answers = Vec::with_capacity(events.len());
    let mut created = false;
    for e in events {
        let row = tx
            .query_opt(
                &insert_event,
                &[
                    &e.webhook_id,
                    &e.object_id,
                    &e.kind.as_str(),
                    &e.status.as_str(),
                    &e.model,
                    &e.query,
                    &&e.body[..],
                    &e.received_at_ms,
                ],
            )
            .await
            .map_err(write_error)?;
        let Some(row) = row else {
            let seq: i64 = tx
                .query_one(&stored, &[&e.webhook_id])
                .await
                .map_err(write_error)?
                .get(0);
            answers.push(Inserted::Duplicate(seq));
            continue;
        };
        let seq: i64 = row.get(0);
        for (route, notifier) in &e.routing.deliveries {
            created |= tx
                .execute(
                    &insert_delivery,
                    &[
                        &seq,
                        &e.routing.dedup_key,
                        route,
                        notifier,
                        &e.received_at_ms,
                        &e.routing.expires_at_ms,
                    ],
                )
                .await
                .map_err(write_error)?
                > 0;
        }
        answers.push(Inserted::New(seq));
    }
    if created {
        tx.batch_execute(&format!("NOTIFY {CHANNEL}"))
            .await
            .map_err(write_error)?;
    }
    tx.commit().await.map_err(write_error)?;
    Ok((answers, created))
}
