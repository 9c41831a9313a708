//! `[replicate]`: the account's API token and where the API is, and
//! whether and how often to catch up on webhooks that never came.

use std::time::Duration;

use serde_json::Value;

use super::read::{Reader, Sensitive};

#[derive(Debug, Clone)]
pub struct ReplicateConfig {
    /// Replicate's API (a stand-in's URL in tests).
    pub api_url: String,
    /// The account's API token (`token` or `token_file`).
    pub token: Option<Sensitive>,
    /// How often to list the account's jobs and store those whose webhook
    /// never came; `None`: never.
    pub catch_up: Option<Duration>,
    /// How far before the covered time each listing starts (a training
    /// may end a day after it was created).
    pub look_back: Duration,
    /// Which of the account's jobs catch-up takes in.
    pub jobs: Jobs,
    /// How long each API request waits for its answer.
    pub timeout: Duration,
    /// This relay's address as Replicate reaches it
    /// (`https://relay.example.com/hooks/replicate`): what `jobs = "ours"`
    /// matches a job's webhook against, and where pipelines send theirs.
    pub webhook_url: Option<url::Url>,
}

/// Which of the account's jobs catch-up takes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jobs {
    /// Every finished job of the account (the routes still choose).
    All,
    /// Only those whose webhook pointed at `webhook_url`; a job listed
    /// without its webhook is left out.
    Ours,
}

impl ReplicateConfig {
    /// Whether `webhook`, a job's webhook URL, points at this relay: same
    /// scheme, host, port and path as `webhook_url` (the query routes, so
    /// it may differ).
    pub fn is_ours(&self, webhook: &str) -> bool {
        let (Some(ours), Ok(theirs)) = (&self.webhook_url, url::Url::parse(webhook)) else {
            return false;
        };
        ours.scheme() == theirs.scheme()
            && ours.host_str() == theirs.host_str()
            && ours.port_or_known_default() == theirs.port_or_known_default()
            && ours.path() == theirs.path()
    }
}

const KEYS: &[&str] = &[
    "api_url",
    "token",
    "token_file",
    "catch_up",
    "look_back",
    "jobs",
    "webhook_url",
    "timeout",
];

pub fn read(r: &mut Reader, value: Option<&Value>) -> ReplicateConfig {
    let mut config = ReplicateConfig {
        api_url: crate::replicate::API_URL.to_owned(),
        token: None,
        catch_up: None,
        look_back: Duration::from_secs(24 * 3600),
        jobs: Jobs::All,
        webhook_url: None,
        timeout: crate::replicate::client::ANSWER_WITHIN,
    };
    let Some(t) = r.table(value, "replicate") else {
        return config;
    };
    r.known_keys(t, KEYS);
    if let Some(url) = r.string(t, "api_url") {
        match url::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                config.api_url = url
            }
            _ => r.error(t.key("api_url"), format!("`{url}` is not an http(s) URL")),
        }
    }
    config.token = r.secret(t, "token");
    config.catch_up = r.duration(t, "catch_up");
    if let Some(every) = config.catch_up {
        if every < Duration::from_secs(1) {
            r.error(t.key("catch_up"), "must be at least 1s; write e.g. \"10m\"");
        }
        if config.token.is_none() && !r.failed(&t.key("token_file")) {
            r.error(
                t.key("catch_up"),
                "needs the account's API token: token_file = \"/run/credentials/replicate-relay/replicate-token\" (https://replicate.com/account/api-tokens)",
            );
        }
    }
    if let Some(back) = r.duration(t, "look_back") {
        if back < Duration::from_secs(60) {
            r.error(
                t.key("look_back"),
                "must be at least 1m; the default is \"24h\"",
            );
        }
        config.look_back = back;
    }
    if let Some(timeout) = r.duration(t, "timeout") {
        if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(300) {
            r.error(
                t.key("timeout"),
                "must be between 1s and 5m; the default is \"30s\"",
            );
        }
        config.timeout = timeout;
    }
    if let Some(url) = r.string(t, "webhook_url") {
        match url::Url::parse(&url) {
            Ok(u) if u.scheme() == "https" && u.host().is_some() => config.webhook_url = Some(u),
            _ => r.error(
                t.key("webhook_url"),
                format!("`{url}` is not an https URL; write this relay's address as Replicate reaches it (Replicate sends webhooks to https only), e.g. \"https://relay.example.com/hooks/replicate\""),
            ),
        }
    }
    match r.string(t, "jobs").as_deref() {
        None | Some("all") => {}
        Some("ours") => {
            config.jobs = Jobs::Ours;
            if config.webhook_url.is_none() && !r.failed(&t.key("webhook_url")) {
                r.error(
                    t.key("jobs"),
                    "\"ours\" needs webhook_url, this relay's address as Replicate reaches it (\"https://relay.example.com/hooks/replicate\")",
                );
            }
        }
        Some(other) => r.error(
            t.key("jobs"),
            format!("`{other}` is neither \"all\" (every finished job of the account) nor \"ours\" (only those whose webhook pointed at webhook_url)"),
        ),
    }
    config
}
