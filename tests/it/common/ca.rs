//! A certificate authority made by a test, and the certificates it signs:
//! for the daemon's HTTPS, the test SMTP server's STARTTLS and the HTTPS
//! benchmark (which includes this file by path).

use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, Certificate, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA made now (ECDSA P-256, as rcgen makes by default).
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM, for a client's `--ca-file`.
    pub pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: with rcgen's default, shared by every
        // certificate it makes, OpenSSL clients (curl) take a leaf for
        // self-signed.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "replicate-relay test CA");
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for localhost and 127.0.0.1 (a fresh key and serial
    /// each time): its DER, and its key.
    pub fn leaf(&self) -> (Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert, key)
    }

    /// A certificate made from `params` for `key`, signed by this CA.
    pub fn sign(&self, params: CertificateParams, key: &KeyPair) -> Certificate {
        params.signed_by(key, &self.issuer).unwrap()
    }

    /// [`TestCa::leaf`] written as a full chain (leaf, then this CA) and its
    /// key, PEM, as certbot writes them; returns the leaf.
    pub fn issue(&self, cert_file: &Path, key_file: &Path) -> CertificateDer<'static> {
        let (cert, key) = self.leaf();
        std::fs::write(cert_file, format!("{}{}", cert.pem(), self.pem)).unwrap();
        std::fs::write(key_file, key.serialize_pem()).unwrap();
        cert.der().clone()
    }

    /// A TLS server's settings serving [`TestCa::leaf`] (ring, TLS 1.2
    /// and 1.3).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let (chain, key) = self.leaf_der();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        Arc::new(config)
    }

    /// [`TestCa::leaf`] as rustls serves it.
    pub fn leaf_der(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let (cert, key) = self.leaf();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }
}

/// A TLS client's settings that trust `root` alone (ring, TLS 1.2 and 1.3).
pub fn trusting(root: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}
