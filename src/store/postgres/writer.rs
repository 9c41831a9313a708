//! Group commit on PostgreSQL: inserts waiting at once share one
//! transaction, and each resolves only when the server has acknowledged its
//! commit. A webhook id seen before (by this instance or another, even in
//! the same transaction) is answered as a duplicate with the stored event's
//! sequence number; deliveries are deduplicated by (job and final status,
//! route, notifier), and new ones are announced with `NOTIFY` at commit.

use std::collections::HashMap;
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

/// The most body bytes one statement carries: PostgreSQL refuses a message
/// over 1 GiB, and a batch of large bodies (up to `max_body` each) would
/// otherwise fail whole, again at every retry.
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Takes what is queued, a batch at a time, until the channel closes; a
/// batch of more than [`MAX_BATCH_BYTES`] of bodies commits in parts.
pub async fn run(pool: Pool, mut queue: mpsc::Receiver<Pending>, arrived: Arc<Notify>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        while !batch.is_empty() {
            let part = part_len(batch.iter().map(|p| p.event.body.len()), MAX_BATCH_BYTES);
            let part: Vec<Pending> = batch.drain(..part).collect();
            commit_part(&pool, part, &arrived).await;
        }
    }
}

/// How many of the bodies of `sizes` go in one statement: as many as fit
/// in `max` bytes, and at least one.
fn part_len(sizes: impl Iterator<Item = usize>, max: usize) -> usize {
    let mut bytes = 0;
    sizes
        .take_while(|size| {
            bytes += size;
            bytes <= max
        })
        .count()
        .max(1)
}

/// Commits `part` and answers each of its inserts.
async fn commit_part(pool: &Pool, part: Vec<Pending>, arrived: &Notify) {
    let events: Vec<&NewEvent> = part.iter().map(|p| &p.event).collect();
    match commit(pool, &events).await {
        Ok((answers, created)) => {
            if created {
                // This instance's own dispatcher, at once; others by NOTIFY.
                arrived.notify_one();
            }
            for (pending, answer) in part.into_iter().zip(answers) {
                let _ = pending.done.send(Ok(answer));
            }
        }
        Err(e) => {
            tracing::warn!(message = "The store could not commit.", error = %e);
            for pending in part {
                let _ = pending.done.send(Err(e.clone()));
            }
        }
    }
}

/// One transaction for `events`: every event in one statement, every
/// delivery in another (arrays unnested: two round trips whatever the batch
/// size), then the commit. Returns what each insert did, and whether any
/// delivery was created.
async fn commit(pool: &Pool, events: &[&NewEvent]) -> Result<(Vec<Inserted>, bool), StoreError> {
    let mut client = pool.get().await.map_err(write_error)?;
    let tx = client.transaction().await.map_err(write_error)?;
    let ids: Vec<&str> = events.iter().map(|e| e.webhook_id.as_str()).collect();
    let objects: Vec<&str> = events.iter().map(|e| e.object_id.as_str()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let statuses: Vec<&str> = events.iter().map(|e| e.status.as_str()).collect();
    let models: Vec<Option<&str>> = events.iter().map(|e| e.model.as_deref()).collect();
    let queries: Vec<&str> = events.iter().map(|e| e.query.as_str()).collect();
    let bodies: Vec<&[u8]> = events.iter().map(|e| &e.body[..]).collect();
    let received: Vec<i64> = events.iter().map(|e| e.received_at_ms).collect();
    // A webhook id seen before, or twice in this batch, is not inserted
    // again: the first of the batch is new, the rest are duplicates.
    // Statements prepared once per connection: a round trip fewer each.
    let insert_events = tx
        .prepare_cached(
            "INSERT INTO events
                 (webhook_id, object_id, kind, status, model, query, body, received_at_ms)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                  $5::text[], $6::text[], $7::bytea[], $8::int8[])
             ON CONFLICT (webhook_id) DO NOTHING
             RETURNING webhook_id, seq",
        )
        .await
        .map_err(write_error)?;
    let inserted = tx
        .query(
            &insert_events,
            &[
                &ids, &objects, &kinds, &statuses, &models, &queries, &bodies, &received,
            ],
        )
        .await
        .map_err(write_error)?;
    let mut new: HashMap<String, i64> = inserted
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    let seen: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| !new.contains_key(*id))
        .collect();
    let mut stored: HashMap<String, i64> = HashMap::new();
    if !seen.is_empty() {
        for r in tx
            .query(
                "SELECT webhook_id, seq FROM events WHERE webhook_id = ANY($1)",
                &[&seen],
            )
            .await
            .map_err(write_error)?
        {
            stored.insert(r.get(0), r.get(1));
        }
    }
    let mut answers = Vec::with_capacity(events.len());
    let (mut seqs, mut keys, mut routes, mut notifiers, mut created_at, mut expires) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut afters: Vec<Option<&str>> = Vec::new();
    let mut lanes: Vec<Option<&str>> = Vec::new();
    let mut waits: Vec<i64> = Vec::new();
    for e in events {
        let answer = match new.remove(&e.webhook_id) {
            Some(seq) => {
                stored.insert(e.webhook_id.clone(), seq);
                for (route, notifier) in &e.routing.deliveries {
                    seqs.push(seq);
                    keys.push(e.routing.key_of(route));
                    routes.push(route.as_str());
                    notifiers.push(notifier.as_str());
                    created_at.push(e.received_at_ms);
                    expires.push(e.routing.expires_at_ms);
                    afters.push(e.routing.waits_for(route, notifier));
                    lanes.push(e.routing.lane_of(route));
                    waits.push(e.routing.first_wait_ms(route));
                }
                Inserted::New(seq)
            }
            None => match stored.get(&e.webhook_id) {
                Some(seq) => Inserted::Duplicate(*seq),
                None => {
                    return Err(StoreError::Write(crate::store::error::Cause::explained(
                        format!("webhook {} was neither inserted nor found", e.webhook_id),
                        std::io::Error::other("lost row"),
                    )));
                }
            },
        };
        answers.push(answer);
    }
    let mut created = false;
    if !seqs.is_empty() {
        let insert_deliveries = tx
            .prepare_cached(
                "INSERT INTO deliveries
                     (event_seq, dedup_key, route, notifier, state, created_at_ms,
                      next_attempt_at_ms, expires_at_ms, after_notifier, lane)
                 SELECT d.seq, d.key, d.route, d.notifier, 'pending', d.at, d.at + d.wait,
                        d.expires, d.after, d.lane
                 FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[],
                             $6::int8[], $7::text[], $8::text[], $9::int8[])
                      AS d (seq, key, route, notifier, at, expires, after, lane, wait)
                 ON CONFLICT (dedup_key, route, notifier) DO NOTHING",
            )
            .await
            .map_err(write_error)?;
        created = tx
            .execute(
                &insert_deliveries,
                &[
                    &seqs,
                    &keys,
                    &routes,
                    &notifiers,
                    &created_at,
                    &expires,
                    &afters,
                    &lanes,
                    &waits,
                ],
            )
            .await
            .map_err(write_error)?
            > 0;
    }
    for e in events {
        for group in &e.routing.groups {
            super::group::slide(&*tx, group, e.received_at_ms)
                .await
                .map_err(write_error)?;
        }
    }
    if created {
        tx.batch_execute(&format!("NOTIFY {CHANNEL}"))
            .await
            .map_err(write_error)?;
    }
    tx.commit().await.map_err(write_error)?;
    Ok((answers, created))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_large_bodies_commits_in_parts() {
        for (sizes, max, want) in [
            (vec![10, 10, 10], 100, 3),
            (vec![60, 60, 60], 100, 1),
            (vec![500, 1], 100, 1),
            (vec![40, 60, 1], 100, 2),
        ] {
            assert_eq!(part_len(sizes.clone().into_iter(), max), want, "{sizes:?}");
        }
    }
}
