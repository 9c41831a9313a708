//! A Discord message: its format, its shipped template, and the webhook body
//! assembled from the template — an embed coloured by status, no mentions
//! allowed (a prompt cannot ping @everyone), within Discord's limits, which
//! are enforced by cutting at safe boundaries and dropping what cannot fit
//! (a URL is never cut), never by failing; the built-in plain message when
//! the template fails.

use std::any::Any;

use serde_json::{Map, Value, json};

use super::config::Discord;
use crate::event::Status;
use crate::render::cut::{self as cutting, measure};
use crate::render::{
    BuiltIn, Format, Message, RenderFailure, Rendered, Templates, field, helpers, parse_json,
    plain_title,
};

/// `discord/NAME.json.hbs`: a webhook body, values JSON-escaped.
pub const DISCORD: Format = Format::new("discord", ".json.hbs", helpers::escape_shown_json, true);

/// The shipped Discord template, built into the binary.
pub const BUILT_IN: &[BuiltIn] = &[(
    DISCORD,
    include_str!("../../../templates/discord/default.json.hbs"),
)];

/// The shipped Discord digest (`group_by` on a route).
pub const DIGEST: &[BuiltIn] = &[(
    DISCORD,
    include_str!("../../../templates/discord/digest.json.hbs"),
)];

// Discord's limits (Execute Webhook; Embed Limits).
pub const MAX_CONTENT: usize = 2_000;
pub const MAX_EMBEDS: usize = 10;
pub const MAX_TITLE: usize = 256;
pub const MAX_DESCRIPTION: usize = 4_096;
pub const MAX_FIELDS: usize = 25;
pub const MAX_FIELD_NAME: usize = 256;
pub const MAX_FIELD_VALUE: usize = 1_024;
pub const MAX_FOOTER: usize = 2_048;
pub const MAX_USERNAME: usize = 80;
/// Any URL in an embed (its link, image, thumbnail, author, footer icon).
pub const MAX_URL: usize = 2_048;
/// Characters across every embed's title, description, fields, footer and
/// author, together.
pub const MAX_TOTAL: usize = 6_000;

/// The body to post.
#[derive(Debug, Clone, PartialEq)]
pub struct Post(pub Value);

/// The embed colour for `status`: green, red, orange, grey, or blue.
pub fn colour(status: &str) -> u32 {
    match Status::parse(status) {
        Status::Succeeded => 0x2EB67D,
        Status::Failed => 0xE01E5A,
        Status::Aborted => 0xECB22E,
        Status::Canceled => 0x9AA0A6,
        _ => 0x36C5F0,
    }
}

/// The body for `ctx` with template `name`; the built-in plain one if the
/// template fails.
pub fn render(
    settings: &Discord,
    templates: &Templates,
    name: &str,
    ctx: &Value,
) -> Rendered<Post> {
    let attempt = || -> Result<Map<String, Value>, RenderFailure> {
        let text = templates.render(DISCORD, name, ctx)?;
        match parse_json(&text, DISCORD, name)? {
            Value::Object(body) if body.contains_key("content") || body.contains_key("embeds") => {
                Ok(body)
            }
            _ => Err(RenderFailure {
                location: DISCORD.relative_path(name),
                reason: "renders JSON that is not an object with `content` or `embeds`".into(),
            }),
        }
    };
    let rendered =
        Rendered::or_fallback(attempt(), "discord", name, |reason| fallback(ctx, reason));
    Rendered {
        message: Post(finish(settings, rendered.message, ctx)),
        fallback: rendered.fallback,
    }
}

/// Cuts plain text (a title, a footer) to `max`.
fn cut(value: &mut Value, max: usize) {
    if let Value::String(s) = value
        && measure(s) > max
    {
        *s = cutting::cut(s, max);
    }
}

/// Cuts Markdown (a description, a field) to `max` at a safe boundary.
fn cut_md(value: &mut Value, max: usize) {
    if let Value::String(s) = value
        && measure(s) > max
    {
        *s = cutting::cut_markdown(s, max);
    }
}

fn chars(v: Option<&Value>) -> usize {
    v.and_then(Value::as_str).map_or(0, measure)
}

/// Whether `value` is a URL Discord takes: http(s), within [`MAX_URL`].
fn url_ok(value: Option<&Value>) -> bool {
    value.and_then(Value::as_str).is_some_and(|u| {
        measure(u) <= MAX_URL && (u.starts_with("https://") || u.starts_with("http://"))
    })
}

/// Removes `key` from `embed` when its URL (at `url`, within it) is not one
/// Discord takes: a link or picture too long to send is left out, not cut.
fn drop_bad_url(embed: &mut Value, key: &str, url: &str) {
    let bad = match embed.get(key) {
        None | Some(Value::Null) => false,
        Some(v) if url.is_empty() => !url_ok(Some(v)),
        Some(v) => v.get(url).is_some_and(|u| !url_ok(Some(u))),
    };
    if bad && let Some(o) = embed.as_object_mut() {
        o.remove(key);
    }
}

/// The characters of one embed that count towards [`MAX_TOTAL`].
fn embed_chars(e: &Value) -> usize {
    let fields = e["fields"].as_array().map_or(0, |f| {
        f.iter()
            .map(|f| chars(f.get("name")) + chars(f.get("value")))
            .sum()
    });
    chars(e.get("title"))
        + chars(e.get("description"))
        + chars(e.pointer("/footer/text"))
        + chars(e.pointer("/author/name"))
        + fields
}

/// What every body gets whatever the template wrote: no mentions, the
/// configured name, a colour by status, and Discord's limits.
fn finish(settings: &Discord, mut body: Map<String, Value>, ctx: &Value) -> Value {
    body.insert("allowed_mentions".into(), json!({"parse": []}));
    if let Some(name) = &settings.username {
        body.insert("username".into(), json!(cutting::cut(name, MAX_USERNAME)));
    }
    if !url_ok(body.get("avatar_url")) {
        body.remove("avatar_url");
    }
    if let Some(content) = body.get_mut("content") {
        cut(content, MAX_CONTENT);
    }
    let mut embeds: Vec<Value> = match body.remove("embeds") {
        Some(Value::Array(items)) => items.into_iter().filter(Value::is_object).collect(),
        _ => Vec::new(),
    };
    embeds.truncate(MAX_EMBEDS);
    for e in &mut embeds {
        if !e["color"].is_u64() {
            e["color"] = json!(colour(field(ctx, "status")));
        }
        drop_bad_url(e, "url", "");
        for key in ["image", "thumbnail", "video"] {
            drop_bad_url(e, key, "url");
        }
        for key in ["author", "footer"] {
            for url in ["url", "icon_url"] {
                if let Some(part) = e.get_mut(key) {
                    drop_bad_url(part, url, "");
                }
            }
        }
        cut(&mut e["title"], MAX_TITLE);
        cut_md(&mut e["description"], MAX_DESCRIPTION);
        if let Some(text) = e.pointer_mut("/footer/text") {
            cut(text, MAX_FOOTER);
        }
        if let Some(name) = e.pointer_mut("/author/name") {
            cut(name, MAX_TITLE);
        }
        if let Some(fields) = e.get_mut("fields").and_then(Value::as_array_mut) {
            fields.retain(Value::is_object);
            fields.truncate(MAX_FIELDS);
            for f in fields {
                // Discord refuses an empty name or value.
                for (key, max) in [("name", MAX_FIELD_NAME), ("value", MAX_FIELD_VALUE)] {
                    if chars(f.get(key)) == 0 {
                        f[key] = json!("\u{200b}");
                    }
                    cut_md(&mut f[key], max);
                }
            }
        }
        if let Some(o) = e.as_object_mut() {
            o.retain(|_, v| !v.is_null());
        }
    }
    // Within the total: shorten descriptions, then drop fields, from the last embed.
    let total = |embeds: &[Value]| embeds.iter().map(embed_chars).sum::<usize>();
    for i in (0..embeds.len()).rev() {
        let over = total(&embeds).saturating_sub(MAX_TOTAL);
        if over == 0 {
            break;
        }
        let keep = chars(embeds[i].get("description")).saturating_sub(over);
        cut_md(&mut embeds[i]["description"], keep.max(1));
    }
    while total(&embeds) > MAX_TOTAL {
        let Some(last) = embeds.last_mut() else { break };
        let dropped = last
            .get_mut("fields")
            .and_then(Value::as_array_mut)
            .and_then(Vec::pop)
            .is_some();
        if !dropped {
            embeds.pop();
        }
    }
    if !embeds.is_empty() {
        body.insert("embeds".into(), Value::Array(embeds));
    }
    if chars(body.get("content")) == 0 && !body.contains_key("embeds") {
        body.insert(
            "content".into(),
            json!(helpers::truncate_chars(&plain_title(ctx), MAX_CONTENT)),
        );
    }
    Value::Object(body)
}

/// The message sent when the template fails: plain, complete.
fn fallback(ctx: &Value, reason: &str) -> Map<String, Value> {
    let md = crate::render::display::escape_markdown;
    let mut content = format!(
        "**{}**\nJob {} · {}",
        md(&plain_title(ctx)),
        md(field(ctx, "id")),
        md(field(ctx, "status"))
    );
    let error = field(ctx, "error_message");
    if !error.is_empty() {
        content.push_str(&format!("\n{}", md(&helpers::truncate_chars(error, 1_000))));
    }
    content.push_str(&format!(
        "\n(replicate-relay's built-in message: the template failed: {reason})"
    ));
    let mut body = Map::new();
    body.insert("content".into(), json!(content));
    body
}

impl Message for Rendered<Post> {
    fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    fn preview(&self) -> String {
        serde_json::to_string_pretty(&self.message.0).unwrap_or_default()
    }

    fn preview_json(&self) -> Value {
        json!({"discord": self.message.0})
    }

    fn seen_text(&self) -> String {
        let mut all = Vec::new();
        crate::render::message::strings(&self.message.0, &mut all);
        all.join("\n")
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::read::Sensitive;

    fn settings() -> Discord {
        Discord {
            webhook_url: Sensitive::new("https://discord.com/api/webhooks/1/t"),
            username: Some("Replicate relay".into()),
            timeout: std::time::Duration::from_secs(5),
        }
    }

    #[test]
    fn limits_are_kept_by_cutting() {
        let body = json!({
            "content": "c".repeat(3_000),
            "embeds": (0..12).map(|i| json!({
                "title": "t".repeat(300),
                "description": "d".repeat(5_000),
                "url": if i == 0 { json!("javascript:x") } else { json!("https://replicate.com/p/x") },
                "fields": (0..30).map(|_| json!({"name": "", "value": "v".repeat(2_000)})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()
        });
        let Value::Object(body) = body else {
            unreachable!()
        };
        let out = finish(&settings(), body, &json!({"status": "failed"}));
        assert_eq!(out["allowed_mentions"], json!({"parse": []}));
        assert_eq!(out["username"], "Replicate relay");
        assert_eq!(chars(out.get("content")), MAX_CONTENT);
        let embeds = out["embeds"].as_array().unwrap();
        assert!(embeds.len() <= MAX_EMBEDS);
        assert!(embeds.iter().map(embed_chars).sum::<usize>() <= MAX_TOTAL);
        let first = &embeds[0];
        assert_eq!(first["color"], 0xE01E5A);
        assert!(first.get("url").is_none(), "only web links");
        assert!(chars(first.get("title")) <= MAX_TITLE);
        for f in first["fields"].as_array().map_or(&[][..], |f| f.as_slice()) {
            assert!(chars(f.get("name")) >= 1 && chars(f.get("value")) <= MAX_FIELD_VALUE);
        }
    }

    #[test]
    fn urls_too_long_are_left_out_and_lists_say_what_they_left_out() {
        let long = format!("https://replicate.delivery/a/{}/out.png", "x".repeat(2_100));
        let links: Vec<String> = (0..40)
            .map(|i| {
                format!(
                    "[out-{i}.png](https://replicate.delivery/xezq/{}/out-{i}.png)",
                    "k".repeat(60)
                )
            })
            .collect();
        let body = json!({"embeds": [{
            "title": "t", "url": long, "image": {"url": long},
            "thumbnail": {"url": "https://replicate.delivery/a/ok.png"},
            "footer": {"text": "f", "icon_url": long},
            "fields": [{"name": "Output", "value": links.join("\n")}],
        }]});
        let Value::Object(body) = body else {
            unreachable!()
        };
        let out = finish(&settings(), body, &json!({"status": "succeeded"}));
        let e = &out["embeds"][0];
        assert!(e.get("url").is_none() && e.get("image").is_none());
        assert_eq!(e["thumbnail"]["url"], "https://replicate.delivery/a/ok.png");
        assert_eq!(e["footer"], json!({"text": "f"}));
        let value = e["fields"][0]["value"].as_str().unwrap();
        assert!(measure(value) <= MAX_FIELD_VALUE);
        let kept = value.lines().filter(|l| l.starts_with("[out-")).count();
        assert!(kept > 1);
        assert!(
            value.ends_with(&format!("…and {} more", 40 - kept)),
            "{value}"
        );
    }

    #[test]
    fn colours_by_status() {
        assert_eq!(colour("succeeded"), 0x2EB67D);
        assert_eq!(colour("failed"), 0xE01E5A);
        assert_eq!(colour("processing"), 0x36C5F0);
    }
}
