//! A job's life on a lifecycle route, as the dispatcher keeps it: before
//! a delivery, what the job's earlier deliveries to the same notifier and
//! route posted (read from the store, so a restart or another instance
//! carries on the same message); after it, what this one posted. The
//! store keeps one job's deliveries of a lane one at a time, so reads and
//! writes here never race.

use crate::event::Event;
use crate::live::Setup;
use crate::notify::Life;
use crate::store::{Delivery, Store, StoreError, THREAD};

/// Where the thread state of `delivery`'s job is kept.
pub fn key(delivery: &Delivery, job: &str) -> String {
    format!("{THREAD}{}/{}/{job}", delivery.notifier, delivery.route)
}

/// The job's life for `delivery`, if its route follows lives.
pub async fn load(
    store: &dyn Store,
    setup: &Setup,
    delivery: &Delivery,
    event: &Event,
    job: &str,
) -> Result<Option<Life>, StoreError> {
    let Some(route) = setup
        .config
        .routes
        .iter()
        .find(|r| r.name == delivery.route && r.lifecycle)
    else {
        return Ok(None);
    };
    let thread = store
        .load_state(&key(delivery, job))
        .await?
        .and_then(|v| serde_json::from_str(&v).ok());
    Ok(Some(Life {
        start: !event.status.is_terminal(),
        thread,
        progress: route.progress,
    }))
}
