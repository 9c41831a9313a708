//! PostgreSQL benchmark: `cargo bench --bench postgres [-- --events N
//! --connections C --server URL]` (`--server` defaults to
//! `$RELAY_BENCH_POSTGRES`, else the machine's server on 127.0.0.1:5432).
//!
//! In one run, the same load (N signed webhooks over C keep-alive
//! connections) against: a PostgreSQL durable ceiling (the least work that
//! makes a 2xx mean committed: warp reads each body, the bodies waiting are
//! inserted in one statement of one transaction, it commits, all are
//! answered), the release
//! daemon on SQLite, on PostgreSQL, and two daemons on one PostgreSQL
//! database sharing the load. Each PostgreSQL run gets a fresh database.
//! Results: BENCHMARKS.md.

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
    server: String,
}

fn options() -> Options {
    let mut o = Options {
        events: 50_000,
        connections: 32,
        server: std::env::var("RELAY_BENCH_POSTGRES").unwrap_or_else(|_| {
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into()
        }),
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = || args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--events" => o.events = value().parse().expect("--events N"),
            "--connections" => o.connections = value().parse().expect("--connections C"),
            "--server" => o.server = value(),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--ceiling-server") {
        let port = args[pos + 1].parse().unwrap();
        return ceiling_server(port, &args[pos + 2]);
    }
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(run(options()));
}

/// The durable ceiling on PostgreSQL, in a process of its own.
fn ceiling_server(port: u16, url: &str) {
    use warp::Filter;
    type Waiting = (Bytes, tokio::sync::oneshot::Sender<()>);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute("CREATE TABLE bodies (body BYTEA NOT NULL)")
            .await
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Waiting>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, 512).await > 0 {
                // All the waiting bodies in one statement, one commit.
                let bodies: Vec<&[u8]> = batch.iter().map(|(b, _)| &b[..]).collect();
                let t = client.transaction().await.unwrap();
                t.execute(
                    "INSERT INTO bodies (body) SELECT * FROM unnest($1::bytea[])",
                    &[&bodies],
                )
                .await
                .unwrap();
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
            .and(warp::body::bytes())
            .then(move |body: Bytes| {
                let tx = tx.clone();
                async move {
                    let (done, stored) = tokio::sync::oneshot::channel();
                    tx.send((body, done)).unwrap();
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

async fn run(o: Options) {
    println!(
        "replicate-relay PostgreSQL benchmark: {} events over {} connections; {} cores",
        o.events,
        o.connections,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // 1. The PostgreSQL durable ceiling.
    let port = free_port();
    let url = fresh_database(&o.server).await;
    let mut ceiling = Command::new(std::env::current_exe().unwrap())
        .args(["--ceiling-server", &port.to_string(), &url])
        .spawn()
        .unwrap();
    wait_http(port, "/").await;
    let c = load(
        SocketAddr::from(([127, 0, 0, 1], port)),
        prepare(0, o.events),
        o.connections,
    )
    .await;
    let _ = ceiling.kill();
    let _ = ceiling.wait();
    report(
        "PostgreSQL durable ceiling (insert the waiting bodies, commit)",
        &c,
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
    println!(
        "ratios: PostgreSQL / its durable ceiling {:.2}; PostgreSQL / SQLite {:.2}; two instances / one {:.2} ({} acknowledged/s together)",
        p.rate() / c.rate(),
        p.rate() / s.rate(),
        two / p.rate(),
        two as u64
    );
}
