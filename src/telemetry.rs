//! Metrics, exported as Prometheus text at `GET /metrics`. One process-wide
//! recorder (the `metrics` facade), installed on first use; every metric the
//! daemon records is named and described here, so this file is the list.

use std::sync::OnceLock;

use metrics::{
    Counter, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::event::{Kind, Status};

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The recorder's handle; installs the recorder on first call.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("relay_store_batch_size".into()),
                    BATCH_BUCKETS,
                )
            })
            .expect("bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed (a test harness): then
        // this handle renders nothing, which is harmless.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    describe_counter!(
        "relay_webhooks_received_total",
        "Webhooks stored, by kind and status."
    );
    describe_counter!(
        "relay_webhooks_rejected_total",
        "Webhooks refused, by reason (unauthorized, bad_request, payload_too_large, request_timeout, overloaded, store_unavailable, stopping)."
    );
    describe_counter!(
        "relay_webhooks_duplicate_total",
        "Webhooks whose webhook-id was already stored."
    );
    describe_histogram!(
        "relay_webhook_seconds",
        "Time to answer a webhook, from its request line to the answer (the commit included)."
    );
    describe_histogram!(
        "relay_store_commit_seconds",
        "Time to commit one group of events (including fsync)."
    );
    describe_histogram!("relay_store_batch_size", "Events carried by one commit.");
    describe_counter!(
        "relay_deliveries_total",
        "Delivery attempts by notifier and result (sent, retried, dead)."
    );
    describe_histogram!(
        "relay_delivery_latency_seconds",
        "From receipt of the webhook to delivery, by notifier."
    );
    describe_gauge!(
        "relay_outbox_pending",
        "Deliveries waiting to be sent (pending or sending)."
    );
    describe_gauge!(
        "relay_outbox_dead",
        "Deliveries given up on, kept for inspection and retry."
    );
    describe_gauge!(
        "relay_outbox_held",
        "Deliveries kept for a notifier that is not in the config (sent if it returns; never pruned)."
    );
    describe_gauge!(
        "relay_outbox_oldest_pending_seconds",
        "Age of the oldest delivery still waiting."
    );
    describe_counter!(
        "relay_rate_limited_total",
        "Answers that asked to wait (a 429 or 503 with Retry-After, Discord's retry_after), each pausing that receiver, by notifier."
    );
    describe_counter!(
        "relay_config_reloads_total",
        "Config reloads by result (ok, failed)."
    );
    describe_counter!(
        "relay_task_panics_total",
        "Panics of a supervised task (dispatcher, router, retention), each restarted."
    );
    describe_counter!(
        "relay_delivery_panics_total",
        "Panics while rendering or sending one delivery, by notifier (the delivery is retried, then dead)."
    );
    describe_gauge!(
        "relay_tls_certificate_expiry_timestamp_seconds",
        "When the HTTPS certificate being served expires, in Unix seconds (alert well before it)."
    );
    describe_gauge!(
        "relay_unverified_bytes",
        "Memory held by request bodies whose signature is not yet checked (at most server.max_unverified; past it, 503 overloaded)."
    );
    describe_gauge!(
        "relay_connections",
        "Client connections open now, on every listener (at most server.max_connections)."
    );
    describe_counter!(
        "relay_connections_closed_total",
        "Connections the daemon closed, by reason: slow (no complete request head within read_timeout), idle (no request within idle_timeout), evicted (the longest idle, for a newcomer at max_connections)."
    );
    describe_counter!(
        "relay_acme_orders_total",
        "ACME certificate orders by result (ok, failed)."
    );
    describe_gauge!(
        "relay_notifier_oldest_pending_seconds",
        "Age of the oldest delivery still waiting, by notifier, for the kinds that race a deadline (archive: Replicate deletes the files an hour after the job ends)."
    );
    describe_counter!(
        "relay_archive_bytes_total",
        "Bytes of job files an archive notifier kept, by notifier."
    );
}

/// Handles for what is recorded at every webhook and every commit, looked up
/// once. The macros build a key, hash it and find it in the registry at each
/// call, which showed in the request path's profile.
struct Hot {
    answered: Histogram,
    duplicate: Counter,
    /// By [`Kind::NAMES`], then by [`Status::KNOWN`]; any other status is
    /// counted by its own name.
    received: Vec<Vec<Counter>>,
    commit: Histogram,
    batch: Histogram,
}

static HOT: OnceLock<Hot> = OnceLock::new();

fn hot() -> &'static Hot {
    HOT.get_or_init(|| {
        // A handle taken before the recorder is installed would record nothing.
        handle();
        Hot {
            answered: histogram!("relay_webhook_seconds"),
            duplicate: counter!("relay_webhooks_duplicate_total"),
            received: Kind::NAMES
                .iter()
                .map(|&kind| {
                    Status::KNOWN
                        .iter()
                        .map(|&status| {
                            counter!("relay_webhooks_received_total", "kind" => kind, "status" => status)
                        })
                        .collect()
                })
                .collect(),
            commit: histogram!("relay_store_commit_seconds"),
            batch: histogram!("relay_store_batch_size"),
        }
    })
}

pub fn webhook_received(kind: &str, status: &str) {
    let known = Kind::NAMES.iter().position(|&k| k == kind).and_then(|k| {
        let s = Status::KNOWN.iter().position(|&s| s == status)?;
        Some(&hot().received[k][s])
    });
    match known {
        Some(counter) => counter.increment(1),
        None => counter!("relay_webhooks_received_total", "kind" => kind.to_owned(), "status" => status.to_owned()).increment(1),
    }
}

pub fn webhook_rejected(reason: &'static str) {
    counter!("relay_webhooks_rejected_total", "reason" => reason).increment(1);
}

pub fn webhook_duplicate() {
    hot().duplicate.increment(1);
}

pub fn webhook_answered(seconds: f64) {
    hot().answered.record(seconds);
}

pub fn store_commit(seconds: f64, batch: usize) {
    let hot = hot();
    hot.commit.record(seconds);
    hot.batch.record(batch as f64);
}

/// `result` is `sent`, `retried` or `dead`.
pub fn delivery(notifier: &str, result: &'static str) {
    counter!("relay_deliveries_total", "notifier" => notifier.to_owned(), "result" => result)
        .increment(1);
}

pub fn delivery_latency(notifier: &str, seconds: f64) {
    histogram!("relay_delivery_latency_seconds", "notifier" => notifier.to_owned()).record(seconds);
}

pub fn rate_limited(notifier: &str) {
    counter!("relay_rate_limited_total", "notifier" => notifier.to_owned()).increment(1);
}

/// A supervised task panicked (it is restarted).
pub fn task_panicked(task: &'static str) {
    counter!("relay_task_panics_total", "task" => task).increment(1);
}

/// A notifier panicked while rendering or sending one delivery.
pub fn delivery_panicked(notifier: &str) {
    counter!("relay_delivery_panics_total", "notifier" => notifier.to_owned()).increment(1);
}

pub fn config_reload(ok: bool) {
    counter!("relay_config_reloads_total", "result" => if ok { "ok" } else { "failed" })
        .increment(1);
}

/// The outbox's gauges: deliveries waiting, dead and held, and how long the
/// oldest waiting one has waited (0 when none does).
pub fn outbox(pending: i64, dead: i64, held: i64, oldest_pending_age_ms: Option<i64>) {
    gauge!("relay_outbox_pending").set(pending as f64);
    gauge!("relay_outbox_dead").set(dead as f64);
    gauge!("relay_outbox_held").set(held as f64);
    let age = oldest_pending_age_ms.map_or(0.0, |ms| ms.max(0) as f64 / 1000.0);
    gauge!("relay_outbox_oldest_pending_seconds").set(age);
}

/// The HTTPS certificate now served expires at `not_after`.
pub fn certificate_expiry(not_after: std::time::SystemTime) {
    let secs = not_after
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    gauge!("relay_tls_certificate_expiry_timestamp_seconds").set(secs);
    CERTIFICATE_EXPIRY.store(secs as i64, std::sync::atomic::Ordering::Relaxed);
}

/// When the certificate now served expires, in Unix seconds (0: none
/// served), for the dashboard.
static CERTIFICATE_EXPIRY: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// When the HTTPS certificate now served expires, in Unix seconds, if one is.
pub fn certificate_expires_at() -> Option<i64> {
    let secs = CERTIFICATE_EXPIRY.load(std::sync::atomic::Ordering::Relaxed);
    (secs > 0).then_some(secs)
}

pub fn acme_order(ok: bool) {
    counter!("relay_acme_orders_total", "result" => if ok { "ok" } else { "failed" }).increment(1);
}

/// Memory held now by bodies whose signature is not yet checked.
pub fn unverified_bytes(bytes: u64) {
    gauge!("relay_unverified_bytes").set(bytes as f64);
}

/// Client connections open now, on every listener.
pub fn connections(open: usize) {
    gauge!("relay_connections").set(open as f64);
}

/// The daemon closed a connection: `reason` is `slow`, `idle` or `evicted`.
pub fn connection_closed(reason: &'static str) {
    counter!("relay_connections_closed_total", "reason" => reason).increment(1);
}

/// Bytes an archive notifier kept.
pub fn archive_bytes(notifier: &str, bytes: u64) {
    counter!("relay_archive_bytes_total", "notifier" => notifier.to_owned()).increment(bytes);
}

/// The age of each notifier's oldest waiting delivery; a notifier that had
/// one at the last scrape and has none now reads 0.
pub fn oldest_waiting(now_ms: i64, oldest: &[(String, i64)]) {
    use std::collections::BTreeSet;
    use std::sync::{Mutex, PoisonError};
    static SHOWN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut shown = SHOWN.lock().unwrap_or_else(PoisonError::into_inner);
    let now: BTreeSet<String> = oldest.iter().map(|(n, _)| n.clone()).collect();
    for gone in shown.difference(&now) {
        gauge!("relay_notifier_oldest_pending_seconds", "notifier" => gone.clone()).set(0.0);
    }
    for (notifier, created_ms) in oldest {
        let age = (now_ms - created_ms).max(0) as f64 / 1000.0;
        gauge!("relay_notifier_oldest_pending_seconds", "notifier" => notifier.clone()).set(age);
    }
    *shown = now;
}
