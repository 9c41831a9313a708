//! What the dashboard reads from a PostgreSQL store
//! ([`crate::store::browse`]): pages of events, an event by number, the
//! last hours' activity, each notifier's load, and the store's size.

use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::outbox::{DELIVERY_COLUMNS, EVENT_COLUMNS, Result, delivery_from_row, event_from_row};
use crate::event::Status;
use crate::store::Found;
use crate::store::browse::{
    self, Activity, EventPage, EventQuery, EventRow, NotifierLoad, Param, ROW_COLUMNS,
};

async fn bounds(c: &impl GenericClient) -> Result<Option<(i64, i64)>> {
    let row = c.query_one(browse::BOUNDS, &[]).await?;
    let (low, high): (Option<i64>, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
    Ok(low.zip(high))
}

pub async fn browse(c: &impl GenericClient, q: &EventQuery) -> Result<EventPage> {
    let found = page_of(c, q).await?;
    if q.job.is_some() && !q.scan && found.rows.is_empty() {
        // No route sent the job anywhere: look for it a window at a time.
        return page_of(
            c,
            &EventQuery {
                scan: true,
                ..q.clone()
            },
        )
        .await;
    }
    Ok(found)
}

async fn page_of(c: &impl GenericClient, q: &EventQuery) -> Result<EventPage> {
    let Some((oldest, newest)) = bounds(c).await? else {
        return Ok(EventPage::default());
    };
    let (filter, params, floor) = browse::event_filter(q, newest, oldest);
    let sql = format!(
        "SELECT {ROW_COLUMNS} FROM events e WHERE {filter} ORDER BY e.seq DESC LIMIT {}",
        q.limit + 1
    );
    let values: Vec<Box<dyn ToSql + Sync + Send>> = params
        .into_iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                Param::Text(t) => Box::new(t),
                Param::Int(i) => Box::new(i),
            }
        })
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = values
        .iter()
        .map(|v| v.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let mut rows = Vec::new();
    for r in c.query(&sql, &refs).await? {
        let kind: String = r.try_get(3)?;
        let status: String = r.try_get(4)?;
        rows.push(EventRow {
            seq: r.try_get(0)?,
            webhook_id: r.try_get(1)?,
            object_id: r.try_get(2)?,
            kind: kind.parse().map_err(|_| super::outbox::Unknown {
                what: "kind",
                text: kind.clone(),
            })?,
            status: Status::parse(&status),
            model: r.try_get(5)?,
            received_at_ms: r.try_get(6)?,
            delivered: r.try_get(7)?,
            waiting: r.try_get(8)?,
            dead: r.try_get(9)?,
        });
    }
    Ok(browse::page(rows, q.limit, floor))
}

/// The first event received at or after `at_ms` ([`browse::Search`]).
pub async fn seq_at(c: &impl GenericClient, at_ms: i64) -> Result<Option<i64>> {
    let Some((low, high)) = bounds(c).await? else {
        return Ok(None);
    };
    let at = c
        .prepare("SELECT seq, received_at_ms FROM events WHERE seq >= $1 ORDER BY seq LIMIT 1")
        .await?;
    let time_at = async |seq: i64| -> Result<(i64, i64)> {
        let row = c.query_one(&at, &[&seq]).await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    };
    let mut search = browse::Search::new(low, high, time_at(high).await?, at_ms);
    while let Some(mid) = search.next_probe() {
        let (seq, received) = time_at(mid).await?;
        search.saw(mid, seq, received);
    }
    Ok(search.found())
}

pub async fn event(c: &impl GenericClient, seq: i64) -> Result<Option<Found>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq = $1");
    let Some(row) = c.query_opt(&sql, &[&seq]).await? else {
        return Ok(None);
    };
    let event = event_from_row(&row)?;
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_seq = $1 ORDER BY id");
    let deliveries = c
        .query(&sql, &[&seq])
        .await?
        .iter()
        .map(delivery_from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Found { event, deliveries }))
}

pub async fn activity(c: &impl GenericClient, from_seq: i64) -> Result<Activity> {
    let mut events = Vec::new();
    for r in c
        .query(
            "SELECT received_at_ms / 3600000, status, count(*) FROM events
             WHERE seq >= $1 GROUP BY 1, 2",
            &[&from_seq],
        )
        .await?
    {
        events.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
    }
    let mut latencies = Vec::new();
    for r in c
        .query(
            "SELECT created_at_ms / 3600000, finished_at_ms - created_at_ms FROM deliveries
             WHERE event_seq >= $1 AND state = 'delivered' AND finished_at_ms IS NOT NULL",
            &[&from_seq],
        )
        .await?
    {
        latencies.push((r.try_get(0)?, r.try_get(1)?));
    }
    Ok(Activity { events, latencies })
}

pub async fn loads(c: &impl GenericClient, notifiers: &[String]) -> Result<Vec<NotifierLoad>> {
    let mut out = Vec::with_capacity(notifiers.len());
    for name in notifiers {
        let mut load = NotifierLoad {
            notifier: name.clone(),
            ..NotifierLoad::default()
        };
        for r in c.query(browse::LOAD_COUNTS, &[name]).await? {
            let state: String = r.try_get(0)?;
            browse::count_state(&mut load, &state, r.try_get(1)?);
        }
        let r = c.query_one(browse::LOAD_FAILING, &[name]).await?;
        load.failing = r.try_get(0)?;
        load.failing_since_ms = r.try_get(1)?;
        let mut newest: Option<i64> = r.try_get(2)?;
        if newest.is_none() {
            newest = c
                .query_one(browse::LOAD_LAST_DEAD, &[name])
                .await?
                .try_get(0)?;
        }
        if let Some(id) = newest
            && let Some(row) = c.query_opt(browse::ERROR_OF, &[&id]).await?
        {
            load.last_error = row.try_get(0)?;
        }
        out.push(load);
    }
    Ok(out)
}

/// The bytes the relay's own tables take (the database may hold others).
pub async fn size(c: &impl GenericClient) -> Result<i64> {
    let row = c
        .query_one(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind = 'r'
               AND c.relname IN ('events', 'deliveries', 'attempts', 'pauses', 'relay_state',
                                 'shared_files', 'shared_locks', 'relay_schema')",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}
