//! The PagerDuty notifier end to end: the real daemon sending Events API v2
//! events to a loopback stand-in that checks what PagerDuty checks — the
//! routing key, the action, the dedup key, and for a trigger a summary
//! (at most 1,024 characters), a source and a severity — and keeps the
//! incidents those events open and resolve.

use std::sync::Arc;
use std::time::Duration;

use crate::common::stand_ins::pagerduty::{self, KEY};
use crate::common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::store::DeliveryState;
use serde_json::{Value, json};

fn config(dir: &std::path::Path, url: &str, key: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("pd-key"), key).unwrap();
    write_config(
        dir,
        SECRET,
        &format!(
            "[notifiers.oncall]\ntype = \"pagerduty\"\nrouting_key_file = \"pd-key\"\nseverity = \"critical\"\nurl = \"{url}\"\n\n\
             [[routes]]\nname = \"everything\"\nnotify = [\"oncall\"]\n"
        ),
    )
}

#[tokio::test]
async fn a_failure_opens_an_incident_keyed_by_the_job_and_its_success_resolves_it() {
    let (url, service) = pagerduty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&config(dir.path(), &url, KEY), Arc::new(SystemClock)).await;
    let mut failed: Value = serde_json::from_slice(&payload("p_pd_1", "failed")).unwrap();
    failed["error"] = json!("x".repeat(3_000));
    post_signed(&daemon, "msg_pd_1", &serde_json::to_vec(&failed).unwrap()).await;
    for _ in 0..100 {
        if !service.events.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        service.incidents.lock().unwrap().get("p_pd_1"),
        Some(&"triggered")
    );
    post_signed(&daemon, "msg_pd_2", &payload("p_pd_1", "succeeded")).await;
    let rows = wait_deliveries(&dir.path().join("relay.db"), Duration::from_secs(10), |r| {
        r.len() == 2
            && r.iter()
                .all(|l| l.delivery.state == DeliveryState::Delivered)
    })
    .await;
    assert!(
        rows.iter()
            .all(|l| l.delivery.state == DeliveryState::Delivered),
        "{rows:?}"
    );
    let events = service.events.lock().unwrap().clone();
    assert_eq!(events.len(), 2);
    let trigger = &events[0];
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["source"], "acme/test-model");
    assert!(
        trigger["payload"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("❌ Prediction acme/test-model (“a test”) failed: xxx")
    );
    assert_eq!(
        trigger["links"][0]["href"],
        "https://replicate.com/p/p_pd_1"
    );
    assert_eq!(events[1]["event_action"], "resolve");
    assert_eq!(events[1]["dedup_key"], "p_pd_1", "one incident per job");
    assert_eq!(
        service.incidents.lock().unwrap().get("p_pd_1"),
        Some(&"resolved")
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_wrong_routing_key_is_dead_at_once_with_pagerdutys_reason() {
    let (url, service) = pagerduty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &config(dir.path(), &url, "WR0NGKEYWR0NGKEYWR0NGKEYWR0NGKEY"),
        Arc::new(SystemClock),
    )
    .await;
    post_signed(&daemon, "msg_pd_3", &payload("p_pd_3", "failed")).await;
    let rows = wait_deliveries(&dir.path().join("relay.db"), Duration::from_secs(10), |r| {
        r.iter().any(|l| l.delivery.state == DeliveryState::Dead)
    })
    .await;
    assert_eq!(rows[0].delivery.state, DeliveryState::Dead, "{rows:?}");
    assert_eq!(rows[0].delivery.attempts, 1, "not retried");
    let error = rows[0].delivery.last_error.clone().unwrap();
    assert!(
        error.contains("HTTP 400") && error.contains("Invalid routing key"),
        "{error}"
    );
    assert!(
        !error.contains("WR0NGKEY"),
        "the key never appears: {error}"
    );
    assert!(service.events.lock().unwrap().is_empty());
    daemon.stop().await;
}
