//! Notify: sending a rendered message to its destination. One file per kind of
//! notifier behind one trait, [`Notify`]; every failure is a [`DeliveryError`]
//! that says whether to retry (transient) or give up now (permanent). That
//! decision is made in one place, [`classify`], tested by one table.

pub mod email;
pub mod http;
pub mod log;
pub mod slack;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Notifier, NotifierKind};
use crate::render::{Message, Templates};
use crate::store::BoxFuture;

/// Why a send failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying later; `retry_after` is the receiver's own request
    /// (HTTP `Retry-After`), which is honoured before anything else is sent.
    #[error("{reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (bad address, revoked token, unknown channel…).
    #[error("{reason}")]
    Permanent { reason: String },
}

impl DeliveryError {
    /// An error of the class [`classify`] gives `cause`.
    pub fn new(cause: Cause<'_>, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        match classify(&cause) {
            Class::Transient => DeliveryError::Transient {
                reason,
                retry_after: None,
            },
            Class::Permanent => DeliveryError::Permanent { reason },
        }
    }

    pub fn with_retry_after(self, after: Option<Duration>) -> Self {
        match self {
            DeliveryError::Transient { reason, .. } => DeliveryError::Transient {
                reason,
                retry_after: after,
            },
            permanent => permanent,
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, DeliveryError::Permanent { .. })
    }
}

/// What went wrong, as far as deciding about a retry goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause<'a> {
    /// Could not connect, or the connection broke.
    Connect,
    Timeout,
    /// TLS handshake failed (may be a network glitch; a wrong CA shows up in
    /// the error and is fixed by the operator within `max_age`).
    Tls,
    /// An HTTP status from a webhook receiver or Slack.
    Http(u16),
    /// An SMTP reply code.
    Smtp(u16),
    /// Slack Web API `"error"` code (`ok: false`).
    Slack(&'a str),
    /// An address or URL the message cannot be sent to.
    BadAddress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Transient,
    Permanent,
}

/// Slack API errors that are worth retrying; every other code is a rejection
/// that will not change by itself (`invalid_auth`, `channel_not_found`,
/// `not_in_channel`, `invalid_blocks`…).
const SLACK_TRANSIENT: &[&str] = &[
    "ratelimited",
    "rate_limited",
    "service_unavailable",
    "fatal_error",
    "internal_error",
    "request_timeout",
    "team_added_to_org",
];

/// The one place where failures are sorted into retry or give up.
pub fn classify(cause: &Cause<'_>) -> Class {
    match *cause {
        Cause::Connect | Cause::Timeout | Cause::Tls => Class::Transient,
        Cause::Http(status) => match status {
            408 | 425 | 429 | 500..=599 => Class::Transient,
            _ => Class::Permanent,
        },
        Cause::Smtp(code) => match code {
            500..=599 => Class::Permanent,
            _ => Class::Transient,
        },
        Cause::Slack(code) if SLACK_TRANSIENT.contains(&code) => Class::Transient,
        Cause::Slack(_) | Cause::BadAddress => Class::Permanent,
    }
}

/// Which delivery an attempt is for: receivers that deduplicate (webhooks) get
/// a stable id across retries.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub delivery_id: i64,
    pub number: i64,
    pub route: &'a str,
}

/// A destination.
pub trait Notify: Send + Sync {
    /// Sends one rendered message.
    fn send<'a>(
        &'a self,
        message: &'a Message,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>>;

    /// Notifiers with the same key share a rate limit: when the receiver asks
    /// to wait (Slack's 429), none of them sends before the time is up.
    fn rate_key(&self) -> String;
}

/// Why a notifier could not be built from its config.
#[derive(Debug, thiserror::Error)]
#[error("notifier `{name}`: {reason}")]
pub struct BuildError {
    pub name: String,
    pub reason: String,
}

/// Builds a sender for every configured notifier.
pub fn build_all(
    notifiers: &BTreeMap<String, Notifier>,
) -> Result<BTreeMap<String, Arc<dyn Notify>>, BuildError> {
    crate::install_crypto_provider();
    // Built on first use: loading the system's root certificates can fail, and
    // a config with only log or email notifiers must not depend on it.
    let mut client: Option<http::Client> = None;
    let mut out: BTreeMap<String, Arc<dyn Notify>> = BTreeMap::new();
    for (name, n) in notifiers {
        let err = |reason: String| BuildError {
            name: name.clone(),
            reason,
        };
        let sender: Arc<dyn Notify> = match &n.kind {
            NotifierKind::Log => Arc::new(log::LogNotifier::new(name)),
            NotifierKind::Webhook(w) => {
                let shared = match &client {
                    Some(c) => c.clone(),
                    None => client.insert(http::Client::new().map_err(err)?).clone(),
                };
                Arc::new(webhook::WebhookNotifier::new(name, w, shared))
            }
            NotifierKind::Slack(s) => Arc::new(slack::SlackNotifier::new(name, s).map_err(err)?),
            NotifierKind::Email(e) => Arc::new(email::EmailNotifier::new(name, e).map_err(err)?),
        };
        out.insert(name.clone(), sender);
    }
    Ok(out)
}

/// Renders what `notifier` would send for `event`, matched by `route`.
pub fn message(
    templates: &Templates,
    notifier: &Notifier,
    route: &str,
    event: &crate::event::Event,
    original: &[u8],
) -> Message {
    let ctx = crate::render::context::context(event, route, &notifier.name);
    let name = notifier.template.as_deref().unwrap_or("default");
    match &notifier.kind {
        NotifierKind::Email(_) => Message::Email(templates.email(name, &ctx)),
        NotifierKind::Log => {
            let mut rendered = templates.email(name, &ctx);
            rendered.message.html = None; // a log line has no use for HTML
            Message::Log(rendered)
        }
        NotifierKind::Slack(_) => Message::Slack(templates.slack(name, &ctx)),
        NotifierKind::Webhook(_) => {
            Message::Webhook(templates.webhook(notifier.template.as_deref(), &ctx, original))
        }
    }
}

/// A message of the wrong shape for a notifier: a bug, never retried.
fn wrong_message(kind: &str) -> DeliveryError {
    DeliveryError::Permanent {
        reason: format!("internal error: a {kind} notifier was handed another kind of message"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classification_table() {
        use Class::{Permanent as P, Transient as T};
        let cases: &[(Cause, Class)] = &[
            (Cause::Connect, T),
            (Cause::Timeout, T),
            (Cause::Tls, T),
            (Cause::Http(408), T),
            (Cause::Http(425), T),
            (Cause::Http(429), T),
            (Cause::Http(500), T),
            (Cause::Http(502), T),
            (Cause::Http(503), T),
            (Cause::Http(504), T),
            (Cause::Http(400), P),
            (Cause::Http(401), P),
            (Cause::Http(403), P),
            (Cause::Http(404), P),
            (Cause::Http(410), P),
            (Cause::Http(413), P),
            (Cause::Http(301), P),
            (Cause::Smtp(421), T),
            (Cause::Smtp(450), T),
            (Cause::Smtp(451), T),
            (Cause::Smtp(452), T),
            (Cause::Smtp(550), P),
            (Cause::Smtp(552), P),
            (Cause::Smtp(553), P),
            (Cause::Smtp(554), P),
            (Cause::Slack("invalid_auth"), P),
            (Cause::Slack("not_authed"), P),
            (Cause::Slack("token_revoked"), P),
            (Cause::Slack("channel_not_found"), P),
            (Cause::Slack("not_in_channel"), P),
            (Cause::Slack("is_archived"), P),
            (Cause::Slack("invalid_blocks"), P),
            (Cause::Slack("ratelimited"), T),
            (Cause::Slack("service_unavailable"), T),
            (Cause::Slack("internal_error"), T),
            (Cause::Slack("fatal_error"), T),
            (Cause::BadAddress, P),
        ];
        for (cause, want) in cases {
            assert_eq!(classify(cause), *want, "{cause:?}");
        }
    }

    #[test]
    fn retry_after_only_applies_to_transient_errors() {
        let t = DeliveryError::new(Cause::Http(429), "slow down")
            .with_retry_after(Some(Duration::from_secs(2)));
        assert_eq!(
            t,
            DeliveryError::Transient {
                reason: "slow down".into(),
                retry_after: Some(Duration::from_secs(2))
            }
        );
        let p = DeliveryError::new(Cause::Http(404), "gone")
            .with_retry_after(Some(Duration::from_secs(2)));
        assert!(p.is_permanent());
    }
}
