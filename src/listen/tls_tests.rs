//! Certificate files: what is served, what is refused and why, and reloads
//! that keep the certificate in use when the new one is broken.

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};

use super::*;

/// A self-signed certificate for `localhost` and its key, as PEM.
fn pair(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
    let key = KeyPair::generate_for(alg).unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn what_is_served_and_what_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ec_cert, ec_key) = pair(&PKCS_ECDSA_P256_SHA256);
    let (ed_cert, ed_key) = pair(&PKCS_ED25519);
    let chain = format!("{ec_cert}{ed_cert}");
    let cases: Vec<(&str, &str, &str, Option<&str>)> = vec![
        ("ecdsa", &ec_cert, &ec_key, None),
        ("ed25519", &ed_cert, &ed_key, None),
        ("a chain, leaf first", &chain, &ec_key, None),
        (
            "the other pair's key",
            &ec_cert,
            &ed_key,
            Some("does not belong to the certificate"),
        ),
        (
            "no certificate",
            "hello",
            &ec_key,
            Some("holds no PEM certificate"),
        ),
        (
            "the key as certificate",
            &ec_key,
            &ec_key,
            Some("holds no PEM certificate"),
        ),
        (
            "no key",
            &ec_cert,
            &ec_cert,
            Some("holds no PEM private key"),
        ),
        (
            "a broken key",
            &ec_cert,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            Some("the key cannot be used"),
        ),
    ];
    for (what, cert, key, refused) in cases {
        let cert_path = write(dir.path(), "cert.pem", cert);
        let key_path = write(dir.path(), "key.pem", key);
        match (load(&cert_path, &key_path), refused) {
            (Ok(_), None) => {}
            (Err(e), Some(why)) => assert!(e.to_string().contains(why), "{what}: {e}"),
            (Ok(_), Some(why)) => panic!("{what}: served, but should be refused: {why}"),
            (Err(e), None) => panic!("{what}: refused: {e}"),
        }
    }
    let missing = load(&dir.path().join("nope.pem"), &dir.path().join("key.pem")).unwrap_err();
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
}

#[test]
fn a_reload_serves_a_new_pair_and_keeps_the_old_one_when_the_new_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let (cert1, key1) = pair(&PKCS_ECDSA_P256_SHA256);
    let cert = write(dir.path(), "cert.pem", &cert1);
    let key = write(dir.path(), "key.pem", &key1);
    let certificates = Certificates::new(&cert, &key).unwrap();
    let served = |c: &Certificates| c.current.read().unwrap().cert[0].clone();
    let first = served(&certificates);
    assert!(
        !certificates.reload(None).unwrap(),
        "unchanged files: nothing new"
    );

    let (cert2, key2) = pair(&PKCS_ED25519);
    write(dir.path(), "cert.pem", &cert2);
    write(dir.path(), "key.pem", &key2);
    assert!(certificates.reload(None).unwrap());
    let second = served(&certificates);
    assert_ne!(first, second);

    // A renewal that went wrong: the certificate without its key.
    let (cert3, _) = pair(&PKCS_ECDSA_P256_SHA256);
    write(dir.path(), "cert.pem", &cert3);
    let e = certificates.reload(None).unwrap_err();
    assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
    assert_eq!(served(&certificates), second, "the one in use stays");
    assert!(
        matches!(certificates.reload(None), Err(TlsError::Mismatch { .. })),
        "a reload of the same broken files says so again, not that all is well"
    );
    assert_eq!(served(&certificates), second);

    // A reload naming other files that are broken is refused whole: the
    // files watched stay those of the certificate in use.
    let other = write(dir.path(), "other.pem", "not a certificate");
    assert!(certificates.reload(Some((&other, &key))).is_err());
    assert_eq!(certificates.files().0, cert);
}
