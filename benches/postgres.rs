//! PostgreSQL benchmark: `cargo bench --bench postgres [-- --events N
//! --connections C --rounds R --server URL]` (`--server` defaults to
//! `$RELAY_BENCH_POSTGRES`, else the machine's server on 127.0.0.1:5432).
//!
//! In one run, the same load (N signed webhooks over C keep-alive
//! connections) against: a PostgreSQL durable ceiling (the least work that
//! makes a 2xx mean committed: warp reads each body, the bodies waiting are
//! inserted in one statement of one transaction, it commits, all are
//! answered), the release
//! daemon on SQLite, on PostgreSQL, and two daemons on one PostgreSQL
//! database sharing the load. Each PostgreSQL run gets a fresh database.
//! The parts run in rounds (R, default 3), each round all of them in turn,
//! and the ratios reported are the medians of the rounds': a shared
//! machine's speed drifts by tens of percent within minutes, so parts run
//! once each, minutes apart, compare the machine with itself as much as
//! the code. Results: BENCHMARKS.md.

mod load;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use load::*;

struct Options {
    events: usize,
    connections: usize,
    rounds: usize,
    server: String,
}

fn options() -> Options {
    Options {
        events: flag("--events").unwrap_or(30_000),
        connections: flag("--connections").unwrap_or(32),
        rounds: flag::<usize>("--rounds").unwrap_or(3).max(1),
        server: flag("--server").unwrap_or_else(|| {
            std::env::var("RELAY_BENCH_POSTGRES").unwrap_or_else(|_| {
                "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into()
            })
        }),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--ceiling-server") {
        let port = args[pos + 1].parse().unwrap();
        let table = args.get(pos + 3).is_some_and(|t| t == "events");
        return ceiling_server(port, &args[pos + 2], table);
    }
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(run(options()));
}

/// The events table as the store's first migration makes it: its unique
/// webhook id (the dedup across instances) and its indexes are what a
/// durable insert costs the server beyond the bare body.
const EVENTS: &str = "CREATE TABLE events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id TEXT COLLATE \"C\" NOT NULL UNIQUE, object_id TEXT NOT NULL, kind TEXT NOT NULL,
    status TEXT NOT NULL, model TEXT, query TEXT NOT NULL, body BYTEA NOT NULL,
    received_at_ms BIGINT NOT NULL);
    CREATE INDEX events_received ON events (received_at_ms);";

/// The durable ceiling on PostgreSQL, in a process of its own: bare bodies,
/// or with `events`, rows of the store's shape keyed by the `webhook-id`
/// header (the rest constant: no parsing).
fn ceiling_server(port: u16, url: &str, events: bool) {
    use warp::Filter;
    type Waiting = ((String, Bytes), tokio::sync::oneshot::Sender<()>);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(if events {
                EVENTS
            } else {
                "CREATE TABLE bodies (body BYTEA NOT NULL)"
            })
            .await
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Waiting>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, 512).await > 0 {
                // All the waiting bodies in one statement, one commit.
                let bodies: Vec<&[u8]> = batch.iter().map(|((_, b), _)| &b[..]).collect();
                let t = client.transaction().await.unwrap();
                if events {
                    let ids: Vec<&str> = batch.iter().map(|((id, _), _)| id.as_str()).collect();
                    let text: Vec<&str> = vec!["prediction"; ids.len()];
                    let at: Vec<i64> = vec![1_700_000_000_000; ids.len()];
                    t.query(
                        "INSERT INTO events (webhook_id, object_id, kind, status, model, query,
                                             body, received_at_ms)
                         SELECT * FROM unnest($1::text[], $2::text[], $2::text[], $2::text[],
                                              $2::text[], $2::text[], $3::bytea[], $4::int8[])
                         ON CONFLICT (webhook_id) DO NOTHING RETURNING webhook_id, seq",
                        &[&ids, &text, &bodies, &at],
                    )
                    .await
                    .unwrap();
                } else {
                    t.execute(
                        "INSERT INTO bodies (body) SELECT * FROM unnest($1::bytea[])",
                        &[&bodies],
                    )
                    .await
                    .unwrap();
                }
                t.commit().await.unwrap();
                for (_, done) in batch.drain(..) {
                    let _ = done.send(());
                }
            }
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let route = warp::any()
            .and(warp::header::optional::<String>("webhook-id"))
            .and(warp::body::bytes())
            .then(move |id: Option<String>, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let (done, stored) = tokio::sync::oneshot::channel();
                    tx.send(((id.unwrap_or_default(), body), done)).unwrap();
                    stored.await.unwrap();
                    "{\"status\":\"accepted\"}"
                }
            });
        warp::serve(route).incoming(listener).run().await;
    });
}

/// The databases this run made, dropped at its end.
static MADE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A fresh database on `server`, for one part of the run; its URL.
async fn fresh_database(server: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "relay_bench_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let (client, connection) = tokio_postgres::connect(server, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach {server}: {e} (--server URL)"));
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    MADE.lock().unwrap().push(name.clone());
    let mut url = url::Url::parse(server).unwrap();
    url.set_path(&name);
    url.to_string()
}

fn report(name: &str, r: &LoadResult) {
    println!(
        "{name}: {} acknowledged/s ({} ok, {} errors in {:.2} s); ack latency p50 {} p99 {} max {}",
        r.rate() as u64,
        r.ok,
        r.errors,
        r.elapsed.as_secs_f64(),
        ms(r.pct(0.50)),
        ms(r.pct(0.99)),
        ms(r.pct(1.0)),
    );
}

/// What one round measured, acknowledged per second.
struct Round {
    ceiling: f64,
    /// The ceiling writing the store's own table.
    table: f64,
    sqlite: f64,
    postgres: f64,
    two: f64,
}

async fn run(o: Options) {
    println!(
        "replicate-relay PostgreSQL benchmark: {} events over {} connections, {} rounds; {} cores",
        o.events,
        o.connections,
        o.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rounds = Vec::new();
    for n in 1..=o.rounds {
        println!("round {n}:");
        rounds.push(round(&o).await);
    }
    let (client, connection) = tokio_postgres::connect(&o.server, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let made = std::mem::take(&mut *MADE.lock().unwrap());
    for name in made {
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
    let ratios = |f: fn(&Round) -> f64| {
        let mut all: Vec<f64> = rounds.iter().map(f).collect();
        all.sort_by(f64::total_cmp);
        let shown: Vec<String> = all.iter().map(|r| format!("{r:.2}")).collect();
        format!("{:.2} (rounds: {})", all[all.len() / 2], shown.join(", "))
    };
    println!(
        "median ratios: PostgreSQL / its durable ceiling {}; PostgreSQL / the ceiling with the store's table {}; PostgreSQL / SQLite {}; two instances / one {}",
        ratios(|r| r.postgres / r.ceiling),
        ratios(|r| r.postgres / r.table),
        ratios(|r| r.postgres / r.sqlite),
        ratios(|r| r.two / r.postgres),
    );
}

/// The load against a ceiling server writing `table` (`bodies`, `events`).
async fn ceiling(o: &Options, table: &str) -> LoadResult {
    let port = free_port();
    let url = fresh_database(&o.server).await;
    let mut server = Command::new(std::env::current_exe().unwrap())
        .args(["--ceiling-server", &port.to_string(), &url, table])
        .spawn()
        .unwrap();
    wait_http(port, "/").await;
    let result = load(
        SocketAddr::from(([127, 0, 0, 1], port)),
        prepare(0, o.events),
        o.connections,
    )
    .await;
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// Every part once, in turn.
async fn round(o: &Options) -> Round {
    // 1. The PostgreSQL durable ceiling, bare and with the store's table.
    let c = ceiling(o, "bodies").await;
    report(
        "PostgreSQL durable ceiling (insert the waiting bodies, commit)",
        &c,
    );
    let e = ceiling(o, "events").await;
    report(
        "the same ceiling writing the store's events table (unique webhook id, indexes)",
        &e,
    );

    // 2. The daemon on SQLite, then on PostgreSQL.
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = load(daemon.addr(), prepare(o.events, o.events), o.connections).await;
    daemon.stop();
    report("relay on SQLite", &s);

    let url = fresh_database(&o.server).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("url = \"{url}\"\ninstance = \"one\"");
    let daemon = Daemon::start_on(dir.path(), &store, "", free_port()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let p = load(
        daemon.addr(),
        prepare(2 * o.events, o.events),
        o.connections,
    )
    .await;
    daemon.stop();
    report("relay on PostgreSQL", &p);

    // 3. Two daemons on one database, the load split between them.
    let url = fresh_database(&o.server).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Daemon::start_on(
        dir_a.path(),
        &format!("url = \"{url}\"\ninstance = \"a\""),
        "",
        free_port(),
    )
    .await;
    let b = Daemon::start_on(
        dir_b.path(),
        &format!("url = \"{url}\"\ninstance = \"b\""),
        "",
        free_port(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let half = o.events / 2;
    let (ra, rb) = tokio::join!(
        load(a.addr(), prepare(3 * o.events, half), o.connections / 2),
        load(
            b.addr(),
            prepare(3 * o.events + half, half),
            o.connections / 2
        ),
    );
    a.stop();
    b.stop();
    report("two relays on one PostgreSQL database, instance a", &ra);
    report("two relays on one PostgreSQL database, instance b", &rb);
    let two = (ra.ok + rb.ok) as f64 / ra.elapsed.max(rb.elapsed).as_secs_f64();

    Round {
        ceiling: c.rate(),
        table: e.rate(),
        sqlite: s.rate(),
        postgres: p.rate(),
        two,
    }
}
