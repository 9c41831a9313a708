//! A stand-in for an ntfy server that checks what ntfy checks: JSON
//! published to the server's root, a valid topic, a priority of 1–5, tags as
//! strings, a message within 4,096 bytes, and the access token of a
//! protected topic; it answers as ntfy answers, errors included.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use warp::Filter;
use warp::http::StatusCode;

pub const TOKEN: &str = "tk_7eevizlsiwf9yi4uxsrs83r4352o0";

/// What the stand-in accepted.
#[derive(Clone, Default)]
pub struct Published(pub Arc<Mutex<Vec<Value>>>);

/// ntfy's answer to a refused publish.
pub fn refuse(status: StatusCode, code: u32, error: &str) -> warp::reply::Response {
    use warp::Reply;
    let body = json!({"code": code, "http": status.as_u16(), "error": error});
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// A stand-in for an ntfy server whose topics need `TOKEN`.
pub async fn start() -> (String, Published) {
    use warp::Reply;
    let published = Published::default();
    let p = published.clone();
    let route = warp::post()
        .and(warp::path::end())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::bytes())
        .map(
            move |auth: Option<String>, kind: Option<String>, body: bytes::Bytes| {
                if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
                    return refuse(StatusCode::UNAUTHORIZED, 40101, "unauthorized");
                }
                if kind.as_deref() != Some("application/json") {
                    return refuse(StatusCode::BAD_REQUEST, 40024, "invalid request: not JSON");
                }
                let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&body) else {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        40024,
                        "invalid request: JSON object expected",
                    );
                };
                let topic = m.get("topic").and_then(Value::as_str).unwrap_or("");
                if topic.is_empty()
                    || topic.len() > 64
                    || !topic
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return refuse(StatusCode::BAD_REQUEST, 40009, "invalid topic");
                }
                if !m
                    .get("priority")
                    .and_then(Value::as_u64)
                    .is_some_and(|p| (1..=5).contains(&p))
                {
                    return refuse(StatusCode::BAD_REQUEST, 40007, "invalid priority");
                }
                if !m
                    .get("tags")
                    .and_then(Value::as_array)
                    .is_some_and(|t| t.iter().all(Value::is_string))
                {
                    return refuse(StatusCode::BAD_REQUEST, 40024, "invalid request: tags");
                }
                if m.get("message")
                    .and_then(Value::as_str)
                    .is_none_or(|s| s.len() > 4_096)
                {
                    return refuse(StatusCode::PAYLOAD_TOO_LARGE, 41301, "message too large");
                }
                if let Some(click) = m.get("click")
                    && !click.as_str().is_some_and(|u| u.starts_with("http"))
                {
                    return refuse(StatusCode::BAD_REQUEST, 40013, "invalid click URL");
                }
                p.0.lock().unwrap().push(Value::Object(m.clone()));
                warp::reply::json(
                    &json!({"id": "sPs5Ts9LQWs1", "event": "message", "topic": topic}),
                )
                .into_response()
            },
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://{addr}"), published)
}
