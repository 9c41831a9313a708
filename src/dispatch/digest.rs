//! Sending a digest (`group_by` on a route): when the store hands out the
//! oldest delivery of a group, the dispatcher reads every member still to
//! be sent, renders the notifier's `digest` template over them, sends one
//! message, and marks them all sent together. A member that comes while
//! the digest is out waits for the next one.

use crate::event::Event;
use crate::live::Setup;
use crate::notify::Notifier;
use crate::render::Message;
use crate::route::Route;
use crate::store::{Delivery, Store, StoreError};

/// The most jobs one digest tells; more wait for the next, due at once.
pub const MAX_MEMBERS: usize = 1_000;

/// The most stored body bytes one digest reads (a body may be as large as
/// `[server] max_body`): the jobs past it wait for the next digest.
pub const MAX_MEMBER_BYTES: usize = 64 << 20;

/// The grouped route `delivery` belongs to, if it is a group's member.
pub fn route_of<'a>(setup: &'a Setup, delivery: &Delivery) -> Option<&'a Route> {
    let lane = delivery.lane.as_deref()?;
    if !lane.starts_with("group:") {
        return None;
    }
    setup
        .config
        .routes
        .iter()
        .find(|r| r.name == delivery.route && r.group.is_some())
}

/// The digest message of `delivery`'s group for `notifier`, and the ids of
/// the members it tells.
pub async fn message(
    store: &dyn Store,
    setup: &Setup,
    notifier: &Notifier,
    route: &Route,
    delivery: &Delivery,
) -> Result<(Box<dyn Message>, Vec<i64>), StoreError> {
    let lane = delivery.lane.clone().unwrap_or_default();
    let members = store
        .group_members(
            lane,
            delivery.notifier.clone(),
            MAX_MEMBERS,
            MAX_MEMBER_BYTES,
        )
        .await?;
    let mut ids = Vec::with_capacity(members.len());
    let mut events = Vec::with_capacity(members.len());
    for (d, stored) in &members {
        ids.push(d.id);
        match Event::from_body(&stored.body, &stored.query) {
            Ok(event) => events.push(event),
            Err(e) => {
                tracing::error!(message = "A group member's event cannot be read; left out of the digest.", delivery = d.id, error = %e)
            }
        }
    }
    let by = route.group.as_ref().map(|g| g.by.as_slice()).unwrap_or(&[]);
    let key: Vec<(String, serde_json::Value)> = by
        .iter()
        .map(|path| {
            let value = events
                .first()
                .and_then(|e| crate::route::lookup(e, path).map(|v| v.into_owned()))
                .unwrap_or(serde_json::Value::Null);
            (path.clone(), value)
        })
        .collect();
    let ctx = crate::render::digest::context(&route.name, &notifier.name, &key, &events);
    let body = serde_json::to_vec(&ctx["group"]).unwrap_or_default();
    let message = notifier.settings.render(
        &setup.templates,
        Some(crate::render::digest::NAME),
        &ctx,
        &body,
    );
    Ok((message, ids))
}
