//! The command line. Each subcommand is a function the binary calls after
//! parsing; errors come back as `anyhow` with context saying what to do, and are
//! printed whole by `main`.

mod deliveries;
mod events;
mod preview;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};
use crate::intake::signature::SystemClock;
use crate::{render, server, shutdown};

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

/// Output format of the inspection commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: receive, verify and store webhooks.
    Serve(ConfigArg),
    /// Validate the config, routes and templates; list every problem at once (exit 1 if any).
    Check(ConfigArg),
    /// Show which routes a payload matches and the messages it would send. Sends nothing.
    Route {
        /// A webhook body (a prediction or training object as JSON).
        payload: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
        /// A query parameter of the webhook URL, as k=v (repeatable), e.g. --query team=vision.
        #[arg(long = "query", short = 'q', value_name = "K=V")]
        query: Vec<String>,
        /// Also say why each other route did not match.
        #[arg(long)]
        explain: bool,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// List deliveries in the outbox: what, where, attempts, next attempt, last error.
    Deliveries {
        #[command(flatten)]
        config: ConfigArg,
        /// Only dead ones (given up: permanent error, or retried until max_age).
        #[arg(long, conflicts_with = "pending")]
        dead: bool,
        /// Only those still waiting to be sent.
        #[arg(long)]
        pending: bool,
        /// How many to show, newest first.
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Requeue a delivery by ID (even a delivered one: a deliberate resend), or all dead ones.
    Retry {
        /// The delivery ID (from `deliveries`).
        #[arg(required_unless_present = "dead", conflicts_with = "dead")]
        id: Option<i64>,
        /// Requeue every dead delivery.
        #[arg(long)]
        dead: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
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
        Command::Route {
            payload,
            config,
            query,
            explain,
            format,
        } => preview::run(&load(&config)?, &payload, &query, explain, format),
        Command::Events {
            config,
            limit,
            json,
        } => events::run(&load(&config)?, limit, json),
        Command::Deliveries {
            config,
            dead,
            pending,
            limit,
            json,
        } => {
            let filter = match (dead, pending) {
                (true, _) => crate::store::DeliveryFilter::Dead,
                (_, true) => crate::store::DeliveryFilter::Pending,
                _ => crate::store::DeliveryFilter::All,
            };
            deliveries::list(&load(&config)?, filter, limit, json)
        }
        Command::Retry { id, dead, config } => deliveries::retry(&load(&config)?, id, dead),
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
    let config = match config::load(&arg.config) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    // Compiling is part of loading; rendering every template against samples of
    // every kind and status, in strict mode, is what finds misspelled variables.
    let problems = render::check(config.templates.dir.as_deref());
    if !problems.is_empty() {
        let errors = config::ConfigErrors {
            file: arg.config.clone(),
            problems,
        };
        eprintln!("{errors}");
        return ExitCode::FAILURE;
    }
    println!(
        "{}: OK ({} route{}, {} notifier{}, templates {})",
        arg.config.display(),
        config.routes.len(),
        if config.routes.len() == 1 { "" } else { "s" },
        config.notifiers.len(),
        if config.notifiers.len() == 1 { "" } else { "s" },
        config
            .templates
            .dir
            .as_ref()
            .map(|d| format!("from {}", d.display()))
            .unwrap_or_else(|| "built in".into())
    );
    for warning in &config.warnings {
        println!("  warning: {warning}");
    }
    ExitCode::SUCCESS
}
