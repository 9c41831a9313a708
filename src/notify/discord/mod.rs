//! The Discord notifier: a channel webhook (Execute Webhook) posting an embed
//! coloured by status. A 429 carries `retry_after` (seconds, in the JSON body
//! and the `Retry-After` header), which the dispatcher honours for the whole
//! webhook before anything else is sent there, as for Slack. A 401 or 404
//! (a deleted webhook, a wrong token) is dead at once with Discord's reason.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::http::shown_url_hiding;
use super::http::{Client, json_reason};
use super::kind::{NotifierKind, Settings, Shared};
use super::{Attempt, DeliveryError, Notify, SetupError};
use crate::config::read::{Reader, Table};
use crate::render::{BuiltIn, Format, Message, Templates};
use futures_util::future::BoxFuture;

mod config;
pub mod html;
pub mod life;
pub mod render;
pub use config::Discord;

/// When Discord sends a 429 without saying how long to wait.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// `type = "discord"`.
pub struct DiscordKind;

impl NotifierKind for DiscordKind {
    fn page(&self, message: &Value) -> Option<String> {
        html::page(message)
    }

    fn example(&self) -> &'static str {
        r#"webhook_url = "https://discord.com/api/webhooks/1/preview""#
    }

    fn name(&self) -> &'static str {
        "discord"
    }

    fn keys(&self) -> &'static [&'static str] {
        config::KEYS
    }

    fn formats(&self) -> &'static [Format] {
        &[render::DISCORD]
    }

    fn built_in(&self) -> &'static [BuiltIn] {
        render::BUILT_IN
    }

    fn digest_built_in(&self) -> &'static [BuiltIn] {
        render::DIGEST
    }

    /// Discord allows about five posts per webhook in two seconds: one at a
    /// time keeps a burst from turning into 429s.
    fn default_concurrency(&self) -> usize {
        1
    }

    fn read(&self, r: &mut Reader, t: Table<'_>) -> Option<Arc<dyn Settings>> {
        super::kind::settings(config::read(r, t))
    }
}

impl Settings for Discord {
    fn kind(&self) -> &'static dyn NotifierKind {
        &DiscordKind
    }

    fn build(&self, _name: &str, shared: &mut Shared) -> Result<Arc<dyn Notify>, SetupError> {
        let rate_key = super::secret_rate_key("discord", self.webhook_url.expose());
        Ok(Arc::new(DiscordNotifier {
            url: self.webhook_url.expose().to_owned(),
            shown: shown_webhook(self.webhook_url.expose()),
            timeout: self.timeout,
            rate_key,
            client: shared.http()?,
        }))
    }

    fn render(
        &self,
        templates: &Templates,
        template: Option<&str>,
        ctx: &Value,
        _: &[u8],
    ) -> Box<dyn Message> {
        Box::new(life::DiscordMessage {
            body: render::render(self, templates, template.unwrap_or("default"), ctx),
            lines: crate::notify::life::Lines::new(ctx),
        })
    }

    /// A webhook edits the messages it posted.
    fn lifecycle(&self) -> Result<(), String> {
        Ok(())
    }

    fn describe(&self) -> Vec<String> {
        vec![format!(
            "Discord: webhook {}",
            shown_webhook(self.webhook_url.expose())
        )]
    }
}

/// The webhook URL without its token (the last path segment), for messages.
fn shown_webhook(url: &str) -> String {
    shown_url_hiding(url, 1)
}

pub struct DiscordNotifier {
    url: String,
    shown: String,
    timeout: Duration,
    rate_key: String,
    client: Client,
}

/// `retry_after` from a 429's JSON body, in (possibly fractional) seconds.
fn body_retry_after(body: &str) -> Option<Duration> {
    let v: Value = serde_json::from_str(body).ok()?;
    let secs = v.get("retry_after")?.as_f64()?;
    // Negative, not a number, or past any Duration: not a wait we can keep
    // (the dispatcher clamps the rest to `[delivery] max_pause`).
    Duration::try_from_secs_f64(secs).ok()
}

impl DiscordNotifier {
    /// `body` to `url` with `method`, within the timeout.
    async fn send(
        &self,
        method: hyper::Method,
        url: &str,
        body: &Value,
    ) -> Result<super::http::Answer, DeliveryError> {
        let body = bytes::Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        self.client
            .call(
                method,
                url,
                &[],
                body,
                self.timeout,
                &format!("Discord at {}", self.shown),
            )
            .await
    }

    /// What Discord's `answer` means: sent, or the error it calls for.
    fn outcome(&self, answer: &super::http::Answer) -> Result<(), DeliveryError> {
        let hint = match answer.status.as_u16() {
            401 | 403 | 404 => {
                " (the webhook was deleted or its URL is wrong: copy it again from the channel's Integrations)"
            }
            _ => "",
        };
        // Discord says how long in the body, to the millisecond.
        let wait = (answer.status.as_u16() == 429).then(|| {
            body_retry_after(&answer.body)
                .or_else(|| answer.retry_after())
                .unwrap_or(DEFAULT_RETRY_AFTER)
        });
        answer
            .result(|body| json_reason(body, &["/message"]), hint)
            .map_err(|e| e.with_retry_after(wait))
    }
}

impl Notify for DiscordNotifier {
    fn send<'a>(
        &'a self,
        message: &'a dyn Message,
        _attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let rendered = &super::expect::<life::DiscordMessage>(message, "discord")?.body;
            let answer = self
                .send(hyper::Method::POST, &self.url, &rendered.message.0)
                .await?;
            self.outcome(&answer)
        })
    }

    fn send_reporting<'a>(
        &'a self,
        message: &'a dyn Message,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<Option<Value>, DeliveryError>> {
        Box::pin(async move {
            let Some(life) = attempt.life else {
                return Notify::send(self, message, attempt).await.map(|()| None);
            };
            let message = super::expect::<life::DiscordMessage>(message, "discord")?;
            self.send_life(message, life).await.map(Some)
        })
    }

    fn rate_key(&self) -> String {
        self.rate_key.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_says_how_long_in_its_body() {
        assert_eq!(
            body_retry_after(
                r#"{"message":"You are being rate limited.","retry_after":1.5,"global":false}"#
            ),
            Some(Duration::from_millis(1_500))
        );
        assert_eq!(body_retry_after("{}"), None);
        assert_eq!(body_retry_after("not json"), None);
        assert_eq!(
            shown_webhook("https://discord.com/api/webhooks/123/secret-token"),
            "https://discord.com/api/webhooks/123/…"
        );
    }
}
