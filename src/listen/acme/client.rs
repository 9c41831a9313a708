//! How the ACME client reaches the directory: the project's own HTTPS
//! connector (the system's roots, or `directory_ca_file`'s), with a limit
//! on each request, which instant-acme's built-in client lacks: a CA that
//! accepts a connection and never answers must not stall renewals.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};

use crate::config::AcmeConfig;

/// The longest one request to the CA may take to be answered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Client {
    inner: HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
}

impl Client {
    /// A client trusting `config.directory_ca_file`, else the system's roots.
    pub fn new(config: &AcmeConfig) -> Result<Self, crate::connect::ConnectorError> {
        let connector = match &config.directory_ca_file {
            Some(ca_file) => crate::connect::connector_trusting(ca_file)?,
            None => crate::connect::connector()?,
        };
        Ok(Self {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }
}

impl HttpClient for Client {
    fn request(
        &self,
        req: warp::http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let answer = self.inner.request(req);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
                Ok(Ok(response)) => Ok(BytesResponse::from(response)),
                Ok(Err(e)) => Err(Error::Other(crate::connect::error_chain(&e).into())),
                Err(_) => Err(Error::Other(
                    format!("no answer within {REQUEST_TIMEOUT:?}").into(),
                )),
            }
        })
    }
}
