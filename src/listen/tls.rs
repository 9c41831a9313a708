//! TLS from certificate files (`[server.tls] cert_file`, `key_file`): a full
//! chain and its key in PEM (RSA, ECDSA or Ed25519), served by rustls with
//! TLS 1.2 and 1.3 and ALPN `h2` and `http/1.1`.
//!
//! The certificate in use sits behind [`Certificates`], the resolver rustls
//! asks at each handshake, so a renewal is served by the next connection
//! while open ones carry on. It is read again on SIGHUP and when either file
//! changes on disk (a certbot renewal); a new pair that does not parse, or
//! whose key does not match its certificate, is refused with a log line
//! saying why, and the one in use keeps serving.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

/// How often the files are looked at for a change: two `stat`s.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Why a certificate and key cannot be served. Each names the file to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the full chain, leaf first (certbot's fullchain.pem)"
    )]
    NoCertificate { path: PathBuf },
    #[error("{path}: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error(
        "{path} holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC; certbot's privkey.pem)"
    )]
    NoKey { path: PathBuf },
    #[error("{path}: the key cannot be used: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error(
        "the key in {key} does not belong to the certificate in {cert}; give the pair issued together"
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
}

impl TlsError {
    /// The file to fix (the certificate's, when the two do not match).
    pub fn file(&self) -> &Path {
        match self {
            TlsError::Read { path, .. }
            | TlsError::NoCertificate { path }
            | TlsError::BadPem { path, .. }
            | TlsError::NoKey { path }
            | TlsError::BadKey { path, .. } => path,
            TlsError::Mismatch { cert, .. } => cert,
        }
    }
}

/// Reads and checks the pair of files; what `check` runs too.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    parse(cert, &cert_pem, key, &key_pem)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn parse(
    cert: &Path,
    cert_pem: &[u8],
    key: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: cert.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: key.to_owned(),
        },
        other => TlsError::BadPem {
            path: key.to_owned(),
            reason: other.to_string(),
        },
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| TlsError::BadKey {
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            })
        }
        Err(e) => Err(TlsError::BadPem {
            path: cert.to_owned(),
            reason: format!("the certificate cannot be read: {e}"),
        }),
    }
}

/// The certificate being served, replaced whole when its files change.
pub struct Certificates {
    files: RwLock<(PathBuf, PathBuf)>,
    current: RwLock<Arc<CertifiedKey>>,
    /// A digest of the bytes `current` was loaded from: a reload of the
    /// same files changes nothing.
    digest: Mutex<[u8; 32]>,
    /// The files' modification times and sizes when last read, so the
    /// watch reads them again (and says what is wrong) once per change.
    stamp: Mutex<Option<Stamp>>,
}

type Stamp = [(Option<SystemTime>, u64); 2];

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field(
                "files",
                &*self.files.read().unwrap_or_else(PoisonError::into_inner),
            )
            .finish()
    }
}

impl Certificates {
    /// Loads `cert` and `key`; an error if they cannot be served.
    pub fn new(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let certified = parse(cert, &cert_pem, key, &key_pem)?;
        let expires = expiry(cert, &certified);
        tracing::info!(message = "TLS certificate loaded.", cert = %cert.display(), chain = certified.cert.len(), %expires);
        Ok(Arc::new(Self {
            files: RwLock::new((cert.to_owned(), key.to_owned())),
            current: RwLock::new(Arc::new(certified)),
            digest: Mutex::new(digest(&cert_pem, &key_pem)),
            stamp: Mutex::new(stamp(cert, key)),
        }))
    }

    /// Reads the files again (after a SIGHUP, or a change seen on disk),
    /// from `files` if given (a reloaded config may name others). Returns
    /// whether a new certificate is now served. On an error the one in use
    /// stays, and so do the files watched: a reload naming broken files is
    /// refused whole.
    pub fn reload(&self, files: Option<(&Path, &Path)>) -> Result<bool, TlsError> {
        let watched = self.files();
        let (cert, key) = files
            .map(|(c, k)| (c.to_owned(), k.to_owned()))
            .unwrap_or_else(|| watched.clone());
        let seen = stamp(&cert, &key);
        let result = self.swap_in(&cert, &key);
        if result.is_ok() || (&cert, &key) == (&watched.0, &watched.1) {
            *lock(&self.stamp) = seen;
            *self.files.write().unwrap_or_else(PoisonError::into_inner) = (cert, key);
        }
        result
    }

    /// Serves the pair in `cert` and `key` from now on, unless it is the
    /// one served already; whether it was new.
    fn swap_in(&self, cert: &Path, key: &Path) -> Result<bool, TlsError> {
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let new_digest = digest(&cert_pem, &key_pem);
        if *lock(&self.digest) == new_digest {
            return Ok(false);
        }
        let certified = parse(cert, &cert_pem, key, &key_pem)?;
        let expires = expiry(cert, &certified);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
        *lock(&self.digest) = new_digest;
        tracing::info!(message = "New TLS certificate loaded; new connections get it.", cert = %cert.display(), %expires);
        Ok(true)
    }

    /// Looks at the files every [`WATCH_EVERY`] and reloads them when
    /// either changed. Runs until the daemon stops.
    pub async fn watch(self: Arc<Self>) {
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let (cert, key) = self.files();
            let now = stamp(&cert, &key);
            if now == *lock(&self.stamp) {
                continue;
            }
            // A renewal writes two files; let it finish both.
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Said once per change: the files are read again only when they
            // change again (or on reload).
            if let Err(e) = self.reload(None) {
                tracing::error!(message = "The TLS certificate files changed but cannot be served; still serving the previous certificate. Fix the files (they are read again when they change, or on reload).", error = %e);
            }
        }
    }

    fn files(&self) -> (PathBuf, PathBuf) {
        self.files
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// rustls' server settings for `certificates`: TLS 1.2 and 1.3 (ring),
/// HTTP/2 offered before HTTP/1.1, and `extra_alpn` after them (the ACME
/// challenge's protocol).
pub fn server_config(
    certificates: Arc<dyn ResolvesServerCert>,
    extra_alpn: &[&[u8]],
) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
        .alpn_protocols
        .extend(extra_alpn.iter().map(|p| p.to_vec()));
    Arc::new(config)
}

/// When `certified` expires, for the log line that loads it; published as
/// a metric, and a warning of its own when near: files nobody renews fail
/// quietly otherwise, until Replicate's deliveries do.
fn expiry(cert: &Path, certified: &CertifiedKey) -> String {
    let Some(validity) = super::x509::validity(&certified.cert[0]) else {
        return "unknown".into();
    };
    crate::telemetry::certificate_expiry(validity.not_after);
    let expires = humantime::format_rfc3339_seconds(validity.not_after);
    match validity.not_after.duration_since(SystemTime::now()) {
        Err(_) => {
            tracing::error!(message = "The TLS certificate has expired: HTTPS clients, Replicate among them, refuse it. Renew it.", cert = %cert.display(), %expires)
        }
        Ok(left) if left < EXPIRY_WARNING => {
            tracing::warn!(message = "The TLS certificate expires soon; renew it (certbot renew), or let [server.tls.acme] do it.", cert = %cert.display(), %expires)
        }
        Ok(_) => {}
    }
    expires.to_string()
}

/// How close to its expiry a certificate from files is warned about.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86400);

fn digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(cert);
    h.update([0]);
    h.update(key);
    h.finalize().into()
}

fn stamp(cert: &Path, key: &Path) -> Option<Stamp> {
    let one = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    Some([one(cert)?, one(key)?])
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
