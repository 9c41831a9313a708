//! A `type = "replicate"` notifier's keys: what it creates (`model`,
//! `version` or `deployment`), the input (a JSON template over the finished
//! job), the stage's name and how its webhook comes back, how deep a chain
//! may go, and whether an attempt that cannot be settled is sent again.
//! The token, the API's address and this relay's webhook address default to
//! `[replicate]`'s.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use handlebars::Handlebars;
use serde_json::Value;

use crate::config::read::{Reader, Sensitive, Table};

pub const KEYS: &[&str] = &[
    "model",
    "version",
    "deployment",
    "input",
    "pipeline",
    "webhook_url",
    "webhook_events_filter",
    "max_depth",
    "at_least_once",
    "token",
    "token_file",
];

/// How deep a chain of pipelines goes unless `max_depth` says otherwise.
pub const DEFAULT_MAX_DEPTH: u32 = 5;

/// The events Replicate may send a webhook for.
const EVENTS: [&str; 4] = ["start", "output", "logs", "completed"];

/// What a notifier creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `owner/name`: the model's latest version.
    Model(String),
    /// A version id (64 hex digits), or `owner/name:<id>`.
    Version(String),
    /// `owner/name` of a deployment.
    Deployment(String),
}

impl Target {
    /// Where the create is POSTed.
    pub fn path(&self) -> String {
        match self {
            Target::Model(m) => format!("v1/models/{m}/predictions"),
            Target::Version(_) => "v1/predictions".into(),
            Target::Deployment(d) => format!("v1/deployments/{d}/predictions"),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Model(m) => format!("model {m}"),
            Target::Version(v) => format!("version {v}"),
            Target::Deployment(d) => format!("deployment {d}"),
        }
    }
}

/// The `input` template: JSON with `{{…}}`. A value in double braces is
/// escaped for a JSON string (`"prompt": "{{input.prompt}} at dusk"`), one
/// in triple braces goes in as it is (`{{{json output.[0]}}}` for a JSON
/// value of its own).
#[derive(Clone)]
pub struct InputTemplate {
    source: String,
    registry: Arc<Handlebars<'static>>,
}

impl fmt::Debug for InputTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("InputTemplate").field(&self.source).finish()
    }
}

impl InputTemplate {
    pub fn compile(source: &str) -> Result<Self, String> {
        let mut hb = Handlebars::new();
        hb.register_escape_fn(json_string_escape);
        crate::render::helpers::register(&mut hb);
        hb.register_template_string("input", source)
            .map_err(|e| match e.pos() {
                Some((line, col)) => format!("{} (line {line}, column {col})", e.reason()),
                None => e.reason().to_string(),
            })?;
        Ok(InputTemplate {
            source: source.to_owned(),
            registry: Arc::new(hb),
        })
    }

    /// The input for template context `ctx`: a JSON object, or why not.
    pub fn render(&self, ctx: &Value) -> Result<Value, String> {
        let text = self
            .registry
            .render("input", ctx)
            .map_err(|e| format!("the input template failed: {}", e.reason()))?;
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => Ok(Value::Object(map)),
            Ok(_) => Err(format!(
                "the input template rendered JSON that is not an object: {}",
                crate::render::helpers::truncate_chars(&text, 200)
            )),
            Err(e) => Err(format!(
                "the input template rendered text that is not JSON ({e}): {}; put a value of its own in triple braces with json: {{{{{{json output.[0]}}}}}}",
                crate::render::helpers::truncate_chars(&text, 200)
            )),
        }
    }
}

/// A value placed inside a JSON string: quotes, backslashes and control
/// characters escaped as JSON escapes them.
fn json_string_escape(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted[1..quoted.len() - 1].to_owned()
}

/// A `type = "replicate"` notifier's settings.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub target: Target,
    pub input: InputTemplate,
    /// The stage's name in its webhook's query (`pipeline=`); the
    /// notifier's name unless set.
    pub pipeline: Option<String>,
    pub webhook_url: url::Url,
    pub events: Vec<String>,
    pub max_depth: u32,
    pub at_least_once: bool,
    pub api_url: String,
    pub token: Sensitive,
    pub timeout: Duration,
}

pub(super) fn read(r: &mut Reader, t: Table<'_>) -> Option<Pipeline> {
    let target = read_target(r, t);
    let input = match r.string(t, "input") {
        None => {
            r.error(
                t.key("input"),
                "missing; the next stage's input as a JSON template, e.g. input = '{\"image\": {{{json output.[0]}}}}'",
            );
            None
        }
        Some(text) => match InputTemplate::compile(&text) {
            Ok(template) => Some(template),
            Err(e) => {
                r.error(t.key("input"), format!("is not a template: {e}"));
                None
            }
        },
    };
    let pipeline = r.string(t, "pipeline");
    if let Some(name) = &pipeline
        && (name.is_empty() || name.len() > 100)
    {
        r.error(t.key("pipeline"), "must be 1 to 100 characters");
    }
    let section = r.replicate.clone();
    let webhook_url = match r.string(t, "webhook_url") {
        Some(text) => parse_webhook(r, &t.key("webhook_url"), &text),
        None => match section.as_ref().and_then(|s| s.webhook_url.clone()) {
            Some(url) => Some(url),
            None => {
                r.error(
                    t.key("webhook_url"),
                    "missing; this relay's address as Replicate reaches it, here or as [replicate] webhook_url (\"https://relay.example.com/hooks/replicate\")",
                );
                None
            }
        },
    };
    let mut events = r.strings(t, "webhook_events_filter");
    if events.is_empty() {
        events = vec!["completed".into()];
    }
    for e in &events {
        if !EVENTS.contains(&e.as_str()) {
            r.error(
                t.key("webhook_events_filter"),
                format!(
                    "`{e}` is not one of Replicate's webhook events: start, output, logs, completed"
                ),
            );
        }
    }
    let max_depth = match r.uint(t, "max_depth") {
        None => DEFAULT_MAX_DEPTH,
        Some(n @ 1..=100) => n as u32,
        Some(_) => {
            r.error(
                t.key("max_depth"),
                "must be between 1 and 100; the default is 5",
            );
            DEFAULT_MAX_DEPTH
        }
    };
    let at_least_once = r.bool(t, "at_least_once").unwrap_or(false);
    let token = r
        .secret(t, "token")
        .or_else(|| section.as_ref()?.token.clone());
    if token.is_none() && !r.failed(&t.key("token_file")) {
        r.error(
            t.key("token_file"),
            "missing; creating predictions needs the account's API token, here or as [replicate] token_file (https://replicate.com/account/api-tokens)",
        );
    }
    let (api_url, timeout) = section.map_or_else(
        || {
            (
                crate::replicate::API_URL.to_owned(),
                crate::replicate::client::ANSWER_WITHIN,
            )
        },
        |s| (s.api_url, s.timeout),
    );
    Some(Pipeline {
        target: target?,
        input: input?,
        pipeline,
        webhook_url: webhook_url?,
        events,
        max_depth,
        at_least_once,
        api_url,
        token: token?,
        timeout,
    })
}

fn read_target(r: &mut Reader, t: Table<'_>) -> Option<Target> {
    let given: Vec<(&str, String)> = ["model", "version", "deployment"]
        .into_iter()
        .filter_map(|k| Some((k, r.string(t, k)?)))
        .collect();
    let (key, text) = match given.as_slice() {
        [one] => one.clone(),
        [] => {
            r.error(
                t.key("model"),
                "missing; what to create: model = \"owner/name\", version = \"<64 hex digits>\" or deployment = \"owner/name\"",
            );
            return None;
        }
        _ => {
            r.error(
                t.key(given[1].0),
                format!(
                    "set one of model, version and deployment, not {} and {}",
                    given[0].0, given[1].0
                ),
            );
            return None;
        }
    };
    let ok = match key {
        "version" => match text.split_once(':') {
            Some((model, id)) => is_owner_name(model) && is_version_id(id),
            None => is_version_id(&text),
        },
        _ => is_owner_name(&text),
    };
    if !ok {
        let want = if key == "version" {
            "a version id (64 hex digits) or owner/name:<id>"
        } else {
            "owner/name"
        };
        r.error(t.key(key), format!("`{text}` is not {want}"));
        return None;
    }
    Some(match key {
        "model" => Target::Model(text),
        "version" => Target::Version(text),
        _ => Target::Deployment(text),
    })
}

fn is_owner_name(text: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 100
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    text.split_once('/')
        .is_some_and(|(owner, name)| part(owner) && part(name))
}

fn is_version_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Replicate sends webhooks to HTTPS addresses only.
pub fn parse_webhook(r: &mut Reader, key: &str, text: &str) -> Option<url::Url> {
    match url::Url::parse(text) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => Some(u),
        _ => {
            r.error(
                key,
                format!("`{text}` is not an https URL; Replicate sends webhooks to https addresses only, e.g. \"https://relay.example.com/hooks/replicate\""),
            );
            None
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
