//! Shared test support: the project's Replicate fixtures, a settable clock,
//! and a real daemon on 127.0.0.1:0 over a temporary directory.
#![allow(dead_code)] // each test binary uses a different part of this

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use replicate_relay::clock::Clock;
use replicate_relay::config::{self, Config};
use replicate_relay::server::{self, Running};
use replicate_relay::signature::Secret;
use replicate_relay::store::{Admin, DeliveryFilter, Listed, StoreError};

pub mod browser;
pub mod ca;
pub mod dashboard;
pub mod files;
pub mod https;
pub mod pebble;
pub mod postgres;
pub mod root;
pub mod rule;
pub mod s3;
pub mod senders;
pub mod serve;
pub mod skip;
pub mod smtp;
pub mod stand_ins;

/// Where the project's Replicate bodies live: the examples users see, and
/// the rest of the fixture set (see `tests/fixtures/README.md`).
pub fn fixture_dirs() -> [PathBuf; 2] {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    [root.join("examples"), root.join("tests/fixtures")]
}

/// The path of fixture `name`, in whichever of [`fixture_dirs`] holds it.
pub fn fixture_path(name: &str) -> PathBuf {
    fixture_dirs()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no fixture {name} in examples/ or tests/fixtures/"))
}

/// One fixture body with the headers Replicate would send with it, signed
/// with [`SECRET`] at [`FIXTURE_TIME`].
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub body: Vec<u8>,
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
}

/// When every fixture was "sent" (2026-11-24T12:00:00Z): tests that post them as
/// signed need a clock near it.
pub const FIXTURE_TIME: i64 = 1_795_521_600;

/// The test secret and every fixture, signed, sorted by name.
pub fn fixtures() -> (String, Vec<Fixture>) {
    let mut out = Vec::new();
    for dir in fixture_dirs() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let body = std::fs::read(&path).unwrap();
            let id = format!("msg_{}", name.trim_end_matches(".json"));
            let signature = Secret::parse(SECRET)
                .unwrap()
                .sign(&id, FIXTURE_TIME, &body);
            out.push(Fixture {
                name,
                body,
                id,
                timestamp: FIXTURE_TIME,
                signature,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        out.len() >= 12,
        "expected every kind × status, found {}",
        out.len()
    );
    (SECRET.to_owned(), out)
}

/// Our own secret for tests that sign their own payloads.
pub const SECRET: &str = "whsec_dGVzdC1zZWNyZXQtZm9yLXJlbGF5LXRlc3Rz";

/// A clock the test moves by hand.
#[derive(Debug, Default)]
pub struct TestClock(AtomicI64);

impl TestClock {
    pub fn at(now: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(now)))
    }
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now_unix(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A prediction body shaped like the fixtures.
pub fn payload(id: &str, status: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id,
        "model": "acme/test-model",
        "version": "0123456789abcdef",
        "input": {"prompt": "a test"},
        "logs": "step 1\nstep 2\n",
        "output": null,
        "error": null,
        "status": status,
        "created_at": "2026-11-20T14:03:11.482915Z",
        "started_at": "2026-11-20T14:03:12.007341Z",
        "completed_at": "2026-11-20T14:03:15.330268Z",
        "urls": {"get": format!("https://api.replicate.com/v1/predictions/{id}")},
        "metrics": {"predict_time": 3.3}
    }))
    .unwrap()
}

/// Signature headers for `body`, signed now with `secret`.
pub fn signed(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let sig = Secret::parse(secret).unwrap().sign(id, timestamp, body);
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", sig),
    ]
}

/// Writes `relay.toml` in `dir`: port 0, store `relay.db` in `dir`, `secret`,
/// plus `extra` TOML appended (which may add sections but not repeat these).
/// With HTTPS in `extra`, `/metrics` moves to a port of its own, as it does
/// by default: port 0 too, so tests running at once do not share one.
pub fn write_config(dir: &Path, secret: &str, extra: &str) -> PathBuf {
    let file = dir.join("relay.toml");
    let metrics = if extra.contains("[server.tls") {
        "metrics = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    // Tests running at once must not race for the dashboard's default port.
    let dashboard = if extra.contains("[dashboard]") {
        ""
    } else {
        "[dashboard]\nlisten = false\n\n"
    };
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{metrics}\n[verify]\nsecret = \"{secret}\"\n\n[store]\npath = \"relay.db\"\n\n{dashboard}{extra}"
        ),
    )
    .unwrap();
    file
}

/// Adds `keys` (TOML lines) at the top of the `[server]` section of the
/// config `file` that [`write_config`] wrote.
pub fn server_keys(file: &Path, keys: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    std::fs::write(
        file,
        text.replacen("[server]\n", &format!("[server]\n{keys}"), 1),
    )
    .unwrap();
}

/// The body of a GET of `url`, as text (`/metrics`, say).
pub async fn get_text(url: &str) -> String {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap()
}

/// `replicate-relay ARGS --config CONFIG` run to its end; asserts it
/// succeeded and returns what it printed on stdout.
pub fn run_relay(args: &[&str], config: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replicate-relay"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "replicate-relay {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A daemon started through the library, as `serve` starts it.
pub struct Daemon {
    pub running: Running,
    pub config: Config,
    pub base: String,
}

impl Daemon {
    pub async fn start(config_file: &Path, clock: Arc<dyn Clock>) -> Self {
        let config = config::load_with_env(config_file, []).unwrap_or_else(|e| panic!("{e}"));
        let running = server::start(&config, clock)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let base = format!("http://{}", running.local_addr());
        Self {
            running,
            config,
            base,
        }
    }

    pub fn hook_url(&self) -> String {
        format!("{}{}", self.base, self.config.server.path)
    }

    pub async fn stop(self) {
        assert!(self.running.shutdown(Duration::from_secs(10)).await);
    }
}

/// POSTs `body` with `headers` and returns (status, JSON body).
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let mut req = client.post(url).body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = req.send().await.expect("request reaches the daemon");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {text:?}"));
    (status, json)
}

/// Polls the outbox of the store at `db` until `done` holds for its deliveries.
pub async fn wait_deliveries(
    db: &Path,
    within: Duration,
    done: impl Fn(&[Listed]) -> bool,
) -> Vec<Listed> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let rows = match open_beside(db) {
            Ok(store) => store
                .deliveries(DeliveryFilter::All, 1000)
                .await
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if done(&rows) || std::time::Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `GET /healthz` until it answers 200 or `within` passes; returns the
/// last status.
pub async fn wait_healthy(daemon: &Daemon, within: Duration) -> u16 {
    let deadline = std::time::Instant::now() + within;
    loop {
        let status = reqwest::get(format!("{}/healthz", daemon.base))
            .await
            .map_or(0, |r| r.status().as_u16());
        if status == 200 || std::time::Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Signs `body` with [`SECRET`] now and posts it to the daemon; asserts a 200.
pub async fn post_signed(daemon: &Daemon, webhook_id: &str, body: &[u8]) {
    let headers = signed(SECRET, webhook_id, now(), body);
    let (status, answer) = post(
        &reqwest::Client::new(),
        &daemon.hook_url(),
        &headers,
        body.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

/// The body of fixture `name`.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap()
}

/// The store at `db` opened for the command line's work, beside a daemon
/// that may be running on it (`store::open_admin`).
pub fn open_beside(db: &Path) -> Result<Box<dyn Admin>, StoreError> {
    replicate_relay::store::open_admin(&config::StoreConfig {
        path: db.to_owned(),
        keep: Duration::from_secs(30 * 86_400),
        postgres: None,
    })
}
