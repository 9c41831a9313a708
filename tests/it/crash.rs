//! The crash suite: SIGKILL the real daemon at random moments while webhooks
//! arrive, restart it on the same store, and check the promise: every webhook
//! that got a 2xx is delivered, and duplicates come only from sends that were
//! in flight at a kill, and each of them sent again is a duplicate. The
//! benchmark runs it at load scale (`cargo bench --bench ingest --
//! --crash-kills K`, checked in the store).

use std::time::Duration;

use crate::common::senders::{Senders, all_delivered, delivered};
use crate::common::serve::*;
use crate::common::stand_ins::*;
use crate::common::*;
use replicate_relay::dispatch::backoff::random_unit;

const KILLS: usize = 4;
const SENDERS: usize = 4;
/// The webhook notifier's default concurrency: at most this many sends are in
/// flight when the daemon is killed.
const IN_FLIGHT_PER_KILL: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_acknowledged_event() {
    // A slow receiver keeps sends in flight when the kills come.
    let hook = WebhookReceiver::start_with_delay(SECRET, Duration::from_millis(30)).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[notifiers.n]\ntype = \"webhook\"\nurl = \"http://{}/x\"\n\n[[routes]]\nname = \"all\"\nnotify = [\"n\"]\n",
        hook.addr
    );
    let (config, port) = config_on_port(dir.path(), &extra);

    let mut senders = Some(Senders::start(SENDERS, &[port], "crash"));
    let mut acknowledged = None;

    for kill in 0..=KILLS {
        let child = Serve::start(&config, &[("RUST_LOG", "warn")]);
        wait_ready(port).await;
        if kill == KILLS {
            // The last life: stop sending and let everything drain.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let want = senders.take().expect("stopped once").stop().await;
            // Every acknowledged event delivered (a count is not enough:
            // duplicates and stored-but-unanswered events add up).
            all_delivered(&hook, &want).await;
            acknowledged = Some(want.clone());
            // Replicate retries what it thinks failed: every acknowledged
            // webhook sent again is a duplicate, though the kills came before
            // the writer wrote the ids of the newest events to the dedup
            // index (the restart indexes them).
            let client = reqwest::Client::new();
            for object in &want {
                let body = payload(object, "succeeded");
                let mut req = client
                    .post(format!("http://127.0.0.1:{port}/hooks/replicate"))
                    .body(body.clone());
                for (k, v) in signed(SECRET, &format!("msg_{object}"), now(), &body) {
                    req = req.header(k, v);
                }
                let answer: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
                assert_eq!(answer["status"], "duplicate", "{object}: {answer}");
            }
            child.signal("TERM");
            let (code, log) = child.wait(Duration::from_secs(15)).await;
            assert_eq!(code, Some(0), "{log}");
        } else {
            let lifetime = 150 + (random_unit() * 600.0) as u64;
            tokio::time::sleep(Duration::from_millis(lifetime)).await;
            child.kill(); // SIGKILL
        }
    }

    let acknowledged = acknowledged.expect("the last life stopped the senders");
    assert!(
        acknowledged.len() >= 20,
        "only {} acknowledged",
        acknowledged.len()
    );
    let deliveries = delivered(&hook).await;
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|id| !deliveries.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}"
    );
    let duplicates: usize = deliveries.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= KILLS * IN_FLIGHT_PER_KILL,
        "{duplicates} duplicates after {KILLS} kills"
    );
    eprintln!(
        "crash suite: {} acknowledged, {} delivered, {duplicates} duplicates after {KILLS} kills",
        acknowledged.len(),
        deliveries.len()
    );
}
