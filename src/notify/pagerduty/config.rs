//! `type = "pagerduty"`: an Events API v2 routing key (a secret: it is what
//! lets anyone open incidents on the service), the severity of the incidents
//! a failure opens, and the endpoint, read and checked with every problem
//! reported.

use std::time::Duration;

use crate::config::read::{Reader, Sensitive, Table};

#[derive(Debug, Clone)]
pub struct PagerDuty {
    /// The integration's routing key (32 characters).
    pub routing_key: Sensitive,
    /// `critical`, `error`, `warning` or `info`.
    pub severity: String,
    /// `https://events.pagerduty.com/v2/enqueue` (EU accounts:
    /// `https://events.eu.pagerduty.com/v2/enqueue`).
    pub url: String,
    pub timeout: Duration,
}

pub(super) const KEYS: &[&str] = &[
    "routing_key",
    "routing_key_file",
    "severity",
    "url",
    "timeout",
];

pub const SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];

pub(super) fn read(r: &mut Reader, t: Table<'_>) -> Option<PagerDuty> {
    let timeout = r.duration(t, "timeout").unwrap_or(Duration::from_secs(30));
    let severity = r.string(t, "severity").unwrap_or_else(|| "error".into());
    if !SEVERITIES.contains(&severity.as_str()) {
        r.error(
            t.key("severity"),
            format!(
                "unknown severity `{severity}` (one of {})",
                SEVERITIES.join(", ")
            ),
        );
    }
    let url = r
        .string(t, "url")
        .unwrap_or_else(|| "https://events.pagerduty.com/v2/enqueue".into());
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        r.error(t.key("url"), format!("`{url}` is not an http(s) URL"));
    }
    let key = r.secret(t, "routing_key");
    match &key {
        None if !r.failed(&t.key("routing_key_file")) => r.error(
            t.key("routing_key"),
            "missing; set routing_key_file to a file holding the integration key of an Events API v2 integration (Service → Integrations)",
        ),
        Some(k) if k.expose().len() != 32 || !k.expose().bytes().all(|b| b.is_ascii_alphanumeric()) => r.error(
            t.key("routing_key"),
            "is not an Events API v2 routing key (32 letters and digits)",
        ),
        _ => {}
    }
    Some(PagerDuty {
        routing_key: key?,
        severity,
        url,
        timeout,
    })
}
