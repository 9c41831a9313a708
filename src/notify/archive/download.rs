//! Fetching one file for an archive, under [`source`]'s rule: HTTPS only,
//! through the [`Guarded`] resolver, redirects followed only on the same
//! host (a signed URL may hop; it may not leave), a Replicate API token
//! sent to Replicate's hosts alone, and every answer judged: 404 and 410
//! mean Replicate deleted the file (no retry brings it back), 429 and 5xx
//! are worth a retry, any other refusal is not.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use url::Url;

use super::resolve::{Guarded, ResolveError};
use super::source::{self, Refused, Trust};

/// The most redirects one download follows.
const MAX_REDIRECTS: usize = 5;

/// How long a server may take to answer a request with its headers.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// How long a body may go without a byte before the download is given up
/// (a server that stalls mid-file holds nothing for longer).
const IDLE: Duration = Duration::from_secs(60);

/// Why a file was not fetched.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(
        "Replicate deleted the outputs ({url} answered {status}); archive within an hour of completion"
    )]
    Deleted { url: String, status: u16 },
    #[error(
        "{url} redirected to {to}, another host; an archive follows redirects on the same host only"
    )]
    Redirect { url: String, to: String },
    #[error("{url} redirected more than {MAX_REDIRECTS} times")]
    TooManyRedirects { url: String },
    #[error("{url} answered {status}")]
    Status {
        url: String,
        status: u16,
        /// The wait its `Retry-After` asked for (a 429 or 503).
        retry_after: Option<Duration>,
    },
    #[error("cannot fetch {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot request {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{url} did not answer within {}s", .within.as_secs())]
    TimedOut { url: String, within: Duration },
}

impl DownloadError {
    /// The wait the server asked for before another request, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DownloadError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            DownloadError::Status { status, .. } => *status == 429 || *status >= 500,
            DownloadError::Connect { .. } | DownloadError::TimedOut { .. } => true,
            _ => false,
        }
    }
}

/// The body of a file being fetched.
pub type Body = hyper::body::Incoming;

/// A file's answer, its body still to read.
#[derive(Debug)]
pub struct Fetched {
    pub body: Body,
    /// Its size, as announced.
    pub size: Option<u64>,
    /// Its `Content-Type`, as announced (at most 255 bytes of text).
    pub content_type: Option<String>,
}

/// Fetches files for archives.
#[derive(Clone)]
pub struct Downloader {
    client: Client<HttpsConnector<HttpConnector<Guarded>>, Empty<Bytes>>,
    allow_hosts: Vec<String>,
    /// `Authorization` for Replicate's hosts (a Replicate API token).
    token: Option<String>,
    answer_within: Duration,
    idle: Duration,
}

impl Downloader {
    /// Fetching through `resolver` with `tls` (the system's roots, or a
    /// test's CA), sending `token` to Replicate's hosts only.
    pub fn new(
        resolver: Guarded,
        allow_hosts: &[String],
        tls: rustls::ClientConfig,
        token: Option<String>,
    ) -> Self {
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false);
        http.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Downloader {
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(https),
            allow_hosts: allow_hosts.to_vec(),
            token,
            answer_within: ANSWER_WITHIN,
            idle: IDLE,
        }
    }

    /// The same, with other limits on waiting for an answer and on a body
    /// that stops moving.
    pub fn with_limits(self, answer_within: Duration, idle: Duration) -> Self {
        Downloader {
            answer_within,
            idle,
            ..self
        }
    }

    /// The answer for `url`, after the redirects on its host.
    pub async fn get(&self, url: &str) -> Result<Fetched, DownloadError> {
        // As a URL parser writes it: a payload's `out 1.png` is requested
        // as `out%201.png`, which is what its server means.
        let mut current = Url::parse(url).map_or_else(|_| url.to_owned(), |u| u.to_string());
        for _ in 0..=MAX_REDIRECTS {
            let trust = source::allowed(&current, &self.allow_hosts)?;
            let mut request = hyper::Request::get(current.as_str());
            if let (Trust::Replicate, Some(token)) = (trust, &self.token) {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let request = request
                .body(Empty::new())
                .map_err(|e| DownloadError::BadUrl {
                    url: shown(&current),
                    reason: e.to_string(),
                })?;
            let answer = tokio::time::timeout(self.answer_within, self.client.request(request))
                .await
                .map_err(|_| DownloadError::TimedOut {
                    url: shown(&current),
                    within: self.answer_within,
                })?
                .map_err(|e| match refused_by_resolver(&e) {
                    // A Replicate host that resolves to a private address
                    // stays refused: no retry changes the rule.
                    Some(refused) => DownloadError::Refused(refused),
                    None => DownloadError::Connect {
                        url: shown(&current),
                        reason: crate::connect::error_chain(&e),
                    },
                })?;
            let status = answer.status();
            if status.is_redirection() {
                let to = answer
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| Url::parse(&current).ok()?.join(l).ok())
                    .ok_or_else(|| DownloadError::Status {
                        url: shown(&current),
                        status: status.as_u16(),
                        retry_after: None,
                    })?;
                let from = Url::parse(&current).ok();
                if from.as_ref().and_then(Url::host_str) != to.host_str() {
                    return Err(DownloadError::Redirect {
                        url: shown(&current),
                        to: shown(to.as_str()),
                    });
                }
                current = to.to_string();
                continue;
            }
            if matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE) {
                return Err(DownloadError::Deleted {
                    url: shown(url),
                    status: status.as_u16(),
                });
            }
            if !status.is_success() {
                return Err(DownloadError::Status {
                    url: shown(&current),
                    status: status.as_u16(),
                    retry_after: crate::notify::http::retry_after(
                        answer.headers(),
                        std::time::SystemTime::now(),
                    ),
                });
            }
            let headers = answer.headers();
            let size = headers
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.len() <= 255)
                .map(str::to_owned);
            return Ok(Fetched {
                body: answer.into_body(),
                size,
                content_type,
            });
        }
        Err(DownloadError::TooManyRedirects { url: shown(url) })
    }

    /// `body` as the chunks [`super::directory::Directory::write`]
    /// takes, ending in an error when it goes without a byte for the idle
    /// limit.
    pub fn chunks(
        &self,
        body: Body,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + use<> {
        let idle = self.idle;
        futures_util::stream::unfold(Some(body), move |body| async move {
            let mut body = body?;
            loop {
                let Ok(frame) = tokio::time::timeout(idle, body.frame()).await else {
                    let stalled = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no data for {}s", idle.as_secs()),
                    );
                    return Some((Err(stalled), None));
                };
                match frame? {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => return Some((Ok(data), Some(body))),
                        // Trailers: nothing to keep.
                        Err(_) => continue,
                    },
                    Err(e) => return Some((Err(std::io::Error::other(e)), None)),
                }
            }
        })
    }
}

/// The rule's refusal, when that is why the connection was not made (the
/// [`Guarded`] resolver's error, somewhere in the client's chain).
fn refused_by_resolver(e: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(ResolveError::Refused(refused)) = e.downcast_ref::<ResolveError>() {
            return Some(refused.clone());
        }
        cause = e.source();
    }
    None
}

/// A URL as messages show it: no query (Replicate's signed URLs carry
/// their signature there).
fn shown(url: &str) -> String {
    crate::notify::http::shown_url(url)
}
