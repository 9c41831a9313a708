//! A receiver's answers are not trusted: absurd `Retry-After` values, in
//! both forms, pause it for `[delivery] max_pause` at most and never turn
//! into a storm of attempts; an error body of hundreds of megabytes is read
//! no further than a small cap; an SMTP server that answers every step just
//! in time cannot hold a send past the notifier's timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::store::DeliveryState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the stand-in answers one request.
#[derive(Clone)]
enum Answer {
    /// A status line and headers, and an empty body.
    Head(&'static str),
    /// A 500 whose chunked body goes on for `megabytes`.
    Endless { megabytes: u64 },
}

/// A receiver on loopback answering requests in turn from `plan` (the last
/// answer repeats), recording when each arrived and how many body bytes it
/// managed to write.
struct Receiver {
    port: u16,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    written: Arc<AtomicU64>,
}

impl Receiver {
    async fn start(plan: Vec<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let written = Arc::new(AtomicU64::new(0));
        let (a, w) = (arrivals.clone(), written.clone());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let (a, w, plan) = (a.clone(), w.clone(), plan.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut request = Vec::new();
                    loop {
                        // A whole request: its head, then Content-Length bytes.
                        let text = String::from_utf8_lossy(&request).to_lowercase();
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let length: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if body.len() >= length {
                                let n = {
                                    let mut a = a.lock().unwrap();
                                    a.push(Instant::now());
                                    a.len()
                                };
                                let answer = plan[(n - 1).min(plan.len() - 1)].clone();
                                match answer {
                                    Answer::Head(head) => {
                                        let reply = format!("{head}\r\nContent-Length: 0\r\n\r\n");
                                        if s.write_all(reply.as_bytes()).await.is_err() {
                                            return;
                                        }
                                    }
                                    Answer::Endless { megabytes } => {
                                        let _ = s
                                            .write_all(b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n")
                                            .await;
                                        let chunk =
                                            [b"10000\r\n".as_slice(), &[b'x'; 0x10000], b"\r\n"]
                                                .concat();
                                        for _ in 0..megabytes * 16 {
                                            if s.write_all(&chunk).await.is_err() {
                                                return;
                                            }
                                            w.fetch_add(0x10000, Ordering::Relaxed);
                                        }
                                        return;
                                    }
                                }
                                request.clear();
                                continue;
                            }
                        }
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                });
            }
        });
        Self {
            port,
            arrivals,
            written,
        }
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().unwrap().clone()
    }
}

fn config(port: u16) -> String {
    format!(
        "[delivery]\nmax_pause = \"2s\"\n\n[notifiers.n]\ntype = \"webhook\"\nurl = \"http://user:pw@127.0.0.1:{port}/in?token=s3cret\"\n\n[[routes]]\nname = \"all\"\nnotify = [\"n\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_retry_after_values_pause_for_max_pause_and_no_more() {
    let receiver = Receiver::start(vec![
        Answer::Head("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 18446744073709551615"),
        Answer::Head(
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: Fri, 31 Dec 9999 23:59:59 GMT",
        ),
        Answer::Head("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 999999999"),
        Answer::Head("HTTP/1.1 200 OK"),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &write_config(dir.path(), SECRET, &config(receiver.port)),
        Arc::new(SystemClock),
    )
    .await;
    post_signed(&daemon, "msg_absurd", &payload("p_absurd", "failed")).await;
    let rows = wait_deliveries(&dir.path().join("relay.db"), Duration::from_secs(20), |r| {
        r.iter()
            .all(|l| l.delivery.state == DeliveryState::Delivered)
            && !r.is_empty()
    })
    .await;
    assert_eq!(rows[0].delivery.state, DeliveryState::Delivered, "{rows:?}");
    // Four attempts: neither a storm (a pause in the past) nor silence (a
    // pause of years).
    let at = receiver.arrivals();
    assert_eq!(at.len(), 4, "{at:?}");
    for pair in at.windows(2) {
        let gap = pair[1] - pair[0];
        // At least the 2 s max_pause; at most that or the backoff (up to
        // 4 s at the third attempt), and the dispatcher's own latency.
        assert!(gap >= Duration::from_millis(1990), "{gap:?}");
        assert!(gap < Duration::from_secs(8), "{gap:?}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_error_body_is_read_no_further_than_a_small_cap() {
    let receiver = Receiver::start(vec![
        Answer::Endless { megabytes: 300 },
        Answer::Head("HTTP/1.1 200 OK"),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &write_config(dir.path(), SECRET, &config(receiver.port)),
        Arc::new(SystemClock),
    )
    .await;
    post_signed(&daemon, "msg_endless", &payload("p_endless", "failed")).await;
    let db = dir.path().join("relay.db");
    let rows = wait_deliveries(&db, Duration::from_secs(10), |r| {
        r.first().is_some_and(|l| l.delivery.last_error.is_some())
    })
    .await;
    let error = rows[0].delivery.last_error.clone().unwrap();
    // The reason is the body's start, cut; the URL keeps no secret.
    assert!(error.contains("answered HTTP 500"), "{error}");
    assert!(error.len() < 700, "{} bytes: {error}", error.len());
    assert!(
        !error.contains("s3cret") && !error.contains("pw@"),
        "{error}"
    );
    // The daemon stopped reading: the receiver could not write more than
    // the socket buffers hold beyond the 16 KiB read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let written = receiver.written.load(Ordering::Relaxed);
    assert!(written < 16 << 20, "{} MiB written", written >> 20);
    let rows = wait_deliveries(&db, Duration::from_secs(10), |r| {
        r.first()
            .is_some_and(|l| l.delivery.state == DeliveryState::Delivered)
    })
    .await;
    assert_eq!(rows[0].delivery.state, DeliveryState::Delivered);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_server_answering_a_byte_at_a_time_cannot_hold_a_send() {
    // Each read gets a byte within a second, so no single SMTP step times
    // out: only a deadline for the whole send ends it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                for b in b"220-relay.test ESMTP slow\r\n".iter().cycle() {
                    if s.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[notifiers.n]\ntype = \"email\"\nsmtp = \"smtp://127.0.0.1:{port}\"\ntls = \"none\"\nfrom = \"relay@example.org\"\nto = \"ops@example.org\"\ntimeout = \"2s\"\n\n[[routes]]\nname = \"all\"\nnotify = [\"n\"]\n"
    );
    let daemon = Daemon::start(
        &write_config(dir.path(), SECRET, &extra),
        Arc::new(SystemClock),
    )
    .await;
    let sent = Instant::now();
    post_signed(&daemon, "msg_slow_smtp", &payload("p_slow_smtp", "failed")).await;
    let rows = wait_deliveries(&dir.path().join("relay.db"), Duration::from_secs(10), |r| {
        r.first().is_some_and(|l| l.delivery.last_error.is_some())
    })
    .await;
    let error = rows[0].delivery.last_error.clone().unwrap_or_default();
    assert!(error.contains("did not finish within 2s"), "{error}");
    assert!(
        sent.elapsed() < Duration::from_secs(8),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(
        rows[0].delivery.state,
        DeliveryState::Pending,
        "retried later"
    );
    daemon.stop().await;
}
