//! Email delivery end to end, to the tests' real SMTP server: both parts
//! escaped, a strict EHLO check, STARTTLS with a private CA, a server that
//! is down, a 550.

use super::*;

fn email_config(smtp: &str, extra_keys: &str) -> String {
    format!(
        "[notifiers.n]\ntype = \"email\"\nsmtp = \"{smtp}\"\nfrom = \"Replicate relay <relay@example.org>\"\nto = [\"ml-team@example.org\", \"Ops <ops@example.org>\"]\nreply_to = \"oncall@example.org\"\ntimeout = \"5s\"\n{extra_keys}\n\n{ALL_FINAL}"
    )
}

#[tokio::test]
async fn email_arrives_with_both_parts_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(free_port(), dir.path(), false, false);
    let daemon = start(
        dir.path(),
        &email_config(&format!("smtp://127.0.0.1:{}", smtp.port), "tls = \"none\""),
    )
    .await;
    let mut payload: serde_json::Value =
        serde_json::from_slice(&fixture("prediction-failed.json")).unwrap();
    payload["input"]["prompt"] = serde_json::json!("<script>alert(1)</script>\r\nBcc: x@evil.test");
    post_signed(&daemon, "msg_mail", &serde_json::to_vec(&payload).unwrap()).await;

    let mails = smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert_eq!(m["from"], "Replicate relay <relay@example.org>");
    assert_eq!(m["to"], "ml-team@example.org, Ops <ops@example.org>");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["ml-team@example.org", "ops@example.org"])
    );
    assert_eq!(
        m["subject"],
        "❌ Prediction northwind/captioner-prod failed: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 22.19 GiB of which 1.12 GiB is free."
    );
    assert_eq!(m["content_type"], "multipart/alternative");
    // The strict server took the greeting: a fully qualified name (this
    // host's, or the From address's domain), also on the Message-ID.
    let helo = m["helo"].as_str().unwrap();
    assert!(helo.contains('.'), "{helo}");
    let id = m["message_id"].as_str().unwrap();
    assert!(
        id.starts_with("<msg_relay_") && id.ends_with(&format!("@{helo}>")),
        "{id}"
    );
    let text = m["text"].as_str().unwrap();
    assert!(text.contains("CUDA out of memory"), "{text}");
    let html = m["html"].as_str().unwrap();
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>"));
    daemon.stop().await;
}

#[tokio::test]
async fn a_strict_smtp_server_refuses_a_bare_host_name_and_takes_helo_name() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(free_port(), dir.path(), false, false);
    let server = format!("smtp://127.0.0.1:{}", smtp.port);
    let daemon = start(
        dir.path(),
        &email_config(&server, "tls = \"none\"\nhelo_name = \"vm\""),
    )
    .await;
    post_signed(&daemon, "msg_helo", &fixture("prediction-failed.json")).await;
    let rows = wait_deliveries(&dir.path().join("relay.db"), Duration::from_secs(10), |r| {
        states(r) == [DeliveryState::Dead]
    })
    .await;
    assert_eq!(states(&rows), [DeliveryState::Dead]);
    let error = rows[0].delivery.last_error.clone().unwrap();
    assert!(error.contains("need fully-qualified hostname"), "{error}");
    daemon.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let daemon = start(
        dir.path(),
        &email_config(
            &server,
            "tls = \"none\"\nhelo_name = \"relay.lab.example.net\"",
        ),
    )
    .await;
    post_signed(&daemon, "msg_helo", &fixture("prediction-failed.json")).await;
    let mails = smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0]["helo"], "relay.lab.example.net");
    assert!(
        mails[0]["message_id"]
            .as_str()
            .unwrap()
            .ends_with("@relay.lab.example.net>")
    );
    daemon.stop().await;
}

#[tokio::test]
async fn email_over_starttls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(free_port(), dir.path(), true, false);
    let ca = smtp.ca.clone().unwrap();
    let daemon = start(
        dir.path(),
        &email_config(
            &format!("smtp://localhost:{}", smtp.port),
            &format!("ca_file = \"{}\"", ca.display()),
        ),
    )
    .await;
    post_signed(&daemon, "msg_tls", &fixture("training-succeeded.json")).await;
    let mails = smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        mails.len(),
        1,
        "{:?}",
        wait_deliveries(&dir.path().join("relay.db"), Duration::ZERO, |_| true).await
    );
    assert_eq!(mails[0]["tls"], true, "sent after STARTTLS");
    assert_eq!(
        mails[0]["subject"],
        "✅ Training harbor-studio/ink-portraits succeeded in 23m 25s"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn mail_waits_for_an_smtp_server_that_is_down_then_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let daemon = start(
        dir.path(),
        &email_config(&format!("smtp://127.0.0.1:{port}"), "tls = \"none\""),
    )
    .await;
    post_signed(&daemon, "msg_outage", &fixture("prediction-failed.json")).await;
    let db = dir.path().join("relay.db");
    let rows = wait_deliveries(&db, Duration::from_secs(5), |r| {
        r.first().is_some_and(|l| l.delivery.last_error.is_some())
    })
    .await;
    assert_eq!(
        rows[0].delivery.state,
        DeliveryState::Pending,
        "a refused connection is retried"
    );

    let smtp = SmtpServer::start(port, dir.path(), false, false);
    let mails = smtp.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(mails.len(), 1);
    let rows = one_delivered(&db).await;
    assert!(rows[0].delivery.attempts >= 2);
    daemon.stop().await;
}

#[tokio::test]
async fn a_550_is_dead_at_once_with_the_servers_text_and_retry_requeues_it() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(free_port(), dir.path(), false, true);
    let config = write_config(
        dir.path(),
        SECRET,
        &email_config(&format!("smtp://127.0.0.1:{}", smtp.port), "tls = \"none\""),
    );
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    post_signed(&daemon, "msg_550", &fixture("prediction-failed.json")).await;
    let db = dir.path().join("relay.db");
    let rows = wait_deliveries(&db, Duration::from_secs(10), |r| {
        states(r) == [DeliveryState::Dead]
    })
    .await;
    assert_eq!(states(&rows), [DeliveryState::Dead]);
    let error = rows[0].delivery.last_error.clone().unwrap();
    assert!(
        error.contains("550") && error.contains("Recipient address rejected"),
        "{error}"
    );
    assert_eq!(rows[0].delivery.attempts, 1);

    // The operator sees it, and requeues it by hand.
    let bin = env!("CARGO_BIN_EXE_replicate-relay");
    let out = std::process::Command::new(bin)
        .args(["deliveries", "--dead", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("dead") && table.contains("(550): 5.1.1"),
        "{table}"
    );
    assert!(table.contains("replicate-relay retry"), "{table}");
    let out = std::process::Command::new(bin)
        .args(["retry", "--dead", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Requeued 1 delivery"));
    let rows = wait_deliveries(&db, Duration::from_secs(10), |r| {
        r[0].delivery.attempts == 2
    })
    .await;
    assert_eq!(rows[0].delivery.attempts, 2, "sent again after retry");
    daemon.stop().await;
}
