//! Intake: the HTTP front door. Receive → check the signature headers → read
//! the body within its share of the memory budget (`budget.rs`) → verify →
//! parse → store → answer. `/healthz` and `/metrics` are in `status.rs`.
//!
//! Nothing slow happens before the answer except the commit itself: the 2xx is
//! sent only once the event is on disk, and every refusal is a JSON body that says
//! why (see the HTTP table in docs/operations.md). Routing (pure and quick) is decided
//! here so its deliveries share the event's commit; sending happens later, from
//! the store, never on this path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use warp::Filter;
use warp::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use warp::reply::{Reply, Response};

mod budget;
mod status;

pub use budget::Budget;
use budget::Held;
pub use status::metrics_filter;
use status::{health, metrics};

use crate::event::{Envelope, Event, Kind, kind_hint, parse_query};
use crate::listen::connections::RequestConn;
use crate::live::{Live, Setup};
use crate::route::plan;
use crate::signature::{SignedHeaders, VerifyError};
use crate::store::{Inserted, NewEvent, Store, StoreError};
use crate::telemetry;

/// Everything a request handler needs, shared by all requests.
pub struct Intake {
    /// The current config (path, size limit, verifier); swapped on reload.
    pub live: Arc<Live<Setup>>,
    pub store: Arc<dyn Store>,
    /// Set when shutdown begins: new webhooks get 503 so the sender retries
    /// against the next instance instead of being acknowledged by a dying one.
    pub stopping: Arc<AtomicBool>,
    /// The supervised tasks: while one is down, health is 503 (webhooks are
    /// still stored, but nothing is being delivered).
    pub tasks: Arc<crate::supervise::Supervisor>,
    /// The memory bodies share until their signature is verified
    /// (`server.max_unverified`).
    pub unverified: Budget,
    /// Whether `/metrics` is answered on this port (`server.metrics`).
    pub metrics_here: bool,
}

impl Intake {
    /// The intake for the config in `live`; its budget for unverified bodies
    /// is sized from that config once (a reload does not resize it).
    pub fn new(
        live: Arc<Live<Setup>>,
        store: Arc<dyn Store>,
        stopping: Arc<AtomicBool>,
        tasks: Arc<crate::supervise::Supervisor>,
    ) -> Self {
        let unverified = Budget::new(live.load().config.server.max_unverified);
        Self {
            live,
            store,
            stopping,
            tasks,
            unverified,
            metrics_here: true,
        }
    }
}

/// The whole HTTP surface as one warp filter. Routing by method and path happens
/// in [`handle`] rather than in warp combinators, so every answer (404 and 405
/// too) is JSON; the filter itself only rejects if warp cannot hand over the body.
pub fn filter(
    intake: Arc<Intake>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<RequestConn>())
        .and(warp::body::stream())
        .then(
            move |method, path: warp::path::FullPath, query, headers, conn, body| {
                let intake = intake.clone();
                let request = Request {
                    method,
                    query,
                    headers,
                    conn,
                };
                async move { handle(&intake, path.as_str(), request, body).await }
            },
        )
}

/// What the intake reads of a request besides its path and body.
struct Request {
    method: Method,
    query: String,
    headers: HeaderMap,
    /// The connection it came on; absent only when a test drives the filter
    /// without a server.
    conn: Option<RequestConn>,
}

async fn handle<S, B>(intake: &Intake, path: &str, request: Request, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let setup = intake.live.load();
    let hook_path = setup.config.server.path.as_str();
    match (path, &request.method) {
        ("/healthz", &Method::GET | &Method::HEAD) => health(intake, &request).await,
        ("/metrics", &Method::GET | &Method::HEAD) if intake.metrics_here => metrics(intake).await,
        (p, &Method::POST) if p == hook_path => webhook(intake, &setup, request, body).await,
        (p, _) if p == hook_path || p == "/healthz" || (p == "/metrics" && intake.metrics_here) => {
            let allow = if p == hook_path { "POST" } else { "GET, HEAD" };
            let mut res = answer(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("use {allow} on {p}"),
            );
            res.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
            res
        }
        (p, _) => answer(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("nothing at {p}; webhooks go to POST {hook_path}"),
        ),
    }
}

/// Why a webhook was refused, each with its status code.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("the daemon is stopping; retry shortly")]
    Stopping,
    #[error("body is larger than the limit of {0} bytes (server.max_body)")]
    TooLarge(u64),
    #[error("the body did not arrive within {0:?}")]
    Timeout(Duration),
    #[error("could not read the body: {0}")]
    Unreadable(String),
    #[error(
        "too many request bodies are being read before their signature is checked (server.max_unverified = {0} bytes); retry shortly"
    )]
    Busy(u64),
    #[error("signature check failed: {0}")]
    Headers(VerifyError),
    #[error("signature check failed: {0}")]
    Signature(#[from] VerifyError),
    #[error("{0}")]
    Body(#[from] crate::event::BodyError),
    #[error("event not stored, retry: {0}")]
    Store(#[from] StoreError),
}

impl Refusal {
    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Refusal::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
            Refusal::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Refusal::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Refusal::Unreadable(_) | Refusal::Body(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Refusal::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Refusal::Headers(_) | Refusal::Signature(_) => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            Refusal::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        }
    }
}

/// The answer to a stored webhook. A struct rather than `json!`, which
/// builds and drops a map for every webhook; fields in the order `json!`
/// wrote them.
#[derive(serde::Serialize)]
struct Stored<'a> {
    event: i64,
    status: &'a str,
    webhook_id: &'a str,
}

/// A webhook that was stored (or already was).
struct Accepted {
    webhook_id: String,
    inserted: Inserted,
    kind: Kind,
    status: String,
}

async fn webhook<S, B>(intake: &Intake, setup: &Setup, request: Request, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let started = std::time::Instant::now();
    let result = accept(intake, setup, request, body).await;
    telemetry::webhook_answered(started.elapsed().as_secs_f64());
    match result {
        Ok(Accepted {
            webhook_id,
            inserted,
            kind,
            status: job_status,
        }) => {
            let (status, seq) = match inserted {
                Inserted::New(seq) => {
                    telemetry::webhook_received(kind.as_str(), &job_status);
                    ("accepted", seq)
                }
                Inserted::Duplicate(seq) => {
                    telemetry::webhook_duplicate();
                    ("duplicate", seq)
                }
            };
            tracing::debug!(message = "Webhook stored.", webhook_id, seq, status);
            warp::reply::json(&Stored {
                event: seq,
                status,
                webhook_id: &webhook_id,
            })
            .into_response()
        }
        Err(refusal) => {
            let (code, kind) = refusal.status();
            telemetry::webhook_rejected(kind);
            if code.is_server_error() {
                tracing::warn!(message = "Webhook not stored.", reason = %refusal, status = code.as_u16());
            } else {
                tracing::info!(message = "Webhook refused.", reason = %refusal, status = code.as_u16());
            }
            let mut res = answer(code, kind, refusal.to_string());
            if code == StatusCode::SERVICE_UNAVAILABLE {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            }
            if matches!(
                refusal,
                Refusal::Stopping
                    | Refusal::TooLarge(_)
                    | Refusal::Timeout(_)
                    | Refusal::Busy(_)
                    | Refusal::Headers(_)
            ) {
                // The body may be unread: do not reuse this connection.
                res.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
            }
            res
        }
    }
}

async fn accept<S, B>(
    intake: &Intake,
    setup: &Setup,
    request: Request,
    body: S,
) -> Result<Accepted, Refusal>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let Request {
        query,
        headers,
        conn,
        ..
    } = request;
    let headers = &headers;
    if intake.stopping.load(Ordering::Relaxed) {
        return Err(Refusal::Stopping);
    }
    // Everything the headers can tell is checked before a byte of the body
    // is read: a stranger without the secret is turned away at once and
    // holds no memory.
    let checked = match &setup.verifier {
        Some(verifier) => {
            let signed = SignedHeaders {
                id: one_header(headers, &WEBHOOK_ID).map_err(Refusal::Headers)?,
                timestamp: one_header(headers, &WEBHOOK_TIMESTAMP).map_err(Refusal::Headers)?,
                signature: one_header(headers, &WEBHOOK_SIGNATURE).map_err(Refusal::Headers)?,
            };
            Some((
                verifier,
                verifier.check_headers(signed).map_err(Refusal::Headers)?,
            ))
        }
        None => None,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let max_body = setup.config.server.max_body;
    if declared.is_some_and(|n| n > max_body) {
        return Err(Refusal::TooLarge(max_body));
    }
    // A trickling sender gets 408 rather than holding a connection and its
    // buffer forever.
    let read_timeout = setup.config.server.read_timeout;
    let (body, budget) = tokio::time::timeout(
        read_timeout,
        read_limited(body, max_body, declared, &intake.unverified),
    )
    .await
    .map_err(|_| Refusal::Timeout(read_timeout))??;

    let webhook_id = match checked {
        Some((verifier, checked)) => {
            checked.verify(verifier, &body)?;
            checked.id().to_owned()
        }
        // Unsigned mode still deduplicates: by the sender's id if it sent one,
        // else by the body's hash (a retry carries the same bytes).
        None => match one_header(headers, &WEBHOOK_ID) {
            Ok(id) => id.to_owned(),
            Err(_) => {
                let digest = Sha256::digest(&body);
                let hex = hex::encode(&digest[..12]);
                format!("sha256_{hex}")
            }
        },
    };
    // Verified (or unsigned by choice): the body no longer counts against
    // what strangers may hold, and its connection is kept until the answer,
    // however many strangers arrive meanwhile.
    drop(budget);
    let _kept = conn.as_ref().map(RequestConn::protect);

    // One pass over the body: what the store indexes, and the fields the
    // routes look at. Routing is a pure function of those and the config, so
    // it is done here and its deliveries are committed with the event: one
    // write per event, and nothing to read back later.
    let pairs = parse_query(&query);
    let (envelope, fields) = Envelope::read_keeping(&body, kind_hint(&pairs), &setup.route_keys)?;
    let received_at_ms = crate::clock::now_ms();
    let kind = envelope.kind;
    let status = envelope.status.as_str().to_owned();
    let view = Event::for_routing_from(fields, pairs, kind, envelope.status.clone());
    let received = plan::Received {
        webhook_id: &webhook_id,
        object_id: &envelope.id,
        received_at_ms,
    };
    let routing = plan::route_event(&setup.config, &view, received);
    let event = NewEvent {
        webhook_id: webhook_id.clone(),
        object_id: envelope.id,
        kind,
        status: view.status.clone(),
        model: envelope.model,
        query,
        body,
        received_at_ms,
        routing,
    };
    let inserted = intake.store.insert(event).await?;
    Ok(Accepted {
        webhook_id,
        inserted,
        kind,
        status,
    })
}

/// Reads the body, failing as soon as it grows past `limit` (a chunked body
/// has no Content-Length, so the header check alone is not enough) or past
/// what the [`Budget`] has left. The buffer grows as bytes arrive, by
/// doubling, up to the declared length: a length a sender only claims costs
/// it nothing, so it must cost us nothing either.
async fn read_limited<S, B>(
    body: S,
    limit: u64,
    declared: Option<u64>,
    budget: &Budget,
) -> Result<(Bytes, Held), Refusal>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    const FIRST: usize = 16 * 1024;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let ceiling = declared.map_or(limit, |d| usize::try_from(d).unwrap_or(limit).min(limit));
    let mut held = Held::default();
    let mut body = std::pin::pin!(body);
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Refusal::Unreadable(e.to_string()))?;
        let needed = buf.len().saturating_add(chunk.remaining());
        if needed > limit {
            return Err(Refusal::TooLarge(limit as u64));
        }
        if needed > buf.capacity() {
            let doubled = buf.capacity().saturating_mul(2).max(FIRST).min(ceiling);
            let target = needed.max(doubled);
            budget
                .grow(&mut held, target - buf.capacity())
                .map_err(|e| Refusal::Busy(e.budget))?;
            buf.reserve_exact(target - buf.len());
        }
        buf.put(chunk);
    }
    Ok((Bytes::from(buf), held))
}

// The signature headers' names, parsed once: a lookup by `&str` parses and
// lowercases the name at every call, on the path to every answer.
static WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
static WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
static WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// Exactly one value of a signature header: two values would make it ambiguous
/// which one was checked, so that is refused like a missing one.
fn one_header<'a>(
    headers: &'a HeaderMap,
    header: &'static HeaderName,
) -> Result<&'a str, VerifyError> {
    let name = header.as_str();
    let mut values = headers.get_all(header).iter();
    let first = values.next().ok_or(VerifyError::MissingHeader(name))?;
    if values.next().is_some() {
        return Err(VerifyError::DuplicateHeader(name));
    }
    let value = first
        .to_str()
        .map_err(|_| VerifyError::UnreadableHeader(name))?;
    // An empty id would make every such request the same dedup key.
    if value.trim().is_empty() {
        return Err(VerifyError::MissingHeader(name));
    }
    Ok(value)
}

/// A JSON answer `{"error": kind, "message": why}`.
fn answer(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": kind, "message": message.into()});
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_header_table() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            one_header(&headers, &WEBHOOK_ID),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
        headers.append("webhook-id", " ".parse().unwrap());
        assert_eq!(
            one_header(&headers, &WEBHOOK_ID),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
        headers.insert("webhook-id", "msg_1".parse().unwrap());
        assert_eq!(one_header(&headers, &WEBHOOK_ID), Ok("msg_1"));
        headers.append("webhook-id", "msg_2".parse().unwrap());
        assert_eq!(
            one_header(&headers, &WEBHOOK_ID),
            Err(VerifyError::DuplicateHeader("webhook-id"))
        );
        headers.insert(
            "webhook-timestamp",
            header::HeaderValue::from_bytes(b"\xff1").unwrap(),
        );
        assert_eq!(
            one_header(&headers, &WEBHOOK_TIMESTAMP),
            Err(VerifyError::UnreadableHeader("webhook-timestamp"))
        );
    }
}
