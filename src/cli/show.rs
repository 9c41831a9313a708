//! `replicate-relay events show ID`: one job's events (found by job id,
//! webhook id or store number), each with every delivery it got, the
//! reason of each failure, and what a notifier reported: for an archive,
//! its manifest, file by file.

use std::io::Write;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::events::{format_time, write_table};
use crate::config::Config;
use crate::store::{self, Delivery, Found};

/// The most events one job shows (a job has a few: starting, processing,
/// its end).
const MAX_EVENTS: usize = 50;

pub async fn run(config: &Config, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let found = store::open_admin(&config.store)?
        .find(id, MAX_EVENTS)
        .await?;
    let mut out = std::io::stdout().lock();
    if found.is_empty() {
        writeln!(
            out,
            "No event of job or webhook `{id}` in {}; `replicate-relay events` lists the latest.",
            config.store.path.display()
        )?;
        return Ok(ExitCode::FAILURE);
    }
    for f in &found {
        if json {
            writeln!(out, "{}", as_json(f))?;
        } else {
            write_event(&mut out, f)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn as_json(f: &Found) -> Value {
    let e = &f.event;
    let body = serde_json::from_slice::<Value>(&e.body)
        .unwrap_or_else(|_| json!(String::from_utf8_lossy(&e.body)));
    json!({
        "seq": e.seq,
        "webhook_id": e.webhook_id,
        "source": crate::replicate::catch_up::source(&e.webhook_id),
        "kind": e.kind.as_str(),
        "id": e.object_id,
        "status": e.status.as_str(),
        "model": e.model,
        "query": e.query,
        "received_at": format_time(e.received_at_ms),
        "body": body,
        "deliveries": f.deliveries.iter().map(delivery_json).collect::<Vec<_>>(),
    })
}

fn delivery_json(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "route": d.route,
        "notifier": d.notifier,
        "state": d.state.as_str(),
        "attempts": d.attempts,
        "created_at": format_time(d.created_at_ms),
        "next_attempt_at": format_time(d.next_attempt_at_ms),
        "gives_up_at": format_time(d.expires_at_ms),
        "last_error": d.last_error,
        "after": d.after,
        "result": d.result.as_deref().and_then(|r| serde_json::from_str::<Value>(r).ok()),
    })
}

fn write_event(out: &mut impl Write, f: &Found) -> std::io::Result<()> {
    let e = &f.event;
    writeln!(
        out,
        "{} {}: {}{}",
        e.kind,
        e.object_id,
        e.status,
        e.model
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    )?;
    writeln!(
        out,
        "  received {} UTC as event {}, {} {}{}",
        format_time(e.received_at_ms),
        e.seq,
        match crate::replicate::catch_up::source(&e.webhook_id) {
            "catch-up" => "caught up as",
            _ => "webhook",
        },
        e.webhook_id,
        if e.query.is_empty() {
            String::new()
        } else {
            format!(", query {}", e.query)
        }
    )?;
    if f.deliveries.is_empty() {
        writeln!(out, "  no deliveries: no route matched it\n")?;
        return Ok(());
    }
    writeln!(out)?;
    let header = [
        "  ID",
        "ROUTE",
        "NOTIFIER",
        "STATE",
        "ATTEMPTS",
        "LAST ERROR",
    ]
    .map(String::from);
    let rows: Vec<[String; 6]> = f
        .deliveries
        .iter()
        .map(|d| {
            [
                format!("  {}", d.id),
                d.route.clone(),
                d.notifier.clone(),
                d.state.as_str().to_owned(),
                d.attempts.to_string(),
                d.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    write_table(out, &header, &rows)?;
    for d in &f.deliveries {
        if let Some(manifest) = d
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str::<Value>(r).ok())
        {
            writeln!(out)?;
            write_result(out, &d.notifier, &manifest)?;
        }
    }
    writeln!(out)
}

/// What a notifier reported: an archive's manifest as a list of files, a
/// pipeline's prediction by its id, anything else as JSON.
fn write_result(out: &mut impl Write, notifier: &str, result: &Value) -> std::io::Result<()> {
    if let Some(id) = result["prediction"].as_str() {
        let found = if result["found_by_listing"] == Value::Bool(true) {
            ", found by listing after an interrupted create"
        } else {
            ""
        };
        let web = result["web_url"].as_str().unwrap_or_default();
        return writeln!(out, "  {notifier} created prediction {id} ({web}){found}");
    }
    let (Some(files), Some(folder)) = (result["files"].as_array(), result["folder"].as_str())
    else {
        return writeln!(out, "  {notifier} reported: {result}");
    };
    let to = result["to"].as_str().unwrap_or("");
    writeln!(
        out,
        "  Archived by {notifier}: {} file{}, {} bytes, in {to}{folder}",
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        result["total_bytes"]
    )?;
    let header = ["  FILE", "BYTES", "SHA-256", "FROM"].map(String::from);
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let rows: Vec<[String; 4]> = files
        .iter()
        .map(|f| {
            let path = text(&f["path"]);
            let name = path.strip_prefix(folder).unwrap_or(&path).to_owned();
            [
                format!("  {name}"),
                f["bytes"].to_string(),
                text(&f["sha256"]),
                crate::notify::http::shown_url(&text(&f["source"])),
            ]
        })
        .collect();
    write_table(out, &header, &rows)?;
    writeln!(out, "  + job.json, manifest.json")
}
