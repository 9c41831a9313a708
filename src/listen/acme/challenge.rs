//! What the ACME server sees while it validates an order, and the
//! certificate served the rest of the time.
//!
//! [`Resolver`] is what rustls asks at each handshake. A client offering
//! only ALPN `acme-tls/1` is the ACME server checking a TLS-ALPN-01
//! challenge (RFC 8737): it gets the self-signed certificate carrying the
//! key authorization's digest for the name it asked for, and the
//! connection ends after the handshake. Everyone else gets the
//! certificate obtained. HTTP-01 answers (RFC 8555 §8.3) are served by
//! [`http01`] on `http_listen`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 validation.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The certificate served, and the challenge answers of an order under way.
#[derive(Debug, Default)]
pub struct Resolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 certificates by domain name.
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 key authorizations by token.
    http: Mutex<HashMap<String, String>>,
}

impl Resolver {
    /// Serves `certified` to every new connection from now on.
    pub fn serve(&self, certified: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(certified);
    }

    /// Answers the TLS-ALPN-01 challenge for `domain` with a certificate
    /// carrying `digest` (SHA-256 of the key authorization).
    pub fn answer_alpn(&self, domain: &str, digest: &[u8]) -> Result<(), rcgen::Error> {
        let certified = alpn_certificate(domain, digest)?;
        lock(&self.alpn).insert(domain.to_owned(), Arc::new(certified));
        Ok(())
    }

    /// Answers the HTTP-01 challenge `token` with `key_authorization`.
    pub fn answer_http(&self, token: &str, key_authorization: &str) {
        lock(&self.http).insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Forgets every challenge answer: the order is over.
    pub fn clear_answers(&self) {
        lock(&self.alpn).clear();
        lock(&self.http).clear();
    }

    /// The HTTP-01 answer for `token`.
    pub fn http_answer(&self, token: &str) -> Option<String> {
        lock(&self.http).get(token).cloned()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let challenged = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        if challenged {
            let name = hello.server_name()?.to_ascii_lowercase();
            return lock(&self.alpn).get(&name).cloned();
        }
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
    resolver: Arc<Resolver>,
) -> impl warp::Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone
{
    use warp::Filter;
    use warp::http::StatusCode;
    use warp::reply::Reply;

    let answer = warp::get()
        .and(warp::path!(".well-known" / "acme-challenge" / String))
        .map(move |token: String| match resolver.http_answer(&token) {
            Some(key_authorization) => warp::reply::with_header(
                key_authorization,
                "content-type",
                "application/octet-stream",
            )
            .into_response(),
            None => warp::reply::with_status("no such ACME challenge\n", StatusCode::NOT_FOUND)
                .into_response(),
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
