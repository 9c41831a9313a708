//! The webhook notifier: POSTs the original payload (or a templated JSON body) to
//! a URL, signed with Standard Webhooks headers when a secret is set — so the
//! receiving service verifies it exactly as it would verify Replicate.

use std::time::Duration;

use bytes::Bytes;
use warp::http::HeaderName;

use std::sync::Arc;

use std::any::Any;

use serde_json::{Value, json};

use super::http::{Client, shown_url};
use super::kind::{NotifierKind, Settings, Shared};
use super::{Attempt, DeliveryError, Notify, SetupError};
use crate::clock::{Clock, SystemClock};
use crate::config::read::{Reader, Table};
use crate::render::{
    BuiltIn, Format, Message, RenderFailure, Rendered, Templates, helpers, parse_json,
};
use crate::signature::Secret;
use futures_util::future::BoxFuture;

mod config;
pub use config::Webhook;

/// `webhook/NAME.json.hbs`: a JSON body, values JSON-escaped.
pub const WEBHOOK: Format = Format::new("webhook", ".json.hbs", helpers::escape_json, true);

/// The shipped webhook digest: the group as JSON.
pub const DIGEST: &[BuiltIn] = &[(
    WEBHOOK,
    include_str!("../../../templates/webhook/digest.json.hbs"),
)];

/// A webhook body: the original payload (`name` unset), or the template's
/// JSON; the original payload if the template fails.
pub fn render(
    templates: &Templates,
    name: Option<&str>,
    ctx: &Value,
    original: &[u8],
) -> Rendered<Vec<u8>> {
    let Some(name) = name else {
        return Rendered {
            message: original.to_vec(),
            fallback: None,
        };
    };
    let attempt = || -> Result<Vec<u8>, RenderFailure> {
        let text = templates.render(WEBHOOK, name, ctx)?;
        parse_json(&text, WEBHOOK, name)?;
        Ok(text.into_bytes())
    };
    Rendered::or_fallback(attempt(), "webhook", name, |_| original.to_vec())
}

/// `type = "webhook"`.
pub struct WebhookKind;

impl NotifierKind for WebhookKind {
    fn example(&self) -> &'static str {
        r#"url = "https://hooks.example.org/replicate""#
    }

    fn name(&self) -> &'static str {
        "webhook"
    }

    fn keys(&self) -> &'static [&'static str] {
        config::KEYS
    }

    fn formats(&self) -> &'static [Format] {
        &[WEBHOOK]
    }

    /// The group as JSON.
    fn digest_built_in(&self) -> &'static [BuiltIn] {
        DIGEST
    }

    /// Without a template, the original payload is sent.
    fn default_template(&self) -> Option<&'static str> {
        None
    }

    fn read(&self, r: &mut Reader, t: Table<'_>) -> Option<Arc<dyn Settings>> {
        super::kind::settings(config::read(r, t))
    }
}

impl Settings for Webhook {
    fn kind(&self) -> &'static dyn NotifierKind {
        &WebhookKind
    }

    fn build(&self, name: &str, shared: &mut Shared) -> Result<Arc<dyn Notify>, SetupError> {
        Ok(Arc::new(WebhookNotifier::new(name, self, shared.http()?)))
    }

    fn render(
        &self,
        templates: &Templates,
        template: Option<&str>,
        ctx: &Value,
        original: &[u8],
    ) -> Box<dyn Message> {
        Box::new(render(templates, template, ctx, original))
    }

    fn describe(&self) -> Vec<String> {
        vec![format!("POST {}", shown_url(&self.url))]
    }
}

pub struct WebhookNotifier {
    name: String,
    url: String,
    /// The URL without query or credentials, for messages and logs.
    shown_url: String,
    headers: Vec<(HeaderName, String)>,
    secret: Option<Secret>,
    timeout: Duration,
    client: Client,
}

impl WebhookNotifier {
    pub fn new(name: &str, config: &Webhook, client: Client) -> Self {
        let headers = config
            .headers
            .iter()
            // Checked when the config was read.
            .filter_map(|(k, v)| Some((HeaderName::from_bytes(k.as_bytes()).ok()?, v.clone())))
            .collect();
        Self {
            name: name.to_owned(),
            url: config.url.clone(),
            shown_url: shown_url(&config.url),
            headers,
            secret: config.secret.clone(),
            timeout: config.timeout,
            client,
        }
    }

    /// Its headers, and the Standard Webhooks signature of `body` when it
    /// has a secret.
    fn headers(&self, body: &[u8], attempt: Attempt<'_>) -> Vec<(HeaderName, String)> {
        let mut headers = self.headers.clone();
        if let Some(secret) = &self.secret {
            // Stable across retries of one delivery, so the receiver can drop
            // duplicates the way we drop Replicate's.
            let id = attempt.message_id.to_owned();
            let ts = SystemClock.now_unix();
            let signature = secret.sign(&id, ts, body);
            headers.push((HeaderName::from_static("webhook-id"), id));
            headers.push((HeaderName::from_static("webhook-timestamp"), ts.to_string()));
            headers.push((HeaderName::from_static("webhook-signature"), signature));
        }
        headers
    }
}

impl Notify for WebhookNotifier {
    fn send<'a>(
        &'a self,
        message: &'a dyn Message,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let rendered = super::expect::<Rendered<Vec<u8>>>(message, "webhook")?;
            let body = Bytes::copy_from_slice(&rendered.message);
            let headers = self.headers(&body, attempt);
            self.client
                .post(&self.url, &headers, body, self.timeout, &self.shown_url)
                .await?
                .result(|body| body.trim().to_owned(), "")
        })
    }

    fn rate_key(&self) -> String {
        format!("webhook:{}", self.name)
    }
}

/// A request body (a webhook's): JSON shown pretty, anything else as text.
impl Message for Rendered<Vec<u8>> {
    fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    fn preview(&self) -> String {
        match serde_json::from_slice::<Value>(&self.message) {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
            Err(_) => String::from_utf8_lossy(&self.message).into_owned(),
        }
    }

    fn preview_json(&self) -> Value {
        let body = serde_json::from_slice(&self.message)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&self.message)));
        json!({ "body": body })
    }

    fn seen_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.message);
        match crate::event::json::read(&text) {
            Ok(body) => {
                let mut all = Vec::new();
                crate::render::message::strings(&body, &mut all);
                all.join("\n")
            }
            Err(_) => text.into_owned(),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_sees_a_bodys_strings() {
        let body = Rendered {
            message: br#"{"id":"p\u00e9","status":"failed"}"#.to_vec(),
            fallback: None,
        };
        assert_eq!(body.seen_text(), "pé\nfailed");
        assert_eq!(body.preview_json()["body"]["id"], "pé");
        let text = Rendered {
            message: b"not json".to_vec(),
            fallback: None,
        };
        assert_eq!(text.seen_text(), "not json");
    }
}
