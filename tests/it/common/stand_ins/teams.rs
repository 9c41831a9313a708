//! A stand-in for a Teams Workflows webhook that checks what the workflow
//! checks: its signature in the query, a message with one Adaptive Card
//! attachment, and the size limit; it answers 202, or 401 as a wrong
//! signature gets.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use warp::Filter;
use warp::http::StatusCode;

pub const SIG: &str = "g00dSigX";

#[derive(Clone, Default)]
pub struct Flow(pub Arc<Mutex<Vec<Value>>>);

pub async fn start() -> (String, Flow) {
    use warp::Reply;
    let flow = Flow::default();
    let f = flow.clone();
    let route = warp::post()
        .and(warp::path!(
            "workflows" / "a1b2" / "triggers" / "manual" / "paths" / "invoke"
        ))
        .and(warp::query::raw())
        .and(warp::body::bytes())
        .map(move |query: String, body: bytes::Bytes| {
            let refuse = |status: StatusCode, code: &str, message: &str| {
                warp::reply::with_status(
                    warp::reply::json(&json!({"error": {"code": code, "message": message}})),
                    status,
                )
                .into_response()
            };
            if !query.split('&').any(|p| p == format!("sig={SIG}")) {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "DirectApiAuthorizationRequired",
                    "The request must be authenticated only by Shared Access scheme.",
                );
            }
            if body.len() > 28 * 1024 {
                return refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLarge",
                    "too large",
                );
            }
            let Ok(m) = serde_json::from_slice::<Value>(&body) else {
                return refuse(StatusCode::BAD_REQUEST, "InvalidRequestContent", "not JSON");
            };
            let card = &m["attachments"][0];
            if m["type"] != "message"
                || card["contentType"] != "application/vnd.microsoft.card.adaptive"
                || card["content"]["type"] != "AdaptiveCard"
                || !card["content"]["body"].is_array()
                || card["content"]["version"].as_str().is_none()
            {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "InvalidTemplate",
                    "not an Adaptive Card message",
                );
            }
            f.0.lock().unwrap().push(m);
            StatusCode::ACCEPTED.into_response()
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (
        format!(
            "http://{addr}/workflows/a1b2/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0"
        ),
        flow,
    )
}
