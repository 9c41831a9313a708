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
}

const KEYS: &[&str] = &["api_url", "token", "token_file", "catch_up", "look_back"];

pub fn read(r: &mut Reader, value: Option<&Value>) -> ReplicateConfig {
    let mut config = ReplicateConfig {
        api_url: crate::replicate::API_URL.to_owned(),
        token: None,
        catch_up: None,
        look_back: Duration::from_secs(24 * 3600),
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
    config
}
