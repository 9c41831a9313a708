//! The log notifier: writes the message to the daemon's log. Useful to try the
//! whole path without any account, and as a record beside real notifiers.

use std::sync::Arc;

use serde_json::Value;

use super::kind::{NotifierKind, Settings, Shared};
use super::mail::{self, EmailMessage};
use super::{Attempt, DeliveryError, Notify, SetupError};
use crate::config::read::{Reader, Table};
use crate::render::{BuiltIn, Format, Message, Rendered, Templates};
use futures_util::future::BoxFuture;

/// `type = "log"`: the message's subject and text in the daemon's log.
pub struct LogKind;

/// A log notifier has no keys of its own.
#[derive(Debug)]
pub struct Log;

impl NotifierKind for LogKind {
    fn name(&self) -> &'static str {
        "log"
    }

    fn keys(&self) -> &'static [&'static str] {
        &[]
    }

    fn formats(&self) -> &'static [Format] {
        &[mail::SUBJECT, mail::TEXT]
    }

    fn built_in(&self) -> &'static [BuiltIn] {
        mail::BUILT_IN
    }

    fn digest_built_in(&self) -> &'static [BuiltIn] {
        mail::DIGEST
    }

    fn read(&self, _: &mut Reader, _: Table<'_>) -> Option<Arc<dyn Settings>> {
        Some(Arc::new(Log))
    }
}

impl Settings for Log {
    fn kind(&self) -> &'static dyn NotifierKind {
        &LogKind
    }

    fn build(&self, name: &str, _shared: &mut Shared) -> Result<Arc<dyn Notify>, SetupError> {
        Ok(Arc::new(LogNotifier::new(name)))
    }

    fn render(
        &self,
        templates: &Templates,
        template: Option<&str>,
        ctx: &Value,
        _: &[u8],
    ) -> Box<dyn Message> {
        let mut rendered = mail::render(templates, template.unwrap_or("default"), ctx);
        rendered.message.html = None; // a log line has no use for HTML
        Box::new(rendered)
    }

    fn describe(&self) -> Vec<String> {
        Vec::new()
    }
}

pub struct LogNotifier {
    name: String,
}

impl LogNotifier {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
        }
    }
}

impl Notify for LogNotifier {
    fn send<'a>(
        &'a self,
        message: &'a dyn Message,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let rendered = super::expect::<Rendered<EmailMessage>>(message, "log")?;
            tracing::info!(
                message = "Notification.",
                notifier = %self.name,
                route = attempt.route,
                subject = %rendered.message.subject,
                text = %rendered.message.text.trim_end(),
            );
            Ok(())
        })
    }

    fn rate_key(&self) -> String {
        format!("log:{}", self.name)
    }
}
