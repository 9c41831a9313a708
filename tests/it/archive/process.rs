//! The archive in the real binary, as a process: a SIGKILL in the middle
//! of a download leaves nothing under the file's final name, and the
//! delivery completes after the restart; a 1 GB output streams through a
//! daemon whose resident memory barely moves.

use std::path::Path;
use std::time::Duration;

use super::daemon::{archive_extra, job, listing, settled};
use crate::common::files::{self, FileServer};
use crate::common::serve::{Serve, wait_ready};
use crate::common::*;
use replicate_relay::store::DeliveryState;
use serde_json::{Value, json};

/// [`archive_extra`] on a known port.
fn config_on_port(dir: &Path, server: &FileServer) -> (std::path::PathBuf, u16) {
    crate::common::serve::config_on_port(dir, &archive_extra(dir, server, ""))
}

async fn post_to(port: u16, webhook_id: &str, body: &[u8]) {
    let (status, answer) = post(
        &reqwest::Client::new(),
        &format!("http://127.0.0.1:{port}/hooks/replicate"),
        &signed(SECRET, webhook_id, now(), body),
        body.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

/// The size of the temporary file being written in `folder`, if any.
fn part_size(folder: &Path) -> Option<u64> {
    std::fs::read_dir(folder)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().contains(".part-"))
        .and_then(|e| e.metadata().ok())
        .map(|m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_download_leaves_no_partial_file_and_the_archive_completes_after_restart() {
    let server = FileServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = config_on_port(dir.path(), &server);
    const SIZE: u64 = 20_000_000;
    let daemon = Serve::start(&config, &[]);
    wait_ready(port).await;
    // The first answer sends half the file, then nothing.
    let body = job(
        "p_killed",
        json!([server.url(&format!("/stalls-once/{SIZE}/weights.bin"))]),
    );
    post_to(port, "msg_killed", &body).await;
    let folder = dir.path().join("archive/prediction/acme/neon/p_killed");
    let mut waited = 0;
    while part_size(&folder).is_none_or(|n| n < SIZE / 2) {
        assert!(waited < 600, "no half-written file; log:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    daemon.kill();
    assert!(
        !folder.join("weights.bin").exists(),
        "a partial file under its final name"
    );
    assert!(!folder.join("manifest.json").exists());

    let daemon = Serve::start(&config, &[]);
    wait_ready(port).await;
    let rows = settled(&dir.path().join("relay.db"), 1, Duration::from_secs(60)).await;
    assert_eq!(
        rows[0].delivery.state,
        DeliveryState::Delivered,
        "{:?}; log:\n{}",
        rows[0].delivery.last_error,
        daemon.log()
    );
    // The temporary file the killed attempt left is gone.
    assert_eq!(
        listing(&folder),
        ["job.json", "manifest.json", "weights.bin"]
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["files"][0]["bytes"], SIZE);
    assert_eq!(manifest["files"][0]["sha256"], files::sha256(SIZE).await);
    let kept = std::fs::read(folder.join("weights.bin")).unwrap();
    assert!(kept == files::bytes(SIZE).await, "the kept file differs");
    daemon.stop_blocking();
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gb_output_streams_through_with_flat_memory() {
    const GB: u64 = 1 << 30;
    let server = FileServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = config_on_port(dir.path(), &server);
    let daemon = Serve::start(&config, &[]);
    wait_ready(port).await;
    // A first, small archive warms up what the daemon allocates once
    // (the TLS client, the pools), so the baseline is the running daemon's.
    post_to(
        port,
        "msg_warm",
        &job("p_warm", json!([server.url("/bytes/1000000/warm.bin")])),
    )
    .await;
    let db = dir.path().join("relay.db");
    settled(&db, 1, Duration::from_secs(30)).await;
    let baseline = rss(daemon.pid());
    post_to(
        port,
        "msg_big",
        &job(
            "p_big",
            json!([server.url(&format!("/bytes/{GB}/big.bin"))]),
        ),
    )
    .await;
    let mut peak = baseline;
    let mut waited_for = None;
    let rows = loop {
        peak = peak.max(rss(daemon.pid()));
        if waited_for.is_none() {
            // While it streams, the archive's wait is a metric.
            let metrics = get_text(&format!("http://127.0.0.1:{port}/metrics")).await;
            waited_for = metrics
                .lines()
                .find_map(|l| {
                    l.strip_prefix("relay_notifier_oldest_pending_seconds{notifier=\"keep\"} ")
                })
                .map(str::to_owned);
        }
        let rows = settled(&db, 2, Duration::from_millis(200)).await;
        if rows.len() == 2
            && rows
                .iter()
                .all(|r| r.delivery.state != DeliveryState::Pending)
            && rows
                .iter()
                .all(|r| r.delivery.state != DeliveryState::Sending)
        {
            break rows;
        }
    };
    let big = rows.iter().find(|r| r.object_id == "p_big").unwrap();
    assert_eq!(
        big.delivery.state,
        DeliveryState::Delivered,
        "{:?}",
        big.delivery.last_error
    );
    let waited_for: f64 = waited_for.expect("the wait was shown").parse().unwrap();
    assert!(waited_for >= 0.0);
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 50 << 20,
        "resident memory grew by {} MB while 1 GB streamed (from {} MB)",
        growth >> 20,
        baseline >> 20
    );
    let folder = dir.path().join("archive/prediction/acme/neon/p_big");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["files"][0]["bytes"], GB);
    assert_eq!(manifest["files"][0]["sha256"], files::sha256(GB).await);
    assert_eq!(std::fs::metadata(folder.join("big.bin")).unwrap().len(), GB);
    eprintln!(
        "RSS {} MB before, peak {} MB while 1 GB streamed",
        baseline >> 20,
        peak >> 20
    );
    daemon.stop_blocking();
}
