//! An email's formats, its shipped templates, and assembling the message
//! from them: subject, text and (when the template has one) HTML, each made
//! fit for mail; the built-in plain email when a template fails.

use serde_json::Value;

use crate::render::text::mail_safe;
use crate::render::{
    BuiltIn, EmailMessage, Format, RenderFailure, Rendered, Templates, helpers, plain_title,
};

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
        include_str!("../../../templates/email/default.subject.hbs"),
    ),
    (
        TEXT,
        include_str!("../../../templates/email/default.txt.hbs"),
    ),
    (
        HTML,
        include_str!("../../../templates/email/default.html.hbs"),
    ),
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
