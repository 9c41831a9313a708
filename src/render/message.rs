//! A rendered message, as the rest of the daemon sees it: each notifier kind
//! renders a message of its own type and its sender takes it back by that
//! type ([`Message::as_any`]); previews, the log and checks read any kind's
//! message through this trait. The three shapes the shipped kinds render
//! (an email's parts, a JSON message, a body of bytes) are here.

use std::any::Any;
use std::fmt;

use serde_json::{Value, json};

use super::{EmailMessage, Rendered};

/// A message rendered for one notifier.
pub trait Message: fmt::Debug + Send + Sync + 'static {
    /// Why the built-in fallback was used, if it was.
    fn fallback(&self) -> Option<&str>;

    /// The message as `replicate-relay route` prints it.
    fn preview(&self) -> String;

    /// The message's fields for `route --format json`.
    fn preview_json(&self) -> Value;

    /// Everything its reader sees, as plain text, markup decoded: what
    /// checks read (does the message name its job?).
    fn seen_text(&self) -> String;

    /// For the kind's sender, to take its own message type back.
    fn as_any(&self) -> &dyn Any;

    /// The message as files to look at, `(extension, contents)`, for
    /// `preview --out`: JSON as `.json`, anything else as `.txt`.
    fn files(&self) -> Vec<(&'static str, String)> {
        let text = self.preview();
        let ext = if serde_json::from_str::<Value>(&text).is_ok() {
            "json"
        } else {
            "txt"
        };
        vec![(ext, text)]
    }
}

impl Message for Rendered<EmailMessage> {
    fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    fn preview(&self) -> String {
        let m = &self.message;
        let mut out = format!("Subject: {}\n\n{}", m.subject, m.text.trim_end());
        if let Some(html) = &m.html {
            out.push_str(&format!(
                "\n\n[and an HTML part of {} bytes; --format json shows it]",
                html.len()
            ));
        }
        out
    }

    fn preview_json(&self) -> Value {
        json!({"subject": self.message.subject, "text": self.message.text, "html": self.message.html})
    }

    fn seen_text(&self) -> String {
        format!("{}\n{}", self.message.subject, self.message.text)
    }

    /// The HTML part as a page a browser shows, and the plain-text part.
    fn files(&self) -> Vec<(&'static str, String)> {
        let m = &self.message;
        let mut out = vec![("txt", format!("Subject: {}\n\n{}", m.subject, m.text))];
        if let Some(html) = &m.html {
            out.push(("html", html.clone()));
        }
        out
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

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
        strings(&self.message, &mut all);
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
                    percent_encode(&blocks.to_string())
                ),
            ),
        ]
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A request body (a webhook's): JSON shown pretty, anything else as text.
impl Message for Rendered<Vec<u8>> {
    fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    fn preview(&self) -> String {
        match serde_json::from_slice::<Value>(&self.message) {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
            Err(_) => String::from_utf8_lossy(&self.message).into_owned(),
        }
    }

    fn preview_json(&self) -> Value {
        let body = serde_json::from_slice(&self.message)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&self.message)));
        json!({ "body": body })
    }

    fn seen_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.message);
        match crate::event::json::read(&text) {
            Ok(body) => {
                let mut all = Vec::new();
                strings(&body, &mut all);
                all.join("\n")
            }
            Err(_) => text.into_owned(),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `text` with everything but RFC 3986's unreserved characters
/// percent-encoded, for a URL fragment.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Every string anywhere in a JSON value, depth first.
pub fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Object(map) => map.values().for_each(|i| strings(i, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shape_says_what_its_reader_sees() {
        let email = Rendered {
            message: EmailMessage {
                subject: "❌ Training failed".into(),
                text: "Job: t1\n".into(),
                html: Some("<p>t1</p>".into()),
            },
            fallback: None,
        };
        assert_eq!(email.seen_text(), "❌ Training failed\nJob: t1\n");
        assert!(email.preview().contains("[and an HTML part of 9 bytes"));
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
        assert_eq!(email.files()[1], ("html", "<p>t1</p>".to_owned()));
        assert_eq!(slack.fallback(), Some("broke"));
        let body = Rendered {
            message: br#"{"id":"p\u00e9","status":"failed"}"#.to_vec(),
            fallback: None,
        };
        assert_eq!(body.seen_text(), "pé\nfailed");
        assert_eq!(body.preview_json()["body"]["id"], "pé");
        let text = Rendered {
            message: b"not json".to_vec(),
            fallback: None,
        };
        assert_eq!(text.seen_text(), "not json");
    }
}
