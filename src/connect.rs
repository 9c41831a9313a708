//! The outbound HTTPS connector every client of the daemon shares — the
//! notifiers, `send`, the ACME client: hyper over rustls (ring), trusting
//! the system's root certificates or a given CA file. Plain `http://` is
//! allowed because the operator chose the URL (a service on the same host,
//! a test receiver).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

/// Why a connector could not be made: what to fix is in the message.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error(
        "cannot load the system's root certificates ({0}); install the ca-certificates package"
    )]
    RootCertificates(#[source] std::io::Error),
    #[error("cannot read {}: {source}", path.display())]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: not a CA certificate: {source}", path.display())]
    NotCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("no TLS version both rustls and ring support: {0}")]
    Protocols(#[source] rustls::Error),
}

/// An HTTPS-or-HTTP connector with the native root store.
pub fn connector() -> Result<HttpsConnector<HttpConnector>, ConnectorError> {
    Ok(finish(
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(ConnectorError::RootCertificates)?,
    ))
}

/// [`connector`] trusting the certificates in `ca_file` (PEM) instead of
/// the system's roots.
pub fn connector_trusting(ca_file: &Path) -> Result<HttpsConnector<HttpConnector>, ConnectorError> {
    let tls = with_roots(trusted(ca_file)?)?;
    Ok(finish(
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls),
    ))
}

/// The TLS settings every connector here uses, for a client that brings
/// its own connector (an archive's, whose resolver refuses private
/// addresses): the system's roots, or `ca_file`'s.
pub fn client_tls(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ConnectorError> {
    let roots = match ca_file {
        Some(file) => trusted(file)?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ConnectorError::RootCertificates(std::io::Error::other(
                    found
                        .errors
                        .first()
                        .map_or_else(|| "no certificates found".to_owned(), |e| e.to_string()),
                )));
            }
            roots
        }
    };
    with_roots(roots)
}

/// The CA certificates in `ca_file` (PEM).
fn trusted(ca_file: &Path) -> Result<rustls::RootCertStore, ConnectorError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let path = || ca_file.to_owned();
    let pem = std::fs::read(ca_file).map_err(|source| ConnectorError::ReadCa {
        path: path(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|source| ConnectorError::Pem {
            path: path(),
            source,
        })?;
        roots.add(cert).map_err(|source| ConnectorError::NotCa {
            path: path(),
            source,
        })?;
    }
    if roots.is_empty() {
        return Err(ConnectorError::NoCertificate { path: path() });
    }
    Ok(roots)
}

/// rustls on ring, TLS 1.2 and 1.3, trusting `roots`.
fn with_roots(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, ConnectorError> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(ConnectorError::Protocols)?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// The connector for `roots`: https or plain http (the operator chose the
/// URL), HTTP/1.1 and HTTP/2.
fn finish(
    roots: hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes>,
) -> HttpsConnector<HttpConnector> {
    roots.https_or_http().enable_http1().enable_http2().build()
}

/// An error with its sources, which is where hyper puts the useful part.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
