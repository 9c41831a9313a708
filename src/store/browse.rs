//! What the dashboard asks of a store, beside the command line's
//! questions: pages of events under filters, newest first by keyset (a
//! page never reads more than [`SCAN`] events, whatever the filter), the
//! last hours' activity, each notifier's waiting and failing deliveries,
//! and the store's size. The filter's SQL is written once here for both
//! backends: `$n` placeholders, each used once and in order, read the same
//! by SQLite and PostgreSQL.

use crate::event::{Kind, Status};

/// How many events one page of a filtered listing looks through at most:
/// a rare match in a million events costs a few pages, never one long
/// read.
pub const SCAN: i64 = 20_000;

/// Which events to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub kind: Option<Kind>,
    pub status: Option<String>,
    pub model: Option<String>,
    /// Events some delivery of this route was planned for.
    pub route: Option<String>,
    pub source: Option<Source>,
    /// A job (prediction or training) id: its events that some route sent
    /// somewhere are found at once, through their deliveries' keys…
    pub job: Option<String>,
    /// …and with `scan`, every event of the job, a window at a time (what
    /// a job no route sent anywhere needs).
    pub scan: bool,
    /// Only events with a lower sequence number (the next page).
    pub before_seq: Option<i64>,
    /// Only events at or after this one (a time range's start, as a sequence number).
    pub from_seq: Option<i64>,
    /// Only events before this one (a time range's end).
    pub to_seq: Option<i64>,
    pub limit: usize,
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Webhook,
    /// Found by catching up on Replicate's API.
    CatchUp,
}

/// An event as a listing shows it (no body), with its deliveries counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub seq: i64,
    pub webhook_id: String,
    pub object_id: String,
    pub kind: Kind,
    pub status: Status,
    pub model: Option<String>,
    pub received_at_ms: i64,
    pub delivered: i64,
    /// Pending, sending or held.
    pub waiting: i64,
    pub dead: i64,
}

/// One page of events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventPage {
    pub rows: Vec<EventRow>,
    /// Where the next page starts (`before_seq`), when there may be more.
    pub next_before: Option<i64>,
    /// Whether the page stopped at [`SCAN`] events before filling.
    pub scan_ended: bool,
}

/// Events and delivery times by hour, from a sequence number on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    /// (hour since the epoch, status, events).
    pub events: Vec<(i64, String, i64)>,
    /// (hour since the epoch, milliseconds from receipt to delivered),
    /// one per delivered delivery.
    pub latencies: Vec<(i64, i64)>,
}

/// A notifier's deliveries still to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifierLoad {
    pub notifier: String,
    /// Pending or sending.
    pub waiting: i64,
    pub held: i64,
    pub dead: i64,
    /// Of the waiting ones, those whose last attempt failed…
    pub failing: i64,
    /// …the oldest of them made at…
    pub failing_since_ms: Option<i64>,
    /// …and the error of the most recent.
    pub last_error: Option<String>,
}

/// Counts `n` deliveries in `state` into `load`.
pub fn count_state(load: &mut NotifierLoad, state: &str, n: i64) {
    match state {
        "pending" | "sending" => load.waiting += n,
        "held" => load.held += n,
        "dead" => load.dead += n,
        _ => {}
    }
}

/// A parameter of a listing's SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Text(String),
    Int(i64),
}

/// The `WHERE` of a listing and its parameters, numbered from 1. With a
/// job id and without `scan`, the index of the deliveries' keys (a final
/// status's is `<job>:<status>`, a lifecycle's `<job>:start`…) answers and
/// no window applies; otherwise the page looks at most at [`SCAN`] events
/// below `before_seq` (or the store's newest, `newest`), and not below its
/// oldest, `oldest`.
pub fn event_filter(q: &EventQuery, newest: i64, oldest: i64) -> (String, Vec<Param>, Option<i64>) {
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    let add = |clauses: &mut Vec<String>, params: &mut Vec<Param>, clause: &str, p: Param| {
        params.push(p);
        clauses.push(clause.replace('?', &format!("${}", params.len())));
    };
    let below = q.before_seq.unwrap_or(newest.saturating_add(1));
    let below = q.to_seq.map_or(below, |to| below.min(to));
    add(&mut clauses, &mut params, "e.seq < ?", Param::Int(below));
    let mut window = None;
    let floor = q.from_seq.unwrap_or(0).max(oldest);
    if let Some(job) = q.job.as_ref().filter(|_| !q.scan) {
        add(
            &mut clauses,
            &mut params,
            "e.object_id = ?",
            Param::Text(job.clone()),
        );
        add(&mut clauses, &mut params, "e.seq >= ?", Param::Int(floor));
        // The keys from `<job>:` up to `<job>;`, the next byte.
        params.push(Param::Text(format!("{job}:")));
        params.push(Param::Text(format!("{job};")));
        clauses.push(format!(
            "e.seq IN (SELECT r.event_seq FROM deliveries r WHERE r.dedup_key >= ${} AND r.dedup_key < ${})",
            params.len() - 1,
            params.len()
        ));
    } else {
        if let Some(job) = &q.job {
            add(
                &mut clauses,
                &mut params,
                "e.object_id = ?",
                Param::Text(job.clone()),
            );
        }
        let start = below.saturating_sub(SCAN).max(floor);
        window = Some(start);
        add(&mut clauses, &mut params, "e.seq >= ?", Param::Int(start));
    }
    if let Some(kind) = q.kind {
        add(
            &mut clauses,
            &mut params,
            "e.kind = ?",
            Param::Text(kind.as_str().to_owned()),
        );
    }
    if let Some(status) = &q.status {
        add(
            &mut clauses,
            &mut params,
            "e.status = ?",
            Param::Text(status.clone()),
        );
    }
    if let Some(model) = &q.model {
        add(
            &mut clauses,
            &mut params,
            "e.model = ?",
            Param::Text(model.clone()),
        );
    }
    if let Some(route) = &q.route {
        add(
            &mut clauses,
            &mut params,
            "EXISTS (SELECT 1 FROM deliveries r WHERE r.event_seq = e.seq AND r.route = ?)",
            Param::Text(route.clone()),
        );
    }
    match q.source {
        Some(Source::CatchUp) => clauses.push(CATCH_UP.to_owned()),
        Some(Source::Webhook) => clauses.push(format!("NOT {CATCH_UP}")),
        None => {}
    }
    // The window's floor, for the page to say where the next one starts.
    let floor_seen = window.filter(|start| *start > floor);
    (clauses.join(" AND "), params, floor_seen)
}

/// Events found by catching up have webhook ids of their own.
const CATCH_UP: &str = "(substr(e.webhook_id, 1, 8) = 'catchup_')";

/// The columns of an [`EventRow`], in order, over `events e`.
pub const ROW_COLUMNS: &str = "e.seq, e.webhook_id, e.object_id, e.kind, e.status, e.model, \
    e.received_at_ms, \
    (SELECT count(*) FROM deliveries d WHERE d.event_seq = e.seq AND d.state = 'delivered'), \
    (SELECT count(*) FROM deliveries d WHERE d.event_seq = e.seq AND d.state IN ('pending', 'sending', 'held')), \
    (SELECT count(*) FROM deliveries d WHERE d.event_seq = e.seq AND d.state = 'dead')";

/// The page `rows` (fetched with one more than `limit`) make, under the
/// window whose floor was `floor_seen`.
pub fn page(mut rows: Vec<EventRow>, limit: usize, floor_seen: Option<i64>) -> EventPage {
    if rows.len() > limit {
        rows.truncate(limit);
        let next_before = rows.last().map(|r| r.seq);
        return EventPage {
            rows,
            next_before,
            scan_ended: false,
        };
    }
    EventPage {
        rows,
        next_before: floor_seen,
        scan_ended: floor_seen.is_some(),
    }
}

/// A binary search for the first event received at or after a time,
/// over sequence numbers that may have gaps; each backend probes
/// ([`Search::next_probe`]) for the first event at or after a number and
/// tells what it found ([`Search::saw`]).
#[derive(Debug, Clone)]
pub struct Search {
    low: i64,
    high: i64,
    at_ms: i64,
    best: Option<i64>,
}

impl Search {
    /// Between the oldest sequence number `low` and the newest `high`,
    /// received at `newest.1`.
    pub fn new(low: i64, high: i64, newest: (i64, i64), at_ms: i64) -> Self {
        let found = newest.1 >= at_ms;
        Self {
            low,
            high: if found { high } else { low - 1 },
            at_ms,
            best: found.then_some(newest.0),
        }
    }

    /// The number to look at next, if the search is not over.
    pub fn next_probe(&self) -> Option<i64> {
        (self.low <= self.high).then(|| self.low + (self.high - self.low) / 2)
    }

    /// The first event at or after `mid` is `seq`, received at `received_ms`.
    pub fn saw(&mut self, mid: i64, seq: i64, received_ms: i64) {
        if received_ms >= self.at_ms {
            // Nothing between mid and seq: the answer is seq or below mid.
            self.best = Some(self.best.map_or(seq, |b| b.min(seq)));
            self.high = mid - 1;
        } else {
            self.low = seq + 1;
        }
    }

    pub fn found(&self) -> Option<i64> {
        self.best
    }
}

/// The store's oldest and newest event, each found in the primary key
/// (SQLite reads the whole table for `min` and `max` in one select).
pub const BOUNDS: &str = "SELECT (SELECT min(seq) FROM events), (SELECT max(seq) FROM events)";

// A notifier's load, a question at a time, each answered from the
// `(notifier, state, …)` index and the few deliveries still waiting: a
// month of dead ones is counted, never read.

/// A notifier's deliveries counted by state.
pub const LOAD_COUNTS: &str = "SELECT state, count(*) FROM deliveries
    WHERE notifier = $1 AND state IN ('pending', 'sending', 'held', 'dead') GROUP BY state";

/// Of a notifier's waiting deliveries, those whose last attempt failed:
/// how many, since when, and the most recent one's id.
pub const LOAD_FAILING: &str = "SELECT count(*), min(created_at_ms), max(id) FROM deliveries
    WHERE notifier = $1 AND state IN ('pending', 'sending') AND last_error IS NOT NULL";

/// A notifier's most recent dead delivery.
pub const LOAD_LAST_DEAD: &str =
    "SELECT max(id) FROM deliveries WHERE notifier = $1 AND state = 'dead'";

/// A delivery's last error.
pub const ERROR_OF: &str = "SELECT last_error FROM deliveries WHERE id = $1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_number_their_parameters_in_order_and_bound_the_scan() {
        let q = EventQuery {
            kind: Some(Kind::Training),
            status: Some("failed".into()),
            route: Some("r".into()),
            source: Some(Source::CatchUp),
            limit: 50,
            ..EventQuery::default()
        };
        let (sql, params, floor) = event_filter(&q, 100_000, 1);
        assert_eq!(
            sql,
            "e.seq < $1 AND e.seq >= $2 AND e.kind = $3 AND e.status = $4 AND EXISTS (SELECT 1 FROM deliveries r WHERE r.event_seq = e.seq AND r.route = $5) AND (substr(e.webhook_id, 1, 8) = 'catchup_')"
        );
        assert_eq!(params[0], Param::Int(100_001));
        assert_eq!(params[1], Param::Int(100_001 - SCAN));
        assert_eq!(floor, Some(100_001 - SCAN));
    }

    #[test]
    fn a_job_id_is_looked_up_without_a_window_and_a_range_bounds_both_ends() {
        let q = EventQuery {
            job: Some("p1".into()),
            from_seq: Some(10),
            to_seq: Some(500),
            before_seq: Some(900),
            limit: 50,
            ..EventQuery::default()
        };
        let (sql, params, floor) = event_filter(&q, 1_000, 1);
        assert_eq!(
            sql,
            "e.seq < $1 AND e.object_id = $2 AND e.seq >= $3 AND e.seq IN (SELECT r.event_seq FROM deliveries r WHERE r.dedup_key >= $4 AND r.dedup_key < $5)"
        );
        assert_eq!(
            params,
            [
                Param::Int(500),
                Param::Text("p1".into()),
                Param::Int(10),
                Param::Text("p1:".into()),
                Param::Text("p1;".into())
            ]
        );
        assert_eq!(floor, None);
        // A small store: the window reaches its start, so no next page.
        let (_, _, floor) = event_filter(&EventQuery::default(), 300, 1);
        assert_eq!(floor, None);
    }

    #[test]
    fn the_search_finds_the_first_event_at_a_time_across_gaps() {
        // Sequence numbers with gaps, each received at ten times its number.
        let seqs = [3, 4, 5, 9, 10, 20, 21, 22, 40];
        let first_at = |n: i64| seqs.iter().copied().find(|s| *s >= n).unwrap();
        for at_ms in [
            0, 30, 31, 50, 55, 95, 100, 101, 200, 215, 221, 300, 400, 401,
        ] {
            let newest = (40, 400);
            let mut search = Search::new(3, 40, newest, at_ms);
            let mut probes = 0;
            while let Some(mid) = search.next_probe() {
                let seq = first_at(mid);
                search.saw(mid, seq, seq * 10);
                probes += 1;
                assert!(probes < 20, "{at_ms}: does not end");
            }
            let want = seqs.iter().copied().find(|s| s * 10 >= at_ms);
            assert_eq!(search.found(), want, "{at_ms}");
        }
    }

    #[test]
    fn a_full_page_continues_below_its_last_row_and_a_short_one_below_its_window() {
        let row = |seq| EventRow {
            seq,
            webhook_id: String::new(),
            object_id: String::new(),
            kind: Kind::Prediction,
            status: Status::Succeeded,
            model: None,
            received_at_ms: 0,
            delivered: 0,
            waiting: 0,
            dead: 0,
        };
        let full = page(vec![row(9), row(8), row(7)], 2, Some(1));
        assert_eq!(
            (full.rows.len(), full.next_before, full.scan_ended),
            (2, Some(8), false)
        );
        let short = page(vec![row(9)], 2, Some(5));
        assert_eq!((short.next_before, short.scan_ended), (Some(5), true));
        let last = page(vec![row(9)], 2, None);
        assert_eq!(last.next_before, None);
    }
}
