//! The Discord notifier end to end: the real daemon posting to a loopback
//! stand-in for a channel webhook that checks what Discord checks — the
//! webhook's id and token, a JSON body, no mentions allowed, and the embed
//! limits (2,000 characters of content, 10 embeds, 256 of title, 4,096 of
//! description, 25 fields of 256/1,024, 6,000 in all) — and answers as
//! Discord answers: 204, 429 with `retry_after`, 401, 400.

use std::sync::Arc;
use std::time::Duration;

use crate::common::stand_ins::discord::{self, TOKEN, invalid};
use crate::common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::store::DeliveryState;
use serde_json::{Value, json};

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
    let (base, channel) = discord::start().await;
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
    let (base, channel) = discord::start().await;
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
    let (base, channel) = discord::start().await;
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
