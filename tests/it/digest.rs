//! Digests end to end (`group_by` on a route), against the Slack
//! stand-in: 50 trainings of one sweep that end within a minute are one
//! message, counted right; a job without the key goes out at once; a
//! SIGKILL inside the window still gives exactly one digest; two instances
//! on one PostgreSQL database give exactly one.

use std::sync::Arc;
use std::time::Duration;

use crate::common::serve::{Serve, config_on_port, wait_ready};
use crate::common::stand_ins::{SLACK_TOKEN, SlackStandIn};
use crate::common::*;
use replicate_relay::clock::SystemClock;
use serde_json::json;

fn config(slack: &SlackStandIn, wait: &str) -> String {
    format!(
        "[notifiers.chat]\ntype = \"slack\"\ntoken = \"{SLACK_TOKEN}\"\nchannel = \"#ml\"\n\
         api_url = \"{}\"\n\n\
         [[routes]]\nname = \"sweeps\"\ngroup_by = [\"query.sweep\"]\ngroup_wait = \"{wait}\"\n\
         group_max_wait = \"1m\"\nnotify = [\"chat\"]\n",
        slack.api_url()
    )
}

/// Training `id` of the sweep, ended in `status`.
fn training(id: &str, status: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "model": "acme/neon", "version": "v1", "status": status,
        "input": {"learning_rate": 0.001},
        "created_at": "2026-12-04T01:00:00.000000Z",
        "started_at": "2026-12-04T01:00:01.000000Z",
        "completed_at": "2026-12-04T01:04:01.000000Z",
        "error": if status == "failed" { json!("CUDA out of memory") } else { json!(null) },
        "urls": {"get": format!("https://api.replicate.com/v1/trainings/{id}")},
    }))
    .unwrap()
}

async fn send(port: u16, query: &str, webhook_id: &str, body: Vec<u8>) {
    let url = format!("http://127.0.0.1:{port}/hooks/replicate{query}");
    let headers = signed(SECRET, webhook_id, now(), &body);
    let (status, answer) = post(&reqwest::Client::new(), &url, &headers, body).await;
    assert_eq!(status, 200, "{answer}");
}

/// The sweep's 50 trainings, 3 of them failed.
async fn fifty(ports: &[u16], prefix: &str) {
    for n in 0..50 {
        let status = if n % 17 == 5 { "failed" } else { "succeeded" };
        let port = ports[n % ports.len()];
        send(
            port,
            "?sweep=lr",
            &format!("msg_{prefix}{n}"),
            training(&format!("{prefix}{n}"), status),
        )
        .await;
    }
}

fn header(r: &crate::common::stand_ins::slack::SlackRequest) -> String {
    r.body["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_trainings_of_a_sweep_are_one_message_and_a_job_without_the_key_goes_at_once() {
    let slack = SlackStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), SECRET, &config(&slack, "2s"));
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    let port = daemon.running.local_addr().port();
    fifty(&[port], "t").await;
    // A repeat of a member's webhook adds nothing.
    send(port, "?sweep=lr", "msg_t0", training("t0", "succeeded")).await;
    // No sweep: at once, on its own.
    send(port, "", "msg_alone", training("alone", "failed")).await;
    let first = slack.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    assert!(
        first[0].body.to_string().contains("alone"),
        "the job without the key first: {}",
        header(&first[0])
    );

    let all = slack.wait_for(2, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all_after = slack.requests();
    assert_eq!(
        all_after.len(),
        2,
        "one digest: {:#?}",
        all_after.iter().map(header).collect::<Vec<_>>()
    );
    let digest = &all[1];
    assert_eq!(header(digest), "❌ sweep lr: 50 jobs");
    let text = digest.body.to_string();
    assert!(text.contains("47 succeeded, 3 failed"), "{text}");
    assert!(text.contains("and 30 more"), "{text}");
    assert!(digest.answer.contains("\"ok\":true"), "{}", digest.answer);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_inside_the_window_still_gives_exactly_one_digest() {
    let slack = SlackStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (file, port) = config_on_port(dir.path(), &config(&slack, "4s"));
    let relay = Serve::start(&file, &[]);
    wait_ready(port).await;
    fifty(&[port], "k").await;
    relay.kill();
    assert!(
        slack.requests().is_empty(),
        "nothing sent inside the window"
    );

    let relay = Serve::start(&file, &[]);
    wait_ready(port).await;
    let got = slack.wait_for(1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.stop_blocking();
    let all = slack.requests();
    assert_eq!(
        all.len(),
        1,
        "{:#?}",
        all.iter().map(header).collect::<Vec<_>>()
    );
    assert_eq!(header(&got[0]), "❌ sweep lr: 50 jobs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgresql_give_exactly_one_digest() {
    use crate::common::postgres::{Database, on_database, server};
    let Some(server) = server("two_instances_on_postgresql_give_exactly_one_digest") else {
        return;
    };
    let database = Database::create(&server).await;
    let slack = SlackStandIn::start().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = write_config(dir_a.path(), SECRET, &config(&slack, "2s"));
    let b = write_config(dir_b.path(), SECRET, &config(&slack, "2s"));
    on_database(&a, &database, "a");
    on_database(&b, &database, "b");
    let a = Daemon::start(&a, Arc::new(SystemClock)).await;
    let b = Daemon::start(&b, Arc::new(SystemClock)).await;
    let ports = [a.running.local_addr().port(), b.running.local_addr().port()];
    fifty(&ports, "pg").await;
    slack.wait_for(1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = slack.requests();
    assert_eq!(
        all.len(),
        1,
        "{:#?}",
        all.iter().map(header).collect::<Vec<_>>()
    );
    assert_eq!(header(&all[0]), "❌ sweep lr: 50 jobs");
    a.stop().await;
    b.stop().await;
    drop(database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_discord_a_digest_is_one_embed_within_discords_limits() {
    use crate::common::stand_ins::discord;
    let (url, channel) = discord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        SECRET,
        &format!(
            "[notifiers.channel]\ntype = \"discord\"\nwebhook_url = \"{url}/{}\"\n\n\
             [[routes]]\nname = \"sweeps\"\ngroup_by = [\"query.sweep\"]\ngroup_wait = \"1s\"\n\
             notify = [\"channel\"]\n",
            discord::TOKEN
        ),
    );
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    let port = daemon.running.local_addr().port();
    fifty(&[port], "d").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while channel.posts.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no digest");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let posts = channel.posts.lock().unwrap().clone();
    assert_eq!(
        posts.len(),
        1,
        "one digest, accepted by the stand-in's limits"
    );
    let embed = &posts[0].1["embeds"][0];
    assert_eq!(embed["title"], "❌ sweep lr: 50 jobs");
    let description = embed["description"].as_str().unwrap();
    assert!(
        description.contains("47 succeeded, 3 failed"),
        "{description}"
    );
    assert!(description.contains("…and 30 more"), "{description}");
    daemon.stop().await;
}

#[test]
fn route_says_which_group_a_job_joins_and_when_its_digest_goes() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        SECRET,
        "[notifiers.console]\ntype = \"log\"\n\n\
         [[routes]]\nname = \"sweeps\"\ngroup_by = [\"query.sweep\"]\nnotify = [\"console\"]\n",
    );
    let payload = dir.path().join("job.json");
    std::fs::write(&payload, training("t1", "failed")).unwrap();
    let path = payload.to_str().unwrap();
    let grouped = run_relay(&["route", path, "--query", "sweep=lr", "--explain"], &file);
    assert!(
        grouped.contains("✓ sweeps → console (digest: held with query.sweep = \"lr\", sent when no job of the group came for 2m, 30m after the first at most)"),
        "{grouped}"
    );
    let alone = run_relay(&["route", path, "--explain"], &file);
    assert!(
        alone.contains("✓ sweeps → console (digest: no query.sweep, so sent at once)"),
        "{alone}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_ntfy_and_pagerduty_each_get_one_digest_their_services_accept() {
    use crate::common::stand_ins::{ntfy, pagerduty, teams};
    let (teams_url, flow) = teams::start().await;
    let (ntfy_url, published) = ntfy::start().await;
    let (pd_url, service) = pagerduty::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        SECRET,
        &format!(
            "[notifiers.team]\ntype = \"teams\"\nwebhook_url = \"{teams_url}&sig={}\"\n\n\
             [notifiers.phone]\ntype = \"ntfy\"\nurl = \"{ntfy_url}/ml-alerts\"\ntoken = \"{}\"\n\n\
             [notifiers.oncall]\ntype = \"pagerduty\"\nrouting_key = \"{}\"\nurl = \"{pd_url}\"\n\n\
             [[routes]]\nname = \"sweeps\"\ngroup_by = [\"query.sweep\"]\ngroup_wait = \"1s\"\n\
             notify = [\"team\", \"phone\", \"oncall\"]\n",
            teams::SIG,
            ntfy::TOKEN,
            pagerduty::KEY
        ),
    );
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    let port = daemon.running.local_addr().port();
    fifty(&[port], "tn").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while flow.0.lock().unwrap().is_empty()
        || published.0.lock().unwrap().is_empty()
        || service.events.lock().unwrap().is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "no digest");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cards = flow.0.lock().unwrap().clone();
    let notes = published.0.lock().unwrap().clone();
    assert_eq!(cards.len(), 1, "{cards:#?}");
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(
        cards[0].to_string().contains("sweep lr: 50 jobs"),
        "{}",
        cards[0]
    );
    assert!(
        notes[0].to_string().contains("47 succeeded, 3 failed"),
        "{}",
        notes[0]
    );
    assert!(notes[0].to_string().contains("…and 30 more"));
    let events = service.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["event_action"], "trigger", "three jobs failed");
    assert_eq!(events[0]["dedup_key"], "sweeps: sweep lr");
    assert_eq!(events[0]["payload"]["custom_details"]["total"], 50);
    assert_eq!(
        service.incidents.lock().unwrap().get("sweeps: sweep lr"),
        Some(&"triggered")
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_the_group_as_signed_json() {
    use crate::common::stand_ins::WebhookReceiver;
    let hook = WebhookReceiver::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        SECRET,
        &format!(
            "[notifiers.hook]\ntype = \"webhook\"\nurl = \"http://{}/\"\nsecret = \"{SECRET}\"\n\n\
             [[routes]]\nname = \"sweeps\"\ngroup_by = [\"query.sweep\"]\ngroup_wait = \"1s\"\n\
             notify = [\"hook\"]\n",
            hook.addr
        ),
    );
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    let port = daemon.running.local_addr().port();
    fifty(&[port], "w").await;
    hook.wait_for(1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = hook.wait_for(0, Duration::ZERO).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].verified.is_ok(), "{:?}", got[0].verified);
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["type"], "digest");
    assert_eq!(body["group"]["total"], 50);
    assert_eq!(
        body["group"]["counts"],
        json!({"succeeded": 47, "failed": 3})
    );
    assert_eq!(body["group"]["key"], json!({"query.sweep": "lr"}));
    assert_eq!(body["group"]["events"].as_array().unwrap().len(), 50);
    daemon.stop().await;
}
