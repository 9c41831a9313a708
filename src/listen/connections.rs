//! Every open connection on the daemon's listeners, and the limits that keep
//! strangers from holding them: a cap on how many are open, enforced by
//! closing one for a newcomer rather than refusing the newcomer, and
//! the deadlines each connection's task keeps (a complete request head within
//! `read_timeout` of the accept, the next request within `idle_timeout`).
//!
//! Who goes first: a connection of the peer holding the most, the one idle
//! the longest ("idle": since it was accepted, or finished its last
//! request). A request whose signature has been verified protects its
//! connection, so a flood of sockets can close only connections that have
//! not shown they come from Replicate, and a flood from a few hosts closes
//! its own: Replicate's are not its to take, however fast it reconnects.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::telemetry;

/// Descriptors kept free for what is not a client connection: the store's
/// files, outbound connections to notifiers, the runtime's own.
const RESERVED_DESCRIPTORS: u64 = 128;

/// The open connections of every listener, with the cap on their number.
#[derive(Debug)]
pub struct Connections {
    epoch: Instant,
    max: usize,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

/// Why a connection was closed by the daemon rather than by its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// No complete request head within `read_timeout` of the accept.
    Slow,
    /// No request within `idle_timeout` of the last one.
    Idle,
    /// Closed at the cap for a newcomer (or when `accept` failed for want
    /// of descriptors).
    Evicted,
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Slow => "slow",
            Closed::Idle => "idle",
            Closed::Evicted => "evicted",
        }
    }
}

/// One open connection, as its own task and the tracker see it.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    /// Who connected.
    peer: SocketAddr,
    /// Milliseconds after the tracker's epoch when it was accepted or last
    /// finished a request.
    idle_since: AtomicU64,
    /// Requests being handled now.
    in_flight: AtomicUsize,
    /// Requests whose signature was verified, being stored now: while any
    /// is, the connection is not evicted.
    protected: AtomicUsize,
    /// Whether a complete request head has ever arrived.
    served: AtomicBool,
    evicted: AtomicBool,
    /// Wakes the connection's task: a request ended, or it was evicted.
    wake: Notify,
}

impl Connections {
    /// A tracker allowing `max` connections, fewer if the process's
    /// descriptor limit leaves room for fewer (raised to its hard limit
    /// first, as far as it may go).
    pub fn new(max: usize) -> Arc<Self> {
        let fit = descriptor_room();
        let effective = fit.map_or(max, |fit| max.min(fit));
        if effective < max {
            tracing::warn!(
                message = "Fewer connections than server.max_connections fit the descriptor limit; raise it (LimitNOFILE= in the unit, or ulimit -n).",
                max_connections = effective,
                configured = max,
            );
        }
        Self::with_max(effective)
    }

    /// A tracker allowing exactly `max` connections.
    pub fn with_max(max: usize) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            max: max.max(1),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The most connections kept open at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// How many are open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a connection just accepted; at the cap, one is told to
    /// close first (`evict_longest_idle` says which). The connection is forgotten when
    /// the returned [`Admitted`] is dropped.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Admitted {
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            peer,
            idle_since: AtomicU64::new(self.now_ms()),
            in_flight: AtomicUsize::new(0),
            protected: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let mut open = self.lock();
        if open.len() >= self.max {
            let staying = open
                .values()
                .filter(|c| !c.evicted.load(Ordering::Relaxed))
                .count();
            if staying >= self.max {
                evict_longest_idle(&open);
            }
        }
        open.insert(conn.id, conn.clone());
        telemetry::connections(open.len());
        drop(open);
        Admitted(Handle {
            conns: self.clone(),
            conn,
        })
    }

    /// Tells one connection to close, as at the cap: when `accept` itself
    /// fails for want of descriptors, one must be freed.
    pub fn evict_one(&self) -> bool {
        evict_longest_idle(&self.lock())
    }
}

/// Tells one connection to close, to make room: of the peer holding the
/// most connections (an IPv6 peer by its /64), the one idle the longest,
/// never one already told or one whose verified webhook is being stored.
/// So a flood from a few hosts closes its own sockets, however fast it
/// reconnects, and Replicate's connections are left alone; a flood from
/// everywhere closes the longest idle.
fn evict_longest_idle(open: &HashMap<u64, Arc<Conn>>) -> bool {
    let candidates = || {
        open.values().filter(|c| {
            !c.evicted.load(Ordering::Relaxed) && c.protected.load(Ordering::Relaxed) == 0
        })
    };
    let mut per_peer: HashMap<PeerKey, usize> = HashMap::new();
    for c in candidates() {
        *per_peer.entry(PeerKey::of(c.peer)).or_default() += 1;
    }
    let Some(busiest) = per_peer
        .into_iter()
        .max_by_key(|(key, n)| (*n, *key))
        .map(|(key, _)| key)
    else {
        return false;
    };
    let victim = candidates()
        .filter(|c| PeerKey::of(c.peer) == busiest)
        .min_by_key(|c| (c.idle_since.load(Ordering::Relaxed), c.id));
    match victim {
        Some(c) => {
            c.evicted.store(true, Ordering::Relaxed);
            c.wake.notify_one();
            true
        }
        None => false,
    }
}

/// A peer as far as fairness goes: an IPv4 address, or an IPv6 /64 (what
/// one host is usually given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum PeerKey {
    V4(std::net::Ipv4Addr),
    V6(u64),
}

impl PeerKey {
    fn of(peer: SocketAddr) -> Self {
        match peer.ip().to_canonical() {
            std::net::IpAddr::V4(v4) => PeerKey::V4(v4),
            std::net::IpAddr::V6(v6) => PeerKey::V6((v6.to_bits() >> 64) as u64),
        }
    }
}

/// A connection registered with the tracker, for as long as it is held.
#[derive(Debug)]
pub struct Admitted(Handle);

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.0.conns.lock();
        open.remove(&self.0.conn.id);
        telemetry::connections(open.len());
    }
}

impl std::ops::Deref for Admitted {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.0
    }
}

/// A connection as its task and its requests see it.
#[derive(Debug, Clone)]
pub struct Handle {
    conns: Arc<Connections>,
    conn: Arc<Conn>,
}

impl Handle {
    /// A request began on this connection; it ends when the guard drops.
    pub fn request(&self) -> InFlight {
        self.conn.served.store(true, Ordering::Relaxed);
        self.conn.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            conns: self.conns.clone(),
            conn: self.conn.clone(),
        }
    }

    /// When the connection's task must look again, and why it would close
    /// then: `None` while a request is being handled (the intake bounds
    /// those itself).
    pub fn deadline(
        &self,
        read_timeout: Duration,
        idle_timeout: Duration,
    ) -> Option<(Instant, Closed)> {
        let c = &self.conn;
        if c.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = self.conns.epoch + Duration::from_millis(c.idle_since.load(Ordering::Relaxed));
        Some(if c.served.load(Ordering::Relaxed) {
            (since + idle_timeout, Closed::Idle)
        } else {
            (since + read_timeout, Closed::Slow)
        })
    }

    /// The connection, for the request extension the intake reads.
    pub fn for_request(&self) -> RequestConn {
        RequestConn(self.conn.clone())
    }

    /// Whether the tracker told this connection to close.
    pub fn evicted(&self) -> bool {
        self.conn.evicted.load(Ordering::Relaxed)
    }

    /// Waits until a request ends or the connection is evicted.
    pub async fn changed(&self) {
        self.conn.wake.notified().await
    }
}

/// A request being handled; when dropped, the connection is idle from then.
#[derive(Debug)]
pub struct InFlight {
    conns: Arc<Connections>,
    conn: Arc<Conn>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn
            .idle_since
            .store(self.conns.now_ms(), Ordering::Relaxed);
        if self.conn.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.conn.wake.notify_one();
        }
    }
}

/// The connection a request arrived on, as the intake sees it (a request
/// extension).
#[derive(Debug, Clone)]
pub struct RequestConn(Arc<Conn>);

/// Held while a verified request is stored: its connection is not evicted.
#[derive(Debug)]
pub struct Protected(Arc<Conn>);

impl RequestConn {
    /// Who sent the request.
    pub fn peer(&self) -> SocketAddr {
        self.0.peer
    }

    pub fn protect(&self) -> Protected {
        self.0.protected.fetch_add(1, Ordering::Relaxed);
        Protected(self.0.clone())
    }
}

impl Drop for Protected {
    fn drop(&mut self) {
        self.0.protected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many client connections the descriptor limit leaves room for, after
/// raising its soft limit to the hard one; `None` where it cannot be read.
fn descriptor_room() -> Option<usize> {
    let soft = rlimit::increase_nofile_limit(u64::MAX).ok()?;
    let room = if soft > 2 * RESERVED_DESCRIPTORS {
        soft - RESERVED_DESCRIPTORS
    } else {
        soft / 2
    };
    Some(usize::try_from(room).unwrap_or(usize::MAX))
}

#[cfg(test)]
#[path = "connections_tests.rs"]
mod tests;
