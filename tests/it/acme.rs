//! Automatic certificates from a real ACME server, Let's Encrypt's
//! `pebble`, which validates every challenge against the daemon itself
//! (its DNS stand-in points every name here): the daemon obtains a
//! certificate, serves it, serves the cached one after a restart without
//! a new order, renews one near expiry, answers HTTP-01 on `http_listen`
//! when asked to, and says what to fix when validation fails.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::ca::TestCa;
use crate::common::pebble::{self, Pebble};
use crate::common::serve::{Serve, config_on_port};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const DOMAIN: &str = "relay.test";

/// Connects to the daemon on `port` as a client that trusts only `root`
/// and checks the name [`DOMAIN`]; asks `/healthz` over that connection.
/// The served leaf, or why the handshake or the request failed.
fn served(root: &CertificateDer<'static>, port: u16) -> Result<CertificateDer<'static>, String> {
    get(root, port, "/healthz").map(|(leaf, _)| leaf)
}

/// GET `path` over HTTPS as [`served`] does: the leaf, and the body.
fn get(
    root: &CertificateDer<'static>,
    port: u16,
    path: &str,
) -> Result<(CertificateDer<'static>, String), String> {
    crate::common::https::get(root, DOMAIN, port, path)
}

/// Polls [`served`] until a certificate pebble's root verifies is served.
async fn wait_served(pebble: &Pebble, port: u16, daemon: &Serve) -> CertificateDer<'static> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match served(&pebble.issuer_root, port) {
            Ok(leaf) => return leaf,
            Err(e) if Instant::now() > deadline => panic!(
                "no certificate from pebble served: {e}\ndaemon:\n{}\npebble:\n{}",
                daemon.log(),
                pebble.log()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A daemon's config on a free port whose `[server.tls.acme]` (plus
/// `extra`) names a new pebble.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    port: u16,
    /// Where `/metrics` is served: with HTTPS, on a port of its own.
    metrics_port: u16,
    pebble: Pebble,
}

/// [`Setup`] with pebble checking TLS-ALPN-01 on `tls_port` (the daemon's
/// port when `None`) and HTTP-01 on `http_port`; `None` when pebble is not
/// installed (never under CI).
fn setup(test: &str, tls_port: Option<u16>, http_port: u16, extra: &str) -> Option<Setup> {
    if !pebble::available(test) {
        return None;
    }
    replicate_relay::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = config_on_port(dir.path(), "");
    let pebble = Pebble::start(dir.path(), tls_port.unwrap_or(port), http_port);
    let section = format!(
        "[server.tls.acme]\ndomains = [\"{DOMAIN}\"]\ncontact = \"ops@example.com\"\ndirectory = \"{}\"\ndirectory_ca_file = \"{}\"\n{extra}",
        pebble.directory,
        pebble.listener_root.display()
    );
    let metrics_port = crate::common::stand_ins::free_port();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[server]\n",
        &format!("[server]\nmetrics = \"127.0.0.1:{metrics_port}\"\n"),
    );
    std::fs::write(&config, text + &section).unwrap();
    Some(Setup {
        dir,
        config,
        port,
        metrics_port,
        pebble,
    })
}

impl Setup {
    /// Where the cache keeps what came from this pebble.
    fn issuer_dir(&self) -> PathBuf {
        let slug = self
            .pebble
            .directory
            .replace("https://", "")
            .replace([':', '/'], "-");
        self.dir.path().join("acme").join(slug)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obtains_serves_and_reuses_a_certificate_across_restarts() {
    let Some(s) = setup(
        "obtains_serves_and_reuses_a_certificate_across_restarts",
        None,
        1,
        "",
    ) else {
        return;
    };
    let (config, port, pebble) = (&s.config, s.port, &s.pebble);
    let daemon = Serve::start(config, &[]);
    let first = wait_served(pebble, port, &daemon).await;
    assert!(
        daemon
            .wait_log("ACME certificate obtained", Duration::from_secs(5))
            .await,
        "{}",
        daemon.log()
    );
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    let log = daemon.log();
    assert!(log.contains("ACME account created"), "{log}");
    // Its expiry is a metric to alert on, on the metrics port (not the
    // public one).
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", s.metrics_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let expires = replicate_relay::listen::x509::validity(&first)
        .unwrap()
        .not_after
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        metrics.contains(&format!(
            "relay_tls_certificate_expiry_timestamp_seconds {expires}\n"
        )) && metrics.contains("relay_acme_orders_total{result=\"ok\"} 1\n"),
        "{metrics}"
    );
    // Kept where a restart finds it, the key readable by the daemon only.
    let cert = s.issuer_dir().join(DOMAIN).join("cert.pem");
    assert!(cert.is_file());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cert.with_file_name("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "key.pem mode {mode:o}");
    daemon.signal("TERM");
    daemon.wait(Duration::from_secs(15)).await;

    // Restarted: the cached certificate at once, and no new order.
    let daemon = Serve::start(config, &[]);
    assert!(
        daemon
            .wait_log(
                "Serving the cached ACME certificate",
                Duration::from_secs(10)
            )
            .await,
        "{}",
        daemon.log()
    );
    let again = wait_served(pebble, port, &daemon).await;
    assert_eq!(again, first);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pebble.orders(), 1, "a restart ordered again");
    assert!(!daemon.log().contains("Ordering"), "{}", daemon.log());

    // `check` reports the cached certificate.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replicate-relay"))
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ACME: certificate for relay.test cached"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_a_certificate_near_its_expiry() {
    let Some(s) = setup("renews_a_certificate_near_its_expiry", None, 1, "") else {
        return;
    };
    // An earlier certificate in the cache, 60 days long with 10 left: past
    // the point a third of its lifetime before expiry.
    let old_ca = TestCa::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![DOMAIN.to_owned()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(50);
    params.not_after = now + time::Duration::days(10);
    let old = old_ca.sign(params, &key);
    let cache = s.issuer_dir().join(DOMAIN);
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("cert.pem"), old.pem() + &old_ca.pem).unwrap();
    std::fs::write(cache.join("key.pem"), key.serialize_pem()).unwrap();

    let daemon = Serve::start(&s.config, &[]);
    assert!(
        daemon
            .wait_log(
                "Serving the cached ACME certificate",
                Duration::from_secs(10)
            )
            .await,
        "{}",
        daemon.log()
    );
    let renewed = wait_served(&s.pebble, s.port, &daemon).await;
    assert_ne!(&renewed, old.der());
    assert!(
        daemon.log().contains("Renewing the ACME certificate"),
        "{}",
        daemon.log()
    );
    assert_eq!(s.pebble.orders(), 1);
    // Served first, then kept: the log line follows the keeping.
    assert!(
        daemon
            .wait_log("ACME certificate obtained", Duration::from_secs(10))
            .await,
        "{}",
        daemon.log()
    );
    let kept = std::fs::read(cache.join("cert.pem")).unwrap();
    assert_eq!(
        CertificateDer::pem_slice_iter(&kept)
            .next()
            .unwrap()
            .unwrap(),
        renewed,
        "the renewal is kept for the next start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_http01_on_http_listen() {
    let http_port = crate::common::stand_ins::free_port();
    let Some(s) = setup(
        "answers_http01_on_http_listen",
        Some(1),
        http_port,
        &format!("http_listen = \"127.0.0.1:{http_port}\"\n"),
    ) else {
        return;
    };
    // Two names on one certificate: two authorizations answered.
    let config = std::fs::read_to_string(&s.config).unwrap().replace(
        "domains = [\"relay.test\"]",
        "domains = [\"relay.test\", \"hooks.test\"]",
    );
    std::fs::write(&s.config, config).unwrap();
    let daemon = Serve::start(&s.config, &[]);
    let leaf = wait_served(&s.pebble, s.port, &daemon).await;
    let (other, _) =
        crate::common::https::get(&s.pebble.issuer_root, "hooks.test", s.port, "/healthz").unwrap();
    assert_eq!(other, leaf);
    // Anything but a challenge on that port points to HTTPS.
    let text = reqwest::get(format!("http://127.0.0.1:{http_port}/hooks/replicate"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("ACME HTTP-01 challenges only"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_http01_on_systemds_second_socket() {
    // Two ListenStream= lines: 443, then 80. The config's addresses are
    // not the sockets': the sockets win.
    let (https, http) = (
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let (port, http_port) = (
        https.local_addr().unwrap().port(),
        http.local_addr().unwrap().port(),
    );
    let Some(s) = setup(
        "answers_http01_on_systemds_second_socket",
        Some(1),
        http_port,
        "http_listen = \"127.0.0.1:1\"\n",
    ) else {
        return;
    };
    let daemon = Serve::start_with_sockets(&s.config, &[], vec![https.into(), http.into()]);
    wait_served(&s.pebble, port, &daemon).await;
    assert!(!daemon.log().contains("more sockets than are used"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_validation_says_what_to_fix() {
    // pebble validates on a port where nothing listens.
    let nobody = crate::common::stand_ins::free_port();
    let Some(s) = setup("a_failed_validation_says_what_to_fix", Some(nobody), 1, "") else {
        return;
    };
    let daemon = Serve::start(&s.config, &[]);
    assert!(
        daemon
            .wait_log(
                "Could not obtain an ACME certificate",
                Duration::from_secs(60)
            )
            .await,
        "{}\npebble:\n{}",
        daemon.log(),
        s.pebble.log()
    );
    let log = daemon.log();
    for want in [
        "relay.test",
        "open that port in the firewall",
        "retry_in=5m",
        "no certificate yet",
    ] {
        assert!(log.contains(want), "{want}: {log}");
    }
    // Fixed the firewall? A reload tries again at once, not in 5 minutes.
    daemon.signal("HUP");
    assert!(
        daemon.wait_log("attempt=2", Duration::from_secs(60)).await,
        "{}",
        daemon.log()
    );
    assert!(daemon.log().contains("retry_in=10m"), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_directory_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let nobody = crate::common::stand_ins::free_port();
    let (config, port) = config_on_port(
        dir.path(),
        &format!(
            "[server.tls.acme]\ndomains = [\"{DOMAIN}\"]\ndirectory = \"https://127.0.0.1:{nobody}/dir\"\n"
        ),
    );
    let daemon = Serve::start(&config, &[]);
    assert!(
        daemon
            .wait_log(
                "Could not obtain an ACME certificate",
                Duration::from_secs(30)
            )
            .await,
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "cannot reach the ACME directory https://127.0.0.1:{nobody}/dir: client error (Connect)"
        )) && log.contains("Connection refused")
            && log.contains("firewall"),
        "{log}"
    );
    // Listening on loopback, not 443: said before any order fails.
    assert!(log.contains("checks TLS-ALPN-01 on port 443"), "{log}");
    // Meanwhile the daemon listens; HTTPS waits for a certificate.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_cannot_be_kept_is_served_and_not_ordered_again() {
    let Some(s) = setup(
        "a_certificate_that_cannot_be_kept_is_served_and_not_ordered_again",
        None,
        1,
        "",
    ) else {
        return;
    };
    // A file where the certificate's folder goes: no one can write there,
    // root included.
    std::fs::create_dir_all(s.issuer_dir()).unwrap();
    std::fs::write(s.issuer_dir().join(DOMAIN), "in the way").unwrap();

    let daemon = Serve::start(&s.config, &[]);
    wait_served(&s.pebble, s.port, &daemon).await;
    assert!(
        daemon
            .wait_log("served but cannot be kept", Duration::from_secs(5))
            .await,
        "{}",
        daemon.log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.pebble.orders(), 1, "ordered again: {}", daemon.log());
}

mod shared;
