//! The property "a 2xx means delivered", over generated bodies: whatever the
//! intake accepts, delivery reads as the same job, and every notifier kind
//! renders a message naming its id and status (`support/rule.rs`).
//!
//! `RULE_SEED` replays one run, `RULE_CASES` sets how many bodies it tries.
//! Then the same classes of body end to end: answered 2xx by the real daemon
//! and delivered, and those an earlier build left dead delivered by
//! `retry --dead`.

use crate::common::rule;
use std::sync::Arc;
use std::time::Duration;

use crate::common::smtp::SmtpServer;
use crate::common::stand_ins::{SLACK_TOKEN, SlackStandIn, WebhookReceiver, free_port};
use crate::common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::event::json::TOO_DEEP;
use replicate_relay::store::sqlite::{SqliteOptions, SqliteStore};
use replicate_relay::store::{DeliveryState, NewEvent, Outcome, Routing, Store};
use serde_json::{Value, json};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn shipped() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")
}

#[test]
fn whatever_the_intake_accepts_every_notifier_kind_renders_naming_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let config = rule::config(dir.path(), &shipped());
    let seed = env_or("RULE_SEED", 0x5eed_2026);
    let cases = env_or("RULE_CASES", 1_500);
    let mut rng = rule::Rng::new(seed);
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..cases {
        let body = rule::body(&mut rng);
        let query = if rng.one_in(5) {
            "kind=training&team=ml"
        } else {
            ""
        };
        match rule::check(&config, body.as_bytes(), query) {
            Ok(true) => accepted += 1,
            Ok(false) => refused += 1,
            Err(why) => panic!(
                "case {case} (RULE_SEED={seed}): {why}\nbody: {}",
                &body[..body.len().min(2_000)]
            ),
        }
    }
    // The generator must mostly make bodies the intake takes, or the
    // property says little; and it does break some on purpose.
    assert!(accepted > cases * 8 / 10, "{accepted} accepted of {cases}");
    assert!(refused > 0, "none refused of {cases}");
}

/// The classes of body that once broke the rule, each checked by name.
#[test]
fn the_bodies_that_broke_the_rule_hold_it_now() {
    let dir = tempfile::tempdir().unwrap();
    let config = rule::config(dir.path(), &shipped());
    let deep = |levels: usize| format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
    let base = r#""id":"pgk3v2anxhrmc0ckvb8v5ydq3w","status":"failed","model":"acme/m""#;
    for (name, extra) in [
        ("deep input", format!(r#""input":{{"x":{}}}"#, deep(300))),
        ("deep output", format!(r#""output":{}"#, deep(300))),
        (
            "lone surrogate in logs",
            r#""logs":"loss \udc00 0.2""#.to_owned(),
        ),
        (
            "lone surrogate in input",
            r#""input":{"prompt":"\ud800 a cat"}"#.to_owned(),
        ),
        (
            "number out of range in input",
            r#""input":{"seed":1e400}"#.to_owned(),
        ),
        (
            "lone surrogate in a key",
            r#""input":{"\udc00":1}"#.to_owned(),
        ),
    ] {
        let body = format!("{{{base},{extra}}}");
        assert_eq!(
            rule::check(&config, body.as_bytes(), ""),
            Ok(true),
            "{name}"
        );
    }
    // Dates and durations at their limits: a 2xx must still render, with
    // what is out of range shown as received.
    for (name, extra) in rule::EDGE_TIMES {
        let body = format!("{{{base},{extra}}}");
        assert_eq!(
            rule::check(&config, body.as_bytes(), ""),
            Ok(true),
            "{name}"
        );
    }
    // Found by the fuzz target: a status with a CR was accepted, and mail
    // (which carries no bare CR) then showed another status. A control
    // character in `id` or `status` is refused now, before the 2xx.
    for body in [
        r#"{"id":"pgk3v2anxhrmc0ckxv","status":"abo\rted"}"#,
        r#"{"id":"pgk3v2\u0000anxhrm","status":"failed"}"#,
    ] {
        assert_eq!(
            rule::check(&config, body.as_bytes(), ""),
            Ok(false),
            "{body}"
        );
    }
}

/// `[[…[leaf]…]]` with `levels` lists.
fn nested(levels: usize, leaf: &str) -> String {
    format!("{}{leaf}{}", "[".repeat(levels), "]".repeat(levels))
}

/// A failed prediction's body with `extra` fields.
fn failed_body(id: &str, extra: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","status":"failed","model":"acme/captioner","error":"CUDA out of memory","urls":{{"get":"https://api.replicate.com/v1/predictions/{id}"}},{extra}}}"#
    )
    .into_bytes()
}

/// The webhook template the end-to-end tests read fields back through.
const FIELDS: &str = r#"{"id": "{{id}}", "status": "{{status}}", "input": {{{json input}}},
 "output": {{{json output}}}, "logs_tail": {{{json logs_tail}}}, "error": {{{json error_message}}}}"#;

/// A config with the Slack stand-in (shipped template), the webhook receiver
/// (the FIELDS template) and the SMTP server (shipped templates), every final
/// job routed to all three.
fn three_notifiers(
    dir: &std::path::Path,
    slack: &SlackStandIn,
    hook: &WebhookReceiver,
    smtp: &SmtpServer,
) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("templates/webhook")).unwrap();
    std::fs::write(dir.join("templates/webhook/fields.json.hbs"), FIELDS).unwrap();
    write_config(
        dir,
        SECRET,
        &format!(
            "[templates]\ndir = \"templates\"\n\n\
             [notifiers.chat]\ntype = \"slack\"\ntoken = \"{SLACK_TOKEN}\"\nchannel = \"#ml\"\napi_url = \"{}\"\n\n\
             [notifiers.hook]\ntype = \"webhook\"\nurl = \"http://{}/\"\nsecret = \"{SECRET}\"\ntemplate = \"fields\"\n\n\
             [notifiers.mail]\ntype = \"email\"\nsmtp = \"smtp://127.0.0.1:{}\"\ntls = \"none\"\nfrom = \"relay@example.org\"\nto = [\"ml@example.org\"]\n\n\
             [[routes]]\nname = \"everything\"\nnotify = [\"chat\", \"hook\", \"mail\"]\n",
            slack.api_url(),
            hook.addr,
            smtp.port
        ),
    )
}

/// Checks what one case's webhook body and Slack text show.
type Shown = Box<dyn Fn(&Value, &str)>;

#[tokio::test]
async fn each_body_of_the_class_is_answered_2xx_and_delivered_with_what_could_be_read() {
    let deep_input = format!("{{\"steps\":1000,\"x\":{}}}", nested(300, "1"));
    let cases: Vec<(&str, String, Shown)> = vec![
        (
            "deepinput",
            format!(r#""input":{deep_input},"logs":"step 1000/1000 loss=0.1842""#),
            Box::new(|hook, _| {
                assert_eq!(hook["input"]["steps"], 1000, "the shallow part is shown");
                assert!(hook["input"]["x"].to_string().contains(TOO_DEEP), "{hook}");
                assert_eq!(hook["logs_tail"], "step 1000/1000 loss=0.1842");
            }),
        ),
        (
            "deepoutput",
            format!(
                r#""output":{{"files":{}}},"input":{{"prompt":"a cat"}}"#,
                nested(200, "\"x\"")
            ),
            Box::new(|hook, slack| {
                assert!(
                    hook["output"]["files"].to_string().contains(TOO_DEEP),
                    "{hook}"
                );
                assert_eq!(hook["input"]["prompt"], "a cat");
                assert!(slack.contains("a cat"), "{slack}");
            }),
        ),
        (
            "surrogatelogs",
            r#""logs":"epoch 3 \udc00\udcff loss=0.2\nTraceback: OOM""#.to_owned(),
            Box::new(|hook, slack| {
                assert_eq!(
                    hook["logs_tail"],
                    "epoch 3 \u{fffd}\u{fffd} loss=0.2\nTraceback: OOM"
                );
                assert!(slack.contains("Traceback: OOM"), "{slack}");
            }),
        ),
        (
            "surrogateinput",
            r#""input":{"prompt":"\ud800 a dog","\udc00":"odd key"}"#.to_owned(),
            Box::new(|hook, slack| {
                assert_eq!(hook["input"]["prompt"], "\u{fffd} a dog");
                assert_eq!(hook["input"]["\u{fffd}"], "odd key");
                assert!(slack.contains("\u{fffd} a dog"), "{slack}");
            }),
        ),
        (
            "terminallogs",
            r#""logs":"  0%|          |\r 50%|#####     |\r100%|##########|\r\n\u0000\u001b[31mTraceback\u001b[0m: OOM","input":{"prompt":"left\rright"}"#
                .to_owned(),
            Box::new(|hook, slack| {
                assert_eq!(hook["logs_tail"], "100%|##########|\nTraceback: OOM");
                assert!(slack.contains("100%|##########|\nTraceback: OOM"), "{slack}");
            }),
        ),
        (
            "hugenumber",
            r#""input":{"prompt":"a bird\r\u0000 in flight","seed":1e400,"scale":-123456789e999,"steps":30}"#
                .to_owned(),
            Box::new(|hook, _| {
                assert_eq!(hook["input"]["seed"], "1e400");
                assert_eq!(hook["input"]["scale"], "-123456789e999");
                assert_eq!(hook["input"]["steps"], 30);
            }),
        ),
    ];
    let slack = SlackStandIn::start().await;
    let hook = WebhookReceiver::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(free_port(), dir.path(), false, false);
    let config = three_notifiers(dir.path(), &slack, &hook, &smtp);
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    for (id, extra, _) in &cases {
        post_signed(&daemon, &format!("msg_{id}"), &failed_body(id, extra)).await;
    }
    let n = cases.len();
    let rows = wait_deliveries(&dir.path().join("relay.db"), Duration::from_secs(20), |r| {
        r.len() == 3 * n
            && r.iter()
                .all(|l| l.delivery.state == DeliveryState::Delivered)
    })
    .await;
    let states: Vec<_> = rows
        .iter()
        .map(|l| (l.delivery.state, l.delivery.last_error.clone()))
        .collect();
    assert!(
        rows.len() == 3 * n
            && rows
                .iter()
                .all(|l| l.delivery.state == DeliveryState::Delivered),
        "{states:?}"
    );
    let hooks = hook.wait_for(n, Duration::from_secs(5)).await;
    let slacks = slack.wait_for(n, Duration::from_secs(5)).await;
    let mails = smtp.wait_for(n, Duration::from_secs(5)).await;
    for (id, _, shown) in &cases {
        let got = hooks
            .iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
            .find(|b| b["id"] == *id)
            .unwrap_or_else(|| panic!("{id} reached the webhook"));
        assert_eq!(got["status"], "failed");
        assert_eq!(got["error"], "CUDA out of memory");
        let message = slacks
            .iter()
            .map(|r| r.body.to_string())
            .find(|b| b.contains(id))
            .unwrap_or_else(|| panic!("{id} reached Slack"));
        let text: Value = serde_json::from_str(&message).unwrap();
        let mut all = Vec::new();
        replicate_relay::render::message::strings(&text, &mut all);
        let slack_text = all.join("\n");
        assert!(slack_text.contains("CUDA out of memory"), "{slack_text}");
        let mail = mails
            .iter()
            .find(|m| m["text"].as_str().is_some_and(|t| t.contains(id)))
            .unwrap_or_else(|| panic!("{id} reached the mailbox"));
        assert!(
            mail["html"]
                .as_str()
                .unwrap()
                .contains("CUDA out of memory")
        );
        shown(&got, &slack_text);
    }
    daemon.stop().await;
}

/// An earlier build acknowledged such bodies and then left their deliveries
/// dead ("the stored event cannot be read"). `retry --dead` delivers them now.
#[tokio::test]
async fn deliveries_left_dead_by_an_unreadable_body_are_delivered_after_retry_dead() {
    let slack = SlackStandIn::start().await;
    let hook = WebhookReceiver::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(free_port(), dir.path(), false, false);
    let config = three_notifiers(dir.path(), &slack, &hook, &smtp);
    let db = dir.path().join("relay.db");
    let body = failed_body(
        "olddead",
        &format!(r#""input":{{"x":{}}},"logs":"\udc00""#, nested(200, "1")),
    );
    // The store as that build left it: the event, and both deliveries dead.
    {
        let store = SqliteStore::open(&db, SqliteOptions::default()).unwrap();
        let now = now() * 1000;
        store
            .insert(NewEvent {
                webhook_id: "msg_olddead".into(),
                object_id: "olddead".into(),
                kind: replicate_relay::event::Kind::Prediction,
                status: replicate_relay::event::Status::Failed,
                model: Some("acme/captioner".into()),
                query: String::new(),
                body: body.into(),
                received_at_ms: now,
                routing: Routing {
                    lifecycle: None,
                    groups: Vec::new(),
                    after: Vec::new(),
                    dedup_key: "olddead:failed".into(),
                    deliveries: ["chat", "hook", "mail"]
                        .map(|n| ("everything".to_owned(), n.to_owned()))
                        .into(),
                    expires_at_ms: now + 86_400_000,
                },
            })
            .await
            .unwrap();
        let later = now + 1_000;
        for notifier in ["chat", "hook", "mail"] {
            for claimed in store.claim(notifier, later, 10).await.unwrap() {
                let error = "the stored event cannot be read: body is not valid JSON: recursion limit exceeded at line 1 column 250".to_owned();
                store
                    .finish(claimed.delivery.id, Outcome::Dead { error }, later)
                    .await
                    .unwrap();
            }
        }
        store.close().await;
    }
    let dead = wait_deliveries(&db, Duration::ZERO, |_| true).await;
    assert_eq!(dead.len(), 3);
    assert!(
        dead.iter().all(|l| l.delivery.state == DeliveryState::Dead),
        "{dead:?}"
    );

    let out = run_relay(&["retry", "--dead"], &config);
    assert!(out.contains("Requeued 3 deliveries"), "{out}");

    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    let rows = wait_deliveries(&db, Duration::from_secs(15), |r| {
        r.iter()
            .all(|l| l.delivery.state == DeliveryState::Delivered)
    })
    .await;
    assert!(
        rows.iter()
            .all(|l| l.delivery.state == DeliveryState::Delivered),
        "{:?}",
        rows.iter()
            .map(|l| &l.delivery.last_error)
            .collect::<Vec<_>>()
    );
    let got = hook.wait_for(1, Duration::from_secs(5)).await;
    let got: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(got["logs_tail"], json!("\u{fffd}"));
    assert!(got["input"]["x"].to_string().contains(TOO_DEEP));
    assert_eq!(slack.wait_for(1, Duration::from_secs(5)).await.len(), 1);
    assert_eq!(smtp.wait_for(1, Duration::from_secs(5)).await.len(), 1);
    daemon.stop().await;
}
