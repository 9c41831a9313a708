//! Dashboard benchmark: `cargo bench --bench dashboard [-- --events N
//! --ingest E --rounds R --connections C --loads L]`.
//!
//! Fills a store with N events of the last 30 days (default a million),
//! each with one finished delivery and its attempt (one in ten jobs failed,
//! one delivery in a hundred dead), starts the release daemon on it with
//! the dashboard on, and measures each page's time from request to the
//! last byte on a keep-alive connection (on loopback: the server's time),
//! L loads each; then ingest (E signed webhooks over C connections) with
//! nobody looking and with the events page loaded ten times a second,
//! alternated R times in the same run, so their ratio is what to read.
//! Results: BENCHMARKS.md.

mod load;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use load::*;

struct Options {
    events: usize,
    ingest: usize,
    rounds: usize,
    connections: usize,
    loads: usize,
}

fn options() -> Options {
    Options {
        events: flag("--events").unwrap_or(1_000_000),
        ingest: flag("--ingest").unwrap_or(20_000),
        rounds: flag("--rounds").unwrap_or(3),
        connections: flag("--connections").unwrap_or(32),
        loads: flag("--loads").unwrap_or(50),
    }
}

/// A store of `count` events over the last 30 days, each delivered once
/// (one in a hundred dead) with its attempt recorded.
fn fill(dir: &Path, count: usize) {
    let path = dir.join("relay.db");
    let open = || {
        replicate_relay::store::SqliteStore::open(
            &path,
            replicate_relay::store::sqlite::SqliteOptions::default(),
        )
        .unwrap()
    };
    drop(open());
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut event = tx
            .prepare(
                "INSERT INTO events (webhook_id, object_id, kind, status, model, query, body, received_at_ms, routed_at_ms)
                 VALUES (?1, ?2, 'prediction', ?3, ?4, 'team=ml', ?5, ?6, ?6)",
            )
            .unwrap();
        let mut delivery = tx
            .prepare(
                "INSERT INTO deliveries (event_seq, dedup_key, route, notifier, state, attempts,
                     created_at_ms, next_attempt_at_ms, expires_at_ms, finished_at_ms, last_error, message)
                 VALUES (last_insert_rowid(), ?1, 'everything', 'console', ?2, 1, ?3, ?3, ?3 + 86400000, ?3 + 40, ?4, ?5)",
            )
            .unwrap();
        let mut attempt = tx
            .prepare(
                "INSERT INTO attempts (delivery_id, number, started_ms, duration_ms, outcome, error, status, exchanges)
                 VALUES (last_insert_rowid(), 1, ?1, 38, ?2, ?3, ?4, ?5)",
            )
            .unwrap();
        let (now, span) = (now() * 1000, 30 * 86_400_000i64);
        let message =
            r#"{"kind":"log","message":{"subject":"❌ Prediction failed","text":"Job: p1"}}"#;
        for n in 0..count {
            let at = now - span + (n as i64 * span) / count as i64;
            let failed = n % 10 == 0;
            let status = if failed { "failed" } else { "succeeded" };
            let object = format!("job{n:020}");
            let model = if n % 100_000 == 7 {
                "rare/model"
            } else {
                "lumen-labs/riso-poster"
            };
            event
                .execute(rusqlite::params![
                    webhook_id(at / 1000, (10_000_000 + n) as u64),
                    object,
                    status,
                    model,
                    body_with(10_000_000 + n, status),
                    at
                ])
                .unwrap();
            let dead = n % 100 == 0;
            let error = dead.then_some("HTTP 404: channel_not_found");
            delivery
                .execute(rusqlite::params![
                    format!("{object}:{status}"),
                    if dead { "dead" } else { "delivered" },
                    at,
                    error,
                    message
                ])
                .unwrap();
            attempt
                .execute(rusqlite::params![
                    at,
                    if dead { "dead" } else { "delivered" },
                    error,
                    if dead { 404 } else { 200 },
                    r#"{"kept":[{"request":"POST Slack chat.postMessage","status":200,"answer":"{\"ok\":true}"}]}"#
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    drop(conn);
    drop(open());
}

async fn run(o: Options) {
    println!(
        "replicate-relay dashboard benchmark: {} stored events; ingest {} events over {} connections, {} rounds; {} cores",
        o.events,
        o.ingest,
        o.connections,
        o.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    fill(dir.path(), o.events);
    println!("filled in {:.1} s", started.elapsed().as_secs_f64());

    let port = free_port();
    let daemon = Daemon::start(
        dir.path(),
        &format!("[dashboard]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .await;
    let dashboard = SocketAddr::from(([127, 0, 0, 1], port));
    let day = 86_400_000;
    let at = |ms: i64| replicate_relay::clock::format_time(ms).replace(' ', "T");
    let now = now() * 1000;
    let middle = o.events / 2;
    let pages = [
        (
            "overview, first load (reads 24 h)".to_owned(),
            "/".to_owned(),
            1,
        ),
        ("overview".into(), "/".into(), o.loads),
        ("events, newest".into(), "/events".into(), o.loads),
        (
            "events, status = failed".into(),
            "/events?status=failed".into(),
            o.loads,
        ),
        (
            "events, a model in 1 of 100,000 (one window)".into(),
            "/events?model=rare%2Fmodel".into(),
            o.loads,
        ),
        (
            "events, one job by id".into(),
            format!("/events?job=job{middle:020}"),
            o.loads,
        ),
        (
            "events, a day two weeks back".into(),
            format!(
                "/events?from={}&to={}",
                at(now - 15 * day),
                at(now - 14 * day)
            ),
            o.loads,
        ),
        (
            "events, 100 pages back".into(),
            format!("/events?before={}", o.events - 5_000),
            o.loads,
        ),
        (
            "one event with its delivery and attempt".into(),
            format!("/events/{middle}"),
            o.loads,
        ),
        (
            "dead deliveries (500 shown)".into(),
            "/deliveries".into(),
            o.loads,
        ),
        ("templates".into(), "/templates".into(), o.loads),
    ];
    println!("| page | median | p99 | max |\n| --- | --- | --- | --- |");
    for (label, path, n) in &pages {
        let t = gets(dashboard, path, *n).await;
        println!(
            "| {label} | {} | {} | {} |",
            ms(quantile(&t, 0.5)),
            ms(quantile(&t, 0.99)),
            ms(t[t.len() - 1])
        );
    }

    alternate(
        daemon.addr(),
        (dashboard, "/events"),
        (o.ingest, o.connections, o.rounds),
        ("no page loads", "events page 10/s"),
    )
    .await;
    daemon.stop();
}

fn main() {
    let o = options();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(o));
}
