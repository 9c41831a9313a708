//! Serving one listener: the accept loop, and each connection's task from
//! the TLS handshake to its close, under the limits [`super::connections`]
//! keeps. Every stage before a complete request head (the handshake, the
//! HTTP/1-or-2 detection, the head itself) must end within `read_timeout`
//! of the accept; a keep-alive connection must bring its next request
//! within `idle_timeout`. The filter (warp) sees each request with its
//! connection as an extension, so the intake can protect a verified one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;

use futures_util::future::BoxFuture;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Acceptor;
use super::connections::{Admitted, Closed, Connections};
use crate::telemetry;
use warp::reply::Response;

/// How long a stopping server keeps reading the connections it has just
/// accepted before closing the idle ones.
const SETTLE: Duration = Duration::from_millis(100);

/// How long a connection closed for idleness may take to say goodbye
/// (an HTTP/2 GOAWAY) before it is simply dropped.
const GOODBYE: Duration = Duration::from_secs(1);

/// The largest request head, and HTTP/2 header list, read: Replicate's
/// are well under 2 KiB.
const MAX_HEAD: usize = 64 * 1024;

/// HTTP/2 streams one connection may have open at once.
const MAX_STREAMS: u32 = 32;

/// The listening socket, shared so that an accept loop restarted after a
/// panic finds it, and closed (taken) when the loop stops for good.
pub type SharedListener = Arc<tokio::sync::Mutex<Option<TcpListener>>>;

/// The time limits of every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Serves `filter` on the listener until `stop` turns true (or its sender
/// goes), then closes the listener, lets connections just accepted be
/// read for a moment, closes idle ones and waits for requests in flight.
pub async fn serve<F>(
    listener: SharedListener,
    acceptor: Acceptor,
    filter: F,
    conns: Arc<Connections>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let mut slot = listener.lock().await;
    // Gone once stopped; a loop restarted after a panic may find it so.
    let Some(accepting) = slot.as_ref().filter(|_| !*stop.borrow_and_update()) else {
        return;
    };
    let service = TowerToHyperService::new(warp::service(filter));
    let respond: Respond =
        Arc::new(move |request| Box::pin(hyper::service::Service::call(&service, request)));
    let mut builder = Builder::new(TokioExecutor::new());
    // No header_read_timeout of hyper's: its clock runs from the end of
    // the previous answer, so it would cut keep-alive connections at
    // read_timeout. Each connection's task keeps both deadlines instead.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEAD as u32);
    // Closing tells each connection to finish; `done` closes when the last
    // connection task ends.
    let (closing, closing_rx) = watch::channel(false);
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let mut last_complaint: Option<Instant> = None;
    loop {
        tokio::select! {
            accepted = accepting.accept() => match accepted {
                Ok((io, peer)) => {
                    let admitted = conns.admit(peer);
                    tokio::spawn(connection(
                        io,
                        peer,
                        admitted,
                        acceptor.clone(),
                        builder.clone(),
                        respond.clone(),
                        limits,
                        closing_rx.clone(),
                        done.clone(),
                    ));
                }
                // One connection that went before it was accepted: the
                // next accept is unaffected.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::Interrupted
                ) => {}
                Err(e) => {
                    // Out of descriptors or memory: free a connection, and
                    // try again shortly rather than spin.
                    let freed = conns.evict_one();
                    if last_complaint.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        last_complaint = Some(Instant::now());
                        tracing::error!(
                            message = "Cannot accept a connection; closing one of the host holding the most to make room. Raise the descriptor limit (LimitNOFILE=) or lower server.max_connections.",
                            error = %e,
                            freed,
                            open = conns.len(),
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
        }
    }
    // Closed now: with a socket from systemd, connections not yet accepted
    // wait in it for the next process.
    slot.take();
    drop(slot);
    // hyper closes a connection with no request under way at once, and one
    // accepted a moment ago has usually not been read yet, though its
    // request is on its way: give those a moment to be read, so they are
    // answered rather than closed.
    tokio::time::sleep(SETTLE).await;
    let _ = closing.send(true);
    drop(done);
    let _ = all_done.recv().await;
}

/// The filter as one boxed function of a request: one type for every
/// filter, so the connection code is not generic over it.
type Respond = Arc<
    dyn Fn(hyper::Request<Incoming>) -> BoxFuture<'static, Result<Response, Infallible>>
        + Send
        + Sync,
>;

/// One connection, from the accept to its close.
#[allow(clippy::too_many_arguments)]
async fn connection(
    io: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    acceptor: Acceptor,
    builder: Builder<TokioExecutor>,
    respond: Respond,
    limits: Limits,
    closing: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
) {
    let handshake: BoxFuture<'static, std::io::Result<_>> = match acceptor {
        Acceptor::Plain => {
            return drive(
                TokioIo::new(io),
                peer,
                &admitted,
                &builder,
                respond,
                limits,
                closing,
            )
            .await;
        }
        Acceptor::Tls(tls) => Box::pin(async move { tls.accept(io).await }),
        Acceptor::Acme(acme) => Box::pin(async move { acme.accept(io).await }),
    };
    // The handshake runs in the connection's own task, within the time the
    // whole head has: a client that stalls it holds nothing but its own
    // task, and only until then.
    let deadline = Instant::now() + limits.read_timeout;
    let stream = tokio::select! {
        handshake = tokio::time::timeout_at(deadline, handshake) => match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(message = "TLS handshake failed.", %peer, error = %e);
                return;
            }
            Err(_) => return closed(Closed::Slow, peer),
        },
        // Before any request, only an eviction wakes it.
        _ = admitted.changed() => return closed(Closed::Evicted, peer),
    };
    if stream.get_ref().1.alpn_protocol() == Some(super::acme::ACME_TLS_ALPN) {
        // The CA validating a TLS-ALPN-01 challenge: the handshake was the
        // answer (RFC 8737 §3).
        tracing::debug!(message = "Answered an ACME TLS-ALPN-01 validation.", %peer);
        return;
    }
    drive(
        TokioIo::new(stream),
        peer,
        &admitted,
        &builder,
        respond,
        limits,
        closing,
    )
    .await
}

/// HTTP on an established connection until it ends, is idle too long, is
/// evicted, or the server stops.
async fn drive<I>(
    io: I,
    peer: SocketAddr,
    admitted: &Admitted,
    builder: &Builder<TokioExecutor>,
    respond: Respond,
    limits: Limits,
    mut closing: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let handle = (**admitted).clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let in_flight = handle.request();
        request.extensions_mut().insert(handle.for_request());
        let answer = respond(request);
        async move {
            let answer = answer.await;
            drop(in_flight);
            answer
        }
    });
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    // Set once the connection was asked to finish: then only the goodbye's
    // own deadline (or the server's shutdown deadline) applies.
    let mut finishing: Option<Instant> = None;
    let deadline = |finishing: Option<Instant>| {
        finishing.or_else(|| {
            admitted
                .deadline(limits.read_timeout, limits.idle_timeout)
                .map(|(at, _)| at)
        })
    };
    loop {
        let wake_at = deadline(finishing);
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(message = "Connection ended with an error.", %peer, error = %e);
                }
                return;
            }
            _ = tokio::time::sleep_until(wake_at.unwrap_or_else(Instant::now)), if wake_at.is_some() => {
                if finishing.is_some() {
                    // The goodbye took too long.
                    return;
                }
                match admitted.deadline(limits.read_timeout, limits.idle_timeout) {
                    // A request began meanwhile, or ended: look again.
                    None => {}
                    Some((at, _)) if at > Instant::now() => {}
                    Some((_, Closed::Idle)) => {
                        closed(Closed::Idle, peer);
                        conn.as_mut().graceful_shutdown();
                        finishing = Some(Instant::now() + GOODBYE);
                    }
                    // No complete request head in time: nothing to say
                    // goodbye to.
                    Some((_, why)) => return closed(why, peer),
                }
            }
            _ = admitted.changed() => if admitted.evicted() {
                return closed(Closed::Evicted, peer);
            },
            Ok(()) = closing.changed(), if finishing.is_none() => {
                conn.as_mut().graceful_shutdown();
                finishing = Some(Instant::now() + limits.read_timeout);
            }
        }
    }
}

/// Why a connection's task ended early, for the log and the counter.
fn closed(why: Closed, peer: SocketAddr) {
    telemetry::connection_closed(why.as_str());
    tracing::debug!(message = "Closed a connection.", %peer, reason = why.as_str());
}
