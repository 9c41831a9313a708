//! `type = "ntfy"`: a topic URL on ntfy.sh or a self-hosted server, an
//! optional access token, a priority per status and extra tags, read and
//! checked with every problem reported.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::read::{Reader, Sensitive, Table};
use crate::event::Status;

#[derive(Debug, Clone)]
pub struct Ntfy {
    /// The server's root (`https://ntfy.sh/`), where JSON is published.
    pub server: url::Url,
    /// The topic, the last segment of the configured URL.
    pub topic: String,
    /// An access token (`tk_…`), sent as a bearer token.
    pub token: Option<Sensitive>,
    /// Priority (1–5) by status name, over the defaults.
    pub priorities: BTreeMap<String, u8>,
    /// Tags added to every message (emoji short codes or words).
    pub tags: Vec<String>,
    pub timeout: Duration,
}

pub(super) const KEYS: &[&str] = &["url", "token", "token_file", "priority", "tags", "timeout"];

/// ntfy's rule for topic names.
fn valid_topic(topic: &str) -> bool {
    (1..=64).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(super) fn read(r: &mut Reader, t: Table<'_>) -> Option<Ntfy> {
    let timeout = r.duration(t, "timeout").unwrap_or(Duration::from_secs(30));
    let url = r.string(t, "url");
    let target = match url.as_deref() {
        None => {
            r.error(
                t.key("url"),
                "missing; the topic URL, e.g. url = \"https://ntfy.sh/my-relay-alerts\"",
            );
            None
        }
        Some(text) => match split_topic_url(text) {
            Ok(target) => Some(target),
            Err(e) => {
                r.error(t.key("url"), e);
                None
            }
        },
    };
    let token = r.secret(t, "token");
    let mut priorities = BTreeMap::new();
    let priority_path = t.key("priority");
    if let Some(p) = r.table(t.map.get("priority"), &priority_path) {
        for (status, value) in p.map {
            if !Status::KNOWN.contains(&status.as_str()) {
                r.error(
                    p.key(status),
                    format!("unknown status (known: {})", Status::KNOWN.join(", ")),
                );
                continue;
            }
            match value.as_u64() {
                Some(n @ 1..=5) => {
                    priorities.insert(status.clone(), n as u8);
                }
                _ => r.error(p.key(status), "must be 1 (min) to 5 (max)"),
            }
        }
    }
    let tags = r.strings(t, "tags");
    let (server, topic) = target?;
    Some(Ntfy {
        server,
        topic,
        token,
        priorities,
        tags,
        timeout,
    })
}

/// `https://ntfy.sh/topic` → (`https://ntfy.sh/`, `topic`); a server under a
/// path (`https://example.org/ntfy/topic`) keeps its path.
fn split_topic_url(text: &str) -> Result<(url::Url, String), String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{text}` is not an http(s) URL"));
    }
    if url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{text}` carries a query or credentials; put an access token in token_file"
        ));
    }
    let path = url.path().trim_end_matches('/');
    let (base, topic) = path.rsplit_once('/').unwrap_or(("", path));
    if !valid_topic(topic) {
        return Err(format!(
            "`{text}` does not end in a topic (1–64 letters, digits, `-` or `_`), e.g. https://ntfy.sh/my-relay-alerts"
        ));
    }
    let mut server = url.clone();
    server.set_path(&format!("{base}/"));
    Ok((server, topic.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_url_table() {
        let ok =
            |server: &str, topic: &str| Ok((url::Url::parse(server).unwrap(), topic.to_owned()));
        let cases = [
            (
                "https://ntfy.sh/relay-alerts",
                ok("https://ntfy.sh/", "relay-alerts"),
            ),
            (
                "https://ntfy.sh/relay_alerts/",
                ok("https://ntfy.sh/", "relay_alerts"),
            ),
            (
                "http://127.0.0.1:8080/ml",
                ok("http://127.0.0.1:8080/", "ml"),
            ),
            (
                "https://example.org/ntfy/ml",
                ok("https://example.org/ntfy/", "ml"),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(split_topic_url(text), want, "{text}");
        }
        for bad in [
            "ntfy.sh/alerts",
            "ftp://ntfy.sh/alerts",
            "https://ntfy.sh/",
            "https://ntfy.sh/bad topic",
            "https://ntfy.sh/a?auth=x",
            "https://user:pw@ntfy.sh/a",
            &format!("https://ntfy.sh/{}", "a".repeat(65)),
        ] {
            assert!(split_topic_url(bad).is_err(), "{bad}");
        }
    }
}
