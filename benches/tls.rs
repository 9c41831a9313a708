//! HTTPS benchmark: `cargo bench --bench tls [-- --events N --connections C
//! --handshakes H --rounds R]`.
//!
//! Starts the release daemon twice per round, on plain HTTP and on HTTPS
//! (certificate files from a CA made by the run), in alternation, and
//! measures on each: ingest (N validly signed webhooks over C keep-alive
//! connections: the cost of TLS on a connection Replicate keeps open) and
//! new connections per second (H connections, C at a time, each a TCP
//! connect, for HTTPS a full handshake, one `GET /healthz` and close). It
//! prints HTTPS / HTTP for both, measured in the same run. Results:
//! BENCHMARKS.md.

#[path = "../tests/it/common/ca.rs"]
#[allow(dead_code)] // the tests use more of it
mod ca;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use replicate_relay::signature::Secret;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const SECRET: &str = "whsec_YmVuY2htYXJrLXNlY3JldC1mb3ItcmVwbGljYXRlLXJlbGF5";

struct Options {
    events: usize,
    connections: usize,
    handshakes: usize,
    rounds: usize,
}

fn options() -> Options {
    let mut o = Options {
        events: 30_000,
        connections: 32,
        handshakes: 5_000,
        rounds: 3,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let n = || pair[1].parse().expect("a number");
        match pair[0].as_str() {
            "--events" => o.events = n(),
            "--connections" => o.connections = n(),
            "--handshakes" => o.handshakes = n(),
            "--rounds" => o.rounds = n(),
            _ => {}
        }
    }
    o
}

fn main() {
    replicate_relay::install_crypto_provider();
    let o = options();
    let dir = tempfile::tempdir().unwrap();
    let root = make_certificates(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "{} events over {} connections, {} new connections, {} rounds",
        o.events, o.connections, o.handshakes, o.rounds
    );
    println!(
        "| round | HTTP ingest/s | HTTPS ingest/s | ratio | HTTP new conn/s | HTTPS new conn/s | ratio |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for round in 1..=o.rounds {
        let mut ingest = [0.0; 2];
        let mut fresh = [0.0; 2];
        for (i, tls) in [false, true].into_iter().enumerate() {
            let (mut child, port, state) = start(dir.path(), tls, round);
            let client = tls.then(|| ca::trusting(&root));
            ingest[i] = rt.block_on(ingest_rate(port, &client, &o, round * 10 + i));
            fresh[i] = rt.block_on(connection_rate(port, &client, &o));
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(state);
        }
        println!(
            "| {round} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} |",
            ingest[0],
            ingest[1],
            ingest[1] / ingest[0],
            fresh[0],
            fresh[1],
            fresh[1] / fresh[0]
        );
    }
}

/// A CA, and a certificate it signed for localhost written as the daemon's
/// files; returns the CA certificate.
fn make_certificates(dir: &Path) -> CertificateDer<'static> {
    let ca = ca::TestCa::new();
    ca.issue(&dir.join("fullchain.pem"), &dir.join("privkey.pem"));
    ca.der.clone()
}

/// The release daemon on a fresh store, plain or HTTPS; waits until it answers.
fn start(dir: &Path, tls: bool, round: usize) -> (Child, u16, PathBuf) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let state = dir.join(format!("state-{round}-{tls}"));
    std::fs::create_dir_all(&state).unwrap();
    let tls_section = if tls {
        format!(
            "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            dir.join("fullchain.pem").display(),
            dir.join("privkey.pem").display()
        )
    } else {
        String::new()
    };
    let config = state.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{tls_section}\n[verify]\nsecret = \"{SECRET}\"\n\n[store]\npath = \"relay.db\"\n"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_replicate-relay"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port, state)
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connection to the daemon, through TLS when `client` is given.
async fn open(port: u16, client: &Option<Arc<rustls::ClientConfig>>) -> Box<dyn Stream> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    match client {
        None => Box::new(tcp),
        Some(config) => Box::new(
            tokio_rustls::TlsConnector::from(config.clone())
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap(),
        ),
    }
}

/// Writes `request` and reads the answer; returns its status code.
async fn exchange(stream: &mut Box<dyn Stream>, request: &[u8], buf: &mut Vec<u8>) -> u16 {
    stream.write_all(request).await.unwrap();
    buf.clear();
    loop {
        assert!(stream.read_buf(buf).await.unwrap() > 0, "connection closed");
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut res = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = res.parse(buf) {
            let length: usize = res
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            let status = res.code.unwrap();
            while buf.len() < head + length {
                assert!(stream.read_buf(buf).await.unwrap() > 0);
            }
            return status;
        }
    }
}

/// Signed webhooks per second over keep-alive connections.
async fn ingest_rate(
    port: u16,
    client: &Option<Arc<rustls::ClientConfig>>,
    o: &Options,
    salt: usize,
) -> f64 {
    let secret = Secret::parse(SECRET).unwrap();
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let requests: Vec<Vec<u8>> = (0..o.events)
        .map(|n| {
            let id = format!("msg_bench{salt}x{n:012}");
            let body = format!(
                r#"{{"id":"p{salt}x{n}","status":"succeeded","model":"acme/m","input":{{"prompt":"{}"}},"output":["https://replicate.delivery/x/out-0.webp"],"metrics":{{"predict_time":2.1}}}}"#,
                "a lighthouse at dusk ".repeat(60)
            );
            let sig = secret.sign(&id, ts, body.as_bytes());
            let mut r = format!(
                "POST /hooks/replicate HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\ncontent-length: {}\r\nwebhook-id: {id}\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {sig}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(body.as_bytes());
            r
        })
        .collect();
    let per = requests.len().div_ceil(o.connections);
    let chunks: Vec<Vec<Vec<u8>>> = requests.chunks(per).map(|c| c.to_vec()).collect();
    let started = Instant::now();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut stream = open(port, &client).await;
                let mut buf = Vec::with_capacity(4096);
                let mut ok = 0;
                for r in chunk {
                    if exchange(&mut stream, &r, &mut buf).await == 200 {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    assert_eq!(ok, o.events, "every webhook answered 200");
    ok as f64 / started.elapsed().as_secs_f64()
}

/// New connections per second, each with one request.
async fn connection_rate(
    port: u16,
    client: &Option<Arc<rustls::ClientConfig>>,
    o: &Options,
) -> f64 {
    let request = b"GET /healthz HTTP/1.1\r\nhost: relay\r\n\r\n";
    let per = o.handshakes.div_ceil(o.connections);
    let started = Instant::now();
    let tasks: Vec<_> = (0..o.connections)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(1024);
                for _ in 0..per {
                    let mut stream = open(port, &client).await;
                    assert_eq!(exchange(&mut stream, request, &mut buf).await, 200);
                    let _ = stream.shutdown().await;
                }
                per
            })
        })
        .collect();
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}
