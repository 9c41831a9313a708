//! A rendered message, as the rest of the daemon sees it: each notifier kind
//! renders a message of its own type and its sender takes it back by that
//! type ([`Message::as_any`]); previews, the log and checks read any kind's
//! message through this trait. Each kind implements it for its own message
//! type, in its own folder.

use std::any::Any;
use std::fmt;

use serde_json::Value;

/// A message rendered for one notifier.
pub trait Message: fmt::Debug + Send + Sync + 'static {
    /// Why the built-in fallback was used, if it was.
    fn fallback(&self) -> Option<&str>;

    /// The message as `replicate-relay route` prints it.
    fn preview(&self) -> String;

    /// The message's fields for `route --format json`.
    fn preview_json(&self) -> Value;

    /// Everything its reader sees, as plain text, markup decoded: what
    /// checks read (does the message name its job?).
    fn seen_text(&self) -> String;

    /// For the kind's sender, to take its own message type back.
    fn as_any(&self) -> &dyn Any;

    /// The message as files to look at, `(extension, contents)`, for
    /// `preview --out`: JSON as `.json`, anything else as `.txt`.
    fn files(&self) -> Vec<(&'static str, String)> {
        let text = self.preview();
        let ext = if serde_json::from_str::<Value>(&text).is_ok() {
            "json"
        } else {
            "txt"
        };
        vec![(ext, text)]
    }
}

/// Every string anywhere in a JSON value, depth first.
pub fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Object(map) => map.values().for_each(|i| strings(i, out)),
        _ => {}
    }
}
