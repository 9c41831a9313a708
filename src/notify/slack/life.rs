//! A job's whole life in one Slack message (`lifecycle = true` on a
//! route): its start posts one short line; its end updates that line in
//! place (final emoji, status, duration) and posts the details as a reply
//! in its thread, also shown in the channel for failures unless
//! `broadcast` says otherwise. An end with no start message posts the
//! details alone; an update Slack refuses (`message_not_found`,
//! `cant_update_message`, `edit_window_closed`) falls back to a new
//! message. What was posted (channel ID and ts) is returned as the thread
//! state the dispatcher keeps for the job's next delivery.

use std::any::Any;

use serde_json::{Value, json};
use slack_morphism::errors::SlackClientError;

use super::config::Broadcast;
use super::{SlackNotifier, Target};
use crate::clock::now_ms;
use crate::notify::life::Lines;
use crate::notify::{DeliveryError, Life};
use crate::render::{Message, Rendered};

/// What a Slack notifier renders: the message, and the lines a job's life
/// shows in its start message.
#[derive(Debug)]
pub struct SlackMessage {
    pub body: Rendered<Value>,
    pub lines: Lines,
    /// One job's message (not a digest's), which a job's life can show.
    pub job: bool,
}

impl SlackMessage {
    pub fn new(body: Rendered<Value>, ctx: &Value) -> Self {
        SlackMessage {
            body,
            lines: Lines::new(ctx),
            job: ctx.get("group").is_none(),
        }
    }
}

impl Message for SlackMessage {
    fn fallback(&self) -> Option<&str> {
        self.body.fallback()
    }

    fn preview(&self) -> String {
        self.body.preview()
    }

    fn preview_json(&self) -> Value {
        self.body.preview_json()
    }

    fn seen_text(&self) -> String {
        self.body.seen_text()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    /// The message as JSON and a Block Kit Builder link, and as Slack
    /// shows it: alone, and as the end of a job's life on a lifecycle
    /// route (the start message as updated, the details in its thread).
    fn files(&self) -> Vec<(&'static str, String)> {
        let mut files = self.body.files();
        let alone = super::html::message(&self.body.message, false);
        files.push((
            "html",
            super::html::page(&self.lines.end, std::slice::from_ref(&alone), &[]),
        ));
        if self.job {
            let updated =
                super::html::message(&line_message(&self.lines.end, &self.lines.web_url), true);
            files.push((
                "thread.html",
                super::html::page(&self.lines.end, &[updated], &[alone]),
            ));
        }
        files
    }
}

/// The start message's blocks: `line` as written, and a link to the job.
fn line_message(line: &str, web_url: &str) -> Value {
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "plain_text", "text": line, "emoji": true},
    })];
    if !web_url.is_empty() {
        blocks.push(json!({
            "type": "actions",
            "elements": [{
                "type": "button",
                "text": {"type": "plain_text", "text": "Open on Replicate"},
                "url": web_url,
            }],
        }));
    }
    json!({"text": line, "blocks": blocks})
}

/// Slack's answers to an update that mean the message cannot be updated.
fn cannot_update(e: &SlackClientError) -> bool {
    matches!(e, SlackClientError::ApiError(api)
        if matches!(api.code.as_str(), "message_not_found" | "cant_update_message" | "edit_window_closed"))
}

impl SlackNotifier {
    /// One delivery of a job's life; returns the thread state to keep.
    pub(super) async fn send_life(
        &self,
        message: &SlackMessage,
        life: &Life,
    ) -> Result<Value, DeliveryError> {
        let Target::Api { channel, .. } = &self.target else {
            return Err(DeliveryError::Permanent {
                reason:
                    "lifecycle needs a bot token: an incoming webhook can neither update nor thread"
                        .into(),
            });
        };
        let thread = life.thread.clone().unwrap_or(Value::Null);
        let ended = thread["ended"] == Value::Bool(true);
        let posted = match (thread["channel"].as_str(), thread["ts"].as_str()) {
            (Some(c), Some(ts)) => Some((c.to_owned(), ts.to_owned())),
            _ => None,
        };
        if life.start {
            if let Some((channel_id, ts)) = posted.as_ref().filter(|_| life.progress_due(now_ms()))
            {
                return Ok(self.show_progress(message, life, channel_id, ts).await);
            }
            // The end went out first, or this start already did: nothing
            // more to show.
            if ended || posted.is_some() {
                return Ok(thread);
            }
            let mut start = line_message(&message.lines.start, &message.lines.web_url);
            start["channel"] = json!(channel);
            let answer = self.call("chat.postMessage", start).await?;
            return Ok(json!({"channel": answer["channel"], "ts": answer["ts"], "ended": false}));
        }
        if let Some((channel_id, ts)) = posted.filter(|_| !ended) {
            let mut update = line_message(&message.lines.end, &message.lines.web_url);
            update["channel"] = json!(channel_id);
            update["ts"] = json!(ts);
            match self.call_raw("chat.update", &update).await {
                Ok(_) => {
                    let mut reply = message.body.message.clone();
                    reply["channel"] = json!(channel_id);
                    reply["thread_ts"] = json!(ts);
                    let broadcast = match self.broadcast {
                        Broadcast::Always => true,
                        Broadcast::Never => false,
                        Broadcast::Failures => message.lines.failure,
                    };
                    if broadcast {
                        reply["reply_broadcast"] = json!(true);
                    }
                    let answer = self.post_full(reply).await?;
                    return Ok(json!({
                        "channel": channel_id, "ts": ts, "ended": true, "reply_ts": answer["ts"],
                    }));
                }
                Err(e) if cannot_update(&e) => {
                    tracing::warn!(message = "Slack would not update the job's start message; posting its end as a new message.", notifier = %self.name, error = %e);
                }
                Err(e) => return Err(super::classify_slack(&self.name, e)),
            }
        }
        let mut full = message.body.message.clone();
        full["channel"] = json!(channel);
        let answer = self.post_full(full).await?;
        Ok(json!({"channel": answer["channel"], "ts": answer["ts"], "ended": true}))
    }

    /// Updates the start message with how the job is doing; dropped, not
    /// retried, if Slack refuses or asks to wait (the end must not queue
    /// behind it).
    async fn show_progress(
        &self,
        message: &SlackMessage,
        life: &Life,
        channel_id: &str,
        ts: &str,
    ) -> Value {
        let mut update = line_message(&message.lines.running, &message.lines.web_url);
        update["channel"] = json!(channel_id);
        update["ts"] = json!(ts);
        if let Err(e) = self.call_raw("chat.update", &update).await {
            tracing::info!(message = "A progress update was dropped.", notifier = %self.name, error = %e);
            return life.thread.clone().unwrap_or(Value::Null);
        }
        life.progress_shown(now_ms())
    }

    /// `chat.postMessage` of a whole message, without its images if Slack
    /// cannot fetch them (as every Slack message is sent).
    async fn post_full(&self, body: Value) -> Result<Value, DeliveryError> {
        match self.call_raw("chat.postMessage", &body).await {
            Err(e) if super::refused_blocks(&e) => {
                let Some(plain) = super::render::without_images(&body) else {
                    return Err(super::classify_slack(&self.name, e));
                };
                tracing::warn!(message = "Slack refused the message's image blocks (it could not download the pictures); sending it without them.", notifier = %self.name);
                self.call("chat.postMessage", plain).await
            }
            other => other.map_err(|e| super::classify_slack(&self.name, e)),
        }
    }

    async fn call(&self, method: &str, body: Value) -> Result<Value, DeliveryError> {
        self.call_raw(method, &body)
            .await
            .map_err(|e| super::classify_slack(&self.name, e))
    }
}
