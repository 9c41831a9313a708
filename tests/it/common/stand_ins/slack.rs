//! A stand-in for Slack's Web API that checks what Slack checks: the bot
//! token, JSON, a channel, text or blocks within Block Kit's limits, and
//! images it can fetch. It keeps what it was sent: `chat.postMessage`
//! (a reply's `thread_ts` must be a message of that channel) and
//! `chat.update` (the channel by its ID, a `ts` it has, else
//! `message_not_found`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// `chat.postMessage` or `chat.update`.
    pub method: String,
    pub body: Value,
    /// What the stand-in answered.
    pub answer: String,
}

#[derive(Default)]
struct SlackState {
    plan: VecDeque<SlackAnswer>,
    requests: Vec<SlackRequest>,
    /// Messages posted: their ts, and the ts of the one whose thread they
    /// are in.
    messages: Vec<(String, Option<String>)>,
}

/// The one channel's ID; any channel name posts to it.
pub const CHANNEL_ID: &str = "C0TEST";

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
            .and(warp::path!("api" / String))
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::header::optional::<String>("content-type"))
            .and(warp::body::bytes())
            .map(
                move |method: String,
                      auth: Option<String>,
                      ctype: Option<String>,
                      body: bytes::Bytes| {
                    let mut st = s.lock().unwrap();
                    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let (status, reply, retry_after) =
                        answer(&mut st, &method, auth, ctype, &parsed);
                    st.requests.push(SlackRequest {
                        at: Instant::now(),
                        method,
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

    /// Deletes every message (as a person in the channel can): an update
    /// of one is then `message_not_found`.
    pub fn delete_messages(&self) {
        self.state.lock().unwrap().messages.clear();
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
    method: &str,
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
    // A name is resolved; an ID must be the channel's (chat.update takes
    // IDs only).
    let by_id = channel.starts_with('C');
    if channel.is_empty() || (by_id && channel != CHANNEL_ID) || (method == "chat.update" && !by_id)
    {
        return err("channel_not_found");
    }
    let ts = obj.get("ts").and_then(Value::as_str);
    let thread_ts = obj.get("thread_ts").and_then(Value::as_str);
    let known = |ts: &str| {
        st.messages
            .iter()
            .any(|(m, parent)| m == ts && parent.is_none())
    };
    match method {
        "chat.postMessage" if ts.is_some() => return err("invalid_arguments"),
        "chat.postMessage" if thread_ts.is_some_and(|t| !known(t)) => {
            return err("thread_not_found");
        }
        "chat.postMessage" => {}
        "chat.update" if ts.is_none_or(|t| !known(t)) => return err("message_not_found"),
        "chat.update" => {}
        _ => {
            return (
                StatusCode::NOT_FOUND,
                json!({"ok": false, "error": "unknown_method"}),
                None,
            );
        }
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
        SlackAnswer::Ok => {
            let ts = match ts {
                Some(updated) => updated.to_owned(),
                None => {
                    let ts = format!("1795000000.{:06}", st.messages.len() + 100);
                    st.messages.push((ts.clone(), thread_ts.map(str::to_owned)));
                    ts
                }
            };
            (
                StatusCode::OK,
                json!({"ok": true, "channel": CHANNEL_ID, "ts": ts}),
                None,
            )
        }
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
