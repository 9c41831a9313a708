//! Starting and stopping the daemon: open the store, build the notifiers, bind
//! the port, serve, route and dispatch; then drain.
//!
//! [`start`] returns only once the listener is bound and the store is open, so a
//! caller (the `serve` command, a test, later the systemd notification) knows the
//! daemon is really ready. [`Running::shutdown`] refuses new webhooks with 503,
//! lets in-flight requests commit and in-flight sends finish, then closes the
//! store; whatever is unsent stays in the outbox for the next start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::dispatch::{self, Pipeline};
use crate::intake::signature::{Clock, Verifier};
use crate::intake::{self, Intake};
use crate::store::sqlite::SqliteOptions;
use crate::store::{SqliteStore, Store, StoreError};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Notifier(#[from] crate::notify::BuildError),
    #[error(
        "cannot listen on {addr}: {source} (is another replicate-relay running? change server.listen)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running daemon.
pub struct Running {
    addr: SocketAddr,
    store: Arc<dyn Store>,
    stopping: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    pipeline: Pipeline,
}

/// Opens the store, binds `config.server.listen` and starts serving.
pub async fn start(config: &Config, clock: Arc<dyn Clock>) -> Result<Running, StartError> {
    let path = config.store.path.clone();
    let store =
        tokio::task::spawn_blocking(move || SqliteStore::open(&path, SqliteOptions::default()))
            .await
            .expect("store open does not panic")?;
    let store: Arc<dyn Store> = Arc::new(store);
    let senders = crate::notify::build_all(&config.notifiers)?;

    let addr = config.server.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;

    let verifier = (!config.verify.insecure).then(|| {
        Verifier::new(
            config.verify.secrets.clone(),
            config.verify.tolerance,
            clock,
        )
    });
    let stopping = Arc::new(AtomicBool::new(false));
    let intake = Arc::new(Intake {
        path: config.server.path.clone(),
        max_body: config.server.max_body,
        verifier,
        store: store.clone(),
        stopping: stopping.clone(),
    });

    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        warp::serve(intake::filter(intake))
            .incoming(listener)
            .graceful(async {
                let _ = stopped.await;
            })
            .run(),
    );
    let pipeline = dispatch::start(store.clone(), Arc::new(config.clone()), senders);
    tracing::info!(
        message = "Listening.",
        %addr,
        path = %config.server.path,
        store = %config.store.path.display(),
        routes = config.routes.len(),
        notifiers = config.notifiers.len(),
    );
    Ok(Running {
        addr,
        store,
        stopping,
        stop: Some(stop),
        server,
        pipeline,
    })
}

impl Running {
    /// The bound address (the real port when the config said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Stops accepting, waits up to `deadline` for in-flight requests and sends,
    /// then closes the store after its queued commits. Returns whether
    /// everything in flight finished in time.
    pub async fn shutdown(mut self, deadline: Duration) -> bool {
        let started = tokio::time::Instant::now();
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
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
        let left = deadline.saturating_sub(started.elapsed());
        let sent = self.pipeline.shutdown(left).await;
        self.store.close().await;
        drained && sent
    }
}
