//! The HTTP client the webhook notifier uses: hyper over rustls (ring), with the
//! system's root certificates. Plain `http://` is allowed because the operator
//! chose the URL (a service on the same host, a test receiver).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use warp::http::{HeaderMap, Method, Request, Response, StatusCode, header};

use super::{Cause, DeliveryError};

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
                format!("cannot reach {what}: {}", super::webhook::error_chain(&e)),
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

/// An HTTPS-or-HTTP connector with the native root store.
pub fn connector() -> Result<HttpsConnector<HttpConnector>, String> {
    Ok(finish(
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| {
                format!(
                    "cannot load the system's root certificates ({e}); install the ca-certificates package"
                )
            })?,
    ))
}

/// [`connector`] trusting the certificates in `ca_file` (PEM) instead of
/// the system's roots.
pub fn connector_trusting(
    ca_file: &std::path::Path,
) -> Result<HttpsConnector<HttpConnector>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem =
        std::fs::read(ca_file).map_err(|e| format!("cannot read {}: {e}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: {e}", ca_file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a CA certificate: {e}", ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no PEM certificate", ca_file.display()));
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(finish(
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls),
    ))
}

/// The connector for `roots`: https or plain http (the operator chose the
/// URL), HTTP/1.1 and HTTP/2.
fn finish(
    roots: hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes>,
) -> HttpsConnector<HttpConnector> {
    roots.https_or_http().enable_http1().enable_http2().build()
}
