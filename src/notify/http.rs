//! The HTTP client the webhook notifier uses: hyper over rustls (ring), with the
//! system's root certificates. Plain `http://` is allowed because the operator
//! chose the URL (a service on the same host, a test receiver).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use warp::http::{Request, Response};

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

/// An HTTPS-or-HTTP connector with the native root store.
pub fn connector() -> Result<HttpsConnector<HttpConnector>, String> {
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| {
            format!(
                "cannot load the system's root certificates ({e}); install the ca-certificates package"
            )
        })?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build())
}
