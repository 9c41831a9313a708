//! The Teams notifier: an Adaptive Card posted to a Workflows webhook (the
//! replacement for Office 365 connectors). The workflow answers 202 once it
//! has the message; a 401, 403 or 404 (a deleted flow, a wrong or expired
//! signature) is dead at once with its reason; 429 and 5xx are retried.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::http::shown_url;
use super::http::{Client, json_reason};
use super::kind::{NotifierKind, Settings, Shared};
use super::{Attempt, DeliveryError, Notify, SetupError};
use crate::config::read::{Reader, Table};
use crate::render::{BuiltIn, Format, Message, Rendered, Templates};
use futures_util::future::BoxFuture;

mod config;
pub mod render;
pub use config::Teams;
use render::Post;

/// `type = "teams"`.
pub struct TeamsKind;

impl NotifierKind for TeamsKind {
    fn example(&self) -> &'static str {
        r#"webhook_url = "https://example.webhook.office.com/workflows/preview""#
    }

    fn name(&self) -> &'static str {
        "teams"
    }

    fn keys(&self) -> &'static [&'static str] {
        config::KEYS
    }

    fn formats(&self) -> &'static [Format] {
        &[render::TEAMS]
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

impl Settings for Teams {
    fn kind(&self) -> &'static dyn NotifierKind {
        &TeamsKind
    }

    fn build(&self, _name: &str, shared: &mut Shared) -> Result<Arc<dyn Notify>, SetupError> {
        Ok(Arc::new(TeamsNotifier {
            url: self.webhook_url.expose().to_owned(),
            shown: shown_url(self.webhook_url.expose()),
            timeout: self.timeout,
            rate_key: super::secret_rate_key("teams", self.webhook_url.expose()),
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
            templates,
            template.unwrap_or("default"),
            ctx,
        ))
    }

    fn describe(&self) -> Vec<String> {
        vec![format!(
            "Teams: workflow {}",
            shown_url(self.webhook_url.expose())
        )]
    }
}

pub struct TeamsNotifier {
    url: String,
    /// The URL without its query, which holds the signature.
    shown: String,
    timeout: Duration,
    rate_key: String,
    client: Client,
}

impl Notify for TeamsNotifier {
    fn send<'a>(
        &'a self,
        message: &'a dyn Message,
        _attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let rendered = super::expect::<Rendered<Post>>(message, "teams")?;
            let answer = self
                .client
                .post_json(
                    &self.url,
                    &[],
                    &rendered.message.0,
                    self.timeout,
                    &format!("the Teams workflow at {}", self.shown),
                )
                .await?;
            let hint = match answer.status.as_u16() {
                401 | 403 | 404 => {
                    " (the workflow was turned off or deleted, or its URL changed: copy it again from the flow's trigger)"
                }
                _ => "",
            };
            answer.result(
                |body| json_reason(body, &["/error/code", "/error/message"]),
                hint,
            )
        })
    }

    fn rate_key(&self) -> String {
        self.rate_key.clone()
    }
}
