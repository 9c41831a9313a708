//! The archive's downloads against a real HTTPS server on loopback (a
//! test CA's certificate for `localhost`, listed in `allow_hosts`): a file
//! streamed into a directory byte for byte with its SHA-256; redirects on
//! the same host followed and to another host refused; 404 and 410 read
//! as deleted by Replicate; a 503 worth a retry; `http://` and hosts
//! outside the rule refused with nothing fetched; no token to a listed
//! host.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use replicate_relay::notify::archive::directory::Directory;
use replicate_relay::notify::archive::download::{DownloadError, Downloader};
use replicate_relay::notify::archive::resolve::Guarded;
use sha2::{Digest, Sha256};

/// A file big enough to come in many chunks.
fn contents() -> Vec<u8> {
    (0..3_000_000u32).map(|i| (i % 251) as u8).collect()
}

/// An HTTPS server for `localhost` on a free port; what it was asked,
/// with the `authorization` header each request carried.
async fn server() -> (u16, String, Arc<Mutex<Vec<(String, Option<String>)>>>) {
    let ca = crate::common::ca::TestCa::new();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let auth = req
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_owned());
                            seen.lock()
                                .unwrap()
                                .push((req.uri().path().to_owned(), auth));
                            let reply = |status: u16, location: Option<&str>, body: Vec<u8>| {
                                let mut r = hyper::Response::builder().status(status);
                                if let Some(l) = location {
                                    r = r.header("location", l);
                                }
                                Ok::<_, Infallible>(
                                    r.body(Full::new(Bytes::from(body)).boxed()).unwrap(),
                                )
                            };
                            match req.uri().path() {
                                // Headers never come.
                                "/silent" => std::future::pending().await,
                                // A first chunk, then nothing, ever.
                                "/stall" => {
                                    let first = futures_util::stream::iter([Ok::<_, Infallible>(
                                        hyper::body::Frame::data(Bytes::from_static(b"first")),
                                    )]);
                                    let body = StreamBody::new(
                                        first.chain(futures_util::stream::pending()),
                                    );
                                    Ok(hyper::Response::new(BodyExt::boxed(body)))
                                }
                                "/file.bin" => reply(200, None, contents()),
                                "/hop" => reply(302, Some("/file.bin"), vec![]),
                                "/loop" => reply(302, Some("/loop"), vec![]),
                                "/away" => reply(302, Some("https://replicate.delivery/x"), vec![]),
                                "/gone" => reply(410, None, vec![]),
                                "/busy" => reply(503, None, vec![]),
                                "/forbidden" => reply(403, None, vec![]),
                                _ => reply(404, None, vec![]),
                            }
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
    (port, ca.pem.clone(), asked)
}

/// A downloader trusting the CA in `ca_pem`, through the daemon's own
/// TLS settings for a `ca_file`.
fn downloader(ca_pem: &str) -> Downloader {
    replicate_relay::install_crypto_provider();
    let listed = vec!["localhost".to_owned()];
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), ca_pem).unwrap();
    let tls = replicate_relay::connect::client_tls(Some(file.path())).unwrap();
    Downloader::new(
        Guarded::new(&listed),
        &listed,
        tls,
        Some("r8_secret".into()),
    )
}

#[tokio::test]
async fn a_file_is_kept_byte_for_byte_through_a_redirect_on_its_host() {
    let (port, root, asked) = server().await;
    let downloads = downloader(&root);
    // The daemon's default: the system's roots.
    replicate_relay::connect::client_tls(None).expect("the system's root certificates");
    let dir = tempfile::tempdir().unwrap();
    let archive = Directory::new(dir.path());
    let (body, size) = downloads
        .get(&format!("https://localhost:{port}/hop"))
        .await
        .unwrap();
    assert_eq!(size, Some(3_000_000));
    let written = archive
        .write("prediction/p1/file.bin", downloads.chunks(body), 5_000_000)
        .await
        .unwrap();
    let want = contents();
    assert_eq!(written.bytes, want.len() as u64);
    assert_eq!(written.sha256, hex::encode(Sha256::digest(&want)));
    assert_eq!(
        std::fs::read(dir.path().join("prediction/p1/file.bin")).unwrap(),
        want
    );
    let asked = asked.lock().unwrap().clone();
    assert_eq!(
        asked.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["/hop", "/file.bin"]
    );
    assert!(
        asked.iter().all(|(_, auth)| auth.is_none()),
        "the token went to a host that is not Replicate's: {asked:?}"
    );
}

#[tokio::test]
async fn every_refusal_says_why_and_whether_to_retry() {
    let (port, root, asked) = server().await;
    let downloads = downloader(&root);
    let at = |path: &str| format!("https://localhost:{port}{path}");
    for (url, words, transient) in [
        (at("/gone"), "Replicate deleted the outputs", false),
        (at("/missing"), "Replicate deleted the outputs", false),
        (at("/busy"), "answered 503", true),
        (at("/forbidden"), "answered 403", false),
        (at("/away"), "another host", false),
        (at("/loop"), "redirected more than 5 times", false),
        (
            format!("http://localhost:{port}/file.bin"),
            "not an https:// URL",
            false,
        ),
        (
            "https://example.com/file.bin".to_owned(),
            "not one of Replicate's",
            false,
        ),
    ] {
        let e = downloads
            .get(&url)
            .await
            .err()
            .unwrap_or_else(|| panic!("{url} fetched"));
        assert!(e.to_string().contains(words), "{url}: {e}");
        assert_eq!(e.is_transient(), transient, "{url}: {e}");
    }
    // Refused before any request: neither the http:// URL nor example.com
    // reached anything, and the redirect away was not followed.
    let paths: Vec<String> = asked
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert!(!paths.contains(&"/x".to_owned()), "{paths:?}");
    assert_eq!(
        paths.iter().filter(|p| *p == "/file.bin").count(),
        0,
        "{paths:?}"
    );
    // A server that is not there: worth a retry.
    let closed = crate::common::stand_ins::free_port();
    let e = downloads
        .get(&format!("https://localhost:{closed}/x"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, DownloadError::Connect { .. }) && e.is_transient(),
        "{e}"
    );
}

/// A server that never answers, or stops sending mid-file, holds a
/// download for its limits only: given up, worth a retry, nothing kept.
#[tokio::test]
async fn a_server_that_stalls_is_given_up() {
    use std::time::Duration;
    let (port, root, _) = server().await;
    let downloads =
        downloader(&root).with_limits(Duration::from_millis(300), Duration::from_millis(300));
    let e = downloads
        .get(&format!("https://localhost:{port}/silent"))
        .await
        .expect_err("answered");
    assert!(e.to_string().contains("did not answer within"), "{e}");
    assert!(e.is_transient(), "{e}");

    let (body, _) = downloads
        .get(&format!("https://localhost:{port}/stall"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = Directory::new(dir.path());
    let write = archive.write("p/stall.bin", downloads.chunks(body), 1_000);
    let e = tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("the stalled body was waited on for ever")
        .unwrap_err();
    assert!(e.to_string().contains("no data for"), "{e}");
    assert!(!dir.path().join("p/stall.bin").exists());
    assert_eq!(std::fs::read_dir(dir.path().join("p")).unwrap().count(), 0);
}
