//! `type = "teams"`: a Microsoft Teams Workflows webhook URL (the "Post to a
//! channel when a webhook request is received" flow). Its query carries the
//! signature that authorises posting, so it is a secret.

use std::time::Duration;

use crate::config::read::{Reader, Sensitive, Table};

#[derive(Debug, Clone)]
pub struct Teams {
    pub webhook_url: Sensitive,
    pub timeout: Duration,
}

pub(super) const KEYS: &[&str] = &["webhook_url", "webhook_url_file", "timeout"];

pub(super) fn read(r: &mut Reader, t: Table<'_>) -> Option<Teams> {
    let timeout = r.duration(t, "timeout").unwrap_or(Duration::from_secs(30));
    let url = r.secret(t, "webhook_url");
    match &url {
        None if !r.failed(&t.key("webhook_url_file")) => r.error(
            t.key("webhook_url"),
            "missing; set webhook_url_file to a file holding the workflow's URL (Teams → Workflows → \"Post to a channel when a webhook request is received\")",
        ),
        Some(u)
            if url::Url::parse(u.expose())
                .map_or(true, |p| !matches!(p.scheme(), "http" | "https") || p.host().is_none()) =>
        {
            r.error(t.key("webhook_url"), "is not an http(s) URL")
        }
        _ => {}
    }
    Some(Teams {
        webhook_url: url?,
        timeout,
    })
}
