//! Slack's Block Kit limits, enforced by cutting and dropping — never by
//! failing, since a message Slack rejects is an alert lost. Limits from
//! Slack's Block Kit reference: 50 blocks per message, 150 characters of
//! header text, 3,000 of section (and context) text, 10 section fields of
//! 2,000 each, 75 characters of button text, 3,000 of URL, 40,000 of
//! fallback `text`, 2,000 of an image's alt text; rich text is kept to a
//! section's 3,000 per element. Image blocks only for the formats Slack
//! fetches (PNG, JPEG, GIF). A URL is never cut: a link too long becomes its
//! text, a button or image too long is left out.

use serde_json::{Value, json};

use crate::render::cut::{self as cutting, measure};
use crate::render::display::{file_name, web_url};

pub const MAX_BLOCKS: usize = 50;
pub const MAX_HEADER: usize = 150;
pub const MAX_SECTION: usize = 3_000;
pub const MAX_FIELDS: usize = 10;
pub const MAX_FIELD: usize = 2_000;
pub const MAX_BUTTON: usize = 75;
pub const MAX_URL: usize = 3_000;
pub const MAX_TEXT: usize = 40_000;
const MAX_CONTEXT_ELEMENTS: usize = 10;
const MAX_ACTION_ELEMENTS: usize = 25;
pub const MAX_ALT_TEXT: usize = 2_000;

/// Truncates `message` (`{"text": …, "blocks": [...]}`) to Slack's limits.
pub fn enforce_limits(message: &mut Value) {
    if let Some(text) = message.get_mut("text") {
        cut(text, MAX_TEXT);
    }
    let Some(blocks) = message.get_mut("blocks").and_then(Value::as_array_mut) else {
        return;
    };
    if blocks.len() > MAX_BLOCKS {
        let dropped = blocks.len() - (MAX_BLOCKS - 1);
        blocks.truncate(MAX_BLOCKS - 1);
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("…{dropped} more blocks left out (Slack allows {MAX_BLOCKS})")}]
        }));
    }
    // An image Slack cannot fetch (too long a URL, a format it does not
    // read) makes it refuse the whole message: leave it out.
    blocks.retain(|b| b["type"] != "image" || b["image_url"].as_str().is_some_and(fetchable));
    for block in blocks.iter_mut() {
        let kind = block
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        match kind.as_str() {
            "header" => cut_text_object(block.get_mut("text"), MAX_HEADER),
            "section" => {
                cut_text_object(block.get_mut("text"), MAX_SECTION);
                if let Some(fields) = block.get_mut("fields").and_then(Value::as_array_mut) {
                    fields.truncate(MAX_FIELDS);
                    for field in fields {
                        cut_text_object(Some(field), MAX_FIELD);
                    }
                }
            }
            "context" => {
                if let Some(elements) = block.get_mut("elements").and_then(Value::as_array_mut) {
                    elements.truncate(MAX_CONTEXT_ELEMENTS);
                    for element in elements {
                        cut_text_object(Some(element), MAX_SECTION);
                    }
                }
            }
            "actions" => {
                if let Some(elements) = block.get_mut("elements").and_then(Value::as_array_mut) {
                    // A cut URL leads elsewhere: the button goes instead.
                    elements.retain(|e| e["url"].as_str().is_none_or(|u| measure(u) <= MAX_URL));
                    elements.truncate(MAX_ACTION_ELEMENTS);
                    for element in elements {
                        cut_text_object(element.get_mut("text"), MAX_BUTTON);
                    }
                }
            }
            "rich_text" => cut_rich(block),
            "image" => {
                if let Some(alt) = block.get_mut("alt_text") {
                    cut_literal(alt, MAX_ALT_TEXT);
                }
            }
            _ => {}
        }
    }
    blocks.retain(|b| {
        b["type"] != "actions" || b["elements"].as_array().is_some_and(|e| !e.is_empty())
    });
}

/// The picture formats Slack fetches for an image block.
const SLACK_IMAGES: [&str; 4] = ["png", "jpg", "jpeg", "gif"];

/// Whether Slack can fetch the picture at `url` for an image block: a web
/// URL within [`MAX_URL`], of a format Slack reads (a URL that names no
/// extension is given the benefit of the doubt).
pub fn fetchable(url: &str) -> bool {
    let name = file_name(url).to_ascii_lowercase();
    let format_ok = match name.rsplit_once('.') {
        Some((_, ext)) => SLACK_IMAGES.contains(&ext),
        None => true,
    };
    format_ok && measure(url) <= MAX_URL && web_url(url).is_some()
}

/// Cuts every text of a rich text element tree. Its text is literal (no
/// entities, no mrkdwn), so it is cut as it is. A link whose URL is too
/// long (or no web URL) becomes its text.
fn cut_rich(element: &mut Value) {
    if element["type"] == "link"
        && !element["url"]
            .as_str()
            .is_some_and(|u| measure(u) <= MAX_URL && web_url(u).is_some())
    {
        let text = element["text"]
            .as_str()
            .filter(|t| !t.is_empty())
            .unwrap_or("(a link Slack cannot show)")
            .to_owned();
        *element = json!({"type": "text", "text": text});
    }
    if matches!(element["type"].as_str(), Some("text" | "link"))
        && let Some(text) = element.get_mut("text")
    {
        cut_literal(text, MAX_SECTION);
    }
    if let Some(children) = element.get_mut("elements").and_then(Value::as_array_mut) {
        children.iter_mut().for_each(cut_rich);
    }
}

/// Cuts a literal string to `max`, whole graphemes, ending with "…".
fn cut_literal(value: &mut Value, max: usize) {
    if let Value::String(s) = value
        && measure(s) > max
    {
        *s = cutting::cut(s, max);
    }
}

/// Cuts `{"type": …, "text": "…"}`'s text.
fn cut_text_object(object: Option<&mut Value>, max: usize) {
    if let Some(text) = object.and_then(|o| o.get_mut("text")) {
        cut(text, max);
    }
}

/// Cuts a string value to `max`, ending with "…", without splitting a
/// grapheme or an `&amp;`-style entity, and closing a code block it cut
/// open.
fn cut(value: &mut Value, max: usize) {
    let Value::String(s) = value else { return };
    if measure(s) <= max {
        return;
    }
    // Room for a closing "```" after the "…".
    let mut kept = cutting::cut(s, max.saturating_sub(3));
    kept.pop();
    if let Some(amp) = kept.rfind('&')
        && !kept[amp..].contains(';')
    {
        kept.truncate(amp);
    }
    kept.push('…');
    if kept.matches("```").count() % 2 == 1 {
        kept.push_str("```");
    }
    *s = kept;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len(v: &Value) -> usize {
        v.as_str().unwrap().chars().count()
    }

    #[test]
    fn every_limit_is_enforced() {
        let long = "é".repeat(10_000);
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": long}}),
            json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("```{long}```")},
                   "fields": (0..15).map(|_| json!({"type": "mrkdwn", "text": long})).collect::<Vec<_>>()}),
            json!({"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": long}, "url": "https://replicate.com/p/x"},
                {"type": "button", "text": {"type": "plain_text", "text": "cut URL"}, "url": format!("https://x.example/{long}")},
            ]}),
            json!({"type": "context", "elements": [{"type": "mrkdwn", "text": long}]}),
        ];
        blocks.extend((0..60).map(|i| json!({"type": "divider", "n": i})));
        let mut msg = json!({"text": "t".repeat(50_000), "blocks": blocks});
        enforce_limits(&mut msg);
        let b = msg["blocks"].as_array().unwrap();
        assert_eq!(b.len(), MAX_BLOCKS);
        assert!(
            b[49]["elements"][0]["text"]
                .as_str()
                .unwrap()
                .contains("15 more blocks")
        );
        assert!(len(&b[0]["text"]["text"]) <= MAX_HEADER);
        let section = b[1]["text"]["text"].as_str().unwrap();
        assert!(section.chars().count() <= MAX_SECTION);
        assert!(section.ends_with("…```"), "the code block is closed again");
        assert_eq!(b[1]["fields"].as_array().unwrap().len(), MAX_FIELDS);
        assert!(len(&b[1]["fields"][0]["text"]) <= MAX_FIELD);
        assert!(len(&b[2]["elements"][0]["text"]["text"]) <= MAX_BUTTON);
        assert_eq!(
            b[2]["elements"].as_array().unwrap().len(),
            1,
            "a button whose URL is too long goes"
        );
        assert!(len(&b[3]["elements"][0]["text"]) <= MAX_SECTION);
        assert!(len(&msg["text"]) <= MAX_TEXT);

        // Rich text and images.
        let mut msg = json!({"blocks": [
            {"type": "rich_text", "elements": [{"type": "rich_text_preformatted",
                "elements": [{"type": "text", "text": format!("```{long}")}]}]},
            {"type": "image", "image_url": format!("https://x/{}", "a".repeat(4_000)), "alt_text": "x"},
            {"type": "image", "image_url": "https://x/a.png", "alt_text": long},
        ]});
        enforce_limits(&mut msg);
        let b = msg["blocks"].as_array().unwrap();
        assert_eq!(b.len(), 2, "the image with a URL too long is dropped");
        let text = b[0]["elements"][0]["elements"][0]["text"].as_str().unwrap();
        assert!(text.chars().count() <= MAX_SECTION && text.ends_with('…'));
        assert!(
            !text.ends_with("```"),
            "rich text is literal: nothing to close"
        );
        assert!(len(&b[1]["alt_text"]) <= MAX_ALT_TEXT);
    }

    #[test]
    fn images_slack_cannot_fetch_and_urls_too_long_are_left_out_whole() {
        let long = format!("https://replicate.delivery/a/{}.png", "x".repeat(3_000));
        let mut msg = json!({"blocks": [
            {"type": "image", "image_url": "https://replicate.delivery/a/out-0.webp", "alt_text": "webp"},
            {"type": "image", "image_url": "https://replicate.delivery/a/OUT-1.PNG", "alt_text": "png"},
            {"type": "image", "image_url": "https://replicate.delivery/a/chart", "alt_text": "no extension"},
            {"type": "image", "image_url": long, "alt_text": "too long"},
            {"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [
                {"type": "link", "url": long, "text": "out-2.png"},
                {"type": "link", "url": "javascript:alert(1)", "text": ""},
                {"type": "link", "url": "https://replicate.delivery/a/out-3.png", "text": "out-3.png"},
            ]}]},
            {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open"}, "url": long}]},
        ]});
        enforce_limits(&mut msg);
        let b = msg["blocks"].as_array().unwrap();
        let alts: Vec<&str> = b.iter().filter_map(|b| b["alt_text"].as_str()).collect();
        assert_eq!(alts, ["png", "no extension"]);
        let links = &b[2]["elements"][0]["elements"];
        assert_eq!(links[0], json!({"type": "text", "text": "out-2.png"}));
        assert_eq!(
            links[1],
            json!({"type": "text", "text": "(a link Slack cannot show)"})
        );
        assert_eq!(links[2]["type"], "link");
        assert_eq!(b.len(), 3, "the actions block without its only button goes");
    }

    #[test]
    fn entities_are_not_split() {
        let mut v = json!(format!("{}&amp;tail", "a".repeat(10)));
        cut(&mut v, 16);
        assert_eq!(v, json!("aaaaaaaaaa…"));
    }

    #[test]
    fn small_messages_are_untouched() {
        let original = json!({"text": "hi", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "ok"}}]});
        let mut msg = original.clone();
        enforce_limits(&mut msg);
        assert_eq!(msg, original);
    }
}
