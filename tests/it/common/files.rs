//! A file server standing in for `replicate.delivery`: HTTPS on loopback
//! with a test CA's certificate for `localhost`, serving files of any size
//! made up as they stream (so a 1 GB output costs no memory here), and the
//! answers an archive must judge: redirects on the host and off it, a
//! deleted file, a busy server, one that never answers and one that stops
//! mid-file. It records what it was asked and with which `authorization`.
//!
//! Paths: `/bytes/<size>/<name>`; `/hop/<path>` (302 to `/<path>`);
//! `/to-loopback/<path>` (302 to the same path on `127.0.0.1`);
//! `/stalls-once/<size>/<name>` (half the file then nothing, the first
//! time only); `/silent`, `/stall`, `/loop`, `/away`, `/gone` (410),
//! `/busy` (503), `/slow-down` (429, `Retry-After: 7`), `/forbidden`
//! (403); anything else 404.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use sha2::{Digest, Sha256};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// One request the server saw: its path and its `authorization` header.
#[derive(Debug, Clone)]
pub struct Asked {
    pub path: String,
    pub authorization: Option<String>,
}

pub struct FileServer {
    pub port: u16,
    /// The test CA's certificate (PEM), for a client to trust.
    pub ca_pem: String,
    asked: Arc<Mutex<Vec<Asked>>>,
}

/// The size of the chunks a file streams in.
const CHUNK: usize = 64 * 1024;
const BLOCK_CHUNKS: u64 = 16;

impl FileServer {
    pub async fn start() -> Self {
        let ca = super::ca::TestCa::new();
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stalled = Arc::new(AtomicBool::new(false));
        let seen = asked.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, seen, stalled) = (acceptor.clone(), seen.clone(), stalled.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (seen, stalled) = (seen.clone(), stalled.clone());
                            async move {
                                seen.lock().unwrap().push(Asked {
                                    path: req.uri().path().to_owned(),
                                    authorization: req
                                        .headers()
                                        .get("authorization")
                                        .map(|v| v.to_str().unwrap().to_owned()),
                                });
                                Ok::<_, Infallible>(answer(req.uri().path(), port, &stalled).await)
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        FileServer {
            port,
            ca_pem: ca.pem.clone(),
            asked,
        }
    }

    /// `https://localhost:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// What it was asked so far.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }

    /// Writes the CA's certificate into `dir` for a `ca_file`.
    pub fn ca_file(&self, dir: &Path) -> PathBuf {
        let file = dir.join("files-ca.pem");
        std::fs::write(&file, &self.ca_pem).unwrap();
        file
    }
}

async fn answer(path: &str, port: u16, stalled: &AtomicBool) -> hyper::Response<Body> {
    let reply = |status: u16, location: Option<String>| {
        let mut r = hyper::Response::builder().status(status);
        if let Some(l) = location {
            r = r.header("location", l);
        }
        r.body(Full::new(Bytes::new()).boxed()).unwrap()
    };
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(3, '/').collect();
    match parts.as_slice() {
        ["bytes", size, name] => file(size, name, None),
        ["stalls-once", size, name] => {
            let once = !stalled.swap(true, Ordering::SeqCst);
            file(size, name, once.then_some(()))
        }
        ["hop", ..] => reply(302, Some(format!("/{}", &path["/hop/".len()..]))),
        ["to-loopback", ..] => reply(
            302,
            Some(format!(
                "https://127.0.0.1:{port}/{}",
                &path["/to-loopback/".len()..]
            )),
        ),
        // Headers never come.
        ["silent"] => std::future::pending().await,
        // A first chunk, then nothing, ever.
        ["stall"] => {
            let first = futures_util::stream::iter([Ok(Frame::data(Bytes::from_static(b"first")))]);
            hyper::Response::new(BodyExt::boxed(StreamBody::new(
                first.chain(futures_util::stream::pending()),
            )))
        }
        ["loop"] => reply(302, Some("/loop".into())),
        ["away"] => reply(302, Some("https://replicate.delivery/x".into())),
        ["gone"] => reply(410, None),
        ["busy"] => reply(503, None),
        // Too many requests: come back in 7 seconds.
        ["slow-down"] => {
            let mut r = reply(429, None);
            r.headers_mut().insert("retry-after", "7".parse().unwrap());
            r
        }
        ["forbidden"] => reply(403, None),
        _ => reply(404, None),
    }
}

/// `size` bytes of [`contents`] as `name`; with `stall`, half of them and
/// then nothing.
fn file(size: &str, name: &str, stall: Option<()>) -> hyper::Response<Body> {
    let Ok(size) = size.parse::<u64>() else {
        return hyper::Response::builder()
            .status(400)
            .body(Full::new(Bytes::new()).boxed())
            .unwrap();
    };
    let content_type = match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("png") => "image/png",
        Some("txt") => "text/plain",
        _ => "application/octet-stream",
    };
    let frames = contents(size).map(|chunk| Ok(Frame::data(chunk)));
    let body = match stall {
        None => BodyExt::boxed(StreamBody::new(frames)),
        Some(()) => {
            let half = contents(size / 2).map(|chunk| Ok(Frame::data(chunk)));
            BodyExt::boxed(StreamBody::new(half.chain(futures_util::stream::pending())))
        }
    };
    hyper::Response::builder()
        .header("content-length", size)
        .header("content-type", content_type)
        .body(body)
        .unwrap()
}

/// A block of noise the files are made of, each 1 MiB of a file stamped
/// with its number so a chunk out of place changes the file's hash.
fn block() -> &'static [u8] {
    static BLOCK: OnceLock<Vec<u8>> = OnceLock::new();
    BLOCK.get_or_init(|| {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..CHUNK * BLOCK_CHUNKS as usize)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    })
}

/// The contents of a file of `size` bytes, in chunks.
pub fn contents(size: u64) -> impl Stream<Item = Bytes> + Send + 'static {
    let chunks = size.div_ceil(CHUNK as u64);
    futures_util::stream::iter(0..chunks).map(move |i| {
        let start = (i % BLOCK_CHUNKS) as usize * CHUNK;
        let len = (size - i * CHUNK as u64).min(CHUNK as u64) as usize;
        let mut chunk = block()[start..start + len].to_vec();
        if i % BLOCK_CHUNKS == 0 {
            let stamp = (i / BLOCK_CHUNKS).to_le_bytes();
            let n = stamp.len().min(len);
            chunk[..n].copy_from_slice(&stamp[..n]);
        }
        Bytes::from(chunk)
    })
}

/// SHA-256 of a file of `size` bytes, lowercase hex.
pub async fn sha256(size: u64) -> String {
    let mut hash = Sha256::new();
    let mut chunks = std::pin::pin!(contents(size));
    while let Some(chunk) = chunks.next().await {
        hash.update(&chunk);
    }
    hex::encode(hash.finalize())
}

/// The contents of a file of `size` bytes, whole.
pub async fn bytes(size: u64) -> Vec<u8> {
    contents(size)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect()
}
