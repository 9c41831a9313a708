//! `type = "webhook"`: its keys (URL, headers, signing secret), read and
//! checked with every problem reported.

use std::time::Duration;

use crate::config::read::{Reader, Table};
use crate::signature::Secret;

#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// When set, requests are signed with Standard Webhooks headers.
    pub secret: Option<Secret>,
    pub timeout: Duration,
}

pub(super) const KEYS: &[&str] = &["url", "headers", "secret", "secret_file", "timeout"];

pub(super) fn read(r: &mut Reader, t: Table<'_>) -> Option<Webhook> {
    let timeout = r.duration(t, "timeout").unwrap_or(Duration::from_secs(30));
    let url = r.string(t, "url");
    match &url {
        None => r.error(t.key("url"), "missing; the URL to POST to"),
        Some(u)
            if u.parse::<warp::http::Uri>().map_or(true, |p| {
                !matches!(p.scheme_str(), Some("http" | "https")) || p.host().is_none()
            }) =>
        {
            r.error(t.key("url"), format!("`{u}` is not an http(s) URL"))
        }
        Some(_) => {}
    }
    let mut headers = Vec::new();
    let headers_path = t.key("headers");
    if let Some(h) = r.table(t.map.get("headers"), &headers_path) {
        for (k, v) in h.map {
            let Some(v) = v.as_str() else {
                r.error(h.key(k), "a header value must be a string");
                continue;
            };
            if warp::http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || warp::http::HeaderValue::from_str(v).is_err()
            {
                r.error(h.key(k), "is not a valid HTTP header name and value");
                continue;
            }
            headers.push((k.clone(), v.to_owned()));
        }
    }
    let secret = r
        .secret(t, "secret")
        .and_then(|s| match Secret::parse(s.expose()) {
            Ok(secret) => Some(secret),
            Err(e) => {
                r.error(
                    t.key("secret"),
                    format!(
                        "{e}; generate one with `openssl rand -base64 32` and prefix it with whsec_"
                    ),
                );
                None
            }
        });
    Some(Webhook {
        url: url?,
        headers,
        secret,
        timeout,
    })
}
