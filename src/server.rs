//! Starting, reloading and stopping the daemon.
//!
//! [`start`] opens the store, builds the notifiers, listens ([`crate::listen`]:
//! a bound port or systemd's socket, plain or TLS) and starts the
//! intake, the dispatcher and retention (after routing whatever an earlier
//! release stored unrouted); it returns only once the
//! listener is bound and the store is open, so the caller (the `serve` command
//! tells systemd READY=1 then) knows the daemon is really ready.
//! [`Running::reload`] swaps in a new, already validated config atomically.
//! [`Running::shutdown`] refuses new webhooks with 503, lets in-flight requests
//! commit and in-flight sends finish within a deadline, then closes the store;
//! whatever is unsent stays in the outbox for the next start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::clock::now_ms;
use crate::config::{Config, TlsConfig};
use crate::dispatch::{self, Pipeline};
use crate::intake::{self, Intake};
use crate::listen::acme::Acme;
use crate::listen::connections::Connections;
use crate::listen::serve::{Limits, SharedListener, serve};
use crate::listen::tls::Certificates;
use crate::listen::{self, Acceptor, ListenError};
use crate::live::{Live, Setup};
use crate::store::{self, Store, StoreError};
use crate::supervise::Supervisor;
use crate::telemetry;

/// How often old events and finished deliveries are pruned.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Setup(#[from] crate::live::SetupError),
    #[error(transparent)]
    Listen(#[from] ListenError),
}

/// A running daemon.
pub struct Running {
    addr: SocketAddr,
    store: Arc<dyn Store>,
    live: Arc<Live<Setup>>,
    clock: Arc<dyn Clock>,
    stopping: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    /// The certificate files served, with `[server.tls]`.
    certificates: Option<Arc<Certificates>>,
    /// Looks at the certificate files for a change.
    watch: Option<JoinHandle<()>>,
    /// The ACME certificate, with `[server.tls.acme]`.
    acme: Option<Arc<Acme>>,
    /// Keeps the ACME certificate fresh.
    renewal: Option<JoinHandle<()>>,
    /// Where `/metrics` is served, if anywhere.
    metrics_addr: Option<SocketAddr>,
    /// Where the dashboard is served, if anywhere.
    dashboard_addr: Option<SocketAddr>,
    pipeline: Pipeline,
    retention: JoinHandle<()>,
    /// Catching up on webhooks that never came (`[replicate] catch_up`).
    catch_up: JoinHandle<()>,
}

/// While a long store migration runs: asks systemd (when it started us with
/// Type=notify) for more time, so it does not kill the start half way and
/// roll the migration back at every restart; the status line says why, until
/// the migration is done.
fn still_starting(migrating: bool) {
    let _ = if migrating {
        sd_notify::notify(&[
            sd_notify::NotifyState::ExtendTimeoutUsec(30_000_000),
            sd_notify::NotifyState::Status("migrating the store schema"),
        ])
    } else {
        sd_notify::notify(&[sd_notify::NotifyState::Status("")])
    };
}

/// Opens the store, binds `config.server.listen` and starts serving.
pub async fn start(config: &Config, clock: Arc<dyn Clock>) -> Result<Running, StartError> {
    telemetry::handle();
    let store = store::open(&config.store, Some(still_starting)).await?;
    if let Some(leftovers) = store.leftovers() {
        crate::route::plan::route_leftovers(leftovers, config).await?;
    }
    let live = Arc::new(Live::new(Setup::build(config.clone(), clock.clone())?));

    let listening = listen::listen(&config.server, store.clone()).await?;
    let addr = listening.addr;
    let certificates = listening.certificates.clone();
    let acme = listening.acme.clone();

    let stopping = Arc::new(AtomicBool::new(false));
    let supervisor = Supervisor::new();
    let tls = !matches!(listening.acceptor, Acceptor::Plain);
    let metrics_at = config.server.metrics.resolve(addr, tls);
    let mut intake = Intake::new(
        live.clone(),
        store.clone(),
        stopping.clone(),
        supervisor.clone(),
    );
    intake.metrics_here = metrics_at == Ok(true);
    let intake = Arc::new(intake);
    let (stop, stopped) = watch::channel(false);
    let limits = Limits {
        read_timeout: config.server.read_timeout,
        idle_timeout: config.server.idle_timeout,
    };
    // One cap for every listener: they share the descriptor table.
    let conns = Connections::new(config.server.max_connections);
    let watch = certificates
        .clone()
        .map(|c| supervisor.spawn("certificate-watch", move || c.clone().watch()));
    let renewal = acme
        .clone()
        .map(|a| supervisor.spawn("acme", move || a.clone().run()));
    // Every listener stops with `stop`: the webhooks' drains its requests,
    // the others have nothing worth draining.
    let on = |task| Serving {
        supervisor: &supervisor,
        task,
        conns: &conns,
        limits,
        stopped: &stopped,
    };
    if let (Some(acme), Some(listener)) = (&acme, listening.http01) {
        let filter = crate::listen::acme::http01(acme.challenges());
        on("acme-http01-listener").spawn(listener, Acceptor::Plain, filter);
    }
    let metrics_addr = match metrics_at {
        Ok(here) => here.then_some(addr),
        Err(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|source| ListenError::Metrics { addr: at, source })?;
            let bound = listener.local_addr().unwrap_or(at);
            let filter = intake::metrics_filter(intake.clone());
            on("metrics-listener").spawn(listener, Acceptor::Plain, filter);
            Some(bound)
        }
    };
    let dashboard_addr = dashboard(config, &store, &live, on("dashboard-listener")).await?;
    let server = on("listener").spawn(
        listening.listener,
        listening.acceptor,
        intake::filter(intake),
    );
    let pipeline = dispatch::start(store.clone(), live.clone(), &supervisor);
    let (s, l) = (store.clone(), live.clone());
    let retention = supervisor.spawn("retention", move || retain(s.clone(), l.clone()));
    let (s, l) = (store.clone(), live.clone());
    let catch_up = supervisor.spawn("catch-up", move || {
        crate::replicate::catch_up::run(s.clone(), l.clone())
    });
    tracing::info!(
        message = "Listening.",
        %addr,
        tls = if certificates.is_some() { "files" } else if acme.is_some() { "acme" } else { "none" },
        socket_from_systemd = listening.from_systemd,
        path = %config.server.path,
        store = %config.store.path.display(),
        routes = config.routes.len(),
        notifiers = config.notifiers.len(),
        max_connections = conns.max(),
        metrics = %metrics_addr.map_or("off".to_owned(), |a| format!("http://{a}/metrics")),
        dashboard = %dashboard_addr.map_or("off".to_owned(), |a| format!("http://{a}/")),
    );
    Ok(Running {
        addr,
        store,
        live,
        clock,
        stopping,
        stop,
        server,
        certificates,
        watch,
        acme,
        renewal,
        metrics_addr,
        dashboard_addr,
        pipeline,
        retention,
        catch_up,
    })
}

/// Serves the dashboard where `[dashboard] listen` says, on connections
/// of its own (a page load never takes the intake's), reading the store
/// through an [`Admin`](crate::store::Admin) door of its own. The default
/// address taken by another program is not worth refusing to start for:
/// the daemon runs without it and says so.
async fn dashboard(
    config: &Config,
    store: &Arc<dyn Store>,
    live: &Arc<Live<Setup>>,
    serving: Serving<'_>,
) -> Result<Option<SocketAddr>, StartError> {
    let Some(at) = config.dashboard.listen else {
        return Ok(None);
    };
    let listener = match tokio::net::TcpListener::bind(at).await {
        Ok(listener) => listener,
        Err(e) if config.dashboard.listen_is_default => {
            tracing::warn!(message = "Cannot serve the dashboard on its default address; running without it. Set [dashboard] listen to a free address, or false.", addr = %at, error = %e);
            return Ok(None);
        }
        Err(source) => return Err(ListenError::Dashboard { addr: at, source }.into()),
    };
    let bound = listener.local_addr().unwrap_or(at);
    let admin = crate::store::open_admin(&config.store)?;
    let dashboard = crate::dashboard::Dashboard::new(admin, store.clone(), live.clone());
    let own = Connections::new(DASHBOARD_CONNECTIONS);
    Serving {
        conns: &own,
        ..serving
    }
    .spawn(
        listener,
        Acceptor::Plain,
        crate::dashboard::filter(dashboard),
    );
    Ok(Some(bound))
}

/// Connections the dashboard may hold at once (its own, apart from the
/// intake's).
const DASHBOARD_CONNECTIONS: usize = 64;

/// What every listener is served with.
struct Serving<'a> {
    supervisor: &'a Arc<Supervisor>,
    task: &'static str,
    conns: &'a Arc<Connections>,
    limits: Limits,
    stopped: &'a watch::Receiver<bool>,
}

impl Serving<'_> {
    /// Serves `filter` on `listener` until stopped, under the supervisor:
    /// restarted if its accept loop panics.
    fn spawn<F>(
        self,
        listener: tokio::net::TcpListener,
        acceptor: Acceptor,
        filter: F,
    ) -> JoinHandle<()>
    where
        F: warp::Filter + Clone + Send + Sync + 'static,
        F::Extract: warp::Reply,
    {
        let listener: SharedListener = Arc::new(Mutex::new(Some(listener)));
        let (conns, stopped, limits) = (self.conns.clone(), self.stopped.clone(), self.limits);
        self.supervisor.spawn(self.task, move || {
            serve(
                listener.clone(),
                acceptor.clone(),
                filter.clone(),
                conns.clone(),
                limits,
                stopped.clone(),
            )
        })
    }
}

/// Prunes events older than `[store] keep` and finished deliveries, in small
/// transactions so intake commits never wait long behind it.
async fn retain(store: Arc<dyn Store>, live: Arc<Live<Setup>>) {
    // Not at the very start: let the daemon settle first.
    tokio::time::sleep(Duration::from_secs(60)).await;
    loop {
        let keep = live.load().config.store.keep;
        let cutoff = now_ms() - keep.as_millis() as i64;
        match store.prune(cutoff).await {
            Ok((0, 0)) => {}
            Ok((events, deliveries)) => {
                tracing::info!(message = "Pruned old records.", events, deliveries, keep = %humantime::format_duration(keep))
            }
            Err(e) => tracing::warn!(message = "Pruning failed; will try again.", error = %e),
        }
        tokio::time::sleep(RETENTION_EVERY).await;
    }
}

/// Why a reload was refused (the old config keeps running).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the TLS certificate cannot be served, so the previous one stays: {0}")]
    Tls(crate::listen::tls::TlsError),
    #[error(transparent)]
    Setup(#[from] crate::live::SetupError),
}

impl Running {
    /// The bound address (the real port when the config said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the dashboard is served (`dashboard.listen`), if anywhere.
    pub fn dashboard_addr(&self) -> Option<SocketAddr> {
        self.dashboard_addr
    }

    /// Where `/metrics` is served (`server.metrics`), if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Swaps in `config` (already validated) for everything that can change
    /// while running; requests and sends in flight finish with the old one.
    /// Returns warnings about settings that only a restart applies.
    pub fn reload(&self, config: Config) -> Result<Vec<String>, ReloadError> {
        let old = self.live.load();
        let mut warnings = Vec::new();
        if config.server.listen != old.config.server.listen {
            warnings.push(format!(
                "server.listen changed to {}; restart the daemon to apply it (still listening on {})",
                config.server.listen, self.addr
            ));
        }
        // What the listeners were started with stays until a restart (the
        // intake's own body timeout follows the reload).
        let (new, was) = (&config.server, &old.config.server);
        for (key, changed) in [
            (
                "server.max_unverified",
                new.max_unverified != was.max_unverified,
            ),
            (
                "server.max_connections",
                new.max_connections != was.max_connections,
            ),
            ("server.idle_timeout", new.idle_timeout != was.idle_timeout),
            ("server.read_timeout", new.read_timeout != was.read_timeout),
            ("server.metrics", new.metrics != was.metrics),
        ] {
            if changed {
                warnings.push(format!(
                    "{key} changed; restart the daemon to apply it to connections (the running value stays)"
                ));
            }
        }
        if config.store.path != old.config.store.path {
            warnings.push(format!(
                "store.path changed to {}; restart the daemon to apply it (still using {})",
                config.store.path.display(),
                old.config.store.path.display()
            ));
        }
        let tls = config.server.tls.clone();
        let setup = Setup::build(config, self.clock.clone())
            .map_err(ReloadError::from)
            .and_then(|setup| {
                // Last, once all else built: SIGHUP reads the certificate
                // files again, from the paths the new config names; a pair
                // that cannot be served refuses the reload.
                match (&self.certificates, &self.acme, &tls) {
                    (Some(certificates), _, Some(TlsConfig::Files(files))) => {
                        certificates
                            .reload(Some((&files.cert_file, &files.key_file)))
                            .map_err(ReloadError::Tls)?;
                    }
                    (_, Some(acme), Some(TlsConfig::Acme(wanted))) => {
                        if wanted != acme.config() {
                            warnings.push(
                                "[server.tls.acme] changed; restart the daemon to apply it".into(),
                            );
                        }
                        // A failed order waiting out its pause: the
                        // operator may have just fixed DNS or the firewall.
                        acme.retry_now();
                    }
                    (None, None, None) => {}
                    _ => warnings.push(
                        "[server.tls] was added, removed or switched between files and ACME; restart the daemon to apply it".into(),
                    ),
                }
                Ok(setup)
            });
        telemetry::config_reload(setup.is_ok());
        self.live.store(setup?);
        self.pipeline.wake();
        Ok(warnings)
    }

    /// Stops accepting, waits up to `deadline` for in-flight requests and sends,
    /// then closes the store after its queued commits. Returns whether
    /// everything in flight finished in time.
    pub async fn shutdown(mut self, deadline: Duration) -> bool {
        let started = tokio::time::Instant::now();
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(deadline, &mut self.server)
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                message =
                    "Requests still in flight at the shutdown deadline; their senders will retry.",
                ?deadline
            );
            self.server.abort();
        }
        self.retention.abort();
        self.catch_up.abort();
        if let Some(watch) = &self.watch {
            watch.abort();
        }
        if let Some(renewal) = &self.renewal {
            renewal.abort();
        }
        let left = deadline.saturating_sub(started.elapsed());
        let sent = self.pipeline.shutdown(left).await;
        self.store.close().await;
        drained && sent
    }
}
