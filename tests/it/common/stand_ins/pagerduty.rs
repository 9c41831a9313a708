//! A stand-in for PagerDuty's Events API v2 that checks what PagerDuty
//! checks: the routing key, the action, the dedup key, and for a trigger a
//! summary (at most 1,024 characters), a source and a severity; it keeps
//! the incidents those events open and resolve.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use warp::Filter;
use warp::http::StatusCode;

pub const KEY: &str = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY00";

#[derive(Clone, Default)]
pub struct Service {
    pub events: Arc<Mutex<Vec<Value>>>,
    /// dedup key → "triggered" or "resolved".
    pub incidents: Arc<Mutex<HashMap<String, &'static str>>>,
}

pub fn invalid(errors: &[&str]) -> warp::reply::Response {
    use warp::Reply;
    warp::reply::with_status(
        warp::reply::json(&json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors})),
        StatusCode::BAD_REQUEST,
    )
    .into_response()
}

pub async fn start() -> (String, Service) {
    use warp::Reply;
    let service = Service::default();
    let s = service.clone();
    let route = warp::post()
        .and(warp::path!("v2" / "enqueue"))
        .and(warp::body::bytes())
        .map(move |body: bytes::Bytes| {
            let Ok(e) = serde_json::from_slice::<Value>(&body) else {
                return invalid(&["Event object is not JSON"]);
            };
            if e["routing_key"] != KEY {
                return invalid(&["Invalid routing key"]);
            }
            let action = e["event_action"].as_str().unwrap_or("");
            let key = e["dedup_key"].as_str().unwrap_or("");
            if !["trigger", "acknowledge", "resolve"].contains(&action) {
                return invalid(&["'event_action' is invalid"]);
            }
            if key.is_empty() || key.len() > 255 {
                return invalid(&["'dedup_key' is invalid"]);
            }
            if action == "trigger" {
                let p = &e["payload"];
                let summary = p["summary"].as_str().unwrap_or("");
                if summary.is_empty() || summary.chars().count() > 1_024 {
                    return invalid(&["'payload.summary' is invalid"]);
                }
                if p["source"].as_str().unwrap_or("").is_empty() {
                    return invalid(&["'payload.source' is missing"]);
                }
                if !["critical", "error", "warning", "info"]
                    .contains(&p["severity"].as_str().unwrap_or(""))
                {
                    return invalid(&["'payload.severity' is invalid"]);
                }
            }
            let state = if action == "resolve" {
                "resolved"
            } else {
                "triggered"
            };
            s.incidents.lock().unwrap().insert(key.to_owned(), state);
            s.events.lock().unwrap().push(e.clone());
            warp::reply::with_status(
                warp::reply::json(
                    &json!({"status": "success", "message": "Event processed", "dedup_key": key}),
                ),
                StatusCode::ACCEPTED,
            )
            .into_response()
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://{addr}/v2/enqueue"), service)
}
