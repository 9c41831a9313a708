//! Loopback stand-ins for what the daemon talks to: a webhook receiver that
//! verifies signatures, here; Slack, Discord, Teams, ntfy, PagerDuty and
//! Replicate's API in their own files, each checking what its service
//! checks. (The SMTP server is a real one: `smtp.rs`.)

pub mod discord;
pub mod ntfy;
pub mod pagerduty;
pub mod replicate;
pub mod slack;
pub mod teams;

pub use slack::{SLACK_TOKEN, SlackAnswer, SlackStandIn};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use replicate_relay::clock::SystemClock;
use replicate_relay::signature::{Secret, SignedHeaders, Verifier};
use warp::Filter;

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// Whether its Standard Webhooks signature verified with the secret.
    pub verified: Result<(), String>,
}

/// A downstream service receiving the webhook notifier's POSTs.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl WebhookReceiver {
    pub async fn start(secret: &str) -> Self {
        Self::start_with_delay(secret, Duration::ZERO).await
    }

    /// Answers each request only after `delay` (so sends are in flight longer).
    pub async fn start_with_delay(secret: &str, delay: Duration) -> Self {
        let verifier = Verifier::new(
            vec![Secret::parse(secret).unwrap()],
            Duration::from_secs(300),
            Arc::new(SystemClock),
        );
        let received = Arc::new(Mutex::new(Vec::new()));
        let r = received.clone();
        let route = warp::post()
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .and_then(
                move |headers: warp::http::HeaderMap, body: bytes::Bytes| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, std::convert::Infallible>((headers, body))
                },
            )
            .untuple_one()
            .map(move |headers: warp::http::HeaderMap, body: bytes::Bytes| {
                let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
                let verified = verifier
                    .verify(
                        SignedHeaders {
                            id: get("webhook-id"),
                            timestamp: get("webhook-timestamp"),
                            signature: get("webhook-signature"),
                        },
                        &body,
                    )
                    .map_err(|e| e.to_string());
                r.lock().unwrap().push(Received {
                    body: body.to_vec(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect(),
                    verified,
                });
                warp::reply()
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(route).incoming(listener).run());
        Self { addr, received }
    }

    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received.lock().unwrap().clone();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A free TCP port on 127.0.0.1 (for a server started later on purpose).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
