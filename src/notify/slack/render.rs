//! A Slack message's format, its shipped template, and assembling the Block
//! Kit message: JSON checked for shape, a fallback `text` always present,
//! Slack's limits enforced by truncating; the built-in plain message when
//! the template fails.

use std::any::Any;

use serde_json::{Value, json};

use super::limits::enforce_limits;
use crate::render::display::decode_entities;
use crate::render::{
    BuiltIn, Format, Message, RenderFailure, Rendered, Templates, field, helpers, parse_json,
    plain_title,
};

/// `slack/NAME.json.hbs`: Block Kit, values escaped for JSON and mrkdwn.
pub const SLACK: Format = Format::new("slack", ".json.hbs", helpers::escape_slack, true);

/// The shipped Slack template, built into the binary.
pub const BUILT_IN: &[BuiltIn] = &[(
    SLACK,
    include_str!("../../../templates/slack/default.json.hbs"),
)];

/// The shipped Slack digest (`group_by` on a route).
pub const DIGEST: &[BuiltIn] = &[(
    SLACK,
    include_str!("../../../templates/slack/digest.json.hbs"),
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

/// Everything but RFC 3986's unreserved characters, for the Block Kit
/// Builder link's fragment.
const FRAGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A JSON message (Slack's Block Kit): its strings are what a reader sees,
/// with the three entities Slack's mrkdwn decodes.
impl Message for Rendered<Value> {
    fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    fn preview(&self) -> String {
        serde_json::to_string_pretty(&self.message).unwrap_or_default()
    }

    fn preview_json(&self) -> Value {
        json!({"slack": self.message})
    }

    fn seen_text(&self) -> String {
        let mut all = Vec::new();
        crate::render::message::strings(&self.message, &mut all);
        all.join("\n")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    /// The Block Kit JSON, and a link that opens it in Slack's Block Kit
    /// Builder to see it as Slack lays it out.
    fn files(&self) -> Vec<(&'static str, String)> {
        let blocks = json!({"blocks": self.message.get("blocks").cloned().unwrap_or(json!([]))});
        vec![
            ("json", self.preview()),
            (
                "builder-url.txt",
                format!(
                    "https://app.slack.com/block-kit-builder/#{}\n",
                    percent_encoding::utf8_percent_encode(&blocks.to_string(), FRAGMENT)
                ),
            ),
        ]
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_sees_entities_decoded_and_the_builder_link_opens_the_blocks() {
        let slack = Rendered {
            message: json!({"text": "a &lt;b&gt; &amp; c", "blocks": [{"text": "t1"}]}),
            fallback: Some("broke".into()),
        };
        assert_eq!(slack.seen_text(), "t1\na <b> & c");
        let files = slack.files();
        assert_eq!(files[0].0, "json");
        assert_eq!(
            files[1].1,
            "https://app.slack.com/block-kit-builder/#%7B%22blocks%22%3A%5B%7B%22text%22%3A%22t1%22%7D%5D%7D\n"
        );
        assert_eq!(slack.fallback(), Some("broke"));
    }
}
