//! `replicate-relay deliveries` and `retry`: what the outbox holds, and requeuing
//! by hand, through the store's [`Admin`](crate::store::Admin) door beside a
//! running daemon (which picks requeued deliveries up within a second).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use super::events::{format_time, write_table};
use crate::clock::now_ms;
use crate::config::Config;
use crate::render::helpers::truncate_chars;
use crate::store::{DeliveryFilter, DeliveryState, RetrySelector, open_admin};

pub async fn list(
    config: &Config,
    filter: DeliveryFilter,
    limit: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = open_admin(&config.store)?;
    let rows = store
        .deliveries(filter, limit)
        .await
        .context("cannot read the outbox")?;
    let mut out = std::io::stdout().lock();
    if json {
        for l in &rows {
            let d = &l.delivery;
            let line = serde_json::json!({
                "id": d.id,
                "state": d.state.as_str(),
                "attempts": d.attempts,
                "next_attempt_at": (d.state == DeliveryState::Pending).then(|| format_time(d.next_attempt_at_ms)),
                "created_at": format_time(d.created_at_ms),
                "notifier": d.notifier,
                "route": d.route,
                "kind": l.kind.as_str(),
                "event_id": l.object_id,
                "event_status": l.status.as_str(),
                "last_error": d.last_error,
            });
            writeln!(out, "{line}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        let what = match filter {
            DeliveryFilter::All => "No deliveries yet.",
            DeliveryFilter::Pending => "Nothing pending: every delivery is delivered or dead.",
            DeliveryFilter::Dead => "No dead deliveries.",
            DeliveryFilter::Held => "Nothing held: every delivery's notifier is in the config.",
        };
        writeln!(out, "{what}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let now = now_ms();
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|l| {
            let d = &l.delivery;
            let next = match d.state {
                DeliveryState::Pending if d.next_attempt_at_ms <= now => "now".to_owned(),
                DeliveryState::Pending => format!(
                    "in {}",
                    humantime::format_duration(std::time::Duration::from_secs(
                        ((d.next_attempt_at_ms - now) / 1000).max(1) as u64
                    ))
                ),
                DeliveryState::Sending => "sending".into(),
                DeliveryState::Held => "when its notifier is back".into(),
                _ => "-".into(),
            };
            [
                d.id.to_string(),
                d.state.as_str().to_owned(),
                d.attempts.to_string(),
                next,
                d.notifier.clone(),
                d.route.clone(),
                format!("{} {} {}", l.kind, l.object_id, l.status),
                truncate_chars(d.last_error.as_deref().unwrap_or("-"), 100).replace('\n', " "),
            ]
        })
        .collect();
    let header = [
        "ID",
        "STATE",
        "ATTEMPTS",
        "NEXT",
        "NOTIFIER",
        "ROUTE",
        "EVENT",
        "LAST ERROR",
    ]
    .map(String::from);
    write_table(&mut out, &header, &table)?;
    if filter == DeliveryFilter::Held {
        writeln!(
            out,
            "\nHeld until a notifier of that name is in the config again: add it back and reload, and they are sent."
        )?;
    }
    if filter == DeliveryFilter::Dead {
        writeln!(
            out,
            "\nRequeue with `replicate-relay retry ID` or `replicate-relay retry --dead`."
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn retry(config: &Config, id: Option<i64>, dead: bool) -> anyhow::Result<ExitCode> {
    let selector = match (id, dead) {
        (Some(id), false) => RetrySelector::One(id),
        (None, true) => RetrySelector::AllDead,
        _ => {
            anyhow::bail!("give a delivery ID or --dead (see `replicate-relay deliveries --dead`)")
        }
    };
    let store = open_admin(&config.store)?;
    let max_age = config.delivery.max_age.as_millis() as i64;
    let n = store
        .retry(selector.clone(), now_ms(), max_age)
        .await
        .context("cannot requeue")?;
    match (selector, n) {
        (RetrySelector::One(id), 0) => {
            eprintln!(
                "No delivery {id}, or it is being sent right now (see `replicate-relay deliveries`)."
            );
            return Ok(ExitCode::FAILURE);
        }
        (_, n) => println!(
            "Requeued {n} deliver{}; a running daemon sends {} within a second.",
            if n == 1 { "y" } else { "ies" },
            if n == 1 { "it" } else { "them" }
        ),
    }
    Ok(ExitCode::SUCCESS)
}
