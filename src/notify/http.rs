//! The pooled HTTP client the notifiers post with, over the shared
//! connector ([`crate::connect`]), and how an answer becomes a delivery
//! result.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use warp::http::{HeaderMap, Method, Request, Response, StatusCode, header};

use super::{Cause, DeliveryError};
use crate::connect::{connector, connector_trusting};

/// A receiver's answer: its status, headers, and the start of its body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    /// Who answered, for messages ("Discord at https://…").
    pub what: String,
}

impl Answer {
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
            Cause::Http(self.status.as_u16()),
            format!(
                "{} answered HTTP {}: {}{hint}",
                self.what,
                self.status,
                reason(&self.body)
            ),
        )
        .with_retry_after(super::webhook::retry_after(&self.headers)))
    }
}

/// How much of a response body is kept for error messages.
const BODY_KEPT: usize = 512;

/// A shared, pooled HTTP(S) client.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Client {
    pub fn new() -> Result<Self, String> {
        Ok(Self {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector()?),
        })
    }

    /// A client that trusts the certificates in `ca_file` (PEM) instead of
    /// the system's: an endpoint behind a private CA.
    pub fn trusting(ca_file: &std::path::Path) -> Result<Self, String> {
        Ok(Self {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector_trusting(ca_file)?),
        })
    }

    /// Sends `request` and returns the response with (the start of) its body.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(Response<()>, String), hyper_util::client::legacy::Error> {
        let response = self.inner.request(request).await?;
        let (parts, body) = response.into_parts();
        // The body only feeds error messages; a broken one is not an error itself.
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(BODY_KEPT)]).into_owned();
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
        let mut builder = Request::builder()
            .method(Method::POST)
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
                Cause::BadAddress,
                format!("cannot build a request to {what}: {e}"),
            )
        })?;
        match tokio::time::timeout(timeout, self.send(request)).await {
            Err(_) => Err(DeliveryError::new(
                Cause::Timeout,
                format!("no answer from {what} within {timeout:?}"),
            )),
            Ok(Err(e)) => Err(DeliveryError::new(
                Cause::Connect,
                format!("cannot reach {what}: {}", crate::connect::error_chain(&e)),
            )),
            Ok(Ok((response, body))) => Ok(Answer {
                status: response.status(),
                headers: response.headers().clone(),
                body,
                what: what.to_owned(),
            }),
        }
    }
}
