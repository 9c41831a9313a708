//! What a Discord message looks like, approximately, as an HTML page for
//! the dashboard: its content, and each embed with its colour bar, title
//! (a link when http(s)), description and fields in Discord's Markdown
//! (bold, inline code, code blocks, links, escapes), image and footer, in
//! Discord's dark theme. Every value is escaped; only http(s) links and
//! pictures are shown.

use handlebars::html_escape as esc;
use serde_json::Value;

/// The page for a message as stored (`{"discord": body}`).
pub fn page(message: &Value) -> Option<String> {
    let body = message.get("discord")?;
    let mut out = String::from(HEAD);
    out.push_str("<div class=\"msg\"><div class=\"avatar\">R</div><div class=\"content\">");
    let name = body["username"].as_str().unwrap_or("Replicate relay");
    out.push_str(&format!(
        "<div class=\"who\">{} <span class=\"app\">APP</span></div>",
        esc(name)
    ));
    if let Some(text) = body["content"].as_str() {
        out.push_str(&format!("<div class=\"text\">{}</div>", markdown(text)));
    }
    for embed in body["embeds"].as_array().into_iter().flatten() {
        out.push_str(&self::embed(embed));
    }
    out.push_str("</div></div></body></html>\n");
    Some(out)
}

fn embed(e: &Value) -> String {
    let colour = e["color"].as_u64().unwrap_or(0x1E1F22) & 0xFF_FFFF;
    let mut out = format!("<div class=\"embed\" style=\"border-left-color:#{colour:06x}\">");
    if let Some(author) = e["author"]["name"].as_str() {
        out.push_str(&format!("<div class=\"author\">{}</div>", esc(author)));
    }
    if let Some(title) = e["title"].as_str() {
        let title = match e["url"].as_str().filter(|u| is_web(u)) {
            Some(url) => format!("<a href=\"{}\">{}</a>", esc(url), esc(title)),
            None => esc(title),
        };
        out.push_str(&format!("<div class=\"title\">{title}</div>"));
    }
    if let Some(text) = e["description"].as_str() {
        out.push_str(&format!("<div class=\"desc\">{}</div>", markdown(text)));
    }
    let fields = e["fields"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !fields.is_empty() {
        out.push_str("<div class=\"fields\">");
        for f in fields {
            let class = if f["inline"].as_bool() == Some(true) {
                "field inline"
            } else {
                "field"
            };
            out.push_str(&format!(
                "<div class=\"{class}\"><div class=\"name\">{}</div><div>{}</div></div>",
                esc(f["name"].as_str().unwrap_or_default()),
                markdown(f["value"].as_str().unwrap_or_default())
            ));
        }
        out.push_str("</div>");
    }
    if let Some(url) = e["image"]["url"].as_str().filter(|u| is_web(u)) {
        out.push_str(&format!(
            "<img class=\"image\" alt=\"\" src=\"{}\">",
            esc(url)
        ));
    }
    if let Some(footer) = e["footer"]["text"].as_str() {
        out.push_str(&format!("<div class=\"footer\">{}</div>", esc(footer)));
    }
    out.push_str("</div>");
    out
}

fn is_web(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

/// Discord's Markdown, as far as the relay's templates write it: code
/// blocks, inline code, bold, `[text](url)` links and backslash escapes;
/// everything else as text, line breaks kept.
pub fn markdown(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        out.push_str(&inline(&rest[..start]));
        let after = &rest[start + 3..];
        let (code, next) = match after.find("```") {
            Some(end) => (&after[..end], &after[end + 3..]),
            None => (after, ""),
        };
        // The language tag on the opening line is not shown.
        let code = code.split_once('\n').map_or(code, |(first, body)| {
            if first.trim().chars().all(|c| c.is_ascii_alphanumeric()) {
                body
            } else {
                code
            }
        });
        out.push_str(&format!("<pre>{}</pre>", esc(code.trim_end_matches('\n'))));
        rest = next;
    }
    out.push_str(&inline(rest));
    out
}

/// Inline Markdown: escapes, `code`, **bold** and links.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut bold = false;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let rest: String = chars[i..].iter().take(2).collect();
        if c == '\\' && i + 1 < chars.len() && chars[i + 1].is_ascii_punctuation() {
            out.push_str(&esc(&chars[i + 1].to_string()));
            i += 2;
        } else if c == '`' {
            let end = chars[i + 1..].iter().position(|c| *c == '`');
            match end {
                Some(n) => {
                    let code: String = chars[i + 1..i + 1 + n].iter().collect();
                    out.push_str(&format!("<code>{}</code>", esc(&code)));
                    i += n + 2;
                }
                None => {
                    out.push('`');
                    i += 1;
                }
            }
        } else if rest == "**" {
            out.push_str(if bold { "</b>" } else { "<b>" });
            bold = !bold;
            i += 2;
        } else if c == '[' {
            match link_at(&chars[i..]) {
                Some((html, used)) => {
                    out.push_str(&html);
                    i += used;
                }
                None => {
                    out.push('[');
                    i += 1;
                }
            }
        } else if c == '\n' {
            out.push_str("<br>");
            i += 1;
        } else {
            out.push_str(&esc(&c.to_string()));
            i += 1;
        }
    }
    if bold {
        out.push_str("</b>");
    }
    out
}

/// `[text](url)` at the start of `chars`: its HTML (a link only for
/// http(s)) and how many characters it took.
fn link_at(chars: &[char]) -> Option<(String, usize)> {
    let close = chars.iter().position(|c| *c == ']')?;
    if chars.get(close + 1) != Some(&'(') {
        return None;
    }
    let end = chars[close + 2..].iter().position(|c| *c == ')')? + close + 2;
    let text: String = chars[1..close].iter().collect();
    let url: String = chars[close + 2..end].iter().collect();
    let url = url.trim_start_matches('<').trim_end_matches('>');
    let text = inline(&text);
    let html = if is_web(url) {
        format!("<a href=\"{}\">{text}</a>", esc(url))
    } else {
        text
    };
    Some((html, end + 1))
}

const HEAD: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Discord</title><style>\
body{font-family:'gg sans','Noto Sans','Helvetica Neue',Arial,sans-serif;font-size:15px;color:#dbdee1;background:#313338;margin:0;padding:12px 16px}\
.msg{display:flex;gap:14px}.avatar{width:40px;height:40px;border-radius:50%;background:#5865f2;color:#fff;font-weight:700;display:flex;align-items:center;justify-content:center;flex:none}\
.content{min-width:0;flex:1}.who{font-weight:600;color:#f2f3f5}.app{background:#5865f2;color:#fff;font-size:10px;padding:1px 4px;border-radius:3px;vertical-align:middle}\
.embed{background:#2b2d31;border-left:4px solid;border-radius:4px;padding:8px 16px 12px 12px;margin-top:6px;max-width:520px}\
.title{font-weight:600;color:#f2f3f5;margin:6px 0}.title a{color:#00a8fc;text-decoration:none}a{color:#00a8fc}\
.desc{font-size:14px;line-height:1.4;margin:6px 0}.fields{display:flex;flex-wrap:wrap;gap:8px 16px;margin-top:8px}\
.field{flex:1 1 100%;font-size:14px}.field.inline{flex:1 1 30%}.name{font-weight:600;color:#f2f3f5;margin-bottom:2px}\
pre{background:#1e1f22;border:1px solid #1e1f22;border-radius:4px;padding:7px;white-space:pre-wrap;font-size:13px;margin:4px 0}\
code{background:#1e1f22;border-radius:3px;padding:0 3px;font-size:13px}.image{max-width:100%;border-radius:4px;margin-top:10px}\
.footer{font-size:12px;color:#b5bac1;margin-top:8px}.author{font-size:14px;font-weight:600}\
</style></head><body>";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn markdown_table() {
        for (md, want) in [
            ("**Error**\nboom", "<b>Error</b><br>boom"),
            ("```\n<b>x</b>\n```", "<pre>&lt;b&gt;x&lt;/b&gt;</pre>"),
            ("```py\nprint(1)\n```", "<pre>print(1)</pre>"),
            ("`a<b`", "<code>a&lt;b</code>"),
            ("\\*not bold\\*", "*not bold*"),
            (
                "[out.png](https://replicate.delivery/x.png)",
                "<a href=\"https://replicate.delivery/x.png\">out.png</a>",
            ),
            ("[click](javascript:alert(1))", "click)"),
            (
                "<script>alert(1)</script>",
                "&lt;script&gt;alert(1)&lt;/script&gt;",
            ),
            (
                "\"><img src=x onerror=alert(1)>",
                "&quot;&gt;&lt;img src&#x3D;x onerror&#x3D;alert(1)&gt;",
            ),
            ("unclosed ` and [ and **", "unclosed ` and [ and <b></b>"),
        ] {
            assert_eq!(markdown(md), want, "{md}");
        }
    }

    #[test]
    fn an_embed_shows_its_colour_fields_and_only_web_links() {
        let page = page(&json!({"discord": {"embeds": [{
            "title": "✅ <done>", "url": "javascript:alert(1)", "color": 0x2EB67D,
            "description": "ok", "fields": [{"name": "Status", "value": "succeeded", "inline": true}],
            "image": {"url": "data:text/html,<script>"}, "footer": {"text": "p1 · route"}
        }]}}))
        .unwrap();
        assert!(page.contains("border-left-color:#2eb67d"), "{page}");
        assert!(page.contains("✅ &lt;done&gt;"));
        assert!(!page.contains("javascript:") && !page.contains("data:text"));
        assert!(page.contains("<div class=\"name\">Status</div>"));
        assert!(page.contains("p1 · route"));
        assert!(super::page(&json!({"slack": {}})).is_none());
    }
}
