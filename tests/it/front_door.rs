//! Hostile connections against the real server: sockets that say nothing,
//! or half of something, on every kind of listener (plain HTTP, HTTPS, the
//! ACME HTTP-01 port, a socket from systemd) are closed in time; a flood
//! past the process's descriptor limit never keeps a signed webhook out;
//! forged bodies in flight hold bounded memory, read from /proc.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::ca::TestCa;
use crate::common::serve::{Serve, config_on_port, wait_ready};
use crate::common::stand_ins::free_port;
use crate::common::*;
use replicate_relay::clock::SystemClock;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Beyond the limit under test, what a loaded machine may add.
const SLACK: Duration = Duration::from_secs(4);

/// Reads (and drops) whatever comes until the peer closes; how long that
/// took, or `None` if it stayed open for `within`.
async fn closed_within<R: AsyncRead + Unpin>(mut r: R, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_all)
        .await
        .ok()
        .map(|()| started.elapsed())
}

/// An HTTP/1.1 GET that keeps the connection; returns it after reading the
/// whole answer, whatever its status.
async fn one_request(mut s: TcpStream) -> TcpStream {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&answer).to_lowercase();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a Content-Length");
            if body.len() >= length {
                break;
            }
        }
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering: {text}");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 "), "{answer:?}");
    s
}

/// What a stranger does with a plain connection before going quiet.
async fn opening(addr: SocketAddr, kind: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    match kind {
        "silent" => {}
        "half the HTTP/2 preface" => s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap(),
        "HTTP/2 preface and SETTINGS, no stream" => s
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .unwrap(),
        "half a request head" => s
            .write_all(b"POST /hooks/replicate HTTP/1.1\r\nHost: relay.test\r\n")
            .await
            .unwrap(),
        "keep-alive after one request" => s = one_request(s).await,
        other => panic!("{other}"),
    }
    s
}

const PLAIN_KINDS: [&str; 5] = [
    "silent",
    "half the HTTP/2 preface",
    "HTTP/2 preface and SETTINGS, no stream",
    "half a request head",
    "keep-alive after one request",
];

/// Every kind of quiet connection to `addr` is closed within `limit` (plus
/// slack); returns what failed.
async fn all_closed(addr: SocketAddr, limit: Duration) -> Vec<String> {
    let mut waits = Vec::new();
    for kind in PLAIN_KINDS {
        let s = opening(addr, kind).await;
        waits.push(tokio::spawn(async move {
            (kind, closed_within(s, limit + SLACK).await)
        }));
    }
    // A head trickled a byte at a time: bytes arriving do not reset the clock.
    let mut s = TcpStream::connect(addr).await.unwrap();
    waits.push(tokio::spawn(async move {
        let started = Instant::now();
        for b in b"POST /hooks/replicate HTTP/1.1\r\nHost: relay.test\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if s.write_all(&[*b]).await.is_err() || started.elapsed() > limit + SLACK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let left = (limit + SLACK).saturating_sub(started.elapsed());
        ("trickled head", closed_within(s, left).await)
    }));
    let mut failures = Vec::new();
    for w in waits {
        let (kind, closed) = w.await.unwrap();
        if closed.is_none() {
            failures.push(format!(
                "{addr}: {kind}: still open after {:?}",
                limit + SLACK
            ));
        }
    }
    failures
}

/// The value of metric `name` in `text`, 0 when absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_connections_are_closed_on_http_https_and_the_acme_port() {
    replicate_relay::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let limits = "read_timeout = \"1s\"\nidle_timeout = \"2s\"\n";

    // Plain HTTP.
    let file = write_config(dir.path(), SECRET, "");
    server_keys(&file, limits);
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    let mut failures = all_closed(daemon.running.local_addr(), Duration::from_secs(2)).await;
    let text = get_text(&format!("{}/metrics", daemon.base)).await;
    assert!(
        metric(&text, "relay_connections_closed_total{reason=\"slow\"}") >= 5.0,
        "{text}"
    );
    assert!(
        metric(&text, "relay_connections_closed_total{reason=\"idle\"}") >= 1.0,
        "{text}"
    );
    assert!(metric(&text, "relay_connections ") >= 1.0, "{text}");
    daemon.stop().await;

    // HTTPS from files: quiet before, during and after the handshake.
    let ca = TestCa::new();
    ca.issue(&dir.path().join("cert.pem"), &dir.path().join("key.pem"));
    let file = write_config(
        dir.path(),
        SECRET,
        "[server.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n",
    );
    server_keys(&file, limits);
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    let addr = daemon.running.local_addr();
    let limit = Duration::from_secs(1) + SLACK;
    let silent = TcpStream::connect(addr).await.unwrap();
    let mut half_hello = TcpStream::connect(addr).await.unwrap();
    // A TLS record header promising a 512-byte ClientHello, and 4 bytes of it.
    half_hello
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(crate::common::ca::trusting(&ca.der));
    let name = ServerName::try_from("localhost").unwrap();
    let shaken = tls
        .connect(name.clone(), TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    let mut kept = tls
        .connect(name, TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let (a, b, c, d) = tokio::join!(
        closed_within(silent, limit),
        closed_within(half_hello, limit),
        closed_within(shaken, limit),
        closed_within(kept, Duration::from_secs(2) + SLACK),
    );
    for (kind, closed) in [
        ("no ClientHello", a),
        ("half a ClientHello", b),
        ("a handshake and no request", c),
        ("keep-alive after one request", d),
    ] {
        if closed.is_none() {
            failures.push(format!("HTTPS: {kind}: still open"));
        }
    }
    daemon.stop().await;

    // The ACME HTTP-01 port (the directory is unreachable: no certificate
    // is needed to answer there).
    let http01 = free_port();
    let file = write_config(
        dir.path(),
        SECRET,
        &format!(
            "[server.tls.acme]\ndomains = [\"relay.test\"]\ndirectory = \"https://127.0.0.1:{}/dir\"\nhttp_listen = \"127.0.0.1:{http01}\"\n",
            free_port()
        ),
    );
    server_keys(&file, limits);
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    let acme_addr: SocketAddr = format!("127.0.0.1:{http01}").parse().unwrap();
    failures.extend(all_closed(acme_addr, Duration::from_secs(2)).await);
    daemon.stop().await;

    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_not_served_where_strangers_can_scrape_them() {
    replicate_relay::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.issue(&dir.path().join("cert.pem"), &dir.path().join("key.pem"));
    // HTTPS: /metrics has a listener of its own, on loopback.
    let file = write_config(
        dir.path(),
        SECRET,
        "[server.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n",
    );
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    let port = daemon.running.local_addr().port();
    let metrics = daemon.running.metrics_addr().expect("served");
    assert_ne!(metrics.port(), port);
    assert!(metrics.ip().is_loopback());
    let public = tokio::task::spawn_blocking(move || {
        let answer = crate::common::https::get(&ca.der, "localhost", port, "/metrics");
        let health = crate::common::https::get(&ca.der, "localhost", port, "/healthz");
        (answer, health)
    })
    .await
    .unwrap();
    assert!(
        public.0.unwrap_err().contains("404"),
        "not on the public port"
    );
    assert!(public.1.is_ok(), "health still is");
    let text = get_text(&format!("http://{metrics}/metrics")).await;
    assert!(text.contains("relay_connections"), "{text}");
    let other = reqwest::get(format!("http://{metrics}/healthz"))
        .await
        .unwrap();
    assert_eq!(
        other.status().as_u16(),
        404,
        "the metrics port serves metrics only"
    );
    daemon.stop().await;

    // Turned off: nowhere.
    let file = write_config(dir.path(), SECRET, "");
    server_keys(&file, "metrics = false\n");
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    assert_eq!(daemon.running.metrics_addr(), None);
    let res = reqwest::get(format!("{}/metrics", daemon.base))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    daemon.stop().await;
}

/// `replicate-relay serve` on a socket handed over as systemd does, with
/// at most `nofile` descriptors.
fn serve_limited(config: &std::path::Path, port: u16, nofile: u32) -> Serve {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    Serve::start_with_prefix(
        &["prlimit", &format!("--nofile={nofile}:{nofile}"), "--"],
        config,
        &[],
        vec![listener.into()],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_descriptor_limit_never_keeps_a_signed_webhook_out() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = tempfile::tempdir().unwrap();
    let (file, port) = config_on_port(dir.path(), "");
    server_keys(&file, "read_timeout = \"2s\"\nidle_timeout = \"2s\"\n");
    // 200 descriptors: room for 100 connections.
    let daemon = serve_limited(&file, port, 200);
    wait_ready(port).await;
    assert!(
        daemon
            .wait_log("max_connections=100", Duration::from_secs(5))
            .await,
        "{}",
        daemon.log()
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // Four times as many strangers as fit, from four other hosts (the
    // loopback addresses 127.0.0.2-5), each reconnecting as soon as it is
    // closed: silent sockets and half request heads.
    let flooding = Arc::new(AtomicBool::new(true));
    let opened = Arc::new(AtomicUsize::new(0));
    let mut flood = Vec::new();
    for i in 0..400 {
        let (flooding, opened) = (flooding.clone(), opened.clone());
        let from: SocketAddr = format!("127.0.0.{}:0", 2 + i % 4).parse().unwrap();
        flood.push(tokio::spawn(async move {
            while flooding.load(Ordering::Relaxed) {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(from).unwrap();
                let Ok(mut s) = socket.connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                if i % 2 == 1 {
                    let _ = s.write_all(b"POST /hooks/replicate HTTP/1.1\r\n").await;
                }
                let _ = closed_within(s, Duration::from_secs(30)).await;
            }
        }));
    }
    while opened.load(Ordering::Relaxed) < 400 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Replicate's webhooks keep arriving from their own host, each on a new
    // connection: every one is stored at its first try.
    for i in 0..20 {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let body = payload(&format!("p_flood_{i}"), "succeeded");
        let headers = signed(SECRET, &format!("msg_flood_{i}"), now(), &body);
        let url = format!("http://{addr}/hooks/replicate");
        let (status, answer) = post(&client, &url, &headers, body).await;
        assert_eq!(status, 200, "webhook {i}: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = get_text(&format!("http://{addr}/metrics")).await;
    // At most 100 kept, plus those told to close that are closing: never
    // the whole descriptor table.
    assert!(metric(&metrics, "relay_connections ") < 200.0, "{metrics}");
    assert!(
        metric(
            &metrics,
            "relay_connections_closed_total{reason=\"evicted\"}"
        ) >= 20.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "relay_webhooks_received_total{kind=\"prediction\",status=\"succeeded\"}"
        ) >= 20.0,
        "{metrics}"
    );
    flooding.store(false, Ordering::Relaxed);
    for f in flood {
        f.abort();
    }

    // The socket from systemd closes quiet connections as the bound one does.
    let failures = all_closed(addr, Duration::from_secs(2)).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    daemon.stop_blocking();
}

/// The daemon's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_bodies_in_flight_hold_no_more_than_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (file, port) = config_on_port(dir.path(), "");
    server_keys(&file, "max_unverified = \"16MiB\"\nread_timeout = \"3s\"\n");
    let daemon = Serve::start(&file, &[]);
    wait_ready(port).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Warm: one webhook through the whole path.
    let body = payload("p_warm", "succeeded");
    let headers = signed(SECRET, "msg_warm", now(), &body);
    let url = format!("http://{addr}/hooks/replicate");
    let (status, _) = post(&reqwest::Client::new(), &url, &headers, body).await;
    assert_eq!(status, 200);
    let before = rss(daemon.pid());

    // Forty strangers, each sending all but the last byte of a 9 MiB body
    // under a signature of the right shape, and holding on.
    const LEN: usize = 9 * 1024 * 1024;
    let forged = format!(
        "POST /hooks/replicate HTTP/1.1\r\nHost: x\r\nContent-Length: {LEN}\r\nwebhook-id: msg_forged\r\nwebhook-timestamp: {}\r\nwebhook-signature: v1,{}=\r\n\r\n",
        now(),
        "A".repeat(43)
    );
    let refused = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..40 {
        let (forged, refused) = (forged.clone(), refused.clone());
        senders.push(tokio::spawn(async move {
            let s = TcpStream::connect(addr).await.unwrap();
            let (mut rd, mut wr) = s.into_split();
            let writer = tokio::spawn(async move {
                wr.write_all(forged.as_bytes()).await?;
                wr.write_all(&vec![b' '; LEN - 1]).await?;
                tokio::time::sleep(Duration::from_secs(60)).await;
                std::io::Result::Ok(wr)
            });
            let mut head = [0u8; 12];
            if rd.read_exact(&mut head).await.is_ok() && head.ends_with(b"503") {
                refused.fetch_add(1, Ordering::Relaxed);
            }
            writer.abort_handle()
        }));
    }
    let mut peak = before;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && refused.load(Ordering::Relaxed) < 38 {
        peak = peak.max(rss(daemon.pid()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..25 {
        peak = peak.max(rss(daemon.pid()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.load(Ordering::Relaxed);
    // Two fit in 16 MiB at once (their buffers grow to 9 MiB by doubling:
    // 16 MiB of budget holds one whole and part of another).
    assert!(refused >= 38, "{refused} of 40 refused with 503");
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 48 * 1024 * 1024,
        "grew by {} MiB while forged bodies were in flight (budget 16 MiB)",
        grown >> 20
    );
    for s in senders {
        if let Ok(writer) = s.await {
            writer.abort();
        }
    }
    daemon.stop_blocking();
}
