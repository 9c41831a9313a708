//! The PostgreSQL store, for several instances on one database (SQLite stays
//! the embedded default for one host).
//!
//! `tokio-postgres` with a `deadpool-postgres` pool: both fit this crate's
//! rust-version and tokio, TLS goes through rustls on ring
//! (`tokio-postgres-rustls`) like every other connection of the daemon, and
//! queries are checked at run time, so building needs no database (`sqlx`'s
//! macros would, and its SQLite would link a second one beside rusqlite).
//!
//! - An insert is durable at its 2xx: the commit is acknowledged by the
//!   server, `synchronous_commit` as the server has it (on by default).
//!   Concurrent inserts share one transaction ([`writer`]).
//! - Two instances receiving the same retry store it once: the webhook id is
//!   unique, and so is (job and final status, route, notifier).
//! - Claims take rows `FOR UPDATE SKIP LOCKED` and hold a lease, so one
//!   instance sends a delivery at a time and no transaction is open across a
//!   send ([`outbox`]).
//! - New deliveries wake every instance through `LISTEN`/`NOTIFY`, on a
//!   connection of its own (a pooled one's notifications are dropped), with
//!   polling as the fallback.
//! - The ACME account, certificate and challenge answers are files every
//!   instance reads, and one order at a time holds a leased lock ([`shared`]).
//! - The command line reads and requeues on a pool of its own ([`admin`]).

mod admin;
mod browse;
mod export;
mod find;
mod group;
mod outbox;
pub mod schema;
pub use admin::PostgresAdmin;
mod shared;
mod state;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::future::BoxFuture;
use tokio::sync::{Notify, mpsc};

use super::error::Cause;
use super::{Claimed, Inserted, NewEvent, OutboxStats, Outcome, Recovered, Store, StoreError};

/// How many connections the pool keeps at most.
const POOL_SIZE: usize = 16;
/// How long connecting, waiting for a pooled connection, or one statement
/// may take: a server that does not answer (a partition drops packets
/// rather than refusing) must turn into a 503 while Replicate still waits
/// for an answer, not hold the request for the system's TCP timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The channel new deliveries are announced on.
const CHANNEL: &str = "relay_deliveries";
/// How long [`Store::deliveries_arrived`] waits for an announcement before
/// the dispatcher looks anyway (a lost connection, another writer).
const POLL: Duration = Duration::from_secs(2);

/// Where and how to reach the database: `[store] url`, a password kept
/// apart from it, and this instance's name.
pub use crate::config::PostgresConfig as Target;

impl Target {
    /// The connection settings, with the password put in, for a session
    /// that names itself `application` (what `store copy` looks for).
    fn config(&self, application: &str) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
        let mut config =
            tokio_postgres::Config::from_str(&crate::config::postgres_url(self.url.expose()))?;
        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        config.application_name(application);
        config.connect_timeout(CONNECT_TIMEOUT);
        config.options(format!(
            "-c statement_timeout={}",
            STATEMENT_TIMEOUT.as_millis()
        ));
        Ok(config)
    }

    /// The database as messages show it: host, port and name, no password.
    pub fn shown(&self) -> String {
        crate::notify::http::shown_url(self.url.expose())
    }
}

/// The TLS every connection to the server uses when `sslmode` asks for it:
/// rustls on ring with the system's roots.
fn tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports TLS 1.2 and 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

fn open_error(target: &Target, cause: Cause) -> StoreError {
    StoreError::Open {
        path: target.shown(),
        cause,
    }
}

fn read_error(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Read(Cause::new(e))
}

fn write_error(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Write(Cause::new(e))
}

/// How a daemon's sessions name themselves: the prefix, then the instance
/// (PostgreSQL keeps 63 bytes of it).
const DAEMON: &str = "replicate-relay ";

/// How the command line's sessions name themselves.
const COMMAND_LINE: &str = "replicate-relay-cli";

fn daemon_name(target: &Target) -> String {
    let mut name = format!("{DAEMON}{}", target.instance);
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// The pool for `target`, its sessions named `application`.
fn pool(target: &Target, application: &str) -> Result<Pool, StoreError> {
    let config = target
        .config(application)
        .map_err(|e| open_error(target, Cause::explained("the store url", e)))?;
    let manager = Manager::from_config(
        config,
        tls(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| open_error(target, Cause::explained("the connection pool", e)))
}

/// The daemon's store on PostgreSQL.
pub struct PostgresStore {
    admin: PostgresAdmin,
    /// Inserts waiting for the writer; `None` once closed.
    writes: std::sync::Mutex<Option<mpsc::Sender<writer::Pending>>>,
    writer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    listener: tokio::task::JoinHandle<()>,
    /// Wakes the dispatcher (the one waiter): `notify_one` keeps a permit,
    /// so deliveries that arrive while it is busy are not missed.
    arrived: Arc<Notify>,
    /// Who claims: requeued at this instance's start are its own claims only.
    instance: String,
}

impl PostgresStore {
    /// Connects to `target`, migrates it, and starts the writer and the
    /// listener.
    pub async fn open(target: &Target) -> Result<Self, StoreError> {
        let admin = PostgresAdmin {
            pool: pool(target, &daemon_name(target))?,
        };
        {
            let mut c = admin.pool.get().await.map_err(|e| {
                open_error(
                    target,
                    Cause::explained(
                        "cannot connect to PostgreSQL (check [store] url and password, and that \
                         the server is up and takes connections from this host)",
                        e,
                    ),
                )
            })?;
            schema::migrate(&mut c).await.map_err(|e| match e {
                schema::MigrateError::Database(e) => {
                    open_error(target, Cause::explained("migrating the store", e))
                }
                schema::MigrateError::TooNew { found, known } => StoreError::TooNew {
                    path: target.shown(),
                    found,
                    known,
                },
            })?;
        }
        let arrived = Arc::new(Notify::new());
        let (tx, rx) = mpsc::channel(writer::QUEUE);
        let writer = tokio::spawn(writer::run(admin.pool.clone(), rx, arrived.clone()));
        let listener = tokio::spawn(listen(target.clone(), arrived.clone()));
        Ok(Self {
            admin,
            writes: std::sync::Mutex::new(Some(tx)),
            writer: std::sync::Mutex::new(Some(writer)),
            listener,
            arrived,
            instance: target.instance.clone(),
        })
    }
}

/// Listens for new deliveries on a connection of its own, waking the
/// dispatcher; connects again after a failure.
async fn listen(target: Target, arrived: Arc<Notify>) {
    use futures_util::StreamExt;
    loop {
        if let Ok(config) = target.config(&daemon_name(&target))
            && let Ok((client, mut connection)) = config.connect(tls()).await
        {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            let statement = format!("LISTEN {CHANNEL}");
            let listening = client.batch_execute(&statement);
            let mut listening = std::pin::pin!(listening);
            let mut subscribed = false;
            loop {
                tokio::select! {
                    done = &mut listening, if !subscribed => {
                        if done.is_err() {
                            break;
                        }
                        subscribed = true;
                    }
                    message = messages.next() => match message {
                        Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                            arrived.notify_one();
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                }
            }
        }
        // Polling covers the gap; try again in a while.
        tokio::time::sleep(POLL).await;
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Store for PostgresStore {
    fn insert(&self, event: NewEvent) -> BoxFuture<'static, Result<Inserted, StoreError>> {
        let sender = self
            .writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Box::pin(async move {
            let sender = sender.ok_or(StoreError::Closed)?;
            let (done, answer) = tokio::sync::oneshot::channel();
            sender
                .send(writer::Pending { event, done })
                .await
                .map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let check = async {
                let c = self.admin.pool.get().await.map_err(write_error)?;
                let writable: bool = c
                    .query_one("SELECT NOT pg_is_in_recovery()", &[])
                    .await
                    .map_err(write_error)?
                    .get(0);
                if writable {
                    Ok(())
                } else {
                    Err(StoreError::Write(Cause::explained(
                        "the server is a read-only replica",
                        std::io::Error::other("in recovery"),
                    )))
                }
            };
            match tokio::time::timeout(Duration::from_secs(5), check).await {
                Ok(answer) => answer,
                Err(e) => Err(StoreError::Write(Cause::explained(
                    "PostgreSQL did not answer within 5 s",
                    e,
                ))),
            }
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // The writer finishes what is queued, then ends with the channel.
            drop(
                self.writes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take(),
            );
            let writer = self
                .writer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(writer) = writer {
                let _ = writer.await;
            }
            self.listener.abort();
        })
    }

    fn deliveries_arrived(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = tokio::time::timeout(POLL, self.arrived.notified()).await;
        })
    }

    fn claim(
        &self,
        notifier: &str,
        now_ms: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Claimed>, StoreError>> {
        let notifier = notifier.to_owned();
        Box::pin(async move {
            let mut c = self.admin.pool.get().await.map_err(write_error)?;
            outbox::claim(&mut c, &notifier, now_ms, limit, &self.instance)
                .await
                .map_err(write_error)
        })
    }

    fn finish_logged(
        &self,
        id: i64,
        outcome: Outcome,
        now_ms: i64,
        log: Option<crate::store::AttemptLog>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut c = self.admin.pool.get().await.map_err(write_error)?;
            outbox::finish(&mut c, id, &outcome, now_ms, log.as_ref())
                .await
                .map_err(write_error)
        })
    }

    fn next_due(&self, notifiers: Vec<String>) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            let c = self.admin.pool.get().await.map_err(read_error)?;
            outbox::next_due(&**c, &notifiers).await.map_err(read_error)
        })
    }

    fn recover(
        &self,
        notifiers: Vec<String>,
        now_ms: i64,
        requeue_sending: bool,
    ) -> BoxFuture<'_, Result<Recovered, StoreError>> {
        Box::pin(async move {
            let mut c = self.admin.pool.get().await.map_err(write_error)?;
            outbox::recover(&mut c, &notifiers, now_ms, requeue_sending, &self.instance)
                .await
                .map_err(write_error)
        })
    }

    fn group_members(
        &self,
        lane: String,
        notifier: String,
        limit: usize,
        max_bytes: usize,
    ) -> BoxFuture<'_, Result<Vec<(crate::store::Delivery, crate::store::StoredEvent)>, StoreError>>
    {
        Box::pin(async move {
            let c = self.admin.pool.get().await.map_err(read_error)?;
            group::members(&**c, &lane, &notifier, limit, max_bytes)
                .await
                .map_err(read_error)
        })
    }

    fn group_delivered(
        &self,
        ids: Vec<i64>,
        result: Option<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            let c = self.admin.pool.get().await.map_err(write_error)?;
            group::delivered(&**c, &ids, result.as_deref(), now_ms)
                .await
                .map_err(write_error)
        })
    }

    fn release(
        &self,
        notifier: String,
        holding: Vec<i64>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            let c = self.admin.pool.get().await.map_err(write_error)?;
            outbox::release(&**c, &notifier, &holding, now_ms, &self.instance)
                .await
                .map_err(write_error)
        })
    }

    fn prune(&self, cutoff_ms: i64) -> BoxFuture<'_, Result<(usize, usize), StoreError>> {
        Box::pin(async move {
            let (mut events, mut deliveries) = (0, 0);
            loop {
                let mut c = self.admin.pool.get().await.map_err(write_error)?;
                match outbox::prune(&mut c, cutoff_ms, 1_000)
                    .await
                    .map_err(write_error)?
                {
                    // Another instance is pruning.
                    None => return Ok((events, deliveries)),
                    Some((0, 0)) => return Ok((events, deliveries)),
                    Some((e, d)) => {
                        events += e;
                        deliveries += d;
                    }
                }
                tokio::task::yield_now().await;
            }
        })
    }

    fn load_state(&self, name: &str) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        let name = name.to_owned();
        Box::pin(async move {
            let c = self.admin.pool.get().await.map_err(read_error)?;
            state::load(&**c, &name).await.map_err(read_error)
        })
    }

    fn save_state(
        &self,
        name: &str,
        value: String,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let name = name.to_owned();
        Box::pin(async move {
            let c = self.admin.pool.get().await.map_err(write_error)?;
            state::save(&**c, &name, &value, now_ms)
                .await
                .map_err(write_error)
        })
    }

    fn planned(&self, keys: Vec<String>) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let c = self.admin.pool.get().await.map_err(read_error)?;
            state::planned(&**c, &keys).await.map_err(read_error)
        })
    }

    fn keep_claim(&self, id: i64, now_ms: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let c = self.admin.pool.get().await.map_err(write_error)?;
            outbox::keep_claim(&**c, id, now_ms, &self.instance)
                .await
                .map_err(write_error)
        })
    }

    fn oldest_waiting(
        &self,
        notifiers: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>> {
        Box::pin(async move {
            let c = self.admin.pool.get().await.map_err(read_error)?;
            outbox::oldest_waiting(&**c, &notifiers)
                .await
                .map_err(read_error)
        })
    }

    fn outbox_stats(&self) -> BoxFuture<'_, Result<OutboxStats, StoreError>> {
        Box::pin(async move {
            let c = self.admin.pool.get().await.map_err(read_error)?;
            outbox::stats(&**c).await.map_err(read_error)
        })
    }

    fn pause(&self, rate_key: &str, until_ms: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        let rate_key = rate_key.to_owned();
        Box::pin(async move {
            let c = self.admin.pool.get().await.map_err(write_error)?;
            outbox::pause(&**c, &rate_key, until_ms)
                .await
                .map_err(write_error)
        })
    }

    fn pauses(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<(String, i64)>, StoreError>> {
        Box::pin(async move {
            let c = self.admin.pool.get().await.map_err(read_error)?;
            outbox::pauses(&**c, now_ms).await.map_err(read_error)
        })
    }

    fn shared(&self) -> Option<&dyn crate::store::Shared> {
        Some(self)
    }
}
