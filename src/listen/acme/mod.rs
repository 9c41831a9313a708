//! Certificates obtained automatically from an ACME directory
//! (`[server.tls.acme]`; Let's Encrypt by default), kept and renewed.
//!
//! At start the certificate in the cache is served at once if it is still
//! valid, so a restart orders nothing. [`Acme::run`] then sleeps until
//! the certificate is due for renewal — a third of its lifetime before it
//! expires (30 days of Let's Encrypt's 90), or `renew_before` — orders a
//! new one ([`order`]), keeps it, and serves it to new connections while
//! open ones carry on. A failed order is retried with a growing pause
//! (5 minutes, doubling, at most 6 hours: within the CA's limit on failed
//! validations), and every failure is logged with what to fix. A reload
//! (SIGHUP) retries at once.
//!
//! On a store several instances share, the cache is the store's (as
//! Caddy's storage is): one instance at a time orders, holding a leased
//! lock through the order and through the pause after a failure, so the
//! instances together never ask the CA more often than one would; the
//! others serve what it keeps, looking again every few seconds while it
//! orders and every hour otherwise; and any of them answers the CA's
//! challenges ([`Challenges`]).

mod cache;
mod challenge;
mod client;
mod order;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;

use cache::Cache;
pub use challenge::{ACME_TLS_ALPN, AcmeAcceptor, Challenges, Resolver, http01};
use order::AcmeError;

use super::tls;
use super::x509::{self, Validity};
use crate::config::AcmeConfig;
use crate::store::{Lock, Store};

/// The longest sleep between looks at the clock: a machine suspended, or
/// its clock set, is noticed within this (and, on a shared store, a
/// certificate another instance obtained).
const LOOK_EVERY: Duration = Duration::from_secs(3600);

/// How often an instance looks for the certificate another one is ordering.
const WHILE_ANOTHER_ORDERS: Duration = Duration::from_secs(5);

/// How long one order may take, end to end.
const ORDER_TIMEOUT: Duration = Duration::from_secs(600);

/// How long the order lock is held for an order: past its timeout, so it
/// is never taken over while the order runs; an instance that died
/// holding it lets the next one order after this.
const ORDER_LEASE: Duration = Duration::from_secs(660);

/// The certificate for `[server.tls.acme]`: what is served, and the task
/// that keeps it fresh.
pub struct Acme {
    config: AcmeConfig,
    cache: Cache,
    resolver: Arc<Resolver>,
    challenges: Arc<Challenges>,
    /// The validity of the certificate served.
    validity: Mutex<Option<Validity>>,
    retry: tokio::sync::Notify,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("domains", &self.config.domains)
            .finish()
    }
}

impl Acme {
    /// Serves the cached certificate when there is a valid one: from
    /// `cache_dir`, or from `store` when several instances share it.
    pub async fn new(config: AcmeConfig, store: Option<Arc<dyn Store>>) -> Arc<Self> {
        let cache = Cache::new(&config.cache_dir, &config.directory, &config.domains, store);
        let this = Arc::new(Acme {
            challenges: Arc::new(Challenges::new(&config.domains, cache.clone())),
            config,
            cache,
            resolver: Arc::new(Resolver::default()),
            validity: Mutex::new(None),
            retry: tokio::sync::Notify::new(),
        });
        this.load_cached().await;
        this
    }

    /// What rustls asks for a certificate.
    pub fn resolver(&self) -> Arc<Resolver> {
        self.resolver.clone()
    }

    /// The answers to the CA's challenges.
    pub fn challenges(&self) -> Arc<Challenges> {
        self.challenges.clone()
    }

    /// Tries again now rather than at the end of a pause after a failure.
    pub fn retry_now(&self) {
        self.retry.notify_one();
    }

    /// The configuration this was built from (a reload that changes it
    /// needs a restart).
    pub fn config(&self) -> &AcmeConfig {
        &self.config
    }

    async fn load_cached(&self) {
        let cert = self.cache.cert();
        let cert = cert.display();
        match cached_certificate(&self.cache).await {
            Ok(None) => {
                tracing::info!(message = "No ACME certificate cached yet; ordering one.", domains = ?self.config.domains, cache = %cert)
            }
            Err(e) => {
                tracing::warn!(message = "Cannot read the cached ACME certificate; ordering a new one.", cache = %cert, error = %e)
            }
            Ok(Some(Err(e))) => {
                tracing::warn!(message = "The cached ACME certificate cannot be served; ordering a new one.", error = %e)
            }
            Ok(Some(Ok((_, validity)))) if validity.not_after <= SystemTime::now() => {
                tracing::info!(message = "The cached ACME certificate has expired; ordering a new one.", cert = %cert)
            }
            Ok(Some(Ok((certified, validity)))) => {
                tracing::info!(message = "Serving the cached ACME certificate.", cert = %cert, expires = %stamp(validity.not_after));
                self.serve(certified, validity);
            }
        }
    }

    /// Serves the shared store's certificate when it outlasts the one
    /// served: another instance renewed it.
    async fn look_again(&self) {
        let Ok(Some(Ok((certified, validity)))) = cached_certificate(&self.cache).await else {
            return;
        };
        let served = *self.validity.lock().unwrap_or_else(PoisonError::into_inner);
        if served.is_none_or(|s| validity.not_after > s.not_after)
            && validity.not_after > SystemTime::now()
        {
            tracing::info!(message = "Serving the ACME certificate another instance obtained.", expires = %stamp(validity.not_after));
            self.serve(certified, validity);
        }
    }

    fn serve(&self, certified: CertifiedKey, validity: Validity) {
        self.resolver.serve(Arc::new(certified));
        crate::telemetry::certificate_expiry(validity.not_after);
        *self.validity.lock().unwrap_or_else(PoisonError::into_inner) = Some(validity);
    }

    /// When the certificate served is due for renewal; now when there is none.
    fn due(&self) -> SystemTime {
        match *self.validity.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(v) => renew_at(v, self.config.renew_before),
            None => SystemTime::UNIX_EPOCH,
        }
    }

    /// Sleeps `wait`, or until a reload asks to retry now.
    async fn pause(&self, wait: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.retry.notified() => {}
        }
    }

    /// Keeps the certificate fresh; runs until the daemon stops.
    pub async fn run(self: Arc<Self>) {
        let mut failures = 0u32;
        // Who holds the order lock, as last said in the log ("" for a
        // store that could not be asked), so a wait is logged once.
        let mut waiting_for: Option<String> = None;
        loop {
            if self.cache.shared().is_some() {
                self.look_again().await;
            }
            if let Ok(wait) = self.due().duration_since(SystemTime::now())
                && !wait.is_zero()
            {
                self.pause(wait.min(LOOK_EVERY)).await;
                continue;
            }
            // One order at a time among the instances on a shared store.
            let now = crate::clock::now_ms();
            match self.cache.lock_order(now, now + millis(ORDER_LEASE)).await {
                None | Some(Ok(Lock::Taken)) => waiting_for = None,
                Some(Ok(Lock::HeldBy { holder, until_ms })) => {
                    if waiting_for.as_ref() != Some(&holder) {
                        tracing::info!(message = "Another instance holds the ACME order (ordering, or pausing after a failed order); serving the certificate it keeps.", holder, until = %stamp(at_ms(until_ms)));
                        waiting_for = Some(holder);
                    }
                    self.pause(WHILE_ANOTHER_ORDERS).await;
                    continue;
                }
                Some(Err(e)) => {
                    // Said once while the store stays unreachable.
                    if waiting_for.as_deref() != Some("") {
                        tracing::warn!(message = "Cannot take the ACME order lock in the store; trying again every few seconds.", error = %e);
                        waiting_for = Some(String::new());
                    }
                    self.pause(WHILE_ANOTHER_ORDERS).await;
                    continue;
                }
            }
            if self.cache.shared().is_some() {
                // Another instance may have renewed just before the lock
                // was free.
                self.look_again().await;
                if self.due() > SystemTime::now() {
                    self.let_go().await;
                    continue;
                }
            }
            let renewing = self
                .validity
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some();
            tracing::info!(
                message = if renewing { "Renewing the ACME certificate." } else { "Ordering an ACME certificate." },
                domains = ?self.config.domains,
                directory = %self.config.directory,
            );
            let obtained = self.obtain().await;
            crate::telemetry::acme_order(obtained.is_ok());
            match obtained {
                Ok(validity) => {
                    failures = 0;
                    self.let_go().await;
                    let next = renew_at(validity, self.config.renew_before);
                    tracing::info!(message = "ACME certificate obtained; new connections get it.", domains = ?self.config.domains, expires = %stamp(validity.not_after), renews = %stamp(next), cert = %self.cache.cert().display());
                    if let Some(wanted) = self.config.renew_before
                        && wanted >= lifetime(validity)
                    {
                        tracing::warn!(message = "server.tls.acme.renew_before is longer than the certificate's lifetime; renewing a third of the lifetime before expiry instead.", renew_before = %humantime::format_duration(wanted));
                    }
                }
                Err(e) => {
                    failures += 1;
                    let pause = retry_in(failures);
                    // The lock is kept through the pause: another instance
                    // trying at once would spend the CA's failure limit.
                    let now = crate::clock::now_ms();
                    if let Some(Err(e)) = self.cache.lock_order(now, now + millis(pause)).await {
                        tracing::warn!(message = "Cannot keep the ACME order lock through the pause; another instance may try sooner.", error = %e);
                    }
                    let serving =
                        match *self.validity.lock().unwrap_or_else(PoisonError::into_inner) {
                            Some(v) => format!(
                                "still serving the certificate that expires {}",
                                stamp(v.not_after)
                            ),
                            None => "no certificate yet, so HTTPS handshakes fail".into(),
                        };
                    tracing::error!(message = "Could not obtain an ACME certificate; will retry (a reload retries now).", error = %e, retry_in = %humantime::format_duration(pause), serving, attempt = failures);
                    self.pause(pause).await;
                }
            }
        }
    }

    /// Lets go of the order lock, so the next renewal is anyone's.
    async fn let_go(&self) {
        if let Err(e) = self.cache.unlock_order().await {
            // Its lease ends on its own.
            tracing::warn!(message = "Cannot let go of the ACME order lock; it ends with its lease.", error = %e);
        }
    }

    /// One order, kept in the cache and served.
    async fn obtain(&self) -> Result<Validity, AcmeError> {
        let issued = tokio::time::timeout(
            ORDER_TIMEOUT,
            order::order(&self.config, &self.cache, &self.challenges),
        )
        .await
        .map_err(|_| AcmeError::TimedOut(ORDER_TIMEOUT))??;
        let (cert, key) = (issued.cert_pem.as_bytes(), issued.key_pem.as_bytes());
        let (certified, validity) = certified(&self.cache, cert, key).map_err(AcmeError::Issued)?;
        // Served even if it cannot be kept: ordering it again would spend
        // the CA's limit on duplicate certificates (5 a week at Let's Encrypt).
        self.serve(certified, validity);
        if let Err(e) = self.cache.keep_certificate(cert, key).await {
            tracing::error!(message = "The new ACME certificate is served but cannot be kept, so the next start orders another. Make server.tls.acme.cache_dir writable by the daemon's user, or check the store.", cert = %self.cache.cert().display(), error = %e);
        }
        Ok(validity)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn at_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// What the cache holds for `config`, as `check` reports it; an error
/// when the cache cannot be read at all.
pub async fn cached(config: &AcmeConfig) -> Result<String, String> {
    let cache = Cache::new(&config.cache_dir, &config.directory, &config.domains, None);
    let names = config.domains.join(", ");
    match cached_certificate(&cache).await {
        Ok(None) => Ok(format!(
            "ACME: no certificate cached for {names} yet; the daemon orders one when it starts (the CA must reach it on {})",
            if config.http_listen.is_some() {
                "port 80"
            } else {
                "port 443"
            }
        )),
        // A broken cached certificate is no reason to refuse a start: the
        // daemon orders a new one.
        Ok(Some(Err(e))) => Ok(format!(
            "ACME: the cached certificate cannot be served ({e}); the daemon orders a new one at start"
        )),
        Ok(Some(Ok((_, validity)))) => Ok(format!(
            "ACME: certificate for {names} cached in {}, expires {}, renewed from {}",
            cache.cert().display(),
            stamp(validity.not_after),
            stamp(renew_at(validity, config.renew_before))
        )),
        Err(e) => Err(format!("cannot read the cached certificate: {e}")),
    }
}

/// The certificate `cache` holds: none, one that cannot be served (the
/// inner error), or one to serve with its validity. The outer error when
/// the files cannot be read.
async fn cached_certificate(
    cache: &Cache,
) -> Result<Option<Result<(CertifiedKey, Validity), tls::TlsError>>, cache::CacheError> {
    Ok(cache
        .certificate()
        .await?
        .map(|(cert, key)| certified(cache, &cert, &key)))
}

/// `cert` and `key` (PEM) as rustls serves them, with the validity the
/// renewal is timed by; errors name the cache's files.
fn certified(
    cache: &Cache,
    cert: &[u8],
    key: &[u8],
) -> Result<(CertifiedKey, Validity), tls::TlsError> {
    let certified = tls::parse(&cache.cert(), cert, &cache.key(), key)?;
    let validity = x509::validity(&certified.cert[0]).ok_or_else(|| tls::TlsError::BadPem {
        path: cache.cert(),
        reason: "its validity period cannot be read".into(),
    })?;
    Ok((certified, validity))
}

/// When a certificate valid over `v` is renewed: `renew_before` its
/// expiry, or a third of its lifetime before when unset or longer than
/// the lifetime (renewing at once, again and again, helps no one).
pub fn renew_at(v: Validity, renew_before: Option<Duration>) -> SystemTime {
    let lifetime = lifetime(v);
    let before = match renew_before {
        Some(d) if d < lifetime => d,
        _ => lifetime / 3,
    };
    v.not_after - before
}

fn lifetime(v: Validity) -> Duration {
    v.not_after.duration_since(v.not_before).unwrap_or_default()
}

/// The pause after the `failures`th failure in a row.
fn retry_in(failures: u32) -> Duration {
    let minutes = 5u64.saturating_mul(1 << failures.saturating_sub(1).min(16));
    Duration::from_secs(minutes.min(6 * 60) * 60)
}

fn stamp(t: SystemTime) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86400);

    #[test]
    fn renewal_time() {
        let start = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let v = |days: u32| Validity {
            not_before: start,
            not_after: start + days * DAY,
        };
        for (lifetime, renew_before, renews_after_days) in [
            (90, None, 60),
            (45, None, 30),
            (6, None, 4),
            (90, Some(10), 80),
            (90, Some(89), 1),
            // Not at once, forever: a third of the lifetime instead.
            (90, Some(90), 60),
            (90, Some(365), 60),
        ] {
            assert_eq!(
                renew_at(v(lifetime), renew_before.map(|d| d * DAY)),
                start + renews_after_days * DAY,
                "{lifetime} days, renew_before {renew_before:?}"
            );
        }
    }

    #[test]
    fn retries_back_off_to_six_hours() {
        let minutes: Vec<u64> = (1..=10).map(|n| retry_in(n).as_secs() / 60).collect();
        assert_eq!(minutes, [5, 10, 20, 40, 80, 160, 320, 360, 360, 360]);
        assert_eq!(retry_in(u32::MAX).as_secs(), 6 * 3600);
    }
}
