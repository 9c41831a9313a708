//! The pooled HTTP client the notifiers post with, over the shared
//! connector ([`crate::connect`]), and how an answer becomes a delivery
//! result.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use warp::http::{HeaderMap, Method, Request, Response, StatusCode, header};

use super::{DeliveryError, Failure};
use crate::connect::{ConnectorError, connector, connector_trusting};
use crate::render::helpers::truncate_chars;

/// A receiver's answer: its status, headers, and the start of its body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    /// Who answered, for messages ("Discord at https://…").
    pub what: String,
}

impl Answer {
    /// The wait its `Retry-After` asks for, read now.
    pub fn retry_after(&self) -> Option<Duration> {
        retry_after(&self.headers, SystemTime::now())
    }

    /// `Ok` for a 2xx; otherwise the error its status calls for (transient or
    /// permanent), saying who refused, the receiver's own `reason` (read from
    /// the body by the caller) and `hint`, what to check; a `Retry-After` is
    /// kept.
    pub fn result(
        &self,
        reason: impl FnOnce(&str) -> String,
        hint: &str,
    ) -> Result<(), DeliveryError> {
        if self.status.is_success() {
            return Ok(());
        }
        Err(DeliveryError::new(
            Failure::Http(self.status.as_u16()),
            format!(
                "{} answered HTTP {}: {}{hint}",
                self.what,
                self.status,
                truncate_chars(&reason(&self.body), REASON_KEPT)
            ),
        )
        .with_retry_after(self.retry_after()))
    }
}

/// The reason a receiver's JSON error gives, for [`Answer::result`]: the
/// strings at `pointers` (JSON pointers; a list's strings joined by "; "),
/// joined by ": " in that order; the body as sent when it is not JSON or
/// holds none of them. Each kind names where its service puts its reason.
pub fn json_reason(body: &str, pointers: &[&str]) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.trim().to_owned();
    };
    let parts: Vec<String> = pointers
        .iter()
        .filter_map(|p| match v.pointer(p)? {
            serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
            serde_json::Value::Array(items) => {
                let texts: Vec<&str> = items.iter().filter_map(|i| i.as_str()).collect();
                (!texts.is_empty()).then(|| texts.join("; "))
            }
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        body.trim().to_owned()
    } else {
        parts.join(": ")
    }
}

/// How much of a receiver's answer is read: enough for any error a service
/// sends; the rest is not read at all (the connection is dropped, not
/// reused), so a receiver cannot make the daemon hold its 300 MB page.
pub const ANSWER_READ: usize = 16 * 1024;

/// How many characters of the reason read from an answer go into an error
/// message.
const REASON_KEPT: usize = 512;

/// `Retry-After` (RFC 9110 §10.2.3), for every kind: delay-seconds (a
/// fraction too, which some services send), or an HTTP-date, which is read
/// against `now` (a date passed already is no wait). A number too large
/// for any integer is as long as a wait can be; the dispatcher clamps every
/// pause to `[delivery] max_pause` anyway. What parses as neither is ignored.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = value.parse().ok()?;
        return Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A URL as it may be printed in a log, an error or `route`'s output:
/// scheme, host, port and path, never the user info or the query, which
/// can hold secrets.
pub fn shown_url(url: &str) -> String {
    shown_url_hiding(url, 0)
}

/// [`shown_url`] with the path's last `secret` segments shown as `…`: a
/// Discord webhook's token, a Slack incoming webhook's key, an ntfy topic
/// (which is all the password a public topic has).
pub fn shown_url_hiding(url: &str, secret: usize) -> String {
    let Ok(u) = url::Url::parse(url) else {
        return "(invalid URL)".into();
    };
    let mut out = format!("{}://{}", u.scheme(), u.host_str().unwrap_or("?"));
    if let Some(port) = u.port() {
        out.push_str(&format!(":{port}"));
    }
    let segments: Vec<&str> = u.path_segments().map(|s| s.collect()).unwrap_or_default();
    let open = segments.len().saturating_sub(secret);
    for (i, segment) in segments.iter().enumerate() {
        out.push('/');
        out.push_str(if i < open { segment } else { "…" });
    }
    out
}

/// A shared, pooled HTTP(S) client.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Client {
    pub fn new() -> Result<Self, ConnectorError> {
        Ok(Self {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector()?),
        })
    }

    /// A client that trusts the certificates in `ca_file` (PEM) instead of
    /// the system's: an endpoint behind a private CA.
    pub fn trusting(ca_file: &std::path::Path) -> Result<Self, ConnectorError> {
        Ok(Self {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector_trusting(ca_file)?),
        })
    }

    /// Sends `request` and returns the response with the start of its
    /// body: at most [`ANSWER_READ`] bytes are read.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(Response<()>, String), hyper_util::client::legacy::Error> {
        let response = self.inner.request(request).await?;
        let (parts, mut body) = response.into_parts();
        // The body only feeds error messages; a broken one is not an error itself.
        let mut bytes = Vec::new();
        while bytes.len() < ANSWER_READ {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = ANSWER_READ - bytes.len();
                        bytes.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Ok((Response::from_parts(parts, ()), text))
    }
}

impl Client {
    /// POSTs `body` as JSON to `url` with `headers`, and waits at most
    /// `timeout` for the answer. No answer in time, or no connection, is the
    /// transient error that says so; `what` names the receiver in it
    /// ("Discord at https://discord.com/api/webhooks/1/…"), never the secret
    /// parts of its URL.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: &serde_json::Value,
        timeout: Duration,
        what: &str,
    ) -> Result<Answer, DeliveryError> {
        let body = serde_json::to_vec(body).unwrap_or_default();
        self.post(url, headers, Bytes::from(body), timeout, what)
            .await
    }

    /// POSTs `body`, already JSON, as [`Client::post_json`] does: for a body
    /// that must go out byte for byte (a signed one).
    pub async fn post(
        &self,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: Bytes,
        timeout: Duration,
        what: &str,
    ) -> Result<Answer, DeliveryError> {
        self.call(Method::POST, url, headers, body, timeout, what)
            .await
    }

    /// Sends `body`, JSON, with `method` (a PATCH of a message sent
    /// earlier), as [`Client::post`] does.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: Bytes,
        timeout: Duration,
        what: &str,
    ) -> Result<Answer, DeliveryError> {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("replicate-relay/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let request = builder.body(Full::new(body)).map_err(|e| {
            DeliveryError::new(
                Failure::BadAddress,
                format!("cannot build a request to {what}: {e}"),
            )
        })?;
        let asked = || format!("{method} {what}");
        match tokio::time::timeout(timeout, self.send(request)).await {
            Err(_) => {
                let reason = format!("no answer from {what} within {timeout:?}");
                super::exchange::record(asked, None, &reason);
                Err(DeliveryError::new(Failure::Timeout, reason))
            }
            Ok(Err(e)) => {
                let reason = format!("cannot reach {what}: {}", crate::connect::error_chain(&e));
                super::exchange::record(asked, None, &reason);
                Err(DeliveryError::new(Failure::Connect, reason))
            }
            Ok(Ok((response, body))) => {
                super::exchange::record(asked, Some(response.status().as_u16()), &body);
                Ok(Answer {
                    status: response.status(),
                    headers: response.headers().clone(),
                    body,
                    what: what.to_owned(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_both_forms_and_at_the_edges() {
        // Thu, 03 Dec 2026 12:00:00 GMT
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_299_200);
        let secs = Duration::from_secs;
        for (value, want) in [
            ("120", Some(secs(120))),
            (" 0 ", Some(Duration::ZERO)),
            ("1.5", Some(Duration::from_millis(1500))),
            ("999999999", Some(secs(999_999_999))),
            ("18446744073709551615", Some(secs(u64::MAX))),
            ("99999999999999999999999999", Some(Duration::MAX)),
            ("1e308", None),
            ("-5", None),
            ("", None),
            ("soon", None),
            ("Thu, 03 Dec 2026 12:01:30 GMT", Some(secs(90))),
            ("Thu, 03 Dec 2026 11:00:00 GMT", Some(Duration::ZERO)),
            ("Thursday, 03-Dec-26 12:00:10 GMT", Some(secs(10))),
            (
                "Fri, 31 Dec 9999 23:59:59 GMT",
                Some(secs(253_402_300_799 - 1_796_299_200)),
            ),
            ("Thu, 03 Dec 2026 25:00:00 GMT", None),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, value.parse().unwrap());
            assert_eq!(retry_after(&headers, now), want, "{value:?}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn urls_are_shown_without_secrets_and_with_their_port() {
        for (url, hide, want) in [
            (
                "https://user:pw@hooks.example.org/in/abc?token=s3cret",
                0,
                "https://hooks.example.org/in/abc",
            ),
            (
                "http://127.0.0.1:8080/hook#frag",
                0,
                "http://127.0.0.1:8080/hook",
            ),
            ("https://example.org:443/x", 0, "https://example.org/x"),
            (
                "https://discord.com/api/webhooks/118/t0k3n?wait=true",
                1,
                "https://discord.com/api/webhooks/118/…",
            ),
            ("https://ntfy.sh/my-secret-topic", 1, "https://ntfy.sh/…"),
            ("http://[::1]:9/a/b", 5, "http://[::1]:9/…/…"),
            ("not a url", 0, "(invalid URL)"),
        ] {
            assert_eq!(shown_url_hiding(url, hide), want, "{url}");
        }
    }

    #[test]
    fn reasons_from_each_services_json() {
        for (body, pointers, want) in [
            (
                r#"{"message": "Unknown Webhook", "code": 10015}"#,
                &["/message"][..],
                "Unknown Webhook",
            ),
            (
                r#"{"code":40101,"http":401,"error":"unauthorized"}"#,
                &["/error"][..],
                "unauthorized",
            ),
            (
                r#"{"error":{"code":"WorkflowTriggerIsNotEnabled","message":"turned off"}}"#,
                &["/error/code", "/error/message"][..],
                "WorkflowTriggerIsNotEnabled: turned off",
            ),
            (
                r#"{"status":"invalid event","message":"Event object is invalid","errors":["'routing_key' is invalid","'payload.summary' is missing"]}"#,
                &["/message", "/errors"][..],
                "Event object is invalid: 'routing_key' is invalid; 'payload.summary' is missing",
            ),
            (
                "<html>busy</html>\n",
                &["/message"][..],
                "<html>busy</html>",
            ),
            (r#"{"other": 1}"#, &["/message"][..], r#"{"other": 1}"#),
        ] {
            assert_eq!(json_reason(body, pointers), want, "{body}");
        }
    }
}
