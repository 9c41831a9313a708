//! The real binary: `check`, `serve` (start, answer, stop on SIGTERM), `events`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_replicate-relay");

fn relay(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn check_reports_every_mistake_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"localhost\"\nmax_bdy = 5\n\n[verify]\nsecret = \"not-a-secret\"\n",
    )
    .unwrap();
    let out = relay(&["check", "--config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("3 problems"), "{stderr}");
    assert!(
        stderr.contains(file.to_str().unwrap()),
        "names the file: {stderr}"
    );
    for key in [
        "server.listen:",
        "server.max_bdy: unknown key",
        "verify.secret: does not start with `whsec_`",
    ] {
        assert!(stderr.contains(key), "missing {key:?} in {stderr}");
    }
    assert!(
        !stderr.contains("not-a-secret"),
        "never echoes a secret: {stderr}"
    );
}

#[test]
fn check_passes_the_shipped_config_with_a_warning() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/relay.toml");
    let out = relay(&["check", "--config", shipped]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("development secret"), "{stdout}");
}

#[test]
fn serve_without_a_secret_refuses_and_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, "[store]\npath = \"relay.db\"\n").unwrap();
    let out = relay(&["serve", "--config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/v1/webhooks/default/secret"), "{stderr}");
    assert!(!dir.path().join("relay.db").exists(), "nothing started");
}

#[test]
fn a_missing_config_file_says_what_to_do() {
    let out = relay(&["check", "--config", "/nonexistent/relay.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("--config"), "{stderr}");
}

#[test]
fn a_busy_port_is_an_error_not_a_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), SECRET, "");
    let text = std::fs::read_to_string(&file).unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    std::fs::write(&file, text.replace("127.0.0.1:0", &addr)).unwrap();
    let out = relay(&["serve", "--config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn serve_stores_events_stops_on_sigterm_and_events_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), SECRET, "");
    let mut child = Command::new(BIN)
        .args(["serve", "--config", file.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The "Listening." line carries the bound address.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("serve logs before exiting").unwrap();
        if let Some(rest) = line.split("Listening. addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining stderr so the daemon never blocks on a full pipe.
    let log = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    let client = reqwest::Client::new();
    let url = format!("http://{addr}/hooks/replicate?team=vision");
    for (i, status) in ["succeeded", "failed"].iter().enumerate() {
        let body = payload(&format!("p_cli_{i}"), status);
        let headers = signed(SECRET, &format!("msg_cli_{i}"), now(), &body);
        let (code, answer) = post(&client, &url, &headers, body).await;
        assert_eq!(code, 200, "{answer}");
    }

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    let log = log.join().unwrap().join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("Stopped cleanly"), "{log}");
    assert!(
        !log.contains(SECRET.trim_start_matches("whsec_")),
        "secret in the log"
    );

    let out = relay(&["events", "--config", file.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[0].starts_with("RECEIVED (UTC)"), "{table}");
    assert!(
        rows[1].contains("p_cli_1") && rows[1].contains("failed") && rows[1].contains("msg_cli_1"),
        "{table}"
    );
    assert!(
        rows[2].contains("acme/test-model") && rows[2].contains("prediction"),
        "{table}"
    );

    let out = relay(&[
        "events",
        "--config",
        file.to_str().unwrap(),
        "--json",
        "--limit",
        "1",
    ]);
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["id"], "p_cli_1");
    assert_eq!(line["query"], "team=vision");
}

#[test]
fn route_on_the_training_fixture_names_the_route_and_prints_the_messages() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/relay.toml");
    let fixture = fixture_path("training-succeeded.json");
    let out = relay(&[
        "route",
        fixture.to_str().unwrap(),
        "--config",
        shipped,
        "--explain",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("✓ training finished → console"), "{stdout}");
    assert!(
        stdout.contains("✗ failed predictions"),
        "--explain says why: {stdout}"
    );
    assert!(
        stdout.contains("Subject: ✅ Training harbor-studio/ink-portraits succeeded in 23m 25s"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Trained version: harbor-studio/ink-portraits:"),
        "{stdout}"
    );

    let out = relay(&[
        "route",
        fixture.to_str().unwrap(),
        "--config",
        shipped,
        "--format",
        "json",
        "-q",
        "team=vision",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["kind"], "training");
    assert_eq!(report["routes"][0]["matched"], true);
    assert_eq!(report["messages"][0]["notifier"], "console");
    assert_eq!(report["messages"][0]["fallback"], serde_json::Value::Null);
}

#[test]
fn route_prints_no_secret_of_a_notifiers_url() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        SECRET,
        "[notifiers.hook]\ntype = \"webhook\"\nurl = \"https://relay:pa55word@hooks.example.org:8443/in?token=t0k3n\"\n\n\
         [notifiers.chat]\ntype = \"discord\"\nwebhook_url = \"https://discord.com/api/webhooks/118/d1sc0rdt0ken\"\n\n\
         [notifiers.phone]\ntype = \"ntfy\"\nurl = \"https://ntfy.sh/s3cret-t0pic\"\n\n\
         [[routes]]\nname = \"all\"\nnotify = [\"hook\", \"chat\", \"phone\"]\n",
    );
    let fixture = fixture_path("training-succeeded.json");
    let out = relay(&[
        "route",
        fixture.to_str().unwrap(),
        "--config",
        file.to_str().unwrap(),
    ]);
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{shown}");
    for secret in ["pa55word", "t0k3n", "d1sc0rdt0ken", "s3cret-t0pic"] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    // What identifies them stays: host, port, path.
    assert!(
        shown.contains("POST https://hooks.example.org:8443/in"),
        "{shown}"
    );
    assert!(
        shown.contains("https://discord.com/api/webhooks/118/…"),
        "{shown}"
    );
    assert!(
        shown.contains("ntfy: topic … on https://ntfy.sh/"),
        "{shown}"
    );
}

#[test]
fn route_explains_why_nothing_matches() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/relay.toml");
    let fixture = fixture_path("prediction-processing.json");
    let out = relay(&[
        "route",
        fixture.to_str().unwrap(),
        "--config",
        shipped,
        "--explain",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("nothing would be sent"), "{stdout}");
    assert!(stdout.contains("not final"), "{stdout}");
}

#[test]
fn check_names_the_template_file_line_and_column_of_a_typo() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("templates/slack")).unwrap();
    std::fs::write(
        dir.path().join("templates/slack/team.json.hbs"),
        "{\n  \"text\": \"{{emoji}} {{titel}}\",\n  \"blocks\": []\n}\n",
    )
    .unwrap();
    let file = write_config(
        dir.path(),
        SECRET,
        "[templates]\ndir = \"templates\"\n\n[notifiers.slack]\ntype = \"slack\"\ntoken = \"xoxb-1\"\nchannel = \"#ml\"\ntemplate = \"team\"\n\n[[routes]]\nname = \"all\"\nnotify = [\"slack\"]\n",
    );
    let out = relay(&["check", "--config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("templates/slack/team.json.hbs:2:22"),
        "{stderr}"
    );
    assert!(stderr.contains("titel"), "{stderr}");
}

#[test]
fn check_reports_routing_and_notifier_mistakes_with_key_paths() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        SECRET,
        "[notifiers.mail]\ntype = \"email\"\nsmtp = \"smtp://mail.example.org\"\nfrom = \"relay@example.org\"\nto = [\"not an address\"]\n\n[[routes]]\nname = \"r\"\nwhen = { model = { like = \"x\" }, \"input.prompt\" = { regex = \"(\" } }\nnotify = [\"mail\", \"slack\"]\n",
    );
    let out = relay(&["check", "--config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for key in [
        "notifiers.mail.to: `not an address` is not an email address",
        "routes[0].notify: no notifier named `slack`",
        "routes[0].when.\"model\".like: unknown operator `like`",
        "routes[0].when.\"input.prompt\".regex: invalid regex",
    ] {
        assert!(stderr.contains(key), "missing {key:?} in\n{stderr}");
    }
}

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
