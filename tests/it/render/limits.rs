//! Each service's documented limits, and what its reader would see amiss,
//! as checks over a rendered message: `Err` says what the service would
//! refuse or show wrongly. (The published schemas are checked beside these,
//! in `services.rs`.)

use serde_json::Value;

type Checked = Result<(), String>;

/// A length as the strictest service counts it: UTF-16 code units (never
/// fewer than characters).
pub fn measure(text: &str) -> usize {
    text.encode_utf16().count()
}

fn within(what: &str, value: &Value, max: usize) -> Checked {
    match value.as_str() {
        Some(s) if measure(s) > max => Err(format!("{what} is {} long, over {max}", measure(s))),
        _ => Ok(()),
    }
}

/// A URL exactly as a URL parser writes it (a browser, the W3C checker and
/// the services all parse it), and within `max`.
fn url(what: &str, value: &Value, max: usize) -> Checked {
    let text = value.as_str().ok_or_else(|| format!("{what}: no URL"))?;
    let parsed = url::Url::parse(text).map_err(|e| format!("{what}: {text:?}: {e}"))?;
    if parsed.as_str() != text {
        return Err(format!(
            "{what}: {text:?} is not as a parser writes it ({parsed})"
        ));
    }
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(format!("{what}: {text:?} is not a web URL"));
    }
    within(what, value, max)
}

/// Every object anywhere in `value`, depth first.
fn objects<'v>(value: &'v Value, out: &mut Vec<&'v serde_json::Map<String, Value>>) {
    match value {
        Value::Object(map) => {
            out.push(map);
            map.values().for_each(|v| objects(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| objects(v, out)),
        _ => {}
    }
}

/// Markdown text whose links are whole (never cut inside their target)
/// and none of which the payload wrote (a `](` not escaped, pointing at the
/// test's evil host). Code blocks and spans show their text as written.
fn markdown(what: &str, text: &str) -> Checked {
    let outside_code: String = text
        .split("```")
        .step_by(2)
        .flat_map(|prose| prose.split('`').step_by(2))
        .collect::<Vec<_>>()
        .join(" ");
    let text = outside_code.as_str();
    for (i, _) in text.match_indices("](") {
        if text[..i].ends_with('\\') {
            continue;
        }
        let target = &text[i + 2..];
        let end = target
            .find(')')
            .ok_or_else(|| format!("{what}: a link cut open in {text:?}"))?;
        let target = &target[..end];
        if target.starts_with("https://evil.example") {
            return Err(format!("{what}: a link the payload wrote in {text:?}"));
        }
        url(what, &Value::from(target), 2_048)?;
    }
    Ok(())
}

/// Slack's Block Kit limits, the formats its image blocks take, and
/// plain text shown as written.
pub fn slack(message: &Value) -> Checked {
    within("text", &message["text"], 40_000)?;
    let blocks = message["blocks"].as_array().ok_or("no blocks")?;
    if blocks.len() > 50 {
        return Err(format!("{} blocks", blocks.len()));
    }
    for block in blocks {
        match block["type"].as_str().unwrap_or("") {
            "header" => within("header", &block["text"]["text"], 150)?,
            "section" => within("section", &block["text"]["text"], 3_000)?,
            "image" => {
                url("image_url", &block["image_url"], 3_000)?;
                let u = block["image_url"]
                    .as_str()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                let path = u.split(['?', '#']).next().unwrap_or("");
                if ![".png", ".jpg", ".jpeg", ".gif"]
                    .iter()
                    .any(|e| path.ends_with(e))
                {
                    return Err(format!("an image block Slack cannot fetch: {u}"));
                }
                within("alt_text", &block["alt_text"], 2_000)?;
            }
            _ => {}
        }
    }
    let mut all = Vec::new();
    objects(message, &mut all);
    for o in all {
        let text = o.get("text").unwrap_or(&Value::Null);
        match o.get("type").and_then(Value::as_str) {
            Some("plain_text") => {
                let t = text.as_str().unwrap_or("");
                if ["&amp;", "&lt;", "&gt;"].iter().any(|e| t.contains(e)) {
                    return Err(format!("an entity shown escaped in plain text: {t:?}"));
                }
            }
            Some("link") => {
                url("link", &o["url"], 3_000)?;
                within("link text", text, 3_000)?;
            }
            Some("button") => url("button", &o["url"], 3_000)?,
            Some("text" | "mrkdwn") => within("text", text, 3_000)?,
            _ => {}
        }
    }
    Ok(())
}

/// Discord's total across embeds, and Markdown whose links are whole.
pub fn discord(body: &Value) -> Checked {
    for embed in body["embeds"].as_array().into_iter().flatten() {
        let mut total = 0;
        for key in ["/title", "/description", "/footer/text", "/author/name"] {
            total += embed
                .pointer(key)
                .and_then(Value::as_str)
                .map_or(0, measure);
        }
        for field in embed["fields"].as_array().into_iter().flatten() {
            for key in ["name", "value"] {
                let text = field[key].as_str().unwrap_or("");
                total += measure(text);
                markdown("a field", text)?;
            }
        }
        markdown(
            "the description",
            embed["description"].as_str().unwrap_or(""),
        )?;
        if total > 6_000 {
            return Err(format!("embeds total {total}, over 6,000"));
        }
        for key in ["/url", "/image/url", "/thumbnail/url"] {
            if let Some(u) = embed.pointer(key) {
                url(key, u, 2_048)?;
            }
        }
    }
    Ok(())
}

/// Teams' message size, and facts (read as Markdown) that cannot link.
pub fn teams(message: &Value) -> Checked {
    let size = message.to_string().len();
    if size > 28_000 {
        return Err(format!("{size} bytes, over Teams' 28 KB"));
    }
    let mut all = Vec::new();
    objects(message, &mut all);
    for fact in all
        .iter()
        .filter_map(|o| o.get("facts"))
        .flat_map(|f| f.as_array().into_iter().flatten())
    {
        for key in ["title", "value"] {
            let text = fact[key].as_str().unwrap_or("");
            markdown("a fact", text)?;
            // Bold, italics, links and code the payload wrote stay text.
            let chars: Vec<char> = text.chars().collect();
            for (i, c) in chars.iter().enumerate() {
                if matches!(c, '*' | '[' | ']' | '`') && (i == 0 || chars[i - 1] != '\\') {
                    return Err(format!("a fact formats {c:?} in {text:?}"));
                }
            }
        }
    }
    Ok(())
}

/// PagerDuty's limits, no `null` detail, and the time the job ended.
pub fn pagerduty(body: &Value, event: &replicate_relay::event::Event) -> Checked {
    within("summary", &body["payload"]["summary"], 1_024)?;
    within("dedup_key", &body["dedup_key"], 255)?;
    if body.to_string().len() > 512 * 1024 {
        return Err("over 512 KB".into());
    }
    let mut all = Vec::new();
    objects(&body["payload"], &mut all);
    if let Some(o) = all.iter().find(|o| o.values().any(Value::is_null)) {
        return Err(format!("a null detail in {o:?}"));
    }
    let common = event.job().common();
    let ended = common.completed_at.as_ref().or(common.created_at.as_ref());
    if ended.is_some() != body["payload"]["timestamp"].is_string() {
        return Err(format!(
            "timestamp {:?} for a job ended {ended:?}",
            body["payload"]["timestamp"]
        ));
    }
    url("client_url", &body["client_url"], 2_048)
}

/// Emoji short codes ntfy would show before a title that has its own.
const EMOJI_TAGS: &[&str] = &[
    "rotating_light",
    "white_check_mark",
    "x",
    "warning",
    "information_source",
    "stop_button",
];

/// ntfy's message size, its title, and no emoji shown twice.
pub fn ntfy(body: &Value) -> Checked {
    let message = body["message"].as_str().unwrap_or("");
    if message.len() > 4_096 {
        return Err(format!("message of {} bytes, over 4,096", message.len()));
    }
    within("title", &body["title"], 250)?;
    let tags = body["tags"].as_array().ok_or("no tags")?;
    if tags.len() > 10 {
        return Err(format!("{} tags", tags.len()));
    }
    let title_has_emoji = body["title"]
        .as_str()
        .and_then(|t| t.chars().next())
        .is_some_and(|c| !c.is_alphanumeric());
    if let Some(tag) = tags
        .iter()
        .filter_map(Value::as_str)
        .find(|t| EMOJI_TAGS.contains(t))
        && title_has_emoji
    {
        return Err(format!(
            "the emoji tag {tag} shows before a title with an emoji"
        ));
    }
    url("click", &body["click"], 2_048)
}

/// Email: every `href` and `src` as a URL parser writes it (what the W3C
/// checker asks), and a subject on one line.
pub fn email(message: &Value) -> Checked {
    let subject = message["subject"].as_str().unwrap_or("");
    if subject.contains(['\r', '\n']) {
        return Err(format!("a subject on two lines: {subject:?}"));
    }
    let html = message["html"].as_str().unwrap_or("");
    let attribute = regex_lite::Regex::new(r#"(?:href|src)="([^"]*)""#).unwrap();
    for found in attribute.captures_iter(html) {
        let raw = &found[1];
        if raw.contains('<') {
            return Err(format!("an attribute with a raw `<`: {raw:?}"));
        }
        let value = raw
            .replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&#x3D;", "=")
            .replace("&#x60;", "`")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        url("an email link", &Value::from(value), usize::MAX)?;
    }
    Ok(())
}
