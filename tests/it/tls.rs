//! HTTPS from certificate files: a CA made by the test signs the daemon's
//! certificate; clients verify the chain and the name; a renewal is served
//! by new connections after a reload or a change on disk, and a broken one
//! keeps the certificate in use.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::common::ca::TestCa;
use crate::common::*;
use replicate_relay::clock::SystemClock;
use rustls::pki_types::{CertificateDer, ServerName};

const BIN: &str = env!("CARGO_BIN_EXE_replicate-relay");

/// The certificate the daemon at `port` serves to a client that trusts
/// `ca` and checks the name `localhost` (the handshake fails otherwise).
async fn served(ca: &TestCa, port: u16) -> CertificateDer<'static> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(crate::common::ca::trusting(&ca.der))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the chain and the name verify");
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_from_certificate_files_renewed_without_a_restart() {
    replicate_relay::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (
        dir.path().join("fullchain.pem"),
        dir.path().join("privkey.pem"),
    );
    let ca = TestCa::new();
    let first = ca.issue(&cert_file, &key_file);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let config_file = write_config(
        dir.path(),
        SECRET,
        "[server.tls]\ncert_file = \"fullchain.pem\"\nkey_file = \"privkey.pem\"\n",
    );
    let daemon = Daemon::start(&config_file, Arc::new(SystemClock)).await;
    let port = daemon.running.local_addr().port();
    assert_eq!(served(&ca, port).await, first);

    // A signed POST over HTTPS, as Replicate sends one, is stored.
    let url = format!("https://localhost:{port}/hooks/replicate");
    let sent = Command::new(BIN)
        .args(["send", "examples/training-succeeded.json", "--url", &url])
        .args(["--ca-file", ca_file.to_str().unwrap()])
        .args(["--config", config_file.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert!(
        sent.status.success() && stdout.contains("200 OK"),
        "{stdout}{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert_eq!(daemon.running.store().recent(10).await.unwrap().len(), 1);
    // Without the CA, the client refuses the certificate.
    let untrusted = Command::new(BIN)
        .args(["send", "examples/training-succeeded.json", "--url", &url])
        .args(["--config", config_file.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let refused = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        !untrusted.status.success() && refused.contains("certificate"),
        "{refused}"
    );

    // Renewed, then reloaded (what SIGHUP does): new connections get it.
    let second = ca.issue(&cert_file, &key_file);
    let config = replicate_relay::config::load_with_env(&config_file, []).unwrap();
    daemon.running.reload(config.clone()).unwrap();
    assert_eq!(served(&ca, port).await, second);

    // Renewed on disk alone (certbot): served within a few seconds.
    let third = ca.issue(&cert_file, &key_file);
    let mut now = served(&ca, port).await;
    for _ in 0..100 {
        if now == third {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = served(&ca, port).await;
    }
    assert_eq!(now, third, "the change on disk was not picked up");

    // A broken renewal: the old key with a new certificate. Refused on
    // reload with the reason; the one in use keeps serving, on disk too.
    let (other_cert, other_key) = (
        dir.path().join("other.pem"),
        dir.path().join("otherkey.pem"),
    );
    ca.issue(&other_cert, &other_key);
    std::fs::copy(&other_cert, &cert_file).unwrap();
    let refused = daemon.running.reload(config).unwrap_err().to_string();
    assert!(
        refused.contains("does not belong to the certificate"),
        "{refused}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(served(&ca, port).await, third);
    daemon.stop().await;
}

#[test]
fn check_names_the_tls_file_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert_file, key_file) = (
        dir.path().join("fullchain.pem"),
        dir.path().join("privkey.pem"),
    );
    ca.issue(&cert_file, &key_file);
    let (_, other_key) = (dir.path().join("o.pem"), dir.path().join("okey.pem"));
    ca.issue(&dir.path().join("o.pem"), &other_key);
    std::fs::copy(&other_key, &key_file).unwrap();
    let config_file = write_config(
        dir.path(),
        SECRET,
        "[server.tls]\ncert_file = \"fullchain.pem\"\nkey_file = \"privkey.pem\"\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config", config_file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("server.tls.cert_file") && stderr.contains("does not belong"),
        "{stderr}"
    );
    let missing = write_config(
        dir.path(),
        SECRET,
        "[server.tls]\ncert_file = \"nope.pem\"\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config", missing.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.tls.cert_file: ")
            && stderr.contains("nope.pem is not a readable file"),
        "{stderr}"
    );
    assert!(stderr.contains("server.tls.key_file: missing"), "{stderr}");
}
