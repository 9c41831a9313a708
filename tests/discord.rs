//! The Discord notifier end to end: the real daemon posting to a loopback
//! stand-in for a channel webhook that checks what Discord checks — the
//! webhook's id and token, a JSON body, no mentions allowed, and the embed
//! limits (2,000 characters of content, 10 embeds, 256 of title, 4,096 of
//! description, 25 fields of 256/1,024, 6,000 in all) — and answers as
//! Discord answers: 204, 429 with `retry_after`, 401, 400.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::store::DeliveryState;
use serde_json::{Value, json};
use warp::Filter;
use warp::http::StatusCode;

const ID: &str = "1180000000000000001";
const TOKEN: &str = "good-token_x";

#[derive(Clone, Default)]
struct Channel {
    posts: Arc<Mutex<Vec<(Instant, Value)>>>,
    /// How many 429s to answer before accepting.
    limited: Arc<Mutex<usize>>,
}

fn error(status: StatusCode, code: u32, message: &str) -> warp::reply::Response {
    use warp::Reply;
    let mut res = warp::reply::with_status(
        warp::reply::json(&json!({"message": message, "code": code})),
        status,
    )
    .into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        res = warp::reply::with_status(
            warp::reply::json(&json!({"message": "You are being rate limited.", "retry_after": 1.2, "global": false})),
            status,
        )
        .into_response();
        res.headers_mut()
            .insert("retry-after", warp::http::HeaderValue::from_static("2"));
    }
    res
}

fn len(v: Option<&Value>) -> usize {
    v.and_then(Value::as_str).map_or(0, |s| s.chars().count())
}

/// Why Discord would refuse `body`, if it would.
fn invalid(body: &Value) -> Option<&'static str> {
    if body.get("allowed_mentions") != Some(&json!({"parse": []})) {
        return Some("mentions allowed"); // not Discord's rule: ours, checked here
    }
    if len(body.get("content")) > 2_000 {
        return Some("content");
    }
    let embeds = body
        .get("embeds")
        .and_then(Value::as_array)
        .map_or(&[][..], |e| e.as_slice());
    if embeds.len() > 10 || (embeds.is_empty() && len(body.get("content")) == 0) {
        return Some("embeds");
    }
    let mut total = 0;
    for e in embeds {
        let fields = e
            .get("fields")
            .and_then(Value::as_array)
            .map_or(&[][..], |f| f.as_slice());
        if len(e.get("title")) > 256 || len(e.get("description")) > 4_096 || fields.len() > 25 {
            return Some("embed");
        }
        for f in fields {
            let (n, v) = (len(f.get("name")), len(f.get("value")));
            if n == 0 || n > 256 || v == 0 || v > 1_024 {
                return Some("field");
            }
            total += n + v;
        }
        total += len(e.get("title")) + len(e.get("description")) + len(e.pointer("/footer/text"));
    }
    (total > 6_000).then_some("total")
}

async fn channel() -> (String, Channel) {
    use warp::Reply;
    let channel = Channel::default();
    let c = channel.clone();
    let route = warp::post()
        .and(warp::path!("api" / "webhooks" / String / String))
        .and(warp::body::bytes())
        .map(move |id: String, token: String, body: bytes::Bytes| {
            if id != ID {
                return error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
            }
            if token != TOKEN {
                return error(StatusCode::UNAUTHORIZED, 50027, "Invalid Webhook Token");
            }
            let Ok(body) = serde_json::from_slice::<Value>(&body) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    50109,
                    "The request body contains invalid JSON.",
                );
            };
            if let Some(why) = invalid(&body) {
                return error(
                    StatusCode::BAD_REQUEST,
                    50035,
                    &format!("Invalid Form Body ({why})"),
                );
            }
            {
                let mut limited = c.limited.lock().unwrap();
                if *limited > 0 {
                    *limited -= 1;
                    c.posts.lock().unwrap().push((Instant::now(), Value::Null));
                    return error(StatusCode::TOO_MANY_REQUESTS, 0, "");
                }
            }
            c.posts.lock().unwrap().push((Instant::now(), body));
            StatusCode::NO_CONTENT.into_response()
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://{addr}/api/webhooks/{ID}"), channel)
}

/// A template that writes far past every limit, so only the relay's cutting
/// keeps the post acceptable.
const LONG: &str = r#"{"content": "{{error}}", "embeds": [{"title": "{{error}}", "description": "{{logs}}",
 "fields": [{"name": "{{error}}", "value": "{{logs}}"}, {"name": "Status", "value": "{{status}}"}, {"name": "", "value": ""}],
 "footer": {"text": "{{id}} {{logs}}"}}]}"#;

fn config(dir: &std::path::Path, webhook: &str, template: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("discord-webhook"), webhook).unwrap();
    std::fs::create_dir_all(dir.join("templates/discord")).unwrap();
    std::fs::write(dir.join("templates/discord/long.json.hbs"), LONG).unwrap();
    write_config(
        dir,
        SECRET,
        &format!(
            "[templates]\ndir = \"templates\"\n\n\
             [notifiers.chat]\ntype = \"discord\"\nwebhook_url_file = \"discord-webhook\"\nusername = \"Replicate relay\"\ntemplate = \"{template}\"\n\n\
             [[routes]]\nname = \"everything\"\nnotify = [\"chat\"]\n"
        ),
    )
}

#[tokio::test]
async fn a_failure_arrives_as_a_red_embed_after_a_429_is_honoured() {
    let (base, channel) = channel().await;
    *channel.limited.lock().unwrap() = 1;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &config(dir.path(), &format!("{base}/{TOKEN}"), "default"),
        Arc::new(SystemClock),
    )
    .await;
    let mut body: Value = serde_json::from_slice(&fixture("prediction-failed.json")).unwrap();
    // Long enough to break every limit unless cut; and a prompt that tries
    // to ping everyone.
    body["error"] = json!("e".repeat(5_000));
    body["logs"] = json!("l".repeat(9_000));
    body["input"]["prompt"] = json!("@everyone look");
    post_signed(
        &daemon,
        "msg_discord_1",
        &serde_json::to_vec(&body).unwrap(),
    )
    .await;
    let rows = wait_deliveries(&dir.path().join("relay.db"), Duration::from_secs(15), |r| {
        r.iter()
            .all(|l| l.delivery.state == DeliveryState::Delivered)
            && !r.is_empty()
    })
    .await;
    assert_eq!(rows[0].delivery.state, DeliveryState::Delivered, "{rows:?}");
    assert_eq!(rows[0].delivery.attempts, 2);
    let posts = channel.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 2);
    let waited = posts[1].0 - posts[0].0;
    assert!(
        waited >= Duration::from_millis(1_200),
        "retry_after honoured: {waited:?}"
    );
    let post = &posts[1].1;
    assert_eq!(post["username"], "Replicate relay");
    let embed = &post["embeds"][0];
    assert_eq!(embed["color"], 0xE01E5A, "red for a failure");
    assert!(
        embed["title"]
            .as_str()
            .unwrap()
            .contains("northwind/captioner-prod failed")
    );
    assert_eq!(
        embed["url"],
        "https://replicate.com/p/w2ax6h0gbsrmc0ckxvat5c3kfe"
    );
    assert!(
        embed["footer"]["text"]
            .as_str()
            .unwrap()
            .contains("w2ax6h0gbsrmc0ckxvat5c3kfe")
    );
    let metrics = reqwest::get(format!("{}/metrics", daemon.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "relay_rate_limited_total{notifier=\"chat\"} 1"),
        "the pause is counted, whatever the kind: {metrics}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_wrong_token_is_dead_at_once_with_discords_reason() {
    let (base, channel) = channel().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &config(dir.path(), &format!("{base}/stale-token"), "default"),
        Arc::new(SystemClock),
    )
    .await;
    post_signed(
        &daemon,
        "msg_discord_2",
        &fixture("training-succeeded.json"),
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
        error.contains("HTTP 401") && error.contains("Invalid Webhook Token"),
        "{error}"
    );
    assert!(
        !error.contains("stale-token"),
        "the token never appears: {error}"
    );
    assert!(channel.posts.lock().unwrap().is_empty());
    daemon.stop().await;
}

#[tokio::test]
async fn a_template_far_past_every_limit_is_cut_to_fit() {
    let (base, channel) = channel().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &format!("{base}/{TOKEN}"), "long");
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    let mut body: Value = serde_json::from_slice(&fixture("prediction-failed.json")).unwrap();
    body["error"] = json!("e".repeat(5_000));
    body["logs"] = json!("l".repeat(9_000));
    post_signed(
        &daemon,
        "msg_discord_3",
        &serde_json::to_vec(&body).unwrap(),
    )
    .await;
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
    let posts = channel.posts.lock().unwrap().clone();
    let post = &posts[0].1;
    assert_eq!(invalid(post), None);
    assert_eq!(post["content"].as_str().unwrap().chars().count(), 2_000);
    let fields = post["embeds"][0]["fields"].as_array().unwrap();
    assert!(
        fields.iter().any(|f| f["value"] == "failed"),
        "the status field stays"
    );
    daemon.stop().await;
}
