//! The fault suite: the store's disk fills up or turns read-only mid-run, Slack
//! fails in every way it can. Intake answers 503 (never 2xx) while the store is
//! unwritable and recovers by itself; nothing acknowledged is lost; nothing is
//! sent to Slack before its Retry-After.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::common::root::{Immutable, SmallDisk, root_or_skip};
use crate::common::stand_ins::*;
use crate::common::*;
use replicate_relay::clock::SystemClock;

async fn post_status(daemon: &Daemon, webhook_id: &str, body: &[u8]) -> u16 {
    let headers = signed(SECRET, webhook_id, now(), body);
    post(
        &reqwest::Client::new(),
        &daemon.hook_url(),
        &headers,
        body.to_vec(),
    )
    .await
    .0
}

#[tokio::test]
async fn a_full_disk_answers_503_and_recovers_when_space_returns() {
    if !root_or_skip(
        "a_full_disk_answers_503_and_recovers_when_space_returns",
        "a small tmpfs",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(dir.path(), "4m");
    let config = write_config(dir.path(), SECRET, "");
    let text = std::fs::read_to_string(&config).unwrap();
    let store = disk.0.join("relay.db");
    std::fs::write(
        &config,
        text.replace(
            "path = \"relay.db\"",
            &format!("path = \"{}\"", store.display()),
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;

    // Fill the disk, leaving a little room.
    let filler = disk.0.join("filler");
    let status = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", filler.display()),
            "bs=64k",
            "count=1000",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "dd stops when the disk is full");
    // Free 200 KB so the daemon starts writing, then runs out.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .and_then(|f| {
            let len = f.metadata()?.len();
            f.set_len(len.saturating_sub(200 * 1024))
        });

    // Post bigger and bigger events until the store is full.
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let mut body: serde_json::Value =
            serde_json::from_slice(&payload(&format!("p_full_{i}"), "succeeded")).unwrap();
        body["logs"] = serde_json::json!("x".repeat(20_000));
        let body = serde_json::to_vec(&body).unwrap();
        match post_status(&daemon, &format!("msg_full_{i}"), &body).await {
            200 => acknowledged.push(format!("msg_full_{i}")),
            503 => {
                refused = Some((i, body));
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let (i, body) = refused.expect("the disk filled up and intake said 503");
    let res = reqwest::get(format!("{}/healthz", daemon.base))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 503, "health shows the failing store");

    // Space comes back: health says so with no webhook sent, and the same
    // webhook, retried, is stored.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        wait_healthy(&daemon, Duration::from_secs(15)).await,
        200,
        "healthy again once there is space"
    );
    assert_eq!(
        post_status(&daemon, &format!("msg_full_{i}"), &body).await,
        200
    );
    acknowledged.push(format!("msg_full_{i}"));
    let stored = daemon.running.store().recent(1000).await.unwrap();
    for id in &acknowledged {
        assert!(stored.iter().any(|e| &e.webhook_id == id), "{id} lost");
    }
    daemon.stop().await;
}

#[tokio::test]
async fn a_store_made_read_only_mid_run_answers_503_then_recovers() {
    if !root_or_skip(
        "a_store_made_read_only_mid_run_answers_503_then_recovers",
        "chattr +i",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&write_config(dir.path(), SECRET, ""), Arc::new(SystemClock)).await;
    assert_eq!(
        post_status(&daemon, "msg_ro_1", &payload("p_ro_1", "failed")).await,
        200
    );

    let db = dir.path().join("relay.db");
    let wal = dir.path().join("relay.db-wal");
    let frozen = Immutable::set(&[db.clone(), wal.clone()]);
    let body = payload("p_ro_2", "failed");
    assert_eq!(
        post_status(&daemon, "msg_ro_2", &body).await,
        503,
        "never 2xx while unwritable"
    );
    drop(frozen);

    assert_eq!(
        post_status(&daemon, "msg_ro_2", &body).await,
        200,
        "recovers when writable"
    );
    let ids: Vec<String> = daemon
        .running
        .store()
        .recent(10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.webhook_id)
        .collect();
    assert_eq!(ids, ["msg_ro_2", "msg_ro_1"]);
    daemon.stop().await;
}

#[tokio::test]
async fn slack_500s_then_429_then_200_delivers_once_and_honours_retry_after() {
    let slack = SlackStandIn::start().await;
    slack.plan(&[
        SlackAnswer::Status(500),
        SlackAnswer::Status(502),
        SlackAnswer::RateLimited { retry_after: 3 },
    ]);
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[notifiers.n]\ntype = \"slack\"\ntoken = \"{SLACK_TOKEN}\"\nchannel = \"#ml\"\napi_url = \"{}\"\n\n[[routes]]\nname = \"all\"\nnotify = [\"n\"]\n",
        slack.api_url()
    );
    let daemon = Daemon::start(
        &write_config(dir.path(), SECRET, &extra),
        Arc::new(SystemClock),
    )
    .await;
    assert_eq!(
        post_status(&daemon, "msg_f1", &fixture("training-failed.json")).await,
        200
    );
    let got = slack.wait_for(4, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got[2].answer.contains("ratelimited"));
    let gap = got[3].at - got[2].at;
    assert!(
        gap >= Duration::from_secs(3),
        "sent {gap:?} after a 429 with Retry-After: 3"
    );
    assert!(got[3].answer.contains("\"ok\":true"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        slack.requests().len(),
        4,
        "delivered once, then nothing more"
    );
    daemon.stop().await;
}
