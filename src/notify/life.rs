//! What every kind that follows a job's life (`lifecycle = true` on a
//! route) shares: where the life stands for one delivery, and the two
//! short lines a start message shows, first as the job starts, then as it
//! ends.

use std::any::Any;

use serde_json::Value;

use crate::render::helpers::{human_duration, truncate_chars};
use crate::render::{Message, field, plain_title};

/// Where a job's life stands for one lifecycle delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Life {
    /// The job's start (a non-final webhook), not its end.
    pub start: bool,
    /// The state the kind returned at the job's last delivery to this
    /// notifier on this route (what it posted, whether the end went out).
    pub thread: Option<Value>,
    /// How often at most a running job's start message shows its progress
    /// (`progress` on the route).
    pub progress: Option<std::time::Duration>,
}

impl Life {
    /// Whether the job's end already went out.
    pub fn ended(&self) -> bool {
        self.thread
            .as_ref()
            .is_some_and(|t| t["ended"] == Value::Bool(true))
    }

    /// The thread state's text field `key` (a message id, a ts).
    pub fn posted(&self, key: &str) -> Option<&str> {
        self.thread.as_ref()?.get(key)?.as_str()
    }

    /// For a webhook of a running job whose start message is out: whether
    /// to show its progress at `now_ms` (the route asks for it, and the
    /// last showing is at least that long ago). A progress update is the
    /// first thing dropped: never retried, never ahead of an end.
    pub fn progress_due(&self, now_ms: i64) -> bool {
        let Some(every) = self.progress else {
            return false;
        };
        let last = self
            .thread
            .as_ref()
            .and_then(|t| t["progress_ms"].as_i64())
            .unwrap_or(i64::MIN);
        !self.ended() && now_ms.saturating_sub(last) >= every.as_millis() as i64
    }

    /// `thread` with the time progress was last shown set to `now_ms`.
    pub fn progress_shown(&self, now_ms: i64) -> Value {
        let mut thread = self.thread.clone().unwrap_or_else(|| serde_json::json!({}));
        thread["progress_ms"] = serde_json::json!(now_ms);
        thread
    }
}

/// The longest line a job's start message shows.
const MAX_LINE: usize = 200;

/// The lines of a job's start message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines {
    /// "⏳ Training acme/neon started".
    pub start: String,
    /// "✅ Training acme/neon succeeded in 4m 12s".
    pub end: String,
    /// "⏳ Training acme/neon running for 3m · epoch 4/10", as of rendering.
    pub running: String,
    /// The job on Replicate's website.
    pub web_url: String,
    pub failure: bool,
    /// What names the job's thread where a thread is a subject (email):
    /// "Training acme/neon (r8abc)", the same at its start and its end.
    pub topic: String,
}

impl Lines {
    /// The lines for the job in template context `ctx`.
    pub fn new(ctx: &Value) -> Self {
        let kind = if field(ctx, "kind") == "training" {
            "Training"
        } else {
            "Prediction"
        };
        let started = ["started_at", "created_at"].into_iter().find_map(|k| {
            time::OffsetDateTime::parse(
                ctx[k].as_str()?,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()
        });
        let mut running = format!("⏳ {kind} {} running", field(ctx, "run_name"));
        if let Some(at) = started {
            let secs = (time::OffsetDateTime::now_utc() - at)
                .as_seconds_f64()
                .max(0.0);
            running.push_str(&format!(" for {}", human_duration(secs)));
        }
        if let Some(progress) = ctx["progress"].as_str().filter(|p| !p.is_empty()) {
            running.push_str(&format!(" · {progress}"));
        }
        // Names and log lines come from the payload: each line is cut to
        // fit every service's shortest title (Discord's 256 characters).
        let cut = |line: String| truncate_chars(&line, MAX_LINE);
        Lines {
            running: cut(running),
            topic: cut(format!(
                "{kind} {} ({})",
                field(ctx, "run_name"),
                field(ctx, "id")
            )),
            start: cut(format!("⏳ {kind} {} started", field(ctx, "run_name"))),
            end: cut(plain_title(ctx)),
            web_url: field(ctx, "web_url").to_owned(),
            failure: ctx["is_failure"] == Value::Bool(true),
        }
    }
}

/// A kind's message with the lines a job's life shows in its start
/// message: what Discord and email render (Slack draws more of its own).
#[derive(Debug)]
pub struct Living<M> {
    pub body: M,
    pub lines: Lines,
}

impl<M: Message> Message for Living<M> {
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

    fn files(&self) -> Vec<(&'static str, String)> {
        self.body.files()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_name_from_the_payload_is_cut_to_fit_every_service() {
        let ctx = serde_json::json!({"kind": "prediction", "run_name": "n".repeat(5_000),
            "id": "p1", "emoji": "✅", "title": "t".repeat(5_000), "progress": "p".repeat(5_000)});
        let lines = Lines::new(&ctx);
        for line in [&lines.start, &lines.end, &lines.running, &lines.topic] {
            assert!(line.chars().count() <= MAX_LINE, "{}", line.len());
        }
        assert!(lines.start.starts_with("⏳ Prediction nnn"));
    }
}
