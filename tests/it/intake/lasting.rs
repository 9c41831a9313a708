//! The intake over time: restarts, concurrency, a store that cannot be
//! written or is locked, shutdown, health.

use super::*;

#[tokio::test]
async fn events_survive_a_restart_on_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SECRET, "");
    let client = reqwest::Client::new();
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    for i in 0..5 {
        let body = payload(&format!("p_restart_{i}"), "failed");
        let headers = signed(SECRET, &format!("msg_restart_{i}"), now(), &body);
        assert_eq!(
            post(&client, &daemon.hook_url(), &headers, body).await.0,
            200
        );
    }
    daemon.stop().await;

    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    let stored = daemon.running.store().recent(10).await.unwrap();
    assert_eq!(stored.len(), 5);
    // And a retry of an event from before the restart is still a duplicate.
    let body = payload("p_restart_0", "failed");
    let headers = signed(SECRET, "msg_restart_0", now(), &body);
    let (status, answer) = post(&client, &daemon.hook_url(), &headers, body).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate"))
    );
    daemon.stop().await;
    assert_eq!(
        open_beside(&dir.path().join("relay.db"))
            .unwrap()
            .recent(10)
            .await
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test]
async fn concurrent_requests_all_land_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&write_config(dir.path(), SECRET, ""), Arc::new(SystemClock)).await;
    let client = reqwest::Client::new();
    let url = daemon.hook_url();

    // 200 distinct events, plus 20 copies of one more racing each other.
    let mut tasks = Vec::new();
    for i in 0..220 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let (object, webhook) = if i < 200 {
                (format!("p_conc_{i}"), format!("msg_conc_{i}"))
            } else {
                ("p_conc_race".to_owned(), "msg_conc_race".to_owned())
            };
            let body = payload(&object, "succeeded");
            let headers = signed(SECRET, &webhook, now(), &body);
            post(&client, &url, &headers, body).await
        }));
    }
    let mut accepted = 0;
    let mut duplicates = 0;
    for task in tasks {
        let (status, answer) = task.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        match answer["status"].as_str() {
            Some("accepted") => accepted += 1,
            Some("duplicate") => duplicates += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((accepted, duplicates), (201, 19));
    let stored = daemon.running.store().recent(1000).await.unwrap();
    assert_eq!(stored.len(), 201);
    let ids: HashSet<_> = stored.iter().map(|e| e.webhook_id.as_str()).collect();
    assert_eq!(ids.len(), 201);
    daemon.stop().await;
}

#[tokio::test]
async fn a_store_that_cannot_be_written_answers_503_never_2xx() {
    if !root_or_skip(
        "a_store_that_cannot_be_written_answers_503_never_2xx",
        "chattr +i",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SECRET, "");
    let client = reqwest::Client::new();

    // Create the store, then make its file immutable: not even root may write it.
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    daemon.stop().await;
    let db = dir.path().join("relay.db");
    let guard = Immutable::set(std::slice::from_ref(&db));

    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    let res = client
        .get(format!("{}/healthz", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status().as_u16(),
        503,
        "health reports the read-only store"
    );

    let body = payload("p_ro", "failed");
    let headers = signed(SECRET, "msg_ro", now(), &body);
    let (status, answer) = post(&client, &daemon.hook_url(), &headers, body.clone()).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "store_unavailable");
    // Health says what to do.
    let res = client
        .get(format!("{}/healthz", daemon.base))
        .send()
        .await
        .unwrap();
    let health: serde_json::Value = res.json().await.unwrap();
    let message = health["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("make it and its directory writable")
            && message.contains("no restart needed"),
        "{health}"
    );

    // Writable again, the same daemon: health recovers with no webhook sent
    // (its own write, after the recheck interval), and the retry is stored.
    let size_before = std::fs::metadata(&db).unwrap().len();
    drop(guard);
    assert_eq!(wait_healthy(&daemon, Duration::from_secs(15)).await, 200);
    let (status, answer) = post(&client, &daemon.hook_url(), &headers, body).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("accepted")),
        "{answer}"
    );
    // The checkpoint thread's connection was read-only too: once it has
    // opened the store again, its copies reach the database file.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    while std::fs::metadata(&db).unwrap().len() == size_before {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint reached {} after it became writable",
            db.display()
        );
        n += 1;
        post_signed(
            &daemon,
            &format!("msg_ro_{n}"),
            &payload(&format!("p_ro_{n}"), "failed"),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    daemon.stop().await;
}

#[tokio::test]
async fn healthz_and_unknown_paths() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&write_config(dir.path(), SECRET, ""), Arc::new(SystemClock)).await;
    let client = reqwest::Client::new();
    let res = client
        .get(format!("{}/healthz", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let res = client.get(daemon.hook_url()).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    let res = client
        .post(format!("{}/elsewhere", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    let answer: serde_json::Value = res.json().await.unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("/hooks/replicate")
    );
    daemon.stop().await;
}

#[tokio::test]
async fn query_parameters_are_kept_and_kind_hint_wins() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&write_config(dir.path(), SECRET, ""), Arc::new(SystemClock)).await;
    let body = payload("p_query", "succeeded");
    let headers = signed(SECRET, "msg_query", now(), &body);
    let url = format!("{}?team=vision&kind=training", daemon.hook_url());
    let (status, _) = post(&reqwest::Client::new(), &url, &headers, body).await;
    assert_eq!(status, 200);
    let stored = &daemon.running.store().recent(1).await.unwrap()[0];
    assert_eq!(stored.query, "team=vision&kind=training");
    assert_eq!(stored.kind, Kind::Training);
    daemon.stop().await;
}

#[tokio::test]
async fn a_request_in_flight_at_shutdown_still_commits_and_later_ones_get_503() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&write_config(dir.path(), SECRET, ""), Arc::new(SystemClock)).await;
    let addr = daemon.running.local_addr();
    let body = payload("p_inflight", "succeeded");
    let headers = signed(SECRET, "msg_inflight", now(), &body);
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n",
        daemon.config.server.path,
        body.len()
    );
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let (first, rest) = body.split_at(body.len() / 2);

    // Half the body is sent before shutdown begins, the rest after.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = daemon.hook_url();
    let stopping = tokio::spawn(daemon.running.shutdown(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A new connection is no longer accepted (or answered 503, never 2xx).
    let late = payload("p_late", "succeeded");
    let late_headers = signed(SECRET, "msg_late", now(), &late);
    let mut req = reqwest::Client::new().post(&url).body(late);
    for (k, v) in &late_headers {
        req = req.header(*k, v);
    }
    match req.send().await {
        Ok(res) => assert_eq!(res.status().as_u16(), 503),
        Err(e) => assert!(e.is_connect() || e.is_request(), "{e}"),
    }

    stream.write_all(rest).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(stopping.await.unwrap(), "drained within the deadline");

    let stored = open_beside(&dir.path().join("relay.db"))
        .unwrap()
        .recent(10)
        .await
        .unwrap();
    let ids: Vec<_> = stored.iter().map(|e| e.webhook_id.as_str()).collect();
    assert_eq!(ids, ["msg_inflight"]);
}

#[tokio::test]
async fn a_stopping_daemon_answers_503() {
    use replicate_relay::intake::{Intake, filter};
    use replicate_relay::store::SqliteStore;
    use replicate_relay::store::sqlite::SqliteOptions;
    use std::sync::atomic::AtomicBool;

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("relay.db"), SqliteOptions::default()).unwrap();
    let config =
        replicate_relay::config::load_with_env(&write_config(dir.path(), SECRET, ""), []).unwrap();
    let setup = replicate_relay::live::Setup::build(config, Arc::new(SystemClock)).unwrap();
    let intake = Arc::new(Intake::new(
        Arc::new(replicate_relay::live::Live::new(setup)),
        Arc::new(store),
        Arc::new(AtomicBool::new(true)),
        replicate_relay::supervise::Supervisor::new(),
    ));
    let routes = filter(intake);
    let res = warp::test::request()
        .method("POST")
        .path("/hooks/replicate")
        .body(payload("p_stop", "succeeded"))
        .reply(&routes)
        .await;
    assert_eq!(res.status().as_u16(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
    let answer: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(answer["error"], "stopping");
    let res = warp::test::request().path("/healthz").reply(&routes).await;
    assert_eq!(res.status().as_u16(), 503);
}

#[tokio::test]
async fn a_store_locked_by_another_process_answers_503_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&write_config(dir.path(), SECRET, ""), Arc::new(SystemClock)).await;
    let client = reqwest::Client::new();

    // Someone holds the write lock (a stuck sqlite3 shell, a backup tool…).
    let other = rusqlite::Connection::open(dir.path().join("relay.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let body = payload("p_locked", "failed");
    let headers = signed(SECRET, "msg_locked", now(), &body);
    let (status, answer) = post(&client, &daemon.hook_url(), &headers, body.clone()).await;
    assert_eq!(status, 503, "{answer}");
    let res = client
        .get(format!("{}/healthz", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 503, "health shows the failed write");

    other.execute_batch("ROLLBACK").unwrap();
    // Healthy again once the store takes writes, before any webhook commits
    // (a load balancer may send none to an instance it took out): the health
    // check tries a write of its own 5 s after the last failure.
    assert_eq!(
        wait_healthy(&daemon, Duration::from_secs(15)).await,
        200,
        "healthy again once writable"
    );
    let (status, answer) = post(&client, &daemon.hook_url(), &headers, body).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("accepted")),
        "{answer}"
    );
    daemon.stop().await;
}

/// A supervised task that keeps panicking turns /healthz to 503, naming the
/// task and its panic, while webhooks are still stored.
#[tokio::test]
async fn a_task_down_after_a_panic_makes_healthz_503_naming_it() {
    use replicate_relay::intake::{Intake, filter};
    use replicate_relay::store::sqlite::{SqliteOptions, SqliteStore};
    use replicate_relay::supervise::Supervisor;
    use std::sync::atomic::AtomicBool;

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("relay.db"), SqliteOptions::default()).unwrap();
    let config =
        replicate_relay::config::load_with_env(&write_config(dir.path(), SECRET, ""), []).unwrap();
    let setup = replicate_relay::live::Setup::build(config, Arc::new(SystemClock)).unwrap();
    let tasks = Supervisor::new();
    let intake = Arc::new(Intake::new(
        Arc::new(replicate_relay::live::Live::new(setup)),
        Arc::new(store),
        Arc::new(AtomicBool::new(false)),
        tasks.clone(),
    ));
    let routes = filter(intake);
    let health = || {
        warp::test::request()
            .method("GET")
            .path("/healthz")
            .reply(&routes)
    };
    assert_eq!(health().await.status(), 200);

    let crashing = tasks.spawn("dispatcher", || async { panic!("lock poisoned") });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let res = health().await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(body["error"], "task_down");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("dispatcher") && message.contains("lock poisoned"),
        "{message}"
    );
    // Asked from another host, the status alone: a panic's message is not
    // for strangers.
    let conns = replicate_relay::listen::connections::Connections::with_max(4);
    let stranger = conns.admit("203.0.113.9:40000".parse().unwrap());
    let res = warp::test::request()
        .method("GET")
        .path("/healthz")
        .extension(stranger.for_request())
        .reply(&routes)
        .await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(body, serde_json::json!({"status": "unavailable"}));

    // Webhooks are still taken while delivery is down.
    let body = payload("p_down", "failed");
    let mut req = warp::test::request()
        .method("POST")
        .path("/hooks/replicate");
    for (k, v) in signed(SECRET, "msg_down", now(), &body) {
        req = req.header(k, v);
    }
    assert_eq!(req.body(body).reply(&routes).await.status(), 200);
    crashing.abort();
}
