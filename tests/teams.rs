//! The Teams notifier end to end: the real daemon posting to a loopback
//! stand-in for a Workflows webhook that checks what the workflow checks —
//! its signature in the query, a message with one Adaptive Card attachment,
//! and the size limit — and answers 202, or 401 as a wrong signature gets.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::store::DeliveryState;
use serde_json::{Value, json};
use warp::Filter;
use warp::http::StatusCode;

const SIG: &str = "g00dSigX";

#[derive(Clone, Default)]
struct Flow(Arc<Mutex<Vec<Value>>>);

async fn flow() -> (String, Flow) {
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

fn config(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("teams-url"), url).unwrap();
    write_config(
        dir,
        SECRET,
        "[notifiers.team]\ntype = \"teams\"\nwebhook_url_file = \"teams-url\"\n\n\
         [[routes]]\nname = \"everything\"\nnotify = [\"team\"]\n",
    )
}

#[tokio::test]
async fn a_failure_arrives_as_an_adaptive_card() {
    let (url, flow) = flow().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &config(dir.path(), &format!("{url}&sig={SIG}")),
        Arc::new(SystemClock),
    )
    .await;
    let mut body: Value = serde_json::from_slice(&fixture("training-failed.json")).unwrap();
    body["logs"] = json!("l".repeat(40_000));
    post_signed(&daemon, "msg_teams_1", &serde_json::to_vec(&body).unwrap()).await;
    let rows = wait_deliveries(&dir.path().join("relay.db"), Duration::from_secs(10), |r| {
        r.iter().any(|l| {
            matches!(
                l.delivery.state,
                DeliveryState::Delivered | DeliveryState::Dead
            )
        })
    })
    .await;
    assert_eq!(rows[0].delivery.state, DeliveryState::Delivered, "{rows:?}");
    let posts = flow.0.lock().unwrap().clone();
    let card = &posts[0]["attachments"][0]["content"];
    let title = &card["body"][0]["inlines"][0];
    assert_eq!(card["body"][0]["type"], "RichTextBlock", "shown as written");
    assert!(
        title["text"]
            .as_str()
            .unwrap()
            .starts_with("❌ Training pixelforge/flux-lora-trainer (“PETPX”) failed"),
        "{title}"
    );
    assert_eq!(title["color"], "Attention");
    let text = card.to_string();
    assert!(
        text.contains("no images found") && text.contains("g2k4m6o8r0rm80ckxvje6q8s0w"),
        "{text}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_wrong_signature_is_dead_at_once_with_the_flows_reason() {
    let (url, flow) = flow().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &config(dir.path(), &format!("{url}&sig=expired")),
        Arc::new(SystemClock),
    )
    .await;
    post_signed(
        &daemon,
        "msg_teams_2",
        &fixture("prediction-succeeded.json"),
    )
    .await;
    let rows = wait_deliveries(&dir.path().join("relay.db"), Duration::from_secs(10), |r| {
        r.iter().any(|l| l.delivery.state == DeliveryState::Dead)
    })
    .await;
    assert_eq!(rows[0].delivery.state, DeliveryState::Dead, "{rows:?}");
    assert_eq!(rows[0].delivery.attempts, 1, "not retried");
    let error = rows[0].delivery.last_error.clone().unwrap();
    assert!(
        error.contains("HTTP 401") && error.contains("DirectApiAuthorizationRequired"),
        "{error}"
    );
    assert!(
        !error.contains("sig="),
        "the signature never appears: {error}"
    );
    assert!(flow.0.lock().unwrap().is_empty());
    daemon.stop().await;
}
