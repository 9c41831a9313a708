//! Let's Encrypt's test ACME server, `pebble`, with its DNS stand-in
//! `pebble-challtestsrv` answering 127.0.0.1 for every name, so pebble
//! validates challenges against the daemon on this machine for real: no
//! `PEBBLE_VA_ALWAYS_VALID`.
//!
//! Both come from Debian's `pebble` package; `.ci/run` installs it. A test
//! needing them skips when they are absent, except under `CI=true`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::ca::TestCa;
use super::stand_ins::free_port;

pub struct Pebble {
    /// The directory URL.
    pub directory: String,
    /// The root of pebble's own HTTPS listener (`directory_ca_file`).
    pub listener_root: PathBuf,
    /// The root pebble signs certificates with (fetched from it).
    pub issuer_root: CertificateDer<'static>,
    children: Vec<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

/// Whether pebble is here; a test is skipped when not ([`super::skip`]).
pub fn available(test: &str) -> bool {
    let here = Command::new("pebble")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    super::skip::unless(
        here,
        test,
        "pebble (apt install pebble; .ci/run installs it)",
    )
}

impl Pebble {
    /// Starts pebble validating TLS-ALPN-01 on `tls_port` and HTTP-01 on
    /// `http_port` of 127.0.0.1, its files in `dir`.
    pub fn start(dir: &Path, tls_port: u16, http_port: u16) -> Pebble {
        let ca = TestCa::new();
        let (leaf, key) = ca.leaf();
        let (cert_file, key_file) = (dir.join("pebble-cert.pem"), dir.join("pebble-key.pem"));
        std::fs::write(&cert_file, leaf.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let listener_root = dir.join("pebble-root.pem");
        std::fs::write(&listener_root, &ca.pem).unwrap();

        let (acme, management, dns, dns_management) =
            (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert_file,
            "privateKey": key_file,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_file = dir.join("pebble.json");
        std::fs::write(&config_file, config.to_string()).unwrap();

        let log = Arc::new(Mutex::new(Vec::new()));
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv starts");
        let mut pebble = Command::new("pebble")
            .args(["-config", config_file.to_str().unwrap()])
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pebble starts");
        for out in [
            Box::new(pebble.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(pebble.stderr.take().unwrap()),
        ] {
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let mut this = Pebble {
            directory: format!("https://127.0.0.1:{acme}/dir"),
            listener_root,
            issuer_root: CertificateDer::from(Vec::new()),
            children: vec![dns_server, pebble],
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let root_pem = loop {
            match super::https::get(&ca.der, "127.0.0.1", management, "/roots/0") {
                Ok((_, pem)) => break pem,
                Err(e) if Instant::now() > deadline => {
                    panic!("pebble did not come up: {e}\n{}", this.log())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        this.issuer_root = CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap();
        this
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// How many orders pebble has been asked for.
    pub fn orders(&self) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("POST /order-plz"))
            .count()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
