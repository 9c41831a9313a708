//! An ntfy message: its format, its shipped template, and the JSON publish
//! body (https://docs.ntfy.sh/publish/#publish-as-json) assembled from the
//! template with the topic, the priority by status and the configured tags,
//! within ntfy's limits; the built-in plain message when the template fails.

use std::any::Any;

use serde_json::{Map, Value, json};

use super::config::Ntfy;
use crate::event::Status;
use crate::render::{
    BuiltIn, Format, Message, RenderFailure, Rendered, Templates, field, helpers, parse_json,
    plain_title,
};

/// `ntfy/NAME.json.hbs`: the fields of a JSON publish, values JSON-escaped.
pub const NTFY: Format = Format::new("ntfy", ".json.hbs", helpers::escape_shown_json, true);

/// The shipped ntfy template, built into the binary.
pub const BUILT_IN: &[BuiltIn] = &[(
    NTFY,
    include_str!("../../../templates/ntfy/default.json.hbs"),
)];

/// The shipped ntfy digest (`group_by` on a route).
pub const DIGEST: &[BuiltIn] = &[(
    NTFY,
    include_str!("../../../templates/ntfy/digest.json.hbs"),
)];

/// ntfy turns a message longer than this into an attachment.
pub const MAX_MESSAGE_BYTES: usize = 4_096;
/// A title longer than this is cut (phones show far less).
pub const MAX_TITLE_CHARS: usize = 250;
/// Tags beyond this many are dropped.
pub const MAX_TAGS: usize = 10;

/// The body to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish(pub Value);

/// The priority (1–5) for `status`: the configured one, else failures high,
/// successes default, the rest low.
pub fn priority(settings: &Ntfy, status: &str) -> u8 {
    if let Some(p) = settings.priorities.get(status) {
        return *p;
    }
    match Status::parse(status) {
        Status::Failed | Status::Aborted => 4,
        Status::Succeeded => 3,
        _ => 2,
    }
}

/// The publish body for `ctx` with template `name`; the built-in plain one if
/// the template fails.
pub fn render(
    settings: &Ntfy,
    templates: &Templates,
    name: &str,
    ctx: &Value,
) -> Rendered<Publish> {
    let attempt = || -> Result<Map<String, Value>, RenderFailure> {
        let text = templates.render(NTFY, name, ctx)?;
        match parse_json(&text, NTFY, name)? {
            Value::Object(fields) => Ok(fields),
            _ => Err(RenderFailure {
                location: NTFY.relative_path(name),
                reason: "renders JSON that is not an object with `title` and `message`".into(),
            }),
        }
    };
    let rendered = Rendered::or_fallback(attempt(), "ntfy", name, |reason| fallback(ctx, reason));
    Rendered {
        message: Publish(finish(settings, rendered.message, ctx)),
        fallback: rendered.fallback,
    }
}

/// The fields every publish gets whatever the template wrote: the topic, a
/// priority, the configured tags, and ntfy's limits.
fn finish(settings: &Ntfy, mut fields: Map<String, Value>, ctx: &Value) -> Value {
    fields.insert("topic".into(), json!(settings.topic));
    if !matches!(fields.get("priority"), Some(Value::Number(n)) if (1..=5).contains(&n.as_u64().unwrap_or(0)))
    {
        fields.insert(
            "priority".into(),
            json!(priority(settings, field(ctx, "status"))),
        );
    }
    let mut tags: Vec<Value> = match fields.remove("tags") {
        Some(Value::Array(items)) => items.into_iter().filter(Value::is_string).collect(),
        _ => Vec::new(),
    };
    tags.extend(settings.tags.iter().map(|t| json!(t)));
    tags.truncate(MAX_TAGS);
    fields.insert("tags".into(), Value::Array(tags));
    let title = fields
        .get("title")
        .and_then(Value::as_str)
        .map(str::to_owned);
    fields.insert(
        "title".into(),
        json!(helpers::truncate_chars(
            &title.unwrap_or_else(|| plain_title(ctx)),
            MAX_TITLE_CHARS
        )),
    );
    let message = fields.get("message").and_then(Value::as_str).unwrap_or("");
    let message = cut_bytes(message, MAX_MESSAGE_BYTES);
    fields.insert("message".into(), json!(message));
    // Only a web link opens on a click; anything else is dropped.
    if !fields
        .get("click")
        .and_then(Value::as_str)
        .is_some_and(|u| u.starts_with("https://") || u.starts_with("http://"))
    {
        fields.remove("click");
    }
    Value::Object(fields)
}

/// At most `max` bytes of `text`, cut between graphemes and marked with "…".
fn cut_bytes(text: &str, max: usize) -> String {
    use unicode_segmentation::UnicodeSegmentation;
    if text.len() <= max {
        return text.to_owned();
    }
    let budget = max - '…'.len_utf8();
    let end = text
        .grapheme_indices(true)
        .map(|(i, g)| i + g.len())
        .take_while(|end| *end <= budget)
        .last()
        .unwrap_or(0);
    format!("{}…", &text[..end])
}

/// The message sent when the template fails: plain, complete.
fn fallback(ctx: &Value, reason: &str) -> Map<String, Value> {
    let mut message = format!("Job {} · {}", field(ctx, "id"), field(ctx, "status"));
    let error = field(ctx, "error_message");
    if !error.is_empty() {
        message = format!("{error}\n{message}");
    }
    message.push_str(&format!(
        "\n(replicate-relay's built-in message: the template failed: {reason})"
    ));
    let mut fields = Map::new();
    fields.insert("title".into(), json!(plain_title(ctx)));
    fields.insert("message".into(), json!(message));
    fields.insert(
        "click".into(),
        ctx.get("web_url").cloned().unwrap_or(Value::Null),
    );
    fields
}

impl Rendered<Publish> {
    /// The message as `route` and `preview` print it: the topic, which is
    /// all the password a public topic has, is not shown.
    fn shown(&self) -> Value {
        let mut shown = self.message.0.clone();
        if shown.get("topic").is_some() {
            shown["topic"] = json!("(secret)");
        }
        shown
    }
}

impl Message for Rendered<Publish> {
    fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    fn preview(&self) -> String {
        serde_json::to_string_pretty(&self.shown()).unwrap_or_default()
    }

    fn preview_json(&self) -> Value {
        json!({"ntfy": self.shown()})
    }

    fn seen_text(&self) -> String {
        let get = |k: &str| self.message.0.get(k).and_then(Value::as_str).unwrap_or("");
        format!("{}\n{}", get("title"), get("message"))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Ntfy {
        Ntfy {
            server: url::Url::parse("https://ntfy.sh/").unwrap(),
            topic: "ml".into(),
            token: None,
            priorities: [("canceled".to_owned(), 1)].into(),
            tags: vec!["replicate".into()],
            timeout: std::time::Duration::from_secs(5),
        }
    }

    #[test]
    fn priority_by_status_with_overrides() {
        let s = settings();
        for (status, want) in [
            ("failed", 4),
            ("aborted", 4),
            ("succeeded", 3),
            ("processing", 2),
            ("canceled", 1),
        ] {
            assert_eq!(priority(&s, status), want, "{status}");
        }
    }

    #[test]
    fn finishing_adds_topic_priority_tags_and_keeps_the_limits() {
        let ctx = json!({"status": "failed", "emoji": "❌", "title": "Training x failed"});
        let fields = json!({
            "title": "t".repeat(400),
            "message": "é".repeat(3_000),
            "tags": ["rotating_light", 7],
            "click": "javascript:alert(1)"
        });
        let Value::Object(fields) = fields else {
            unreachable!()
        };
        let out = finish(&settings(), fields, &ctx);
        assert_eq!(out["topic"], "ml");
        assert_eq!(out["priority"], 4);
        assert_eq!(out["tags"], json!(["rotating_light", "replicate"]));
        assert_eq!(
            out["title"].as_str().unwrap().chars().count(),
            MAX_TITLE_CHARS
        );
        let message = out["message"].as_str().unwrap();
        assert!(message.len() <= MAX_MESSAGE_BYTES && message.ends_with('…'));
        assert!(out.get("click").is_none(), "only web links");
    }
}
