//! `type = "discord"`: a channel's webhook URL (it carries the webhook's
//! token, so it is a secret), an optional name to post as, read and checked
//! with every problem reported.

use std::time::Duration;

use crate::config::read::{Reader, Sensitive, Table};

#[derive(Debug, Clone)]
pub struct Discord {
    /// `https://discord.com/api/webhooks/<id>/<token>`.
    pub webhook_url: Sensitive,
    /// The name messages are posted under (the webhook's own by default).
    pub username: Option<String>,
    pub timeout: Duration,
}

pub(super) const KEYS: &[&str] = &["webhook_url", "webhook_url_file", "username", "timeout"];

pub(super) fn read(r: &mut Reader, t: Table<'_>) -> Option<Discord> {
    let timeout = r.duration(t, "timeout").unwrap_or(Duration::from_secs(30));
    let username = r.string(t, "username");
    if let Some(name) = &username
        && !(1..=80).contains(&name.chars().count())
    {
        r.error(
            t.key("username"),
            "must be 1 to 80 characters (Discord's limit)",
        );
    }
    let url = r.secret(t, "webhook_url");
    match &url {
        None if !r.failed(&t.key("webhook_url_file")) => r.error(
            t.key("webhook_url"),
            "missing; set webhook_url_file to a file holding the channel's webhook URL (Channel settings → Integrations → Webhooks)",
        ),
        Some(u) if !looks_like_webhook(u.expose()) => r.error(
            t.key("webhook_url"),
            "is not a Discord webhook URL (https://discord.com/api/webhooks/ID/TOKEN)",
        ),
        _ => {}
    }
    Some(Discord {
        webhook_url: url?,
        username,
        timeout,
    })
}

/// An http(s) URL whose path ends in `/webhooks/<id>/<token>`.
fn looks_like_webhook(text: &str) -> bool {
    let Ok(url) = url::Url::parse(text) else {
        return false;
    };
    let segments: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
    matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && segments.len() >= 3
        && segments[segments.len() - 3] == "webhooks"
        && segments[segments.len() - 2]
            .bytes()
            .all(|b| b.is_ascii_digit())
        && !segments[segments.len() - 1].is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_url_table() {
        for (url, ok) in [
            ("https://discord.com/api/webhooks/123456/abcDEF-_x", true),
            ("https://discord.com/api/v10/webhooks/123456/abc", true),
            ("http://127.0.0.1:9000/api/webhooks/1/t", true),
            ("https://discord.com/api/webhooks/abc/def", false),
            ("https://discord.com/api/webhooks/123456/", false),
            ("https://discord.com/channels/1/2", false),
            ("discord.com/api/webhooks/1/t", false),
        ] {
            assert_eq!(looks_like_webhook(url), ok, "{url}");
        }
    }
}
