//! Archive benchmark: `cargo bench --bench archive [-- --megabytes M
//! --rounds R]`.
//!
//! One HTTPS file server (the tests' stand-in for `replicate.delivery`,
//! a test CA's certificate, files made up as they stream) serves a file of
//! M MiB (default 1024) to, in alternation: `curl -o` (saving it to disk),
//! and the release daemon archiving a job that names it (from the signed
//! webhook to its manifest on disk: the download, SHA-256 of every byte,
//! the file flushed to disk and renamed). It prints MiB/s for both and
//! archive / curl, measured in the same run. Results: BENCHMARKS.md.

#[path = "../tests/it/common/ca.rs"]
#[allow(dead_code)] // the tests use more of it
mod ca;
#[path = "../tests/it/common/files.rs"]
#[allow(dead_code)]
mod files;
mod load;

use std::path::Path;
use std::time::{Duration, Instant};

use load::{Daemon, SECRET, flag, now};
use replicate_relay::signature::Secret;

fn main() {
    replicate_relay::install_crypto_provider();
    let megabytes: u64 = flag("--megabytes").unwrap_or(1024);
    let rounds: usize = flag("--rounds").unwrap_or(3);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run(megabytes << 20, rounds));
}

async fn run(size: u64, rounds: usize) {
    let server = files::FileServer::start().await;
    // On the disk the daemon would use, not a tmpfs.
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ca = server.ca_file(work.path());
    let url = server.url(&format!("/bytes/{size}/big.bin"));
    println!(
        "| round | curl -o MiB/s | archive MiB/s | archive / curl |\n| --- | --- | --- | --- |"
    );
    for round in 1..=rounds {
        let curl = curl(&url, &ca, work.path(), size);
        let archive = archive(&server, &url, work.path(), round, size).await;
        let rate = |d: Duration| (size >> 20) as f64 / d.as_secs_f64();
        println!(
            "| {round} | {:.0} | {:.0} | {:.2} |",
            rate(curl),
            rate(archive),
            rate(archive) / rate(curl)
        );
    }
}

/// `curl -o` of `url` into `dir`; how long it took.
fn curl(url: &str, ca: &Path, dir: &Path, size: u64) -> Duration {
    let out = dir.join("curl.bin");
    let started = Instant::now();
    let status = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--cacert"])
        .arg(ca)
        .arg("-o")
        .arg(&out)
        .arg(url)
        .status()
        .expect("curl is installed");
    let took = started.elapsed();
    assert!(status.success(), "curl failed");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), size);
    std::fs::remove_file(&out).unwrap();
    took
}

/// The release daemon archiving a job that names `url`, from the webhook
/// to the manifest; how long it took.
async fn archive(
    server: &files::FileServer,
    url: &str,
    dir: &Path,
    round: usize,
    size: u64,
) -> Duration {
    let daemon_dir = dir.join(format!("daemon-{round}"));
    std::fs::create_dir_all(&daemon_dir).unwrap();
    let ca = server.ca_file(&daemon_dir);
    let extra = format!(
        "[notifiers.keep]\ntype = \"archive\"\nto = \"archive\"\nallow_hosts = [\"localhost\"]\n\
         ca_file = \"{}\"\n\n[[routes]]\nname = \"all\"\nnotify = [\"keep\"]\n",
        ca.display()
    );
    let daemon = Daemon::start(&daemon_dir, &extra).await;
    let id = format!("bench{round}");
    let body = serde_json::to_vec(&serde_json::json!({
        "id": id, "model": "acme/bench", "status": "succeeded",
        "urls": {"get": format!("https://api.replicate.com/v1/predictions/{id}")},
        "output": [url],
    }))
    .unwrap();
    let webhook = format!("msg_{id}");
    let ts = now();
    let signature = Secret::parse(SECRET).unwrap().sign(&webhook, ts, &body);
    let manifest = daemon_dir.join(format!("archive/prediction/acme/bench/{id}/manifest.json"));
    let started = Instant::now();
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/hooks/replicate", daemon.port))
        .header("webhook-id", &webhook)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    while !manifest.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no manifest after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(kept["total_bytes"], size);
    daemon.stop();
    std::fs::remove_dir_all(&daemon_dir).unwrap();
    took
}
