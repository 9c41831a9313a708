//! The outbox in SQL: deliveries planned by routing, claimed by dispatch workers,
//! finished as delivered, retried or dead. Plain functions over a connection, so
//! the daemon runs them on its writer thread and the command line (`deliveries`,
//! `retry`) on its own connection beside a running daemon.

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::event::{Kind, Status};
use crate::store::{
    Claimed, Delivery, DeliveryFilter, DeliveryState, Listed, NOT_WAITING, OutboxStats, Outcome,
    Recovered, RetrySelector, Routing, RoutingPlan, StoredEvent,
};

pub(super) const EVENT_COLUMNS: &str =
    "seq, webhook_id, object_id, kind, status, model, query, body, received_at_ms";
pub(super) const DELIVERY_COLUMNS: &str = "id, event_seq, route, notifier, state, attempts, created_at_ms, \
     next_attempt_at_ms, expires_at_ms, last_error, after_notifier, result, lane";

/// How many columns [`DELIVERY_COLUMNS`] names: a listing's own columns
/// come after them.
const N: usize = 13;

/// Column `i` read as `T` by `parse`; a value it does not know is an error
/// naming the column, not a default: a store written by a newer version, or
/// damaged, must say so rather than be misread.
fn parsed<T>(
    r: &Row<'_>,
    i: usize,
    what: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown {what} `{text}` in the store").into(),
        )
    })
}

fn kind_at(r: &Row<'_>, i: usize) -> rusqlite::Result<Kind> {
    parsed(r, i, "kind", |s| s.parse().ok())
}

fn status_at(r: &Row<'_>, i: usize) -> rusqlite::Result<Status> {
    let text: String = r.get(i)?;
    // Replicate may add statuses: an unknown one is kept, as at intake.
    Ok(Status::parse(&text))
}

pub(super) fn event_from_row(r: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        seq: r.get(0)?,
        webhook_id: r.get(1)?,
        object_id: r.get(2)?,
        kind: kind_at(r, 3)?,
        status: status_at(r, 4)?,
        model: r.get(5)?,
        query: r.get(6)?,
        body: r.get(7)?,
        received_at_ms: r.get(8)?,
    })
}

pub(super) fn delivery_from_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        event_seq: r.get(1)?,
        route: r.get(2)?,
        notifier: r.get(3)?,
        state: parsed(r, 4, "delivery state", DeliveryState::parse)?,
        attempts: r.get(5)?,
        created_at_ms: r.get(6)?,
        next_attempt_at_ms: r.get(7)?,
        expires_at_ms: r.get(8)?,
        last_error: r.get(9)?,
        after: r.get(10)?,
        result: r.get(11)?,
        lane: r.get(12)?,
    })
}

/// The most recent events, newest first.
pub fn recent(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<StoredEvent>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {} FROM events ORDER BY seq DESC LIMIT ?1",
        EVENT_COLUMNS
    ))?;
    stmt.query_map([limit as i64], event_from_row)?.collect()
}

/// Events not yet routed, oldest first.
pub fn unrouted(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<StoredEvent>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE routed_at_ms IS NULL ORDER BY seq LIMIT ?1"
    ))?;
    stmt.query_map([limit as i64], event_from_row)?.collect()
}

/// Inserts the planned deliveries (duplicates by key, route and notifier are
/// skipped) and marks the events routed, in one transaction.
pub fn record_routing(
    conn: &mut Connection,
    plans: &[RoutingPlan],
    now_ms: i64,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut created = 0;
    {
        let mut mark = tx.prepare_cached("UPDATE events SET routed_at_ms = ?2 WHERE seq = ?1")?;
        for plan in plans {
            created += insert_deliveries(&tx, plan.event_seq, &plan.routing, now_ms)?;
            mark.execute(params![plan.event_seq, now_ms])?;
        }
    }
    tx.commit()?;
    Ok(created)
}

/// Creates the deliveries of event `seq` inside the caller's transaction; the
/// caller marks the event routed. Returns how many were new.
pub(super) fn insert_deliveries(
    conn: &Connection,
    seq: i64,
    routing: &Routing,
    now_ms: i64,
) -> rusqlite::Result<usize> {
    if routing.deliveries.is_empty() {
        return Ok(0);
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO deliveries
             (event_seq, dedup_key, route, notifier, state, created_at_ms,
              next_attempt_at_ms, expires_at_ms, after_notifier, lane)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5 + ?9, ?6, ?7, ?8)
         ON CONFLICT (dedup_key, route, notifier) DO NOTHING",
    )?;
    let mut created = 0;
    for (route, notifier) in &routing.deliveries {
        created += insert.execute(params![
            seq,
            routing.key_of(route),
            route,
            notifier,
            now_ms,
            routing.expires_at_ms,
            routing.waits_for(route, notifier),
            routing.lane_of(route),
            routing.first_wait_ms(route),
        ])?;
    }
    for group in &routing.groups {
        super::group::slide(conn, group, now_ms)?;
    }
    Ok(created)
}

/// Marks up to `limit` due deliveries of `notifier` as sending (one more
/// attempt) and returns them with their events.
pub fn claim(
    conn: &mut Connection,
    notifier: &str,
    now_ms: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Claimed>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut out = Vec::new();
    {
        let mut claim = tx.prepare_cached(&format!(
            "UPDATE deliveries SET state = 'sending', attempts = attempts + 1
             WHERE id IN (SELECT id FROM deliveries
                          WHERE notifier = ?1 AND state = 'pending' AND next_attempt_at_ms <= ?2
                            AND {NOT_WAITING}
                          ORDER BY next_attempt_at_ms, id LIMIT ?3)
             RETURNING {DELIVERY_COLUMNS}"
        ))?;
        let deliveries: Vec<Delivery> = claim
            .query_map(params![notifier, now_ms, limit as i64], delivery_from_row)?
            .collect::<Result<_, _>>()?;
        let mut event = tx.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?1"
        ))?;
        let mut awaited = tx.prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries
             WHERE event_seq = ?1 AND route = ?2 AND notifier = ?3"
        ))?;
        for delivery in deliveries {
            let event = event.query_row([delivery.event_seq], event_from_row)?;
            let awaited = match &delivery.after {
                Some(after) => awaited
                    .query_row(
                        params![delivery.event_seq, delivery.route, after],
                        delivery_from_row,
                    )
                    .optional()?,
                None => None,
            };
            out.push(Claimed {
                delivery,
                event,
                awaited,
            });
        }
    }
    tx.commit()?;
    out.sort_by_key(|c| (c.delivery.next_attempt_at_ms, c.delivery.id));
    Ok(out)
}

pub fn finish(
    conn: &Connection,
    id: i64,
    outcome: &Outcome,
    now_ms: i64,
    log: Option<&crate::store::AttemptLog>,
) -> rusqlite::Result<()> {
    if let Some(log) = log {
        let (name, error) = crate::store::outcome_name(outcome);
        conn.prepare_cached(
            "INSERT INTO attempts (delivery_id, number, started_ms, duration_ms, outcome,
                                   error, status, exchanges)
             SELECT id, ?2, ?3, ?4, ?5, ?6, ?7, ?8 FROM deliveries WHERE id = ?1
             ON CONFLICT (delivery_id, number) DO UPDATE SET
                 started_ms = excluded.started_ms, duration_ms = excluded.duration_ms,
                 outcome = excluded.outcome, error = excluded.error,
                 status = excluded.status, exchanges = excluded.exchanges",
        )?
        .execute(params![
            id,
            log.number,
            log.started_ms,
            log.duration_ms,
            name,
            error,
            log.status,
            log.exchanges
        ])?;
    }
    // One update of the row, the message with the state (the writer does
    // this for every delivery).
    let message = log.and_then(|l| l.message.as_deref());
    match outcome {
        Outcome::Delivered { result } => conn
            .prepare_cached(
                "UPDATE deliveries SET state = 'delivered', finished_at_ms = ?2, last_error = NULL,
                                       result = ?3, message = coalesce(?4, message)
                 WHERE id = ?1",
            )?
            .execute(params![id, now_ms, result, message])?,
        Outcome::Retry { at_ms, error } => conn
            .prepare_cached(
                "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = ?2, last_error = ?3,
                                       message = coalesce(?4, message)
                 WHERE id = ?1",
            )?
            .execute(params![id, at_ms, error, message])?,
        Outcome::Dead { error } => conn
            .prepare_cached(
                "UPDATE deliveries SET state = 'dead', finished_at_ms = ?2, last_error = ?3,
                                       message = coalesce(?4, message)
                 WHERE id = ?1",
            )?
            .execute(params![id, now_ms, error, message])?,
    };
    Ok(())
}

/// The earliest next attempt among pending deliveries of `notifiers`.
pub fn next_due(conn: &Connection, notifiers: &[String]) -> rusqlite::Result<Option<i64>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT min(next_attempt_at_ms) FROM deliveries
         WHERE notifier = ?1 AND state = 'pending' AND {NOT_WAITING}"
    ))?;
    let mut earliest: Option<i64> = None;
    for n in notifiers {
        let due: Option<i64> = stmt.query_row([n], |r| r.get(0))?;
        earliest = match (earliest, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(earliest)
}

/// Requeues deliveries a stopped daemon left `sending`; kills those whose
/// notifier is no longer configured, saying so.
/// See [`crate::store::Store::release`]: one daemon uses the file, so
/// every claim on `notifier`'s deliveries is its own.
pub fn release(
    conn: &mut Connection,
    notifier: &str,
    holding: &[i64],
    now_ms: i64,
) -> rusqlite::Result<usize> {
    let holding = serde_json::to_string(holding).expect("integers serialize");
    conn.execute(
        "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = ?3
         WHERE notifier = ?1 AND state = 'sending'
           AND id NOT IN (SELECT value FROM json_each(?2))",
        params![notifier, holding, now_ms],
    )
}

pub fn recover(
    conn: &mut Connection,
    notifiers: &[String],
    now_ms: i64,
    requeue_sending: bool,
) -> rusqlite::Result<Recovered> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut recovered = Recovered::default();
    if requeue_sending {
        recovered.requeued = tx.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = ?1 WHERE state = 'sending'",
            [now_ms],
        )?;
    }
    let names: Vec<(String, String)> = tx
        .prepare(
            "SELECT DISTINCT notifier, state FROM deliveries
             WHERE state IN ('pending', 'held') ORDER BY notifier",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (name, state) in names {
        let known = notifiers.contains(&name);
        if state == "pending" && !known {
            let held = tx.execute(
                "UPDATE deliveries SET state = 'held', last_error = ?2
                 WHERE notifier = ?1 AND state = 'pending'",
                params![
                    name,
                    format!("notifier `{name}` is not in the config; held until a notifier of that name is back")
                ],
            )?;
            recovered.held.push((name, held));
        } else if state == "held" && known {
            // As long a window ahead as it had when it was made.
            recovered.resumed += tx.execute(
                "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = ?2,
                     expires_at_ms = max(expires_at_ms, ?2 + expires_at_ms - created_at_ms)
                 WHERE notifier = ?1 AND state = 'held'",
                params![name, now_ms],
            )?;
        }
    }
    tx.commit()?;
    Ok(recovered)
}

/// Deliveries still to send, by notifier.
pub fn waiting_by_notifier(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    conn.prepare(
        "SELECT notifier, count(*) FROM deliveries
         WHERE state IN ('pending', 'sending', 'held') GROUP BY notifier ORDER BY notifier",
    )?
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// See [`crate::store::Store::oldest_waiting`].
pub fn oldest_waiting(
    conn: &Connection,
    notifiers: &[String],
) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT min(created_at_ms) FROM deliveries
         WHERE notifier = ?1 AND state IN ('pending', 'sending')",
    )?;
    let mut out = Vec::new();
    for n in notifiers {
        if let Some(at) = stmt.query_row([n], |r| r.get::<_, Option<i64>>(0))? {
            out.push((n.clone(), at));
        }
    }
    out.sort();
    Ok(out)
}

/// One round of retention: up to `limit` finished deliveries and `limit` events.
pub fn prune(
    conn: &mut Connection,
    cutoff_ms: i64,
    limit: usize,
) -> rusqlite::Result<(usize, usize)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let deliveries = tx.execute(
        "DELETE FROM deliveries WHERE id IN (
             SELECT id FROM deliveries
             WHERE state IN ('delivered', 'dead') AND finished_at_ms < ?1
             LIMIT ?2)",
        params![cutoff_ms, limit as i64],
    )?;
    let events = tx.execute(
        "DELETE FROM events WHERE seq IN (
             SELECT seq FROM events e
             WHERE e.received_at_ms < ?1 AND e.routed_at_ms IS NOT NULL
               -- Not the newest, whose ids are staged in the writer (dedup).
               AND e.seq <= (SELECT seq FROM seen_upto)
               AND NOT EXISTS (SELECT 1 FROM deliveries d
                               WHERE d.event_seq = e.seq AND d.state IN ('pending', 'sending', 'held'))
             ORDER BY seq LIMIT ?2)",
        params![cutoff_ms, limit as i64],
    )?;
    if events > 0 {
        super::dedup::after_prune(&tx)?;
    }
    tx.execute("DELETE FROM pauses WHERE until_ms < ?1", [cutoff_ms])?;
    for prefix in crate::store::KEPT_WITH_DELIVERIES {
        tx.execute(
            "DELETE FROM relay_state WHERE updated_ms < ?1 AND substr(name, 1, ?3) = ?2",
            params![cutoff_ms, prefix, prefix.len() as i64],
        )?;
    }
    tx.commit()?;
    Ok((events, deliveries))
}

/// Records a receiver's pause; a later one already recorded stays.
pub fn pause(conn: &Connection, rate_key: &str, until_ms: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO pauses (rate_key, until_ms) VALUES (?1, ?2)
         ON CONFLICT (rate_key) DO UPDATE SET until_ms = max(until_ms, excluded.until_ms)",
        params![rate_key, until_ms],
    )?;
    Ok(())
}

/// The pauses still running at `now_ms`.
pub fn pauses(conn: &Connection, now_ms: i64) -> rusqlite::Result<Vec<(String, i64)>> {
    conn.prepare_cached(
        "SELECT rate_key, until_ms FROM pauses WHERE until_ms > ?1 ORDER BY rate_key",
    )?
    .query_map([now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

pub fn stats(conn: &Connection) -> rusqlite::Result<OutboxStats> {
    // Kept by triggers (migration 4): three rows, whatever the outbox holds.
    let mut stmt = conn.prepare_cached(COUNTS)?;
    let mut stats = OutboxStats::default();
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (class, n) = row?;
        match class.as_str() {
            "waiting" => stats.pending = n,
            "dead" => stats.dead = n,
            "held" => stats.held = n,
            _ => {}
        }
    }
    // The oldest waiting delivery is the first of each waiting state in the
    // (state, id) index: ids grow as deliveries are made, and so does
    // their creation time.
    stats.oldest_pending_ms = conn
        .prepare_cached(OLDEST_WAITING)?
        .query_row([], |r| r.get(0))?;
    Ok(stats)
}

/// The counts the triggers keep.
pub(super) const COUNTS: &str = "SELECT class, n FROM outbox_counts";

/// When the oldest waiting delivery was made, from the `deliveries_state`
/// index alone.
pub(super) const OLDEST_WAITING: &str = "SELECT min(created_at_ms) FROM (
     SELECT created_at_ms FROM (SELECT created_at_ms FROM deliveries
         WHERE state = 'pending' ORDER BY id LIMIT 1)
     UNION ALL
     SELECT created_at_ms FROM (SELECT created_at_ms FROM deliveries
         WHERE state = 'sending' ORDER BY id LIMIT 1))";

pub fn list(
    conn: &Connection,
    filter: DeliveryFilter,
    limit: usize,
) -> rusqlite::Result<Vec<Listed>> {
    let condition = match filter {
        DeliveryFilter::All => "1",
        DeliveryFilter::Pending => "d.state IN ('pending', 'sending')",
        DeliveryFilter::Dead => "d.state = 'dead'",
        DeliveryFilter::Held => "d.state = 'held'",
    };
    let columns: Vec<String> = DELIVERY_COLUMNS
        .split(", ")
        .map(|c| format!("d.{}", c.trim()))
        .collect();
    let mut stmt = conn.prepare(&format!(
        "SELECT {}, e.kind, e.object_id, e.status
         FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE {condition} ORDER BY d.id DESC LIMIT ?1",
        columns.join(", ")
    ))?;
    stmt.query_map([limit as i64], |r| {
        Ok(Listed {
            delivery: delivery_from_row(r)?,
            kind: kind_at(r, N)?,
            object_id: r.get(N + 1)?,
            status: status_at(r, N + 2)?,
        })
    })?
    .collect()
}

/// Requeues deliveries for an immediate attempt, with a fresh `max_age` window.
/// A delivered one is sent again only when named by id (a deliberate resend).
pub fn retry(
    conn: &Connection,
    selector: RetrySelector,
    now_ms: i64,
    max_age_ms: i64,
) -> rusqlite::Result<usize> {
    match selector {
        RetrySelector::One(id) => {
            let exists: Option<String> = conn
                .query_row("SELECT state FROM deliveries WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?;
            if exists.is_none() {
                return Ok(0);
            }
            conn.execute(
                "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = ?2,
                     expires_at_ms = ?2 + ?3, finished_at_ms = NULL
                 WHERE id = ?1 AND state != 'sending'",
                params![id, now_ms, max_age_ms],
            )
        }
        RetrySelector::AllDead => conn.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = ?1,
                 expires_at_ms = ?1 + ?2, finished_at_ms = NULL
             WHERE state = 'dead'",
            params![now_ms, max_age_ms],
        ),
        RetrySelector::DeadAmong(ids) => {
            let tx = conn.unchecked_transaction()?;
            let mut n = 0;
            {
                let mut one = tx.prepare_cached(
                    "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = ?2,
                         expires_at_ms = ?2 + ?3, finished_at_ms = NULL
                     WHERE id = ?1 AND state = 'dead'",
                )?;
                for id in ids {
                    n += one.execute(params![id, now_ms, max_age_ms])?;
                }
            }
            tx.commit()?;
            Ok(n)
        }
    }
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
