//! What a Slack message looks like, approximately, as an HTML page for
//! `preview --out` and the docs' pictures: Block Kit's header, section,
//! rich text (sections, lists, preformatted), context, actions, image and
//! divider blocks, with Slack's light theme. Every value is escaped; a
//! link is shown only when it is http(s). A job's life is shown as Slack
//! shows a thread: the start message as updated, then the reply under it.

use serde_json::Value;

/// `text` escaped for HTML text and attributes.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A link to `url` showing `text`, or the text alone when the URL is not
/// http(s).
fn link(url: &str, text: &str) -> String {
    if url.starts_with("https://") || url.starts_with("http://") {
        format!("<a href=\"{}\">{}</a>", esc(url), esc(text))
    } else {
        esc(text)
    }
}

fn text_of(v: &Value) -> String {
    esc(v["text"].as_str().unwrap_or_default())
}

/// One rich text element (text with styles, or a link).
fn inline(e: &Value) -> String {
    match e["type"].as_str() {
        Some("link") => link(
            e["url"].as_str().unwrap_or_default(),
            e["text"].as_str().or(e["url"].as_str()).unwrap_or_default(),
        ),
        _ => {
            let mut t = text_of(e).replace('\n', "<br>");
            let style = &e["style"];
            if style["code"] == true {
                t = format!("<code>{t}</code>");
            }
            if style["bold"] == true {
                t = format!("<b>{t}</b>");
            }
            if style["italic"] == true {
                t = format!("<i>{t}</i>");
            }
            t
        }
    }
}

fn inlines(elements: &Value) -> String {
    elements
        .as_array()
        .map(|a| a.iter().map(inline).collect())
        .unwrap_or_default()
}

fn rich(element: &Value) -> String {
    match element["type"].as_str() {
        Some("rich_text_section") => format!("<div>{}</div>", inlines(&element["elements"])),
        Some("rich_text_preformatted") => format!("<pre>{}</pre>", inlines(&element["elements"])),
        Some("rich_text_list") => {
            let items: String = element["elements"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|i| format!("<li>{}</li>", inlines(&i["elements"])))
                        .collect()
                })
                .unwrap_or_default();
            format!("<ul>{items}</ul>")
        }
        _ => String::new(),
    }
}

fn block(b: &Value) -> String {
    match b["type"].as_str() {
        Some("header") => format!("<div class=\"header\">{}</div>", text_of(&b["text"])),
        Some("section") => {
            let mut out = format!("<div>{}</div>", text_of(&b["text"]).replace('\n', "<br>"));
            if let Some(fields) = b["fields"].as_array() {
                out.push_str("<div class=\"fields\">");
                for f in fields {
                    out.push_str(&format!("<div>{}</div>", text_of(f)));
                }
                out.push_str("</div>");
            }
            out
        }
        Some("rich_text") => b["elements"]
            .as_array()
            .map(|a| a.iter().map(rich).collect())
            .unwrap_or_default(),
        Some("context") => {
            let parts: Vec<String> = b["elements"]
                .as_array()
                .map(|a| a.iter().map(text_of).collect())
                .unwrap_or_default();
            format!("<div class=\"context\">{}</div>", parts.join(" "))
        }
        Some("actions") => {
            let buttons: String = b["elements"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            let label = e["text"]["text"].as_str().unwrap_or_default();
                            let class = if e["style"] == "danger" {
                                "button danger"
                            } else {
                                "button"
                            };
                            format!(
                                "<span class=\"{class}\">{}</span>",
                                link(e["url"].as_str().unwrap_or_default(), label)
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!("<div class=\"actions\">{buttons}</div>")
        }
        Some("image") => {
            let url = b["image_url"].as_str().unwrap_or_default();
            if url.starts_with("https://") || url.starts_with("http://") {
                format!(
                    "<img src=\"{}\" alt=\"{}\">",
                    esc(url),
                    esc(b["alt_text"].as_str().unwrap_or_default())
                )
            } else {
                String::new()
            }
        }
        Some("divider") => "<hr>".into(),
        _ => String::new(),
    }
}

/// One message: its blocks, or its `text` when it has none.
pub fn message(m: &Value, edited: bool) -> String {
    let body: String = match m["blocks"].as_array() {
        Some(blocks) if !blocks.is_empty() => blocks.iter().map(block).collect(),
        _ => format!("<div>{}</div>", esc(m["text"].as_str().unwrap_or_default())),
    };
    let edited = if edited {
        " <span class=\"edited\">(edited)</span>"
    } else {
        ""
    };
    format!(
        "<div class=\"msg\"><div class=\"avatar\">R</div><div class=\"content\">\
         <div class=\"who\">Replicate relay <span class=\"app\">APP</span>{edited}</div>{body}</div></div>"
    )
}

/// A page showing `messages` (each already made by [`message`]), with a
/// thread under the first when `thread` holds replies.
pub fn page(title: &str, messages: &[String], thread: &[String]) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body><div class=\"channel\"># ml-alerts</div>",
        esc(title)
    );
    for m in messages {
        out.push_str(m);
    }
    if !thread.is_empty() {
        out.push_str(&format!(
            "<div class=\"thread\"><div class=\"replies\">{} repl{}</div>",
            thread.len(),
            if thread.len() == 1 { "y" } else { "ies" }
        ));
        for m in thread {
            out.push_str(m);
        }
        out.push_str("</div>");
    }
    out.push_str("</body></html>\n");
    out
}

const STYLE: &str = "body{font-family:Lato,'Helvetica Neue',Arial,sans-serif;font-size:15px;color:#1d1c1d;background:#fff;margin:0;padding:12px 20px;max-width:760px}\
.channel{font-weight:900;font-size:18px;padding:8px 0 14px;border-bottom:1px solid #ddd;margin-bottom:10px}\
.msg{display:flex;gap:10px;padding:8px 0}.avatar{width:36px;height:36px;border-radius:6px;background:#3d2b8f;color:#fff;font-weight:900;display:flex;align-items:center;justify-content:center;flex:none}\
.content{flex:1;min-width:0}.who{font-weight:900;margin-bottom:2px}.app{font-size:10px;background:#e8e8e8;color:#616061;border-radius:3px;padding:1px 3px;font-weight:700}\
.edited{font-weight:400;color:#616061;font-size:12px}.header{font-weight:900;font-size:17px;margin:2px 0 6px}\
ul{margin:4px 0;padding-left:22px}pre{background:#f8f8f8;border:1px solid #ddd;border-radius:4px;padding:8px;white-space:pre-wrap;font-size:12px}\
code{background:#f8f8f8;border:1px solid #ddd;border-radius:3px;padding:0 3px;font-size:12px;color:#e01e5a}\
.context{color:#616061;font-size:12px;margin-top:6px}.actions{margin:8px 0}.button{display:inline-block;border:1px solid #bbb;border-radius:4px;padding:3px 10px;font-weight:700;font-size:13px;margin-right:6px}\
.button a{color:#1d1c1d;text-decoration:none}.danger{border-color:#e01e5a}.danger a{color:#e01e5a}a{color:#1264a3;text-decoration:none}\
img{max-width:360px;border-radius:6px;margin:6px 0;display:block}.fields{display:grid;grid-template-columns:1fr 1fr;gap:4px}\
.thread{margin:6px 0 0 46px;border-left:3px solid #e8e8e8;padding-left:12px}.replies{color:#1264a3;font-weight:700;font-size:13px}";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_value_is_escaped_and_only_web_links_are_links() {
        let m = json!({"blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "<script>alert(1)</script>"}},
            {"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [
                {"type": "link", "url": "javascript:alert(1)", "text": "\"><img src=x onerror=alert(1)>"},
                {"type": "link", "url": "https://replicate.com/p/x", "text": "job"}
            ]}]}
        ]});
        let html = message(&m, false);
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"));
        assert!(!html.contains("javascript:"));
        assert!(!html.contains("<img src=x"));
        assert!(html.contains("<a href=\"https://replicate.com/p/x\">job</a>"));
    }
}
