//! The dashboard end to end, over HTTP as a browser without script uses
//! it: the login and its limits, what a page without a session does, the
//! CSRF token and other sites' requests, hostile payloads shown as text,
//! and a dead delivery found, looked at and retried until delivered.
//! `dashboard/browser.rs` does the same in a real Chromium.

use std::sync::Arc;
use std::time::Duration;

use crate::common::dashboard::{self, Client, TOKEN};
use crate::common::stand_ins::*;
use crate::common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::store::DeliveryState;

mod browser;

/// A daemon sending every final job to a Slack stand-in, with the
/// dashboard behind [`TOKEN`].
pub async fn start(dir: &std::path::Path, slack: &SlackStandIn) -> (Daemon, Client) {
    let extra = format!(
        "{}[notifiers.ops]\ntype = \"slack\"\ntoken = \"{SLACK_TOKEN}\"\nchannel = \"#ml-alerts\"\napi_url = \"{}\"\n\n[[routes]]\nname = \"everything\"\nnotify = [\"ops\"]\n",
        dashboard::config(dir),
        slack.api_url()
    );
    let daemon = Daemon::start(&write_config(dir, SECRET, &extra), Arc::new(SystemClock)).await;
    let client = Client::new(daemon.running.dashboard_addr().expect("the dashboard"));
    (daemon, client)
}

/// A failed prediction whose input and output try to break out of HTML.
pub fn hostile(id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id,
        "model": "acme/<script>alert('model')</script>",
        "version": "v1",
        "status": "failed",
        "input": {
            "prompt": "<script>alert('prompt')</script>",
            "negative": "\"><img src=x onerror=alert('img')>",
            "link": "javascript:alert('link')",
        },
        "output": ["javascript:alert('output')", "\"><svg onload=alert('svg')>"],
        "error": "<b>bold</b> \"><img src=x onerror=alert('error')>",
        "logs": "</pre><script>alert('logs')</script>",
        "created_at": "2026-12-04T10:00:00Z",
        "completed_at": "2026-12-04T10:00:05Z",
        "urls": {"get": "https://api.replicate.com/v1/predictions/x", "web": "javascript:alert('web')"},
        "metrics": {"predict_time": 5.0}
    }))
    .unwrap()
}

#[tokio::test]
async fn without_a_session_every_page_sends_to_the_login() {
    let dir = tempfile::tempdir().unwrap();
    let slack = SlackStandIn::start().await;
    let (daemon, mut client) = start(dir.path(), &slack).await;
    for path in [
        "/",
        "/events?status=failed",
        "/events/1",
        "/deliveries",
        "/templates",
        "/deliveries/1/message",
    ] {
        let got = client.get(path).await;
        assert_eq!(got.status, 303, "{path}");
        let to = got.header("location");
        assert!(to.starts_with("/login?next="), "{path}: {to}");
        assert!(
            !got.body.contains("events"),
            "{path}: no data before the login"
        );
    }
    // A POST without a session does nothing.
    let got = client.post("/deliveries/1/retry", &[("csrf", "x")]).await;
    assert_eq!(got.status, 403);
    // A forged cookie is no session.
    client.cookie = Some("relay_session=99999999999999.00.AAAA".into());
    assert_eq!(client.get("/").await.status, 303);
    client.cookie = None;
    // The stylesheet holds no data and needs none.
    assert_eq!(client.get("/static/style.css").await.status, 200);

    let page = client.get("/login").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("type=\"password\""));
    let wrong = client.login("not-the-token-at-all").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("not the dashboard"), "{}", wrong.body);
    assert!(client.cookie.is_none());
    let right = client
        .post(
            "/login",
            &[("token", TOKEN), ("next", "/events?status=failed")],
        )
        .await;
    assert_eq!(right.status, 303);
    assert_eq!(right.header("location"), "/events?status=failed");
    let cookie = right.header("set-cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let events = client.get("/events").await;
    assert_eq!(events.status, 200);
    assert!(
        events
            .header("content-security-policy")
            .contains("script-src 'self'")
    );
    assert_eq!(events.header("x-frame-options"), "DENY");
    // An open redirect is not made of `next`.
    client.cookie = None;
    let away = client
        .post("/login", &[("token", TOKEN), ("next", "//evil.example/")])
        .await;
    assert_eq!(away.header("location"), "/");
    // Logging out ends the session in this browser.
    let csrf = client.get("/").await.csrf();
    let out = client.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert!(client.cookie.is_none());
    daemon.stop().await;
}

#[tokio::test]
async fn failed_logins_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let slack = SlackStandIn::start().await;
    let (daemon, mut client) = start(dir.path(), &slack).await;
    for _ in 0..10 {
        assert_eq!(client.login("wrong-wrong-wrong-wrong").await.status, 401);
    }
    let limited = client.login(TOKEN).await;
    assert_eq!(limited.status, 429, "even the right token waits");
    let wait: u64 = limited.header("retry-after").parse().unwrap();
    assert!((1..=600).contains(&wait), "{wait}");
    daemon.stop().await;
}

#[tokio::test]
async fn a_post_without_its_csrf_token_or_from_another_site_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let slack = SlackStandIn::start().await;
    slack.plan(&[SlackAnswer::Error("channel_not_found")]);
    let (daemon, mut client) = start(dir.path(), &slack).await;
    post_signed(&daemon, "msg_csrf", &fixture("prediction-failed.json")).await;
    let db = dir.path().join("relay.db");
    let rows = wait_deliveries(&db, Duration::from_secs(10), |r| {
        r.len() == 1 && r[0].delivery.state == DeliveryState::Dead
    })
    .await;
    let id = rows[0].delivery.id;
    client.login(TOKEN).await;
    let csrf = client.get("/deliveries").await.csrf();
    let path = format!("/deliveries/{id}/retry");
    for form in [vec![], vec![("csrf", "")], vec![("csrf", "AAAA")]] {
        let got = client.post(&path, &form).await;
        assert_eq!(got.status, 403, "{form:?}");
        assert!(got.body.contains("CSRF"), "{}", got.body);
    }
    // The right token, sent by another site's page: refused too.
    let other = reqwest::Client::new()
        .post(format!("{}{path}", client.base))
        .header("cookie", client.cookie.clone().unwrap())
        .header("origin", "https://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
    let rows = wait_deliveries(&db, Duration::from_millis(500), |_| false).await;
    assert_eq!(
        rows[0].delivery.state,
        DeliveryState::Dead,
        "nothing was requeued"
    );
    assert_eq!(slack.requests().len(), 1);
    daemon.stop().await;
}

#[tokio::test]
async fn a_dead_delivery_is_found_looked_at_and_retried_until_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let slack = SlackStandIn::start().await;
    slack.plan(&[SlackAnswer::Error("channel_not_found")]);
    let (daemon, mut client) = start(dir.path(), &slack).await;
    post_signed(&daemon, "msg_dead", &fixture("prediction-failed.json")).await;
    let db = dir.path().join("relay.db");
    let rows = wait_deliveries(&db, Duration::from_secs(10), |r| {
        r.len() == 1 && r[0].delivery.state == DeliveryState::Dead
    })
    .await;
    let (id, job) = (rows[0].delivery.id, rows[0].object_id.clone());
    client.login(TOKEN).await;

    // Found by its job id, opened, its attempt and Slack's answer shown.
    let list = client.get(&format!("/events?job={job}")).await;
    let link = format!("href=\"/events/{}\"", rows[0].delivery.event_seq);
    assert!(list.body.contains(&link), "{}", list.body);
    let page = client
        .get(&format!("/events/{}", rows[0].delivery.event_seq))
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("channel_not_found"), "{}", page.body);
    assert!(page.body.contains("POST Slack chat.postMessage"));
    assert!(page.body.contains(&format!("/deliveries/{id}/retry")));
    assert!(
        page.body
            .contains(&format!("src=\"/deliveries/{id}/message\""))
    );
    assert!(!page.body.contains(SLACK_TOKEN), "the token is never shown");
    // The message as Slack shows it, in a frame without script.
    let frame = client.get(&format!("/deliveries/{id}/message")).await;
    assert_eq!(frame.status, 200);
    let policy = frame.header("content-security-policy");
    assert!(policy.starts_with("sandbox;"), "{policy}");
    assert!(policy.contains("script-src 'none'"), "{policy}");
    assert!(frame.body.contains("class=\"msg\""), "{}", frame.body);

    let csrf = page.csrf();
    let back = format!("/events/{}", rows[0].delivery.event_seq);
    let retried = client
        .post(
            &format!("/deliveries/{id}/retry"),
            &[("csrf", &csrf), ("back", &back)],
        )
        .await;
    assert_eq!(retried.status, 303, "{}", retried.body);
    assert!(
        retried
            .header("location")
            .starts_with(&format!("{back}?done="))
    );
    let rows = wait_deliveries(&db, Duration::from_secs(10), |r| {
        r[0].delivery.state == DeliveryState::Delivered
    })
    .await;
    assert_eq!(rows[0].delivery.state, DeliveryState::Delivered);
    let page = client.get(&back).await;
    assert!(
        page.body.contains("Resend…"),
        "a delivered one can be resent, separately"
    );
    // Resending asks first.
    let ask = client
        .post(&format!("/deliveries/{id}/resend"), &[("csrf", &csrf)])
        .await;
    assert_eq!(ask.status, 200);
    assert!(ask.body.contains("gets the message a second time"));
    assert_eq!(
        slack.requests().len(),
        2,
        "nothing sent before the confirmation"
    );
    // Retry (not resend) of a delivered one does nothing.
    let again = client
        .post(&format!("/deliveries/{id}/retry"), &[("csrf", &csrf)])
        .await;
    assert!(
        again.header("location").contains("nothing+was+requeued"),
        "{}",
        again.header("location")
    );
    let sent = client
        .post(
            &format!("/deliveries/{id}/resend"),
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(sent.status, 303);
    slack.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(slack.requests().len(), 3);
    daemon.stop().await;
}

#[tokio::test]
async fn every_dead_delivery_shown_is_retried_once_the_count_is_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let slack = SlackStandIn::start().await;
    slack.plan(&[
        SlackAnswer::Error("channel_not_found"),
        SlackAnswer::Error("channel_not_found"),
        SlackAnswer::Error("channel_not_found"),
    ]);
    let (daemon, mut client) = start(dir.path(), &slack).await;
    for i in 0..3 {
        let body = payload(&format!("p{i}"), "failed");
        post_signed(&daemon, &format!("msg_{i}"), &body).await;
    }
    let db = dir.path().join("relay.db");
    wait_deliveries(&db, Duration::from_secs(10), |r| {
        r.len() == 3 && r.iter().all(|l| l.delivery.state == DeliveryState::Dead)
    })
    .await;
    client.login(TOKEN).await;
    let page = client.get("/deliveries").await;
    assert!(page.body.contains("Retry all 3 shown"), "{}", page.body);
    let at = page.body.find("name=\"ids\" value=\"").unwrap() + "name=\"ids\" value=\"".len();
    let ids = page.body[at..].split('"').next().unwrap().to_owned();
    let csrf = page.csrf();
    let ask = client
        .post("/deliveries/retry", &[("csrf", &csrf), ("ids", &ids)])
        .await;
    assert!(
        ask.body.contains("Retry 3 dead deliveries?"),
        "{}",
        ask.body
    );
    let done = client
        .post(
            "/deliveries/retry",
            &[("csrf", &csrf), ("ids", &ids), ("confirm", "yes")],
        )
        .await;
    assert!(
        done.header("location").contains("Requeued+3+of+3"),
        "{}",
        done.header("location")
    );
    let rows = wait_deliveries(&db, Duration::from_secs(10), |r| {
        r.iter()
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
async fn a_hostile_payload_is_shown_as_text_on_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let slack = SlackStandIn::start().await;
    let (daemon, mut client) = start(dir.path(), &slack).await;
    post_signed(&daemon, "msg_hostile", &hostile("hostile1")).await;
    let db = dir.path().join("relay.db");
    let rows = wait_deliveries(&db, Duration::from_secs(10), |r| {
        r.len() == 1 && r[0].delivery.state == DeliveryState::Delivered
    })
    .await;
    let (seq, id) = (rows[0].delivery.event_seq, rows[0].delivery.id);
    client.login(TOKEN).await;
    for path in [
        "/".to_owned(),
        "/events".into(),
        "/events?model=acme%2F%3Cscript%3E".into(),
        format!("/events/{seq}"),
        format!("/deliveries/{id}/message"),
    ] {
        let got = client.get(&path).await;
        assert_eq!(got.status, 200, "{path}");
        let body = got.body.to_lowercase();
        for bad in [
            "<script>alert",
            "<img src=x",
            "<svg onload",
            "href=\"javascript:",
            "<b>bold",
        ] {
            assert!(!body.contains(bad), "{path}: {bad} in {}", got.body);
        }
    }
    let page = client.get(&format!("/events/{seq}")).await;
    assert!(page.body.contains("&lt;script&gt;alert("), "shown, as text");
    daemon.stop().await;
}

#[tokio::test]
async fn without_a_token_only_this_host_is_answered_and_elsewhere_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        SECRET,
        "[dashboard]\nlisten = \"127.0.0.1:0\"\n",
    );
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    let addr = daemon.running.dashboard_addr().unwrap();
    let mut client = Client::new(addr);
    let page = client.get("/").await;
    assert_eq!(page.status, 200, "no login on this host");
    assert!(client.cookie.is_some(), "but a session, for the CSRF token");
    // A name that resolves here from a page elsewhere (DNS rebinding).
    let rebound = reqwest::Client::new()
        .get(format!("http://{addr}/events"))
        .header("host", format!("rebind.evil.example:{}", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 421);
    daemon.stop().await;

    let open = write_config(dir.path(), SECRET, "[dashboard]\nlisten = \"0.0.0.0:0\"\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replicate-relay"))
        .args(["check", "--config"])
        .arg(&open)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("needs a login: set token_file"), "{text}");
}

#[tokio::test]
async fn a_form_too_large_or_too_slow_is_refused_before_any_session_is_looked_at() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SECRET, &dashboard::config(dir.path()));
    server_keys(&config, "read_timeout = \"2s\"\n");
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    let addr = daemon.running.dashboard_addr().unwrap();
    let answer = |mut stream: tokio::net::TcpStream| async move {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got)).await;
        String::from_utf8_lossy(&got).into_owned()
    };
    // A body that never comes: answered 408 at read_timeout, not held open.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\nConnection: close\r\n\r\ntoken=").await.unwrap();
    let started = std::time::Instant::now();
    let got = answer(slow).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // A body past 64 KiB without a length (chunked): 413, not read on.
    let mut big = tokio::net::TcpStream::connect(addr).await.unwrap();
    big.write_all(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "a".repeat(16 * 1024));
    for _ in 0..5 {
        if big.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let got = answer(big).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    daemon.stop().await;
}
