//! Hostile input, one table: every request an attacker, a broken proxy or a
//! confused client could send, with the answer it must get. Afterwards the
//! daemon must still be serving. Requests are written byte by byte over TCP so
//! nothing (an HTTP client library) cleans them up first.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::signature::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod cases;
use cases::{Body, Case, Expect, cases};

/// Sends one case over a fresh connection; returns the status (None if the
/// connection closed without an answer) and how long until the answer or close.
async fn send(addr: std::net::SocketAddr, case: &Case) -> (Option<u16>, Duration) {
    let started = std::time::Instant::now();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: relay.test\r\n",
        case.method, case.path
    )
    .into_bytes();
    for (k, v) in &case.headers {
        head.extend_from_slice(k.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v);
        head.extend_from_slice(b"\r\n");
    }
    let body = case.body.clone();
    // Written while the answer is read: the daemon may answer and close before
    // everything is sent (413, 408), so write errors are expected.
    let writer = tokio::spawn(async move {
        match body {
            Body::Plain(b) => {
                head.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
                wr.write_all(&head).await?;
                wr.write_all(&b).await?;
            }
            Body::Chunked(b) => {
                head.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                wr.write_all(&head).await?;
                for chunk in b.chunks(64 * 1024) {
                    wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                        .await?;
                    wr.write_all(chunk).await?;
                    wr.write_all(b"\r\n").await?;
                }
                wr.write_all(b"0\r\n\r\n").await?;
            }
            Body::Trickle { len } => {
                head.extend_from_slice(format!("Content-Length: {len}\r\n\r\n").as_bytes());
                wr.write_all(&head).await?;
                for _ in 0..20 {
                    wr.write_all(b"{\"id\":").await?;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
            Body::Declared { len } => {
                head.extend_from_slice(format!("Content-Length: {len}\r\n\r\n").as_bytes());
                wr.write_all(&head).await?;
                tokio::time::sleep(Duration::from_secs(8)).await;
            }
            Body::StallHeaders => {
                wr.write_all(&head).await?;
                tokio::time::sleep(Duration::from_secs(8)).await;
            }
        }
        std::io::Result::Ok(wr)
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), read).await;
    let elapsed = started.elapsed();
    writer.abort();
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|t| t.parse().ok());
    (status, elapsed)
}

#[tokio::test]
async fn every_hostile_request_gets_the_right_answer_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SECRET, "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[server]\n", "[server]\nread_timeout = \"2s\"\n"),
    )
    .unwrap();
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    let addr = daemon.running.local_addr();

    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    // All at once, as an attack would come.
    let handles: Vec<_> = cases
        .into_iter()
        .map(|case| tokio::spawn(async move { (send(addr, &case).await, case) }))
        .collect();
    let mut failures = Vec::new();
    for h in handles {
        let ((got, took), case) = h.await.unwrap();
        let ok = match case.expect {
            Expect::Status(want) => got == Some(want),
            Expect::ClosedSoon => {
                !got.is_some_and(|s| (200..300).contains(&s)) && took < Duration::from_secs(6)
            }
        };
        if !ok {
            failures.push(format!(
                "{}: expected {:?}, got {got:?} after {took:?}",
                case.name, case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Still serving, and only the genuine events were stored.
    let res = reqwest::get(format!("{}/healthz", daemon.base))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    post_signed(&daemon, "msg_after", &payload("p_after", "failed")).await;
    let stored = daemon.running.store().recent(100).await.unwrap();
    assert_eq!(
        stored.len(),
        9,
        "{:?}",
        stored.iter().map(|e| &e.webhook_id).collect::<Vec<_>>()
    );
    let hinted = stored.iter().find(|e| e.webhook_id == "msg_h24").unwrap();
    assert_eq!(hinted.kind, replicate_relay::event::Kind::Training);
    daemon.stop().await;
}
