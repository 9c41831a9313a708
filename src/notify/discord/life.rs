//! A job's whole life in one Discord message (`lifecycle = true` on a
//! route): a webhook may edit the messages it posted. The start posts one
//! line with `?wait=true`, so Discord answers with the message and its id;
//! the end edits that message into the full details
//! (`PATCH …/messages/<id>`). An end with no start message posts the
//! details; an edit of a message that is gone (404) falls back to a new
//! post. The message id is the thread state the dispatcher keeps.

use hyper::Method;
use serde_json::{Value, json};

use super::DiscordNotifier;
use super::render::{Post, colour};
use crate::clock::now_ms;
use crate::notify::life::Lines;
use crate::notify::{DeliveryError, Life};
use crate::render::Rendered;

/// What a discord notifier renders: its message, and the lines a job's
/// life shows in its start message.
pub type DiscordMessage = crate::notify::life::Living<Rendered<Post>>;

/// The start message: its line as an embed linking to the job.
fn start_post(lines: &Lines, like: &Value) -> Value {
    let mut embed = json!({"title": lines.start, "color": colour("processing")});
    if !lines.web_url.is_empty() {
        embed["url"] = json!(lines.web_url);
    }
    let mut post = json!({"embeds": [embed], "allowed_mentions": {"parse": []}});
    if let Some(name) = like.get("username") {
        post["username"] = name.clone();
    }
    post
}

/// `base` (the webhook's URL) with `path` added and `query` pairs set,
/// keeping a query it has (`thread_id`).
fn webhook_url(base: &str, path: &[&str], query: &[(&str, &str)]) -> String {
    let Ok(mut url) = url::Url::parse(base) else {
        return base.to_owned();
    };
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().extend(path);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    url.into()
}

impl DiscordNotifier {
    /// One delivery of a job's life; returns the thread state to keep.
    pub(super) async fn send_life(
        &self,
        message: &DiscordMessage,
        life: &Life,
    ) -> Result<Value, DeliveryError> {
        let posted = life.posted("message").map(str::to_owned);
        if life.start {
            if let Some(id) = posted.as_ref().filter(|_| life.progress_due(now_ms())) {
                let url = webhook_url(&self.url, &["messages", id], &[]);
                let running = start_post(
                    &Lines {
                        start: message.lines.running.clone(),
                        ..message.lines.clone()
                    },
                    &message.body.message.0,
                );
                // Dropped, not retried, when refused: the end must not
                // queue behind it.
                return Ok(match self.send(Method::PATCH, &url, &running).await {
                    Ok(answer) if answer.status.is_success() => life.progress_shown(now_ms()),
                    _ => life.thread.clone().unwrap_or(Value::Null),
                });
            }
            if life.ended() || posted.is_some() {
                return Ok(life.thread.clone().unwrap_or(Value::Null));
            }
            let id = self
                .post_waiting(&start_post(&message.lines, &message.body.message.0))
                .await?;
            return Ok(json!({"message": id, "ended": false}));
        }
        if let Some(id) = posted.filter(|_| !life.ended()) {
            let url = webhook_url(&self.url, &["messages", &id], &[]);
            let answer = self
                .send(Method::PATCH, &url, &message.body.message.0)
                .await?;
            if answer.status.as_u16() == 404 {
                tracing::warn!(message = "The job's start message is gone from Discord; posting its end as a new message.", webhook = %self.shown);
            } else {
                self.outcome(&answer)?;
                return Ok(json!({"message": id, "ended": true}));
            }
        }
        let id = self.post_waiting(&message.body.message.0).await?;
        Ok(json!({"message": id, "ended": true}))
    }

    /// Posts `body` and waits for Discord's copy of the message: its id.
    async fn post_waiting(&self, body: &Value) -> Result<String, DeliveryError> {
        let url = webhook_url(&self.url, &[], &[("wait", "true")]);
        let answer = self.send(Method::POST, &url, body).await?;
        self.outcome(&answer)?;
        let sent: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
        sent["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| DeliveryError::Transient {
                reason: format!(
                    "Discord at {} posted the message without saying its id",
                    self.shown
                ),
                retry_after: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_edited_under_the_webhooks_own_url() {
        let base = "https://discord.com/api/webhooks/1/tok";
        assert_eq!(
            webhook_url(base, &["messages", "99"], &[]),
            "https://discord.com/api/webhooks/1/tok/messages/99"
        );
        assert_eq!(
            webhook_url(base, &[], &[("wait", "true")]),
            "https://discord.com/api/webhooks/1/tok?wait=true"
        );
        assert_eq!(
            webhook_url(&format!("{base}?thread_id=7"), &["messages", "99"], &[]),
            "https://discord.com/api/webhooks/1/tok/messages/99?thread_id=7"
        );
    }
}
