//! Routing into the outbox: the deliveries one event gets, with their dedup key
//! and expiry, from the pure matching of the parent module.
//!
//! The intake routes each event as it stores it, so the deliveries are written
//! in the event's own transaction. [`route_leftovers`] covers what releases
//! before that left stored unrouted, once at start.

use crate::config::Config;
use crate::event::Event;
use crate::route;
use crate::store::{Routing, RoutingPlan, StoreError, StoredEvent, Unrouted};

/// Events routed per transaction.
const BATCH: usize = 256;

/// What routing needs to know about one received event besides its payload.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub webhook_id: &'a str,
    pub object_id: &'a str,
    pub received_at_ms: i64,
}

/// The deliveries `event` gets under `config`. `event` needs only the payload
/// fields the routes look at ([`route::payload_keys`]).
pub fn route_event(config: &Config, event: &Event, received: Received<'_>) -> Routing {
    let matched = route::matching(&config.routes, event);
    let deliveries = matched
        .iter()
        .flat_map(|r| r.notify.iter().map(|n| (r.name.clone(), n.clone())))
        .collect();
    let after = matched
        .iter()
        .filter_map(|r| Some((r.name.clone(), r.after.clone()?)))
        .collect();
    let lifecycle_routes: Vec<(String, Option<String>)> = matched
        .iter()
        .filter(|r| r.lifecycle)
        .map(|r| (r.name.clone(), life_key(r, event, received)))
        .collect();
    let lifecycle = (!lifecycle_routes.is_empty()).then(|| crate::store::Lifecycle {
        lane: received.object_id.to_owned(),
        routes: lifecycle_routes,
    });
    let groups = matched.iter().filter_map(|r| group_of(r, event)).collect();
    // A final status notifies once per job whatever the number of webhooks
    // that carried it; anything else notifies once per webhook.
    // (`concat`, not `format!`, which costs ten times as much at every webhook.)
    let dedup_key = if event.status.is_terminal() {
        [received.object_id, ":", event.status.as_str()].concat()
    } else {
        ["webhook:", received.webhook_id].concat()
    };
    Routing {
        dedup_key,
        deliveries,
        expires_at_ms: received.received_at_ms + config.delivery.max_age.as_millis() as i64,
        after,
        lifecycle,
        groups,
    }
}

/// The group `event` joins on grouped route `route`: that of its values
/// at the route's `group_by` paths. A job that is not final, or lacks one
/// of the values, joins none and goes out at once.
fn group_of(route: &route::Route, event: &Event) -> Option<crate::store::Group> {
    use sha2::{Digest, Sha256};
    let grouping = route.group.as_ref()?;
    if !event.status.is_terminal() {
        return None;
    }
    let mut hash = Sha256::new();
    for path in &grouping.by {
        let value = route::lookup(event, path).filter(|v| !v.is_null())?;
        hash.update(value.to_string().as_bytes());
        hash.update([0]);
    }
    let digest = hash.finalize();
    let key: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    Some(crate::store::Group {
        route: route.name.clone(),
        lane: format!("group:{}:{key}", route.name),
        wait_ms: grouping.wait.as_millis() as i64,
        max_wait_ms: grouping.max_wait.as_millis() as i64,
    })
}

/// The dedup key of a lifecycle route's delivery of `event`, where it is
/// not the event's: a job's start once (`<job>:start`), and with
/// `progress`, its `processing` webhooks once an interval
/// (`<job>:progress:<interval number>`).
fn life_key(route: &route::Route, event: &Event, received: Received<'_>) -> Option<String> {
    if event.status.is_terminal() {
        return None;
    }
    let job = received.object_id;
    Some(match route.progress {
        Some(every) if event.status == crate::event::Status::Processing => {
            let interval = every.as_millis().max(1) as i64;
            format!("{job}:progress:{}", received.received_at_ms / interval)
        }
        _ => format!("{job}:start"),
    })
}

/// Routes every event an earlier release stored without routing, in
/// batches, before the daemon listens: routing at intake leaves no more of
/// them, so this runs once, not as a task. Returns how many events it
/// routed.
pub async fn route_leftovers(store: &dyn Unrouted, config: &Config) -> Result<usize, StoreError> {
    let mut routed = 0;
    loop {
        let events = store.unrouted(BATCH).await?;
        if events.is_empty() {
            break;
        }
        routed += events.len();
        // An event that cannot be read gets no deliveries but is marked
        // routed all the same, so this always ends.
        store.record_routing(plan(config, &events)).await?;
    }
    if routed > 0 {
        tracing::info!(
            message = "Routed the events an earlier version stored without routing.",
            events = routed
        );
    }
    Ok(routed)
}

/// The deliveries each stored event should get under `config`.
pub fn plan(config: &Config, events: &[StoredEvent]) -> Vec<RoutingPlan> {
    let keys = route::payload_keys(&config.routes);
    events
        .iter()
        .map(|stored| {
            let (kind, status) = (stored.kind, stored.status.clone());
            let received = Received {
                webhook_id: &stored.webhook_id,
                object_id: &stored.object_id,
                received_at_ms: stored.received_at_ms,
            };
            let routing = match Event::for_routing(&stored.body, &stored.query, kind, status, &keys)
            {
                Ok(event) => route_event(config, &event, received),
                Err(e) => {
                    // Cannot happen for bodies the intake accepted; never block
                    // the queue on one.
                    tracing::error!(message = "A stored event cannot be read; not routed.", seq = stored.seq, error = %e);
                    Routing {
                        dedup_key: format!("webhook:{}", stored.webhook_id),
                        deliveries: Vec::new(),
                        expires_at_ms: stored.received_at_ms,
                        after: Vec::new(),
                        lifecycle: None,
                        groups: Vec::new(),
                    }
                }
            };
            RoutingPlan {
                event_seq: stored.seq,
                routing,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Kind, Status};

    const CONFIG: &str = r#"
[verify]
insecure = true

[notifiers.ops]
type = "log"

[notifiers.team]
type = "log"

[delivery]
max_age = "1h"

[[routes]]
name = "failures"
when = { status = "failed" }
notify = ["ops"]
continue = true

[[routes]]
name = "vision"
when = { "query.team" = "vision", status = ["failed", "processing"] }
notify = ["team"]
"#;

    #[test]
    fn routing_table() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(&file, CONFIG).unwrap();
        let config = crate::config::load_with_env(&file, []).unwrap();
        let keys = route::payload_keys(&config.routes);
        // (status, query, expected deliveries, expected dedup key)
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            ("failed", "", &[("failures", "ops")], "p1:failed"),
            (
                "failed",
                "team=vision",
                &[("failures", "ops"), ("vision", "team")],
                "p1:failed",
            ),
            (
                "processing",
                "team=vision",
                &[("vision", "team")],
                "webhook:msg_1",
            ),
            ("processing", "", &[], "webhook:msg_1"),
            ("succeeded", "team=vision", &[], "p1:succeeded"),
        ];
        for (status, query, want, key) in cases {
            let status = Status::parse(status);
            let body = format!(r#"{{"id":"p1","status":"{}"}}"#, status.as_str());
            let event = Event::for_routing(
                body.as_bytes(),
                query,
                Kind::Prediction,
                status.clone(),
                &keys,
            )
            .unwrap();
            let received = Received {
                webhook_id: "msg_1",
                object_id: "p1",
                received_at_ms: 1_000,
            };
            let got = route_event(&config, &event, received);
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(r, n)| (r.to_string(), n.to_string()))
                .collect();
            assert_eq!(got.deliveries, want, "{status:?} {query}");
            assert_eq!(got.dedup_key, *key, "{status:?} {query}");
            assert_eq!(got.expires_at_ms, 1_000 + 3_600_000);
        }
    }

    #[test]
    fn a_lifecycle_route_keys_a_jobs_start_once_and_its_progress_once_an_interval() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(
            &file,
            "[verify]\ninsecure = true\n[notifiers.team]\ntype = \"slack\"\ntoken = \"xoxb-1\"\n\
             channel = \"#ml\"\n[notifiers.ops]\ntype = \"log\"\n\
             [[routes]]\nname = \"life\"\nlifecycle = true\nprogress = \"1m\"\nnotify = [\"team\"]\n\
             continue = true\n[[routes]]\nname = \"plain\"\nnotify = [\"ops\"]\n",
        )
        .unwrap();
        let config = crate::config::load_with_env(&file, []).unwrap();
        let keys = route::payload_keys(&config.routes);
        // (status, received at, the life route's key, the plain route matches)
        let cases: &[(&str, i64, Option<&str>, bool)] = &[
            ("starting", 1_000, Some("p1:start"), false),
            ("processing", 125_000, Some("p1:progress:2"), false),
            ("processing", 179_999, Some("p1:progress:2"), false),
            ("processing", 180_000, Some("p1:progress:3"), false),
            ("succeeded", 200_000, None, true),
        ];
        for (status, at, life_key, plain) in cases {
            let status = Status::parse(status);
            let body = format!(r#"{{"id":"p1","status":"{}"}}"#, status.as_str());
            let event =
                Event::for_routing(body.as_bytes(), "", Kind::Prediction, status.clone(), &keys)
                    .unwrap();
            let received = Received {
                webhook_id: "msg_1",
                object_id: "p1",
                received_at_ms: *at,
            };
            let got = route_event(&config, &event, received);
            assert_eq!(got.lane_of("life"), Some("p1"), "{status:?}");
            assert_eq!(got.lane_of("plain"), None);
            let want = life_key.unwrap_or(&got.dedup_key).to_owned();
            assert_eq!(got.key_of("life"), want, "{status:?} at {at}");
            assert_eq!(
                got.deliveries.iter().any(|(r, _)| r == "plain"),
                *plain,
                "{status:?}"
            );
        }
    }
}
