//! `/metrics` benchmark: `cargo bench --bench metrics [-- --deliveries N
//! --events E --rounds R --connections C]`.
//!
//! Fills a store with N finished deliveries (default a million), starts the
//! release daemon on it, and measures: a scrape's time (keep-alive, as
//! Prometheus scrapes); the query a scrape ran before the counts were kept
//! by triggers, on the same store, for comparison; and ingest (E signed
//! webhooks over C connections) with nobody scraping and with a scraper at
//! ten scrapes a second, alternated R times in the same run, so their
//! ratio is what to read. Results: BENCHMARKS.md.

mod load;

use std::path::Path;
use std::time::Instant;

use load::*;

struct Options {
    deliveries: usize,
    events: usize,
    rounds: usize,
    connections: usize,
}

fn options() -> Options {
    Options {
        deliveries: flag("--deliveries").unwrap_or(1_000_000),
        events: flag("--events").unwrap_or(20_000),
        rounds: flag("--rounds").unwrap_or(3),
        connections: flag("--connections").unwrap_or(32),
    }
}

/// A store holding `count` events of the last 30 days, each with one
/// finished delivery (one in a hundred dead), as a busy month leaves it.
fn fill(dir: &Path, count: usize) {
    let path = dir.join("relay.db");
    drop(
        replicate_relay::store::SqliteStore::open(
            &path,
            replicate_relay::store::sqlite::SqliteOptions::default(),
        )
        .unwrap(),
    );
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut event = tx
            .prepare(
                "INSERT INTO events (webhook_id, object_id, kind, status, model, query, body, received_at_ms, routed_at_ms)
                 VALUES (?1, ?2, 'prediction', 'failed', 'lumen-labs/riso-poster', '', ?3, ?4, ?4)",
            )
            .unwrap();
        let mut delivery = tx
            .prepare(
                "INSERT INTO deliveries (event_seq, dedup_key, route, notifier, state, attempts,
                     created_at_ms, next_attempt_at_ms, expires_at_ms, finished_at_ms, last_error)
                 VALUES (last_insert_rowid(), ?1, 'failures', 'console', ?2, 1, ?3, ?3, ?3 + 86400000, ?3 + 500, ?4)",
            )
            .unwrap();
        let (now, span) = (now(), 30 * 24 * 3600);
        for n in 0..count {
            let at = now - span + (n as i64 * span) / count as i64;
            let object = format!("old{n:020}");
            event
                .execute(rusqlite::params![
                    webhook_id(at, (10_000_000 + n) as u64),
                    object,
                    body_with(10_000_000 + n, "failed"),
                    at * 1000
                ])
                .unwrap();
            let dead = n % 100 == 0;
            delivery
                .execute(rusqlite::params![
                    format!("{object}:failed"),
                    if dead { "dead" } else { "delivered" },
                    at * 1000,
                    dead.then_some("HTTP 404: channel_not_found"),
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    drop(conn);
    drop(
        replicate_relay::store::SqliteStore::open(
            &path,
            replicate_relay::store::sqlite::SqliteOptions::default(),
        )
        .unwrap(),
    );
}

async fn run(o: Options) {
    println!(
        "replicate-relay /metrics benchmark: {} stored deliveries; ingest {} events over {} connections, {} rounds; {} cores",
        o.deliveries,
        o.events,
        o.connections,
        o.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    fill(dir.path(), o.deliveries);
    println!("filled in {:.1} s", started.elapsed().as_secs_f64());

    // What each scrape ran before the counts were kept: a count over the
    // outbox, on the same store.
    {
        let conn = rusqlite::Connection::open(dir.path().join("relay.db")).unwrap();
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let _: (i64, i64, Option<i64>) = conn
                .query_row(
                    "SELECT count(*) FILTER (WHERE state IN ('pending', 'sending')),
                            count(*) FILTER (WHERE state = 'dead'),
                            min(created_at_ms) FILTER (WHERE state IN ('pending', 'sending'))
                     FROM deliveries",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .unwrap();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "the scrape's query before (a count over the outbox): median {}",
            ms(times[2])
        );
    }

    let daemon = Daemon::start(dir.path(), "").await;
    let times = gets(daemon.addr(), "/metrics", 1_000).await;
    println!(
        "scrape, keep-alive, 1000 in a row: min {} median {} p99 {} max {}",
        ms(times[0]),
        ms(quantile(&times, 0.5)),
        ms(quantile(&times, 0.99)),
        ms(times[times.len() - 1]),
    );

    alternate(
        daemon.addr(),
        (daemon.addr(), "/metrics"),
        (o.events, o.connections, o.rounds),
        ("not scraped", "scraped 10/s"),
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
