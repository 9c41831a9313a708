//! An archive kept in an object store (`to = "s3://bucket/prefix"`,
//! `gs://bucket`, `az://container`) through the `object_store` crate: each
//! file streamed up in parts and hashed as it goes, visible under its key
//! only once the upload completes (a small file in one request, a large one
//! as a multipart upload completed last, aborted if anything fails).
//!
//! Requests go through the daemon's own HTTP client ([`Hyper`]: hyper on
//! rustls and ring) rather than the crate's default, which would bring a
//! second TLS stack. Credentials come from the keys here or, as the
//! crate's own builders read them, from the environment (`AWS_*`,
//! `GOOGLE_*`, `AZURE_*`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::BodyExt;
use object_store::buffered::BufWriter;
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest,
    HttpRequestBody, HttpResponse, HttpResponseBody, HttpService,
};
use object_store::path::Path as Key;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;

use super::directory::{Tally, WriteError, Written};
use crate::config::read::Sensitive;

/// Bytes held before a file goes up as a multipart upload, and the size
/// of each part after that (S3 takes parts of 5 MiB and more).
const PART: usize = 8 << 20;

/// Parts of one file going up at once: memory is at most this many parts
/// and the one being filled.
const PARTS_IN_FLIGHT: usize = 2;

/// How long a request to the store may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(120);

/// Which service a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    S3,
    Gcs,
    Azure,
}

/// An object store as `to` and its keys name it.
#[derive(Debug, Clone)]
pub struct Target {
    pub cloud: Cloud,
    pub bucket: String,
    /// Keys under it start with this (no leading or trailing `/`).
    pub prefix: String,
    /// An S3-compatible service's URL (MinIO, R2, …); requests then name
    /// the bucket in the path.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Sensitive>,
}

impl Target {
    /// The URL `to` gave, normalised: `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        let scheme = match self.cloud {
            Cloud::S3 => "s3",
            Cloud::Gcs => "gs",
            Cloud::Azure => "az",
        };
        match self.prefix.as_str() {
            "" => format!("{scheme}://{}", self.bucket),
            prefix => format!("{scheme}://{}/{prefix}", self.bucket),
        }
    }
}

/// Why an object store cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {to}: {source}")]
pub struct OpenError {
    pub to: String,
    #[source]
    pub source: object_store::Error,
}

/// A bucket ready to write to.
#[derive(Debug, Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    target: Target,
}

impl Bucket {
    /// Opens `target` with requests over `tls`.
    pub fn open(target: &Target, tls: rustls::ClientConfig) -> Result<Self, OpenError> {
        let connector = Connector { tls };
        let url = target.url();
        let fail = |source| OpenError {
            to: url.clone(),
            source,
        };
        let store: Arc<dyn ObjectStore> = match target.cloud {
            Cloud::S3 => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url.clone())
                    .with_http_connector(connector);
                if let Some(endpoint) = &target.endpoint {
                    b = b
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(region) = &target.region {
                    b = b.with_region(region);
                }
                if let (Some(id), Some(secret)) = (&target.access_key_id, &target.secret_access_key)
                {
                    b = b
                        .with_access_key_id(id)
                        .with_secret_access_key(secret.expose());
                }
                Arc::new(b.build().map_err(fail)?)
            }
            Cloud::Gcs => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url.clone())
                    .with_http_connector(connector)
                    .build()
                    .map_err(fail)?,
            ),
            Cloud::Azure => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url.clone())
                    .with_http_connector(connector)
                    .build()
                    .map_err(fail)?,
            ),
        };
        Ok(Bucket {
            store,
            target: target.clone(),
        })
    }

    /// The store's key for `key` (a `/`-separated path under `to`).
    fn key(&self, key: &str) -> Key {
        self.target
            .prefix
            .split('/')
            .chain(key.split('/'))
            .filter(|p| !p.is_empty())
            .collect()
    }

    fn failed(&self, key: &str, source: impl std::fmt::Display) -> WriteError {
        WriteError::Store {
            key: self.location(key),
            reason: source.to_string(),
        }
    }

    /// Streams `body` into `key`, at most `max` bytes.
    pub async fn write<S, E>(
        &self,
        key: &str,
        body: S,
        max: u64,
        content_type: Option<&str>,
    ) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let mut attributes = Attributes::new();
        if let Some(content_type) = content_type {
            attributes.insert(Attribute::ContentType, content_type.to_owned().into());
        }
        let mut upload = BufWriter::with_capacity(self.store.clone(), self.key(key), PART)
            .with_max_concurrency(PARTS_IN_FLIGHT)
            .with_attributes(attributes);
        let mut shut = false;
        let result = async {
            let mut tally = Tally::new(key, max);
            let mut body = std::pin::pin!(body);
            while let Some(chunk) = body.next().await {
                let chunk = tally.count(chunk)?;
                upload
                    .write_all(&chunk)
                    .await
                    .map_err(|e| self.failed(key, e))?;
            }
            // Completes the upload: the object appears now, whole. After
            // this, even when it fails, the writer takes no abort.
            shut = true;
            upload.shutdown().await.map_err(|e| self.failed(key, e))?;
            Ok(tally.written())
        }
        .await;
        if result.is_err() && !shut {
            // Parts already sent are dropped; nothing appears under the key.
            let _ = upload.abort().await;
        }
        result
    }

    /// What `key` holds, at most `max` bytes; `None` when there is no such
    /// object or it is larger.
    pub async fn read(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, WriteError> {
        let path = self.key(key);
        let meta = match self.store.head(&path).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed(key, e)),
        };
        if meta.size > max {
            return Ok(None);
        }
        let got = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.failed(key, e))?;
        let bytes = got.bytes().await.map_err(|e| self.failed(key, e))?;
        Ok(Some(bytes.to_vec()))
    }

    /// `key` as a URL of the store (`s3://bucket/prefix/key`).
    pub fn location(&self, key: &str) -> String {
        let base = self.target.url();
        match key {
            "" => format!("{base}/"),
            key => format!("{base}/{key}"),
        }
    }
}

/// Makes the store's HTTP client: [`Hyper`] with the daemon's TLS settings.
#[derive(Debug)]
struct Connector {
    tls: rustls::ClientConfig,
}

impl HttpConnector for Connector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Hyper::new(self.tls.clone())))
    }
}

/// The store's requests over hyper, `https` (and `http` for an endpoint
/// on a private network that says so).
#[derive(Debug)]
struct Hyper {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        HttpRequestBody,
    >,
}

impl Hyper {
    fn new(tls: rustls::ClientConfig) -> Self {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Hyper {
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build(https),
        }
    }
}

#[async_trait::async_trait]
impl HttpService for Hyper {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let answer = tokio::time::timeout(ANSWER_WITHIN, self.client.request(request))
            .await
            .map_err(|_| {
                HttpError::new(
                    HttpErrorKind::Timeout,
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {}s", ANSWER_WITHIN.as_secs()),
                    ),
                )
            })?
            .map_err(|e| {
                let kind = if e.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                HttpError::new(kind, e)
            })?;
        let (parts, body) = answer.into_parts();
        let body =
            HttpResponseBody::new(body.map_err(|e| HttpError::new(HttpErrorKind::Request, e)));
        Ok(HttpResponse::from_parts(parts, body))
    }
}
