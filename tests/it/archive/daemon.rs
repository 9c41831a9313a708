//! The `archive` notifier end to end: the real daemon, a signed webhook,
//! the [`FileServer`] standing in for `replicate.delivery`, and a
//! directory to keep files in. Every file a job names is kept byte for
//! byte with a manifest that says so; what may not be fetched, and files
//! Replicate already deleted, end dead with the reason and nothing fetched.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::files::{self, FileServer};
use crate::common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::store::{DeliveryState, Listed};
use serde_json::{Value, json};

/// The notifier and route archiving every final job into `dir/archive`,
/// fetching from `server` (listed in `allow_hosts`, trusted through
/// `ca_file`), with `extra_keys` in the notifier.
pub fn archive_extra(dir: &Path, server: &FileServer, extra_keys: &str) -> String {
    server.ca_file(dir);
    format!(
        "[notifiers.keep]\ntype = \"archive\"\nto = \"archive\"\nallow_hosts = [\"localhost\"]\n\
         ca_file = \"files-ca.pem\"\n{extra_keys}\n\n\
         [[routes]]\nname = \"everything\"\nnotify = [\"keep\"]\n"
    )
}

/// A config with [`archive_extra`].
pub fn archive_config(dir: &Path, server: &FileServer, extra_keys: &str) -> std::path::PathBuf {
    write_config(dir, SECRET, &archive_extra(dir, server, extra_keys))
}

/// A finished prediction of `acme/neon` whose output is `output`.
pub fn job(id: &str, output: Value) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&payload(id, "succeeded")).unwrap();
    body["model"] = json!("acme/neon");
    // Made through the API: the kind whose files Replicate deletes.
    body["source"] = json!("api");
    body["output"] = output;
    serde_json::to_vec(&body).unwrap()
}

/// Waits until `n` deliveries are delivered or dead.
pub async fn settled(db: &Path, n: usize, within: Duration) -> Vec<Listed> {
    wait_deliveries(db, within, |rows| {
        rows.len() >= n
            && rows.iter().all(|r| {
                matches!(
                    r.delivery.state,
                    DeliveryState::Delivered | DeliveryState::Dead
                )
            })
    })
    .await
}

/// The files under `dir`, relative, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.map(Result::unwrap) {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                let path = entry.path();
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn every_file_a_job_names_is_kept_byte_for_byte_with_a_manifest_written_last() {
    let server = FileServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A name of its own: the metrics registry is the test process's.
    let config = archive_config(dir.path(), &server, "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("keep", "keep_every")).unwrap();
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    let sizes = [1_000u64, 3_000_000, 1];
    let output = json!({
        "images": [server.url("/bytes/1000/out.png"), server.url("/hop/bytes/3000000/out.png")],
        "nested": {"deeper": [{"log": server.url("/bytes/1/log.txt")}]},
        "caption": "not a URL",
        // Named twice, kept once.
        "again": server.url("/bytes/1000/out.png"),
    });
    let body = job("p_keep", output);
    post_signed(&daemon, "msg_keep", &body).await;
    let rows = settled(&dir.path().join("relay.db"), 1, Duration::from_secs(30)).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].delivery.state,
        DeliveryState::Delivered,
        "{:?}",
        rows[0].delivery.last_error
    );
    let folder = dir.path().join("archive/prediction/acme/neon/p_keep");
    assert_eq!(
        listing(&folder),
        [
            "job.json",
            "log.txt",
            "manifest.json",
            "out-2.png",
            "out.png"
        ]
    );
    assert_eq!(std::fs::read(folder.join("job.json")).unwrap(), body);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["id"], "p_keep");
    assert_eq!(manifest["kind"], "prediction");
    assert_eq!(manifest["folder"], "prediction/acme/neon/p_keep/");
    let kept = manifest["files"].as_array().unwrap();
    assert_eq!(kept.len(), 3, "{manifest:#}");
    // The order the job names them in: keys sorted, arrays in order.
    let want = [
        // `again` sorts first; `images/0` names the same URL again.
        ("/output/again", "out.png", sizes[0], "image/png"),
        ("/output/images/1", "out-2.png", sizes[1], "image/png"),
        (
            "/output/nested/deeper/0/log",
            "log.txt",
            sizes[2],
            "text/plain",
        ),
    ];
    let mut total = 0;
    for ((at, name, size, content_type), entry) in want.iter().zip(kept) {
        assert_eq!(entry["at"], *at, "{entry}");
        assert_eq!(entry["path"], format!("prediction/acme/neon/p_keep/{name}"));
        assert_eq!(entry["bytes"], *size);
        assert_eq!(entry["content_type"], *content_type);
        // Checked against the source, not against what the relay wrote.
        assert_eq!(entry["sha256"], files::sha256(*size).await, "{name}");
        let on_disk = std::fs::read(folder.join(name)).unwrap();
        assert_eq!(on_disk, files::bytes(*size).await, "{name}");
        assert_eq!(
            entry["location"],
            folder.join(name).display().to_string(),
            "{entry}"
        );
        total += size;
    }
    assert_eq!(manifest["total_bytes"], total);
    // `events show` lists the job's delivery and the files it kept.
    let shown = run_relay(&["events", "show", "p_keep"], &config);
    assert!(
        shown.contains("prediction p_keep: succeeded (acme/neon)"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "Archived by keep_every: 3 files, {total} bytes, in "
        )),
        "{shown}"
    );
    let out2 = files::sha256(sizes[1]).await;
    assert!(
        shown
            .lines()
            .any(|l| l.contains("out-2.png") && l.contains("3000000") && l.contains(&out2)),
        "{shown}"
    );
    let json: Value = serde_json::from_str(&run_relay(
        &["events", "show", "msg_keep", "--json"],
        &config,
    ))
    .unwrap();
    assert_eq!(json["deliveries"][0]["state"], "delivered");
    assert_eq!(json["deliveries"][0]["result"], manifest);
    assert_eq!(json["body"]["id"], "p_keep");
    let metrics = get_text(&format!("{}/metrics", daemon.base)).await;
    assert!(
        metrics.contains(&format!(
            "relay_archive_bytes_total{{notifier=\"keep_every\"}} {total}"
        )),
        "{metrics}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn what_may_not_be_fetched_or_is_already_deleted_ends_dead_with_the_reason() {
    let server = FileServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &archive_config(dir.path(), &server, ""),
        Arc::new(SystemClock),
    )
    .await;
    let port = server.port;
    let cases = [
        (
            "p_outside",
            json!([
                server.url("/bytes/10/a.png"),
                "https://files.example.org/b.png"
            ]),
            "not one of Replicate's",
        ),
        (
            "p_loopback",
            json!(server.url("/to-loopback/bytes/10/a.png")),
            "another host",
        ),
        (
            "p_plain",
            json!(format!("http://localhost:{port}/bytes/10/a.png")),
            "not an https:// URL",
        ),
        (
            "p_gone",
            json!(server.url("/gone")),
            "Replicate deleted the outputs",
        ),
    ];
    for (id, output, _) in &cases {
        post_signed(&daemon, &format!("msg_{id}"), &job(id, output.clone())).await;
    }
    let mut removed: Value = serde_json::from_slice(&job("p_removed", Value::Null)).unwrap();
    removed["data_removed"] = json!(true);
    post_signed(
        &daemon,
        "msg_p_removed",
        &serde_json::to_vec(&removed).unwrap(),
    )
    .await;
    let rows = settled(&dir.path().join("relay.db"), 5, Duration::from_secs(30)).await;
    assert_eq!(rows.len(), 5);
    let reasons = cases.iter().map(|(id, _, why)| (*id, *why)).chain([(
        "p_removed",
        "Replicate deleted the outputs; archive within an hour of completion",
    )]);
    for (id, why) in reasons {
        let row = rows.iter().find(|r| r.object_id == id).unwrap();
        assert_eq!(row.delivery.state, DeliveryState::Dead, "{id}");
        assert_eq!(row.delivery.attempts, 1, "{id}: given up at once");
        let error = row.delivery.last_error.as_deref().unwrap_or_default();
        assert!(error.contains(why), "{id}: {error}");
    }
    // Nothing was fetched: the file listed beside the refused one neither,
    // and the redirect to 127.0.0.1 was not followed.
    let fetched: Vec<String> = server.asked().into_iter().map(|a| a.path).collect();
    assert!(
        !fetched.iter().any(|p| p.starts_with("/bytes/")),
        "{fetched:?}"
    );
    assert!(listing(&dir.path().join("archive")).is_empty());
    daemon.stop().await;
}

#[tokio::test]
async fn an_s3_bucket_receives_the_same_files_with_a_manifest_multipart_for_the_large_one() {
    use crate::common::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
    let files = FileServer::start().await;
    let s3 = S3Server::start("outputs").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s3-secret"), SECRET_KEY).unwrap();
    let config = archive_config(
        dir.path(),
        &files,
        &format!(
            "endpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"{ACCESS_KEY}\"\n\
             secret_access_key_file = \"s3-secret\"\n",
            s3.endpoint
        ),
    );
    // The same notifier, kept in the bucket under a prefix.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("to = \"archive\"", "to = \"s3://outputs/relay/\""),
    )
    .unwrap();
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    const LARGE: u64 = 20_000_000;
    let sizes = [1_000u64, LARGE];
    let output = json!([
        files.url("/bytes/1000/out.png"),
        files.url(&format!("/bytes/{LARGE}/weights.tar"))
    ]);
    let body = job("p_s3", output);
    post_signed(&daemon, "msg_s3", &body).await;
    let rows = settled(&dir.path().join("relay.db"), 1, Duration::from_secs(60)).await;
    assert_eq!(
        rows[0].delivery.state,
        DeliveryState::Delivered,
        "{:?}",
        rows[0].delivery.last_error
    );
    let folder = s3.root.join("outputs/relay/prediction/acme/neon/p_s3");
    let kept: Vec<String> = listing(&folder)
        .into_iter()
        .filter(|name| !name.starts_with('.'))
        .collect();
    assert_eq!(
        kept,
        ["job.json", "manifest.json", "out.png", "weights.tar"]
    );
    assert_eq!(std::fs::read(folder.join("job.json")).unwrap(), body);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["to"], "s3://outputs/relay/");
    for (entry, (name, size)) in manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["out.png", "weights.tar"].iter().zip(sizes))
    {
        assert_eq!(entry["bytes"], size);
        assert_eq!(entry["sha256"], files::sha256(size).await, "{name}");
        assert_eq!(
            entry["location"],
            format!("s3://outputs/relay/prediction/acme/neon/p_s3/{name}")
        );
        assert!(
            std::fs::read(folder.join(name)).unwrap() == files::bytes(size).await,
            "{name} differs"
        );
    }
    // The large file went up in parts, completed last; the small ones in
    // one request each.
    let requests = s3.requests();
    let parts = requests
        .iter()
        .filter(|r| {
            r.starts_with("PUT ") && r.contains("weights.tar?") && r.contains("partNumber=")
        })
        .count();
    assert!(parts >= 2, "{requests:#?}");
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("POST ") && r.contains("weights.tar?uploadId=")),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("PUT ") && r.ends_with("/out.png")),
        "{requests:#?}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_bucket_that_refuses_the_credentials_keeps_the_delivery_retrying_with_the_reason() {
    use crate::common::s3::{ACCESS_KEY, S3Server};
    let files = FileServer::start().await;
    let s3 = S3Server::start("outputs").await;
    let dir = tempfile::tempdir().unwrap();
    let config = archive_config(
        dir.path(),
        &files,
        &format!(
            "endpoint = \"{}\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"wrong\"\n",
            s3.endpoint
        ),
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("to = \"archive\"", "to = \"s3://outputs\""),
    )
    .unwrap();
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    post_signed(
        &daemon,
        "msg_denied",
        &job("p_denied", json!([files.url("/bytes/1000/out.png")])),
    )
    .await;
    let rows = wait_deliveries(&dir.path().join("relay.db"), Duration::from_secs(30), |r| {
        r.first().is_some_and(|r| r.delivery.last_error.is_some())
    })
    .await;
    let d = &rows[0].delivery;
    // Credentials can be fixed within max_age; the files cannot come back.
    assert_eq!(d.state, DeliveryState::Pending, "{:?}", d.last_error);
    let error = d.last_error.as_deref().unwrap();
    assert!(
        error.contains("cannot write s3://outputs/prediction/acme/neon/p_denied/out.png"),
        "{error}"
    );
    assert!(
        error.contains("SignatureDoesNotMatch") || error.contains("403"),
        "{error}"
    );
    assert!(!s3.root.join("outputs/prediction").exists());
    daemon.stop().await;
}

/// A webhook after the archive on the same route: its template sees the
/// manifest (with each file's public URL), or why the archive failed.
#[tokio::test]
async fn a_notifier_after_the_archive_links_to_the_kept_files_or_says_why_there_are_none() {
    use crate::common::stand_ins::WebhookReceiver;
    let files = FileServer::start().await;
    let hook = WebhookReceiver::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    files.ca_file(dir.path());
    std::fs::create_dir_all(dir.path().join("templates/webhook")).unwrap();
    std::fs::write(
        dir.path().join("templates/webhook/linked.json.hbs"),
        r#"{"id": "{{id}}", "error": "{{archive_error}}", "files": [{{#each archive.files}}{{#unless @first}},{{/unless}}{"url": "{{url}}", "bytes": {{bytes}}, "sha256": "{{sha256}}"}{{/each}}], "links": [{{#each files}}{{#unless @first}},{{/unless}}{{{json url}}}{{/each}}], "expires": {{{json outputs_expire_at}}}}"#,
    )
    .unwrap();
    let config = write_config(
        dir.path(),
        SECRET,
        &format!(
            "[templates]\ndir = \"templates\"\n\n\
             [notifiers.keep]\ntype = \"archive\"\nto = \"archive\"\nallow_hosts = [\"localhost\"]\n\
             ca_file = \"files-ca.pem\"\npublic_url = \"https://files.example.org/replicate/\"\n\n\
             [notifiers.hook]\ntype = \"webhook\"\nurl = \"http://{}/\"\nsecret = \"{SECRET}\"\ntemplate = \"linked\"\n\n\
             [[routes]]\nname = \"everything\"\nnotify = [\"hook\", \"keep\"]\nafter = \"keep\"\n",
            hook.addr
        ),
    );
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    post_signed(
        &daemon,
        "msg_linked",
        &job("p_linked", json!([files.url("/bytes/5000/out 1.png")])),
    )
    .await;
    post_signed(
        &daemon,
        "msg_unlinked",
        &job("p_unlinked", json!([files.url("/gone")])),
    )
    .await;
    let got = hook.wait_for(2, Duration::from_secs(30)).await;
    let rows = settled(&dir.path().join("relay.db"), 4, Duration::from_secs(1)).await;
    assert_eq!(got.len(), 2, "{rows:#?}");
    let bodies: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let linked = bodies.iter().find(|b| b["id"] == "p_linked").unwrap();
    assert_eq!(
        linked["files"],
        json!([{
            "url": "https://files.example.org/replicate/prediction/acme/neon/p_linked/out%201.png",
            "bytes": 5000,
            "sha256": files::sha256(5000).await,
        }]),
        "{linked}"
    );
    assert_eq!(linked["error"], "");
    // Every template's file links now go to the kept copy, and the warning
    // that Replicate deletes the files has no reason to be.
    assert_eq!(
        linked["links"],
        json!(["https://files.example.org/replicate/prediction/acme/neon/p_linked/out%201.png"]),
        "{linked}"
    );
    assert_eq!(linked["expires"], Value::Null, "{linked}");
    let unlinked = bodies.iter().find(|b| b["id"] == "p_unlinked").unwrap();
    assert_eq!(unlinked["files"], json!([]));
    assert_eq!(unlinked["links"], json!([files.url("/gone")]));
    assert!(unlinked["expires"].is_string(), "{unlinked}");
    let error = unlinked["error"].as_str().unwrap();
    assert!(error.contains("Replicate deleted the outputs"), "{error}");
    daemon.stop().await;
}
