//! Rendering: turning an event into the text of a message, with handlebars
//! templates from `[templates] dir` (built-in defaults otherwise).
//!
//! One registry per output format, because escaping is per registry: HTML for
//! email bodies, JSON plus Slack mrkdwn for Block Kit, JSON for webhook bodies,
//! nothing for plain text, and newline removal for subjects. Rendering never
//! fails from the caller's point of view: a template that errors or produces
//! invalid JSON falls back to a built-in plain message, and the reason is
//! logged and returned, so a notification is never lost to a template.

pub mod context;
pub mod helpers;
pub mod message;
pub mod samples;
pub mod slack;
pub mod text;

pub use message::Message;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use serde_json::{Value, json};

use crate::read::Problem;

/// The output formats, each with its own registry, directory and file suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    Subject,
    Text,
    Html,
    Slack,
    Webhook,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Subject,
        Format::Text,
        Format::Html,
        Format::Slack,
        Format::Webhook,
    ];

    fn dir(self) -> &'static str {
        match self {
            Format::Subject | Format::Text | Format::Html => "email",
            Format::Slack => "slack",
            Format::Webhook => "webhook",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Format::Subject => ".subject.hbs",
            Format::Text => ".txt.hbs",
            Format::Html => ".html.hbs",
            Format::Slack | Format::Webhook => ".json.hbs",
        }
    }

    /// Where template `name` of this format lives under the templates directory.
    pub fn relative_path(self, name: &str) -> String {
        format!("{}/{name}{}", self.dir(), self.suffix())
    }

    fn escape(self) -> fn(&str) -> String {
        match self {
            Format::Subject => helpers::escape_subject,
            Format::Text => handlebars::no_escape,
            Format::Html => handlebars::html_escape,
            Format::Slack => helpers::escape_slack,
            Format::Webhook => helpers::escape_json,
        }
    }
}

/// The shipped templates, compiled into the binary so a config without a
/// templates directory still renders well. `templates/` in the repository holds
/// the same files, as a starting point for your own.
const BUILT_IN: &[(Format, &str)] = &[
    (
        Format::Subject,
        include_str!("../../templates/email/default.subject.hbs"),
    ),
    (
        Format::Text,
        include_str!("../../templates/email/default.txt.hbs"),
    ),
    (
        Format::Html,
        include_str!("../../templates/email/default.html.hbs"),
    ),
    (
        Format::Slack,
        include_str!("../../templates/slack/default.json.hbs"),
    ),
];

/// Compiled templates of every format.
pub struct Templates {
    registries: BTreeMap<Format, Handlebars<'static>>,
    /// Where each template came from: a file path, or "built-in".
    origins: BTreeMap<(Format, String), String>,
    /// The directory they were read from, if any.
    pub dir: Option<PathBuf>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Templates")
            .field("dir", &self.dir)
            .field("templates", &self.origins.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A template that failed to render, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderFailure {
    /// `path:line:column` (or `path` when handlebars gives no position).
    pub location: String,
    pub reason: String,
}

impl fmt::Display for RenderFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.reason)
    }
}

/// A rendered message, and why the built-in fallback was used, if it was.
#[derive(Debug, Clone)]
pub struct Rendered<T> {
    pub message: T,
    pub fallback: Option<String>,
}

impl<T> Rendered<T> {
    /// The rendered message, or — when the template failed — the built-in one
    /// from `fallback`, with the failure logged and kept as the reason.
    fn or_fallback(
        attempt: Result<T, RenderFailure>,
        format: &str,
        template: &str,
        fallback: impl FnOnce(&str) -> T,
    ) -> Self {
        match attempt {
            Ok(message) => Rendered {
                message,
                fallback: None,
            },
            Err(failure) => {
                let reason = failure.to_string();
                tracing::error!(
                    message = "Template failed; sending the built-in message instead.",
                    format,
                    template,
                    %reason
                );
                Rendered {
                    message: fallback(&reason),
                    fallback: Some(reason),
                }
            }
        }
    }
}

/// An email's three parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailMessage {
    pub subject: String,
    pub text: String,
    /// Absent when the template has no `.html.hbs`.
    pub html: Option<String>,
}

impl Templates {
    /// Compiles the built-in templates, then every template under `dir`
    /// (overriding built-ins of the same name). Returns every compile problem,
    /// located as `file:line:column`. `strict` makes a missing variable a render
    /// error (for `check`).
    pub fn load(dir: Option<&Path>, strict: bool) -> (Self, Vec<Problem>) {
        let mut t = Templates {
            registries: BTreeMap::new(),
            origins: BTreeMap::new(),
            dir: dir.map(Path::to_owned),
        };
        for format in Format::ALL {
            let mut hb = Handlebars::new();
            hb.set_strict_mode(strict);
            hb.register_escape_fn(format.escape());
            helpers::register(&mut hb);
            t.registries.insert(format, hb);
        }
        let mut problems = Vec::new();
        for (format, source) in BUILT_IN {
            let origin = format!("built-in {}", format.relative_path("default"));
            if let Err(p) = t.add(*format, "default", source, &origin) {
                problems.push(p);
            }
        }
        if let Some(dir) = dir {
            for sub in ["email", "slack", "webhook"] {
                problems.extend(t.add_dir(&dir.join(sub), sub));
            }
        }
        (t, problems)
    }

    fn add_dir(&mut self, dir: &Path, sub: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return problems; // an absent subdirectory just means "built-ins only"
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for path in files {
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !file_name.ends_with(".hbs") {
                continue;
            }
            let found = Format::ALL
                .into_iter()
                .filter(|f| f.dir() == sub)
                .find_map(|f| file_name.strip_suffix(f.suffix()).map(|name| (f, name)));
            let Some((format, name)) = found.filter(|(_, name)| !name.is_empty()) else {
                let expected: Vec<String> = Format::ALL
                    .into_iter()
                    .filter(|f| f.dir() == sub)
                    .map(|f| format!("NAME{}", f.suffix()))
                    .collect();
                problems.push(Problem {
                    key: path.display().to_string(),
                    message: format!(
                        "not a template name this daemon reads; in {sub}/ use {}",
                        expected.join(", ")
                    ),
                });
                continue;
            };
            match std::fs::read_to_string(&path) {
                Ok(source) => {
                    if let Err(p) = self.add(format, name, &source, &path.display().to_string()) {
                        problems.push(p);
                    }
                }
                Err(e) => problems.push(Problem {
                    key: path.display().to_string(),
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        problems
    }

    fn add(
        &mut self,
        format: Format,
        name: &str,
        source: &str,
        origin: &str,
    ) -> Result<(), Problem> {
        let hb = self
            .registries
            .get_mut(&format)
            .expect("a registry per format");
        hb.register_template_string(name, source).map_err(|e| {
            let location = match e.pos() {
                Some((line, col)) => format!("{origin}:{line}:{col}"),
                None => origin.to_owned(),
            };
            Problem {
                key: location,
                message: format!("template does not compile: {}", e.reason()),
            }
        })?;
        self.origins
            .insert((format, name.to_owned()), origin.to_owned());
        Ok(())
    }

    pub fn has(&self, format: Format, name: &str) -> bool {
        self.origins.contains_key(&(format, name.to_owned()))
    }

    /// Template names of `format`, sorted.
    pub fn names(&self, format: Format) -> Vec<String> {
        self.origins
            .keys()
            .filter(|(f, _)| *f == format)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// Renders one template, or says where and why it failed.
    pub fn render(&self, format: Format, name: &str, ctx: &Value) -> Result<String, RenderFailure> {
        let origin = self
            .origins
            .get(&(format, name.to_owned()))
            .cloned()
            .unwrap_or_else(|| format.relative_path(name));
        self.registries[&format].render(name, ctx).map_err(|e| {
            let location = match (e.line_no, e.column_no) {
                (Some(line), Some(col)) => format!("{origin}:{line}:{col}"),
                _ => origin,
            };
            RenderFailure {
                location,
                reason: e.reason().to_string(),
            }
        })
    }

    /// The email for `ctx` with template `name`; the built-in plain email if the
    /// template fails.
    pub fn email(&self, name: &str, ctx: &Value) -> Rendered<EmailMessage> {
        let attempt = || -> Result<EmailMessage, RenderFailure> {
            let subject = self.render(Format::Subject, name, ctx)?;
            let subject = clean_subject(&text::mail_safe(&subject));
            let text = text::mail_safe(&self.render(Format::Text, name, ctx)?);
            let html = if self.has(Format::Html, name) {
                Some(text::mail_safe(&self.render(Format::Html, name, ctx)?))
            } else {
                None
            };
            Ok(EmailMessage {
                subject,
                text,
                html,
            })
        };
        Rendered::or_fallback(attempt(), "email", name, |reason| {
            fallback_email(ctx, reason)
        })
    }

    /// The Block Kit message (`{"text", "blocks"}`) for `ctx`, within Slack's
    /// limits; the built-in plain message if the template fails.
    pub fn slack(&self, name: &str, ctx: &Value) -> Rendered<Value> {
        let attempt = || -> Result<Value, RenderFailure> {
            let text = self.render(Format::Slack, name, ctx)?;
            let mut message = parse_json(&text, Format::Slack, name)?;
            let Some(object) = message.as_object_mut() else {
                return Err(RenderFailure {
                    location: Format::Slack.relative_path(name),
                    reason: "renders JSON that is not an object with `text` and `blocks`".into(),
                });
            };
            if !object.get("text").is_some_and(Value::is_string) {
                // The notification/fallback text is required for a good message.
                object.insert("text".into(), json!(plain_title(ctx)));
            }
            if object.get("blocks").is_some_and(|b| !b.is_array()) {
                return Err(RenderFailure {
                    location: Format::Slack.relative_path(name),
                    reason: "`blocks` must be a list".into(),
                });
            }
            slack::enforce_limits(&mut message);
            Ok(message)
        };
        Rendered::or_fallback(attempt(), "slack", name, |_| fallback_slack(ctx))
    }

    /// A webhook body: the original payload (`name` unset), or the template's
    /// JSON; the original payload if the template fails.
    pub fn webhook(&self, name: Option<&str>, ctx: &Value, original: &[u8]) -> Rendered<Vec<u8>> {
        let Some(name) = name else {
            return Rendered {
                message: original.to_vec(),
                fallback: None,
            };
        };
        let attempt = || -> Result<Vec<u8>, RenderFailure> {
            let text = self.render(Format::Webhook, name, ctx)?;
            parse_json(&text, Format::Webhook, name)?;
            Ok(text.into_bytes())
        };
        Rendered::or_fallback(attempt(), "webhook", name, |_| original.to_vec())
    }
}

fn parse_json(text: &str, format: Format, name: &str) -> Result<Value, RenderFailure> {
    serde_json::from_str(text).map_err(|e| RenderFailure {
        location: format.relative_path(name),
        reason: format!(
            "renders invalid JSON ({e}); line {} column {} of the output is:\n{}",
            e.line(),
            e.column(),
            text.lines().nth(e.line().saturating_sub(1)).unwrap_or("")
        ),
    })
}

/// One line, single spaces, at most 250 characters.
fn clean_subject(subject: &str) -> String {
    let one_line = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    helpers::truncate_chars(&one_line, 250)
}

fn field<'a>(ctx: &'a Value, key: &str) -> &'a str {
    ctx.get(key).and_then(Value::as_str).unwrap_or("")
}

fn plain_title(ctx: &Value) -> String {
    let mut title = format!("{} {}", field(ctx, "emoji"), field(ctx, "title"));
    if let Some(d) = ctx.get("duration").and_then(Value::as_str) {
        title.push_str(&format!(" in {d}"));
    }
    title
}

/// The email sent when a template fails: plain, complete, built without templates.
fn fallback_email(ctx: &Value, reason: &str) -> EmailMessage {
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
        subject: clean_subject(&text::mail_safe(&plain_title(ctx))),
        text: text::mail_safe(&text),
        html: None,
    }
}

/// The Slack message sent when a template fails, escaped for mrkdwn.
fn fallback_slack(ctx: &Value) -> Value {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut lines = vec![format!("*{}*", esc(&plain_title(ctx)))];
    for key in ["id", "error_message"] {
        let value = field(ctx, key);
        if !value.is_empty() {
            lines.push(format!(
                "{key}: {}",
                esc(&helpers::truncate_chars(value, 1_000))
            ));
        }
    }
    let url = field(ctx, "web_url");
    if !url.is_empty() {
        lines.push(format!("<{}|Open on Replicate>", esc(url)));
    }
    let mut message = json!({
        "text": esc(&plain_title(ctx)),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": lines.join("\n")}}]
    });
    slack::enforce_limits(&mut message);
    message
}

/// Renders every template of every format against every built-in sample in
/// strict mode, so a misspelled variable or a template that produces invalid
/// JSON is reported (file:line:column) before production. Compile problems are
/// reported by config loading, not here.
pub fn check(dir: Option<&Path>) -> Vec<Problem> {
    let (strict, compile_problems) = Templates::load(dir, true);
    if !compile_problems.is_empty() {
        return Vec::new();
    }
    let samples = samples::samples();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for format in Format::ALL {
        for name in strict.names(format) {
            for (label, event) in &samples {
                let ctx = context::context(event, "sample route", "sample-notifier");
                let outcome = strict
                    .render(format, &name, &ctx)
                    .and_then(|text| match format {
                        Format::Slack | Format::Webhook => {
                            parse_json(&text, format, &name).map(|_| ())
                        }
                        _ => Ok(()),
                    });
                if let Err(failure) = outcome
                    && seen.insert((failure.location.clone(), failure.reason.clone()))
                {
                    problems.push(Problem {
                        key: failure.location,
                        message: format!("{} (with the sample {label})", failure.reason),
                    });
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn ctx() -> Value {
        let ev = Event::from_value(
            json!({"id": "p1", "status": "failed", "model": "acme/m", "error": "boom <b>"}),
            "",
        )
        .unwrap();
        context::context(&ev, "r", "n")
    }

    fn with_dir(files: &[(&str, &str)]) -> (tempfile::TempDir, Templates, Vec<Problem>) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let (t, problems) = Templates::load(Some(dir.path()), false);
        (dir, t, problems)
    }

    #[test]
    fn built_ins_compile_and_pass_the_strict_check() {
        let (t, problems) = Templates::load(None, true);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(t.has(Format::Slack, "default") && t.has(Format::Html, "default"));
        assert_eq!(check(None), vec![]);
    }

    #[test]
    fn compile_errors_are_located() {
        let (_d, _t, problems) =
            with_dir(&[("slack/bad.json.hbs", "{\n  \"text\": \"{{#if x}}\"\n}")]);
        assert_eq!(problems.len(), 1);
        // The unclosed `{{#if}}` is noticed at the end of the file.
        assert!(
            problems[0].key.ends_with("slack/bad.json.hbs:3:2"),
            "{problems:?}"
        );
        assert!(problems[0].message.starts_with("template does not compile"));
    }

    #[test]
    fn strict_check_finds_misspelled_variables() {
        let (dir, _t, problems) = with_dir(&[
            ("email/typo.subject.hbs", "{{emoji}} {{titel}}"),
            ("email/typo.txt.hbs", "ok"),
        ]);
        assert!(problems.is_empty());
        let found = check(Some(dir.path()));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].key.ends_with("email/typo.subject.hbs:1:11"),
            "{found:?}"
        );
        assert!(found[0].message.contains("titel"), "{found:?}");
    }

    #[test]
    fn unknown_file_names_are_reported() {
        let (_d, _t, problems) = with_dir(&[("email/default.text.hbs", "x")]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("NAME.txt.hbs"), "{problems:?}");
    }

    #[test]
    fn a_failing_template_falls_back_and_says_why() {
        let (_d, t, problems) = with_dir(&[
            ("slack/broken.json.hbs", "{ \"text\": {{model}} }"),
            ("email/broken.subject.hbs", "{{truncate model \"x\"}}"),
            ("email/broken.txt.hbs", "body"),
            ("webhook/broken.json.hbs", "not json"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        let ctx = ctx();
        let slack = t.slack("broken", &ctx);
        assert!(slack.fallback.as_deref().unwrap().contains("invalid JSON"));
        let text = slack.message["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(text.contains("boom &lt;b&gt;"), "{text}");
        let email = t.email("broken", &ctx);
        assert!(email.fallback.is_some());
        assert!(email.message.text.contains("boom <b>"));
        assert_eq!(email.message.subject, "❌ Prediction acme/m failed");
        let hook = t.webhook(Some("broken"), &ctx, b"{\"original\":1}");
        assert_eq!(hook.message, b"{\"original\":1}");
        assert!(hook.fallback.is_some());
    }

    #[test]
    fn each_format_escapes_for_its_target() {
        let (_d, t, _) = with_dir(&[
            ("email/esc.subject.hbs", "{{error}}\n"),
            ("email/esc.txt.hbs", "{{error}}"),
            ("email/esc.html.hbs", "<p>{{error}}</p>"),
            (
                "slack/esc.json.hbs",
                "{\"text\": \"{{error}}\", \"blocks\": []}",
            ),
            ("webhook/esc.json.hbs", "{\"e\": \"{{error}}\"}"),
        ]);
        let mut ctx = ctx();
        ctx["error"] = json!("<!channel> \"x\" & y\r\nBcc: z");
        let email = t.email("esc", &ctx).message;
        assert_eq!(email.subject, "<!channel> \"x\" & y Bcc: z");
        // Line breaks as `\n`: lettre writes each as CRLF, and no bare CR
        // reaches the SMTP server.
        assert_eq!(email.text, "<!channel> \"x\" & y\nBcc: z");
        assert_eq!(
            email.html.unwrap(),
            "<p>&lt;!channel&gt; &quot;x&quot; &amp; y\nBcc: z</p>"
        );
        let slack = t.slack("esc", &ctx);
        assert!(slack.fallback.is_none(), "{:?}", slack.fallback);
        assert_eq!(
            slack.message["text"],
            "&lt;!channel&gt; \"x\" &amp; y\r\nBcc: z"
        );
        let hook = t.webhook(Some("esc"), &ctx, b"{}");
        let body: Value = serde_json::from_slice(&hook.message).unwrap();
        assert_eq!(body["e"], "<!channel> \"x\" & y\r\nBcc: z");
    }
}
