//! The listening socket and what speaks on it: bound from `server.listen`,
//! or handed over by systemd (socket activation: `LISTEN_FDS`), plain HTTP
//! or TLS, with the certificate from files ([`tls`]) or from an ACME
//! directory ([`acme`]).
//!
//! With a socket from systemd, the service binds a privileged port without
//! capabilities, and a restart keeps new connections queued in the kernel
//! instead of refusing them: the socket outlives the process.

pub mod acme;
pub mod connections;
pub mod serve;
pub mod tls;
pub mod x509;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{ServerConfig, TlsConfig};

/// Why the daemon cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr} (is another replicate-relay running? change server.listen)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "systemd passed a socket (LISTEN_FDS) that cannot be used: {0}; the .socket unit must be a TCP ListenStream"
    )]
    Systemd(std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(
        "cannot listen for /metrics on {addr} (server.metrics: give another address, true to serve it on server.listen, or false)"
    )]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot serve the dashboard on {addr} (dashboard.listen: give another address, or false to turn it off)"
    )]
    Dashboard {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot listen for ACME HTTP-01 challenges on {addr} (server.tls.acme.http_listen; port 80 needs root, or under systemd a second ListenStream=80 in replicate-relay.socket; or leave http_listen unset to answer TLS-ALPN-01 on server.listen)"
    )]
    Http01 {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How connections are spoken to once accepted.
#[derive(Clone)]
pub enum Acceptor {
    Plain,
    Tls(tokio_rustls::TlsAcceptor),
    /// TLS that answers the CA's TLS-ALPN-01 validations too.
    Acme(acme::AcmeAcceptor),
}

/// A listening socket, its address, and what it speaks.
pub struct Listening {
    pub listener: TcpListener,
    pub addr: SocketAddr,
    /// Whether systemd handed the socket over.
    pub from_systemd: bool,
    pub acceptor: Acceptor,
    /// The certificate files being served, when TLS comes from files.
    pub certificates: Option<Arc<tls::Certificates>>,
    /// The ACME certificate, when TLS comes from `[server.tls.acme]`.
    pub acme: Option<Arc<acme::Acme>>,
    /// Where HTTP-01 challenges are answered (`http_listen`).
    pub http01: Option<TcpListener>,
}

/// The socket systemd passed, if it passed one; else `server.listen`
/// bound. Then TLS on it when `[server.tls]` is set, an ACME certificate
/// kept in `store` when several instances share it.
pub async fn listen(
    server: &ServerConfig,
    store: Arc<dyn crate::store::Store>,
) -> Result<Listening, ListenError> {
    let mut passed = systemd_sockets()?.into_iter();
    let (listener, from_systemd) = match passed.next() {
        Some(listener) => (listener, true),
        None => {
            let addr = server.listen;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ListenError::Bind { addr, source })?;
            (listener, false)
        }
    };
    let addr = listener.local_addr().map_err(|source| ListenError::Bind {
        addr: server.listen,
        source,
    })?;
    let (mut certificates, mut acme, mut http01) = (None, None, None);
    let acceptor = match &server.tls {
        Some(TlsConfig::Files(files)) => {
            let c = tls::Certificates::new(&files.cert_file, &files.key_file)?;
            certificates = Some(c.clone());
            Acceptor::Tls(tokio_rustls::TlsAcceptor::from(tls::server_config(c, &[])))
        }
        Some(TlsConfig::Acme(config)) => {
            if let Some(addr) = config.http_listen {
                // systemd's second socket (a second ListenStream=, port 80)
                // when it passed one: no capability needed for port 80.
                let listener = match passed.next() {
                    Some(listener) => listener,
                    None => TcpListener::bind(addr)
                        .await
                        .map_err(|source| ListenError::Http01 { addr, source })?,
                };
                http01 = Some(listener);
            }
            let a = acme::Acme::new(config.clone(), Some(store)).await;
            let acceptor = acme::AcmeAcceptor {
                config: tls::server_config(a.resolver(), &[]),
                challenges: a.challenges(),
            };
            acme = Some(a);
            Acceptor::Acme(acceptor)
        }
        None => Acceptor::Plain,
    };
    if passed.len() > 0 {
        tracing::warn!(
            message = "systemd passed more sockets than are used: the first serves webhooks, a second serves ACME HTTP-01 challenges only when server.tls.acme.http_listen is set. Remove the extra ListenStream= lines.",
            unused = passed.len()
        );
    }
    if let Some(TlsConfig::Acme(config)) = &server.tls
        && config.http_listen.is_none()
    {
        // TLS-ALPN-01 is checked on port 443 of the name; say so before
        // the first order fails for it.
        let message = "The ACME CA checks TLS-ALPN-01 on port 443 of each domain, which must reach this daemon with TLS untouched: listen on [::]:443 (server.listen, or replicate-relay.socket), or forward port 443 here.";
        if addr.ip().is_loopback() {
            tracing::warn!(message, %addr, domains = ?config.domains);
        } else if addr.port() != 443 {
            tracing::info!(message, %addr, domains = ?config.domains);
        }
    }
    if server.tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            message = "Listening without TLS on an address other hosts can reach. Replicate only delivers webhooks to HTTPS URLs (and follows no redirects): add [server.tls.acme] with your domain (automatic certificates), or [server.tls] with cert_file and key_file, or put this daemon behind a TLS reverse proxy (docs/https.md).",
            %addr
        );
    }
    Ok(Listening {
        listener,
        addr,
        from_systemd,
        acceptor,
        certificates,
        acme,
        http01,
    })
}

/// The sockets systemd passed (`LISTEN_FDS`, for this process's
/// `LISTEN_PID`), in the order of the .socket unit's `ListenStream=` lines,
/// as non-blocking tokio listeners.
fn systemd_sockets() -> Result<Vec<TcpListener>, ListenError> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut listeners = Vec::new();
    for i in 0..fds.len() {
        let Some(std_listener) = fds.take_tcp_listener(i).map_err(ListenError::Systemd)? else {
            continue;
        };
        std_listener
            .set_nonblocking(true)
            .map_err(ListenError::Systemd)?;
        listeners.push(TcpListener::from_std(std_listener).map_err(ListenError::Systemd)?);
    }
    if !listeners.is_empty() {
        tracing::info!(
            message = "Using the sockets systemd passed (socket activation).",
            sockets = listeners.len()
        );
    }
    Ok(listeners)
}
