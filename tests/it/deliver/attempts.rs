//! Every attempt is kept: `deliveries --attempts ID` shows when each one
//! ran, how it ended, and what the receiver answered, and the message as
//! it was rendered.

use super::*;

#[tokio::test]
async fn each_attempt_keeps_the_services_status_and_answer() {
    let slack = SlackStandIn::start().await;
    slack.plan(&[SlackAnswer::Status(500)]);
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), &slack_config(&slack.api_url())).await;
    post_signed(&daemon, "msg_att", &fixture("prediction-succeeded.json")).await;
    let rows = one_delivered(&dir.path().join("relay.db")).await;
    assert_eq!(states(&rows), [DeliveryState::Delivered]);
    let id = rows[0].delivery.id.to_string();
    let config = dir.path().join("relay.toml");

    let json: serde_json::Value = serde_json::from_str(
        run_relay(&["deliveries", "--attempts", &id, "--json"], &config).trim(),
    )
    .unwrap();
    let attempts = json["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{json:#}");
    assert_eq!(attempts[0]["number"], 1);
    assert_eq!(attempts[0]["outcome"], "retry");
    assert_eq!(attempts[0]["status"], 500);
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("500"),
        "{json:#}"
    );
    assert_eq!(attempts[1]["outcome"], "delivered");
    assert_eq!(attempts[1]["status"], 200);
    let exchange = &attempts[1]["exchanges"]["kept"][0];
    assert_eq!(exchange["request"], "POST Slack chat.postMessage");
    assert!(
        exchange["answer"].as_str().unwrap().contains("\"ok\":true"),
        "{exchange}"
    );
    assert!(attempts[1]["duration_ms"].as_i64().unwrap() >= 0);
    // The message as rendered: Slack's blocks, naming the job.
    assert_eq!(json["message"]["kind"], "slack");
    assert!(
        json["message"]["message"]["slack"]["blocks"].is_array(),
        "{json:#}"
    );
    // The token is never kept.
    assert!(!json.to_string().contains(SLACK_TOKEN), "{json}");

    let table = run_relay(&["deliveries", "--attempts", &id], &config);
    assert!(
        table.contains("#1 ") && table.contains("retry · 500"),
        "{table}"
    );
    assert!(
        table.contains("#2 ") && table.contains("delivered · 200"),
        "{table}"
    );
    assert!(
        table.contains("POST Slack chat.postMessage → 200"),
        "{table}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn an_unknown_delivery_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), "").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replicate-relay"))
        .args(["deliveries", "--attempts", "99"])
        .arg("--config")
        .arg(dir.path().join("relay.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No delivery 99"), "{err}");
    daemon.stop().await;
}
