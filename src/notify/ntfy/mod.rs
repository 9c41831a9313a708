//! The ntfy notifier: a push notification to a topic on ntfy.sh or a
//! self-hosted ntfy server, published as JSON to the server's root with the
//! topic in the body, a priority by status, tags and a click URL; an access
//! token when the topic is protected. A 4xx that says the URL, topic or token
//! is wrong is dead at once with ntfy's own reason; 429 and 5xx are retried.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use warp::http::{Method, Request, header};

use super::http::Client;
use super::kind::{Kind, Settings, Shared};
use super::webhook::retry_after;
use super::{Attempt, Cause, DeliveryError, Notify};
use crate::read::{Reader, Table};
use crate::render::{BuiltIn, Format, Message, Rendered, Templates};
use crate::store::BoxFuture;

mod config;
pub mod render;
pub use config::Ntfy;
use render::Publish;

/// `type = "ntfy"`.
pub struct NtfyKind;

impl Kind for NtfyKind {
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

    fn read(&self, r: &mut Reader, t: Table<'_>) -> Option<Arc<dyn Settings>> {
        super::kind::settings(config::read(r, t))
    }
}

impl Settings for Ntfy {
    fn kind(&self) -> &'static dyn Kind {
        &NtfyKind
    }

    fn build(&self, _name: &str, shared: &mut Shared) -> Result<Arc<dyn Notify>, String> {
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
        vec![format!("ntfy: topic {} on {}", self.topic, self.server)]
    }
}

pub struct NtfyNotifier {
    settings: Ntfy,
    client: Client,
}

impl NtfyNotifier {
    fn request(&self, body: &Value) -> Result<Request<Full<Bytes>>, DeliveryError> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.settings.server.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("replicate-relay/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = &self.settings.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        builder.body(Full::new(Bytes::from(bytes))).map_err(|e| {
            DeliveryError::new(
                Cause::BadAddress,
                format!("cannot build a request to {}: {e}", self.settings.server),
            )
        })
    }
}

/// ntfy's error text (`{"code":40101,"http":401,"error":"unauthorized"}`),
/// or the body as sent.
fn ntfy_error(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned())
}

impl Notify for NtfyNotifier {
    fn send<'a>(
        &'a self,
        message: &'a dyn Message,
        _attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let rendered = super::expect::<Rendered<Publish>>(message, "ntfy")?;
            let request = self.request(&rendered.message.0)?;
            let server = &self.settings.server;
            let timeout = self.settings.timeout;
            let (response, body) =
                match tokio::time::timeout(timeout, self.client.send(request)).await {
                    Err(_) => {
                        return Err(DeliveryError::new(
                            Cause::Timeout,
                            format!("no answer from ntfy at {server} within {timeout:?}"),
                        ));
                    }
                    Ok(Err(e)) => {
                        return Err(DeliveryError::new(
                            Cause::Connect,
                            format!(
                                "cannot reach ntfy at {server}: {}",
                                super::webhook::error_chain(&e)
                            ),
                        ));
                    }
                    Ok(Ok(answer)) => answer,
                };
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let hint = match status.as_u16() {
                401 | 403 => {
                    " (check token_file: the topic needs an access token that may publish)"
                }
                404 => " (check url: it must be the topic URL on an ntfy server)",
                _ => "",
            };
            Err(DeliveryError::new(
                Cause::Http(status.as_u16()),
                format!(
                    "ntfy at {server} answered HTTP {status}: {}{hint}",
                    ntfy_error(&body)
                ),
            )
            .with_retry_after(
                retry_after(response.headers())
                    .or((status.as_u16() == 429).then_some(Duration::from_secs(10))),
            ))
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
