//! What the benchmarks share: the release daemon as a process, webhooks
//! shaped and signed as Replicate's, and the lean load generator that
//! drives them over keep-alive connections and times each answer.
#![allow(dead_code)] // each benchmark uses a different part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use replicate_relay::signature::Secret;

pub const SECRET: &str = "whsec_YmVuY2htYXJrLXNlY3JldC1mb3ItcmVwbGljYXRlLXJlbGF5";
/// The daemon under test; `RELAY_BENCH_BIN` points at another build of it, so
/// two versions can be compared in interleaved runs.
/// The value after `name` on the command line (`--events 5000`), parsed;
/// `None` when the flag is absent. A value that does not parse stops the
/// run saying which flag.
pub fn flag<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name)?;
    let value = args
        .get(at + 1)
        .unwrap_or_else(|| panic!("{name} needs a value"));
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}: cannot read {value:?}")),
    )
}

pub fn daemon_bin() -> PathBuf {
    std::env::var_os("RELAY_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_replicate-relay")))
}
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A prediction body shaped like the fixtures (about 1.4 KB).
pub fn body(n: usize) -> Vec<u8> {
    body_with(n, "succeeded")
}

pub fn body_with(n: usize, status: &str) -> Vec<u8> {
    let id = format!("bench{n:020}");
    serde_json::to_vec(&serde_json::json!({
        "id": id,
        "model": "lumen-labs/riso-poster",
        "version": "04ba39672d57dee13f59fb7c6d0b4a9050dd90f2069cc2c2a967643981cdbeb1",
        "input": {"prompt": "a lighthouse at dusk, two-colour risograph print", "num_outputs": 2, "seed": n},
        "logs": "Using seed: 90417\nLoading LoRA weights... done in 0.41s\n 50%|#####     | 14/28 [00:01<00:01,  9.87it/s]\n100%|##########| 28/28 [00:02<00:00,  9.91it/s]\nSaved 2 images\n",
        "output": [
            format!("https://replicate.delivery/xezq/{id}/out-0.webp"),
            format!("https://replicate.delivery/xezq/{id}/out-1.webp")
        ],
        "data_removed": false, "error": null, "source": "api", "status": status,
        "created_at": "2026-11-20T14:03:11.482915Z",
        "started_at": "2026-11-20T14:03:12.007341Z",
        "completed_at": "2026-11-20T14:03:15.330268Z",
        "urls": {
            "cancel": format!("https://api.replicate.com/v1/predictions/{id}/cancel"),
            "get": format!("https://api.replicate.com/v1/predictions/{id}"),
            "web": format!("https://replicate.com/p/{id}")
        },
        "metrics": {"predict_time": 3.322927, "total_time": 3.847353},
        "webhook": "https://relay.example.org/hooks/replicate?kind=prediction",
        "webhook_events_filter": ["start", "completed"]
    }))
    .unwrap()
}

/// One pre-built request: body and signature headers.
pub struct Prepared {
    pub id: String,
    pub ts: String,
    pub sig: String,
    pub body: Bytes,
}

/// A webhook id shaped like the ones Replicate sends (`msg_` and a KSUID: a
/// timestamp in seconds, then 128 random bits, in base62). Within a second they
/// are in random order, so the store's dedup index is hit as in production,
/// not appended to in order.
pub fn webhook_id(unix_seconds: i64, n: u64) -> String {
    pub fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&((unix_seconds - 1_400_000_000) as u32).to_be_bytes());
    bytes.extend_from_slice(&splitmix(2 * n).to_be_bytes());
    bytes.extend_from_slice(&splitmix(2 * n + 1).to_be_bytes());
    // Base62 by long division of the 160-bit big-endian number.
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(27);
    while bytes.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in bytes.iter_mut() {
            let acc = (rem << 8) | u32::from(*b);
            *b = (acc / 62) as u8;
            rem = acc % 62;
        }
        out.push(DIGITS[rem as usize]);
    }
    out.resize(27, b'0');
    out.reverse();
    format!("msg_{}", String::from_utf8(out).unwrap())
}

impl Prepared {
    /// `body` under webhook id `id`, signed at `ts`.
    pub fn signed(secret: &Secret, id: String, ts: i64, body: Vec<u8>) -> Self {
        Self {
            sig: secret.sign(&id, ts, &body),
            ts: ts.to_string(),
            id,
            body: Bytes::from(body),
        }
    }

    pub fn into_request(self) -> hyper::Request<Full<Bytes>> {
        hyper::Request::post("/hooks/replicate")
            .header("host", "relay")
            .header("content-type", "application/json")
            .header("webhook-id", &self.id)
            .header("webhook-timestamp", &self.ts)
            .header("webhook-signature", &self.sig)
            .body(Full::new(self.body))
            .unwrap()
    }

    /// The same request as HTTP/1.1 bytes, as `into_request` would put them
    /// on the wire, for the load generator to write in one go.
    pub fn wire(&self) -> Vec<u8> {
        let mut out = format!(
            "POST /hooks/replicate HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nwebhook-id: {}\r\nwebhook-timestamp: {}\r\nwebhook-signature: {}\r\n\r\n",
            self.body.len(),
            self.id,
            self.ts,
            self.sig
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

pub fn prepare(from: usize, count: usize) -> Vec<Prepared> {
    let secret = Secret::parse(SECRET).unwrap();
    let ts = now();
    (from..from + count)
        .map(|n| Prepared::signed(&secret, webhook_id(ts, n as u64), ts, body(n)))
        .collect()
}
/// A keep-alive HTTP/1 connection to `addr`, driven by its own task.
pub async fn connect(
    addr: SocketAddr,
) -> Result<
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    let stream = tcp_connect(addr).await?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}
pub struct LoadResult {
    pub ok: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p` quantile; latencies are sorted when the load ends.
    pub fn pct(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[i - 1]
    }
}

/// Sends every request over `connections` keep-alive connections, each in turn.
///
/// The generator shares the two cores with the server it measures, so it is
/// kept lean: each request is prepared as bytes beforehand, written in one
/// call, and only the answer's status line and `Content-Length` are parsed.
/// (A hyper client connection costs two tasks and a hand-off between them per
/// request: about twice the generator's CPU, BENCHMARKS.md.)
pub async fn load(addr: SocketAddr, requests: Vec<Prepared>, connections: usize) -> LoadResult {
    let per = requests.len().div_ceil(connections);
    let mut chunks: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut it = requests.iter().map(Prepared::wire).peekable();
    while it.peek().is_some() {
        chunks.push(it.by_ref().take(per).collect());
    }
    drop(requests);
    let started = Instant::now();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            tokio::spawn(async move {
                let (mut ok, mut errors, mut latencies) = (0, 0, Vec::with_capacity(chunk.len()));
                let mut conn = None;
                let mut buf = Vec::with_capacity(4096);
                for r in chunk {
                    let t = Instant::now();
                    let stream = match &mut conn {
                        Some(s) => s,
                        None => conn.insert(tcp_connect(addr).await.unwrap()),
                    };
                    match exchange(stream, &r, &mut buf).await {
                        Ok((status, keep_alive)) => {
                            latencies.push(t.elapsed());
                            if !keep_alive {
                                conn = None;
                            }
                            if (200..300).contains(&status) {
                                ok += 1;
                            } else {
                                errors += 1;
                            }
                        }
                        Err(_) => {
                            // Counted, and the next request goes on a new
                            // connection, as a client library would do.
                            errors += 1;
                            conn = None;
                        }
                    }
                }
                (ok, errors, latencies)
            })
        })
        .collect();
    let mut result = LoadResult {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (ok, errors, latencies) = t.await.unwrap();
        result.ok += ok;
        result.errors += errors;
        result.latencies.extend(latencies);
    }
    result.elapsed = started.elapsed();
    result.latencies.sort();
    result
}

/// A TCP connection to `addr` with Nagle off: requests go out in one write.
pub async fn tcp_connect(addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Writes one request and reads its whole answer; returns the status code and
/// whether the connection stays open. An answer without `Content-Length` is
/// an error here: the daemon and the ceiling both answer with a length.
pub async fn exchange(
    stream: &mut tokio::net::TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, bool)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    stream.write_all(request).await?;
    buf.clear();
    let mut read_more = async |buf: &mut Vec<u8>| match stream.read_buf(buf).await {
        Ok(0) => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    // The head, read until complete.
    let (status, head, length, close) = loop {
        read_more(buf).await?;
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut res = httparse::Response::new(&mut headers);
        let head = match res.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(bad(&e.to_string())),
        };
        let status = res.code.ok_or_else(|| bad("no status"))?;
        let length: usize = res
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
            .ok_or_else(|| bad("no content-length"))?;
        let close = res.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
        });
        break (status, head, length, close);
    };
    // Then the body.
    while buf.len() < head + length {
        read_more(buf).await?;
    }
    Ok((status, !close))
}

/// VmRSS and VmHWM (peak) of a process, in MB.
pub fn rss(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub async fn wait_http(port: u16, path: &str) {
    for _ in 0..400 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).await.is_ok() {
                let mut buf = [0u8; 32];
                if let Ok(n) = s.read(&mut buf).await
                    && buf[..n].starts_with(b"HTTP/1.1 200")
                {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing answered on port {port}");
}

pub async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
pub struct Daemon {
    pub child: Child,
    pub port: u16,
}

impl Daemon {
    pub async fn start(dir: &Path, extra: &str) -> Self {
        Self::start_at(dir, extra, free_port()).await
    }

    pub async fn start_at(dir: &Path, extra: &str, port: u16) -> Self {
        Self::start_on(dir, "path = \"relay.db\"", extra, port).await
    }

    /// [`Daemon::start_at`] with `store` as the `[store]` table's keys (a
    /// PostgreSQL `url`, say).
    pub async fn start_on(dir: &Path, store: &str, extra: &str, port: u16) -> Self {
        let config = dir.join("relay.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[verify]\nsecret = \"{SECRET}\"\n\n[store]\n{store}\n\n{extra}"
            ),
        )
        .unwrap();
        let child = Command::new(daemon_bin())
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        wait_http(port, "/healthz").await;
        Self { child, port }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A benchmark that fails half way must not leave its daemon running.
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `n` GETs of `path` over one keep-alive connection to `addr`; each
/// one's time to the last byte, sorted.
pub async fn gets(addr: SocketAddr, path: &str, n: usize) -> Vec<Duration> {
    let mut stream = tcp_connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let mut buf = Vec::with_capacity(256 * 1024);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (status, _) = exchange(&mut stream, request.as_bytes(), &mut buf)
            .await
            .unwrap();
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&buf));
        times.push(t.elapsed());
    }
    times.sort();
    times
}

/// The `p` quantile of `sorted` (nearest rank).
pub fn quantile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[i - 1]
}

/// Ingest of `events` new webhooks (numbered from `from`) over
/// `connections` to `ingest`, with GETs of `path` at `get` ten times a
/// second beside it when `beside`; the load's result and the GETs' times.
async fn ingest_beside(
    ingest: SocketAddr,
    get: SocketAddr,
    path: &str,
    (from, events, connections): (usize, usize, usize),
    beside: bool,
) -> (LoadResult, Vec<Duration>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let going = Arc::new(AtomicBool::new(beside));
    let (g, path) = (going.clone(), path.to_owned());
    let getter = tokio::spawn(async move {
        let mut times = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while g.load(Ordering::Relaxed) {
            tick.tick().await;
            times.extend(gets(get, &path, 1).await);
        }
        times
    });
    let result = load(ingest, prepare(from, events), connections).await;
    going.store(false, Ordering::Relaxed);
    let mut times = getter.await.unwrap();
    times.sort();
    (result, times)
}

/// `rounds` rounds of ingest (`events` each, over `connections`),
/// alternately alone and beside GETs of `path` at `get` ten times a second
/// (named `alone` and `beside` in what it prints), then the ratio of the
/// rounds' medians: what to read, these machines being noisy.
pub async fn alternate(
    ingest: SocketAddr,
    (get, path): (SocketAddr, &str),
    (events, connections, rounds): (usize, usize, usize),
    (alone, beside): (&str, &str),
) {
    let mut next = 0;
    let (mut plain, mut looked) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for with in [false, true] {
            let (r, t) = ingest_beside(ingest, get, path, (next, events, connections), with).await;
            next += events;
            println!(
                "round {round}, {}: {} acknowledged/s ({} errors); ack p50 {} p99 {}{}",
                if with { beside } else { alone },
                r.rate() as u64,
                r.errors,
                ms(r.pct(0.5)),
                ms(r.pct(0.99)),
                if with && !t.is_empty() {
                    format!(
                        "; {} GETs, median {} max {}",
                        t.len(),
                        ms(quantile(&t, 0.5)),
                        ms(t[t.len() - 1])
                    )
                } else {
                    String::new()
                }
            );
            assert_eq!(r.errors, 0);
            (if with { &mut looked } else { &mut plain }).push(r);
        }
    }
    let median = |rs: &[LoadResult], f: &dyn Fn(&LoadResult) -> f64| {
        let mut v: Vec<f64> = rs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let p99 = |r: &LoadResult| r.pct(0.99).as_secs_f64();
    let rate = |r: &LoadResult| r.rate();
    println!(
        "{beside} / {alone}, medians of {rounds} rounds: ack p99 {:.2}, rate {:.2}",
        median(&looked, &p99) / median(&plain, &p99),
        median(&looked, &rate) / median(&plain, &rate),
    );
}
