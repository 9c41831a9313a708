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
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(ConnectorError::Protocols)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(finish(
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls),
    ))
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
