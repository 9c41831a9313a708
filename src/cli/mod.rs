//! The command line. Each subcommand is a function the binary calls after
//! parsing; errors come back as `anyhow` with context saying what to do, and are
//! printed whole by `main`.

mod attempts;
mod copy;
mod deliveries;
mod events;
mod gallery;
mod preview;
mod remote;
mod show;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::clock::SystemClock;
use crate::config::{self, Config};
use crate::server;
use crate::shutdown::{Signal, Signals};

/// Where the packaged service keeps its config.
pub const DEFAULT_CONFIG: &str = "/etc/replicate-relay/relay.toml";

#[derive(Debug, Parser)]
#[command(
    name = "replicate-relay",
    version,
    about = "Receives Replicate webhooks, stores them durably, and turns the final ones into notifications."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as plain key=value text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

/// How log lines are written (to stderr; the journal under systemd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
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
    /// Write every notifier kind's template rendered against every sample
    /// event into a directory, to look at before changing a template.
    Preview {
        /// Where to write the files (created if needed); open DIR/index.html.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Your templates directory (as `[templates] dir`), instead of the
        /// shipped templates.
        #[arg(long, value_name = "DIR")]
        templates: Option<PathBuf>,
    },
    /// List deliveries in the outbox: what, where, attempts, next attempt, last error.
    Deliveries {
        #[command(flatten)]
        config: ConfigArg,
        /// Only dead ones (given up: permanent error, or retried until max_age).
        #[arg(long, conflicts_with = "pending")]
        dead: bool,
        /// Only those still waiting to be sent.
        #[arg(long, conflicts_with = "held")]
        pending: bool,
        /// Only those held for a notifier that is not in the config.
        #[arg(long, conflicts_with = "dead")]
        held: bool,
        /// How many to show, newest first.
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Every attempt at delivery ID: when, how long, how it ended, and
        /// what the receiver answered.
        #[arg(long, value_name = "ID", conflicts_with_all = ["dead", "pending", "held"])]
        attempts: Option<i64>,
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
    /// POST a payload to URL exactly as Replicate does: fresh webhook-id and
    /// timestamp, signed with the configured secret. Tests a deployment end to end.
    Send {
        /// A webhook body (a prediction or training object as JSON).
        payload: PathBuf,
        /// Where to send it, e.g. https://relay.example.org/hooks/replicate?team=vision
        #[arg(long)]
        url: String,
        /// Trust the CA certificates in this PEM file instead of the
        /// system's (an endpoint with a private CA's certificate).
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Get the account's webhook signing secret from Replicate (reads
    /// REPLICATE_API_TOKEN) and write it to a file only its owner can read.
    FetchSecret {
        /// The file to write (default: the config's verify.secret_file).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Replicate's API base URL.
        #[arg(long, default_value = "https://api.replicate.com")]
        api_url: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Work on the store itself.
    #[command(subcommand)]
    Store(StoreCommand),
    /// List the most recently stored events; `events show ID` shows one job.
    Events {
        #[command(subcommand)]
        show: Option<EventsCommand>,
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

/// `replicate-relay events …`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// One job's events (by job id, webhook id or event number), each with
    /// its deliveries, their errors, and an archive's files.
    Show {
        /// A job id (`p1a2b3…`), a webhook id (`msg_…`) or an event number.
        id: String,
        #[command(flatten)]
        config: ConfigArg,
        /// One JSON object per event, with its body and deliveries.
        #[arg(long)]
        json: bool,
    },
}

/// `replicate-relay store …`
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy the config's store (events, and deliveries still to send) into
    /// another: a SQLite file into PostgreSQL, or back. Every daemon on
    /// the source must be stopped; a copy can run again (what is there
    /// already is not copied twice).
    Copy {
        #[command(flatten)]
        config: ConfigArg,
        /// The target: postgres://user@host/db?sslmode=… or a SQLite file's path.
        #[arg(long, value_name = "URL_OR_PATH")]
        to: String,
        /// A file holding the target database's password (kept out of the URL).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(arg) => serve(arg).await,
        Command::Check(arg) => Ok(check(arg).await),
        Command::Route {
            payload,
            config,
            query,
            explain,
            format,
        } => preview::run(&load(&config)?, &payload, &query, explain, format),
        Command::Preview { out, templates } => gallery::run(&out, templates.as_deref()),
        Command::Events {
            show: Some(EventsCommand::Show { id, config, json }),
            ..
        } => show::run(&load(&config)?, &id, json).await,
        Command::Events {
            show: None,
            config,
            limit,
            json,
        } => events::run(&load(&config)?, limit, json).await,
        Command::Store(StoreCommand::Copy {
            config,
            to,
            password_file,
        }) => copy::run(&load(&config)?, &to, password_file.as_deref()).await,
        Command::Deliveries {
            config,
            dead,
            pending,
            held,
            limit,
            json,
            attempts,
        } => {
            if let Some(id) = attempts {
                return attempts::show(&load(&config)?, id, json).await;
            }
            let filter = match (dead, pending, held) {
                (true, _, _) => crate::store::DeliveryFilter::Dead,
                (_, true, _) => crate::store::DeliveryFilter::Pending,
                (_, _, true) => crate::store::DeliveryFilter::Held,
                _ => crate::store::DeliveryFilter::All,
            };
            deliveries::list(&load(&config)?, filter, limit, json).await
        }
        Command::Retry { id, dead, config } => deliveries::retry(&load(&config)?, id, dead).await,
        Command::Send {
            payload,
            url,
            ca_file,
            config,
        } => remote::send(&load(&config)?, &payload, &url, ca_file.as_deref()).await,
        Command::FetchSecret {
            output,
            api_url,
            config,
        } => {
            let Some(output) = output.or_else(|| remote::default_output(&config.config)) else {
                anyhow::bail!(
                    "say where to write the secret: --output PATH (or set verify.secret_file in {})",
                    config.config.display()
                );
            };
            remote::fetch_secret(&output, &api_url).await
        }
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
    let mut signals = Signals::install()?;
    let running = server::start(&config, Arc::new(SystemClock)).await?;
    // Only now — port bound, store open — is the daemon ready.
    notify_systemd(&[sd_notify::NotifyState::Ready]);
    let mut shutdown_timeout = config.server.shutdown_timeout;

    // Ping the watchdog from this loop: if it stops turning, systemd restarts us.
    let watchdog = sd_notify::watchdog_enabled();
    let mut ping =
        tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |every| every / 2));
    let signal = loop {
        tokio::select! {
            _ = ping.tick(), if watchdog.is_some() => {
                notify_systemd(&[sd_notify::NotifyState::Watchdog]);
            }
            signal = signals.next() => match signal {
                Signal::Hangup => {
                    notify_systemd(&[sd_notify::NotifyState::Reloading]);
                    if let Some(timeout) = reload(&running, &arg) {
                        shutdown_timeout = timeout;
                    }
                    notify_systemd(&[sd_notify::NotifyState::Ready]);
                }
                stop => break stop,
            },
        }
    };
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    tracing::info!(message = "Stopping: draining in-flight requests and sends.", %signal, timeout = ?shutdown_timeout);
    if running.shutdown(shutdown_timeout).await {
        tracing::info!("Stopped cleanly.");
    }
    Ok(ExitCode::SUCCESS)
}

/// Re-reads and fully validates the config file and templates; swaps them in
/// only if all is well, else logs every problem and keeps the running config.
/// Returns the new shutdown timeout when the reload took.
fn reload(running: &server::Running, arg: &ConfigArg) -> Option<Duration> {
    let problems = match config::load(&arg.config) {
        Ok(config) => {
            let template_problems =
                crate::notify::registry::check_templates(config.templates.dir.as_deref());
            if template_problems.is_empty() {
                for warning in &config.warnings {
                    tracing::warn!(message = "Config warning.", %warning);
                }
                let timeout = config.server.shutdown_timeout;
                match running.reload(config) {
                    Ok(warnings) => {
                        for warning in warnings {
                            tracing::warn!(message = "Reload warning.", %warning);
                        }
                        tracing::info!(message = "Config reloaded.", file = %arg.config.display());
                        return Some(timeout);
                    }
                    Err(e) => vec![e.to_string()],
                }
            } else {
                crate::telemetry::config_reload(false);
                template_problems.iter().map(ToString::to_string).collect()
            }
        }
        Err(errors) => {
            crate::telemetry::config_reload(false);
            errors.problems.iter().map(ToString::to_string).collect()
        }
    };
    for problem in &problems {
        tracing::error!(message = "Config problem.", file = %arg.config.display(), %problem);
    }
    tracing::error!(
        message = "Reload refused; the running config stays in effect. Fix the problems above and reload again.",
        problems = problems.len()
    );
    None
}

/// Tells systemd (when it started us with Type=notify) about a state change.
fn notify_systemd(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(message = "Cannot notify systemd.", error = %e);
    }
}

/// What the store holds for notifiers this config does not have: a reload
/// or start with it holds those deliveries until a notifier of that name is
/// back. Nothing when there is no store yet.
async fn held_for(config: &Config) -> Vec<String> {
    if !config.store.path.exists() {
        return Vec::new();
    }
    let waiting = match crate::store::open_admin(&config.store) {
        Ok(store) => store.waiting_by_notifier().await,
        Err(e) => Err(e),
    };
    match waiting {
        Ok(waiting) => waiting
            .into_iter()
            .filter(|(name, _)| !config.notifiers.contains_key(name))
            .map(|(name, n)| {
                format!(
                    "{n} deliveries wait for notifier `{name}`, which is not in this config: they are held (kept, not sent) until a notifier of that name is back (`replicate-relay deliveries --held`)"
                )
            })
            .collect(),
        Err(e) => vec![format!(
            "cannot read the store to see what waits for a notifier: {e}"
        )],
    }
}

async fn check(arg: ConfigArg) -> ExitCode {
    let config = match config::load(&arg.config) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    // Compiling is part of loading; rendering every template against samples of
    // every kind and status, in strict mode, is what finds misspelled variables.
    let mut problems = crate::notify::registry::check_templates(config.templates.dir.as_deref());
    let mut notes = Vec::new();
    match &config.server.tls {
        Some(config::TlsConfig::Files(tls)) => {
            if let Err(e) = crate::listen::tls::load(&tls.cert_file, &tls.key_file) {
                let key = if e.file() == tls.key_file {
                    "server.tls.key_file"
                } else {
                    "server.tls.cert_file"
                };
                problems.push(config::Problem {
                    key: key.into(),
                    message: e.to_string(),
                });
            }
        }
        Some(config::TlsConfig::Acme(acme)) if config.store.postgres.is_some() => notes.push(format!(
            "ACME: the certificate for {} is kept in the PostgreSQL store and shared by every instance (one orders at a time; a store with none takes this host's cached one from {})",
            acme.domains.join(", "),
            acme.cache_dir.display()
        )),
        Some(config::TlsConfig::Acme(acme)) => match crate::listen::acme::cached(acme).await {
            Ok(note) => notes.push(note),
            Err(message) => problems.push(config::Problem {
                key: "server.tls.acme.cache_dir".into(),
                message,
            }),
        },
        None => {}
    }
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
    for note in &notes {
        println!("  {note}");
    }
    for warning in &config.warnings {
        println!("  warning: {warning}");
    }
    for warning in held_for(&config).await {
        println!("  warning: {warning}");
    }
    ExitCode::SUCCESS
}
