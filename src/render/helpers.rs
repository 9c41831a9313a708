//! Handlebars helpers a template writer needs, and the escape function of each
//! output format.
//!
//! Helpers take any JSON value and degrade gracefully (a missing or odd value
//! renders as empty text) so a payload Replicate changes tomorrow still renders.
//! Escaping happens once, at output, by the registry's escape function; helpers
//! return plain text.

use handlebars::{Handlebars, handlebars_helper};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Registers every helper on `hb`.
pub fn register(hb: &mut Handlebars<'static>) {
    hb.register_helper("humanize", Box::new(humanize));
    hb.register_helper("truncate", Box::new(truncate));
    hb.register_helper("tail", Box::new(tail));
    hb.register_helper("json", Box::new(json));
    hb.register_helper("json_pretty", Box::new(json_pretty));
    hb.register_helper("default", Box::new(default));
    hb.register_helper("date", Box::new(date));
    hb.register_helper("join", Box::new(join));
    hb.register_helper("basename", Box::new(basename));
    hb.register_helper("indent", Box::new(indent));
    hb.register_helper("md", Box::new(md));
    hb.register_helper("fenced", Box::new(fenced));
    hb.register_helper("literal", Box::new(literal));
    hb.register_helper("mdlink", Box::new(mdlink));
    hb.register_helper("nolink", Box::new(nolink));
}

// `{{humanize metrics.predict_time}}` → "19m 51s" (seconds to a human duration;
// the context's `duration` field already holds the job's run time this way).
handlebars_helper!(humanize: |secs: Json| as_f64(secs).map(human_duration).unwrap_or_default());
// `{{truncate error 300}}` → at most 300 characters, "…" when cut.
handlebars_helper!(truncate: |text: Json, max: u64| truncate_chars(&as_text(text), max as usize));
// `{{tail logs 20}}` → the last 20 lines.
handlebars_helper!(tail: |text: Json, lines: u64| tail_lines(&as_text(text), lines as usize));
// `{{json input}}` → compact JSON; `{{{json web_url}}}` writes a quoted JSON string.
handlebars_helper!(json: |value: Json| value.to_string());
handlebars_helper!(json_pretty: |value: Json| serde_json::to_string_pretty(value).unwrap_or_default());
// `{{default deployment "-"}}` → the value, or the fallback when null or empty.
handlebars_helper!(default: |value: Json, fallback: Json| {
    match value {
        Value::Null => fallback.clone(),
        Value::String(s) if s.is_empty() => fallback.clone(),
        other => other.clone(),
    }
});
// `{{date completed_at}}` → "2026-11-20 14:03 UTC"; `{{date completed_at "[hour]:[minute]"}}`
// takes a `time` format description.
handlebars_helper!(date: |ts: Json, {format: str = "[year]-[month]-[day] [hour]:[minute] UTC"}| {
    format_date(&as_text(ts), format)
});
// `{{join tags ", "}}`.
handlebars_helper!(join: |items: Json, sep: str| match items {
    Value::Array(items) => items.iter().map(as_text).collect::<Vec<_>>().join(sep),
    other => as_text(other),
});
// `{{basename url}}` → the last path segment ("out-0.webp").
handlebars_helper!(basename: |url: Json| file_name(&as_text(url)).to_owned());

/// The last path segment of a URL, without its query or fragment.
pub fn file_name(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or("");
    path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

// `{{indent error 2}}` → every line but the first indented by 2 spaces, for
// a multi-line value after a label in plain text (the template indents the
// first).
handlebars_helper!(indent: |text: Json, width: u64| {
    let pad = " ".repeat(width.min(16) as usize);
    as_text(text).lines().collect::<Vec<_>>().join(&format!("\n{pad}"))
});

// `{{md prompt}}` → text that Markdown (Discord's) shows as it is: every
// character that could format, link or quote is backslash-escaped.
handlebars_helper!(md: |text: Json| escape_markdown(&as_text(text)));
// `{{fenced logs}}` → text that cannot end a ``` code block it is put in
// (a zero-width space between backticks in a row); inside a code block
// Markdown shows everything else as it is.
handlebars_helper!(fenced: |text: Json| unfence(&as_text(text)));

// `{{mdlink name url}}` → a Markdown link `[name](url)` that neither part can
// break out of: the URL must be http(s) and is percent-encoded wherever
// Markdown would end it; brackets in the text become parentheses (Discord
// shows a backslash escape in link text as written). Just the text when the
// URL is not one to link to.
handlebars_helper!(mdlink: |text: Json, url: Json| markdown_link(&as_text(text), &as_text(url)));
// `{{nolink value}}` → text a Markdown reader (a Teams fact) can show but
// not turn into a link: a zero-width space between `]` and `(`.
handlebars_helper!(nolink: |text: Json| {
    zero_width_between(&as_text(text), |c, next| c == ']' && next == '(')
});

/// `[text](url)`, safe from both parts: see the `mdlink` helper.
pub fn markdown_link(text: &str, url: &str) -> String {
    let text: String = text
        .chars()
        .map(|c| match c {
            '[' => '(',
            ']' => ')',
            '\r' | '\n' => ' ',
            c => c,
        })
        .collect();
    match link_url(url) {
        Some(url) => format!("[{text}]({url})"),
        None => text,
    }
}

/// What ends a Markdown link target or starts formatting or another link
/// inside one; a URL parser has already encoded spaces, quotes and angle
/// brackets.
const LINK_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b'(')
    .add(b')')
    .add(b'[')
    .add(b']')
    .add(b'*')
    .add(b'_')
    .add(b'~')
    .add(b'|');

/// `url` as a Markdown link target: http(s) only, normalised by a URL
/// parser, then with [`LINK_UNSAFE`] encoded.
fn link_url(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url.trim()).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return None;
    }
    Some(percent_encoding::utf8_percent_encode(parsed.as_str(), LINK_UNSAFE).to_string())
}

// `{{{literal prompt}}}` → a complete JSON string for a Slack rich text
// element, which Slack shows as it is; a `<` before `!`, `@` or `#` gets a
// zero-width space after it, so no text can ever read as a mention.
handlebars_helper!(literal: |text: Json| {
    serde_json::to_string(&unmention(&as_text(text))).unwrap_or_default()
});

/// `<!channel>`, `<@U123>`, `<#C1>` made inert by a zero-width space after
/// the `<`, which a reader does not see.
pub fn unmention(text: &str) -> String {
    zero_width_between(text, |c, next| c == '<' && matches!(next, '!' | '@' | '#'))
}

/// Markdown's formatting characters backslash-escaped.
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '*'
                | '_'
                | '~'
                | '`'
                | '|'
                | '>'
                | '<'
                | '#'
                | '['
                | ']'
                | '('
                | ')'
                | '-'
                | ':'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A zero-width space after every backtick that another follows, so no run
/// of three can close a code block.
pub fn unfence(text: &str) -> String {
    zero_width_between(text, |c, next| c == '`' && next == '`')
}

/// `text` with a zero-width space (unseen by a reader) between each pair of
/// neighbouring characters `split` picks: what breaks a markup sequence
/// apart without changing what is read.
fn zero_width_between(text: &str, split: impl Fn(char, char) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if chars.peek().is_some_and(|&next| split(c, next)) {
            out.push('\u{200B}');
        }
    }
    out
}

fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Scalars as text; null as empty; lists and tables as compact JSON.
pub fn as_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Durations of this many seconds (about 31 years) and more are not
/// written in days.
const BEYOND_DAYS: f64 = 1e9;

/// "3.3s", "59s", "19m 51s", "2h 5m", "3d 4h".
pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return String::new();
    }
    if secs < 10.0 {
        return format!("{:.1}s", (secs * 10.0).floor() / 10.0);
    }
    // No job runs for decades: a value this large is shown as received,
    // not turned into a count of days nobody can check.
    if secs >= BEYOND_DAYS {
        return if secs < 1e15 {
            format!("{secs:.0}s")
        } else {
            format!("{secs:e}s")
        };
    }
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// At most `max` characters; the last is "…" when the text was cut.
pub fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The last `n` lines (a trailing newline does not count as a line).
pub fn tail_lines(text: &str, n: usize) -> String {
    let trimmed = text.trim_end_matches('\n');
    let mut start = trimmed.len();
    for _ in 0..n {
        match trimmed[..start].rfind('\n') {
            Some(i) => start = i,
            None => return trimmed.to_owned(),
        }
    }
    trimmed[start + 1..].to_owned()
}

fn format_date(ts: &str, format: &str) -> String {
    let Ok(t) = OffsetDateTime::parse(ts, &Rfc3339) else {
        return ts.to_owned();
    };
    // Shown as received when UTC would fall outside years 0-9999.
    let Some(t) = t.checked_to_offset(time::UtcOffset::UTC) else {
        return ts.to_owned();
    };
    match time::format_description::parse(format) {
        Ok(f) => t.format(&f).unwrap_or_else(|_| ts.to_owned()),
        Err(_) => ts.to_owned(),
    }
}

/// Email subjects: a header must never contain a line break (header injection).
pub fn escape_subject(text: &str) -> String {
    text.replace(['\r', '\n', '\t'], " ")
}

/// Slack Block Kit: mrkdwn's three control characters ([`escape_mrkdwn`]),
/// then JSON string escaping, since values land inside JSON strings.
pub fn escape_slack(text: &str) -> String {
    escape_json(&escape_mrkdwn(text))
}

/// The three characters Slack decodes as entities in any text it shows,
/// so a prompt cannot write `<!channel>` or a fake link.
pub fn escape_mrkdwn(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Values inside a JSON string literal.
pub fn escape_json(text: &str) -> String {
    let quoted = serde_json::to_string(text).expect("a string always serializes");
    quoted[1..quoted.len() - 1].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &str, data: Value) -> String {
        let mut hb = Handlebars::new();
        hb.register_escape_fn(handlebars::no_escape);
        register(&mut hb);
        hb.render_template(template, &data).unwrap()
    }

    #[test]
    fn helper_table() {
        let data = json!({
            "t": 1191.13, "short": 3.32, "s": "abcdef", "logs": "a\nb\nc\n",
            "ts": "2026-11-22T18:20:31.046810Z", "list": ["x", 1], "url": "https://x/y/out-0.webp?sig=1",
            "empty": "", "n": null,
            "mention": "<!channel> <@U1> a<b *x*",
            "md": "*b* _i_ ~s~ `c` <@1> # [x](y) \\", "fence": "a ``` b ` c"
        });
        let cases = [
            ("{{humanize t}}", "19m 51s"),
            ("{{humanize short}}", "3.3s"),
            ("{{humanize n}}", ""),
            ("{{humanize \"90\"}}", "1m 30s"),
            ("{{truncate s 4}}", "abc…"),
            ("{{truncate s 6}}", "abcdef"),
            ("{{truncate n 6}}", ""),
            ("{{tail logs 2}}", "b\nc"),
            ("{{tail logs 9}}", "a\nb\nc"),
            ("{{tail n 2}}", ""),
            ("{{json list}}", "[\"x\",1]"),
            ("{{default n \"-\"}}", "-"),
            ("{{default empty \"-\"}}", "-"),
            ("{{default s \"-\"}}", "abcdef"),
            ("{{date ts}}", "2026-11-22 18:20 UTC"),
            (
                "{{date ts format=\"[hour]:[minute]:[second]\"}}",
                "18:20:31",
            ),
            ("{{date \"yesterday\"}}", "yesterday"),
            (
                "{{date \"9999-12-31T23:00:00-23:59\"}}",
                "9999-12-31T23:00:00-23:59",
            ),
            (
                "{{date \"0000-01-01T00:00:00+23:59\"}}",
                "-0001-12-31 00:01 UTC",
            ),
            ("{{join list \", \"}}", "x, 1"),
            ("{{basename url}}", "out-0.webp"),
            ("  {{indent logs 2}}", "  a\n  b\n  c"),
            ("{{indent s 4}}", "abcdef"),
            ("{{indent n 2}}", ""),
            (
                "{{md md}}",
                "\\*b\\* \\_i\\_ \\~s\\~ \\`c\\` \\<@1\\> \\# \\[x\\]\\(y\\) \\\\",
            ),
            ("{{fenced fence}}", "a `\u{200B}`\u{200B}` b ` c"),
            (
                "{{literal mention}}",
                "\"<\u{200B}!channel> <\u{200B}@U1> a<b *x*\"",
            ),
            ("{{missing}}", ""),
        ];
        for (template, want) in cases {
            assert_eq!(render(template, data.clone()), want, "{template}");
        }
    }

    #[test]
    fn links_that_no_payload_string_can_break_out_of() {
        for (text, url, want) in [
            (
                "out-0.webp",
                "https://replicate.delivery/x/out-0.webp",
                "[out-0.webp](https://replicate.delivery/x/out-0.webp)",
            ),
            // The URL closes the link and opens one of its own.
            (
                "out.txt",
                "https://x.example/out.txt) · [Sign in again](https://evil.example/login",
                "[out.txt](https://x.example/out.txt%29%20%C2%B7%20%5BSign%20in%20again%5D%28https://evil.example/login)",
            ),
            // The text closes the link text and writes a link.
            (
                "a](https://evil.example) [b",
                "https://x.example/f",
                "[a)(https://evil.example) (b](https://x.example/f)",
            ),
            ("x", "javascript:alert(1)", "x"),
            ("x", "not a url", "x"),
            (
                "two\nlines",
                "https://x.example/a_b*c~d|e",
                "[two lines](https://x.example/a%5Fb%2Ac%7Ed%7Ce)",
            ),
        ] {
            assert_eq!(markdown_link(text, url), want, "{text} {url}");
        }
        assert_eq!(
            render(
                "{{nolink v}}",
                json!({"v": "[Sign in](https://evil.example)"})
            ),
            "[Sign in]\u{200B}(https://evil.example)"
        );
    }

    #[test]
    fn durations() {
        for (secs, want) in [
            (0.4353, "0.4s"),
            (9.99, "9.9s"),
            (10.4, "10s"),
            (59.6, "1m 0s"),
            (1191.13, "19m 51s"),
            (7530.0, "2h 5m"),
            (273_600.0, "3d 4h"),
            (999_999_999.0, "11574d 1h"),
            (1e9, "1000000000s"),
            (9.2e18, "9.2e18s"),
            (f64::MAX, "1.7976931348623157e308s"),
            (f64::INFINITY, ""),
            (f64::NAN, ""),
            (5e-324, "0.0s"),
            (-1.0, ""),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn escapes() {
        let hostile = "<!channel> <script>alert(1)</script>\r\nBcc: x@evil.test & \"q\"";
        assert_eq!(
            escape_slack(hostile),
            "&lt;!channel&gt; &lt;script&gt;alert(1)&lt;/script&gt;\\r\\nBcc: x@evil.test &amp; \\\"q\\\""
        );
        assert!(!escape_subject(hostile).contains(['\r', '\n']));
        assert_eq!(escape_json("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }

    #[test]
    fn tails_and_truncation() {
        assert_eq!(tail_lines("", 3), "");
        assert_eq!(tail_lines("one", 3), "one");
        assert_eq!(tail_lines("a\nb\nc\nd", 2), "c\nd");
        assert_eq!(truncate_chars("ééééé", 3), "éé…");
    }
}
