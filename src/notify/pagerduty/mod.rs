//! The PagerDuty notifier: Events API v2. A failed or aborted job triggers an
//! incident whose dedup key is the job id, so repeats group into one; a
//! success of the same job resolves it. A 400 (a wrong routing key, an
//! invalid event) is dead at once with PagerDuty's errors; 429 and 5xx are
//! retried.

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
pub use config::PagerDuty;
use render::Enqueue;

/// `type = "pagerduty"`.
pub struct PagerDutyKind;

impl NotifierKind for PagerDutyKind {
    fn example(&self) -> &'static str {
        r#"routing_key = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY00""#
    }

    fn name(&self) -> &'static str {
        "pagerduty"
    }

    fn keys(&self) -> &'static [&'static str] {
        config::KEYS
    }

    fn formats(&self) -> &'static [Format] {
        &[render::PAGERDUTY]
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

impl Settings for PagerDuty {
    fn kind(&self) -> &'static dyn NotifierKind {
        &PagerDutyKind
    }

    fn build(&self, _name: &str, shared: &mut Shared) -> Result<Arc<dyn Notify>, SetupError> {
        Ok(Arc::new(PagerDutyNotifier {
            url: self.url.clone(),
            shown: shown_url(&self.url),
            timeout: self.timeout,
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
        vec![format!(
            "PagerDuty: Events API v2 at {}, severity {}",
            shown_url(&self.url),
            self.severity
        )]
    }
}

pub struct PagerDutyNotifier {
    url: String,
    shown: String,
    timeout: Duration,
    client: Client,
}

impl Notify for PagerDutyNotifier {
    fn send<'a>(
        &'a self,
        message: &'a dyn Message,
        _attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let rendered = super::expect::<Rendered<Enqueue>>(message, "pagerduty")?;
            let answer = self
                .client
                .post_json(
                    &self.url,
                    &[],
                    &rendered.message.0,
                    self.timeout,
                    &format!("PagerDuty at {}", self.shown),
                )
                .await?;
            let hint = if answer.status.as_u16() == 400 {
                " (check routing_key_file: the key of an Events API v2 integration)"
            } else {
                ""
            };
            answer.result(|body| json_reason(body, &["/message", "/errors"]), hint)
        })
    }

    fn rate_key(&self) -> String {
        format!("pagerduty:{}", self.shown)
    }
}
