//! # replicate-relay
//!
//! A daemon that receives Replicate webhooks, stores each one durably before
//! answering, and routes the final ones to its notifier kinds: Slack, email,
//! webhooks, the log, Discord, PagerDuty, Teams and ntfy. `docs/ARCHITECTURE.md`
//! follows one webhook through these modules.
//!
//! ## Layout — the data flow, one module per stage
//!
//! - [`intake`]: the HTTP front door (warp). Signature headers checked
//!   before the body is read, the body read within a memory budget shared by
//!   every unverified one, the Standard Webhooks signature checked over the
//!   raw bytes ([`signature`], a leaf module the config and the webhook
//!   notifier use too), JSON check, routing, then hands the event and its
//!   deliveries to the store and answers only after the commit.
//! - [`event`]: the typed prediction/training model and kind detection.
//! - [`store`]: the durable store and outbox behind a small trait, opened by
//!   [`store::open`]; [`store::sqlite`] (WAL, group commit) is the default,
//!   [`store::postgres`] serves several instances on one database.
//! - [`route`]: which routes match an event (pure; the rules themselves are
//!   read by [`config::routes`]); [`route::plan`] turns that into
//!   deliveries with their dedup key and expiry.
//! - [`render`]: the context a template sees, the display rule every
//!   payload string goes through, cutting to a limit, and handlebars
//!   templates per output format with a built-in fallback.
//! - [`dispatch`]: claims due deliveries, sends them, records the outcome.
//! - [`notify`]: one folder per notifier kind (its config, message,
//!   rendering and sending), listed once in [`notify::registry`]; each
//!   error transient or permanent.
//! - [`replicate`]: Replicate's HTTP API, with the account's token (one
//!   client: bounded, `Retry-After` honoured, the token to its host only).
//! - [`config`]: loading and validating the TOML config, all errors at once;
//!   [`live`]: what is built from it (compiled templates, senders) and what a
//!   reload swaps.
//! - [`listen`]: the socket (bound, or handed over by systemd), each
//!   connection's deadlines and the cap on how many are open, and TLS from
//!   certificate files or ACME.
//! - [`server`]: start (the store opened by [`store::open`], ports bound),
//!   reload and graceful shutdown; [`connect`]: the outbound HTTPS connector.
//! - [`cli`]: the `replicate-relay` subcommands; [`shutdown`]: stop signals;
//!   [`telemetry`]: metrics; [`supervise`]: restarting a task that panicked;
//!   [`clock`]: "now", one place.

#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod config;
pub mod connect;
pub mod dashboard;
pub mod dispatch;
pub mod event;
pub mod intake;
pub mod listen;
pub mod live;
pub mod notify;
pub mod render;
pub mod replicate;
pub mod route;
pub mod server;
pub mod shutdown;
pub mod signature;
pub mod store;
pub mod supervise;
pub mod telemetry;

/// Installs the process-wide rustls crypto provider (ring). Every TLS client in
/// the daemon (SMTP, Slack) uses rustls; exactly one provider must be installed
/// before the first one is built, or rustls panics. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
