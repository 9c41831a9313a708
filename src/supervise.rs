//! Supervision of the daemon's long-running tasks (dispatcher and retention
//! on tokio, the store's writer and checkpoint threads): a panic in one is caught, logged with its message, counted in
//! `/metrics`, and the task is started again after a backoff that doubles up
//! to a minute. While a task is down, `/healthz` answers 503 naming it, so a
//! load balancer or an operator sees that delivery has stopped even though
//! webhooks are still being stored.
//!
//! A task that returns normally (it was told to stop) is not restarted.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::task::JoinHandle;

/// The first wait before a restart; it doubles at each panic in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A task that ran this long before panicking starts again from the first
/// backoff: it was not crashing in a loop.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Which supervised tasks are down, and why.
#[derive(Debug, Default)]
pub struct Supervisor {
    down: Mutex<BTreeMap<&'static str, String>>,
}

impl Supervisor {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Runs the task `make` builds, building and running it again whenever
    /// it panics. Aborting the returned handle stops the task for good.
    pub fn spawn<F, Fut>(self: &Arc<Self>, task: &'static str, make: F) -> JoinHandle<()>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::default();
            loop {
                let started = std::time::Instant::now();
                let Err(panic) = AssertUnwindSafe(make()).catch_unwind().await else {
                    return;
                };
                let (message, wait) = backoff.panicked(task, panic.as_ref(), started);
                this.set_down(task, Some(message));
                tokio::time::sleep(wait).await;
                this.set_down(task, None);
            }
        })
    }

    /// The tasks that are down, with the message of the panic that stopped
    /// each, in name order.
    pub fn down(&self) -> Vec<(&'static str, String)> {
        self.lock().iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    fn set_down(&self, task: &'static str, panic: Option<String>) {
        match panic {
            Some(message) => self.lock().insert(task, message),
            None => self.lock().remove(task),
        };
    }

    // A poisoned map is still a valid map: take it.
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        self.down.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs `run` on this thread until it returns, and again after a backoff
/// each time it panics: [`Supervisor::spawn`]'s policy, for a task that is a
/// thread of its own (the store's writer and checkpointer). `down` is told
/// the panic's message while the thread waits, and `None` as it runs again.
pub fn run_restarting<R>(
    task: &'static str,
    mut run: impl FnMut() -> R,
    mut down: impl FnMut(Option<String>),
) -> R {
    let mut backoff = Backoff::default();
    loop {
        let started = std::time::Instant::now();
        match std::panic::catch_unwind(AssertUnwindSafe(&mut run)) {
            Ok(result) => return result,
            Err(panic) => {
                let (message, wait) = backoff.panicked(task, panic.as_ref(), started);
                down(Some(message));
                std::thread::sleep(wait);
                down(None);
            }
        }
    }
}

/// The wait before a task that panicked runs again: doubling from
/// [`FIRST_BACKOFF`] to [`MAX_BACKOFF`] while it keeps panicking.
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    /// Counts and logs the panic of `task`, which started at `started`;
    /// returns its message and how long to wait before running it again.
    fn panicked(
        &mut self,
        task: &'static str,
        panic: &(dyn std::any::Any + Send),
        started: std::time::Instant,
    ) -> (String, Duration) {
        let message = panic_message(panic);
        if started.elapsed() >= HEALTHY_AFTER {
            self.next = FIRST_BACKOFF;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        crate::telemetry::task_panicked(task);
        tracing::error!(
            message = "A task panicked; restarting it.",
            task,
            panic = %message,
            restart_in_ms = wait.as_millis() as u64,
        );
        (message, wait)
    }
}

/// The text a panic carried (`panic!("…")` gives a `&str` or a `String`).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_with_backoff_and_reported_down_meanwhile() {
        let supervisor = Supervisor::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let handle = supervisor.spawn("flaky", move || {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom {}", r.load(Ordering::SeqCst));
                }
                // The third run keeps going until aborted.
                std::future::pending::<()>().await
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(supervisor.down(), [("flaky", "boom 1".to_owned())]);
        // First backoff 100 ms, then 200 ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(supervisor.down(), [("flaky", "boom 2".to_owned())]);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "still backing off");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(supervisor.down().is_empty(), "up again");
        handle.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_returns_is_not_restarted() {
        let supervisor = Supervisor::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let handle = supervisor.spawn("done", move || {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
            }
        });
        handle.await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(supervisor.down().is_empty());
    }

    #[test]
    fn panic_messages_of_both_kinds() {
        let caught = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "plain");
        let caught = std::panic::catch_unwind(|| panic!("with {}", 42)).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "with 42");
        let caught = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "a panic without a message");
    }
}
