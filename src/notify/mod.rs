//! Notify: sending a rendered message to its destination. One folder per kind
//! of notifier (`slack/`, `email/`, `webhook/`, `log/`, `discord/`,
//! `pagerduty/`, `teams/`, `ntfy/`), listed once in [`registry`], behind the
//! traits of [`kind`]; what kinds share is [`http`] (posting and judging an
//! answer) and [`mail`] (the message email sends and log writes). Each sends
//! through one trait, [`Notify`]. Every
//! failure is a [`DeliveryError`] that says whether to retry (transient) or
//! give up now (permanent). That decision is made in one place, [`classify`],
//! tested by one table.

pub mod archive;
pub mod discord;
pub mod email;
pub mod exchange;
pub mod http;
pub mod kind;
pub mod life;
pub mod log;
pub mod mail;
pub mod ntfy;
pub mod pagerduty;
pub mod registry;
pub mod replicate;
pub mod slack;
pub mod teams;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::render::{Message, Templates};
use futures_util::future::BoxFuture;

/// A configured notifier: what every one has, and its kind's settings.
#[derive(Debug, Clone)]
pub struct Notifier {
    pub name: String,
    /// Template name (`default` unless set); `None` when the kind sends a
    /// message of its own without one (a webhook: the original payload).
    pub template: Option<String>,
    /// Its kind's settings, read by the kind ([`kind::NotifierKind::read`]).
    pub settings: Arc<dyn kind::Settings>,
    /// How many messages may be in flight to this notifier at once.
    pub concurrency: usize,
}

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
    pub fn new(cause: Failure<'_>, reason: impl Into<String>) -> Self {
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
pub enum Failure<'a> {
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
pub fn classify(cause: &Failure<'_>) -> Class {
    match *cause {
        Failure::Connect | Failure::Timeout | Failure::Tls => Class::Transient,
        Failure::Http(status) => match status {
            408 | 425 | 429 | 500..=599 => Class::Transient,
            _ => Class::Permanent,
        },
        Failure::Smtp(code) => match code {
            500..=599 => Class::Permanent,
            _ => Class::Transient,
        },
        Failure::Slack(code) if SLACK_TRANSIENT.contains(&code) => Class::Transient,
        Failure::Slack(_) | Failure::BadAddress => Class::Permanent,
    }
}

pub use life::Life;

/// Which delivery an attempt is for: receivers that deduplicate (webhooks) get
/// a stable id across retries.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub number: i64,
    pub route: &'a str,
    /// The message's id ([`message_id`]): the same at every attempt of
    /// this delivery, never another delivery's.
    pub message_id: &'a str,
    /// When earlier attempts of this delivery began, for a kind whose
    /// sends are recorded before they go ([`Notify::records_begins`]);
    /// `None` when none did.
    pub earlier: Option<Began>,
    /// On a lifecycle route: which part of the job's life this is, and what
    /// the job's earlier deliveries to this notifier posted.
    pub life: Option<&'a Life>,
}

/// When the earlier attempts of a delivery began: the first, and the one
/// before this attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Began {
    pub first_ms: i64,
    pub last_ms: i64,
}

/// The id of the message a delivery sends: from the webhook that brought
/// its event, its route and notifier, and when it was made. Row ids are not
/// enough: the store reuses them once retention frees them, and a receiver
/// that deduplicates would then drop a new message as an old one.
pub fn message_id(webhook_id: &str, route: &str, notifier: &str, created_at_ms: i64) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for part in [webhook_id, route, notifier] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.update(created_at_ms.to_be_bytes());
    let digest = hash.finalize();
    format!(
        "msg_relay_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..18])
    )
}

/// A destination.
pub trait Notify: Send + Sync {
    /// Sends one rendered message.
    fn send<'a>(
        &'a self,
        message: &'a dyn Message,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>>;

    /// Sends one rendered message and returns what it reports for the
    /// route's later deliveries and `events show` (an archive's manifest);
    /// most kinds report nothing.
    fn send_reporting<'a>(
        &'a self,
        message: &'a dyn Message,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, DeliveryError>> {
        Box::pin(async move { self.send(message, attempt).await.map(|()| None) })
    }

    /// Whether each attempt's start is recorded in the store before it
    /// sends, and the earlier ones handed to the next
    /// ([`Attempt::earlier`]): for a send that costs money and that the
    /// receiver cannot deduplicate (a Replicate prediction), so that an
    /// attempt cut short is looked for before anything is sent again.
    fn records_begins(&self) -> bool {
        false
    }

    /// Notifiers with the same key share a rate limit: when the receiver asks
    /// to wait (Slack's 429), none of them sends before the time is up.
    fn rate_key(&self) -> String;
}

/// Why a notifier could not be built from its config.
#[derive(Debug, thiserror::Error)]
#[error("notifier `{name}`: {reason}")]
pub struct BuildError {
    pub name: String,
    #[source]
    pub reason: SetupError,
}

/// Why a kind could not set up its sender (its client, its TLS, its
/// addresses), with the cause kept.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Connector(#[from] crate::connect::ConnectorError),
    #[error("`{text}` is not an email address: {source}")]
    Address {
        text: String,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error("cannot read ca_file {}: {source}", path.display())]
    CaFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ca_file {} is not a PEM certificate: {source}", path.display())]
    CaPem {
        path: std::path::PathBuf,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("cannot set up TLS for {host}: {source}")]
    Tls {
        host: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error(transparent)]
    ObjectStore(#[from] archive::objects::OpenError),
    #[error("Replicate's API: {0}")]
    Replicate(#[source] crate::replicate::ApiError),
    #[error("webhook_url is not a URL: {0}")]
    WebhookUrl(#[source] url::ParseError),
}

/// Builds a sender for every configured notifier.
pub fn build_all(
    notifiers: &BTreeMap<String, Notifier>,
) -> Result<BTreeMap<String, Arc<dyn Notify>>, BuildError> {
    crate::install_crypto_provider();
    let mut shared = kind::Shared::default();
    let mut out: BTreeMap<String, Arc<dyn Notify>> = BTreeMap::new();
    for (name, n) in notifiers {
        let sender = n
            .settings
            .build(name, &mut shared)
            .map_err(|reason| BuildError {
                name: name.clone(),
                reason,
            })?;
        out.insert(name.clone(), sender);
    }
    Ok(out)
}

/// Renders what `notifier` would send for `event`, matched by `route`;
/// `awaited` is the delivery it waited for (`after` on the route), whose
/// result templates see as `archive` (or its error as `archive_error`),
/// with the message's file links on the kept copies ([`crate::render::kept`]).
pub fn message(
    templates: &Templates,
    notifier: &Notifier,
    route: &str,
    event: &crate::event::Event,
    original: &[u8],
    awaited: Option<&crate::store::Delivery>,
) -> Box<dyn Message> {
    let mut ctx = crate::render::context::context(event, route, &notifier.name);
    if let Some(awaited) = awaited {
        use crate::store::DeliveryState;
        match awaited.state {
            DeliveryState::Delivered => {
                if let Some(manifest) = awaited
                    .result
                    .as_deref()
                    .and_then(|r| serde_json::from_str(r).ok())
                {
                    crate::render::kept::link_kept(&mut ctx, manifest);
                }
            }
            DeliveryState::Dead => {
                if let serde_json::Value::Object(map) = &mut ctx {
                    let error = awaited.last_error.clone().unwrap_or_default();
                    map.insert("archive_error".into(), serde_json::Value::String(error));
                }
            }
            _ => {}
        }
    }
    notifier
        .settings
        .render(templates, notifier.template.as_deref(), &ctx, original)
}

/// A rate key for a receiver known by a secret (a token, a webhook URL):
/// `kind:` and a hash of it, so notifiers sharing it share a pause and the
/// secret never appears in the key.
pub fn secret_rate_key(kind: &str, secret: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(secret.as_bytes());
    let hex = hex::encode(&digest[..8]);
    format!("{kind}:{hex}")
}

/// `message` as the type kind `kind` renders; any other is a bug, never
/// retried.
pub fn expect<'m, T: 'static>(
    message: &'m dyn Message,
    kind: &str,
) -> Result<&'m T, DeliveryError> {
    message
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| DeliveryError::Permanent {
            reason: format!("internal error: a {kind} notifier was handed another kind of message"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classification_table() {
        use Class::{Permanent as P, Transient as T};
        let cases: &[(Failure, Class)] = &[
            (Failure::Connect, T),
            (Failure::Timeout, T),
            (Failure::Tls, T),
            (Failure::Http(408), T),
            (Failure::Http(425), T),
            (Failure::Http(429), T),
            (Failure::Http(500), T),
            (Failure::Http(502), T),
            (Failure::Http(503), T),
            (Failure::Http(504), T),
            (Failure::Http(400), P),
            (Failure::Http(401), P),
            (Failure::Http(403), P),
            (Failure::Http(404), P),
            (Failure::Http(410), P),
            (Failure::Http(413), P),
            (Failure::Http(301), P),
            (Failure::Smtp(421), T),
            (Failure::Smtp(450), T),
            (Failure::Smtp(451), T),
            (Failure::Smtp(452), T),
            (Failure::Smtp(550), P),
            (Failure::Smtp(552), P),
            (Failure::Smtp(553), P),
            (Failure::Smtp(554), P),
            (Failure::Slack("invalid_auth"), P),
            (Failure::Slack("not_authed"), P),
            (Failure::Slack("token_revoked"), P),
            (Failure::Slack("channel_not_found"), P),
            (Failure::Slack("not_in_channel"), P),
            (Failure::Slack("is_archived"), P),
            (Failure::Slack("invalid_blocks"), P),
            (Failure::Slack("ratelimited"), T),
            (Failure::Slack("service_unavailable"), T),
            (Failure::Slack("internal_error"), T),
            (Failure::Slack("fatal_error"), T),
            (Failure::BadAddress, P),
        ];
        for (cause, want) in cases {
            assert_eq!(classify(cause), *want, "{cause:?}");
        }
    }

    #[test]
    fn message_ids_are_stable_per_delivery_and_differ_between_them() {
        let id = message_id("msg_1", "r", "hook", 1_000);
        assert_eq!(id, message_id("msg_1", "r", "hook", 1_000));
        assert_eq!(id.len(), "msg_relay_".len() + 24);
        let others = [
            message_id("msg_2", "r", "hook", 1_000),
            message_id("msg_1", "s", "hook", 1_000),
            message_id("msg_1", "r", "hook2", 1_000),
            // The same webhook stored again after retention freed the first.
            message_id("msg_1", "r", "hook", 2_000),
            // Parts are not run together.
            message_id("msg_1r", "", "hook", 1_000),
        ];
        for other in others {
            assert_ne!(id, other);
        }
    }

    #[test]
    fn retry_after_only_applies_to_transient_errors() {
        let t = DeliveryError::new(Failure::Http(429), "slow down")
            .with_retry_after(Some(Duration::from_secs(2)));
        assert_eq!(
            t,
            DeliveryError::Transient {
                reason: "slow down".into(),
                retry_after: Some(Duration::from_secs(2))
            }
        );
        let p = DeliveryError::new(Failure::Http(404), "gone")
            .with_retry_after(Some(Duration::from_secs(2)));
        assert!(p.is_permanent());
    }
}
