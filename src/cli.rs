//! The command line: `serve`, `check`, `events`. Each command is a function the
//! binary calls after parsing; errors come back as `anyhow` with context saying
//! what to do, and are printed whole by `main`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config};
use crate::intake::signature::SystemClock;
use crate::{server, shutdown, store};

/// Where the packaged service keeps its config.
pub const DEFAULT_CONFIG: &str = "/etc/replicate-relay/relay.toml";

/// How long a stopping daemon waits for in-flight requests.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(
    name = "replicate-relay",
    version,
    about = "Receives Replicate webhooks, stores them durably, and turns the final ones into notifications."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The config file (TOML). Every key can be overridden by RELAY__SECTION__KEY.
    #[arg(long, short, env = "RELAY_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: receive, verify and store webhooks.
    Serve(ConfigArg),
    /// Validate the config and list every problem at once (exit 1 if any).
    Check(ConfigArg),
    /// List the most recently stored events.
    Events {
        #[command(flatten)]
        config: ConfigArg,
        /// How many events to show.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(arg) => serve(arg).await,
        Command::Check(arg) => Ok(check(arg)),
        Command::Events {
            config,
            limit,
            json,
        } => events(config, limit, json),
    }
}

fn load(arg: &ConfigArg) -> anyhow::Result<Config> {
    let config = config::load(&arg.config)?;
    Ok(config)
}

async fn serve(arg: ConfigArg) -> anyhow::Result<ExitCode> {
    let config = load(&arg)?;
    for warning in &config.warnings {
        tracing::warn!(message = "Config warning.", %warning);
    }
    let running = server::start(&config, Arc::new(SystemClock)).await?;
    let signal = shutdown::signal().await;
    tracing::info!(message = "Stopping: draining in-flight requests.", %signal);
    if running.shutdown(DRAIN_DEADLINE).await {
        tracing::info!("Stopped cleanly.");
    }
    Ok(ExitCode::SUCCESS)
}

fn check(arg: ConfigArg) -> ExitCode {
    match config::load(&arg.config) {
        Ok(config) => {
            println!("{}: OK", arg.config.display());
            for warning in &config.warnings {
                println!("  warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

fn events(arg: ConfigArg, limit: usize, json: bool) -> anyhow::Result<ExitCode> {
    let config = load(&arg)?;
    let events = store::sqlite::read_recent(&config.store.path, limit)?;
    let mut out = std::io::stdout().lock();
    if json {
        for e in &events {
            let line = serde_json::json!({
                "seq": e.seq,
                "received_at": format_time(e.received_at_ms),
                "kind": e.kind,
                "id": e.object_id,
                "status": e.status,
                "model": e.model,
                "webhook_id": e.webhook_id,
                "query": e.query,
            });
            writeln!(out, "{line}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if events.is_empty() {
        writeln!(
            out,
            "No events stored yet in {}.",
            config.store.path.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 6]> = events
        .iter()
        .map(|e| {
            [
                format_time(e.received_at_ms),
                e.kind.clone(),
                e.status.clone(),
                e.object_id.clone(),
                e.model.clone().unwrap_or_else(|| "-".into()),
                e.webhook_id.clone(),
            ]
        })
        .collect();
    let header = [
        "RECEIVED (UTC)",
        "KIND",
        "STATUS",
        "ID",
        "MODEL",
        "WEBHOOK-ID",
    ]
    .map(String::from);
    write_table(&mut out, &header, &rows)?;
    Ok(ExitCode::SUCCESS)
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn write_table<const N: usize>(
    out: &mut impl Write,
    header: &[String; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.each_ref().map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// `2026-11-20 14:03:15` in UTC.
fn format_time(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_line_up() {
        let header = ["A", "LONG HEADER", "C"].map(String::from);
        let rows = vec![["xxxx", "y", "last"].map(String::from)];
        let mut out = Vec::new();
        write_table(&mut out, &header, &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A     LONG HEADER  C\nxxxx  y            last\n"
        );
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(format_time(1_795_183_396_000), "2026-11-20 14:03:16");
    }
}
