//! What an archive fetches, and from where: the URLs a job names anywhere
//! in its `output` (a training's `weights` among them, unless left out),
//! and the rule that keeps a payload from making the relay fetch from the
//! network it runs in.
//!
//! The rule: `https` only; a host on Replicate's delivery domain
//! (`replicate.delivery` and its subdomains) or listed in `allow_hosts`;
//! and Replicate's hosts must resolve to public addresses, so a signed
//! payload naming `https://x.replicate.delivery` cannot reach 10.0.0.1
//! through a poisoned or split-horizon DNS. A host the user lists is
//! trusted as listed (an internal mirror is theirs to name).
//!
//! A payload is a stranger's input even when signed: the walk is
//! iterative (no recursion to exhaust the stack), looks at no more than
//! [`MAX_URLS`] URLs, and ignores strings too long to be a URL.

use std::net::IpAddr;

use url::Url;

/// Replicate's delivery domain: its file URLs are on it or its subdomains.
pub const DELIVERY_DOMAIN: &str = "replicate.delivery";

/// The most URLs one job's archive considers: more is not an output list.
pub const MAX_URLS: usize = 1_000;

/// The longest string taken for a URL (Replicate's signed URLs are far
/// shorter; a longer string is data, not a link).
const MAX_URL_LEN: usize = 8 * 1024;

/// A URL to fetch, and where in the job it was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub url: String,
    /// The JSON pointer of the string that held it (`/output/0`,
    /// `/output/weights`).
    pub at: String,
}

/// Every `http` or `https` URL in `job`'s `output`, at any depth, each
/// once, depth first (arrays in their order, an object's keys sorted, as
/// serde_json keeps them); a training's `output.weights` only when
/// `weights` is true. At most [`MAX_URLS`].
pub fn urls(job: &serde_json::Value, weights: bool) -> Vec<Named> {
    use serde_json::Value;
    let Some(output) = job.get("output") else {
        return Vec::new();
    };
    let mut found: Vec<Named> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // Depth-first, children pushed in reverse so they come out in order.
    let mut stack: Vec<(&Value, String)> = vec![(output, "/output".to_owned())];
    while let Some((value, at)) = stack.pop() {
        match value {
            Value::String(s) if found.len() < MAX_URLS && is_url(s) && seen.insert(s.as_str()) => {
                found.push(Named { url: s.clone(), at });
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate().rev() {
                    stack.push((item, format!("{at}/{i}")));
                }
            }
            Value::Object(map) => {
                for (key, item) in map.iter().rev() {
                    if !weights && at == "/output" && key == "weights" {
                        continue;
                    }
                    stack.push((item, format!("{at}/{}", escape_pointer(key))));
                }
            }
            _ => {}
        }
    }
    found
}

/// Whether `s` is an absolute `http` or `https` URL with a host.
fn is_url(s: &str) -> bool {
    s.len() <= MAX_URL_LEN
        && (s.starts_with("https://") || s.starts_with("http://"))
        && Url::parse(s).is_ok_and(|u| u.host_str().is_some())
}

/// A key as a JSON pointer writes it (RFC 6901).
fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Why a URL is not fetched; each says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0} is not an https:// URL; archives fetch over HTTPS only")]
    NotHttps(String),
    #[error(
        "{host} is not one of Replicate's file hosts (replicate.delivery and its subdomains); add it to allow_hosts if its files are yours to archive"
    )]
    Host { host: String },
    #[error(
        "{host} resolves to {address}, which is not a public address; a Replicate file host never does, so nothing was fetched"
    )]
    NotPublic { host: String, address: IpAddr },
}

/// How far a host is trusted once allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// One of Replicate's hosts: fetched only from public addresses.
    Replicate,
    /// Listed in `allow_hosts`: trusted as listed.
    Listed,
}

/// Whether `url` may be fetched, by its scheme and host; the addresses a
/// [`Trust::Replicate`] host resolves to are checked with [`public`].
pub fn allowed(url: &str, allow_hosts: &[String]) -> Result<Trust, Refused> {
    let parsed = Url::parse(url).map_err(|_| Refused::NotHttps(url.to_owned()))?;
    if parsed.scheme() != "https" {
        return Err(Refused::NotHttps(crate::notify::http::shown_url(url)));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| Refused::NotHttps(url.to_owned()))?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if allow_hosts
        .iter()
        .any(|h| h.trim_end_matches('.').eq_ignore_ascii_case(&host))
    {
        return Ok(Trust::Listed);
    }
    let replicate = host == DELIVERY_DOMAIN
        || host
            .strip_suffix(DELIVERY_DOMAIN)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1);
    if replicate {
        Ok(Trust::Replicate)
    } else {
        Err(Refused::Host { host })
    }
}

/// Checks the addresses `host` resolved to: every one must be public.
pub fn public(host: &str, addresses: &[IpAddr]) -> Result<(), Refused> {
    match addresses.iter().find(|a| !is_public(**a)) {
        Some(address) => Err(Refused::NotPublic {
            host: host.to_owned(),
            address: *address,
        }),
        None => Ok(()),
    }
}

/// Whether `ip` is an address on the public internet: not loopback,
/// private, shared (CGNAT), link-local, unspecified, broadcast,
/// multicast, documentation, benchmarking or reserved; an IPv4 address
/// written as IPv6 (mapped or NAT64's well-known prefix) as that address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared, RFC 6598
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 198 && (18..20).contains(&b)) // benchmarking, RFC 2544
                || a >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return is_public(IpAddr::V4([a, b, c, d].into()));
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local, deprecated
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible, deprecated
        }
    }
}

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
