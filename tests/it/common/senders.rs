//! Load for the crash tests: tasks that send fresh signed webhooks to the
//! daemons on `ports` in turn until told to stop, keeping the ids of those
//! answered 2xx (only a 2xx is a promise; refused connections and 503s are
//! expected around a kill, and kept apart from any other answer); and what
//! a webhook receiver got, by job.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::stand_ins::WebhookReceiver;
use super::{SECRET, now, payload, signed};

/// Senders running until [`Senders::stop`].
pub struct Senders {
    acknowledged: Arc<Mutex<Vec<String>>>,
    /// Answers neither 2xx, 503 nor a refused connection.
    unexpected: Arc<Mutex<Vec<String>>>,
    running: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Senders {
    /// `count` senders, each sending succeeded predictions `p_{prefix}_{s}_{n}`
    /// to the ports in turn.
    pub fn start(count: usize, ports: &[u16], prefix: &str) -> Senders {
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let unexpected = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicBool::new(true));
        let tasks = (0..count)
            .map(|s| {
                let (acknowledged, running) = (acknowledged.clone(), running.clone());
                let unexpected = unexpected.clone();
                let (ports, prefix) = (ports.to_vec(), prefix.to_owned());
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut n = 0;
                    while running.load(Ordering::SeqCst) {
                        n += 1;
                        let object = format!("p_{prefix}_{s}_{n}");
                        let body = payload(&object, "succeeded");
                        let port = ports[n % ports.len()];
                        let mut req = client
                            .post(format!("http://127.0.0.1:{port}/hooks/replicate"))
                            .timeout(Duration::from_secs(5))
                            .body(body.clone());
                        for (k, v) in signed(SECRET, &format!("msg_{object}"), now(), &body) {
                            req = req.header(k, v);
                        }
                        match req.send().await {
                            Ok(res) if res.status().is_success() => {
                                acknowledged.lock().unwrap().push(object)
                            }
                            Ok(res) if res.status() == 503 => {}
                            Err(e) if e.is_connect() => {}
                            Ok(res) => unexpected
                                .lock()
                                .unwrap()
                                .push(format!("{object}: {}", res.status())),
                            Err(e) => unexpected.lock().unwrap().push(format!("{object}: {e}")),
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Senders {
            acknowledged,
            unexpected,
            running,
            tasks,
        }
    }

    /// Stops sending; returns the ids answered 2xx.
    pub async fn stop(self) -> Vec<String> {
        self.stop_with_answers().await.0
    }

    /// Stops sending; returns the ids answered 2xx, and every answer that
    /// was neither 2xx, 503 nor a refused connection.
    pub async fn stop_with_answers(self) -> (Vec<String>, Vec<String>) {
        self.running.store(false, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        let acknowledged = self.acknowledged.lock().unwrap().clone();
        let unexpected = self.unexpected.lock().unwrap().clone();
        (acknowledged, unexpected)
    }
}

/// How many times each job (by its id) reached `hook`.
pub async fn delivered(hook: &WebhookReceiver) -> HashMap<String, usize> {
    let mut out: HashMap<String, usize> = HashMap::new();
    for r in hook.wait_for(0, Duration::ZERO).await {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        *out.entry(v["id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    out
}

/// Waits (up to 30 s) until every id in `want` has reached `hook`; returns
/// what reached it.
pub async fn all_delivered(hook: &WebhookReceiver, want: &[String]) -> HashMap<String, usize> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = delivered(hook).await;
        if want.iter().all(|id| got.contains_key(id)) || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
