//! The log notifier: writes the message to the daemon's log. Useful to try the
//! whole path without any account, and as a record beside real notifiers.

use super::{Attempt, DeliveryError, Notify, wrong_message};
use crate::render::Message;
use crate::store::BoxFuture;

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
        message: &'a Message,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let (Message::Log(rendered) | Message::Email(rendered)) = message else {
                return Err(wrong_message("log"));
            };
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
