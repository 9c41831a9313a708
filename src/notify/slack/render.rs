//! A Slack message's format, its shipped template, and assembling the Block
//! Kit message: JSON checked for shape, a fallback `text` always present,
//! Slack's limits enforced by truncating; the built-in plain message when
//! the template fails.

use serde_json::{Value, json};

use super::limits::enforce_limits;
use crate::render::display::decode_entities;
use crate::render::{
    BuiltIn, Format, RenderFailure, Rendered, Templates, field, helpers, parse_json, plain_title,
};

/// `slack/NAME.json.hbs`: Block Kit, values escaped for JSON and mrkdwn.
pub const SLACK: Format = Format::new("slack", ".json.hbs", helpers::escape_slack, true);

/// The shipped Slack template, built into the binary.
pub const BUILT_IN: &[BuiltIn] = &[(
    SLACK,
    include_str!("../../../templates/slack/default.json.hbs"),
)];

/// The Block Kit message (`{"text", "blocks"}`) for `ctx`, within Slack's
/// limits; the built-in plain message if the template fails.
pub fn render(templates: &Templates, name: &str, ctx: &Value) -> Rendered<Value> {
    let attempt = || -> Result<Value, RenderFailure> {
        let text = templates.render(SLACK, name, ctx)?;
        let mut message = parse_json(&text, SLACK, name)?;
        let Some(object) = message.as_object_mut() else {
            return Err(RenderFailure {
                location: SLACK.relative_path(name),
                reason: "renders JSON that is not an object with `text` and `blocks`".into(),
            });
        };
        if !object.get("text").is_some_and(Value::is_string) {
            // The notification/fallback text is required for a good message.
            object.insert("text".into(), json!(plain_title(ctx)));
        }
        if object.get("blocks").is_some_and(|b| !b.is_array()) {
            return Err(RenderFailure {
                location: SLACK.relative_path(name),
                reason: "`blocks` must be a list".into(),
            });
        }
        plain_text_as_written(&mut message);
        enforce_limits(&mut message);
        Ok(message)
    };
    Rendered::or_fallback(attempt(), "slack", name, |_| fallback(ctx))
}

/// Slack shows a `plain_text` object as written, entities and all, so
/// what the template's escaping wrote for mrkdwn (`Tom &amp; Jerry`) is
/// decoded there; and it parses no mention or link, so nothing is lost.
fn plain_text_as_written(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("type").and_then(Value::as_str) == Some("plain_text")
                && let Some(Value::String(text)) = map.get_mut("text")
            {
                *text = decode_entities(text);
            }
            map.values_mut().for_each(plain_text_as_written);
        }
        Value::Array(items) => items.iter_mut().for_each(plain_text_as_written),
        _ => {}
    }
}

/// The Slack message sent when a template fails: plain text, which Slack
/// never formats, and a button; the notification text escaped for the
/// entities Slack decodes there.
fn fallback(ctx: &Value) -> Value {
    let esc = crate::render::display::escape_mrkdwn;
    let mut lines = vec![plain_title(ctx)];
    for key in ["id", "error_message"] {
        let value = field(ctx, key);
        if !value.is_empty() {
            lines.push(format!("{key}: {}", helpers::truncate_chars(value, 1_000)));
        }
    }
    let mut blocks =
        vec![json!({"type": "section", "text": {"type": "plain_text", "text": lines.join("\n")}})];
    let url = field(ctx, "web_url");
    if !url.is_empty() {
        blocks.push(json!({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open on Replicate"}, "url": url}
        ]}));
    }
    let mut message = json!({
        "text": esc(&plain_title(ctx)),
        "mrkdwn": false,
        "blocks": blocks
    });
    enforce_limits(&mut message);
    message
}

/// `message` without its image blocks, with a line saying so; `None` when
/// it has none.
pub fn without_images(message: &Value) -> Option<Value> {
    let blocks = message.get("blocks")?.as_array()?;
    let mut kept: Vec<Value> = blocks
        .iter()
        .filter(|b| b["type"] != "image")
        .cloned()
        .collect();
    if kept.len() == blocks.len() {
        return None;
    }
    let mut plain = message.clone();
    kept.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": "Slack could not download the output images, so this message leaves them out; the links above lead to the files."}]
    }));
    plain["blocks"] = Value::Array(kept);
    enforce_limits(&mut plain);
    Some(plain)
}
