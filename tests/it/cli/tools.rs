//! The commands beside `serve`: `send`, `fetch-secret`, the packaged config,
//! the README's quick start and `preview`.

use super::*;

#[tokio::test]
async fn send_posts_a_payload_exactly_as_replicate_does() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), SECRET, "");
    let daemon = Daemon::start(
        &file,
        std::sync::Arc::new(replicate_relay::clock::SystemClock),
    )
    .await;
    let fixture = fixture_path("training-succeeded.json");
    let url = format!("{}?team=vision", daemon.hook_url());
    let out = tokio::task::spawn_blocking({
        let (fixture, file) = (fixture.clone(), file.clone());
        move || {
            relay(&[
                "send",
                fixture.to_str().unwrap(),
                "--url",
                &url,
                "--config",
                file.to_str().unwrap(),
            ])
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("200 OK") && stdout.contains("\"accepted\""),
        "{stdout}"
    );
    let stored = daemon.running.store().recent(5).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].webhook_id.starts_with("msg_") && stored[0].webhook_id.len() == 31);
    assert_eq!(stored[0].query, "team=vision");
    assert_eq!(
        stored[0].body,
        std::fs::read(&fixture).unwrap(),
        "the exact bytes"
    );

    // Signed with another secret, the daemon refuses it and `send` says so.
    let other = tempfile::tempdir().unwrap();
    let other_file = write_config(other.path(), "whsec_b3RoZXItc2VjcmV0LXZhbHVl", "");
    let url = daemon.hook_url();
    let out = tokio::task::spawn_blocking(move || {
        relay(&[
            "send",
            fixture.to_str().unwrap(),
            "--url",
            &url,
            "--config",
            other_file.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("401"));
    daemon.stop().await;
}

#[tokio::test]
async fn fetch_secret_writes_the_key_readable_only_by_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    use warp::Filter;
    const KEY: &str = "whsec_ZmV0Y2hlZC1mcm9tLXJlcGxpY2F0ZQ==";
    let api = warp::get()
        .and(warp::path!("v1" / "webhooks" / "default" / "secret"))
        .and(warp::header::<String>("authorization"))
        .map(|auth: String| {
            if auth == "Bearer r8_test_token" {
                warp::reply::with_status(
                    warp::reply::json(&serde_json::json!({"key": KEY})),
                    warp::http::StatusCode::OK,
                )
            } else {
                warp::reply::with_status(
                    warp::reply::json(&serde_json::json!({"detail": "Invalid token."})),
                    warp::http::StatusCode::UNAUTHORIZED,
                )
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(warp::serve(api).incoming(listener).run());

    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("credentials/webhook-secret");
    let run = |token: &'static str| {
        let (api_url, output) = (api_url.clone(), output.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args([
                    "fetch-secret",
                    "--api-url",
                    &api_url,
                    "--output",
                    output.to_str().unwrap(),
                ])
                .env("REPLICATE_API_TOKEN", token)
                .output()
                .unwrap()
        })
    };
    let out = run("wrong").await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("check REPLICATE_API_TOKEN"));
    assert!(!output.exists());

    let out = run("r8_test_token").await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(KEY),
        "never printed"
    );
    assert_eq!(std::fs::read_to_string(&output).unwrap().trim(), KEY);
    let mode = std::fs::metadata(&output).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The daemon accepts a config that points at it.
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "[verify]\nsecret_file = \"credentials/webhook-secret\"\n",
    )
    .unwrap();
    assert!(replicate_relay::config::load_with_env(&config, []).is_ok());
}

#[test]
fn the_packaged_config_passes_check_with_its_credential() {
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(
        creds.path().join("relay_webhook-secret"),
        format!("{SECRET}\n"),
    )
    .unwrap();
    let packaged = concat!(env!("CARGO_MANIFEST_DIR"), "/config/packaged.toml");
    let out = Command::new(BIN)
        .args(["check", "--config", packaged])
        .env("CREDENTIALS_DIRECTORY", creds.path())
        // Installed, the templates are in /usr/share/replicate-relay/templates.
        .env(
            "RELAY__TEMPLATES__DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/templates"),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("warning"), "{stdout}");
}

/// The README's quick start on the shipped config: `serve`, then `send` an
/// example payload, and the rendered alert is in the daemon's log.
#[tokio::test]
async fn the_quick_start_shows_the_alert_in_the_daemons_log() {
    use crate::common::serve::Serve;
    use std::time::Duration;
    let root = env!("CARGO_MANIFEST_DIR");
    let shipped = std::path::Path::new(root).join("config/relay.toml");
    let dir = tempfile::tempdir().unwrap();
    // The shipped port and store, moved aside so tests never collide.
    let listen = format!("127.0.0.1:{}", crate::common::stand_ins::free_port());
    let store = dir.path().join("relay.db");
    let serve = Serve::start(
        &shipped,
        &[
            ("RELAY__SERVER__LISTEN", &listen),
            ("RELAY__STORE__PATH", store.to_str().unwrap()),
        ],
    );
    assert!(
        serve.wait_log("Listening.", Duration::from_secs(10)).await,
        "{}",
        serve.log()
    );
    let out = Command::new(BIN)
        .current_dir(root)
        .args(["send", "examples/training-succeeded.json", "--url"])
        .arg(format!("http://{listen}/hooks/replicate"))
        .args(["--config", "config/relay.toml"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("accepted"), "{stdout}");
    assert!(
        serve
            .wait_log("Notification.", Duration::from_secs(10))
            .await,
        "{}",
        serve.log()
    );
    let log = serve.log();
    assert!(
        log.contains("✅ Training harbor-studio/ink-portraits succeeded in 23m 25s"),
        "{log}"
    );
    assert!(log.contains("notifier=console"), "{log}");
    serve.signal("TERM");
    let (code, _) = serve.wait(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0));
}

/// Two daemons on one SQLite file would each stage webhook ids the other
/// cannot see: the second is refused, saying why, and starts once the
/// first has stopped.
#[tokio::test]
async fn a_second_daemon_on_the_same_sqlite_store_is_refused() {
    use crate::common::serve::Serve;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::common::write_config(dir.path(), crate::common::SECRET, "");
    let on_port = || format!("127.0.0.1:{}", crate::common::stand_ins::free_port());
    let (a, b) = (on_port(), on_port());
    let first = Serve::start(&config, &[("RELAY__SERVER__LISTEN", &a)]);
    assert!(
        first.wait_log("Listening.", Duration::from_secs(10)).await,
        "{}",
        first.log()
    );
    let second = Serve::start(&config, &[("RELAY__SERVER__LISTEN", &b)]);
    let (code, log) = second.wait(Duration::from_secs(15)).await;
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("another replicate-relay daemon is running on this store")
            && log.contains("relay.db-lock"),
        "{log}"
    );
    first.signal("TERM");
    assert_eq!(first.wait(Duration::from_secs(15)).await.0, Some(0));
    let again = Serve::start(&config, &[("RELAY__SERVER__LISTEN", &b)]);
    assert!(
        again.wait_log("Listening.", Duration::from_secs(10)).await,
        "{}",
        again.log()
    );
}

#[test]
fn preview_writes_every_kind_for_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gallery");
    let run = relay(&["preview", "--out", out.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("index.html"), "{stdout}");
    let read =
        |p: &str| std::fs::read_to_string(out.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    // Email: a page a browser shows, and its text part.
    let html = read("email/example-training-failed.html");
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("Open on Replicate"));
    assert!(read("email/example-training-failed.txt").starts_with("Subject: ❌ Training"));
    // Slack: Block Kit, and a link to see it in the Block Kit Builder.
    let blocks: serde_json::Value =
        serde_json::from_str(&read("slack/sample-prediction-succeeded.json")).unwrap();
    assert!(blocks["blocks"].as_array().is_some_and(|b| !b.is_empty()));
    assert!(
        read("slack/sample-prediction-succeeded.builder-url.txt")
            .starts_with("https://app.slack.com/block-kit-builder/#%7B%22blocks%22")
    );
    // As Slack shows it: a job's life as a thread, and a digest.
    let thread = read("slack/example-training-failed.thread.html");
    assert!(
        thread.contains("(edited)") && thread.contains("1 reply"),
        "{thread}"
    );
    assert!(read("slack/digest-of-every-sample.html").contains("sweep lr: 8 jobs"));
    // Every kind, every sample, linked from the index.
    let index = read("index.html");
    for kind in [
        "discord",
        "email",
        "log",
        "ntfy",
        "pagerduty",
        "slack",
        "teams",
        "webhook",
    ] {
        assert!(index.contains(&format!("<h2>{kind}</h2>")), "{kind}");
        let files = std::fs::read_dir(out.join(kind)).unwrap().count();
        assert!(files >= 16, "{kind}: {files} files");
    }
    // A broken template of yours is reported, not written over.
    let mine = dir.path().join("templates/slack");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("default.json.hbs"), "{{#if x}}").unwrap();
    let run = relay(&[
        "preview",
        "--out",
        out.to_str().unwrap(),
        "--templates",
        dir.path().join("templates").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("slack/default.json.hbs"), "{stderr}");
}
