//! Loopback stand-ins for what the daemon talks to: a Slack Web API that checks
//! what Slack checks, and a webhook receiver that verifies signatures, here;
//! Discord, Teams, ntfy and PagerDuty in their own files, each checking what
//! its service checks. (The SMTP server is a real one: `smtp.rs`.)

pub mod discord;
pub mod ntfy;
pub mod pagerduty;
pub mod replicate;
pub mod teams;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use replicate_relay::clock::SystemClock;
use replicate_relay::signature::{Secret, SignedHeaders, Verifier};
use serde_json::{Value, json};
use warp::Filter;
use warp::http::StatusCode;

/// What the Slack stand-in answers next.
#[derive(Debug, Clone)]
pub enum SlackAnswer {
    Ok,
    RateLimited { retry_after: u64 },
    Status(u16),
    Error(&'static str),
}

/// One request the Slack stand-in received.
#[derive(Debug, Clone)]
pub struct SlackRequest {
    pub at: Instant,
    pub body: Value,
    /// What the stand-in answered.
    pub answer: String,
}

#[derive(Default)]
struct SlackState {
    plan: VecDeque<SlackAnswer>,
    requests: Vec<SlackRequest>,
}

/// A Slack Web API stand-in on 127.0.0.1. `chat.postMessage` checks the bearer
/// token, the JSON shape, the channel and Block Kit limits, like Slack does.
pub struct SlackStandIn {
    pub addr: SocketAddr,
    state: Arc<Mutex<SlackState>>,
}

pub const SLACK_TOKEN: &str = "xoxb-test-token-0000";

impl SlackStandIn {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(SlackState::default()));
        let s = state.clone();
        let route = warp::post()
            .and(warp::path!("api" / "chat.postMessage"))
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::header::optional::<String>("content-type"))
            .and(warp::body::bytes())
            .map(
                move |auth: Option<String>, ctype: Option<String>, body: bytes::Bytes| {
                    let mut st = s.lock().unwrap();
                    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let (status, reply, retry_after) = answer(&mut st, auth, ctype, &parsed);
                    st.requests.push(SlackRequest {
                        at: Instant::now(),
                        body: parsed,
                        answer: reply.to_string(),
                    });
                    let mut res =
                        warp::reply::with_status(warp::reply::json(&reply), status).into_response();
                    if let Some(after) = retry_after {
                        res.headers_mut()
                            .insert("retry-after", after.to_string().parse().unwrap());
                    }
                    res
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(route).incoming(listener).run());
        Self { addr, state }
    }

    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Queues answers for the next requests (then `Ok` again).
    pub fn plan(&self, answers: &[SlackAnswer]) {
        self.state
            .lock()
            .unwrap()
            .plan
            .extend(answers.iter().cloned());
    }

    pub fn requests(&self) -> Vec<SlackRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Waits until `n` requests arrived.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<SlackRequest> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.requests();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

use warp::Reply;

fn answer(
    st: &mut SlackState,
    auth: Option<String>,
    ctype: Option<String>,
    body: &Value,
) -> (StatusCode, Value, Option<u64>) {
    let err = |code: &str| (StatusCode::OK, json!({"ok": false, "error": code}), None);
    if auth.as_deref() != Some(&format!("Bearer {SLACK_TOKEN}")) {
        return err("invalid_auth");
    }
    if !ctype.is_some_and(|c| c.starts_with("application/json")) {
        return err("invalid_form_data");
    }
    let Some(obj) = body.as_object() else {
        return err("invalid_json");
    };
    let channel = obj.get("channel").and_then(Value::as_str).unwrap_or("");
    if channel.is_empty() {
        return err("channel_not_found");
    }
    let text = obj.get("text").and_then(Value::as_str).unwrap_or("");
    let blocks = obj.get("blocks").and_then(Value::as_array);
    if text.is_empty() && blocks.is_none_or(|b| b.is_empty()) {
        return err("no_text");
    }
    if let Some(blocks) = blocks
        && (!blocks_ok(blocks) || !images_fetchable(blocks))
    {
        return err("invalid_blocks");
    }
    match st.plan.pop_front().unwrap_or(SlackAnswer::Ok) {
        SlackAnswer::Ok => (
            StatusCode::OK,
            json!({"ok": true, "channel": "C0TEST", "ts": "1795000000.000100"}),
            None,
        ),
        SlackAnswer::RateLimited { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            json!({"ok": false, "error": "ratelimited"}),
            Some(retry_after),
        ),
        SlackAnswer::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            json!({"ok": false, "error": "internal_error"}),
            None,
        ),
        SlackAnswer::Error(code) => err(code),
    }
}

/// Block Kit limits Slack enforces with `invalid_blocks`.
fn blocks_ok(blocks: &[Value]) -> bool {
    let len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    blocks.len() <= 50
        && blocks.iter().all(|b| match b["type"].as_str() {
            Some("header") => b["text"]["type"] == "plain_text" && len(&b["text"]["text"]) <= 150,
            Some("section") => {
                len(&b["text"]["text"]) <= 3000
                    && b["fields"]
                        .as_array()
                        .is_none_or(|f| f.len() <= 10 && f.iter().all(|x| len(&x["text"]) <= 2000))
            }
            Some("actions") => b["elements"].as_array().is_some_and(|e| e.len() <= 25),
            Some("context") => b["elements"].as_array().is_some_and(|e| e.len() <= 10),
            Some("divider") => true,
            Some("rich_text") => b["elements"]
                .as_array()
                .is_some_and(|e| !e.is_empty() && e.iter().all(rich_element_ok)),
            Some("image") => {
                let url = b["image_url"].as_str().unwrap_or("");
                url.starts_with("http")
                    && url.len() <= 3000
                    && b["alt_text"].is_string()
                    && len(&b["alt_text"]) <= 2000
            }
            _ => false,
        })
}

/// A rich text element (section, preformatted, quote, list) as Slack takes it:
/// literal text pieces, links with a URL, lists of sections.
fn rich_element_ok(e: &Value) -> bool {
    let pieces_ok = |v: &Value| {
        v["elements"].as_array().is_some_and(|p| {
            p.iter().all(|piece| match piece["type"].as_str() {
                Some("text") => piece["text"]
                    .as_str()
                    .is_some_and(|t| t.chars().count() <= 3000),
                Some("link") => piece["url"].as_str().is_some_and(|u| u.starts_with("http")),
                Some("emoji" | "user" | "channel" | "broadcast" | "date" | "usergroup") => true,
                _ => false,
            })
        })
    };
    match e["type"].as_str() {
        Some("rich_text_section" | "rich_text_preformatted" | "rich_text_quote") => pieces_ok(e),
        Some("rich_text_list") => {
            matches!(e["style"].as_str(), Some("bullet" | "ordered"))
                && e["elements"].as_array().is_some_and(|items| {
                    items
                        .iter()
                        .all(|i| i["type"] == "rich_text_section" && pieces_ok(i))
                })
        }
        _ => false,
    }
}

/// Slack fetches every image block's picture and refuses the message when it
/// cannot; here, a URL under `/expired/` is one it cannot fetch.
fn images_fetchable(blocks: &[Value]) -> bool {
    blocks.iter().all(|b| {
        b["type"] != "image" || !b["image_url"].as_str().unwrap_or("").contains("/expired/")
    })
}

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
