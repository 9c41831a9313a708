//! The dashboard in a real headless Chromium (`common::browser`): log in,
//! find a failed job by its id, open it, read its attempt and Slack's
//! answer, press Retry and see it delivered; a payload built to run
//! script runs nothing; a POST without the CSRF token, from another site's
//! page or with the field taken out, is refused; without a session every
//! page sends to the login. With `RELAY_SCREENSHOTS=DIR` they keep a
//! picture of each page.

use std::time::Duration;

use fantoccini::Locator;
use warp::Filter;

use super::*;
use crate::common::browser::Browser;

/// The failed job's delivery, dead after Slack's refusal.
async fn dead_job(dir: &std::path::Path, daemon: &Daemon) -> replicate_relay::store::Listed {
    post_signed(daemon, "msg_browser", &fixture("prediction-failed.json")).await;
    let rows = wait_deliveries(&dir.join("relay.db"), Duration::from_secs(10), |r| {
        r.len() == 1 && r[0].delivery.state == DeliveryState::Dead
    })
    .await;
    assert_eq!(rows[0].delivery.state, DeliveryState::Dead);
    rows.into_iter().next().unwrap()
}

async fn log_in(browser: &Browser, base: &str) {
    browser.goto(&format!("{base}/login")).await;
    let c = &browser.client;
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    c.find(Locator::Css("form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let at = browser.wait_at(|at| !at.starts_with("/login")).await;
    assert!(
        !at.starts_with("/login"),
        "the login did not go through: {}",
        browser.text().await
    );
}

#[tokio::test]
async fn in_chromium_log_in_find_a_failed_job_read_its_attempts_and_retry_it() {
    let Some(browser) =
        Browser::start("in_chromium_log_in_find_a_failed_job_read_its_attempts_and_retry_it").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let slack = SlackStandIn::start().await;
    slack.plan(&[SlackAnswer::Error("channel_not_found")]);
    let (daemon, client) = start(dir.path(), &slack).await;
    let dead = dead_job(dir.path(), &daemon).await;
    // Some traffic for the overview's charts.
    for (i, status) in ["succeeded", "succeeded", "canceled", "succeeded"]
        .iter()
        .enumerate()
    {
        post_signed(
            &daemon,
            &format!("msg_ok{i}"),
            &payload(&format!("ok{i}"), status),
        )
        .await;
    }
    let base = client.base.clone();
    let c = &browser.client;

    // Sent to the login, and back to the events after it.
    browser.goto(&format!("{base}/events")).await;
    assert!(
        browser.at().await.starts_with("/login"),
        "{}",
        browser.at().await
    );
    browser.picture("dashboard-login").await;
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    c.find(Locator::Css("form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(browser.wait_at(|at| at == "/events").await, "/events");
    browser.picture("dashboard-events").await;

    // Found by its job id.
    let job = c.find(Locator::Css("input[name=job]")).await.unwrap();
    job.send_keys(&dead.object_id).await.unwrap();
    c.find(Locator::Css("form.filters button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let job = format!("job={}", dead.object_id);
    assert!(browser.wait_at(|at| at.contains(&job)).await.contains(&job));
    let rows = c.find_all(Locator::Css("tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 1, "{}", browser.text().await);
    c.find(Locator::Css(&format!(
        "a[href='/events/{}']",
        dead.delivery.event_seq
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();

    // Its attempt, and what Slack answered.
    let text = browser.wait_text("Slack refused").await;
    assert!(
        text.contains("Slack refused the message: channel_not_found"),
        "{text}"
    );
    c.find(Locator::LinkText("what was asked and answered"))
        .await
        .or(c
            .find(Locator::XPath("//summary[contains(., 'what was asked')]"))
            .await)
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = browser.text().await;
    assert!(text.contains("POST Slack chat.postMessage → 200"), "{text}");
    assert!(text.contains("\"error\":\"channel_not_found\""), "{text}");
    c.find(Locator::XPath(
        "//summary[contains(., 'The message as rendered')]",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    browser.picture("dashboard-event").await;

    // The dead list, the gallery and the overview, for their pictures.
    browser.goto(&format!("{base}/deliveries")).await;
    assert!(browser.text().await.contains("channel_not_found"));
    browser.picture("dashboard-dead").await;
    browser.goto(&format!("{base}/templates")).await;
    c.find(Locator::Css("details summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    browser.picture("dashboard-templates").await;
    browser.goto(&format!("{base}/")).await;
    assert!(browser.text().await.contains("events in 24 h"));
    browser.picture("dashboard-overview").await;
    // On a phone.
    c.set_window_size(400, 860).await.unwrap();
    browser.goto(&format!("{base}/events")).await;
    browser.picture("dashboard-phone").await;
    c.set_window_size(1280, 1000).await.unwrap();

    // Retry, and see it delivered.
    browser
        .goto(&format!("{base}/events/{}", dead.delivery.event_seq))
        .await;
    c.find(Locator::XPath("//button[text()='Retry']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = browser.wait_text("is requeued").await;
    assert!(text.contains("is requeued"), "{text}");
    let mut state = String::new();
    for _ in 0..50 {
        c.refresh().await.unwrap();
        state = c
            .find(Locator::Css("section.delivery h3 .badge"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if state == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(state, "delivered");
    assert_eq!(slack.requests().len(), 6, "5 jobs, and the retry");
    browser.close().await;
    daemon.stop().await;
}

#[tokio::test]
async fn in_chromium_a_hostile_payload_runs_nothing_and_links_nowhere() {
    let Some(browser) =
        Browser::start("in_chromium_a_hostile_payload_runs_nothing_and_links_nowhere").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let slack = SlackStandIn::start().await;
    let (daemon, client) = start(dir.path(), &slack).await;
    post_signed(&daemon, "msg_hostile", &hostile("hostile1")).await;
    let rows = wait_deliveries(&dir.path().join("relay.db"), Duration::from_secs(10), |r| {
        r.len() == 1 && r[0].delivery.state == DeliveryState::Delivered
    })
    .await;
    let base = client.base.clone();
    log_in(&browser, &base).await;
    let c = &browser.client;
    for path in [
        "/".to_owned(),
        "/events".into(),
        format!("/events/{}", rows[0].delivery.event_seq),
    ] {
        browser.goto(&format!("{base}{path}")).await;
        assert_eq!(browser.dialog().await, None, "{path}: a dialog opened");
        assert_eq!(browser.count("img").await, 0, "{path}: an element was made");
        assert_eq!(browser.count("svg[onload], [onerror]").await, 0, "{path}");
        assert_eq!(
            browser.count("a[href^='javascript']").await,
            0,
            "{path}: a live link"
        );
        let scripts = c.find_all(Locator::Css("script")).await.unwrap();
        assert_eq!(scripts.len(), 1, "{path}: only the dashboard's own script");
    }
    // On the event page the payload's strings are there, as text.
    let text = browser.text().await;
    assert!(
        text.contains("acme/<script>alert('model')</script>"),
        "{text}"
    );
    c.find(Locator::XPath("//summary[starts-with(., 'Body')]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = browser.text().await;
    assert!(
        text.contains("\"><img src=x onerror=alert('img')>"),
        "{text}"
    );
    assert!(text.contains("javascript:alert('link')"), "{text}");
    // And in the message's frame.
    c.find(Locator::XPath(
        "//summary[contains(., 'The message as rendered')]",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.find(Locator::Css("iframe.message"))
        .await
        .unwrap()
        .enter_frame()
        .await
        .unwrap();
    let text = browser.text().await;
    assert!(text.contains("<script>alert('prompt')</script>"), "{text}");
    assert_eq!(browser.count("img, script, [onerror]").await, 0);
    assert_eq!(browser.count("a[href^='javascript']").await, 0);
    // The message's own styles apply in the frame (its policy leaves them be).
    let shown = c.find(Locator::Css(".msg")).await.unwrap();
    assert_eq!(shown.css_value("display").await.unwrap(), "flex");
    c.enter_parent_frame().await.unwrap();
    assert_eq!(browser.dialog().await, None);
    browser.close().await;
    daemon.stop().await;
}

#[tokio::test]
async fn in_chromium_a_post_without_the_csrf_token_is_refused() {
    let Some(browser) =
        Browser::start("in_chromium_a_post_without_the_csrf_token_is_refused").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let slack = SlackStandIn::start().await;
    slack.plan(&[SlackAnswer::Error("channel_not_found")]);
    let (daemon, client) = start(dir.path(), &slack).await;
    let dead = dead_job(dir.path(), &daemon).await;
    let base = client.base.clone();
    log_in(&browser, &base).await;
    let c = &browser.client;

    // Another site's page that posts to the dashboard as the page loads.
    let target = format!("{base}/deliveries/{}/retry", dead.delivery.id);
    let page = format!(
        "<!DOCTYPE html><form id=f method=post action=\"{target}\"><input name=back value=/></form><script>document.getElementById('f').submit()</script>"
    );
    let evil = warp::any().map(move || warp::reply::html(page.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_at = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(evil).incoming(listener).run());
    browser.goto(&format!("http://{evil_at}/")).await;
    let mut text = String::new();
    for _ in 0..50 {
        text = browser.text().await;
        if text.contains("Refused") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.contains("Refused"), "{text}");

    // The dashboard's own form with its token taken out.
    browser
        .goto(&format!("{base}/events/{}", dead.delivery.event_seq))
        .await;
    c.execute(
        "document.querySelectorAll('input[name=csrf]').forEach(function (e) { e.remove(); });",
        vec![],
    )
    .await
    .unwrap();
    c.find(Locator::XPath("//button[text()='Retry']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = browser.wait_text("Refused").await;
    assert!(
        text.contains("Refused: the form's CSRF token is missing"),
        "{text}"
    );

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rows = wait_deliveries(&dir.path().join("relay.db"), Duration::ZERO, |_| true).await;
    assert_eq!(
        rows[0].delivery.state,
        DeliveryState::Dead,
        "nothing was requeued"
    );
    assert_eq!(slack.requests().len(), 1);
    browser.close().await;
    daemon.stop().await;
}

#[tokio::test]
async fn in_chromium_without_a_session_every_page_sends_to_the_login() {
    let Some(browser) =
        Browser::start("in_chromium_without_a_session_every_page_sends_to_the_login").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let slack = SlackStandIn::start().await;
    slack.plan(&[SlackAnswer::Error("channel_not_found")]);
    let (daemon, client) = start(dir.path(), &slack).await;
    let dead = dead_job(dir.path(), &daemon).await;
    let base = client.base.clone();
    for path in [
        "/".to_owned(),
        "/events".into(),
        format!("/events/{}", dead.delivery.event_seq),
        "/deliveries?state=dead".into(),
        "/templates".into(),
        format!("/deliveries/{}/message", dead.delivery.id),
    ] {
        browser.goto(&format!("{base}{path}")).await;
        let at = browser.at().await;
        assert!(at.starts_with("/login?next="), "{path}: at {at}");
        assert!(
            !browser.text().await.contains(&dead.object_id),
            "{path}: no data shown"
        );
    }
    browser.close().await;
    daemon.stop().await;
}
