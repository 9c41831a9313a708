//! The router task: turns stored, unrouted events into deliveries. Routing itself
//! is the pure `route` module; this adds the outbox bookkeeping (dedup keys,
//! expiry) and the loop that follows the store.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Shared;
use crate::config::Config;
use crate::event::Event;
use crate::route;
use crate::store::{RoutingPlan, StoredEvent};

/// Events routed per transaction.
const BATCH: usize = 256;

pub(super) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let events = match shared.store.unrouted(BATCH).await {
            Ok(events) => events,
            Err(e) => {
                tracing::error!(message = "Cannot read unrouted events.", error = %e);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if events.is_empty() {
            tokio::select! {
                _ = shared.store.events_arrived() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let plans = plan(&shared.live.load().config, &events);
        match shared.store.record_routing(plans).await {
            Ok(0) => {}
            Ok(created) => {
                tracing::debug!(
                    message = "Routed.",
                    events = events.len(),
                    deliveries = created
                );
                shared.wake.notify_one();
            }
            Err(e) => {
                tracing::error!(message = "Cannot record routing; will retry.", error = %e);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The deliveries each event should get under `config`.
pub fn plan(config: &Config, events: &[StoredEvent]) -> Vec<RoutingPlan> {
    let max_age = config.delivery.max_age.as_millis() as i64;
    let keys = route::payload_keys(&config.routes);
    events
        .iter()
        .map(|stored| {
            let status = crate::event::Status::parse(&stored.status);
            let kind = stored.kind.parse().unwrap_or(crate::event::Kind::Prediction);
            let event =
                Event::for_routing(&stored.body, &stored.query, kind, status.clone(), &keys);
            let deliveries = match event {
                Ok(event) => route::matching(&config.routes, &event)
                    .into_iter()
                    .flat_map(|r| r.notify.iter().map(|n| (r.name.clone(), n.clone())))
                    .collect(),
                Err(e) => {
                    // Cannot happen for bodies the intake accepted; never block
                    // the queue on one.
                    tracing::error!(message = "A stored event cannot be read; not routed.", seq = stored.seq, error = %e);
                    Vec::new()
                }
            };
            let dedup_key = if status.is_terminal() {
                format!("{}:{}", stored.object_id, stored.status)
            } else {
                format!("event:{}", stored.seq)
            };
            RoutingPlan {
                event_seq: stored.seq,
                dedup_key,
                deliveries,
                expires_at_ms: stored.received_at_ms + max_age,
            }
        })
        .collect()
}
