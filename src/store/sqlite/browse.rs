//! What the dashboard reads from a SQLite store ([`crate::store::browse`]):
//! pages of events, an event by number, the last hours' activity, each
//! notifier's load, and the store's size.

use rusqlite::{Connection, OptionalExtension, ToSql};

use super::outbox::{DELIVERY_COLUMNS, EVENT_COLUMNS, delivery_from_row, event_from_row};
use crate::event::Status;
use crate::store::Found;
use crate::store::browse::{
    self, Activity, EventPage, EventQuery, EventRow, NotifierLoad, Param, ROW_COLUMNS,
};

pub fn browse(conn: &Connection, q: &EventQuery) -> rusqlite::Result<EventPage> {
    let found = page_of(conn, q)?;
    if q.job.is_some() && !q.scan && found.rows.is_empty() {
        // No route sent the job anywhere: look for it a window at a time.
        return page_of(
            conn,
            &EventQuery {
                scan: true,
                ..q.clone()
            },
        );
    }
    Ok(found)
}

fn page_of(conn: &Connection, q: &EventQuery) -> rusqlite::Result<EventPage> {
    let (oldest, newest): (Option<i64>, Option<i64>) =
        conn.query_row(browse::BOUNDS, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (Some(oldest), Some(newest)) = (oldest, newest) else {
        return Ok(EventPage::default());
    };
    let (filter, params, floor) = browse::event_filter(q, newest, oldest);
    let sql = format!(
        "SELECT {ROW_COLUMNS} FROM events e WHERE {filter} ORDER BY e.seq DESC LIMIT {}",
        q.limit + 1
    );
    let values: Vec<Box<dyn ToSql>> = params
        .into_iter()
        .map(|p| -> Box<dyn ToSql> {
            match p {
                Param::Text(t) => Box::new(t),
                Param::Int(i) => Box::new(i),
            }
        })
        .collect();
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(rusqlite::params_from_iter(values.iter()), |r| {
            let kind: String = r.get(3)?;
            let status: String = r.get(4)?;
            Ok(EventRow {
                seq: r.get(0)?,
                webhook_id: r.get(1)?,
                object_id: r.get(2)?,
                kind: kind.parse().map_err(|_| {
                    rusqlite::Error::FromSqlConversionFailure(
                        3,
                        rusqlite::types::Type::Text,
                        format!("unknown kind `{kind}` in the store").into(),
                    )
                })?,
                status: Status::parse(&status),
                model: r.get(5)?,
                received_at_ms: r.get(6)?,
                delivered: r.get(7)?,
                waiting: r.get(8)?,
                dead: r.get(9)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(browse::page(rows, q.limit, floor))
}

/// The first event received at or after `at_ms`, by binary search over
/// sequence numbers (events arrive in time order, give or take a clock
/// step, which moves a range's edge by that much).
pub fn seq_at(conn: &Connection, at_ms: i64) -> rusqlite::Result<Option<i64>> {
    let (Some(low), Some(high)): (Option<i64>, Option<i64>) =
        conn.query_row(browse::BOUNDS, [], |r| Ok((r.get(0)?, r.get(1)?)))?
    else {
        return Ok(None);
    };
    let mut at = conn.prepare_cached(
        "SELECT seq, received_at_ms FROM events WHERE seq >= ?1 ORDER BY seq LIMIT 1",
    )?;
    let mut time_at = |seq: i64| -> rusqlite::Result<(i64, i64)> {
        at.query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))
    };
    let (newest, newest_at) = time_at(high)?;
    let mut search = browse::Search::new(low, high, (newest, newest_at), at_ms);
    while let Some(mid) = search.next_probe() {
        let (seq, received) = time_at(mid)?;
        search.saw(mid, seq, received);
    }
    Ok(search.found())
}

pub fn event(conn: &Connection, seq: i64) -> rusqlite::Result<Option<Found>> {
    let event = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?1"
        ))?
        .query_row([seq], event_from_row)
        .optional()?;
    let Some(event) = event else {
        return Ok(None);
    };
    let deliveries = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_seq = ?1 ORDER BY id"
        ))?
        .query_map([seq], delivery_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(Found { event, deliveries }))
}

pub fn activity(conn: &Connection, from_seq: i64) -> rusqlite::Result<Activity> {
    let events = conn
        .prepare_cached(
            "SELECT received_at_ms / 3600000, status, count(*) FROM events
             WHERE seq >= ?1 GROUP BY 1, 2",
        )?
        .query_map([from_seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let latencies = conn
        .prepare_cached(
            // `+state`: through the event index; the state's would read
            // every delivered delivery of the month.
            "SELECT created_at_ms / 3600000, finished_at_ms - created_at_ms FROM deliveries
             WHERE event_seq >= ?1 AND +state = 'delivered' AND finished_at_ms IS NOT NULL",
        )?
        .query_map([from_seq], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Activity { events, latencies })
}

pub fn loads(conn: &Connection, notifiers: &[String]) -> rusqlite::Result<Vec<NotifierLoad>> {
    let mut counts = conn.prepare_cached(browse::LOAD_COUNTS)?;
    let mut failing = conn.prepare_cached(browse::LOAD_FAILING)?;
    let mut last_dead = conn.prepare_cached(browse::LOAD_LAST_DEAD)?;
    let mut error_of = conn.prepare_cached(browse::ERROR_OF)?;
    let mut out = Vec::with_capacity(notifiers.len());
    for name in notifiers {
        let mut load = NotifierLoad {
            notifier: name.clone(),
            ..NotifierLoad::default()
        };
        let by_state = counts
            .query_map([name], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (state, n) in by_state {
            browse::count_state(&mut load, &state, n);
        }
        let (n, since, newest): (i64, Option<i64>, Option<i64>) =
            failing.query_row([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        load.failing = n;
        load.failing_since_ms = since;
        let newest = match newest {
            Some(id) => Some(id),
            None => last_dead.query_row([name], |r| r.get(0))?,
        };
        if let Some(id) = newest {
            load.last_error = error_of.query_row([id], |r| r.get(0)).optional()?.flatten();
        }
        out.push(load);
    }
    Ok(out)
}

pub fn size(conn: &Connection) -> rusqlite::Result<i64> {
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    Ok(pages * page_size)
}
