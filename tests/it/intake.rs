//! The intake end to end: the real server on 127.0.0.1:0, a real SQLite file.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use crate::common::root::{Immutable, root_or_skip};
use crate::common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::event::{Job, Kind};

mod lasting;

#[tokio::test]
async fn every_fixture_is_accepted_and_stored_with_its_kind_and_status() {
    let (secret, fixtures) = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::at(0);
    let daemon = Daemon::start(&write_config(dir.path(), &secret, ""), clock.clone()).await;
    let client = reqwest::Client::new();

    for f in &fixtures {
        clock.set(f.timestamp + 30);
        let headers = vec![
            ("webhook-id", f.id.clone()),
            ("webhook-timestamp", f.timestamp.to_string()),
            ("webhook-signature", f.signature.clone()),
            ("content-type", "application/json".to_owned()),
        ];
        let (status, body) = post(&client, &daemon.hook_url(), &headers, f.body.clone()).await;
        assert_eq!(status, 200, "{}: {body}", f.name);
        assert_eq!(body["status"], "accepted", "{}", f.name);
    }

    let stored = daemon.running.store().recent(100).await.unwrap();
    assert_eq!(stored.len(), fixtures.len());
    for f in &fixtures {
        let row = stored.iter().find(|e| e.webhook_id == f.id).unwrap();
        // `kind-status[-what].json`
        let mut parts = f.name.trim_end_matches(".json").split('-');
        let (kind, status) = (parts.next().unwrap(), parts.next().unwrap());
        assert_eq!(
            (row.kind.as_str(), row.status.as_str()),
            (kind, status),
            "{}",
            f.name
        );
        assert_eq!(row.body, f.body, "{}: the raw bytes are kept", f.name);
        // The typed model reads every fixture.
        let job = Job::parse(row.kind, &row.body).unwrap();
        assert_eq!(job.common().id, row.object_id);
        assert_eq!(job.common().status.as_str(), status);
    }
    daemon.stop().await;
}

#[tokio::test]
async fn bad_signatures_are_refused_with_401() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&write_config(dir.path(), SECRET, ""), Arc::new(SystemClock)).await;
    let client = reqwest::Client::new();
    let body = payload("p_sig", "succeeded");
    let now = now();
    let good = signed(SECRET, "msg_sig", now, &body);
    let wrong_secret = signed("whsec_b3RoZXItc2VjcmV0", "msg_sig", now, &body);
    let mut changed = body.clone();
    changed[10] ^= 1;

    let with = |name: &str, value: String| -> Vec<(&'static str, String)> {
        good.iter()
            .map(|(k, v)| (*k, if *k == name { value.clone() } else { v.clone() }))
            .collect()
    };
    let without = |name: &str| -> Vec<(&'static str, String)> {
        good.iter().filter(|(k, _)| *k != name).cloned().collect()
    };
    let stale = signed(SECRET, "msg_sig", now - 600, &body);
    let future = signed(SECRET, "msg_sig", now + 600, &body);

    type Case = (
        &'static str,
        Vec<(&'static str, String)>,
        Vec<u8>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "changed body byte",
            good.clone(),
            changed,
            "no signature matches",
        ),
        (
            "wrong secret",
            wrong_secret,
            body.clone(),
            "no signature matches",
        ),
        ("stale timestamp", stale, body.clone(), "old"),
        ("future timestamp", future, body.clone(), "future"),
        (
            "no webhook-id",
            without("webhook-id"),
            body.clone(),
            "missing header `webhook-id`",
        ),
        (
            "no webhook-timestamp",
            without("webhook-timestamp"),
            body.clone(),
            "webhook-timestamp",
        ),
        (
            "no webhook-signature",
            without("webhook-signature"),
            body.clone(),
            "webhook-signature",
        ),
        (
            "malformed signature",
            with("webhook-signature", "sha256=abc".into()),
            body.clone(),
            "no `v1,<base64>`",
        ),
        (
            "timestamp not a number",
            with("webhook-timestamp", "soon".into()),
            body.clone(),
            "Unix time",
        ),
        (
            "other webhook-id",
            with("webhook-id", "msg_other".into()),
            body.clone(),
            "no signature matches",
        ),
    ];
    for (name, headers, body, why) in cases {
        let (status, answer) = post(&client, &daemon.hook_url(), &headers, body).await;
        assert_eq!(status, 401, "{name}: {answer}");
        assert_eq!(answer["error"], "unauthorized", "{name}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(why), "{name}: {message}");
    }
    assert!(
        daemon.running.store().recent(10).await.unwrap().is_empty(),
        "nothing forged got in"
    );

    // Key rotation: a good entry beside a wrong one passes.
    let good_sig = good[2].1.clone();
    let rotated = with(
        "webhook-signature",
        format!("v1,d3JvbmctZW50cnktaGVyZQ== {good_sig}"),
    );
    let (status, answer) = post(&client, &daemon.hook_url(), &rotated, body.clone()).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("accepted")),
        "{answer}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_duplicated_signature_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&write_config(dir.path(), SECRET, ""), Arc::new(SystemClock)).await;
    let body = payload("p_dup_header", "failed");
    let mut headers = signed(SECRET, "msg_dup_header", now(), &body);
    headers.push(("webhook-signature", headers[2].1.clone()));
    let (status, answer) = post(&reqwest::Client::new(), &daemon.hook_url(), &headers, body).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("more than once")
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_repeated_webhook_id_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&write_config(dir.path(), SECRET, ""), Arc::new(SystemClock)).await;
    let client = reqwest::Client::new();
    let body = payload("p_twice", "succeeded");
    let headers = signed(SECRET, "msg_twice", now(), &body);
    let (s1, a1) = post(&client, &daemon.hook_url(), &headers, body.clone()).await;
    let (s2, a2) = post(&client, &daemon.hook_url(), &headers, body).await;
    assert_eq!((s1, a1["status"].as_str()), (200, Some("accepted")));
    assert_eq!((s2, a2["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(a1["event"], a2["event"]);
    assert_eq!(daemon.running.store().recent(10).await.unwrap().len(), 1);
    daemon.stop().await;
}

#[tokio::test]
async fn bodies_that_are_not_events_get_400() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&write_config(dir.path(), SECRET, ""), Arc::new(SystemClock)).await;
    let client = reqwest::Client::new();
    let cases: &[(&str, &[u8], &str)] = &[
        ("not JSON", b"status=succeeded", "not valid JSON"),
        (
            "JSON array",
            br#"[{"id":"a","status":"failed"}]"#,
            "not an object",
        ),
        ("no id", br#"{"status":"failed"}"#, "`id` is missing"),
        ("no status", br#"{"id":"a"}"#, "`status` is missing"),
        (
            "id of the wrong type",
            br#"{"id":5,"status":"failed"}"#,
            "`id` must be",
        ),
        (
            "not UTF-8",
            b"{\"id\":\"\xff\",\"status\":\"failed\"}",
            "not valid JSON",
        ),
    ];
    for (i, (name, body, why)) in cases.iter().enumerate() {
        let headers = signed(SECRET, &format!("msg_bad_{i}"), now(), body);
        let (status, answer) = post(&client, &daemon.hook_url(), &headers, body.to_vec()).await;
        assert_eq!(status, 400, "{name}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(why),
            "{name}: {answer}"
        );
    }
    assert!(daemon.running.store().recent(10).await.unwrap().is_empty());
    daemon.stop().await;
}

/// Sends a raw HTTP/1.1 request and returns the status code.
fn raw_status(addr: std::net::SocketAddr, request: &[u8], then: &[u8]) -> u16 {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    // The daemon may answer and close before all of it is sent: ignore write errors.
    let _ = stream.write_all(then);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"))
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_with_or_without_content_length() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SECRET, "");
    server_keys(&config, "max_body = \"64KiB\"\n");
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    let client = reqwest::Client::new();

    // Just under the limit is fine.
    let mut body = payload("p_big", "succeeded");
    body.pop();
    let pad = 64 * 1024 - body.len() - 20;
    body.extend_from_slice(format!(",\"pad\":\"{}\"}}", "x".repeat(pad)).as_bytes());
    assert!(body.len() <= 64 * 1024);
    let headers = signed(SECRET, "msg_big_ok", now(), &body);
    let (status, answer) = post(&client, &daemon.hook_url(), &headers, body).await;
    assert_eq!(status, 200, "{answer}");

    // Declared too large: refused from the header alone.
    let big = vec![b' '; 64 * 1024 + 1];
    let headers = signed(SECRET, "msg_big", now(), &big);
    let (status, answer) = post(&client, &daemon.hook_url(), &headers, big).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("max_body"));

    // Chunked, no Content-Length: refused once what arrived passes the limit
    // (the signature has the right shape, so only the body can refuse it).
    let addr = daemon.running.local_addr();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nwebhook-id: msg_chunked\r\nwebhook-timestamp: {}\r\nwebhook-signature: v1,{}\r\n\r\n",
        daemon.config.server.path,
        now(),
        "A".repeat(43) + "="
    );
    let chunk = vec![b'x'; 16 * 1024];
    let mut rest = Vec::new();
    for _ in 0..8 {
        rest.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        rest.extend_from_slice(&chunk);
        rest.extend_from_slice(b"\r\n");
    }
    rest.extend_from_slice(b"0\r\n\r\n");
    let status = tokio::task::spawn_blocking(move || raw_status(addr, head.as_bytes(), &rest))
        .await
        .unwrap();
    assert_eq!(status, 413);
    assert_eq!(daemon.running.store().recent(10).await.unwrap().len(), 1);
    daemon.stop().await;
}

/// A request head for the hook with well-shaped signature headers that
/// match no body, declaring `len` bytes.
fn forged_head(path: &str, len: usize) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nwebhook-id: msg_forged\r\nwebhook-timestamp: {}\r\nwebhook-signature: v1,{}=\r\n\r\n",
        now(),
        "A".repeat(43)
    )
    .into_bytes()
}

#[tokio::test]
async fn unverified_bodies_share_one_memory_budget_and_get_503_past_it() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SECRET, "");
    server_keys(
        &config,
        "max_body = \"256KiB\"\nmax_unverified = \"512KiB\"\n",
    );
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    let addr = daemon.running.local_addr();
    let path = daemon.config.server.path.clone();

    // Two forged bodies of 256 KiB, most of each sent, then held open: their
    // buffers hold the whole budget.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&forged_head(&path, 256 * 1024)).await.unwrap();
        s.write_all(&vec![b' '; 200 * 1024]).await.unwrap();
        holders.push(s);
    }
    // A third body, however small, finds nothing left: 503 at once, with
    // Retry-After, rather than memory growing.
    let probe = |path: String| {
        let mut request = forged_head(&path, 1024);
        request.extend_from_slice(&[b' '; 1024]);
        tokio::task::spawn_blocking(move || raw_status(addr, &request, b""))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = probe(path.clone()).await.unwrap();
        if status == 503 {
            break;
        }
        // Until the holders' bytes have arrived, the probe is read and
        // refused for its signature.
        assert_eq!(status, 401);
        assert!(
            std::time::Instant::now() < deadline,
            "never refused for the budget"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = reqwest::get(format!("{}/metrics", daemon.base))
        .await
        .unwrap();
    let metrics = res.text().await.unwrap();
    assert!(
        metrics.contains("relay_webhooks_rejected_total{reason=\"overloaded\"}"),
        "{metrics}"
    );
    // The two held bodies' buffers, 256 KiB each, are what the budget holds.
    assert!(
        metrics.contains("relay_unverified_bytes 524288\n"),
        "{metrics}"
    );

    // The holders give up: their share comes back, and Replicate's retry is
    // stored.
    drop(holders);
    let client = reqwest::Client::new();
    let body = payload("p_budget", "succeeded");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let headers = signed(SECRET, "msg_budget", now(), &body);
        let (status, answer) = post(&client, &daemon.hook_url(), &headers, body.clone()).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"], "overloaded");
        assert!(
            std::time::Instant::now() < deadline,
            "the budget never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.stop().await;
}
