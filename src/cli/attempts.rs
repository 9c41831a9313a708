//! `replicate-relay deliveries --attempts ID`: every attempt at one
//! delivery (when, how long, how it ended, what was asked and what the
//! receiver answered), through the store's [`Admin`](crate::store::Admin)
//! door.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use super::events::format_time;
use crate::config::Config;
use crate::notify::exchange::Exchanges;
use crate::store::open_admin;

pub async fn show(config: &Config, id: i64, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_admin(&config.store)?;
    let Some(found) = store
        .attempts(id)
        .await
        .context("cannot read the delivery's attempts")?
    else {
        eprintln!("No delivery {id} (see `replicate-relay deliveries`).");
        return Ok(ExitCode::FAILURE);
    };
    let d = &found.delivery;
    let mut out = std::io::stdout().lock();
    if json {
        let attempts: Vec<serde_json::Value> = found
            .list
            .iter()
            .map(|a| {
                serde_json::json!({
                    "number": a.number,
                    "started_at": format_time(a.started_ms),
                    "duration_ms": a.duration_ms,
                    "outcome": a.outcome,
                    "error": a.error,
                    "status": a.status,
                    "exchanges": Exchanges::parse(&a.exchanges),
                })
            })
            .collect();
        let line = serde_json::json!({
            "id": d.id,
            "state": d.state.as_str(),
            "notifier": d.notifier,
            "route": d.route,
            "attempts": attempts,
            "message": found.message.as_deref().and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok()),
        });
        writeln!(out, "{line}")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "Delivery {} to `{}` (route `{}`): {}, {} attempt{}.",
        d.id,
        d.notifier,
        d.route,
        d.state.as_str(),
        d.attempts,
        if d.attempts == 1 { "" } else { "s" }
    )?;
    if found.list.is_empty() {
        writeln!(
            out,
            "No attempt recorded (none yet, or made by a release that did not record them)."
        )?;
    }
    for a in &found.list {
        writeln!(
            out,
            "\n#{} {} · {} ms · {}{}",
            a.number,
            format_time(a.started_ms),
            a.duration_ms,
            a.outcome,
            a.status.map(|s| format!(" · {s}")).unwrap_or_default()
        )?;
        if let Some(error) = &a.error {
            writeln!(out, "  {error}")?;
        }
        let seen = Exchanges::parse(&a.exchanges);
        if seen.left_out > 0 {
            writeln!(out, "  ({} earlier exchanges not kept)", seen.left_out)?;
        }
        for e in &seen.kept {
            let status = e.status.map_or("no answer".into(), |s| s.to_string());
            writeln!(out, "  {} → {status}", e.request)?;
            for line in e.answer.lines().filter(|l| !l.trim().is_empty()) {
                writeln!(out, "    {line}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
