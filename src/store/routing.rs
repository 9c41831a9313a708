//! What routing hands the store with an event: its deliveries, their
//! dedup keys, what they wait for (`after`), and the lanes they go in one
//! at a time (a job's life, a digest's group); and the SQL condition both
//! backends use to tell a delivery that waits from one that may be sent.
//! Also the named values that go with the retention as deliveries do.

/// What routing decided for one event: the deliveries to create, written in
/// the transaction that stores the event, so an event is never stored
/// without them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// Deliveries with the same key, route and notifier are created once: for a
    /// final status it is `object_id:status`, so one job's end notifies once
    /// whatever the number of webhooks that carried it.
    pub dedup_key: String,
    /// `(route, notifier)` pairs, in order.
    pub deliveries: Vec<(String, String)>,
    /// When retrying stops (`[delivery] max_age` after receipt).
    pub expires_at_ms: i64,
    /// `(route, notifier)`: the route's other deliveries wait until that
    /// notifier's is delivered or dead, and see its result (`after` on a
    /// route).
    pub after: Vec<(String, String)>,
    /// The deliveries of lifecycle routes, if any matched.
    pub lifecycle: Option<Lifecycle>,
    /// The groups the deliveries of grouped routes join.
    pub groups: Vec<Group>,
}

/// A digest's group (`group_by` on a route): the route's deliveries of
/// events with the same key values share `lane`, and are all due when no
/// member has come for `wait_ms`, or `max_wait_ms` after the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub route: String,
    pub lane: String,
    pub wait_ms: i64,
    pub max_wait_ms: i64,
}

/// A job's life on lifecycle routes: their deliveries run one at a time,
/// oldest first, per job and notifier (the job's lane), and a job's
/// non-final webhooks are planned under keys of their own (its start once,
/// under `<job>:start`; progress at most once an interval).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    /// The job's id.
    pub lane: String,
    /// The lifecycle routes among those that matched, each with the dedup
    /// key its deliveries take instead of the event's (`None`: the
    /// event's, as for an end).
    pub routes: Vec<(String, Option<String>)>,
}

/// The prefix of the named values ([`super::Store::save_state`]) that record when
/// a delivery's attempts began, for kinds whose sends are recorded before
/// they go; they are deleted with the retention, as deliveries are.
pub const BEGAN: &str = "began/";

/// The prefix of the named values that keep what a job's lifecycle
/// deliveries posted (a Slack message's channel and ts), per notifier,
/// route and job; deleted with the retention, as deliveries are.
pub const THREAD: &str = "thread/";

/// The prefixes of the named values retention deletes once old.
pub const KEPT_WITH_DELIVERIES: [&str; 2] = [BEGAN, THREAD];

/// The condition, in SQL both backends speak, that a row of `deliveries`
/// is not waiting: neither for another delivery of its event and route
/// (`after`) that is still to be sent, nor for its turn in its job's lane
/// (a lifecycle route's deliveries of one job and notifier go one at a
/// time, oldest first).
pub(crate) const NOT_WAITING: &str = "(deliveries.after_notifier IS NULL OR NOT EXISTS (
     SELECT 1 FROM deliveries w
     WHERE w.event_seq = deliveries.event_seq AND w.route = deliveries.route
       AND w.notifier = deliveries.after_notifier AND w.state IN ('pending', 'sending')))
   AND (deliveries.lane IS NULL OR NOT EXISTS (
     SELECT 1 FROM deliveries o
     WHERE o.lane = deliveries.lane AND o.notifier = deliveries.notifier
       AND (o.state = 'sending' OR (o.state = 'pending' AND o.id < deliveries.id))))";

impl Routing {
    /// The lane of `route`'s deliveries: the job's, on a lifecycle route.
    pub fn lane_of(&self, route: &str) -> Option<&str> {
        if let Some(g) = self.groups.iter().find(|g| g.route == route) {
            return Some(&g.lane);
        }
        let l = self.lifecycle.as_ref()?;
        l.routes
            .iter()
            .any(|(r, _)| r == route)
            .then_some(l.lane.as_str())
    }

    /// How long after its creation `route`'s delivery is first due: a
    /// group's member waits the group's wait; anything else is due at once.
    pub fn first_wait_ms(&self, route: &str) -> i64 {
        self.groups
            .iter()
            .find(|g| g.route == route)
            .map_or(0, |g| g.wait_ms)
    }

    /// The dedup key of `route`'s deliveries: on a lifecycle route, a job's
    /// start is planned once whatever the number of its non-final webhooks.
    pub fn key_of(&self, route: &str) -> &str {
        self.lifecycle
            .as_ref()
            .and_then(|l| l.routes.iter().find(|(r, _)| r == route))
            .and_then(|(_, key)| key.as_deref())
            .unwrap_or(&self.dedup_key)
    }

    /// The notifier delivery `(route, notifier)` waits for, if any.
    pub fn waits_for(&self, route: &str, notifier: &str) -> Option<&str> {
        self.after
            .iter()
            .find(|(r, awaited)| r == route && awaited != notifier)
            .map(|(_, awaited)| awaited.as_str())
    }
}

/// [`Routing`] for an event already stored under `event_seq` (see [`super::Unrouted`]).
#[derive(Debug, Clone)]
pub struct RoutingPlan {
    pub event_seq: i64,
    pub routing: Routing,
}
