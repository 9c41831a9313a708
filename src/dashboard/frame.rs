//! A message shown inside a page, in a frame of its own: its kind's
//! picture of it (Slack and Discord as their apps show them, email as its
//! HTML part), or its JSON. The frame's policy allows no script at all
//! and gives it no origin, whatever the message holds.

use serde_json::Value;

use super::html::esc;
use super::request::{Answer, not_found};
use super::{Dashboard, overview};
use crate::notify::registry;

/// The frame's policy: a sandbox (no script, no origin, no forms, no
/// navigation of the page), and every kind of fetch refused but pictures
/// over https. Styles are left unrestricted, not named: an email's HTML
/// carries them in its own elements and attributes, and nothing the
/// frame shows can write one (every value in it is escaped).
pub const POLICY: &str = "sandbox; script-src 'none'; object-src 'none'; connect-src 'none'; \
    font-src 'none'; frame-src 'none'; child-src 'none'; media-src 'none'; manifest-src 'none'; \
    worker-src 'none'; form-action 'none'; base-uri 'none'; img-src https: data:; frame-ancestors 'self'";

/// Delivery `id`'s message as it was last rendered.
pub async fn delivery(d: &Dashboard, id: i64) -> Answer {
    let found = match d.admin.attempts(id).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(),
        Err(e) => return overview::unavailable(&e),
    };
    let Some(stored) = found
        .message
        .and_then(|m| serde_json::from_str::<Value>(&m).ok())
    else {
        return Answer::Frame(text_page("No attempt has rendered this message yet."));
    };
    Answer::Frame(shown(&stored))
}

/// A stored message (`{"kind", "message"}`, or `{"kind", "cut", "text"}`
/// when it was too large to keep whole) as a page.
pub fn shown(stored: &Value) -> String {
    let kind = stored["kind"].as_str().unwrap_or_default();
    if let Some(text) = stored["text"].as_str() {
        return text_page(text);
    }
    let message = &stored["message"];
    registry::all()
        .into_iter()
        .find(|k| k.name() == kind)
        .and_then(|k| k.page(message))
        .unwrap_or_else(|| text_page(&serde_json::to_string_pretty(message).unwrap_or_default()))
}

fn text_page(text: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body style=\"margin:0\">\
         <pre style=\"white-space:pre-wrap;word-break:break-word;font:12px ui-monospace,monospace;padding:10px;margin:0\">{}</pre></body></html>",
        esc(text)
    )
}
