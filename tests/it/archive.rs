//! The archive's downloads against a real HTTPS server on loopback (a
//! test CA's certificate for `localhost`, listed in `allow_hosts`): a file
//! streamed into a directory byte for byte with its SHA-256; redirects on
//! the same host followed and to another host refused; 404 and 410 read
//! as deleted by Replicate; a 503 worth a retry; `http://` and hosts
//! outside the rule refused with nothing fetched; no token to a listed
//! host.

mod daemon;
mod process;

use std::time::Duration;

use crate::common::files::{self, FileServer};
use replicate_relay::notify::archive::directory::Directory;
use replicate_relay::notify::archive::download::{DownloadError, Downloader};
use replicate_relay::notify::archive::resolve::Guarded;

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
    let server = FileServer::start().await;
    let downloads = downloader(&server.ca_pem);
    // The daemon's default: the system's roots.
    replicate_relay::connect::client_tls(None).expect("the system's root certificates");
    let dir = tempfile::tempdir().unwrap();
    let archive = Directory::new(dir.path());
    let fetched = downloads
        .get(&server.url("/hop/bytes/3000000/file.bin"))
        .await
        .unwrap();
    assert_eq!(fetched.size, Some(3_000_000));
    let written = archive
        .write(
            "prediction/p1/file.bin",
            downloads.chunks(fetched.body),
            5_000_000,
        )
        .await
        .unwrap();
    assert_eq!(
        fetched.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(written.bytes, 3_000_000);
    assert_eq!(written.sha256, files::sha256(3_000_000).await);
    assert_eq!(
        std::fs::read(dir.path().join("prediction/p1/file.bin")).unwrap(),
        files::bytes(3_000_000).await
    );
    let asked = server.asked();
    assert_eq!(
        asked.iter().map(|a| a.path.as_str()).collect::<Vec<_>>(),
        ["/hop/bytes/3000000/file.bin", "/bytes/3000000/file.bin"]
    );
    assert!(
        asked.iter().all(|a| a.authorization.is_none()),
        "the token went to a host that is not Replicate's: {asked:?}"
    );
}

#[tokio::test]
async fn every_refusal_says_why_and_whether_to_retry() {
    let server = FileServer::start().await;
    let port = server.port;
    let downloads = downloader(&server.ca_pem);
    let at = |path: &str| server.url(path);
    for (url, words, transient) in [
        (at("/gone"), "Replicate deleted the outputs", false),
        (at("/missing"), "Replicate deleted the outputs", false),
        (at("/busy"), "answered 503", true),
        (at("/slow-down"), "answered 429", true),
        (at("/forbidden"), "answered 403", false),
        (at("/away"), "another host", false),
        (at("/loop"), "redirected more than 5 times", false),
        (at("/to-loopback/bytes/10/x"), "another host", false),
        (
            format!("http://localhost:{port}/bytes/10/file.bin"),
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
        let asked = url
            .ends_with("/slow-down")
            .then_some(Duration::from_secs(7));
        assert_eq!(e.retry_after(), asked, "{url}: the wait it asked for");
    }
    // Refused before any request: neither the http:// URL nor example.com
    // reached anything, and the redirect away was not followed.
    let paths: Vec<String> = server.asked().into_iter().map(|a| a.path).collect();
    assert!(!paths.contains(&"/x".to_owned()), "{paths:?}");
    assert!(!paths.iter().any(|p| p.starts_with("/bytes/")), "{paths:?}");
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
    let server = FileServer::start().await;
    let downloads = downloader(&server.ca_pem)
        .with_limits(Duration::from_millis(300), Duration::from_millis(300));
    let e = downloads
        .get(&server.url("/silent"))
        .await
        .expect_err("answered");
    assert!(e.to_string().contains("did not answer within"), "{e}");
    assert!(e.is_transient(), "{e}");

    let stalled = downloads.get(&server.url("/stall")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = Directory::new(dir.path());
    let write = archive.write("p/stall.bin", downloads.chunks(stalled.body), 1_000);
    let e = tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("the stalled body was waited on for ever")
        .unwrap_err();
    assert!(e.to_string().contains("no data for"), "{e}");
    assert!(!dir.path().join("p/stall.bin").exists());
    assert_eq!(std::fs::read_dir(dir.path().join("p")).unwrap().count(), 0);
}

/// A Replicate host that resolves to a private address is refused for
/// good, before any connection: a signed payload cannot reach the network
/// the relay runs in through DNS.
#[tokio::test]
async fn a_replicate_host_resolving_to_a_private_address_is_refused_for_good() {
    use std::sync::Arc;
    let server = FileServer::start().await;
    replicate_relay::install_crypto_provider();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &server.ca_pem).unwrap();
    let tls = replicate_relay::connect::client_tls(Some(file.path())).unwrap();
    // A poisoned or split-horizon DNS: every name is this machine.
    let lookup: replicate_relay::notify::archive::resolve::Lookup =
        Arc::new(|_host| Box::pin(async { Ok(vec!["127.0.0.1".parse().unwrap()]) }));
    let downloads = Downloader::new(Guarded::with_lookup(&[], lookup), &[], tls, None);
    let url = format!(
        "https://files.replicate.delivery:{}/bytes/10/x.png",
        server.port
    );
    let e = downloads.get(&url).await.unwrap_err();
    assert!(
        matches!(e, DownloadError::Refused(_)) && !e.is_transient(),
        "{e}"
    );
    assert!(e.to_string().contains("not a public address"), "{e}");
    assert!(server.asked().is_empty(), "{:?}", server.asked());
}
