//! What every kind that follows a job's life (`lifecycle = true` on a
//! route) shares: where the life stands for one delivery, and the two
//! short lines a start message shows, first as the job starts, then as it
//! ends.

use serde_json::Value;

use crate::render::{field, plain_title};

/// Where a job's life stands for one lifecycle delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Life {
    /// The job's start (a non-final webhook), not its end.
    pub start: bool,
    /// The state the kind returned at the job's last delivery to this
    /// notifier on this route (what it posted, whether the end went out).
    pub thread: Option<Value>,
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
}

/// The lines of a job's start message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines {
    /// "⏳ Training acme/neon started".
    pub start: String,
    /// "✅ Training acme/neon succeeded in 4m 12s".
    pub end: String,
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
        Lines {
            topic: format!("{kind} {} ({})", field(ctx, "run_name"), field(ctx, "id")),
            start: format!("⏳ {kind} {} started", field(ctx, "run_name")),
            end: plain_title(ctx),
            web_url: field(ctx, "web_url").to_owned(),
            failure: ctx["is_failure"] == Value::Bool(true),
        }
    }
}
