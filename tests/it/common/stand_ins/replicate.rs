//! A stand-in for Replicate's HTTP API that checks what Replicate checks
//! (the bearer token) and pages as Replicate pages: lists newest first,
//! `{next, previous, results}` with `next` a full URL carrying the cursor,
//! `created_after` (inclusive) and `created_before` (exclusive) on
//! predictions, no date filter on trainings. It can answer one 429 with
//! `Retry-After`, and records every request.
//!
//! It creates predictions as Replicate does (`POST` to a model's, a
//! deployment's or `/v1/predictions` with a `version`), checking the body:
//! an `input` object, an https `webhook`, known `webhook_events_filter`
//! values. With a [`Runner`], each created prediction then succeeds and
//! its completion is POSTed, signed, to its webhook.

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
    /// A create is done but never answered (a relay killed, or timing
    /// out, mid-POST).
    pub hang_creates: bool,
    /// Lists show predictions without their webhook or input (so an
    /// interrupted create cannot be told).
    pub hide_webhooks: bool,
    /// Runs each created prediction to its end and sends its webhook.
    pub runner: Option<Runner>,
    /// Created predictions' ids, in order.
    pub created: Vec<String>,
    /// Its own URL.
    base: String,
    /// Created in the request being answered, to run.
    to_run: Vec<Value>,
}

/// Runs created predictions to success and POSTs each one's completion,
/// signed with `secret`, to its webhook, over HTTPS trusting `ca_file`.
#[derive(Clone)]
pub struct Runner {
    pub secret: String,
    pub ca_file: std::path::PathBuf,
}

impl Runner {
    async fn run(self, state: Arc<Mutex<State>>, mut prediction: Value) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let id = prediction["id"].as_str().unwrap().to_owned();
        prediction["status"] = json!("succeeded");
        prediction["output"] = json!([format!("https://replicate.delivery/standin/{id}/out.png")]);
        prediction["completed_at"] = prediction["created_at"].clone();
        {
            let mut s = state.lock().unwrap();
            if let Some(p) = s.predictions.iter_mut().find(|p| p["id"] == id.as_str()) {
                *p = prediction.clone();
            }
        }
        let Some(webhook) = prediction["webhook"].as_str() else {
            return;
        };
        let body = serde_json::to_vec(&prediction).unwrap();
        let (status, text) = post_signed_https(
            &self.ca_file,
            webhook,
            &self.secret,
            &format!("msg_standin_{id}"),
            &body,
        )
        .await;
        assert!(
            (200..300).contains(&status),
            "the relay refused the completion of {id}: {status} {text}"
        );
    }
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
            .and(warp::body::bytes())
            .then(
                move |method: warp::http::Method,
                      path: warp::path::FullPath,
                      query: String,
                      auth: Option<String>,
                      body: bytes::Bytes| {
                    let shared = shared.clone();
                    async move {
                        let delay = shared.lock().unwrap().delay;
                        tokio::time::sleep(delay).await;
                        let reply =
                            answer(&shared, method.as_str(), path.as_str(), &query, auth, &body);
                        let (hang, runner, made) = {
                            let mut s = shared.lock().unwrap();
                            let made: Vec<Value> = std::mem::take(&mut s.to_run);
                            (s.hang_creates && !made.is_empty(), s.runner.clone(), made)
                        };
                        if let Some(runner) = runner {
                            for p in made {
                                tokio::spawn(runner.clone().run(shared.clone(), p));
                            }
                        }
                        if hang {
                            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                        }
                        reply
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
    body: &[u8],
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
    if method == "POST" {
        return create(&mut s, path, body);
    }
    let hide = s.hide_webhooks;
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
    let mut results = list.get(cursor..end).unwrap_or(&[]).to_vec();
    if hide {
        for r in &mut results {
            if let Value::Object(r) = r {
                r.remove("webhook");
                r.remove("input");
            }
        }
    }
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

fn unprocessable(detail: &str) -> warp::reply::Response {
    reply(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"title": "Invalid input", "detail": detail, "status": 422}),
    )
}

/// A create, checked as Replicate checks one.
fn create(s: &mut State, path: &str, body: &[u8]) -> warp::reply::Response {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (model, deployment) = match parts.as_slice() {
        ["v1", "models", owner, name, "predictions"] => (Some(format!("{owner}/{name}")), None),
        ["v1", "deployments", owner, name, "predictions"] => (
            Some(format!("{owner}/{name}")),
            Some(format!("{owner}/{name}")),
        ),
        ["v1", "predictions"] => (None, None),
        _ => {
            return reply(
                StatusCode::NOT_FOUND,
                json!({"title": "Not found", "detail": "Not found.", "status": 404}),
            );
        }
    };
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return unprocessable("the body is not a JSON object");
    };
    if !request.get("input").is_some_and(Value::is_object) {
        return unprocessable("input: Input is required and must be an object");
    }
    let version = request.get("version").and_then(Value::as_str);
    if path == "/v1/predictions" && version.is_none() {
        return unprocessable("version: Version is required");
    }
    let webhook = request.get("webhook").and_then(Value::as_str);
    match webhook.map(url::Url::parse) {
        Some(Ok(u)) if u.scheme() == "https" => {}
        Some(_) => return unprocessable("webhook: Enter a valid HTTPS URL"),
        None => {}
    }
    if let Some(filter) = request.get("webhook_events_filter") {
        let known = ["start", "output", "logs", "completed"];
        let ok = filter.as_array().is_some_and(|f| {
            f.iter()
                .all(|e| e.as_str().is_some_and(|e| known.contains(&e)))
        });
        if !ok {
            return unprocessable("webhook_events_filter: unknown event");
        }
    }
    let id = format!("sp{:04}", s.created.len());
    s.created.push(id.clone());
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let prediction = json!({
        "id": id,
        "model": model.unwrap_or_else(|| version.unwrap_or_default().split(':').next().unwrap_or_default().to_owned()),
        "version": version.map(|v| v.rsplit(':').next().unwrap_or(v)).unwrap_or("standin-version"),
        "deployment": deployment,
        "input": request["input"],
        "webhook": webhook,
        "webhook_events_filter": request.get("webhook_events_filter").cloned().unwrap_or(json!(["start", "output", "logs", "completed"])),
        "status": "starting",
        "source": "api",
        "created_at": created,
        "urls": {"get": format!("{}v1/predictions/{id}", s.base)},
    });
    s.predictions.insert(0, prediction.clone());
    s.to_run.push(prediction.clone());
    reply(StatusCode::CREATED, prediction)
}

/// POSTs `body` to `url` over HTTPS trusting `ca_file`, signed with
/// `secret` as Replicate signs a webhook; the answer's status and text.
pub async fn post_signed_https(
    ca_file: &std::path::Path,
    url: &str,
    secret: &str,
    webhook_id: &str,
    body: &[u8],
) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    let connector = replicate_relay::connect::connector_trusting(ca_file).unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    let mut request = warp::http::Request::post(url).header("content-type", "application/json");
    for (name, value) in super::super::signed(secret, webhook_id, super::super::now(), body) {
        request = request.header(name, value);
    }
    let answer = client
        .request(
            request
                .body(Full::new(bytes::Bytes::copy_from_slice(body)))
                .unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = answer.status().as_u16();
    let text = answer.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&text).into_owned())
}
