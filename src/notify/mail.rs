//! A mail-shaped message, which the `email` kind sends and the `log` kind
//! writes (so it lives here, shared, rather than in either kind's folder):
//! its formats (`templates/email/`), its shipped templates, and assembling
//! it from them — subject, text and (when the template has one) HTML, each
//! made fit for mail; the built-in plain email when a template fails.

use std::any::Any;

use serde_json::{Value, json};

use crate::render::text::mail_safe;
use crate::render::{
    BuiltIn, Format, Message, RenderFailure, Rendered, Templates, helpers, plain_title,
};

/// An email's three parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailMessage {
    pub subject: String,
    pub text: String,
    /// Absent when the template has no `.html.hbs`.
    pub html: Option<String>,
}

/// `email/NAME.subject.hbs`: line breaks removed from values.
pub const SUBJECT: Format = Format::new("email", ".subject.hbs", helpers::escape_subject, false);
/// `email/NAME.txt.hbs`: plain text, nothing escaped.
pub const TEXT: Format = Format::new("email", ".txt.hbs", helpers::escape_text, false);
/// `email/NAME.html.hbs` (optional): values HTML-escaped.
pub const HTML: Format = Format::new("email", ".html.hbs", helpers::escape_html, false);

/// The shipped email templates, built into the binary.
pub const BUILT_IN: &[BuiltIn] = &[
    (
        SUBJECT,
        include_str!("../../templates/email/default.subject.hbs"),
    ),
    (TEXT, include_str!("../../templates/email/default.txt.hbs")),
    (HTML, include_str!("../../templates/email/default.html.hbs")),
];

/// The shipped digest email (`group_by` on a route): subject and text.
pub const DIGEST: &[BuiltIn] = &[
    (
        SUBJECT,
        include_str!("../../templates/email/digest.subject.hbs"),
    ),
    (TEXT, include_str!("../../templates/email/digest.txt.hbs")),
];

/// The email for `ctx` with template `name`; the built-in plain email if the
/// template fails.
pub fn render(templates: &Templates, name: &str, ctx: &Value) -> Rendered<EmailMessage> {
    let attempt = || -> Result<EmailMessage, RenderFailure> {
        let subject = templates.render(SUBJECT, name, ctx)?;
        let subject = clean_subject(&mail_safe(&subject));
        let text = mail_safe(&templates.render(TEXT, name, ctx)?);
        let html = if templates.has(HTML, name) {
            Some(mail_safe(&templates.render(HTML, name, ctx)?))
        } else {
            None
        };
        Ok(EmailMessage {
            subject,
            text,
            html,
        })
    };
    Rendered::or_fallback(attempt(), "email", name, |reason| fallback(ctx, reason))
}

/// `text` as a subject: mail-safe, one line, single spaces, at most 250
/// characters.
pub fn subject_line(text: &str) -> String {
    clean_subject(&mail_safe(text))
}

/// One line, single spaces, at most 250 characters.
fn clean_subject(subject: &str) -> String {
    let one_line = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    helpers::truncate_chars(&one_line, 250)
}

/// The email sent when a template fails: plain, complete, built without templates.
fn fallback(ctx: &Value, reason: &str) -> EmailMessage {
    let mut text = format!("{}\n\n", plain_title(ctx));
    for key in [
        "id",
        "kind",
        "status",
        "model",
        "deployment",
        "destination",
        "error_message",
        "web_url",
        "route",
    ] {
        let value = helpers::as_text(ctx.get(key).unwrap_or(&Value::Null));
        if !value.is_empty() {
            text.push_str(&format!("{key}: {value}\n"));
        }
    }
    text.push_str(&format!(
        "\n(This is replicate-relay's built-in message: the configured template failed: {reason})\n"
    ));
    EmailMessage {
        subject: clean_subject(&mail_safe(&plain_title(ctx))),
        text: mail_safe(&text),
        html: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_sees_subject_and_text_and_the_html_is_a_page() {
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
        assert_eq!(email.files()[1], ("html", "<p>t1</p>".to_owned()));
    }
}
