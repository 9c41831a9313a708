//! The ntfy notifier: a push notification to a topic on ntfy.sh or a
//! self-hosted ntfy server, published as JSON to the server's root with the
//! topic in the body, a priority by status, tags and a click URL; an access
//! token when the topic is protected. A 4xx that says the URL, topic or token
//! is wrong is dead at once with ntfy's own reason; 429 and 5xx are retried.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use warp::http::header;

use super::http::{Client, json_reason, shown_url};
use super::kind::{NotifierKind, Settings, Shared};
use super::{Attempt, DeliveryError, Notify, SetupError};
use crate::config::read::{Reader, Table};
use crate::render::{BuiltIn, Format, Message, Rendered, Templates};
use futures_util::future::BoxFuture;

mod config;
pub mod render;
pub use config::Ntfy;
use render::Publish;

/// How long to wait after a 429 that says nothing of it.
const NTFY_RETRY_AFTER: Duration = Duration::from_secs(10);

/// `type = "ntfy"`.
pub struct NtfyKind;

impl NotifierKind for NtfyKind {
    fn example(&self) -> &'static str {
        r#"url = "https://ntfy.sh/ml-alerts""#
    }

    fn name(&self) -> &'static str {
        "ntfy"
    }

    fn keys(&self) -> &'static [&'static str] {
        config::KEYS
    }

    fn formats(&self) -> &'static [Format] {
        &[render::NTFY]
    }

    fn built_in(&self) -> &'static [BuiltIn] {
        render::BUILT_IN
    }

    fn digest_built_in(&self) -> &'static [BuiltIn] {
        render::DIGEST
    }

    fn read(&self, r: &mut Reader, t: Table<'_>) -> Option<Arc<dyn Settings>> {
        super::kind::settings(config::read(r, t))
    }
}

impl Settings for Ntfy {
    fn kind(&self) -> &'static dyn NotifierKind {
        &NtfyKind
    }

    fn build(&self, _name: &str, shared: &mut Shared) -> Result<Arc<dyn Notify>, SetupError> {
        Ok(Arc::new(NtfyNotifier {
            settings: self.clone(),
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
        Box::new(render::render(
            self,
            templates,
            template.unwrap_or("default"),
            ctx,
        ))
    }

    fn describe(&self) -> Vec<String> {
        // The topic is all the password a public topic has.
        vec![format!(
            "ntfy: topic … on {}",
            shown_url(self.server.as_str())
        )]
    }
}

pub struct NtfyNotifier {
    settings: Ntfy,
    client: Client,
}

impl Notify for NtfyNotifier {
    fn send<'a>(
        &'a self,
        message: &'a dyn Message,
        _attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let rendered = super::expect::<Rendered<Publish>>(message, "ntfy")?;
            let server = &self.settings.server;
            let headers: Vec<_> = self
                .settings
                .token
                .iter()
                .map(|t| (header::AUTHORIZATION, format!("Bearer {}", t.expose())))
                .collect();
            let answer = self
                .client
                .post_json(
                    server.as_str(),
                    &headers,
                    &rendered.message.0,
                    self.settings.timeout,
                    &format!("ntfy at {}", shown_url(server.as_str())),
                )
                .await?;
            let hint = match answer.status.as_u16() {
                401 | 403 => {
                    " (check token_file: the topic needs an access token that may publish)"
                }
                404 => " (check url: it must be the topic URL on an ntfy server)",
                _ => "",
            };
            // ntfy sends no Retry-After with its 429.
            let limited = answer.status.as_u16() == 429 && answer.retry_after().is_none();
            answer
                .result(|body| json_reason(body, &["/error"]), hint)
                .map_err(|e| {
                    if limited {
                        e.with_retry_after(Some(NTFY_RETRY_AFTER))
                    } else {
                        e
                    }
                })
        })
    }

    fn rate_key(&self) -> String {
        format!(
            "ntfy:{}{}",
            self.settings.server.host_str().unwrap_or(""),
            self.settings.topic
        )
    }
}
