//! The daemon as a service, through the real binary: readiness for systemd,
//! reload on SIGHUP, draining on SIGTERM, metrics, and logs that never show a
//! secret.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::serve::*;
use crate::common::smtp::SmtpServer;
use crate::common::stand_ins::*;
use crate::common::*;

fn notify_socket(dir: &Path) -> (UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    (sock, path.display().to_string())
}

fn next_notification(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Posts a signed webhook and asserts it was answered 200.
async fn post_ok(port: u16, webhook_id: &str, body: &[u8]) {
    let (status, answer) = post_to(port, webhook_id, body).await.unwrap();
    assert_eq!(status, 200, "{answer}");
}

async fn post_to(
    port: u16,
    webhook_id: &str,
    body: &[u8],
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    let mut req = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/hooks/replicate"))
        .body(body.to_vec());
    for (k, v) in signed(SECRET, webhook_id, now(), body) {
        req = req.header(k, v);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    Ok((status, res.json().await.unwrap_or(serde_json::Value::Null)))
}

#[tokio::test]
async fn ready_is_sent_only_once_the_port_accepts_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = config_on_port(dir.path(), "");
    let (sock, sock_path) = notify_socket(dir.path());
    let serve = Serve::start(&config, &[("NOTIFY_SOCKET", &sock_path)]);

    let first = tokio::task::spawn_blocking(move || (next_notification(&sock), sock))
        .await
        .unwrap();
    let (message, sock) = first;
    assert_eq!(message.trim(), "READY=1");
    // At READY the port must already accept, and the store must exist.
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("port accepts at READY");
    assert!(dir.path().join("relay.db").exists());

    serve.signal("TERM");
    let stopping = tokio::task::spawn_blocking(move || next_notification(&sock))
        .await
        .unwrap();
    assert_eq!(stopping.trim(), "STOPPING=1");
    let (code, log) = serve.wait(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{log}");
}

/// Sends SIGHUP and waits for systemd's RELOADING=1 then READY=1.
async fn reload(serve: &Serve, sock: &Arc<UnixDatagram>) {
    serve.signal("HUP");
    let s = sock.clone();
    let (reloading, ready) =
        tokio::task::spawn_blocking(move || (next_notification(&s), next_notification(&s)))
            .await
            .unwrap();
    assert_eq!((reloading.trim(), ready.trim()), ("RELOADING=1", "READY=1"));
}

#[tokio::test]
async fn sighup_swaps_in_a_good_config_and_refuses_a_broken_one() {
    let hook = WebhookReceiver::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let notifier = format!(
        "[notifiers.n]\ntype = \"webhook\"\nurl = \"http://{}/x\"\n\n",
        hook.addr
    );
    let only_trainings = format!(
        "{notifier}[[routes]]\nname = \"trainings\"\nwhen = {{ kind = \"training\" }}\nnotify = [\"n\"]\n"
    );
    let predictions = format!(
        "{notifier}[[routes]]\nname = \"predictions\"\nwhen = {{ kind = \"prediction\" }}\nnotify = [\"n\"]\n"
    );
    let (config, port) = config_on_port(dir.path(), &only_trainings);
    let (sock, sock_path) = notify_socket(dir.path());
    let sock = Arc::new(sock);
    let serve = Serve::start(&config, &[("NOTIFY_SOCKET", &sock_path)]);
    let s = sock.clone();
    assert_eq!(
        tokio::task::spawn_blocking(move || next_notification(&s))
            .await
            .unwrap()
            .trim(),
        "READY=1"
    );

    // Under the first config, a failed prediction goes nowhere.
    post_ok(port, "msg_r1", &fixture("prediction-failed.json")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.wait_for(1, Duration::ZERO).await.len(), 0);

    // A good config: routing changes for the next event.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace(&only_trainings, &predictions)).unwrap();
    reload(&serve, &sock).await;
    assert!(
        serve
            .wait_log("Config reloaded.", Duration::from_secs(5))
            .await,
        "{}",
        serve.log()
    );
    post_ok(port, "msg_r2", &fixture("prediction-canceled.json")).await;
    assert_eq!(hook.wait_for(1, Duration::from_secs(10)).await.len(), 1);

    // A broken config changes nothing, and says why.
    std::fs::write(
        &config,
        text.replace(&only_trainings, &predictions)
            + "\n[[routes]]\nname = \"bad\"\nnotify = [\"nobody\"]\n",
    )
    .unwrap();
    reload(&serve, &sock).await;
    assert!(
        serve
            .wait_log("Reload refused", Duration::from_secs(5))
            .await,
        "{}",
        serve.log()
    );
    assert!(
        serve.log().contains("no notifier named `nobody`"),
        "{}",
        serve.log()
    );
    post_ok(port, "msg_r3", &fixture("prediction-succeeded.json")).await;
    assert_eq!(
        hook.wait_for(2, Duration::from_secs(10)).await.len(),
        2,
        "still routed by the good config"
    );

    serve.signal("TERM");
    let (code, log) = serve.wait(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn sigterm_during_100_concurrent_posts_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = config_on_port(dir.path(), "");
    let serve = Serve::start(&config, &[]);
    assert!(
        serve.wait_log("Listening.", Duration::from_secs(10)).await,
        "{}",
        serve.log()
    );
    // A new store is created, not "migrated": that is for upgrades.
    let log = serve.log();
    assert!(log.contains("Store created."), "{log}");
    assert!(!log.contains("Migrating"), "{log}");

    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..100 {
        let done = done_tx.clone();
        tokio::spawn(async move {
            let id = format!("msg_term_{i}");
            let result = post_to(port, &id, &payload(&format!("p_term_{i}"), "succeeded")).await;
            let _ = done.send((id, result.map(|(status, _)| status)));
        });
    }
    drop(done_tx);
    // Stop once a few have been answered, with the rest in flight.
    let mut results = Vec::new();
    while results.len() < 10 {
        results.push(done_rx.recv().await.unwrap());
    }
    serve.signal("TERM");
    while let Some(r) = done_rx.recv().await {
        results.push(r);
    }
    let (code, log) = serve.wait(Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{log}");

    let mut acknowledged = Vec::new();
    for (id, result) in &results {
        match result {
            Ok(200) => acknowledged.push(id.clone()),
            Ok(503) => {}
            Ok(other) => panic!("{id}: unexpected {other}"),
            Err(e) => assert!(e.is_connect() || e.is_request(), "{id}: {e}"),
        }
    }
    assert_eq!(results.len(), 100);
    assert!(acknowledged.len() >= 10);

    // After a restart on the same store, every acknowledged event is there.
    let daemon = Daemon::start(&config, Arc::new(replicate_relay::clock::SystemClock)).await;
    let stored = daemon.running.store().recent(1000).await.unwrap();
    for id in &acknowledged {
        assert!(
            stored.iter().any(|e| &e.webhook_id == id),
            "{id} was acknowledged but is not stored"
        );
    }
    daemon.stop().await;
}

/// The value of one sample line in Prometheus text, e.g.
/// `relay_deliveries_total{notifier="n",result="sent"}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_move_as_events_and_deliveries_happen() {
    let hook = WebhookReceiver::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[notifiers.n]\ntype = \"webhook\"\nurl = \"http://{}/x\"\n\n[[routes]]\nname = \"all\"\nnotify = [\"n\"]\n",
        hook.addr
    );
    let (config, port) = config_on_port(dir.path(), &extra);
    let serve = Serve::start(&config, &[]);
    assert!(serve.wait_log("Listening.", Duration::from_secs(10)).await);
    let scrape = || async {
        let res = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap();
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        res.text().await.unwrap()
    };
    // Absent, or registered at zero ahead of the first webhook.
    let before = scrape().await;
    assert_eq!(
        sample(
            &before,
            "relay_webhooks_received_total{kind=\"prediction\",status=\"failed\"}"
        )
        .unwrap_or(0.0),
        0.0
    );

    post_ok(port, "msg_m1", &fixture("prediction-failed.json")).await;
    post_ok(port, "msg_m1", &fixture("prediction-failed.json")).await;
    let forged = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/hooks/replicate"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    assert_eq!(hook.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let after = scrape().await;
    let expect = [
        (
            "relay_webhooks_received_total{kind=\"prediction\",status=\"failed\"}",
            1.0,
        ),
        ("relay_webhooks_duplicate_total", 1.0),
        (
            "relay_webhooks_rejected_total{reason=\"unauthorized\"}",
            1.0,
        ),
        (
            "relay_deliveries_total{notifier=\"n\",result=\"sent\"}",
            1.0,
        ),
        ("relay_delivery_latency_seconds_count{notifier=\"n\"}", 1.0),
        ("relay_outbox_pending", 0.0),
        ("relay_outbox_dead", 0.0),
        // Every answered webhook is timed: stored, duplicate and refused.
        ("relay_webhook_seconds_count", 3.0),
    ];
    for (series, want) in expect {
        assert_eq!(sample(&after, series), Some(want), "{series} in\n{after}");
    }
    assert!(
        sample(&after, "relay_store_commit_seconds_count").unwrap() >= 1.0,
        "{after}"
    );
    assert!(after.contains("# HELP relay_deliveries_total"), "described");
    serve.signal("TERM");
    serve.wait(Duration::from_secs(15)).await;
}

#[tokio::test]
async fn no_secret_appears_in_the_logs_even_at_trace_level() {
    const SMTP_PASSWORD: &str = "correct-horse-battery-staple";
    const DOWNSTREAM: &str = "whsec_ZG93bnN0cmVhbS1zZWNyZXQtZm9yLWxvZ3M=";
    let slack = SlackStandIn::start().await;
    let hook = WebhookReceiver::start(DOWNSTREAM).await;
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start_with(
        free_port(),
        dir.path(),
        false,
        false,
        Some(&format!("relay:{SMTP_PASSWORD}")),
    );
    std::fs::write(dir.path().join("smtp-password"), SMTP_PASSWORD).unwrap();
    let extra = format!(
        "[notifiers.slack]\ntype = \"slack\"\ntoken = \"{SLACK_TOKEN}\"\nchannel = \"#ml\"\napi_url = \"{}\"\n\n\
         [notifiers.mail]\ntype = \"email\"\nsmtp = \"smtp://127.0.0.1:{}\"\ntls = \"none\"\nusername = \"relay\"\npassword_file = \"smtp-password\"\nfrom = \"relay@example.org\"\nto = [\"ml@example.org\"]\n\n\
         [notifiers.hook]\ntype = \"webhook\"\nurl = \"http://{}/x\"\nsecret = \"{DOWNSTREAM}\"\n\n\
         [[routes]]\nname = \"all\"\nnotify = [\"slack\", \"mail\", \"hook\"]\n",
        slack.api_url(),
        smtp.port,
        hook.addr
    );
    let (config, port) = config_on_port(dir.path(), &extra);
    let serve = Serve::start(&config, &[("RUST_LOG", "trace")]);
    assert!(
        serve.wait_log("Listening.", Duration::from_secs(10)).await,
        "{}",
        serve.log()
    );
    post_ok(port, "msg_s1", &fixture("prediction-failed.json")).await;
    let wrong = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/hooks/replicate"))
        .header("webhook-id", "msg_x")
        .header("webhook-timestamp", now().to_string())
        .header("webhook-signature", "v1,AAAA")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert_eq!(slack.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    assert_eq!(
        smtp.wait_for(1, Duration::from_secs(10)).await.len(),
        1,
        "sent with AUTH"
    );
    assert_eq!(hook.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    serve.signal("TERM");
    let (code, log) = serve.wait(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0));
    assert!(log.lines().count() > 50, "trace logging was on");
    use base64::Engine;
    let auth_plain =
        base64::engine::general_purpose::STANDARD.encode(format!("\0relay\0{SMTP_PASSWORD}"));
    for secret in [
        SECRET,
        &SECRET[6..],
        SLACK_TOKEN,
        SMTP_PASSWORD,
        &auth_plain,
        DOWNSTREAM,
        &DOWNSTREAM[6..],
    ] {
        assert!(
            !log.contains(secret),
            "a secret ({}…) is in the log",
            &secret[..8]
        );
    }
}
