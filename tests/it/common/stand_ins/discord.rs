//! A stand-in for a Discord channel webhook that checks what Discord checks:
//! the webhook's id and token, a JSON body, no mentions allowed, and the
//! embed limits (2,000 characters of content, 10 embeds, 256 of title, 4,096
//! of description, 25 fields of 256/1,024, 6,000 in all); it answers as
//! Discord answers: 204, 429 with `retry_after`, 401, 400. With
//! `?wait=true` it answers 200 with the message and its id; a `PATCH` of
//! `…/messages/<id>` edits a message the webhook posted (404, Unknown
//! Message, for any other).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};
use warp::Filter;
use warp::http::StatusCode;

pub const ID: &str = "1180000000000000001";
pub const TOKEN: &str = "good-token_x";

#[derive(Clone, Default)]
pub struct Channel {
    pub posts: Arc<Mutex<Vec<(Instant, Value)>>>,
    /// How many 429s to answer before accepting.
    pub limited: Arc<Mutex<usize>>,
    /// Every edit: the message's id and the new body.
    pub edits: Arc<Mutex<Vec<(String, Value)>>>,
    /// The ids of the messages posted; [`Channel::delete_messages`]
    /// forgets them.
    pub ids: Arc<Mutex<Vec<String>>>,
}

impl Channel {
    pub fn delete_messages(&self) {
        self.ids.lock().unwrap().clear();
    }
}

pub fn error(status: StatusCode, code: u32, message: &str) -> warp::reply::Response {
    use warp::Reply;
    let mut res = warp::reply::with_status(
        warp::reply::json(&json!({"message": message, "code": code})),
        status,
    )
    .into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        res = warp::reply::with_status(
            warp::reply::json(&json!({"message": "You are being rate limited.", "retry_after": 1.2, "global": false})),
            status,
        )
        .into_response();
        res.headers_mut()
            .insert("retry-after", warp::http::HeaderValue::from_static("2"));
    }
    res
}

pub fn len(v: Option<&Value>) -> usize {
    v.and_then(Value::as_str).map_or(0, |s| s.chars().count())
}

/// Why Discord would refuse `body`, if it would.
pub fn invalid(body: &Value) -> Option<&'static str> {
    if body.get("allowed_mentions") != Some(&json!({"parse": []})) {
        return Some("mentions allowed"); // not Discord's rule: ours, checked here
    }
    if len(body.get("content")) > 2_000 {
        return Some("content");
    }
    let embeds = body
        .get("embeds")
        .and_then(Value::as_array)
        .map_or(&[][..], |e| e.as_slice());
    if embeds.len() > 10 || (embeds.is_empty() && len(body.get("content")) == 0) {
        return Some("embeds");
    }
    let mut total = 0;
    for e in embeds {
        let fields = e
            .get("fields")
            .and_then(Value::as_array)
            .map_or(&[][..], |f| f.as_slice());
        if len(e.get("title")) > 256 || len(e.get("description")) > 4_096 || fields.len() > 25 {
            return Some("embed");
        }
        for f in fields {
            let (n, v) = (len(f.get("name")), len(f.get("value")));
            if n == 0 || n > 256 || v == 0 || v > 1_024 {
                return Some("field");
            }
            total += n + v;
        }
        total += len(e.get("title")) + len(e.get("description")) + len(e.pointer("/footer/text"));
    }
    (total > 6_000).then_some("total")
}

pub async fn start() -> (String, Channel) {
    use warp::Reply;
    let channel = Channel::default();
    let c = channel.clone();
    let e = channel.clone();
    let edit = warp::patch()
        .and(warp::path!(
            "api" / "webhooks" / String / String / "messages" / String
        ))
        .and(warp::body::bytes())
        .map(
            move |id: String, token: String, message: String, body: bytes::Bytes| {
                if id != ID || token != TOKEN {
                    return error(StatusCode::UNAUTHORIZED, 50027, "Invalid Webhook Token");
                }
                let Ok(body) = serde_json::from_slice::<Value>(&body) else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        50109,
                        "The request body contains invalid JSON.",
                    );
                };
                if let Some(why) = invalid(&body) {
                    return error(
                        StatusCode::BAD_REQUEST,
                        50035,
                        &format!("Invalid Form Body ({why})"),
                    );
                }
                if !e.ids.lock().unwrap().contains(&message) {
                    return error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
                }
                e.edits.lock().unwrap().push((message.clone(), body));
                warp::reply::json(&json!({"id": message})).into_response()
            },
        );
    let route = warp::post()
        .and(warp::path!("api" / "webhooks" / String / String))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::body::bytes())
        .map(
            move |id: String, token: String, query: String, body: bytes::Bytes| {
                if id != ID {
                    return error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
                }
                if token != TOKEN {
                    return error(StatusCode::UNAUTHORIZED, 50027, "Invalid Webhook Token");
                }
                let Ok(body) = serde_json::from_slice::<Value>(&body) else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        50109,
                        "The request body contains invalid JSON.",
                    );
                };
                if let Some(why) = invalid(&body) {
                    return error(
                        StatusCode::BAD_REQUEST,
                        50035,
                        &format!("Invalid Form Body ({why})"),
                    );
                }
                {
                    let mut limited = c.limited.lock().unwrap();
                    if *limited > 0 {
                        *limited -= 1;
                        c.posts.lock().unwrap().push((Instant::now(), Value::Null));
                        return error(StatusCode::TOO_MANY_REQUESTS, 0, "");
                    }
                }
                c.posts.lock().unwrap().push((Instant::now(), body));
                if query.split('&').any(|p| p == "wait=true") {
                    let mut ids = c.ids.lock().unwrap();
                    let message = format!("13000000000000{:05}", c.posts.lock().unwrap().len());
                    ids.push(message.clone());
                    return warp::reply::json(
                        &json!({"id": message, "channel_id": "1190000000000000001"}),
                    )
                    .into_response();
                }
                StatusCode::NO_CONTENT.into_response()
            },
        )
        .or(edit)
        .unify();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://{addr}/api/webhooks/{ID}"), channel)
}
