//! The ntfy notifier end to end: the real daemon publishing to a loopback
//! stand-in that checks what ntfy checks — JSON published to the server's
//! root, a valid topic, a priority of 1–5, tags as strings, a message within
//! 4,096 bytes, and the access token of a protected topic — and answers as
//! ntfy answers, errors included.

use std::sync::Arc;
use std::time::Duration;

use crate::common::stand_ins::ntfy::{self, Published, TOKEN};
use crate::common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::store::DeliveryState;
use serde_json::{Value, json};

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
    let (server, published) = ntfy::start().await;
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
    // The status emoji is the title's; no tag is an emoji short code,
    // which ntfy would show before it a second time.
    assert_eq!(training["tags"], json!(["training", "failed", "replicate"]));
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
    let (server, published) = ntfy::start().await;
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
