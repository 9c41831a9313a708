//! The PostgreSQL store's reads and outbox writes: claims under `FOR UPDATE
//! SKIP LOCKED` with a lease (so instances never send one delivery at once,
//! and a claim an instance that died holds is taken over when its lease
//! ends), outcomes, holding and resuming, retention under an advisory lock
//! (one instance at a time), and what the command line lists.

use tokio_postgres::{GenericClient, Row};

use crate::event::{Kind, Status};
use crate::store::{
    Claimed, Delivery, DeliveryFilter, DeliveryState, Listed, NOT_WAITING, OutboxStats, Recovered,
    RetrySelector, StoredEvent,
};

/// How long a claim is an instance's alone: longer than any send (a
/// notifier's timeout is at most minutes), short enough that a delivery an
/// instance was sending when it died goes out again soon.
pub const LEASE_MS: i64 = 10 * 60 * 1000;

/// The lock retention holds (one instance prunes at a time).
const PRUNE_LOCK: i64 = 0x72_65_6c_61_79_70;

pub const EVENT_COLUMNS: &str =
    "seq, webhook_id, object_id, kind, status, model, query, body, received_at_ms";
pub(super) const DELIVERY_COLUMNS: &str = "id, event_seq, route, notifier, state, attempts, created_at_ms, \
     next_attempt_at_ms, expires_at_ms, last_error, after_notifier, result, lane";

/// How many columns [`DELIVERY_COLUMNS`] names: a listing's own columns
/// come after them.
const N: usize = 13;

/// A row the store cannot read as this build knows it.
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} `{text}` in the store")]
pub struct Unknown {
    pub(super) what: &'static str,
    pub(super) text: String,
}

pub type Result<T> = std::result::Result<T, QueryError>;

/// A query that failed, or a row it could not read.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Row(#[from] Unknown),
}

pub fn event_from_row(r: &Row) -> Result<StoredEvent> {
    let kind: String = r.try_get(3)?;
    Ok(StoredEvent {
        seq: r.try_get(0)?,
        webhook_id: r.try_get(1)?,
        object_id: r.try_get(2)?,
        kind: kind.parse::<Kind>().map_err(|_| Unknown {
            what: "kind",
            text: kind.clone(),
        })?,
        // Replicate may add statuses: an unknown one is kept, as at intake.
        status: Status::parse(r.try_get::<_, &str>(4)?),
        model: r.try_get(5)?,
        query: r.try_get(6)?,
        body: r.try_get(7)?,
        received_at_ms: r.try_get(8)?,
    })
}

pub(super) fn delivery_from_row(r: &Row) -> Result<Delivery> {
    let state: String = r.try_get(4)?;
    Ok(Delivery {
        id: r.try_get(0)?,
        event_seq: r.try_get(1)?,
        route: r.try_get(2)?,
        notifier: r.try_get(3)?,
        state: DeliveryState::parse(&state).ok_or(Unknown {
            what: "delivery state",
            text: state.clone(),
        })?,
        attempts: r.try_get(5)?,
        created_at_ms: r.try_get(6)?,
        next_attempt_at_ms: r.try_get(7)?,
        expires_at_ms: r.try_get(8)?,
        last_error: r.try_get(9)?,
        after: r.try_get(10)?,
        result: r.try_get(11)?,
        lane: r.try_get(12)?,
    })
}

pub async fn recent(c: &impl GenericClient, limit: usize) -> Result<Vec<StoredEvent>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY seq DESC LIMIT $1");
    c.query(&sql, &[&(limit as i64)])
        .await?
        .iter()
        .map(event_from_row)
        .collect()
}

/// Marks up to `limit` deliveries of `notifier` as sent by `instance` and
/// returns them with their events: those due, and those whose lease has
/// ended (their instance died while sending).
pub async fn claim(
    c: &mut deadpool_postgres::Client,
    notifier: &str,
    now_ms: i64,
    limit: usize,
    instance: &str,
) -> Result<Vec<Claimed>> {
    let tx = c.transaction().await?;
    let sql = format!(
        "UPDATE deliveries SET state = 'sending', attempts = attempts + 1,
             lease_until_ms = $4, claimed_by = $5
         WHERE id IN (SELECT id FROM deliveries
                      WHERE notifier = $1
                        AND ((state = 'pending' AND next_attempt_at_ms <= $2 AND {NOT_WAITING})
                             OR (state = 'sending' AND lease_until_ms <= $2))
                      ORDER BY next_attempt_at_ms, id LIMIT $3
                      FOR UPDATE SKIP LOCKED)
         RETURNING {DELIVERY_COLUMNS}"
    );
    let lease = now_ms.saturating_add(LEASE_MS);
    let rows = tx
        .query(
            &sql,
            &[&notifier, &now_ms, &(limit as i64), &lease, &instance],
        )
        .await?;
    let mut deliveries: Vec<Delivery> =
        rows.iter().map(delivery_from_row).collect::<Result<_>>()?;
    deliveries.sort_by_key(|d| (d.next_attempt_at_ms, d.id));
    let seqs: Vec<i64> = deliveries.iter().map(|d| d.event_seq).collect();
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq = ANY($1)");
    let events: Vec<StoredEvent> = tx
        .query(&sql, &[&seqs])
        .await?
        .iter()
        .map(event_from_row)
        .collect::<Result<_>>()?;
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries
         WHERE event_seq = $1 AND route = $2 AND notifier = $3"
    );
    let mut claimed = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        let Some(event) = events.iter().find(|e| e.seq == d.event_seq).cloned() else {
            continue;
        };
        let awaited = match &d.after {
            Some(after) => tx
                .query_opt(&sql, &[&d.event_seq, &d.route, after])
                .await?
                .as_ref()
                .map(delivery_from_row)
                .transpose()?,
            None => None,
        };
        claimed.push(Claimed {
            delivery: d,
            event,
            awaited,
        });
    }
    tx.commit().await?;
    Ok(claimed)
}

/// See [`crate::store::Store::keep_claim`]: only `instance`'s own claim,
/// and only while it is still sending.
pub async fn keep_claim(
    c: &impl GenericClient,
    id: i64,
    now_ms: i64,
    instance: &str,
) -> Result<()> {
    c.execute(
        "UPDATE deliveries SET lease_until_ms = $2
         WHERE id = $1 AND state = 'sending' AND claimed_by = $3",
        &[&id, &now_ms.saturating_add(LEASE_MS), &instance],
    )
    .await?;
    Ok(())
}

/// Records an attempt's end; the lease goes with it.
pub async fn finish(
    c: &mut deadpool_postgres::Client,
    id: i64,
    outcome: &crate::store::Outcome,
    now_ms: i64,
    log: Option<&crate::store::AttemptLog>,
) -> Result<()> {
    use crate::store::Outcome;
    let c = c.transaction().await?;
    if let Some(log) = log {
        let (name, error) = crate::store::outcome_name(outcome);
        c.execute(
            "INSERT INTO attempts (delivery_id, number, started_ms, duration_ms, outcome,
                                   error, status, exchanges)
             SELECT id, $2, $3, $4, $5, $6, $7, $8 FROM deliveries WHERE id = $1
             ON CONFLICT (delivery_id, number) DO UPDATE SET
                 started_ms = excluded.started_ms, duration_ms = excluded.duration_ms,
                 outcome = excluded.outcome, error = excluded.error,
                 status = excluded.status, exchanges = excluded.exchanges",
            &[
                &id,
                &log.number,
                &log.started_ms,
                &log.duration_ms,
                &name,
                &error,
                &log.status,
                &log.exchanges,
            ],
        )
        .await?;
    }
    let message = log.and_then(|l| l.message.as_deref());
    match outcome {
        Outcome::Delivered { result } => {
            c.execute(
                "UPDATE deliveries SET state = 'delivered', finished_at_ms = $2,
                     last_error = NULL, lease_until_ms = NULL, result = $3,
                     message = coalesce($4, message) WHERE id = $1",
                &[&id, &now_ms, result, &message],
            )
            .await?
        }
        Outcome::Retry { at_ms, error } => {
            c.execute(
                "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = $2,
                     last_error = $3, lease_until_ms = NULL, message = coalesce($4, message)
                 WHERE id = $1",
                &[&id, at_ms, error, &message],
            )
            .await?
        }
        Outcome::Dead { error } => {
            c.execute(
                "UPDATE deliveries SET state = 'dead', finished_at_ms = $2,
                     last_error = $3, lease_until_ms = NULL, message = coalesce($4, message)
                 WHERE id = $1",
                &[&id, &now_ms, error, &message],
            )
            .await?
        }
    };
    c.commit().await?;
    Ok(())
}

/// When the next of `notifiers`' deliveries is due, or a lease on one ends.
pub async fn next_due(c: &impl GenericClient, notifiers: &[String]) -> Result<Option<i64>> {
    let row = c
        .query_one(
            &format!(
                "SELECT min(CASE WHEN state = 'pending' THEN next_attempt_at_ms ELSE lease_until_ms END)
                 FROM deliveries WHERE notifier = ANY($1)
                   AND (state = 'sending' OR (state = 'pending' AND {NOT_WAITING}))"
            ),
            &[&notifiers],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// See [`crate::store::Store::release`]: `instance`'s own claims on
/// `notifier`'s deliveries, but for those it still holds.
pub async fn release(
    c: &impl GenericClient,
    notifier: &str,
    holding: &[i64],
    now_ms: i64,
    instance: &str,
) -> Result<usize> {
    let n = c
        .execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = $3,
                 lease_until_ms = NULL
             WHERE notifier = $1 AND state = 'sending' AND claimed_by = $4
               AND NOT (id = ANY($2))",
            &[&notifier, &holding, &now_ms, &instance],
        )
        .await?;
    Ok(n as usize)
}

/// See [`crate::store::Store::recover`]: `instance`'s own claims are
/// requeued at its start; other instances' are left to their leases.
pub async fn recover(
    c: &mut deadpool_postgres::Client,
    notifiers: &[String],
    now_ms: i64,
    requeue_sending: bool,
    instance: &str,
) -> Result<Recovered> {
    let tx = c.transaction().await?;
    let mut recovered = Recovered::default();
    if requeue_sending {
        recovered.requeued = tx
            .execute(
                "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = $1,
                     lease_until_ms = NULL
                 WHERE state = 'sending' AND claimed_by = $2",
                &[&now_ms, &instance],
            )
            .await? as usize;
    }
    let names = tx
        .query(
            "SELECT DISTINCT notifier, state FROM deliveries
             WHERE state IN ('pending', 'held') ORDER BY notifier",
            &[],
        )
        .await?;
    for row in names {
        let (name, state): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let known = notifiers.contains(&name);
        if state == "pending" && !known {
            let why = format!(
                "notifier `{name}` is not in the config; held until a notifier of that name is back"
            );
            let held = tx
                .execute(
                    "UPDATE deliveries SET state = 'held', last_error = $2
                     WHERE notifier = $1 AND state = 'pending'",
                    &[&name, &why],
                )
                .await?;
            recovered.held.push((name, held as usize));
        } else if state == "held" && known {
            // As long a window ahead as it had when it was made.
            recovered.resumed += tx
                .execute(
                    "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = $2,
                         expires_at_ms = greatest(expires_at_ms, $2 + expires_at_ms - created_at_ms)
                     WHERE notifier = $1 AND state = 'held'",
                    &[&name, &now_ms],
                )
                .await? as usize;
        }
    }
    tx.commit().await?;
    Ok(recovered)
}

pub async fn waiting_by_notifier(c: &impl GenericClient) -> Result<Vec<(String, i64)>> {
    let rows = c
        .query(
            "SELECT notifier, count(*) FROM deliveries
             WHERE state IN ('pending', 'sending', 'held') GROUP BY notifier ORDER BY notifier",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// One round of retention, if no other instance is pruning: up to `limit`
/// finished deliveries and `limit` events. `None` when another holds the lock.
pub async fn prune(
    c: &mut deadpool_postgres::Client,
    cutoff_ms: i64,
    limit: usize,
) -> Result<Option<(usize, usize)>> {
    let tx = c.transaction().await?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PRUNE_LOCK])
        .await?
        .try_get(0)?;
    if !locked {
        return Ok(None);
    }
    let limit = limit as i64;
    let deliveries = tx
        .execute(
            "DELETE FROM deliveries WHERE id IN (
                 SELECT id FROM deliveries
                 WHERE state IN ('delivered', 'dead') AND finished_at_ms < $1
                 LIMIT $2)",
            &[&cutoff_ms, &limit],
        )
        .await?;
    let events = tx
        .execute(
            "DELETE FROM events WHERE seq IN (
                 SELECT seq FROM events e
                 WHERE e.received_at_ms < $1
                   AND NOT EXISTS (SELECT 1 FROM deliveries d
                                   WHERE d.event_seq = e.seq
                                     AND d.state IN ('pending', 'sending', 'held'))
                 ORDER BY seq LIMIT $2)",
            &[&cutoff_ms, &limit],
        )
        .await?;
    tx.execute("DELETE FROM pauses WHERE until_ms < $1", &[&cutoff_ms])
        .await?;
    for prefix in crate::store::KEPT_WITH_DELIVERIES {
        tx.execute(
            "DELETE FROM relay_state WHERE updated_ms < $1 AND starts_with(name, $2)",
            &[&cutoff_ms, &prefix],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Some((events as usize, deliveries as usize)))
}

/// See [`crate::store::Store::oldest_waiting`].
pub async fn oldest_waiting(
    c: &impl GenericClient,
    notifiers: &[String],
) -> Result<Vec<(String, i64)>> {
    c.query(
        "SELECT notifier, min(created_at_ms) FROM deliveries
         WHERE notifier = ANY($1) AND state IN ('pending', 'sending')
         GROUP BY notifier ORDER BY notifier",
        &[&notifiers],
    )
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect()
}

pub async fn stats(c: &impl GenericClient) -> Result<OutboxStats> {
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM deliveries WHERE state IN ('pending', 'sending')),
                    (SELECT count(*) FROM deliveries WHERE state = 'dead'),
                    (SELECT count(*) FROM deliveries WHERE state = 'held'),
                    (SELECT created_at_ms FROM deliveries WHERE state IN ('pending', 'sending')
                     ORDER BY id LIMIT 1)",
            &[],
        )
        .await?;
    Ok(OutboxStats {
        pending: row.try_get(0)?,
        dead: row.try_get(1)?,
        held: row.try_get(2)?,
        oldest_pending_ms: row.try_get(3)?,
    })
}

pub async fn list(
    c: &impl GenericClient,
    filter: DeliveryFilter,
    limit: usize,
) -> Result<Vec<Listed>> {
    let condition = match filter {
        DeliveryFilter::All => "true",
        DeliveryFilter::Pending => "d.state IN ('pending', 'sending')",
        DeliveryFilter::Dead => "d.state = 'dead'",
        DeliveryFilter::Held => "d.state = 'held'",
    };
    let columns: Vec<String> = DELIVERY_COLUMNS
        .split(", ")
        .map(|c| format!("d.{c}"))
        .collect();
    let sql = format!(
        "SELECT {}, e.kind, e.object_id, e.status
         FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE {condition} ORDER BY d.id DESC LIMIT $1",
        columns.join(", ")
    );
    let rows = c.query(&sql, &[&(limit as i64)]).await?;
    rows.iter()
        .map(|r| {
            let kind: String = r.try_get(N)?;
            Ok(Listed {
                delivery: delivery_from_row(r)?,
                kind: kind.parse::<Kind>().map_err(|_| Unknown {
                    what: "kind",
                    text: kind.clone(),
                })?,
                object_id: r.try_get(N + 1)?,
                status: Status::parse(r.try_get::<_, &str>(N + 2)?),
            })
        })
        .collect()
}

/// See [`crate::store::Admin::retry`].
pub async fn retry(
    c: &impl GenericClient,
    selector: RetrySelector,
    now_ms: i64,
    max_age_ms: i64,
) -> Result<usize> {
    let expires = now_ms.saturating_add(max_age_ms);
    let n = match selector {
        RetrySelector::One(id) => {
            c.execute(
                "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = $2,
                     expires_at_ms = $3, finished_at_ms = NULL, lease_until_ms = NULL
                 WHERE id = $1 AND state != 'sending'",
                &[&id, &now_ms, &expires],
            )
            .await?
        }
        RetrySelector::AllDead => {
            c.execute(
                "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = $1,
                     expires_at_ms = $2, finished_at_ms = NULL
                 WHERE state = 'dead'",
                &[&now_ms, &expires],
            )
            .await?
        }
        RetrySelector::DeadAmong(ids) => {
            c.execute(
                "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = $1,
                     expires_at_ms = $2, finished_at_ms = NULL
                 WHERE id = ANY($3) AND state = 'dead'",
                &[&now_ms, &expires, &ids],
            )
            .await?
        }
    };
    Ok(n as usize)
}

pub async fn pause(c: &impl GenericClient, rate_key: &str, until_ms: i64) -> Result<()> {
    c.execute(
        "INSERT INTO pauses (rate_key, until_ms) VALUES ($1, $2)
         ON CONFLICT (rate_key) DO UPDATE SET until_ms = greatest(pauses.until_ms, excluded.until_ms)",
        &[&rate_key, &until_ms],
    )
    .await?;
    Ok(())
}

pub async fn pauses(c: &impl GenericClient, now_ms: i64) -> Result<Vec<(String, i64)>> {
    let rows = c
        .query(
            "SELECT rate_key, until_ms FROM pauses WHERE until_ms > $1 ORDER BY rate_key",
            &[&now_ms],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}
