//! The daemon's own catching up, end to end: it was down while 20
//! predictions and 5 trainings ended (their webhooks never came); started,
//! it notifies each once at its first round, waiting out a 429 on the way;
//! their late webhooks add nothing; a restart in the middle of a round
//! neither misses a job nor notifies one twice.

use std::sync::Arc;
use std::time::Duration;

use super::job;
use crate::common::senders::delivered;
use crate::common::stand_ins::WebhookReceiver;
use crate::common::stand_ins::replicate::{ReplicateApi, TOKEN};
use crate::common::*;
use replicate_relay::clock::SystemClock;
use serde_json::{Value, json};

/// 20 predictions (every final status) and 5 trainings, ended while the
/// relay was down; one still running.
fn ended_while_down(standin: &ReplicateApi, prefix: &str) -> Vec<Value> {
    let statuses = ["succeeded", "failed", "canceled", "aborted"];
    let predictions: Vec<Value> = (0..20)
        .map(|i| {
            job(
                &format!("{prefix}p{i:02}"),
                statuses[i % 4],
                i as i64,
                json!({}),
            )
        })
        .collect();
    let trainings: Vec<Value> = (0..5)
        .map(|i| {
            job(
                &format!("{prefix}t{i}"),
                "succeeded",
                90 * (i + 1),
                json!({}),
            )
        })
        .collect();
    let mut s = standin.state.lock().unwrap();
    s.page_size = 6;
    s.predictions = predictions.clone();
    s.predictions.insert(
        0,
        job(&format!("{prefix}running"), "processing", 0, json!({})),
    );
    s.trainings = trainings.clone();
    predictions.into_iter().chain(trainings).collect()
}

/// A relay catching up every second from `standin`, sending every event
/// to `hook`.
fn config(
    dir: &std::path::Path,
    standin: &ReplicateApi,
    hook: &WebhookReceiver,
) -> std::path::PathBuf {
    write_config(
        dir,
        SECRET,
        &format!(
            "[replicate]\napi_url = \"{}\"\ntoken = \"{TOKEN}\"\ncatch_up = \"1s\"\n\n\
             [notifiers.n]\ntype = \"webhook\"\nurl = \"http://{}/x\"\n\n\
             [[routes]]\nname = \"everything\"\nnotify = [\"n\"]\n",
            standin.url, hook.addr
        ),
    )
}

/// Each of `jobs` reached `hook` exactly once, and nothing else did.
async fn each_once(hook: &WebhookReceiver, jobs: &[Value]) {
    let got = delivered(hook).await;
    assert_eq!(got.len(), jobs.len(), "{got:?}");
    for j in jobs {
        let id = j["id"].as_str().unwrap();
        assert_eq!(got.get(id), Some(&1), "{id}: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_that_ended_while_it_was_down_are_notified_once_and_late_webhooks_add_nothing() {
    let standin = ReplicateApi::start().await;
    let jobs = ended_while_down(&standin, "down_");
    // Its first listing is throttled: Replicate says to come back in 1 s.
    standin.state.lock().unwrap().refuse_next = Some(1);
    let hook = WebhookReceiver::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), &standin, &hook);
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;

    // Within its first round (catch_up = 1s: the next one would be due).
    hook.wait_for(25, Duration::from_secs(15)).await;
    each_once(&hook, &jobs).await;
    let (requests, times) = {
        let s = standin.state.lock().unwrap();
        (s.requests.clone(), s.times.clone())
    };
    assert!(requests[0].starts_with("GET /v1/predictions?created_after="));
    assert_eq!(requests[1], requests[0], "the throttled page, asked again");
    assert!(
        times[1].duration_since(times[0]) >= Duration::from_secs(1),
        "Retry-After waited out"
    );

    // Replicate's webhooks, late: stored as the events they are, no second
    // alert, now or at the next rounds.
    for (n, j) in jobs.iter().enumerate() {
        post_signed(
            &daemon,
            &format!("msg_late_{n}"),
            &serde_json::to_vec(j).unwrap(),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    each_once(&hook, &jobs).await;
    let rounds = standin
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /v1/predictions?created_after="))
        .count();
    assert!(rounds >= 3, "a round every second: {rounds}");

    // `events` says where each came from.
    let listed = run_relay(&["events", "--json", "--limit", "100"], &file);
    let sources: Vec<(String, String)> = listed
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|e| {
            (
                e["webhook_id"].as_str().unwrap_or_default().to_owned(),
                e["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        sources.contains(&("catchup_down_p00_succeeded".into(), "catch-up".into())),
        "{sources:?}"
    );
    assert!(
        sources.contains(&("msg_late_0".into(), "webhook".into())),
        "{sources:?}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_a_round_neither_misses_nor_repeats() {
    let standin = ReplicateApi::start().await;
    let jobs = ended_while_down(&standin, "cut_");
    // Slow pages, so the round can be cut.
    standin.state.lock().unwrap().delay = Duration::from_millis(400);
    let hook = WebhookReceiver::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), &standin, &hook);

    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while standin.requests().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "no round started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.stop().await;
    let before = hook.wait_for(0, Duration::ZERO).await.len();
    assert!(
        before < jobs.len(),
        "cut in the middle: {before} of {} notified",
        jobs.len()
    );

    standin.state.lock().unwrap().delay = Duration::ZERO;
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    hook.wait_for(25, Duration::from_secs(15)).await;
    // Past another round, which finds everything in.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    each_once(&hook, &jobs).await;
    daemon.stop().await;
}
