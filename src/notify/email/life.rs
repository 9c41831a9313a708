//! A job's whole life in one email thread (`lifecycle = true` on a
//! route): the start sends a short mail; the end's mail replies to it
//! (`In-Reply-To` and `References` its Message-ID) under the same
//! subject, so mail clients, Gmail included, show one thread. An end with
//! no start mail is sent as usual. The start mail's Message-ID is the
//! thread state the dispatcher keeps.

use serde_json::{Value, json};

use super::EmailNotifier;
use crate::notify::mail::{EmailMessage, subject_line};
use crate::notify::{Attempt, DeliveryError, Life};
use crate::render::Rendered;

/// What a email notifier renders: its message, and the lines a job's
/// life shows in its start message.
pub type MailMessage = crate::notify::life::Living<Rendered<EmailMessage>>;

impl EmailNotifier {
    /// One delivery of a job's life; returns the thread state to keep.
    pub(super) async fn send_life(
        &self,
        message: &MailMessage,
        life: &Life,
        attempt: Attempt<'_>,
    ) -> Result<Value, DeliveryError> {
        let own_id = self.message_id(attempt.message_id);
        let started = life.posted("message_id").map(str::to_owned);
        let topic = subject_line(&message.lines.topic);
        if life.start {
            if life.ended() || started.is_some() {
                return Ok(life.thread.clone().unwrap_or(Value::Null));
            }
            let mut text = format!("{}\n", message.lines.start);
            if !message.lines.web_url.is_empty() {
                text.push_str(&format!("\n{}\n", message.lines.web_url));
            }
            let mail = self.build(&topic, &text, None, attempt.message_id, None)?;
            self.deliver(mail).await?;
            return Ok(json!({"message_id": own_id, "ended": false}));
        }
        let m = &message.body.message;
        let mail = match started.filter(|_| !life.ended()) {
            Some(parent) => self.build(
                &topic,
                &m.text,
                m.html.as_deref(),
                attempt.message_id,
                Some(&parent),
            )?,
            None => self.build(
                &m.subject,
                &m.text,
                m.html.as_deref(),
                attempt.message_id,
                None,
            )?,
        };
        self.deliver(mail).await?;
        Ok(json!({"message_id": own_id, "ended": true}))
    }
}
