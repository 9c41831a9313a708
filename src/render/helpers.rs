//! Handlebars helpers a template writer needs, and the escape function of each
//! output format.
//!
//! Helpers take any JSON value and degrade gracefully (a missing or odd value
//! renders as empty text) so a payload Replicate changes tomorrow still renders.
//! Escaping happens once, at output, by the registry's escape function; helpers
//! return plain text.

use handlebars::{Handlebars, handlebars_helper};
use serde_json::Value;

use super::cut;
use super::display::{
    display, escape_commonmark, escape_markdown, escape_mrkdwn, file_name, markdown_link, one_line,
    unfence, unmention,
};
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
// `{{truncate error 300}}` → at most 300 characters, "…" when cut (never
// inside a grapheme).
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
// `{{basename url}}` → the last path segment, decoded ("out-0.webp").
handlebars_helper!(basename: |url: Json| file_name(&as_text(url)));

// `{{indent error 2}}` → every line but the first indented by 2 spaces, for
// a multi-line value after a label in plain text (the template indents the
// first).
handlebars_helper!(indent: |text: Json, width: u64| {
    let pad = " ".repeat(width.min(16) as usize);
    as_text(text).lines().collect::<Vec<_>>().join(&format!("\n{pad}"))
});

// `{{md prompt}}` → text that Markdown (Discord's) shows as it is: every
// character that could format, link or quote is backslash-escaped.
handlebars_helper!(md: |text: Json| escape_markdown(&display(&as_text(text))));
// `{{fenced logs}}` → text that cannot end a ``` code block it is put in
// (a zero-width space between backticks in a row); inside a code block
// Markdown shows everything else as it is.
handlebars_helper!(fenced: |text: Json| unfence(&display(&as_text(text))));

// `{{mdlink name url}}` → a Markdown link `[name](url)` that neither part can
// break out of: the URL must be http(s) and is percent-encoded wherever
// Markdown would end it; the text cannot format (Discord shows a backslash
// escape in link text as written, so look-alikes stand in for `*`, `~`, …).
// Just the text, escaped, when the URL is not one to link to.
handlebars_helper!(mdlink: |text: Json, url: Json| markdown_link(&as_text(text), &as_text(url)));
// `{{nolink value}}` → text a CommonMark reader (a Teams fact) shows as it
// is: nothing in it can link or format.
handlebars_helper!(nolink: |text: Json| escape_commonmark(&as_text(text)));

// `{{{literal prompt}}}` → a complete JSON string for a Slack rich text
// element, which Slack shows as it is; a `<` before `!`, `@` or `#` gets a
// zero-width space after it, so no text can ever read as a mention.
handlebars_helper!(literal: |text: Json| {
    serde_json::to_string(&unmention(&display(&as_text(text)))).unwrap_or_default()
});

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

/// At most `max` (UTF-16 units, [`cut::measure`]), whole graphemes; the
/// last is "…" when the text was cut.
pub fn truncate_chars(text: &str, max: usize) -> String {
    cut::cut(text, max)
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
    match time::format_description::parse_borrowed::<1>(format) {
        Ok(f) => t.format(&f).unwrap_or_else(|_| ts.to_owned()),
        Err(_) => ts.to_owned(),
    }
}

/// Email subjects: shown text on one line (a header must never contain a
/// line break: header injection).
pub fn escape_subject(text: &str) -> String {
    one_line(text)
}

/// A plain-text part: shown text ([`display`]).
pub fn escape_text(text: &str) -> String {
    display(text)
}

/// HTML: shown text, HTML-escaped.
pub fn escape_html(text: &str) -> String {
    handlebars::html_escape(&display(text))
}

/// Slack Block Kit: shown text with mrkdwn's three control characters
/// escaped ([`escape_mrkdwn`]), then JSON string escaping, since values land
/// inside JSON strings.
pub fn escape_slack(text: &str) -> String {
    escape_json(&escape_mrkdwn(&display(text)))
}

/// A message's JSON (Discord, Teams, ntfy, PagerDuty): shown text, escaped
/// for a JSON string.
pub fn escape_shown_json(text: &str) -> String {
    escape_json(&display(text))
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
    fn link_and_fact_helpers_go_through_the_display_rule() {
        let data = json!({"v": "[Sign in](https://evil.example)", "e": "\u{1b}[31mred\u{1b}[0m*", "u": "https://x.example/a b"});
        for (template, want) in [
            ("{{nolink v}}", "\\[Sign in\\](https://evil.example)"),
            ("{{mdlink e u}}", "[red∗](https://x.example/a%20b)"),
            ("{{md e}}", "red\\*"),
            ("{{{literal e}}}", "\"red*\""),
        ] {
            assert_eq!(render(template, data.clone()), want, "{template}");
        }
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
            "&lt;!channel&gt; &lt;script&gt;alert(1)&lt;/script&gt;\\nBcc: x@evil.test &amp; \\\"q\\\""
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
