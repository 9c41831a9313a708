//! The Slack notifier, with slack-morphism: `chat.postMessage` with a bot token
//! and channel, or an incoming-webhook URL. The rendered Block Kit JSON is sent
//! as is. A 429 carries `Retry-After`, which the dispatcher honours for the whole
//! workspace (this notifier's rate key) before anything else is sent there.

use std::time::Duration;

use serde_json::{Value, json};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use std::sync::Arc;

use super::kind::{NotifierKind, Settings, Shared};
use super::{Attempt, DeliveryError, Failure, Notify, SetupError};
use crate::config::read::{Reader, Table};
use crate::render::{BuiltIn, Format, Message, Templates};
use futures_util::future::BoxFuture;

mod config;
pub mod html;
pub mod life;
pub mod limits;
pub mod render;
pub use config::{Broadcast, Slack, SlackTarget};

/// `type = "slack"`.
pub struct SlackKind;

impl NotifierKind for SlackKind {
    fn page(&self, message: &Value) -> Option<String> {
        let m = message.get("slack")?;
        let title = m["text"].as_str().unwrap_or("Slack");
        Some(html::page(title, &[html::message(m, false)], &[]))
    }

    fn example(&self) -> &'static str {
        r##"token = "xoxb-preview"
channel = "#ml-alerts""##
    }

    fn name(&self) -> &'static str {
        "slack"
    }

    fn keys(&self) -> &'static [&'static str] {
        config::KEYS
    }

    fn formats(&self) -> &'static [Format] {
        &[render::SLACK]
    }

    fn built_in(&self) -> &'static [BuiltIn] {
        render::BUILT_IN
    }

    fn digest_built_in(&self) -> &'static [BuiltIn] {
        render::DIGEST
    }

    /// Slack allows about one message per second per channel: one at a time
    /// keeps a burst from turning into 429s.
    fn default_concurrency(&self) -> usize {
        1
    }

    fn read(&self, r: &mut Reader, t: Table<'_>) -> Option<Arc<dyn Settings>> {
        super::kind::settings(config::read(r, t))
    }
}

impl Settings for Slack {
    fn kind(&self) -> &'static dyn NotifierKind {
        &SlackKind
    }

    fn build(&self, name: &str, _shared: &mut Shared) -> Result<Arc<dyn Notify>, SetupError> {
        Ok(Arc::new(SlackNotifier::new(name, self)?))
    }

    fn render(
        &self,
        templates: &Templates,
        template: Option<&str>,
        ctx: &Value,
        _: &[u8],
    ) -> Box<dyn Message> {
        Box::new(life::SlackMessage::new(
            render::render(templates, template.unwrap_or("default"), ctx),
            ctx,
        ))
    }

    fn lifecycle(&self) -> Result<(), String> {
        match self.target {
            SlackTarget::Api { .. } => Ok(()),
            SlackTarget::IncomingWebhook { .. } => Err(
                "an incoming webhook can neither update a message nor reply in its thread; use a bot token (token and channel)".into(),
            ),
        }
    }

    fn describe(&self) -> Vec<String> {
        vec![match &self.target {
            SlackTarget::Api { channel, .. } => format!("Slack: chat.postMessage to {channel}"),
            SlackTarget::IncomingWebhook { .. } => "Slack: incoming webhook".to_owned(),
        }]
    }
}

/// When Slack sends a 429 without `Retry-After` (it should not), wait this long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

enum Target {
    Api {
        token: SlackApiToken,
        channel: String,
    },
    Webhook {
        url: url::Url,
    },
}

pub struct SlackNotifier {
    name: String,
    client: SlackHyperClient,
    target: Target,
    timeout: Duration,
    rate_key: String,
    broadcast: Broadcast,
}

impl SlackNotifier {
    pub fn new(name: &str, config: &Slack) -> Result<Self, SetupError> {
        let connector = SlackClientHyperConnector::with_connector(crate::connect::connector()?)
            .with_slack_api_url(config.api_url.trim_end_matches('/'));
        // The workspace is what Slack rate-limits: key by a hash of the token
        // (never the token itself) or the webhook URL.
        let (target, identity) = match &config.target {
            SlackTarget::Api { token, channel } => (
                Target::Api {
                    token: SlackApiToken::new(SlackApiTokenValue(token.expose().to_owned())),
                    channel: channel.clone(),
                },
                token.expose().to_owned(),
            ),
            SlackTarget::IncomingWebhook { url } => (
                Target::Webhook {
                    url: url.expose().parse().map_err(SetupError::WebhookUrl)?,
                },
                url.expose().to_owned(),
            ),
        };
        let rate_key = super::secret_rate_key("slack", &identity);
        Ok(Self {
            name: name.to_owned(),
            client: SlackClient::new(connector),
            target,
            timeout: config.timeout,
            rate_key,
            broadcast: config.broadcast,
        })
    }

    /// Web API `method` with `body` (bot token only): Slack's answer.
    async fn call_raw(&self, method: &str, body: &Value) -> Result<Value, SlackClientError> {
        let Target::Api { token, .. } = &self.target else {
            unreachable!("lifecycle is refused by check for an incoming webhook")
        };
        let mut body = body.clone();
        // A message about a job should not unfurl the job's output links.
        body["unfurl_links"] = json!(false);
        body["unfurl_media"] = json!(false);
        let session = self.client.open_session(token);
        let answer = session
            .http_session_api
            .http_post::<Value, Value>(method, &body, None)
            .await;
        noted(method, &answer);
        answer
    }

    async fn post(&self, message: &Value) -> Result<(), SlackClientError> {
        match &self.target {
            Target::Api { token, channel } => {
                let mut body = message.clone();
                body["channel"] = json!(channel);
                // A message about a job should not unfurl the job's output links.
                body["unfurl_links"] = json!(false);
                body["unfurl_media"] = json!(false);
                let session = self.client.open_session(token);
                let answer = session
                    .http_session_api
                    .http_post::<Value, Value>("chat.postMessage", &body, None)
                    .await;
                noted("chat.postMessage", &answer);
                answer.map(|_| ())
            }
            Target::Webhook { url } => {
                let span = tracing::debug_span!("slack webhook");
                let context = SlackClientApiCallContext {
                    rate_control_params: None,
                    token: None,
                    tracing_span: &span,
                    is_sensitive_url: true,
                };
                let answer = self
                    .client
                    .http_api
                    .connector
                    .http_post_uri::<Value, Value>(url.clone(), message, context)
                    .await;
                noted("incoming webhook", &answer);
                answer.map(|_| ())
            }
        }
    }
}

impl Notify for SlackNotifier {
    fn send_reporting<'a>(
        &'a self,
        message: &'a dyn Message,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<Option<Value>, DeliveryError>> {
        Box::pin(async move {
            let Some(life) = attempt.life else {
                return self.send(message, attempt).await.map(|()| None);
            };
            let message = super::expect::<life::SlackMessage>(message, "slack")?;
            match tokio::time::timeout(self.timeout * 3, self.send_life(message, life)).await {
                Err(_) => Err(DeliveryError::new(
                    Failure::Timeout,
                    format!("Slack did not answer within {:?}", self.timeout * 3),
                )),
                Ok(result) => result.map(Some),
            }
        })
    }

    fn send<'a>(
        &'a self,
        message: &'a dyn Message,
        _attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let rendered = &super::expect::<life::SlackMessage>(message, "slack")?.body;
            let sent = async {
                let first = self.post(&rendered.message).await;
                // Slack fetches an image block's picture and refuses the whole
                // message when it cannot (Replicate deletes API outputs after
                // an hour, a file may be too large): the alert matters more
                // than its pictures.
                match (&first, render::without_images(&rendered.message)) {
                    (Err(e), Some(plain)) if refused_blocks(e) => {
                        tracing::warn!(message = "Slack refused the message's image blocks (it could not download the pictures); sending it without them.", notifier = %self.name);
                        self.post(&plain).await
                    }
                    _ => first,
                }
            };
            match tokio::time::timeout(self.timeout, sent).await {
                Err(_) => Err(DeliveryError::new(
                    Failure::Timeout,
                    format!("Slack did not answer within {:?}", self.timeout),
                )),
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(classify_slack(&self.name, e)),
            }
        })
    }

    fn rate_key(&self) -> String {
        self.rate_key.clone()
    }
}

/// Keeps Slack's answer to `method` with the attempt's exchanges: Web API
/// refusals come as HTTP 200 with `ok: false`.
fn noted(method: &str, answer: &Result<Value, SlackClientError>) {
    let asked = || format!("POST Slack {method}");
    match answer {
        Ok(v) => super::exchange::record(asked, Some(200), &v.to_string()),
        Err(SlackClientError::ApiError(api)) => super::exchange::record(
            asked,
            Some(200),
            &json!({"ok": false, "error": api.code}).to_string(),
        ),
        Err(SlackClientError::HttpError(h)) => super::exchange::record(
            asked,
            Some(h.status_code.as_u16()),
            h.http_response_body.as_deref().unwrap_or_default(),
        ),
        Err(SlackClientError::RateLimitError(_)) => {
            super::exchange::record(asked, Some(429), "rate limited")
        }
        Err(other) => super::exchange::record(asked, None, &crate::connect::error_chain(other)),
    }
}

/// Whether Slack refused the message's blocks (`invalid_blocks`, as an API
/// error, or as an incoming webhook's HTTP 400 body).
fn refused_blocks(e: &SlackClientError) -> bool {
    match e {
        SlackClientError::ApiError(api) => api.code == "invalid_blocks",
        SlackClientError::HttpError(h) => {
            h.status_code.as_u16() == 400
                && h.http_response_body
                    .as_deref()
                    .is_some_and(|b| b.contains("invalid_blocks"))
        }
        _ => false,
    }
}

fn classify_slack(name: &str, e: SlackClientError) -> DeliveryError {
    match e {
        SlackClientError::RateLimitError(r) => DeliveryError::new(
            Failure::Http(429),
            format!("Slack rate limit for notifier `{name}`"),
        )
        .with_retry_after(Some(r.retry_after.unwrap_or(DEFAULT_RETRY_AFTER))),
        SlackClientError::ApiError(api) => {
            let hint = match api.code.as_str() {
                "not_in_channel" => "; invite the app to the channel (/invite @yourapp)",
                "channel_not_found" => {
                    "; check `channel` (a name like #ml-alerts or an id like C0123)"
                }
                "invalid_auth" | "not_authed" | "token_revoked" | "account_inactive" => {
                    "; check the bot token"
                }
                "missing_scope" => "; the app needs the chat:write scope",
                _ => "",
            };
            DeliveryError::new(
                Failure::Slack(&api.code),
                format!("Slack refused the message: {}{hint}", api.code),
            )
        }
        SlackClientError::HttpError(h) => DeliveryError::new(
            Failure::Http(h.status_code.as_u16()),
            format!(
                "Slack answered HTTP {}: {}",
                h.status_code,
                h.http_response_body.unwrap_or_default().trim()
            ),
        ),
        other => DeliveryError::new(
            Failure::Connect,
            format!(
                "cannot reach Slack: {}",
                crate::connect::error_chain(&other)
            ),
        ),
    }
}
