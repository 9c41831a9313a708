//! The Teams notifier end to end: the real daemon posting to a loopback
//! stand-in for a Workflows webhook that checks what the workflow checks —
//! its signature in the query, a message with one Adaptive Card attachment,
//! and the size limit — and answers 202, or 401 as a wrong signature gets.

use std::sync::Arc;
use std::time::Duration;

use crate::common::stand_ins::teams::{self, SIG};
use crate::common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::store::DeliveryState;
use serde_json::{Value, json};

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
    let (url, flow) = teams::start().await;
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
    let (url, flow) = teams::start().await;
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
