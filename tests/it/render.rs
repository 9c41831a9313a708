//! Every fixture through every shipped template, and hostile input through them.

mod limits;
mod services;

use replicate_relay::notify::registry;
use std::path::Path;

use crate::common::fixtures;
use replicate_relay::event::Event;
use replicate_relay::notify::slack::limits::{
    MAX_BLOCKS, MAX_FIELD, MAX_FIELDS, MAX_HEADER, MAX_SECTION,
};
use replicate_relay::notify::{mail, slack, webhook};
use replicate_relay::render::Templates;
use replicate_relay::render::context::context;
use replicate_relay::render::message::strings;
use serde_json::{Value, json};

fn shipped() -> Templates {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let (templates, problems) = registry::load_templates(Some(&dir), false);
    assert!(problems.is_empty(), "{problems:?}");
    templates
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

/// Asserts a Block Kit message is within Slack's limits.
fn assert_within_limits(message: &Value, what: &str) {
    assert!(
        message["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{what}: fallback text"
    );
    let blocks = message["blocks"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: blocks"));
    assert!(blocks.len() <= MAX_BLOCKS, "{what}");
    for block in blocks {
        match block["type"].as_str().unwrap() {
            "header" => assert!(
                chars(&block["text"]["text"]) <= MAX_HEADER,
                "{what}: header"
            ),
            "section" => {
                assert!(
                    chars(&block["text"]["text"]) <= MAX_SECTION,
                    "{what}: section"
                );
                let fields = block["fields"].as_array().map_or(&[][..], |f| f.as_slice());
                assert!(fields.len() <= MAX_FIELDS, "{what}: fields");
                for f in fields {
                    assert!(chars(&f["text"]) <= MAX_FIELD, "{what}: field");
                }
            }
            "actions" | "context" | "divider" | "rich_text" | "image" => {}
            other => panic!("{what}: unexpected block type {other}"),
        }
    }
}

#[test]
fn every_fixture_renders_through_every_shipped_template() {
    let templates = shipped();
    let (_, fixtures) = fixtures();
    for f in &fixtures {
        let event = Event::from_body(&f.body, "team=vision").unwrap();
        let ctx = context(&event, "test route", "test-notifier");

        let slack = slack::render::render(&templates, "default", &ctx);
        assert_eq!(slack.fallback, None, "{}", f.name);
        assert_within_limits(&slack.message, &f.name);
        let header = slack.message["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(
            header.contains(event.status.as_str()),
            "{}: {header}",
            f.name
        );

        let email = mail::render(&templates, "default", &ctx);
        assert_eq!(email.fallback, None, "{}", f.name);
        let m = &email.message;
        assert!(!m.subject.contains(['\r', '\n']), "{}", f.name);
        assert!(
            m.subject.contains(event.status.as_str()),
            "{}: {}",
            f.name,
            m.subject
        );
        assert!(m.text.contains(&event.job().common().id), "{}", f.name);
        let html = m.html.as_deref().unwrap();
        assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
        assert!(!html.contains("<script"), "{}", f.name);
        // Every style a client needs is inline (some drop <style>); the one
        // <style>, in <head>, only adds dark mode and phone widths.
        let head = &html[..html.find("</head>").unwrap()];
        assert_eq!(html.matches("<style").count(), 1, "{}", f.name);
        assert!(head.contains("<style") && head.contains("prefers-color-scheme: dark"));
        assert!(head.contains(r#"<meta name="color-scheme" content="light dark">"#));
        assert!(
            !html.contains("width=\"600\"") && html.contains("max-width:600px"),
            "fluid, not a fixed 600 px: {}",
            f.name
        );

        // A digest tells a group, not one job (tests/it/digest.rs).
        let names = templates.names(webhook::WEBHOOK);
        for name in names
            .iter()
            .filter(|n| *n != replicate_relay::render::digest::NAME)
        {
            let body = webhook::render(&templates, Some(name), &ctx, &f.body);
            assert_eq!(body.fallback, None, "{} webhook/{name}", f.name);
            let v: Value = serde_json::from_slice(&body.message).unwrap();
            assert_eq!(v["id"], event.job().common().id.as_str());
        }
    }
}

#[test]
fn failure_messages_carry_the_error_and_log_tail_and_successes_their_outputs() {
    let templates = shipped();
    let (_, fixtures) = fixtures();
    let find = |name: &str| fixtures.iter().find(|f| f.name == name).unwrap();
    let render = |name: &str| {
        let event = Event::from_body(&find(name).body, "").unwrap();
        let ctx = context(&event, "r", "n");
        (
            slack::render::render(&templates, "default", &ctx).message,
            mail::render(&templates, "default", &ctx).message,
        )
    };

    let (slack, email) = render("prediction-failed.json");
    let text = serde_json::to_string(&slack).unwrap();
    assert!(
        text.contains(r#"{"style":{"bold":true},"text":"Error","type":"text"}"#)
            && text.contains("torch.OutOfMemoryError"),
        "{text}"
    );
    assert!(email.text.contains("Last log lines:"));
    assert!(email.html.unwrap().contains("CUDA out of memory"));

    let (slack, email) = render("training-succeeded.json");
    assert_eq!(
        email.subject,
        "✅ Training harbor-studio/ink-portraits succeeded in 23m 25s"
    );
    let text = serde_json::to_string(&slack).unwrap();
    assert!(
        text.contains("Trained version") && text.contains("trained_model.tar"),
        "{text}"
    );

    let (slack, _) = render("prediction-succeeded.json");
    let text = serde_json::to_string(&slack).unwrap();
    assert!(
        text.contains(r#""text":"out-0.webp","type":"link""#) && text.contains("Open on Replicate"),
        "{text}"
    );
    // WebP is not a format Slack fetches for an image block.
    assert!(!text.contains(r#""type":"image""#), "{text}");
    let (slack, _) = rendered("prediction-succeeded.json", |p| {
        p["output"] = json!([
            "https://replicate.delivery/a/out-0.png",
            "https://replicate.delivery/a/out-1.webp"
        ]);
    });
    let images: Vec<&Value> = slack["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "image")
        .collect();
    assert_eq!(images.len(), 1, "{slack}");
    assert_eq!(
        images[0]["image_url"],
        "https://replicate.delivery/a/out-0.png"
    );
}

const HOSTILE: &str = "<!channel> <script>alert(1)</script>\r\nBcc: x@evil.test";

#[test]
fn hostile_prompts_are_escaped_for_every_target() {
    let (_, fixtures) = fixtures();
    let mut payload: Value = serde_json::from_slice(
        &fixtures
            .iter()
            .find(|f| f.name == "prediction-failed.json")
            .unwrap()
            .body,
    )
    .unwrap();
    payload["input"]["prompt"] = json!(HOSTILE);
    payload["error"] = json!(HOSTILE);
    let event = Event::from_value(payload.clone(), "").unwrap();
    let ctx = context(&event, "r", "n");
    let templates = shipped();

    // Slack: no live mention or tag anywhere in the message.
    let slack = slack::render::render(&templates, "default", &ctx).message;
    let mut all = Vec::new();
    strings(&slack, &mut all);
    let joined = all.join("\n");
    assert!(!joined.contains("<!channel>"), "{joined}");
    assert!(
        joined.contains("&lt;!channel&gt;"),
        "in mrkdwn and plain text, escaped: {joined}"
    );
    assert!(
        joined.contains("<\u{200B}!channel> <script>"),
        "in rich text, shown as written but inert: {joined}"
    );

    // Email: HTML escaped, subject on one line even when a template puts the
    // prompt in it.
    let email = mail::render(&templates, "default", &ctx).message;
    let html = email.html.unwrap();
    assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"));
    assert!(!html.contains("<!channel>"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("email")).unwrap();
    std::fs::write(
        dir.path().join("email/p.subject.hbs"),
        "Prompt: {{input.prompt}}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("email/p.txt.hbs"), "{{input.prompt}}").unwrap();
    let (custom, problems) = registry::load_templates(Some(dir.path()), false);
    assert!(problems.is_empty());
    let subject = mail::render(&custom, "p", &ctx).message.subject;
    assert!(!subject.contains(['\r', '\n']), "{subject:?}");
    assert_eq!(
        subject,
        "Prompt: <!channel> <script>alert(1)</script> Bcc: x@evil.test"
    );
}

/// A string inside a signed payload must not make a link of its own where
/// Markdown is read: Discord's embeds, Teams' facts.
#[test]
fn no_payload_string_makes_a_link_in_discord_or_teams() {
    let (_, fixtures) = fixtures();
    let mut payload: Value = serde_json::from_slice(
        &fixtures
            .iter()
            .find(|f| f.name == "prediction-succeeded.json")
            .unwrap()
            .body,
    )
    .unwrap();
    payload["output"] = json!([
        "https://replicate.delivery/x/out.txt) · [Sign in again](https://evil.example/login",
        "https://replicate.delivery/x/a](https://evil.example/b) [c.png"
    ]);
    payload["input"] = json!({"note": "[Sign in again](https://evil.example/login)"});
    let event = Event::from_value(payload, "").unwrap();
    let ctx = context(&event, "r", "n");
    let templates = shipped();
    let settings = replicate_relay::notify::discord::Discord {
        webhook_url: replicate_relay::config::Sensitive::new(
            "https://discord.com/api/webhooks/1/t",
        ),
        username: None,
        timeout: std::time::Duration::from_secs(5),
    };
    let discord =
        replicate_relay::notify::discord::render::render(&settings, &templates, "default", &ctx)
            .message;
    let teams = replicate_relay::notify::teams::render::render(&templates, "default", &ctx).message;
    for (what, message) in [("discord", &discord.0), ("teams", &teams.0)] {
        let mut all = Vec::new();
        strings(message, &mut all);
        // A value that is a URL alone (an embed's image, a button) is not
        // read as Markdown.
        for text in all.into_iter().filter(|t| !t.starts_with("https://")) {
            // A Markdown link to evil.example is `](https://evil.example`,
            // unless its `]` is escaped.
            let links = text
                .match_indices("](https://evil.example")
                .filter(|(i, _)| !text[..*i].ends_with('\\'))
                .count();
            assert_eq!(links, 0, "{what}: a link of the payload's own in {text:?}");
        }
    }
}

#[test]
fn a_megabyte_of_logs_is_cut_not_sent_whole() {
    let (_, fixtures) = fixtures();
    for name in ["prediction-failed.json", "training-failed.json"] {
        let mut payload: Value =
            serde_json::from_slice(&fixtures.iter().find(|f| f.name == name).unwrap().body)
                .unwrap();
        let lines: String = (0..30_000)
            .map(|i| format!("step {i}: loss=0.123456789 ...\n"))
            .collect();
        payload["logs"] = json!(lines + &"x".repeat(300_000));
        assert!(payload["logs"].as_str().unwrap().len() > 1_000_000);
        let event = Event::from_value(payload, "").unwrap();
        let ctx = context(&event, "r", "n");
        let templates = shipped();
        let slack = slack::render::render(&templates, "default", &ctx).message;
        assert_within_limits(&slack, name);
        assert!(
            serde_json::to_string(&slack).unwrap().len() < 20_000,
            "{name}"
        );
        let email = mail::render(&templates, "default", &ctx).message;
        assert!(email.text.len() < 20_000, "{name}: {}", email.text.len());
        assert!(email.html.unwrap().len() < 30_000, "{name}");
    }
}

/// The body of a fixture, changed by `edit`, rendered for Slack and email.
fn rendered(
    name: &str,
    edit: impl FnOnce(&mut Value),
) -> (Value, replicate_relay::notify::mail::EmailMessage) {
    let (_, fixtures) = fixtures();
    let mut payload: Value =
        serde_json::from_slice(&fixtures.iter().find(|f| f.name == name).unwrap().body).unwrap();
    edit(&mut payload);
    let query = if name.starts_with("training") {
        "kind=training"
    } else {
        ""
    };
    let event = Event::from_value(payload, query).unwrap();
    let ctx = context(&event, "r", "n");
    let templates = shipped();
    (
        slack::render::render(&templates, "default", &ctx).message,
        mail::render(&templates, "default", &ctx).message,
    )
}

#[test]
fn a_failed_training_without_a_web_url_still_links_to_its_page() {
    let (slack, email) = rendered("training-failed.json", |p| {
        p.as_object_mut().unwrap().remove("urls");
        p.as_object_mut().unwrap().remove("destination");
    });
    let page = "https://replicate.com/p/";
    let button = &slack["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "actions")
        .expect("a button")["elements"][0]["url"];
    assert!(button.as_str().unwrap().starts_with(page), "{button}");
    assert!(
        email.text.contains(&format!("Open on Replicate: {page}")),
        "{}",
        email.text
    );
    assert!(email.html.unwrap().contains(&format!("href=\"{page}")));
    // The title names the run, and the reason leads.
    assert!(
        email.subject.contains("(“") && email.subject.contains("failed: "),
        "{}",
        email.subject
    );
}

#[test]
fn mrkdwn_and_code_fences_in_user_text_reach_slack_as_literal_text() {
    let prompt = "*bold* _it_ ~s~ ``` `code`";
    let error = "Traceback ``` *not bold*\n``` end";
    let (slack, _) = rendered("prediction-failed.json", |p| {
        p["input"]["prompt"] = json!(prompt);
        p["error"] = json!(error);
        p.as_object_mut().unwrap().remove("deployment");
    });
    // Every mrkdwn text object: none carries the user's text.
    fn mrkdwn(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if m.get("type") == Some(&json!("mrkdwn")) {
                    out.push(m["text"].as_str().unwrap_or("").to_owned());
                }
                m.values().for_each(|v| mrkdwn(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| mrkdwn(v, out)),
            _ => {}
        }
    }
    let mut formatted = Vec::new();
    mrkdwn(&slack, &mut formatted);
    for text in &formatted {
        assert!(!text.contains("*bold*") && !text.contains("```"), "{text}");
    }
    assert_eq!(slack["mrkdwn"], false, "the fallback text is not formatted");
    // Rich text elements carry them whole, as written.
    let mut all = Vec::new();
    strings(&slack, &mut all);
    assert!(all.iter().any(|t| t == prompt), "{all:?}");
    assert!(all.iter().any(|t| t == error), "{all:?}");
}

#[test]
fn timing_splits_run_from_queue() {
    let (slack, email) = rendered("training-failed.json", |p| {
        p["metrics"] = json!({"predict_time": 6.534453, "total_time": 41.807566});
    });
    assert!(
        email
            .text
            .contains("Time: run 6.5s · queue 35s · total 42s"),
        "{}",
        email.text
    );
    assert!(
        email
            .html
            .unwrap()
            .contains("run 6.5s · queue 35s · total 42s")
    );
    assert!(
        serde_json::to_string(&slack)
            .unwrap()
            .contains("run 6.5s · queue 35s · total 42s")
    );
}
