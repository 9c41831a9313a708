//! What a message says about the run beyond its status, so its reader knows
//! in three seconds which run it was and why it ended so: the name that tells
//! one run from another, the reason, the inputs that matter, the last
//! progress line of the logs, timing split into run and queue, and the files
//! it made (images apart, with when Replicate deletes them).

use std::sync::LazyLock;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::display::{file_name, web_url as parsed_url};
use super::helpers::{human_duration, truncate_chars};
use crate::event::{Job, Kind, Status, Timestamp};

/// Inputs a training message shows, in this order, with their labels: the
/// parameters people compare runs by. The first key found for a label wins.
const TRAINING_INPUTS: &[(&str, &[&str])] = &[
    ("Trigger word", &TRIGGER_KEYS),
    (
        "Steps",
        &["steps", "max_train_steps", "max_steps", "num_train_steps"],
    ),
    (
        "Learning rate",
        &["learning_rate", "lr", "unet_learning_rate"],
    ),
    ("Rank", &["lora_rank", "rank", "network_rank", "lora_r"]),
    ("Batch size", &["batch_size", "train_batch_size"]),
    ("Resolution", &["resolution"]),
    ("Dataset", &DATASET_KEYS),
];

/// Where trainers take the word that calls up what they learn.
const TRIGGER_KEYS: [&str; 4] = ["trigger_word", "trigger", "token", "instance_prompt"];

/// Where trainers take their data from; a URL shows as its file name.
const DATASET_KEYS: [&str; 6] = [
    "input_images",
    "input_zip",
    "dataset",
    "train_data",
    "instance_data",
    "images",
];

/// Inputs that carry the prompt, which a prediction shows on its own.
const PROMPT_KEYS: &[&str] = &["prompt", "text", "query", "message"];

/// At most this many other inputs of a prediction are shown.
const MAX_INPUTS: usize = 6;
/// Longer input values are not "scalar inputs" worth a row.
const MAX_INPUT_CHARS: usize = 80;

/// What this module adds to the template context, from the job, the tail of
/// its logs and the URLs in its output.
pub fn derive(
    job: &Job,
    kind: Kind,
    status: &Status,
    logs_tail: &str,
    urls: &[String],
) -> Map<String, Value> {
    let common = job.common();
    let input = common.input.as_object();
    let mut out = Map::new();
    let name = run_name(job, kind);
    let timing = timing(job);
    let progress = progress_line(logs_tail);
    let reason = reason(job, status, progress.as_deref(), &timing);
    let kind_word = match kind {
        Kind::Prediction => "Prediction",
        Kind::Training => "Training",
    };
    let title = format!("{kind_word} {name} {status}");
    let headline = match (&reason, status) {
        (Some(reason), _) => format!("{title}: {reason}"),
        (None, Status::Succeeded) => match &timing.run {
            Some(run) => format!("{title} in {run}"),
            None => title.clone(),
        },
        (None, _) => title.clone(),
    };
    out.insert("run_name".into(), json!(name));
    out.insert("title".into(), json!(title));
    out.insert("reason".into(), json!(reason));
    out.insert("headline".into(), json!(headline));
    out.insert("inputs".into(), json!(inputs(kind, input)));
    out.insert("prompt".into(), json!(prompt(kind, input)));
    out.insert("progress".into(), json!(progress));
    out.insert(
        "timing".into(),
        json!({
            "run": timing.run,
            "queue": timing.queue,
            "total": timing.total,
            "billed": billed(job, status, &timing),
        }),
    );
    out.insert("web_url".into(), json!(web_url(job)));
    let images: Vec<&String> = urls.iter().filter(|u| is_image(u)).take(4).collect();
    let files: Vec<Value> = urls
        .iter()
        .map(|url| json!({"url": url, "name": file_name(url), "image": is_image(url)}))
        .collect();
    out.insert("images".into(), json!(images));
    out.insert("files".into(), json!(files));
    out.insert("outputs_expire_at".into(), json!(expiry(job)));
    out
}

/// The name that tells this run from others: the destination of a training
/// or the deployment of a prediction; else the model with what sets this run
/// apart (a trigger word or dataset, the start of a prompt); else the id.
fn run_name(job: &Job, kind: Kind) -> String {
    let common = job.common();
    let named = match job {
        Job::Training(t) => t.destination.clone(),
        Job::Prediction(p) => p.deployment.clone(),
    };
    if let Some(named) = named.filter(|n| !n.is_empty()) {
        return named;
    }
    let apart = distinguisher(kind, common.input.as_object());
    match (&common.model, apart) {
        (Some(model), Some(apart)) => format!("{model} ({apart})"),
        (Some(model), None) => model.clone(),
        (None, Some(apart)) => format!("{} ({apart})", common.id),
        (None, None) => common.id.clone(),
    }
}

/// What sets a run apart from others of the same model, briefly.
fn distinguisher(kind: Kind, input: Option<&Map<String, Value>>) -> Option<String> {
    let input = input?;
    let first = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| input.get(*k).and_then(Value::as_str))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let quoted = |t: &str| format!("“{}”", truncate_chars(&one_line(t), 40));
    match kind {
        Kind::Training => first(&TRIGGER_KEYS)
            .map(quoted)
            .or_else(|| first(&DATASET_KEYS).map(|d| truncate_chars(&file_name(d), 40))),
        Kind::Prediction => first(PROMPT_KEYS).map(quoted),
    }
}

/// The prompt of a prediction, whole (templates shorten it as they need).
fn prompt(kind: Kind, input: Option<&Map<String, Value>>) -> Option<String> {
    let input = input.filter(|_| kind == Kind::Prediction)?;
    PROMPT_KEYS
        .iter()
        .find_map(|k| input.get(*k).and_then(Value::as_str))
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
}

/// The inputs that matter, as `{name, value}`: a training's parameters by
/// their labels, or a prediction's short scalar inputs (not its prompt).
fn inputs(kind: Kind, input: Option<&Map<String, Value>>) -> Vec<Value> {
    let Some(input) = input else {
        return Vec::new();
    };
    match kind {
        Kind::Training => TRAINING_INPUTS
            .iter()
            .filter_map(|(label, keys)| {
                let value = keys.iter().find_map(|k| input.get(*k).and_then(shown))?;
                Some(json!({"name": label, "value": value}))
            })
            .collect(),
        Kind::Prediction => input
            .iter()
            .filter(|(k, _)| !PROMPT_KEYS.contains(&k.as_str()))
            .filter_map(|(k, v)| Some(json!({"name": k, "value": shown(v)?})))
            .take(MAX_INPUTS)
            .collect(),
    }
}

/// An input value as a row shows it: scalars as text, a URL as its file
/// name; lists, tables and long text are not shown.
fn shown(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) if is_url(s) => file_name(s),
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    (!text.is_empty() && text.chars().count() <= MAX_INPUT_CHARS && !text.contains('\n'))
        .then_some(text)
}

/// The last line of the log tail that reports progress or a metric
/// (`step 1000/1000 loss=0.1842`, a tqdm bar, `epoch 3`): how far it got.
fn progress_line(logs_tail: &str) -> Option<String> {
    static PROGRESS: LazyLock<regex_lite::Regex> = LazyLock::new(|| {
        regex_lite::Regex::new(
            r"(?i)\b(step|steps|epoch|iter|iteration)\b\s*[:=#]?\s*\d|\bloss\b\s*[:=]?\s*\d|\d+%\||\b\d+/\d+\b",
        )
        .expect("the progress pattern compiles")
    });
    logs_tail
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && PROGRESS.is_match(l))
        .map(|l| truncate_chars(l, 160))
}

/// Why it ended so, in a few words, for anything but success: the first
/// line of the error; how far a canceled run got; what aborted means.
fn reason(job: &Job, status: &Status, progress: Option<&str>, timing: &Timing) -> Option<String> {
    match status {
        Status::Failed => Some(
            job.error_message()
                .as_deref()
                .and_then(|e| e.lines().map(str::trim).find(|l| !l.is_empty()))
                .map(|l| truncate_chars(l, 160))
                .unwrap_or_else(|| "no error message".to_owned()),
        ),
        Status::Canceled => Some(match (progress, &timing.run) {
            (Some(p), _) => format!("canceled at “{}”", truncate_chars(p, 80)),
            (None, Some(run)) => format!("canceled after {run}"),
            (None, None) => "canceled before it started".to_owned(),
        }),
        Status::Aborted => Some("its deadline passed before it started (not billed)".to_owned()),
        _ => None,
    }
}

/// Run, queue (or boot) and total time, each human.
struct Timing {
    run: Option<String>,
    queue: Option<String>,
    total: Option<String>,
}

/// Seconds between two of the job's timestamps, when both are there and in
/// order.
fn between(a: Option<&Timestamp>, b: Option<&Timestamp>) -> Option<f64> {
    Some((b?.0 - a?.0).as_seconds_f64()).filter(|s| *s >= 0.0)
}

/// How long the job ran: Replicate's `predict_time`, else from its start to
/// its end. (`duration` and `timing.run` in the context.)
pub fn run_seconds(job: &Job) -> Option<f64> {
    let common = job.common();
    common
        .metrics
        .as_ref()
        .and_then(|m| m.predict_time)
        .or_else(|| between(common.started_at.as_ref(), common.completed_at.as_ref()))
}

fn timing(job: &Job) -> Timing {
    let common = job.common();
    let metrics = common.metrics.as_ref();
    let run = run_seconds(job);
    let total = metrics
        .and_then(|m| m.total_time)
        .or_else(|| between(common.created_at.as_ref(), common.completed_at.as_ref()));
    let queue = match (total, run) {
        (Some(total), Some(run)) if total >= run => Some(total - run),
        _ => between(common.created_at.as_ref(), common.started_at.as_ref()),
    }
    // Under a second of queueing is no news.
    .filter(|q| *q >= 1.0);
    let human = |s: Option<f64>| s.map(human_duration).filter(|h| !h.is_empty());
    Timing {
        run: human(run),
        queue: human(queue),
        total: human(total),
    }
}

/// What Replicate bills for the run, where it is known: the run time of a
/// job on a model (a deployment is billed by its instances' uptime), and
/// nothing for an aborted one.
fn billed(job: &Job, status: &Status, timing: &Timing) -> Option<String> {
    if *status == Status::Aborted {
        return Some("not billed".to_owned());
    }
    match job {
        Job::Prediction(p) if p.deployment.is_some() => None,
        _ => timing.run.clone(),
    }
}

/// A link that always leads somewhere: the job's page (`urls.web`, or
/// Replicate's `/p/<id>`, which serves predictions and trainings alike),
/// else the destination's or model's page.
fn web_url(job: &Job) -> String {
    let common = job.common();
    if let Some(web) = common
        .urls
        .as_ref()
        .and_then(|u| u.web.as_deref())
        .and_then(parsed_url)
    {
        return web;
    }
    let id_ok = !common.id.is_empty()
        && common
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if id_ok {
        return format!("https://replicate.com/p/{}", common.id);
    }
    let model_page = match job {
        Job::Training(t) => t.destination.clone().or_else(|| common.model.clone()),
        Job::Prediction(p) => p
            .deployment
            .as_ref()
            .map(|d| format!("deployments/{d}"))
            .or_else(|| common.model.clone()),
    };
    let safe = |p: &String| {
        p.split('/').count() >= 2
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    };
    match model_page.filter(safe) {
        Some(page) => format!("https://replicate.com/{page}"),
        None => "https://replicate.com/".to_owned(),
    }
}

/// When Replicate deletes the files of a job made through the API: an hour
/// after it ends (jobs from the website keep theirs). RFC 3339, for `date`.
fn expiry(job: &Job) -> Option<String> {
    let common = job.common();
    if common.source.as_deref() != Some("api") {
        return None;
    }
    let ended: OffsetDateTime = common.completed_at.as_ref()?.0;
    // None past year 9999: the template then says nothing of an expiry no
    // one will live to see.
    ended
        .checked_add(time::Duration::hours(1))?
        .format(&Rfc3339)
        .ok()
}

fn is_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

/// Whether the file a URL names is a picture, by its extension.
fn is_image(url: &str) -> bool {
    let lower = file_name(url).to_ascii_lowercase();
    [".png", ".jpg", ".jpeg", ".webp", ".gif"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

/// Text on one line: every run of whitespace becomes one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
