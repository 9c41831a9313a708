//! What the daemon says of itself: `/healthz` (the reason only to a client
//! on this host) and `/metrics`, on the webhook port or on a listener of its
//! own (`server.metrics`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::json;
use warp::Filter;
use warp::http::{Method, StatusCode, header};
use warp::reply::{Reply, Response};

use super::{Intake, Request, answer};
use crate::telemetry;

/// 200 or 503; why, only to a client on this host (a panic's message or a
/// store path is not for strangers).
pub(super) async fn health(intake: &Intake, request: &Request) -> Response {
    let local = request
        .conn
        .as_ref()
        .is_none_or(|c| c.peer().ip().to_canonical().is_loopback());
    let down = if intake.stopping.load(Ordering::Relaxed) {
        Some(("stopping", "the daemon is stopping".to_owned()))
    } else if let Some((task, panic)) = intake.tasks.down().into_iter().next() {
        Some((
            "task_down",
            format!("the {task} task panicked ({panic}) and is being restarted; see the log"),
        ))
    } else {
        match intake.store.health().await {
            Ok(()) => None,
            Err(e) => Some(("store_unavailable", e.to_string())),
        }
    };
    match down {
        None => warp::reply::json(&json!({"status": "ok"})).into_response(),
        Some((kind, why)) if local => answer(StatusCode::SERVICE_UNAVAILABLE, kind, why),
        Some(_) => warp::reply::with_status(
            warp::reply::json(&json!({"status": "unavailable"})),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .into_response(),
    }
}

/// `/metrics` alone, for a listener of its own (`server.metrics`).
pub fn metrics_filter(
    intake: Arc<Intake>,
) -> impl Filter<Extract = (Response,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static
{
    warp::method().and(warp::path::full()).then(
        move |method: Method, path: warp::path::FullPath| {
            let intake = intake.clone();
            async move {
                match (path.as_str(), method) {
                    ("/metrics", Method::GET | Method::HEAD) => metrics(&intake).await,
                    (p, _) => answer(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        format!("nothing at {p}; this port serves GET /metrics only"),
                    ),
                }
            }
        },
    )
}

/// Prometheus text; outbox gauges are read from the store at scrape time.
pub(super) async fn metrics(intake: &Intake) -> Response {
    if let Ok(stats) = intake.store.outbox_stats().await {
        let now = crate::clock::now_ms();
        let age = stats.oldest_pending_ms.map(|t| now - t);
        telemetry::outbox(stats.pending, stats.dead, stats.held, age);
        let watched: Vec<String> = intake
            .live
            .load()
            .config
            .notifiers
            .iter()
            .filter(|(_, n)| n.settings.kind().wait_is_watched())
            .map(|(name, _)| name.clone())
            .collect();
        if let Ok(oldest) = intake.store.oldest_waiting(watched).await {
            telemetry::oldest_waiting(now, &oldest);
        }
    }
    telemetry::unverified_bytes(intake.unverified.in_use());
    let text = telemetry::handle().render();
    let mut res = Response::new(text.into());
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}
