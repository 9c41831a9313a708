//! A stand-in for Replicate's HTTP API that checks what Replicate checks
//! (the bearer token) and pages as Replicate pages: lists newest first,
//! `{next, previous, results}` with `next` a full URL carrying the cursor,
//! `created_after` (inclusive) and `created_before` (exclusive) on
//! predictions, no date filter on trainings. It can answer one 429 with
//! `Retry-After`, and records every request.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use warp::Filter;
use warp::http::StatusCode;

pub const TOKEN: &str = "r8_standin_token";

#[derive(Default)]
pub struct State {
    /// Newest first, as Replicate lists them.
    pub predictions: Vec<Value>,
    pub trainings: Vec<Value>,
    /// Results per page (Replicate's is 100).
    pub page_size: usize,
    /// The next request is answered 429 with `Retry-After` of this many
    /// seconds.
    pub refuse_next: Option<u64>,
    /// Pages point their `next` here instead of at the stand-in.
    pub next_base: Option<String>,
    /// Every request: `METHOD /path?query`, and when it came.
    pub requests: Vec<String>,
    pub times: Vec<std::time::Instant>,
    /// How long each answer takes (so a round is slow enough to cut).
    pub delay: std::time::Duration,
    /// Its own URL.
    base: String,
}

pub struct ReplicateApi {
    /// `http://127.0.0.1:<port>/`.
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

impl ReplicateApi {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State {
            page_size: 100,
            ..State::default()
        }));
        let shared = state.clone();
        let route = warp::any()
            .and(warp::method())
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::optional::<String>("authorization"))
            .then(
                move |method: warp::http::Method,
                      path: warp::path::FullPath,
                      query: String,
                      auth: Option<String>| {
                    let shared = shared.clone();
                    async move {
                        let delay = shared.lock().unwrap().delay;
                        tokio::time::sleep(delay).await;
                        answer(&shared, method.as_str(), path.as_str(), &query, auth)
                    }
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(route).incoming(listener).run());
        let url = format!("http://{addr}/");
        state.lock().unwrap().base = url.clone();
        ReplicateApi { url, state }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

fn reply(status: StatusCode, body: Value) -> warp::reply::Response {
    use warp::Reply;
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

fn answer(
    state: &Mutex<State>,
    method: &str,
    path: &str,
    query: &str,
    auth: Option<String>,
) -> warp::reply::Response {
    use warp::Reply;
    let mut s = state.lock().unwrap();
    s.times.push(std::time::Instant::now());
    s.requests.push(if query.is_empty() {
        format!("{method} {path}")
    } else {
        format!("{method} {path}?{query}")
    });
    if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"title": "Unauthenticated", "detail": "You did not pass a valid authentication token", "status": 401}),
        );
    }
    if let Some(secs) = s.refuse_next.take() {
        let mut r = reply(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"title": "Request was throttled.", "detail": "Request was throttled.", "status": 429}),
        );
        r.headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
        return r;
    }
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let list = match (method, path) {
        ("GET", "/v1/predictions") => {
            let after = param("created_after");
            let before = param("created_before");
            s.predictions
                .iter()
                .filter(|p| {
                    let at = p["created_at"].as_str().unwrap_or("");
                    after.as_deref().is_none_or(|a| at >= a)
                        && before.as_deref().is_none_or(|b| at < b)
                })
                .cloned()
                .collect::<Vec<_>>()
        }
        ("GET", "/v1/trainings") => s.trainings.clone(),
        ("GET", "/v1/huge") => {
            return warp::reply::with_header(
                "x".repeat(17 << 20),
                "content-type",
                "application/json",
            )
            .into_response();
        }
        ("GET", "/v1/webhooks/default/secret") => {
            return reply(
                StatusCode::OK,
                json!({"key": "whsec_c3RhbmRpbi1zZWNyZXQtZm9yLXRlc3Rz"}),
            );
        }
        _ => {
            return reply(
                StatusCode::NOT_FOUND,
                json!({"title": "Not found", "detail": "Not found.", "status": 404}),
            );
        }
    };
    let cursor: usize = param("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let end = (cursor + s.page_size).min(list.len());
    let results = list.get(cursor..end).unwrap_or(&[]).to_vec();
    let next = (end < list.len()).then(|| {
        let mut kept: Vec<(String, String)> =
            params.into_iter().filter(|(k, _)| k != "cursor").collect();
        kept.push(("cursor".into(), end.to_string()));
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(kept)
            .finish();
        let at = s.next_base.clone().unwrap_or_else(|| s.base.clone());
        format!("{}{}?{query}", at, path.trim_start_matches('/'))
    });
    reply(
        StatusCode::OK,
        json!({"next": next, "previous": null, "results": results}),
    )
}
