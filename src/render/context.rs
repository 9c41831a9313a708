//! The data a template sees: the payload as Replicate sent it, plus derived
//! fields that every message wants and no template should have to compute.

use serde_json::{Map, Value, json};

use super::display::{display, web_url};
use super::helpers::{human_duration, tail_lines, truncate_chars};
use super::text::as_terminal_showed;
use crate::event::{Event, Job, Kind, Status};

/// How many log lines `logs_tail` keeps, and at most how many characters: a
/// training can log megabytes, and one line can be huge.
const TAIL_LINES: usize = 20;
const TAIL_CHARS: usize = 2_500;
/// At most this many output URLs are listed.
const MAX_OUTPUTS: usize = 20;

/// Builds the template context for `event`, sent by `route` to `notifier`.
///
/// The payload's own fields are there as received. The derived fields are
/// text to show: through the display rule ([`display`]: no ANSI codes or
/// control characters), URLs as a URL parser writes them.
///
/// Derived fields: `kind`, `query` (object), `route`, `notifier`, `emoji`,
/// `target` (destination, deployment or model), `duration` (human),
/// `duration_seconds`, `outputs` (URLs found in `output`, at most 20),
/// `more_files` (how many more there were), `logs_tail`,
/// `error_message`, `is_success`, `is_failure`, `is_training`, and for
/// trainings `trained_version` and `weights`; and what [`super::run`] says
/// of the run: `title`, `run_name`, `reason`, `headline`, `web_url` (always
/// a link), `prompt`, `inputs`, `progress`, `timing`, `files`, `images`,
/// `outputs_expire_at`.
pub fn context(event: &Event, route: &str, notifier: &str) -> Value {
    let mut ctx: Map<String, Value> = match &event.payload {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let job = event.job();
    let common = job.common();
    let kind = event.kind;

    let query: Map<String, Value> = event
        .query
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let target = match job {
        Job::Training(t) => t.destination.clone().or_else(|| common.model.clone()),
        Job::Prediction(p) => p.deployment.clone().or_else(|| common.model.clone()),
    }
    .unwrap_or_else(|| common.id.clone());
    let seconds = super::run::run_seconds(job);
    let mut outputs = Vec::new();
    let mut found = 0;
    collect_urls(&common.output, &mut outputs, &mut found);
    let logs_tail = common
        .logs
        .as_deref()
        .map(|l| {
            let shown = as_terminal_showed(&tail_lines(l, TAIL_LINES));
            tail_chars(&shown, TAIL_CHARS)
        })
        .unwrap_or_default();
    let run = super::run::derive(job, kind, &event.status, &logs_tail, &outputs);

    let mut derived = Map::new();
    let mut set = |k: &str, v: Value| {
        derived.insert(k.to_owned(), v);
    };
    set("kind", json!(kind.as_str()));
    set("query", Value::Object(query));
    set("route", json!(route));
    set("notifier", json!(notifier));
    set("target", json!(target));
    set("emoji", json!(emoji(&event.status)));
    set("duration", json!(seconds.map(human_duration)));
    set("duration_seconds", json!(seconds));
    set("more_files", json!(found - outputs.len()));
    set("outputs", json!(outputs));
    set("logs_tail", json!(logs_tail));
    set(
        "error_message",
        json!(job.error_message().map(|e| truncate_chars(&e, 2_000))),
    );
    set("is_success", json!(event.status == Status::Succeeded));
    set(
        "is_failure",
        json!(matches!(event.status, Status::Failed | Status::Aborted)),
    );
    set("is_training", json!(kind == Kind::Training));
    let (version, weights) = match (&common.output, kind) {
        (Value::Object(o), Kind::Training) => (
            o.get("version").and_then(Value::as_str).map(str::to_owned),
            o.get("weights").and_then(Value::as_str).and_then(web_url),
        ),
        _ => (None, None),
    };
    set("trained_version", json!(version));
    set("weights", json!(weights));
    derived.extend(run);
    let mut derived = Value::Object(derived);
    shown(&mut derived);
    let Value::Object(derived) = derived else {
        unreachable!("built as an object")
    };
    ctx.extend(derived);
    Value::Object(ctx)
}

/// Every string in `value` through the display rule.
fn shown(value: &mut Value) {
    match value {
        Value::String(s) if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => {
            *s = display(s);
        }
        Value::Array(items) => items.iter_mut().for_each(shown),
        Value::Object(map) => map.values_mut().for_each(shown),
        _ => {}
    }
}

/// The status as one emoji, for subjects and headers.
pub fn emoji(status: &Status) -> &'static str {
    match status {
        Status::Succeeded => "✅",
        Status::Failed => "❌",
        Status::Canceled => "⏹️",
        Status::Aborted => "⚠️",
        Status::Starting => "🚀",
        Status::Processing => "⏳",
        Status::Other(_) => "ℹ️",
    }
}

/// Every http(s) URL in `value`, depth first, up to [`MAX_OUTPUTS`], as a
/// URL parser writes it; `found` counts them all.
fn collect_urls(value: &Value, out: &mut Vec<String>, found: &mut usize) {
    match value {
        Value::String(s) if s.starts_with("https://") || s.starts_with("http://") => {
            if let Some(url) = web_url(s) {
                *found += 1;
                if out.len() < MAX_OUTPUTS {
                    out.push(url);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_urls(v, out, found)),
        Value::Object(map) => map.values().for_each(|v| collect_urls(v, out, found)),
        _ => {}
    }
}

/// The last `max` characters, marked with "…" when cut (the end of a log is
/// what explains a failure).
fn tail_chars(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let mut out = String::from("…");
    out.extend(text.chars().skip(count - max + 1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_fields_for_a_training() {
        let body = json!({
            "id": "t1", "status": "succeeded", "model": "lab/trainer", "destination": "acme/neon",
            "output": {"version": "acme/neon:abc", "weights": "https://x/w.tar"},
            "started_at": "2026-11-22T18:00:39.915236Z", "completed_at": "2026-11-22T18:20:31.046810Z",
            "urls": {"get": "https://api.replicate.com/v1/trainings/t1"},
            "logs": (0..100).map(|i| format!("line {i}\n")).collect::<String>()
        });
        let ev = Event::from_value(body, "team=vision").unwrap();
        let ctx = context(&ev, "training finished", "ml-slack");
        assert_eq!(ctx["title"], "Training acme/neon succeeded");
        assert_eq!(ctx["duration"], "19m 51s");
        assert_eq!(ctx["emoji"], "✅");
        assert_eq!(ctx["trained_version"], "acme/neon:abc");
        assert_eq!(ctx["weights"], "https://x/w.tar");
        assert_eq!(ctx["outputs"], json!(["https://x/w.tar"]));
        assert_eq!(ctx["query"]["team"], "vision");
        assert_eq!(ctx["web_url"], "https://replicate.com/p/t1");
        let tail = ctx["logs_tail"].as_str().unwrap();
        assert_eq!(tail.lines().count(), 20);
        assert!(tail.ends_with("line 99"));
        assert_eq!(ctx["route"], "training finished");
    }

    #[test]
    fn huge_log_lines_are_cut_from_the_front() {
        let body =
            json!({"id": "p", "status": "failed", "logs": "x".repeat(1_000_000) + "\nthe end"});
        let ev = Event::from_value(body, "").unwrap();
        let ctx = context(&ev, "r", "n");
        let tail = ctx["logs_tail"].as_str().unwrap();
        assert!(tail.chars().count() <= TAIL_CHARS);
        assert!(tail.starts_with('…') && tail.ends_with("the end"));
        assert_eq!(ctx["web_url"], "https://replicate.com/p/p");
        assert_eq!(ctx["is_failure"], true);
    }
}
