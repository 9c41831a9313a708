//! The crash suite: SIGKILL the real daemon at random moments while webhooks
//! arrive, restart it on the same store, and check the promise: every webhook
//! that got a 2xx is delivered, and duplicates come only from sends that were
//! in flight at a kill, and each of them sent again is a duplicate. The
//! benchmark runs it at load scale (`cargo bench --bench ingest --
//! --crash-kills K`, checked in the store).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::serve::*;
use crate::common::stand_ins::*;
use crate::common::*;
use replicate_relay::dispatch::backoff::random_unit;

const KILLS: usize = 4;
const SENDERS: usize = 4;
/// The webhook notifier's default concurrency: at most this many sends are in
/// flight when the daemon is killed.
const IN_FLIGHT_PER_KILL: usize = 4;

/// How many times each event (by prediction id) reached the receiver.
async fn delivered(hook: &WebhookReceiver) -> HashMap<String, usize> {
    let mut out: HashMap<String, usize> = HashMap::new();
    for r in hook.wait_for(0, Duration::ZERO).await {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        *out.entry(v["id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    out
}

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

    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (acknowledged, running) = (acknowledged.clone(), running.clone());
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0;
            while running.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let object = format!("p_crash_{s}_{n}");
                let body = payload(&object, "succeeded");
                let mut req = client
                    .post(format!("http://127.0.0.1:{port}/hooks/replicate"))
                    .timeout(Duration::from_secs(5))
                    .body(body.clone());
                for (k, v) in signed(SECRET, &format!("msg_{object}"), now(), &body) {
                    req = req.header(k, v);
                }
                // Refused connections and 503s are expected around the kills;
                // only a 2xx is a promise.
                if let Ok(res) = req.send().await
                    && res.status().is_success()
                {
                    acknowledged.lock().unwrap().push(object);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    for kill in 0..=KILLS {
        let child = Serve::start(&config, &[("RUST_LOG", "warn")]);
        wait_ready(port).await;
        if kill == KILLS {
            // The last life: stop sending and let everything drain.
            tokio::time::sleep(Duration::from_millis(300)).await;
            running.store(false, std::sync::atomic::Ordering::SeqCst);
            for s in senders.drain(..) {
                s.await.unwrap();
            }
            // Wait until every acknowledged event has been delivered (a count
            // is not enough: duplicates and stored-but-unanswered events add up).
            let want = acknowledged.lock().unwrap().clone();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                let delivered = delivered(&hook).await;
                if want.iter().all(|id| delivered.contains_key(id)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
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

    let acknowledged = acknowledged.lock().unwrap().clone();
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
