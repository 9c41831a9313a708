//! Waiting for the signal to stop (SIGTERM from systemd, SIGINT from a terminal).

use std::fmt;

/// Which signal asked the daemon to stop.
#[derive(Debug, Clone, Copy)]
pub enum Signal {
    Terminate,
    Interrupt,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
        })
    }
}

/// Resolves at the first SIGTERM or SIGINT.
pub async fn signal() -> Signal {
    use tokio::signal::unix::{SignalKind, signal};
    // Installing a handler only fails if signals are unavailable altogether, in
    // which case the daemon could never be stopped cleanly: that is a bug to see.
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("can install a SIGINT handler");
    tokio::select! {
        _ = term.recv() => Signal::Terminate,
        _ = int.recv() => Signal::Interrupt,
    }
}
