//! A Teams message: its format, its shipped template (an Adaptive Card), and
//! the Workflows webhook body around it, kept under Teams' size limit by
//! cutting the card's long texts and then its last elements; the built-in
//! plain card when the template fails.

use std::any::Any;

use serde_json::{Value, json};

use crate::render::{
    BuiltIn, Format, Message, RenderFailure, Rendered, Templates, field, helpers, parse_json,
    plain_title,
};

/// `teams/NAME.json.hbs`: an Adaptive Card, values JSON-escaped.
pub const TEAMS: Format = Format::new("teams", ".json.hbs", helpers::escape_shown_json, true);

/// The shipped Teams template, built into the binary.
pub const BUILT_IN: &[BuiltIn] = &[(
    TEAMS,
    include_str!("../../../templates/teams/default.json.hbs"),
)];

/// The shipped teams digest (`group_by` on a route).
pub const DIGEST: &[BuiltIn] = &[(
    TEAMS,
    include_str!("../../../templates/teams/digest.json.hbs"),
)];

/// Teams refuses a message over about 28 KB.
pub const MAX_BYTES: usize = 27_000;
/// The longest text one card element keeps.
pub const MAX_TEXT: usize = 3_000;

/// The body to post: `{"type": "message", "attachments": [card]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Post(pub Value);

/// The colour of the card's title for `status`.
pub fn colour(status: &str) -> &'static str {
    match status {
        "succeeded" => "Good",
        "failed" => "Attention",
        "aborted" => "Warning",
        _ => "Accent",
    }
}

/// The body for `ctx` with template `name`; a plain card if the template fails.
pub fn render(templates: &Templates, name: &str, ctx: &Value) -> Rendered<Post> {
    let attempt = || -> Result<Value, RenderFailure> {
        let text = templates.render(TEAMS, name, ctx)?;
        let card = parse_json(&text, TEAMS, name)?;
        if card.get("type").and_then(Value::as_str) != Some("AdaptiveCard")
            || !card.get("body").is_some_and(Value::is_array)
        {
            return Err(RenderFailure {
                location: TEAMS.relative_path(name),
                reason: "renders JSON that is not an Adaptive Card (`type`: \"AdaptiveCard\", a `body` list)".into(),
            });
        }
        Ok(card)
    };
    let rendered = Rendered::or_fallback(attempt(), "teams", name, |_| fallback(ctx));
    let mut card = rendered.message;
    fit(&mut card);
    Rendered {
        message: Post(json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": card,
            }]
        })),
        fallback: rendered.fallback,
    }
}

/// Cuts every text of the card to [`MAX_TEXT`], then drops body elements
/// from the end (keeping the first, the title) until it fits [`MAX_BYTES`].
fn fit(card: &mut Value) {
    fn cut_texts(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    match v {
                        Value::String(s) if k == "text" || k == "value" => {
                            if s.chars().count() > MAX_TEXT {
                                *s = helpers::truncate_chars(s, MAX_TEXT);
                            }
                        }
                        other => cut_texts(other),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(cut_texts),
            _ => {}
        }
    }
    cut_texts(card);
    let size = |c: &Value| serde_json::to_vec(c).map_or(0, |b| b.len());
    while size(card) > MAX_BYTES {
        let Some(body) = card.get_mut("body").and_then(Value::as_array_mut) else {
            break;
        };
        if body.len() <= 1 {
            break;
        }
        body.pop();
    }
}

/// The card sent when the template fails: the title and the job, plainly.
fn fallback(ctx: &Value) -> Value {
    let mut facts = vec![
        json!({"title": "Job", "value": field(ctx, "id")}),
        json!({"title": "Status", "value": field(ctx, "status")}),
    ];
    let error = field(ctx, "error_message");
    if !error.is_empty() {
        facts.push(json!({"title": "Error", "value": helpers::truncate_chars(error, 1_000)}));
    }
    json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": plain_title(ctx), "weight": "Bolder", "wrap": true, "color": colour(field(ctx, "status"))},
            {"type": "FactSet", "facts": facts}
        ]
    })
}

impl Message for Rendered<Post> {
    fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    fn preview(&self) -> String {
        serde_json::to_string_pretty(&self.message.0).unwrap_or_default()
    }

    fn preview_json(&self) -> Value {
        json!({"teams": self.message.0})
    }

    /// Every string of the card; a fact's, which Teams reads as Markdown,
    /// with its backslash escapes decoded.
    fn seen_text(&self) -> String {
        let mut card = self.message.0["attachments"].clone();
        decode_facts(&mut card);
        let mut all = Vec::new();
        crate::render::message::strings(&card, &mut all);
        all.join("\n")
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Every fact's title and value with CommonMark's backslash escapes
/// decoded, as Teams shows them.
fn decode_facts(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(facts)) = map.get_mut("facts") {
                for fact in facts.iter_mut().filter_map(Value::as_object_mut) {
                    for text in fact.values_mut() {
                        if let Value::String(s) = text {
                            *s = crate::render::display::unescape_commonmark(s);
                        }
                    }
                }
            }
            map.values_mut().for_each(decode_facts);
        }
        Value::Array(items) => items.iter_mut().for_each(decode_facts),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_too_big_is_cut_to_fit() {
        let mut card = json!({
            "type": "AdaptiveCard",
            "body": (0..40).map(|i| json!({"type": "TextBlock", "text": format!("{i}{}", "x".repeat(5_000))})).collect::<Vec<_>>()
        });
        fit(&mut card);
        let body = card["body"].as_array().unwrap();
        assert!(serde_json::to_vec(&card).unwrap().len() <= MAX_BYTES);
        assert!(
            body[0]["text"].as_str().unwrap().starts_with('0'),
            "the title stays"
        );
        assert!(
            body.iter()
                .all(|b| b["text"].as_str().unwrap().chars().count() <= MAX_TEXT)
        );
        assert_eq!(colour("failed"), "Attention");
        let card = fallback(&json!({"id": "x", "status": "failed"}));
        assert_eq!(card["body"][0]["color"], "Attention");
    }
}
