//! What the ACME server sees while it validates an order, and the
//! certificate served the rest of the time.
//!
//! [`Resolver`] is what rustls asks at each ordinary handshake: the
//! certificate obtained. [`Challenges`] holds an order's answers: on this
//! instance, and, on a store several instances share, in the store too, so
//! whichever instance the CA reaches answers it. [`AcmeAcceptor`] reads a
//! client's hello before choosing: one offering only ALPN `acme-tls/1` is
//! the CA checking a TLS-ALPN-01 challenge (RFC 8737) and gets the
//! self-signed certificate carrying the key authorization's digest for
//! the name it asked for; the connection ends after that handshake.
//! HTTP-01 answers (RFC 8555 §8.3) are served by [`http01`] on
//! `http_listen`.
//!
//! What a stranger can make this do is bounded: the store is asked only
//! for a name in `domains` or a token shaped as ACME tokens are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;

use super::cache::{Cache, CacheError};
use crate::store::Shared;

/// The ALPN protocol of TLS-ALPN-01 validation.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The longest HTTP-01 token looked up (ACME tokens are 43 base64url
/// characters at Let's Encrypt; RFC 8555 asks for at least 22).
const MAX_TOKEN: usize = 128;

/// How long a store lookup for a challenge answer may wait its turn.
const LOOKUP_WAIT: Duration = Duration::from_secs(2);

/// The certificate served to every ordinary connection.
#[derive(Debug, Default)]
pub struct Resolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl Resolver {
    /// Serves `certified` to every new connection from now on.
    pub fn serve(&self, certified: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(certified);
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if current.is_none() {
            tracing::debug!(
                message = "TLS handshake refused: no certificate obtained yet.",
                sni = hello.server_name()
            );
        }
        current
    }
}

/// The answers of an order under way, here and in a shared store.
pub struct Challenges {
    /// TLS-ALPN-01 certificates by domain name.
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 key authorizations by token.
    http: Mutex<HashMap<String, String>>,
    /// The names a TLS-ALPN-01 answer may be for (lowercase).
    domains: Vec<String>,
    cache: Cache,
    /// Store lookups, one at a time.
    lookups: OneAtATime,
}

impl Challenges {
    pub fn new(domains: &[String], cache: Cache) -> Self {
        Challenges {
            alpn: Mutex::default(),
            http: Mutex::default(),
            domains: domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            cache,
            lookups: OneAtATime::new(LOOKUP_WAIT),
        }
    }

    /// The shared file `name` (under the challenges' prefix), when the
    /// store is shared and answers in time.
    async fn look_up(&self, name: &str) -> Option<Vec<u8>> {
        let (shared, prefix) = self.shared()?;
        let name = format!("{prefix}{name}");
        self.lookups
            .run(async { shared.load(&name).await.ok().flatten() })
            .await
    }

    fn shared(&self) -> Option<(&dyn Shared, String)> {
        Some((self.cache.shared()?, self.cache.challenges()))
    }

    /// Answers the TLS-ALPN-01 challenge for `domain` with a certificate
    /// carrying `digest` (SHA-256 of the key authorization).
    pub async fn answer_alpn(&self, domain: &str, digest: &[u8]) -> Result<(), AnswerError> {
        let certified = alpn_certificate(domain, digest).map_err(AnswerError::Alpn)?;
        lock(&self.alpn).insert(domain.to_ascii_lowercase(), Arc::new(certified));
        if let Some((shared, prefix)) = self.shared() {
            let name = format!("{prefix}tls-alpn-01/{}", domain.to_ascii_lowercase());
            shared
                .save(vec![(name, digest.to_vec())])
                .await
                .map_err(|e| AnswerError::Cache(e.into()))?;
        }
        Ok(())
    }

    /// Answers the HTTP-01 challenge `token` with `key_authorization`.
    pub async fn answer_http(
        &self,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), AnswerError> {
        lock(&self.http).insert(token.to_owned(), key_authorization.to_owned());
        if let Some((shared, prefix)) = self.shared() {
            let name = format!("{prefix}http-01/{token}");
            shared
                .save(vec![(name, key_authorization.as_bytes().to_vec())])
                .await
                .map_err(|e| AnswerError::Cache(e.into()))?;
        }
        Ok(())
    }

    /// Forgets every challenge answer: the order is over.
    pub async fn clear(&self) {
        lock(&self.alpn).clear();
        lock(&self.http).clear();
        if let Some((shared, prefix)) = self.shared()
            && let Err(e) = shared.delete(&prefix).await
        {
            // Harmless: an answer to an order that is over validates nothing.
            tracing::debug!(message = "Could not delete the ACME challenge answers from the store.", error = %e);
        }
    }

    /// The HTTP-01 answer for `token`: this instance's, else the store's.
    pub async fn http(&self, token: &str) -> Option<String> {
        if let Some(answer) = lock(&self.http).get(token).cloned() {
            return Some(answer);
        }
        if !plausible_token(token) {
            return None;
        }
        String::from_utf8(self.look_up(&format!("http-01/{token}")).await?).ok()
    }

    /// The TLS-ALPN-01 certificate for `domain`: this instance's, else one
    /// made from the store's answer.
    pub async fn alpn(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        let domain = domain.to_ascii_lowercase();
        if let Some(certified) = lock(&self.alpn).get(&domain).cloned() {
            return Some(certified);
        }
        if !self.domains.contains(&domain) {
            return None;
        }
        let digest = self.look_up(&format!("tls-alpn-01/{domain}")).await?;
        alpn_certificate(&domain, &digest).ok().map(Arc::new)
    }
}

/// Work a stranger can cause, run one at a time, each waiting its turn at
/// most so long: a flood of TLS hellos offering `acme-tls/1`, or of GETs
/// of challenge paths, holds one store connection at most, never the pool
/// the intake writes through. (The CA's own few validations of a name
/// just take turns.)
struct OneAtATime {
    permit: tokio::sync::Semaphore,
    wait: Duration,
}

impl OneAtATime {
    fn new(wait: Duration) -> Self {
        OneAtATime {
            permit: tokio::sync::Semaphore::new(1),
            wait,
        }
    }

    /// `work`'s answer, or `None` when its turn did not come (or it did
    /// not finish) within the wait.
    async fn run<T>(&self, work: impl Future<Output = Option<T>>) -> Option<T> {
        let turn = async {
            let _permit = self.permit.acquire().await.ok()?;
            work.await
        };
        tokio::time::timeout(self.wait, turn).await.ok()?
    }
}

/// Whether `token` could be an ACME token (base64url, RFC 8555 §8.1):
/// only such a token is looked up in the store.
fn plausible_token(token: &str) -> bool {
    (1..=MAX_TOKEN).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Why an answer could not be put where the CA will look.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error(
        "cannot make the TLS-ALPN-01 answer: {0}; set server.tls.acme.http_listen to answer HTTP-01 instead"
    )]
    Alpn(rcgen::Error),
    #[error("cannot share the answer with the other instances: {0}")]
    Cache(CacheError),
}

/// TLS for `[server.tls.acme]`: reads the client's hello, then answers a
/// TLS-ALPN-01 validation with its challenge certificate, and everyone
/// else with the certificate obtained.
#[derive(Clone)]
pub struct AcmeAcceptor {
    pub config: Arc<rustls::ServerConfig>,
    pub challenges: Arc<Challenges>,
}

impl AcmeAcceptor {
    pub async fn accept(
        &self,
        io: TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        let hello = start.client_hello();
        let challenged = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        if !challenged {
            return start.into_stream(self.config.clone()).await;
        }
        let name = hello.server_name().map(str::to_owned);
        let certified = match name {
            Some(name) => self.challenges.alpn(&name).await,
            None => None,
        };
        let Some(certified) = certified else {
            return Err(std::io::Error::other(
                "a TLS-ALPN-01 validation for a name with no challenge under way",
            ));
        };
        start.into_stream(alpn_config(certified)).await
    }
}

/// The settings of a TLS-ALPN-01 answer: that certificate, that protocol.
fn alpn_config(certified: Arc<CertifiedKey>) -> Arc<rustls::ServerConfig> {
    #[derive(Debug)]
    struct Only(Arc<CertifiedKey>);
    impl ResolvesServerCert for Only {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }
    let mut config = super::super::tls::server_config(Arc::new(Only(certified)), &[]);
    Arc::make_mut(&mut config).alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    config
}

/// The self-signed certificate of RFC 8737 §3: `domain` as its only name,
/// and the critical `id-pe-acmeIdentifier` extension holding `digest`.
fn alpn_certificate(domain: &str, digest: &[u8]) -> Result<CertifiedKey, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|_| rcgen::Error::CouldNotParseKeyPair)?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|_| rcgen::Error::CouldNotParseKeyPair)?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

/// The HTTP-01 responder for `http_listen`: the key authorization at
/// `/.well-known/acme-challenge/<token>`, and a pointer to HTTPS
/// everywhere else.
pub fn http01(
    challenges: Arc<Challenges>,
) -> impl warp::Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone
{
    use warp::Filter;
    use warp::http::StatusCode;
    use warp::reply::Reply;

    let answer = warp::get()
        .and(warp::path!(".well-known" / "acme-challenge" / String))
        .then(move |token: String| {
            let challenges = challenges.clone();
            async move {
                match challenges.http(&token).await {
                    Some(key_authorization) => warp::reply::with_header(
                        key_authorization,
                        "content-type",
                        "application/octet-stream",
                    )
                    .into_response(),
                    None => {
                        warp::reply::with_status("no such ACME challenge\n", StatusCode::NOT_FOUND)
                            .into_response()
                    }
                }
            }
        });
    let elsewhere = warp::any().map(|| {
        warp::reply::with_status(
            "This port answers ACME HTTP-01 challenges only; webhooks go to the https:// URL.\n",
            StatusCode::NOT_FOUND,
        )
        .into_response()
    });
    answer.or(elsewhere).unify()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn store_lookups_a_stranger_causes_run_one_at_a_time_and_give_up() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let gate = Arc::new(OneAtATime::new(Duration::from_millis(250)));
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let runs: Vec<_> = (0..10)
            .map(|i| {
                let (gate, now, most) = (gate.clone(), now.clone(), most.clone());
                tokio::spawn(async move {
                    gate.run(async {
                        /// Leaves on drop too: a run given up mid-work.
                        struct Inside(Arc<AtomicUsize>);
                        impl Drop for Inside {
                            fn drop(&mut self) {
                                self.0.fetch_sub(1, Ordering::SeqCst);
                            }
                        }
                        most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                        let _inside = Inside(now.clone());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Some(i)
                    })
                    .await
                })
            })
            .collect();
        let mut answered = 0;
        for run in runs {
            answered += usize::from(run.await.unwrap().is_some());
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "never two at once");
        // 100 ms each, 250 ms to wait: two get their turn, the rest give up.
        assert_eq!(answered, 2);
    }

    #[test]
    fn only_tokens_shaped_as_acme_makes_them_are_looked_up() {
        for (token, looked_up) in [
            ("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0", true),
            ("a", true),
            (&"A".repeat(MAX_TOKEN), true),
            (&"A".repeat(MAX_TOKEN + 1), false),
            ("", false),
            ("../../etc/passwd", false),
            ("a%2Fb", false),
            ("tok en", false),
            ("tök", false),
        ] {
            assert_eq!(plausible_token(token), looked_up, "{token}");
        }
    }
}
