//! `type = "slack"`: its keys (a bot token and channel, or an incoming
//! webhook URL), read and checked with every problem reported.

use std::time::Duration;

use crate::config::read::{Reader, Sensitive, Table};

#[derive(Debug, Clone)]
pub struct Slack {
    pub target: SlackTarget,
    /// Web API base URL (`https://slack.com/api/`; GovSlack or a test stand-in).
    pub api_url: String,
    pub timeout: Duration,
    /// On a lifecycle route, which ends' details are also shown in the
    /// channel, not only in the start message's thread.
    pub broadcast: Broadcast,
}

/// Which ends of a job's life a thread reply also shows in the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broadcast {
    Failures,
    Always,
    Never,
}

#[derive(Debug, Clone)]
pub enum SlackTarget {
    /// `chat.postMessage` with a bot token.
    Api { token: Sensitive, channel: String },
    /// An incoming-webhook URL (it carries its own secret).
    IncomingWebhook { url: Sensitive },
}

pub(super) const KEYS: &[&str] = &[
    "token",
    "token_file",
    "channel",
    "webhook_url",
    "webhook_url_file",
    "api_url",
    "timeout",
    "broadcast",
];

pub(super) fn read(r: &mut Reader, t: Table<'_>) -> Option<Slack> {
    let timeout = r.duration(t, "timeout").unwrap_or(Duration::from_secs(30));
    let api_url = r
        .string(t, "api_url")
        .unwrap_or_else(|| "https://slack.com/api/".into());
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        r.error(
            t.key("api_url"),
            format!("`{api_url}` is not an http(s) URL"),
        );
    }
    let broadcast = match r.string(t, "broadcast").as_deref() {
        None | Some("failures") => Broadcast::Failures,
        Some("always") => Broadcast::Always,
        Some("never") => Broadcast::Never,
        Some(other) => {
            r.error(
                t.key("broadcast"),
                format!("`{other}` is not \"failures\" (the default), \"always\" or \"never\""),
            );
            Broadcast::Failures
        }
    };
    let token = r.secret(t, "token");
    let channel = r.string(t, "channel");
    let webhook = r.secret(t, "webhook_url");
    let target = match (token, channel, webhook) {
        (Some(token), Some(channel), None) => {
            if !token.expose().starts_with("xox") {
                r.warnings.push(format!(
                    "{}: Slack bot tokens start with `xoxb-`; check that this is one",
                    t.key("token")
                ));
            }
            Some(SlackTarget::Api { token, channel })
        }
        (None, None, Some(url)) => {
            if !url.expose().starts_with("https://") && !url.expose().starts_with("http://") {
                r.error(t.key("webhook_url"), "is not an http(s) URL");
            }
            Some(SlackTarget::IncomingWebhook { url })
        }
        (Some(_), None, None) => {
            r.error(
                t.key("channel"),
                "missing; the channel to post to, e.g. \"#ml-alerts\"",
            );
            None
        }
        (None, Some(_), None) => {
            r.error(
                t.key("token"),
                "missing; set token_file (a bot token with chat:write) or use webhook_url instead",
            );
            None
        }
        (None, None, None) => {
            if !r.failed(t.path) {
                r.error(
                    t.path,
                    "set token_file + channel (chat.postMessage) or webhook_url_file (incoming webhook)",
                );
            }
            None
        }
        _ => {
            r.error(
                t.path,
                "set either token + channel or webhook_url, not both",
            );
            None
        }
    };
    Some(Slack {
        target: target?,
        api_url,
        timeout,
        broadcast,
    })
}
