//! Delivery end to end: the real daemon, a Slack Web API stand-in, a webhook
//! receiver that verifies signatures, and a real SMTP server (`common::smtp`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::smtp::SmtpServer;
use crate::common::stand_ins::*;
use crate::common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::store::DeliveryState;

mod attempts;
mod email;

const ALL_FINAL: &str = "[[routes]]\nname = \"everything\"\nnotify = [\"n\"]\n";

fn slack_config(api_url: &str) -> String {
    format!(
        "[notifiers.n]\ntype = \"slack\"\ntoken = \"{SLACK_TOKEN}\"\nchannel = \"#ml-alerts\"\napi_url = \"{api_url}\"\n\n{ALL_FINAL}"
    )
}

async fn start(dir: &std::path::Path, extra: &str) -> Daemon {
    Daemon::start(&write_config(dir, SECRET, extra), Arc::new(SystemClock)).await
}

fn states(rows: &[replicate_relay::store::Listed]) -> Vec<DeliveryState> {
    rows.iter().map(|l| l.delivery.state).collect()
}

/// The outbox of the store at `db` once it holds one delivered delivery (or
/// whatever it holds after 5 s).
async fn one_delivered(db: &Path) -> Vec<replicate_relay::store::Listed> {
    wait_deliveries(db, Duration::from_secs(5), |r| {
        states(r) == [DeliveryState::Delivered]
    })
    .await
}

#[tokio::test]
async fn slack_gets_the_block_kit_message_with_token_and_channel() {
    let slack = SlackStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), &slack_config(&slack.api_url())).await;
    post_signed(&daemon, "msg_slack_1", &fixture("prediction-failed.json")).await;

    let got = slack.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].answer.contains("\"ok\":true"), "{}", got[0].answer);
    let body = &got[0].body;
    assert_eq!(body["channel"], "#ml-alerts");
    assert_eq!(
        body["text"],
        "❌ Prediction northwind/captioner-prod failed: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 22.19 GiB of which 1.12 GiB is free."
    );
    assert_eq!(body["blocks"][0]["type"], "header");
    let rows = one_delivered(&dir.path().join("relay.db")).await;
    assert_eq!(states(&rows), [DeliveryState::Delivered]);
    daemon.stop().await;
}

/// Prompts and errors are full of `*`, `_` and code fences; in Slack they
/// must read as written, never as formatting.
#[tokio::test]
async fn slack_shows_user_text_as_written() {
    let slack = SlackStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), &slack_config(&slack.api_url())).await;
    let mut payload: serde_json::Value =
        serde_json::from_slice(&fixture("prediction-failed.json")).unwrap();
    let prompt = "*bold* _it_ ~s~ ``` <!channel>";
    let error = "boom ```\n*not bold*";
    payload["input"]["prompt"] = serde_json::json!(prompt);
    payload["error"] = serde_json::json!(error);
    post_signed(
        &daemon,
        "msg_literal",
        &serde_json::to_vec(&payload).unwrap(),
    )
    .await;

    let got = slack.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].answer.contains("\"ok\":true"), "{}", got[0].answer);
    let body = &got[0].body;
    let mut texts = Vec::new();
    replicate_relay::render::message::strings(body, &mut texts);
    assert!(
        texts.contains(&"*bold* _it_ ~s~ ``` <\u{200B}!channel>".to_owned()),
        "the prompt as written, its mention inert: {texts:?}"
    );
    assert!(texts.contains(&error.to_owned()), "{texts:?}");
    let raw = body.to_string();
    assert!(!raw.contains("<!channel>"), "{raw}");
    daemon.stop().await;
}

/// Slack refuses a message whose image it cannot fetch; Replicate deletes an
/// API job's files after an hour, so a late retry must still arrive.
#[tokio::test]
async fn slack_gets_the_message_without_images_it_cannot_fetch() {
    let slack = SlackStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), &slack_config(&slack.api_url())).await;
    let mut payload: serde_json::Value =
        serde_json::from_slice(&fixture("prediction-succeeded-object.json")).unwrap();
    payload["output"] = serde_json::json!([
        "https://replicate.delivery/expired/out-0.png",
        "https://replicate.delivery/expired/out-1.png"
    ]);
    post_signed(
        &daemon,
        "msg_images",
        &serde_json::to_vec(&payload).unwrap(),
    )
    .await;

    let got = slack.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].answer.contains("invalid_blocks"),
        "{}",
        got[0].answer
    );
    let images = |b: &serde_json::Value| {
        b["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "image")
            .count()
    };
    assert_eq!(images(&got[0].body), 2, "first with the images");
    assert_eq!(images(&got[1].body), 0, "then without");
    assert!(got[1].answer.contains("\"ok\":true"), "{}", got[1].answer);
    assert!(
        got[1].body.to_string().contains("out-0.png"),
        "the links stay"
    );
    let rows = one_delivered(&dir.path().join("relay.db")).await;
    assert_eq!(states(&rows), [DeliveryState::Delivered]);
    daemon.stop().await;
}

#[tokio::test]
async fn slack_429_is_honoured_before_anything_else_is_sent() {
    let slack = SlackStandIn::start().await;
    slack.plan(&[SlackAnswer::RateLimited { retry_after: 2 }]);
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), &slack_config(&slack.api_url())).await;
    post_signed(&daemon, "msg_429", &fixture("training-succeeded.json")).await;

    let got = slack.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].answer.contains("ratelimited"));
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "second request after only {gap:?}"
    );
    assert!(got[1].answer.contains("\"ok\":true"));
    let rows = one_delivered(&dir.path().join("relay.db")).await;
    assert_eq!(rows[0].delivery.attempts, 2);
    daemon.stop().await;
}

#[tokio::test]
async fn slack_500_then_200_is_delivered() {
    let slack = SlackStandIn::start().await;
    slack.plan(&[SlackAnswer::Status(500)]);
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), &slack_config(&slack.api_url())).await;
    post_signed(&daemon, "msg_500", &fixture("prediction-succeeded.json")).await;
    let got = slack.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 2);
    let rows = one_delivered(&dir.path().join("relay.db")).await;
    assert_eq!(states(&rows), [DeliveryState::Delivered]);
    daemon.stop().await;
}

#[tokio::test]
async fn slack_channel_not_found_is_dead_at_once_with_the_reason() {
    let slack = SlackStandIn::start().await;
    slack.plan(&[SlackAnswer::Error("channel_not_found")]);
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), &slack_config(&slack.api_url())).await;
    post_signed(&daemon, "msg_dead", &fixture("prediction-failed.json")).await;
    let rows = wait_deliveries(&dir.path().join("relay.db"), Duration::from_secs(10), |r| {
        states(r) == [DeliveryState::Dead]
    })
    .await;
    assert_eq!(states(&rows), [DeliveryState::Dead]);
    let error = rows[0].delivery.last_error.clone().unwrap();
    assert!(error.contains("channel_not_found"), "{error}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(slack.requests().len(), 1, "never retried");
    daemon.stop().await;
}

#[tokio::test]
async fn slack_incoming_webhook_gets_the_message() {
    let slack = SlackStandIn::start().await;
    // The receiver doubles as an incoming-webhook endpoint: it records any POST.
    let hook = WebhookReceiver::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}/services/T000/B000/XXXX", hook.addr);
    let extra = format!("[notifiers.n]\ntype = \"slack\"\nwebhook_url = \"{url}\"\n\n{ALL_FINAL}");
    let daemon = start(dir.path(), &extra).await;
    post_signed(&daemon, "msg_incoming", &fixture("training-failed.json")).await;
    let got = hook.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("Training pixelforge/flux-lora-trainer (“PETPX”) failed: no images found")
    );
    assert!(body["blocks"].is_array());
    assert!(slack.requests().is_empty());
    daemon.stop().await;
}

#[tokio::test]
async fn webhook_notifier_posts_signed_payloads_the_receiver_verifies() {
    const DOWNSTREAM: &str = "whsec_ZG93bnN0cmVhbS1zZXJ2aWNlLXNlY3JldA==";
    let hook = WebhookReceiver::start(DOWNSTREAM).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[notifiers.raw]\ntype = \"webhook\"\nurl = \"http://{0}/pipeline\"\nsecret = \"{DOWNSTREAM}\"\nheaders = {{ \"X-Team\" = \"ml\", \"X-Owner\" = \"Zoë\" }}\n\n\
         [notifiers.summary]\ntype = \"webhook\"\nurl = \"http://{0}/summary\"\nsecret = \"{DOWNSTREAM}\"\ntemplate = \"summary\"\n\n\
         [templates]\ndir = \"{1}/templates\"\n\n\
         [[routes]]\nname = \"trainings\"\nwhen = {{ kind = \"training\" }}\nnotify = [\"raw\", \"summary\"]\n",
        hook.addr,
        env!("CARGO_MANIFEST_DIR"),
    );
    let daemon = start(dir.path(), &extra).await;
    let body = fixture("training-succeeded.json");
    post_signed(&daemon, "msg_hook", &body).await;

    let got = hook.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2);
    for r in &got {
        assert_eq!(r.verified, Ok(()), "signature verifies downstream");
        let id = r.headers.iter().find(|(k, _)| k == "webhook-id").unwrap();
        assert!(id.1.starts_with("msg_relay_"));
    }
    let raw = got
        .iter()
        .find(|r| r.body == body)
        .expect("the original payload, byte for byte");
    assert!(raw.headers.contains(&("x-team".into(), "ml".into())));
    // A value beyond ASCII, which the config accepts, is sent as written.
    assert!(raw.headers.contains(&("x-owner".into(), "Zoë".into())));
    let summary = got.iter().find(|r| r.body != body).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&summary.body).unwrap();
    assert_eq!(v["event"], "replicate.training.succeeded");
    assert_eq!(
        v["trained_version"].as_str().unwrap().split(':').next(),
        Some("harbor-studio/ink-portraits")
    );
    daemon.stop().await;
}

#[tokio::test]
async fn one_final_state_notifies_once_whatever_the_number_of_webhooks() {
    let hook = WebhookReceiver::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[notifiers.n]\ntype = \"webhook\"\nurl = \"http://{}/x\"\n\n{ALL_FINAL}",
        hook.addr
    );
    let daemon = start(dir.path(), &extra).await;
    let body = fixture("prediction-canceled.json");
    // The same final state, carried by three webhooks with different ids.
    for id in ["msg_a", "msg_b", "msg_c"] {
        post_signed(&daemon, id, &body).await;
    }
    let got = hook.wait_for(2, Duration::from_secs(3)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        daemon.running.store().recent(10).await.unwrap().len(),
        3,
        "all three stored"
    );
    daemon.stop().await;
}

/// A store upgraded from schema 2, whose release stored events unrouted
/// and routed them later: the daemon routes such leftovers at start.
#[tokio::test]
async fn an_event_an_earlier_release_left_unrouted_is_routed_at_start() {
    use replicate_relay::event::Kind;
    use replicate_relay::store::sqlite::{SqliteOptions, SqliteStore};
    use replicate_relay::store::{NewEvent, Routing, Store};

    let hook = WebhookReceiver::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let body = fixture("prediction-failed.json");
    let now = replicate_relay::clock::now_ms();
    store
        .insert(NewEvent {
            webhook_id: "msg_before_upgrade".into(),
            object_id: "u72tyaj9ypswr8wk48hjmhzjnz".into(),
            kind: Kind::Prediction,
            status: replicate_relay::event::Status::Failed,
            model: None,
            query: String::new(),
            body: body.clone().into(),
            received_at_ms: now,
            routing: Routing {
                lifecycle: None,
                groups: Vec::new(),
                after: Vec::new(),
                dedup_key: "webhook:msg_before_upgrade".into(),
                deliveries: Vec::new(),
                expires_at_ms: now,
            },
        })
        .await
        .unwrap();
    store.close().await;
    drop(store);
    // What that release left: the event, never routed.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE events SET routed_at_ms = NULL", [])
        .unwrap();

    let extra = format!(
        "[notifiers.n]\ntype = \"webhook\"\nurl = \"http://{}/x\"\n\n{ALL_FINAL}",
        hook.addr
    );
    let daemon = start(dir.path(), &extra).await;
    let got = hook.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body);
    daemon.stop().await;
}

#[tokio::test]
async fn a_send_interrupted_by_a_crash_is_retried_after_restart() {
    let hook = WebhookReceiver::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    // Route an event with nowhere reachable, then stop before it is sent.
    let unreachable = format!(
        "[notifiers.n]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{}/x\"\n\n{ALL_FINAL}",
        free_port()
    );
    let daemon = start(dir.path(), &unreachable).await;
    post_signed(&daemon, "msg_crash", &fixture("training-failed.json")).await;
    let db = dir.path().join("relay.db");
    wait_deliveries(&db, Duration::from_secs(5), |r| !r.is_empty()).await;
    daemon.stop().await;
    // As if the daemon died mid-send: the delivery is claimed (`sending`).
    let mut conn = replicate_relay::store::sqlite::open_for_cli(&db).unwrap();
    conn.execute("UPDATE deliveries SET next_attempt_at_ms = 0", [])
        .unwrap();
    let claimed =
        replicate_relay::store::sqlite::outbox::claim(&mut conn, "n", i64::MAX, 10).unwrap();
    assert_eq!(claimed.len(), 1);
    drop(conn);

    let reachable = format!(
        "[notifiers.n]\ntype = \"webhook\"\nurl = \"http://{}/x\"\n\n{ALL_FINAL}",
        hook.addr
    );
    let daemon = start(dir.path(), &reachable).await;
    let got = hook.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "sent after the restart");
    let rows = one_delivered(&db).await;
    assert_eq!(states(&rows), [DeliveryState::Delivered]);
    daemon.stop().await;
}

/// A notifier removed by a reload: its deliveries are held, not dead; `check`
/// and `deliveries --held` say so; a reload that brings a notifier of that
/// name back sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_notifiers_deliveries_are_held_until_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    // Nobody listens yet: the first attempts fail and are retried.
    let port = free_port();
    let with = |port: u16| {
        format!(
            "[notifiers.n]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/in\"\n\n{ALL_FINAL}"
        )
    };
    let daemon = start(dir.path(), &with(port)).await;
    let db = dir.path().join("relay.db");
    post_signed(&daemon, "msg_held", &fixture("prediction-failed.json")).await;
    let rows = wait_deliveries(&db, Duration::from_secs(5), |r| {
        r.first().is_some_and(|l| l.delivery.last_error.is_some())
    })
    .await;
    assert_eq!(rows[0].delivery.state, DeliveryState::Pending);

    // Reloaded without it: held.
    let without = write_config(dir.path(), SECRET, "");
    let config = replicate_relay::config::load_with_env(&without, []).unwrap();
    daemon.running.reload(config).unwrap();
    let rows = wait_deliveries(&db, Duration::from_secs(5), |r| {
        r.first()
            .is_some_and(|l| l.delivery.state == DeliveryState::Held)
    })
    .await;
    assert_eq!(rows[0].delivery.state, DeliveryState::Held, "{rows:?}");
    let said = run_relay(&["check"], &without);
    assert!(
        said.contains("1 deliveries wait for notifier `n`, which is not in this config"),
        "{said}"
    );
    let listed = run_relay(&["deliveries", "--held"], &without);
    assert!(
        listed.contains("held") && listed.contains("when its notifier is back"),
        "{listed}"
    );

    // A notifier of that name is back, and listening: sent.
    let hook = WebhookReceiver::start(SECRET).await;
    let back = write_config(dir.path(), SECRET, &with(hook.addr.port()));
    let config = replicate_relay::config::load_with_env(&back, []).unwrap();
    daemon.running.reload(config).unwrap();
    assert_eq!(hook.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    let rows = one_delivered(&db).await;
    assert_eq!(states(&rows), [DeliveryState::Delivered]);
    daemon.stop().await;
}
