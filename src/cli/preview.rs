//! `replicate-relay route PAYLOAD.json`: what would happen to this event — the
//! kind, which routes match (and with `--explain` why the others do not), and
//! every message fully rendered. Sends nothing, so routes and templates can be
//! tried before an incident rather than during one.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use super::OutputFormat;
use crate::config::Config;
use crate::event::Event;
use crate::notify;
use crate::render::Message;
use crate::route::{self, Verdict};

pub fn run(
    config: &Config,
    payload: &Path,
    query: &[String],
    explain: bool,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let body = std::fs::read(payload)
        .with_context(|| format!("cannot read the payload {}", payload.display()))?;
    let mut pairs = form_urlencoded::Serializer::new(String::new());
    for q in query {
        let (k, v) = q
            .split_once('=')
            .with_context(|| format!("--query {q}: write it as key=value"))?;
        pairs.append_pair(k, v);
    }
    let query = pairs.finish();
    let event = Event::from_body(&body, &query).with_context(|| {
        format!(
            "{} is not a webhook body the daemon would accept",
            payload.display()
        )
    })?;

    let templates = crate::live::templates(config)?;
    let verdicts = route::explain(&config.routes, &event);
    let mut messages = Vec::new();
    for (r, verdict) in &verdicts {
        if *verdict != Verdict::Matched {
            continue;
        }
        for name in &r.notify {
            let notifier = &config.notifiers[name];
            let message = notify::message(&templates, notifier, &r.name, &event, &body, None);
            messages.push((r.name.as_str(), notifier, message));
        }
    }

    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Json => {
            let report = json!({
                "kind": event.kind.as_str(),
                "id": event.job().common().id,
                "status": event.status.as_str(),
                "final": event.status.is_terminal(),
                "routes": verdicts.iter().map(|(r, v)| {
                    let (matched, reason) = match v {
                        Verdict::Matched => (true, None),
                        Verdict::NoMatch(why) | Verdict::Shadowed(why) => (false, Some(why.clone())),
                    };
                    let lifecycle = (matched && r.lifecycle).then(|| life_step(event.status.is_terminal()));
                    let digest = matched.then(|| group_step(r, &event)).flatten();
                    json!({"name": r.name, "matched": matched, "reason": reason, "notify": r.notify, "lifecycle": lifecycle, "digest": digest})
                }).collect::<Vec<_>>(),
                "messages": messages.iter().map(|(route, n, m)| message_json(route, n, m.as_ref())).collect::<Vec<_>>(),
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        }
        OutputFormat::Text => {
            let c = event.job().common();
            writeln!(
                out,
                "{} {} {} ({}), model {}",
                event.kind,
                c.id,
                event.status,
                if event.status.is_terminal() {
                    "final"
                } else {
                    "not final"
                },
                c.model.as_deref().unwrap_or("unknown")
            )?;
            writeln!(out)?;
            if config.routes.is_empty() {
                writeln!(
                    out,
                    "No routes are configured: add [[routes]] to {}.",
                    config.file.display()
                )?;
            }
            for (r, verdict) in &verdicts {
                match verdict {
                    Verdict::Matched if r.lifecycle => writeln!(
                        out,
                        "  ✓ {} → {} (lifecycle: {})",
                        r.name,
                        r.notify.join(", "),
                        life_step(event.status.is_terminal())
                    )?,
                    Verdict::Matched => match group_step(r, &event) {
                        Some(step) => writeln!(
                            out,
                            "  ✓ {} → {} (digest: {step})",
                            r.name,
                            r.notify.join(", ")
                        )?,
                        None => writeln!(out, "  ✓ {} → {}", r.name, r.notify.join(", "))?,
                    },
                    Verdict::NoMatch(why) | Verdict::Shadowed(why) if explain => {
                        writeln!(out, "  ✗ {}: {why}", r.name)?
                    }
                    _ => {}
                }
            }
            if messages.is_empty() {
                writeln!(out, "\nNo route matches: nothing would be sent.")?;
                if !explain && !config.routes.is_empty() {
                    writeln!(out, "(--explain says why each route did not match)")?;
                }
            }
            for (route, notifier, message) in &messages {
                writeln!(
                    out,
                    "\n━━ {route} → {} ({}) ━━",
                    notifier.name,
                    notifier.settings.kind().name()
                )?;
                if let Some(why) = message.fallback() {
                    writeln!(
                        out,
                        "⚠ the template failed, so the built-in message below would be sent: {why}"
                    )?;
                }
                write_message(&mut out, notifier, message.as_ref())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_message(
    out: &mut impl Write,
    notifier: &crate::config::Notifier,
    message: &dyn Message,
) -> std::io::Result<()> {
    for line in notifier.settings.describe() {
        writeln!(out, "{line}")?;
    }
    writeln!(out, "{}", message.preview())
}

fn message_json(route: &str, notifier: &crate::config::Notifier, message: &dyn Message) -> Value {
    let mut v = json!({
        "route": route,
        "notifier": notifier.name,
        "type": notifier.settings.kind().name(),
        "fallback": message.fallback(),
    });
    if let (Some(v), Value::Object(fields)) = (v.as_object_mut(), message.preview_json()) {
        v.extend(fields);
    }
    v
}

/// What a lifecycle route does with a job's webhook.
fn life_step(is_final: bool) -> &'static str {
    if is_final {
        "the job's end updates its start message and replies in its thread"
    } else {
        "the job's first webhook posts its start message; later ones add nothing"
    }
}

/// What a grouped route does with `event`: the group it joins and when
/// the digest goes, or why it goes at once.
fn group_step(route: &crate::route::Route, event: &crate::event::Event) -> Option<String> {
    let grouping = route.group.as_ref()?;
    let wait = humantime::format_duration(grouping.wait);
    let max_wait = humantime::format_duration(grouping.max_wait);
    if !event.status.is_terminal() {
        return Some("not final, so sent at once".into());
    }
    let mut values = Vec::new();
    for path in &grouping.by {
        match crate::route::lookup(event, path).filter(|v| !v.is_null()) {
            Some(value) => values.push(format!("{path} = {value}")),
            None => return Some(format!("no {path}, so sent at once")),
        }
    }
    Some(format!(
        "held with {}, sent when no job of the group came for {wait}, {max_wait} after the first at most",
        values.join(", ")
    ))
}
