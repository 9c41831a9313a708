//! The Replicate API client. Requests carry the token as a bearer token to
//! the configured base URL and nowhere else: a page's `next` link on
//! another origin is refused, not followed. Each answer must come within
//! [`ANSWER_WITHIN`] and is read to at most [`MAX_ANSWER`] bytes. A 429 is
//! waited out as its `Retry-After` asks (at most [`MAX_WAIT`] each time,
//! [`RETRIES`] times), for creates too: Replicate refuses the request
//! before doing anything. A read is retried after a 5xx or a broken
//! connection; a create is not (it may have happened), and its caller
//! decides.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::Value;
use url::Url;
use warp::http::{Method, Request, StatusCode, header};

use crate::config::read::Sensitive;

/// How long an answer may take.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// The most of an answer read: a page of 100 predictions with their inputs
/// and logs fits; more is not an answer this client asked for.
pub const MAX_ANSWER: usize = 16 << 20;

/// The longest `Retry-After` waited out at once; a longer one is returned
/// to the caller as the error it is.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// How many times one request is sent again (after a 429, or a read after
/// a 5xx or a broken connection).
pub const RETRIES: usize = 3;

/// Why a request did not give an answer to use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error(
        "Replicate refused the API token ({status}); check it (https://replicate.com/account/api-tokens)"
    )]
    Unauthorized { status: u16 },
    #[error("Replicate answered {status} to {what}: {detail}")]
    Status {
        status: u16,
        what: String,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("no answer from Replicate to {what} within {}", humantime::format_duration(*within))]
    Timeout { what: String, within: Duration },
    #[error("cannot reach Replicate for {what}: {reason}")]
    Unreached { what: String, reason: String },
    #[error("the connection to Replicate broke during {what}: {reason}")]
    Connect { what: String, reason: String },
    #[error("Replicate's answer to {what} is over {MAX_ANSWER} bytes; not read")]
    TooLarge { what: String },
    #[error("Replicate's answer to {what} is not the JSON expected: {reason}")]
    NotJson { what: String, reason: String },
    #[error("`{0}` is not a URL on the API's host; not requested (the token goes there only)")]
    Foreign(String),
}

impl ApiError {
    /// Whether asking again later may work.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => *status == 429 || *status >= 500,
            ApiError::Timeout { .. } | ApiError::Connect { .. } | ApiError::Unreached { .. } => {
                true
            }
            _ => false,
        }
    }

    /// Whether a POST that ended so may have been done all the same: the
    /// request went out and no answer said it was refused (no answer in
    /// time, a broken connection, a 5xx, a success that could not be
    /// read).
    pub fn may_have_been_done(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => *status >= 500,
            ApiError::Timeout { .. }
            | ApiError::Connect { .. }
            | ApiError::TooLarge { .. }
            | ApiError::NotJson { .. } => true,
            ApiError::Unauthorized { .. } | ApiError::Unreached { .. } | ApiError::Foreign(_) => {
                false
            }
        }
    }

    /// The wait Replicate asked for, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What a page walk does after a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    Next,
    Stop,
}

/// Replicate's API, as one account.
#[derive(Clone)]
pub struct Api {
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: Url,
    token: Sensitive,
    within: Duration,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl Api {
    /// The API at `base` (`https://api.replicate.com/`, or a stand-in's
    /// URL), with `token`, over the system's root certificates.
    pub fn new(base: &str, token: Sensitive) -> Result<Self, ApiError> {
        let connector = crate::connect::connector().map_err(|e| ApiError::Unreached {
            what: "the API".into(),
            reason: e.to_string(),
        })?;
        Self::with_connector(base, token, connector)
    }

    /// The same over `connector` (a test's CA).
    pub fn with_connector(
        base: &str,
        token: Sensitive,
        connector: HttpsConnector<HttpConnector>,
    ) -> Result<Self, ApiError> {
        let mut base = Url::parse(base).map_err(|_| ApiError::Foreign(base.to_owned()))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Api {
            http: HyperClient::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            base,
            token,
            within: ANSWER_WITHIN,
        })
    }

    /// The same, waiting at most `within` for each answer instead of
    /// [`ANSWER_WITHIN`].
    pub fn answering_within(mut self, within: Duration) -> Self {
        self.within = within;
        self
    }

    /// How long each answer is waited for.
    pub fn within(&self) -> Duration {
        self.within
    }

    /// `path` (`v1/predictions`) on the API, or `url` when it is a full
    /// URL on the API's own origin (a page's `next`).
    pub fn url(&self, path_or_url: &str) -> Result<Url, ApiError> {
        let url = match Url::parse(path_or_url) {
            Ok(url) => url,
            Err(_) => self
                .base
                .join(path_or_url.trim_start_matches('/'))
                .map_err(|_| ApiError::Foreign(path_or_url.to_owned()))?,
        };
        if url.origin() != self.base.origin() {
            return Err(ApiError::Foreign(crate::notify::http::shown_url(
                url.as_str(),
            )));
        }
        Ok(url)
    }

    /// `GET path_or_url`, as JSON.
    pub async fn get(&self, path_or_url: &str) -> Result<Value, ApiError> {
        let url = self.url(path_or_url)?;
        self.call(Method::GET, url, None).await
    }

    /// `POST path` with `body`, as JSON. Not sent again after a 5xx or a
    /// broken connection: it may have been done.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        let url = self.url(path)?;
        self.call(Method::POST, url, Some(body)).await
    }

    /// One page of a list (`{next, results}`) at `path_or_url`: its
    /// results, and where the next page is, if there is one.
    pub async fn page(&self, path_or_url: &str) -> Result<(Vec<Value>, Option<String>), ApiError> {
        let mut page = self.get(path_or_url).await?;
        let next = page["next"].as_str().map(str::to_owned);
        match page["results"].take() {
            Value::Array(results) => Ok((results, next)),
            _ => Err(ApiError::NotJson {
                what: shown(path_or_url),
                reason: "no `results` list".into(),
            }),
        }
    }

    /// Walks the pages of a list, newest first as Replicate gives them,
    /// from `path_or_url`, handing each page's results to `visit` until it
    /// says stop or there is no `next`. One page is held at a time.
    pub async fn pages(
        &self,
        path_or_url: &str,
        mut visit: impl FnMut(&[Value]) -> Walk,
    ) -> Result<(), ApiError> {
        let mut next = Some(path_or_url.to_owned());
        while let Some(at) = next.take() {
            let (results, after) = self.page(&at).await?;
            if visit(&results) == Walk::Stop {
                break;
            }
            next = after;
        }
        Ok(())
    }

    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let what = format!("{method} {}", url.path());
        let body = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()));
        let mut tries = 0;
        loop {
            tries += 1;
            let result = self.once(&method, &url, body.clone(), &what).await;
            let again = match &result {
                Err(ApiError::Status {
                    status: 429,
                    retry_after,
                    ..
                }) => retry_after.unwrap_or(Duration::from_secs(1)) <= MAX_WAIT,
                Err(e) if method == Method::GET => e.is_transient(),
                _ => false,
            };
            if !again || tries > RETRIES {
                return result;
            }
            let wait = result
                .as_ref()
                .err()
                .and_then(ApiError::retry_after)
                .unwrap_or(Duration::from_secs(1 << (tries - 1)));
            tracing::info!(message = "Replicate asked to wait, or failed; asking again.", request = %what, wait_ms = wait.as_millis() as u64);
            tokio::time::sleep(wait).await;
        }
    }

    async fn once(
        &self,
        method: &Method,
        url: &Url,
        body: Option<Bytes>,
        what: &str,
    ) -> Result<Value, ApiError> {
        let mut request = Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token.expose()),
            )
            .header(
                header::USER_AGENT,
                concat!("replicate-relay/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|_| ApiError::Foreign(shown(url.as_str())))?;
        let exchange = async {
            let answer = self.http.request(request).await.map_err(|e| {
                let (what, reason) = (what.to_owned(), crate::connect::error_chain(&e));
                // Not connected: the request never left.
                if e.is_connect() {
                    ApiError::Unreached { what, reason }
                } else {
                    ApiError::Connect { what, reason }
                }
            })?;
            let (parts, mut incoming) = answer.into_parts();
            let mut bytes = Vec::new();
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| ApiError::Connect {
                    what: what.to_owned(),
                    reason: e.to_string(),
                })?;
                if let Ok(data) = frame.into_data() {
                    if bytes.len() + data.len() > MAX_ANSWER {
                        return Err(ApiError::TooLarge {
                            what: what.to_owned(),
                        });
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Ok((parts, bytes))
        };
        let asked = || format!("Replicate {what}");
        let answered = tokio::time::timeout(self.within, exchange)
            .await
            .map_err(|_| ApiError::Timeout {
                what: what.to_owned(),
                within: self.within,
            })
            .and_then(|inner| inner);
        let (parts, bytes) = match answered {
            Ok(answered) => answered,
            Err(e) => {
                crate::notify::exchange::record(asked, None, &e.to_string());
                return Err(e);
            }
        };
        let status = parts.status;
        crate::notify::exchange::record(
            asked,
            Some(status.as_u16()),
            &String::from_utf8_lossy(
                &bytes[..bytes.len().min(crate::notify::exchange::ANSWER_KEPT)],
            ),
        );
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(ApiError::Unauthorized {
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            return Err(ApiError::Status {
                status: status.as_u16(),
                what: what.to_owned(),
                detail: crate::render::helpers::truncate_chars(
                    &crate::notify::http::json_reason(&text, &["/detail", "/title"]),
                    300,
                ),
                retry_after: crate::notify::http::retry_after(
                    &parts.headers,
                    std::time::SystemTime::now(),
                ),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ApiError::NotJson {
            what: what.to_owned(),
            reason: e.to_string(),
        })
    }
}

fn shown(url: &str) -> String {
    crate::notify::http::shown_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(base: &str) -> Api {
        crate::install_crypto_provider();
        Api::new(base, Sensitive::new("r8_x")).unwrap()
    }

    #[test]
    fn the_token_goes_to_the_apis_origin_only() {
        let a = api("https://api.replicate.com");
        assert_eq!(
            a.url("v1/predictions").unwrap().as_str(),
            "https://api.replicate.com/v1/predictions"
        );
        assert_eq!(
            a.url("/v1/trainings?cursor=x").unwrap().as_str(),
            "https://api.replicate.com/v1/trainings?cursor=x"
        );
        assert!(
            a.url("https://api.replicate.com/v1/predictions?cursor=c")
                .is_ok()
        );
        for foreign in [
            "https://evil.example/v1/predictions",
            "http://api.replicate.com/v1/predictions",
            "https://api.replicate.com:8443/v1/predictions",
            "https://api.replicate.com.evil.example/v1",
        ] {
            assert!(
                matches!(a.url(foreign), Err(ApiError::Foreign(_))),
                "{foreign}"
            );
        }
        // A stand-in under a path keeps it.
        let s = api("http://127.0.0.1:9/replicate");
        assert_eq!(
            s.url("v1/predictions").unwrap().as_str(),
            "http://127.0.0.1:9/replicate/v1/predictions"
        );
    }

    #[test]
    fn which_errors_are_worth_another_try() {
        let status = |status| ApiError::Status {
            status,
            what: "GET /".into(),
            detail: String::new(),
            retry_after: None,
        };
        assert!(status(429).is_transient());
        assert!(status(502).is_transient());
        assert!(!status(404).is_transient());
        assert!(!status(422).is_transient());
        assert!(!ApiError::Unauthorized { status: 401 }.is_transient());
        assert!(
            ApiError::Timeout {
                what: "x".into(),
                within: ANSWER_WITHIN
            }
            .is_transient()
        );
    }
}
