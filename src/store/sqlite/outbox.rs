//! The outbox in SQL: deliveries planned by routing, claimed by dispatch workers,
//! finished as delivered, retried or dead. Plain functions over a connection, so
//! the daemon runs them on its writer thread and the command line (`deliveries`,
//! `retry`) on its own connection beside a running daemon.

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::event::{Kind, Status};
use crate::store::{
    Claimed, Delivery, DeliveryFilter, DeliveryState, Listed, OutboxStats, Outcome, RetrySelector,
    Routing, RoutingPlan, StoredEvent,
};

pub(super) const EVENT_COLUMNS: &str =
    "seq, webhook_id, object_id, kind, status, model, query, body, received_at_ms";
const DELIVERY_COLUMNS: &str = "id, event_seq, route, notifier, state, attempts, created_at_ms, \
     next_attempt_at_ms, expires_at_ms, last_error";

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

fn delivery_from_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
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
              next_attempt_at_ms, expires_at_ms)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?6)
         ON CONFLICT (dedup_key, route, notifier) DO NOTHING",
    )?;
    let mut created = 0;
    for (route, notifier) in &routing.deliveries {
        created += insert.execute(params![
            seq,
            routing.dedup_key,
            route,
            notifier,
            now_ms,
            routing.expires_at_ms
        ])?;
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
                          ORDER BY next_attempt_at_ms, id LIMIT ?3)
             RETURNING {DELIVERY_COLUMNS}"
        ))?;
        let deliveries: Vec<Delivery> = claim
            .query_map(params![notifier, now_ms, limit as i64], delivery_from_row)?
            .collect::<Result<_, _>>()?;
        let mut event = tx.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?1"
        ))?;
        for delivery in deliveries {
            let event = event.query_row([delivery.event_seq], event_from_row)?;
            out.push(Claimed { delivery, event });
        }
    }
    tx.commit()?;
    out.sort_by_key(|c| (c.delivery.next_attempt_at_ms, c.delivery.id));
    Ok(out)
}

pub fn finish(conn: &Connection, id: i64, outcome: &Outcome, now_ms: i64) -> rusqlite::Result<()> {
    match outcome {
        Outcome::Delivered => conn.execute(
            "UPDATE deliveries SET state = 'delivered', finished_at_ms = ?2, last_error = NULL
             WHERE id = ?1",
            params![id, now_ms],
        )?,
        Outcome::Retry { at_ms, error } => conn.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = ?2, last_error = ?3
             WHERE id = ?1",
            params![id, at_ms, error],
        )?,
        Outcome::Dead { error } => conn.execute(
            "UPDATE deliveries SET state = 'dead', finished_at_ms = ?2, last_error = ?3
             WHERE id = ?1",
            params![id, now_ms, error],
        )?,
    };
    Ok(())
}

/// The earliest next attempt among pending deliveries of `notifiers`.
pub fn next_due(conn: &Connection, notifiers: &[String]) -> rusqlite::Result<Option<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT min(next_attempt_at_ms) FROM deliveries WHERE notifier = ?1 AND state = 'pending'",
    )?;
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
pub fn recover(
    conn: &mut Connection,
    notifiers: &[String],
    now_ms: i64,
    requeue_sending: bool,
) -> rusqlite::Result<(usize, usize)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let requeued = if requeue_sending {
        tx.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at_ms = ?1 WHERE state = 'sending'",
            [now_ms],
        )?
    } else {
        0
    };
    let mut orphaned = 0;
    {
        let mut names = tx.prepare(
            "SELECT DISTINCT notifier FROM deliveries WHERE state IN ('pending', 'sending')",
        )?;
        let pending: Vec<String> = names
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for name in pending.iter().filter(|n| !notifiers.contains(n)) {
            orphaned += tx.execute(
                "UPDATE deliveries SET state = 'dead', finished_at_ms = ?2, last_error = ?3
                 WHERE notifier = ?1 AND state = 'pending'",
                params![
                    name,
                    now_ms,
                    format!("notifier `{name}` is no longer in the config; add it back and run `replicate-relay retry --dead`")
                ],
            )?;
        }
    }
    tx.commit()?;
    Ok((requeued, orphaned))
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
                               WHERE d.event_seq = e.seq AND d.state IN ('pending', 'sending'))
             ORDER BY seq LIMIT ?2)",
        params![cutoff_ms, limit as i64],
    )?;
    if events > 0 {
        super::dedup::after_prune(&tx)?;
    }
    tx.commit()?;
    Ok((events, deliveries))
}

pub fn stats(conn: &Connection) -> rusqlite::Result<OutboxStats> {
    conn.query_row(
        "SELECT
             count(*) FILTER (WHERE state IN ('pending', 'sending')),
             count(*) FILTER (WHERE state = 'dead'),
             min(created_at_ms) FILTER (WHERE state IN ('pending', 'sending'))
         FROM deliveries",
        [],
        |r| {
            Ok(OutboxStats {
                pending: r.get(0)?,
                dead: r.get(1)?,
                oldest_pending_ms: r.get(2)?,
            })
        },
    )
}

pub fn list(
    conn: &Connection,
    filter: DeliveryFilter,
    limit: usize,
) -> rusqlite::Result<Vec<Listed>> {
    let condition = match filter {
        DeliveryFilter::All => "1",
        DeliveryFilter::Pending => "d.state IN ('pending', 'sending')",
        DeliveryFilter::Dead => "d.state = 'dead'",
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
            kind: kind_at(r, 10)?,
            object_id: r.get(11)?,
            status: status_at(r, 12)?,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::{SqliteOptions, SqliteStore};

    /// A migrated store with three events (seq 1..=3), opened directly.
    fn setup() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
        let conn = Connection::open(&path).unwrap();
        for (i, status) in ["succeeded", "succeeded", "processing"].iter().enumerate() {
            conn.execute(
                "INSERT INTO events (webhook_id, object_id, kind, status, model, query, body, received_at_ms)
                 VALUES (?1, 'p1', 'prediction', ?2, NULL, '', X'7B7D', 1000)",
                params![format!("msg_{i}"), status],
            )
            .unwrap();
        }
        (dir, conn)
    }

    /// A kind or delivery state the store does not know is an error naming
    /// it, never read as a default; an unknown status is kept, as at intake.
    #[test]
    fn stored_rows_read_typed_or_say_what_is_wrong() {
        let (_dir, mut conn) = setup();
        let events = unrouted(&conn, 10).unwrap();
        assert_eq!(events[0].kind, Kind::Prediction);
        assert_eq!(events[2].status, Status::Processing);
        conn.execute("UPDATE events SET status = 'queued' WHERE seq = 1", [])
            .unwrap();
        assert_eq!(
            unrouted(&conn, 10).unwrap()[0].status,
            Status::Other("queued".into())
        );
        conn.execute("UPDATE events SET kind = 'gizmo' WHERE seq = 2", [])
            .unwrap();
        let error = unrouted(&conn, 10).unwrap_err().to_string();
        assert!(
            error.contains("unknown kind `gizmo` in the store"),
            "{error}"
        );

        record_routing(&mut conn, &[plan(1, "p1:queued", &[("r", "n")])], 1_000).unwrap();
        conn.execute("UPDATE deliveries SET state = 'lost'", [])
            .unwrap();
        let error = list(&conn, DeliveryFilter::All, 10)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown delivery state `lost` in the store"),
            "{error}"
        );
    }

    fn plan(seq: i64, key: &str, pairs: &[(&str, &str)]) -> RoutingPlan {
        RoutingPlan {
            event_seq: seq,
            routing: Routing {
                dedup_key: key.into(),
                deliveries: pairs
                    .iter()
                    .map(|(r, n)| (r.to_string(), n.to_string()))
                    .collect(),
                expires_at_ms: 100_000,
            },
        }
    }

    #[test]
    fn routing_is_recorded_once_per_final_state_and_marks_events() {
        let (_d, mut conn) = setup();
        assert_eq!(unrouted(&conn, 10).unwrap().len(), 3);
        // Two webhooks carrying the same final state: one delivery per pair.
        let plans = vec![
            plan(1, "p1:succeeded", &[("done", "slack"), ("done", "mail")]),
            plan(2, "p1:succeeded", &[("done", "slack"), ("done", "mail")]),
            plan(3, "seq:3", &[("progress", "slack")]),
        ];
        assert_eq!(record_routing(&mut conn, &plans, 2000).unwrap(), 3);
        assert!(unrouted(&conn, 10).unwrap().is_empty());
        assert_eq!(list(&conn, DeliveryFilter::All, 10).unwrap().len(), 3);
    }

    #[test]
    fn claim_finish_retry_and_recover() {
        let (_d, mut conn) = setup();
        record_routing(
            &mut conn,
            &[plan(1, "k1", &[("r", "slack"), ("r", "mail")])],
            2000,
        )
        .unwrap();

        assert!(
            claim(&mut conn, "slack", 1999, 10).unwrap().is_empty(),
            "not due yet"
        );
        let claimed = claim(&mut conn, "slack", 2000, 10).unwrap();
        assert_eq!(claimed.len(), 1);
        let d = &claimed[0].delivery;
        assert_eq!(
            (d.state, d.attempts, d.notifier.as_str()),
            (DeliveryState::Sending, 1, "slack")
        );
        assert_eq!(claimed[0].event.body, b"{}");
        assert!(
            claim(&mut conn, "slack", 5000, 10).unwrap().is_empty(),
            "claimed once"
        );

        finish(
            &conn,
            d.id,
            &Outcome::Retry {
                at_ms: 4000,
                error: "HTTP 500".into(),
            },
            2500,
        )
        .unwrap();
        assert_eq!(
            next_due(&conn, &["slack".into(), "mail".into()]).unwrap(),
            Some(2000)
        );
        assert_eq!(next_due(&conn, &["slack".into()]).unwrap(), Some(4000));
        let again = claim(&mut conn, "slack", 4000, 10).unwrap();
        assert_eq!(again[0].delivery.attempts, 2);
        assert_eq!(again[0].delivery.last_error.as_deref(), Some("HTTP 500"));

        // A crash while sending: recover puts it back; `mail` is no longer configured.
        let (requeued, orphaned) = recover(&mut conn, &["slack".into()], 9000, true).unwrap();
        assert_eq!((requeued, orphaned), (1, 1));
        let dead = list(&conn, DeliveryFilter::Dead, 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert!(
            dead[0]
                .delivery
                .last_error
                .as_deref()
                .unwrap()
                .contains("no longer in the config")
        );
        assert_eq!(
            stats(&conn).unwrap(),
            OutboxStats {
                pending: 1,
                dead: 1,
                oldest_pending_ms: Some(2000)
            }
        );

        // Retry by hand: dead goes back to pending with a fresh window.
        assert_eq!(
            retry(&conn, RetrySelector::AllDead, 10_000, 500).unwrap(),
            1
        );
        let pending = list(&conn, DeliveryFilter::Pending, 10).unwrap();
        assert_eq!(pending.len(), 2);
        let mail = pending
            .iter()
            .find(|l| l.delivery.notifier == "mail")
            .unwrap();
        assert_eq!(
            (
                mail.delivery.next_attempt_at_ms,
                mail.delivery.expires_at_ms
            ),
            (10_000, 10_500)
        );

        let slack = claim(&mut conn, "slack", 10_000, 1).unwrap().remove(0);
        finish(&conn, slack.delivery.id, &Outcome::Delivered, 11_000).unwrap();
        assert_eq!(
            retry(&conn, RetrySelector::One(999), 12_000, 500).unwrap(),
            0
        );
        assert_eq!(
            retry(&conn, RetrySelector::One(slack.delivery.id), 12_000, 500).unwrap(),
            1
        );
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;
    use crate::store::sqlite::{SqliteOptions, SqliteStore};

    #[test]
    fn prune_keeps_recent_events_and_anything_still_to_send() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
        let mut conn = Connection::open(&path).unwrap();
        // seq 1, 2: old; seq 3: recent.
        for (i, at) in [1_000, 2_000, 50_000].iter().enumerate() {
            conn.execute(
                "INSERT INTO events (webhook_id, object_id, kind, status, model, query, body, received_at_ms)
                 VALUES (?1, ?1, 'prediction', 'failed', NULL, '', X'7B7D', ?2)",
                params![format!("m{i}"), at],
            )
            .unwrap();
        }
        // Opening and closing the store indexes their webhook ids, as the writer would
        // have: retention spares events whose ids are not indexed yet.
        drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
        let plan = |seq: i64| RoutingPlan {
            event_seq: seq,
            routing: Routing {
                dedup_key: format!("k{seq}"),
                deliveries: vec![("r".into(), "n".into())],
                expires_at_ms: i64::MAX,
            },
        };
        record_routing(&mut conn, &[plan(1), plan(2), plan(3)], 3_000).unwrap();
        // Event 1's delivery is finished long ago; event 2's is still pending.
        let first = claim(&mut conn, "n", 3_000, 1).unwrap().remove(0);
        finish(&conn, first.delivery.id, &Outcome::Delivered, 4_000).unwrap();

        assert_eq!(prune(&mut conn, 10_000, 1_000).unwrap(), (1, 1));
        assert_eq!(prune(&mut conn, 10_000, 1_000).unwrap(), (0, 0));
        let left: Vec<i64> = conn
            .prepare("SELECT seq FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(left, [2, 3], "pending work and recent events stay");
    }
}
