//! Ingest benchmark: `cargo bench --bench ingest [-- --events N --connections C
//! --prefill M --e2e-seconds S --e2e-rate R --crash-kills K --routed 0/1]` (0 skips
//! a part; `--routed 1` routes every event to the log notifier).
//!
//! Starts the release daemon (verification on, a temporary store) and drives N
//! unique, validly signed webhooks over C keep-alive connections; reports
//! acknowledged/s, ack latency percentiles, errors and the daemon's idle and
//! peak RSS. In the same run it measures the ceiling — a bare warp server that
//! answers 200 without reading the body, under the same load generator — and
//! prints ours / ceiling; measures end to end: events at a fixed rate to a real
//! SMTP server (the tests' own, `tests/it/common/smtp.rs`), latency from send to
//! the server's acceptance;
//! measures again with M events already stored; and runs the crash suite at
//! load scale (`--crash-kills K` SIGKILLs while C connections send, then checks
//! the store: every acknowledged event is there once, every notification it
//! called for delivered, every one sent again a duplicate). Results:
//! BENCHMARKS.md.

#[path = "../tests/it/common/ca.rs"]
#[allow(dead_code)] // the SMTP server's STARTTLS uses part of it
mod ca;
mod load;
#[path = "../tests/it/common/smtp.rs"]
#[allow(dead_code)] // the tests use more of it than the benchmark
mod smtp;

use load::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use replicate_relay::signature::Secret;

/// The shipped config's example routes, to a log notifier.
const ROUTES: &str = r#"
[notifiers.console]
type = "log"

[[routes]]
name = "training finished"
when = { kind = "training" }
notify = ["console"]

[[routes]]
name = "failed predictions"
when = { kind = "prediction", status = ["failed", "aborted"] }
notify = ["console"]
continue = true

[[routes]]
name = "slow jobs"
when = { "metrics.predict_time" = { gt = 600 } }
notify = ["console"]
"#;

struct Options {
    events: usize,
    connections: usize,
    prefill: usize,
    e2e_seconds: u64,
    e2e_rate: u64,
    crash_kills: usize,
    /// `--routed 1`: every event is routed to the log notifier, so each
    /// ingest also creates a delivery, which the dispatcher then sends.
    routed: bool,
}

fn options() -> Options {
    Options {
        events: flag("--events").unwrap_or(100_000),
        connections: flag("--connections").unwrap_or(32),
        prefill: flag("--prefill").unwrap_or(1_000_000),
        e2e_seconds: flag("--e2e-seconds").unwrap_or(20),
        e2e_rate: flag("--e2e-rate").unwrap_or(50),
        crash_kills: flag("--crash-kills").unwrap_or(10),
        routed: flag::<u8>("--routed").is_some_and(|r| r != 0),
    }
}

fn main() {
    // Child mode: the ceiling server.
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--ceiling-server") {
        let port: u16 = args[pos + 1].parse().unwrap();
        return ceiling_server(port);
    }
    if let Some(pos) = args.iter().position(|a| a == "--durable-ceiling-server") {
        let port: u16 = args[pos + 1].parse().unwrap();
        return durable_ceiling_server(port, Path::new(&args[pos + 2]));
    }
    let o = options();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(o));
}

/// A bare warp server answering 200 without reading the body: the most a warp
/// server can do on this machine.
fn ceiling_server(port: u16) {
    use warp::Filter;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        warp::serve(warp::any().map(|| "{\"status\":\"accepted\"}"))
            .incoming(listener)
            .run()
            .await;
    });
}

/// The least work that makes a 200 mean "on disk": the bodies of the
/// requests waiting are appended to one file in one write, one fdatasync,
/// then all of them are answered. Ours over this is the distance to this
/// disk's limit, where ours over the bare ceiling is the distance to warp's.
fn durable_ceiling_server(port: u16, file: &Path) {
    use std::io::Write;
    use warp::Filter;
    type Waiting = (Bytes, tokio::sync::oneshot::Sender<()>);
    let (tx, rx) = std::sync::mpsc::channel::<Waiting>();
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            buf.clear();
            for (body, _) in &batch {
                buf.extend_from_slice(body);
            }
            out.write_all(&buf).unwrap();
            out.sync_data().unwrap();
            for (_, done) in batch {
                let _ = done.send(());
            }
        }
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
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

/// Fills a store with `count` routed events, as months of traffic would.
fn prefill(dir: &Path, count: usize) {
    let path = dir.join("relay.db");
    let store = replicate_relay::store::SqliteStore::open(
        &path,
        replicate_relay::store::sqlite::SqliteOptions::default(),
    )
    .unwrap();
    drop(store);
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut stmt = tx
            .prepare(
                "INSERT INTO events (webhook_id, object_id, kind, status, model, query, body, received_at_ms, routed_at_ms)
                 VALUES (?1, ?2, 'prediction', 'succeeded', 'lumen-labs/riso-poster', '', ?3, ?4, ?4)",
            )
            .unwrap();
        // Spread over the last 30 days, so the ids (time-ordered KSUIDs) sit
        // in the dedup index before the new ones, as in a store in use.
        let (now, span) = (now(), 30 * 24 * 3600);
        for n in 0..count {
            let b = body(10_000_000 + n);
            let at = now - span + (n as i64 * span) / count as i64;
            stmt.execute(rusqlite::params![
                webhook_id(at, (10_000_000 + n) as u64),
                format!("old{n:020}"),
                b,
                at * 1000
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    drop(conn);
    // Opening and closing the store indexes the new rows' webhook ids, as a
    // daemon that had received them would have done.
    drop(
        replicate_relay::store::SqliteStore::open(
            &path,
            replicate_relay::store::sqlite::SqliteOptions::default(),
        )
        .unwrap(),
    );
}

async fn measure(
    name: &str,
    daemon: &Daemon,
    requests: Vec<Prepared>,
    connections: usize,
) -> (LoadResult, f64, f64) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle, _) = rss(daemon.child.id());
    let r = load(daemon.addr(), requests, connections).await;
    let (_, peak) = rss(daemon.child.id());
    let metrics = scrape(daemon.port).await;
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let commits = value("relay_store_commit_seconds_count");
    println!(
        "  {commits} commits, {:.1} events per commit, {:.2} ms per commit",
        value("relay_store_batch_size_sum") / commits.max(1.0),
        1000.0 * value("relay_store_commit_seconds_sum") / commits.max(1.0)
    );
    let webhooks = value("relay_webhook_seconds_count").max(1.0);
    println!(
        "  the daemon's share of the ack latency: {:.2} ms on average (from the request line to the answer)",
        1000.0 * value("relay_webhook_seconds_sum") / webhooks
    );
    println!(
        "{name}: {} acknowledged/s ({} ok, {} errors in {:.2} s); ack latency p50 {} p90 {} p99 {} max {}; RSS idle {idle:.1} MB, peak {peak:.1} MB",
        r.rate() as u64,
        r.ok,
        r.errors,
        r.elapsed.as_secs_f64(),
        ms(r.pct(0.50)),
        ms(r.pct(0.90)),
        ms(r.pct(0.99)),
        ms(r.pct(1.0)),
    );
    (r, idle, peak)
}

async fn run(o: Options) {
    println!(
        "replicate-relay ingest benchmark: {} events over {} connections, {} prefilled; {} cores",
        o.events,
        o.connections,
        o.prefill,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. The ceiling: a bare warp server, same load generator.
    let port = free_port();
    let mut ceiling = Command::new(std::env::current_exe().unwrap())
        .args(["--ceiling-server", &port.to_string()])
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
    println!(
        "ceiling (bare warp, body unread): {} answers/s; p50 {} p99 {}",
        c.rate() as u64,
        ms(c.pct(0.5)),
        ms(c.pct(0.99))
    );

    // 1b. The durable ceiling: warp reading each body, appending it to a
    // file, one fdatasync per batch of waiting requests.
    let durable_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut durable = Command::new(std::env::current_exe().unwrap())
        .args(["--durable-ceiling-server", &port.to_string()])
        .arg(durable_dir.path().join("bodies"))
        .spawn()
        .unwrap();
    wait_http(port, "/").await;
    let d = load(
        SocketAddr::from(([127, 0, 0, 1], port)),
        prepare(0, o.events),
        o.connections,
    )
    .await;
    let _ = durable.kill();
    let _ = durable.wait();
    println!(
        "durable ceiling (append + fdatasync per batch): {} answers/s; p50 {} p99 {}",
        d.rate() as u64,
        ms(d.pct(0.5)),
        ms(d.pct(0.99))
    );

    // 2. Ours, empty store, with the shipped example routes (which these
    // succeeded predictions do not match: routing is evaluated, nothing sent).
    let dir = tempfile::tempdir().unwrap();
    let routes = if o.routed {
        format!(
            "{ROUTES}\n[[routes]]\nname = \"every success\"\nwhen = {{ status = \"succeeded\" }}\nnotify = [\"console\"]\n"
        )
    } else {
        ROUTES.to_owned()
    };
    let daemon = Daemon::start(dir.path(), &routes).await;
    let (ours, idle_empty, peak_empty) = measure(
        "relay, empty store",
        &daemon,
        prepare(0, o.events),
        o.connections,
    )
    .await;
    daemon.stop();
    println!(
        "ratio ours / ceiling: {:.2}; ours / durable ceiling: {:.2}",
        ours.rate() / c.rate(),
        ours.rate() / d.rate()
    );

    // 3. End to end: a fixed rate to a real SMTP server. Before the prefilled
    // store, not after: deleting that store frees 1.5 GB of page cache, and
    // for a while after it deliveries here stalled in bursts every 2 s (free
    // memory rising by ~15 MB at each: this VM handing the memory back, it
    // seems). Writing and deleting a 1.5 GB file just before this part took
    // its p99 from 57 to 97 ms (BENCHMARKS.md).
    if o.e2e_seconds > 0 {
        end_to_end(&o).await;
    }

    // 4. Ours, with events already stored.
    if o.prefill > 0 {
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        prefill(dir.path(), o.prefill);
        println!(
            "prefilled {} events in {:.1} s",
            o.prefill,
            t.elapsed().as_secs_f64()
        );
        let daemon = Daemon::start(dir.path(), ROUTES).await;
        let (full, idle_full, peak_full) = measure(
            &format!("relay, {} stored", o.prefill),
            &daemon,
            prepare(0, o.events),
            o.connections,
        )
        .await;
        daemon.stop();
        println!(
            "ratio with {} stored / empty: rate {:.2}, idle RSS {:.2}, peak RSS {:.2}",
            o.prefill,
            full.rate() / ours.rate(),
            idle_full / idle_empty,
            peak_full / peak_empty
        );
    }

    // 5. The crash suite at load scale.
    if o.crash_kills > 0 {
        crash(&o).await;
    }
}

/// What the crash senders share.
struct CrashState {
    port: u16,
    next: std::sync::atomic::AtomicUsize,
    running: std::sync::atomic::AtomicBool,
    /// (webhook id, n) of every request answered 2xx.
    acked: std::sync::Mutex<Vec<(String, usize)>>,
}

/// Every 50th crash event is a failed prediction: the example routes send
/// those to a log notifier, so the outbox is under test too.
fn crash_status(n: usize) -> &'static str {
    if n % 50 == 0 { "failed" } else { "succeeded" }
}

/// Crash event `n` under webhook id `id`, signed now.
fn crash_request(n: usize, id: &str, secret: &Secret) -> hyper::Request<Full<Bytes>> {
    Prepared::signed(secret, id.to_owned(), now(), body_with(n, crash_status(n))).into_request()
}

/// Sends fresh webhooks over one keep-alive connection, reconnecting when the
/// daemon dies, until told to stop. Only a 2xx counts as acknowledged.
async fn crash_sender(state: std::sync::Arc<CrashState>) {
    use std::sync::atomic::Ordering::SeqCst;
    let secret = Secret::parse(SECRET).unwrap();
    while state.running.load(SeqCst) {
        let Ok(mut sender) = connect(SocketAddr::from(([127, 0, 0, 1], state.port))).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        while state.running.load(SeqCst) {
            if sender.ready().await.is_err() {
                break; // the daemon died: reconnect
            }
            let n = state.next.fetch_add(1, SeqCst);
            let id = webhook_id(now(), 90_000_000 + n as u64);
            let sent = tokio::time::timeout(
                Duration::from_secs(5),
                sender.send_request(crash_request(n, &id, &secret)),
            )
            .await;
            let Ok(Ok(res)) = sent else {
                break; // the daemon died: reconnect
            };
            let good = res.status().is_success();
            let _ = res.into_body().collect().await;
            if good {
                state.acked.lock().unwrap().push((id, n));
            }
        }
    }
}

async fn crash(o: &Options) {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let state = std::sync::Arc::new(CrashState {
        port: free_port(),
        next: Default::default(),
        running: std::sync::atomic::AtomicBool::new(true),
        acked: Default::default(),
    });
    let mut senders = Vec::new();
    let mut daemon = Daemon::start_at(dir.path(), ROUTES, state.port).await;
    for _ in 0..o.connections {
        senders.push(tokio::spawn(crash_sender(state.clone())));
    }
    let started = Instant::now();
    let mut up = Duration::ZERO;
    for _ in 0..o.crash_kills {
        let life = Duration::from_millis(
            500 + (replicate_relay::dispatch::backoff::random_unit() * 1500.0) as u64,
        );
        tokio::time::sleep(life).await;
        up += life;
        daemon.child.kill().unwrap(); // SIGKILL
        daemon.child.wait().unwrap();
        daemon = Daemon::start_at(dir.path(), ROUTES, state.port).await;
    }
    // The last life: stop sending, let the outbox drain.
    tokio::time::sleep(Duration::from_millis(500)).await;
    up += Duration::from_millis(500);
    state.running.store(false, SeqCst);
    for s in senders {
        s.await.unwrap();
    }
    let elapsed = started.elapsed();
    let acked = std::mem::take(&mut *state.acked.lock().unwrap());
    let db = rusqlite::Connection::open(dir.path().join("relay.db")).unwrap();
    let outstanding = || -> i64 {
        db.query_row(
            "SELECT count(*) FROM deliveries WHERE state IN ('pending', 'sending')",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while outstanding() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Replicate retries what it thinks failed: the same ids again must be
    // duplicates, whichever life stored them (a sample: one in ten).
    let secret = Secret::parse(SECRET).unwrap();
    let mut sender = connect(daemon.addr()).await.unwrap();
    let mut resent = 0;
    for (id, n) in acked.iter().step_by(10) {
        sender.ready().await.unwrap();
        let res = sender
            .send_request(crash_request(*n, id, &secret))
            .await
            .unwrap();
        let answer: serde_json::Value =
            serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(answer["status"], "duplicate", "{id} sent again: {answer}");
        resent += 1;
    }
    daemon.stop();

    // The promise, checked in the store.
    let stored: std::collections::HashMap<String, i64> = db
        .prepare("SELECT webhook_id, count(*) FROM events GROUP BY webhook_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let delivered: std::collections::HashSet<String> = db
        .prepare(
            "SELECT e.webhook_id FROM events e JOIN deliveries d ON d.event_seq = e.seq
             WHERE d.state = 'delivered'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let missing = acked
        .iter()
        .filter(|(id, _)| !stored.contains_key(id))
        .count();
    let twice = stored.values().filter(|&&c| c > 1).count();
    let failed: Vec<_> = acked
        .iter()
        .filter(|(_, n)| crash_status(*n) == "failed")
        .collect();
    let undelivered = failed
        .iter()
        .filter(|(id, _)| !delivered.contains(id))
        .count();
    println!(
        "crash ({} SIGKILLs over {:.0} s, {} connections): {} acknowledged ({:.0}/s while up), \
         {missing} of them missing from the store, {twice} ids stored twice; {} failed predictions \
         acknowledged, {undelivered} of their notifications undelivered; {resent} sent again, all \
         answered duplicate",
        o.crash_kills,
        elapsed.as_secs_f64(),
        o.connections,
        acked.len(),
        acked.len() as f64 / up.as_secs_f64(),
        failed.len(),
    );
    assert_eq!(
        (missing, twice, undelivered),
        (0, 0, 0),
        "the crash promise is broken"
    );
}

async fn end_to_end(o: &Options) {
    let dir = tempfile::tempdir().unwrap();
    let smtp = smtp::SmtpServer::start(free_port(), dir.path(), false, false);
    let smtp_port = smtp.port;
    let extra = format!(
        "[notifiers.mail]\ntype = \"email\"\nsmtp = \"smtp://127.0.0.1:{smtp_port}\"\ntls = \"none\"\nfrom = \"relay@example.org\"\nto = [\"ml@example.org\"]\n\n[[routes]]\nname = \"all\"\nnotify = [\"mail\"]\n"
    );
    let daemon = Daemon::start(dir.path(), &extra).await;
    let total = (o.e2e_seconds * o.e2e_rate) as usize;
    let requests = prepare(50_000_000, total);
    let mut sent_at = std::collections::HashMap::new();
    let every = Duration::from_secs_f64(1.0 / o.e2e_rate as f64);
    let client_addr = daemon.addr();
    let mut ticker = tokio::time::interval(every);
    let mut pending = Vec::new();
    for r in requests {
        ticker.tick().await;
        let object = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        sent_at.insert(object, SystemTime::now());
        pending.push(tokio::spawn(load(client_addr, vec![r], 1)));
    }
    for p in pending {
        p.await.unwrap();
    }
    // Collect the SMTP server's acceptance times.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        latencies.clear();
        for mail in smtp.messages() {
            let accepted =
                UNIX_EPOCH + Duration::from_millis(mail["accepted_at_ms"].as_u64().unwrap());
            // The text part has a line "Job <id> · model …".
            let job = mail["text"]
                .as_str()
                .and_then(|t| t.lines().find_map(|l| l.strip_prefix("Job ")))
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or("");
            if let Some(sent) = sent_at.get(job) {
                latencies.push(accepted.duration_since(*sent).unwrap_or_default());
            }
        }
        if latencies.len() >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.stop();
    drop(smtp);
    latencies.sort();
    assert!(
        !latencies.is_empty(),
        "end to end: none of the {total} mails was accepted, or none named its job"
    );
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "end to end ({} events at {}/s → SMTP accepted): {} delivered; p50 {} p99 {} max {}",
        total,
        o.e2e_rate,
        latencies.len(),
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(pct(1.0))
    );
}
