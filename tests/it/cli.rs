//! The real binary: `check`, `serve` (start, answer, stop on SIGTERM), `events`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::*;

mod tools;

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
        rows[1].contains("p_cli_1")
            && rows[1].contains("failed")
            && rows[1].contains("webhook  msg_cli_1"),
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
