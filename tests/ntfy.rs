//! The ntfy notifier end to end: the real daemon publishing to a loopback
//! stand-in that checks what ntfy checks — JSON published to the server's
//! root, a valid topic, a priority of 1–5, tags as strings, a message within
//! 4,096 bytes, and the access token of a protected topic — and answers as
//! ntfy answers, errors included.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::store::DeliveryState;
use serde_json::{Value, json};
use warp::Filter;
use warp::http::StatusCode;

const TOKEN: &str = "tk_7eevizlsiwf9yi4uxsrs83r4352o0";

/// What the stand-in accepted.
#[derive(Clone, Default)]
struct Published(Arc<Mutex<Vec<Value>>>);

/// ntfy's answer to a refused publish.
fn refuse(status: StatusCode, code: u32, error: &str) -> warp::reply::Response {
    use warp::Reply;
    let body = json!({"code": code, "http": status.as_u16(), "error": error});
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// A stand-in for an ntfy server whose topics need `TOKEN`.
async fn ntfy() -> (String, Published) {
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

fn config(dir: &std::path::Path, server: &str, token: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("ntfy-token"), token).unwrap();
    write_config(
        dir,
        SECRET,
        &format!(
            "[notifiers.phone]\ntype = \"ntfy\"\nurl = \"{server}/ml-alerts\"\ntoken_file = \"ntfy-token\"\n\
             tags = [\"replicate\"]\npriority = {{ canceled = 1 }}\n\n\
             [[routes]]\nname = \"everything\"\nnotify = [\"phone\"]\n"
        ),
    )
}

async fn until(published: &Published, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let got = published.0.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    published.0.lock().unwrap().clone()
}

#[tokio::test]
async fn a_failed_training_reaches_the_topic_with_priority_tags_and_a_click() {
    let (server, published) = ntfy().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&config(dir.path(), &server, TOKEN), Arc::new(SystemClock)).await;
    post_signed(&daemon, "msg_ntfy_1", &fixture("training-failed.json")).await;
    let mut body: Value = serde_json::from_slice(&fixture("prediction-canceled.json")).unwrap();
    // A long log must arrive cut to ntfy's limit, not refused.
    // (2-byte characters: the error and the log tail the template keeps
    // come to about 7,800 bytes.)
    body["logs"] = json!("é".repeat(5_000));
    body["status"] = json!("failed");
    body["error"] = json!("é".repeat(1_400));
    post_signed(&daemon, "msg_ntfy_2", &serde_json::to_vec(&body).unwrap()).await;
    let got = until(&published, 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let training = got
        .iter()
        .find(|m| {
            m["message"]
                .as_str()
                .unwrap()
                .contains("g2k4m6o8r0rm80ckxvje6q8s0w")
        })
        .expect("the training's publish");
    assert_eq!(training["topic"], "ml-alerts");
    assert_eq!(training["priority"], 4, "a failure is high priority");
    assert_eq!(
        training["tags"],
        json!(["rotating_light", "training", "replicate"])
    );
    let title = training["title"].as_str().unwrap();
    assert!(
        title.starts_with("❌ Training pixelforge/flux-lora-trainer (“PETPX”) failed"),
        "{title}"
    );
    assert!(
        training["message"]
            .as_str()
            .unwrap()
            .contains("no images found"),
        "the error leads"
    );
    let long = got.iter().find(|m| m != &training).unwrap();
    let message = long["message"].as_str().unwrap();
    assert!(
        message.len() <= 4_096 && message.ends_with('…'),
        "{}",
        message.len()
    );
    assert_eq!(
        long["click"],
        "https://replicate.com/p/c9t3e5r7f1rma0ckxvbp2w4n8y"
    );
    let rows = wait_deliveries(&dir.path().join("relay.db"), Duration::from_secs(5), |r| {
        r.len() == 2
            && r.iter()
                .all(|l| l.delivery.state == DeliveryState::Delivered)
    })
    .await;
    assert!(
        rows.iter()
            .all(|l| l.delivery.state == DeliveryState::Delivered)
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_wrong_token_is_dead_at_once_with_ntfys_reason() {
    let (server, published) = ntfy().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &config(dir.path(), &server, "tk_wrong"),
        Arc::new(SystemClock),
    )
    .await;
    post_signed(&daemon, "msg_ntfy_3", &fixture("prediction-failed.json")).await;
    let rows = wait_deliveries(&dir.path().join("relay.db"), Duration::from_secs(10), |r| {
        r.iter().any(|l| l.delivery.state == DeliveryState::Dead)
    })
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].delivery.state, DeliveryState::Dead);
    assert_eq!(rows[0].delivery.attempts, 1, "not retried");
    let error = rows[0].delivery.last_error.clone().unwrap();
    assert!(
        error.contains("HTTP 401")
            && error.contains("unauthorized")
            && error.contains("token_file"),
        "{error}"
    );
    assert!(published.0.lock().unwrap().is_empty());
    daemon.stop().await;
}
