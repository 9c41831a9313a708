//! Table tests of templates as the kinds load and render them: compile
//! errors located, the strict check, unknown file names, fallbacks, and each
//! format's escaping.

use serde_json::{Value, json};

use super::*;
use crate::config::read::Problem;
use crate::event::Event;
use crate::notify::{mail, slack, webhook};
use crate::render::{Templates, context};

fn ctx() -> Value {
    let ev = Event::from_value(
        json!({"id": "p1", "status": "failed", "model": "acme/m", "error": "boom <b>"}),
        "",
    )
    .unwrap();
    context::context(&ev, "r", "n")
}

fn with_dir(files: &[(&str, &str)]) -> (tempfile::TempDir, Templates, Vec<Problem>) {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let (t, problems) = load_templates(Some(dir.path()), false);
    (dir, t, problems)
}

#[test]
fn built_ins_compile_and_pass_the_strict_check() {
    let (t, problems) = load_templates(None, true);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(t.has(slack::render::SLACK, "default") && t.has(mail::HTML, "default"));
    assert_eq!(check_templates(None), vec![]);
}

#[test]
fn compile_errors_are_located() {
    let (_d, _t, problems) = with_dir(&[("slack/bad.json.hbs", "{\n  \"text\": \"{{#if x}}\"\n}")]);
    assert_eq!(problems.len(), 1);
    // The unclosed `{{#if}}` is noticed at the end of the file.
    assert!(
        problems[0].key.ends_with("slack/bad.json.hbs:3:2"),
        "{problems:?}"
    );
    assert!(problems[0].message.starts_with("template does not compile"));
}

#[test]
fn strict_check_finds_misspelled_variables() {
    let (dir, _t, problems) = with_dir(&[
        ("email/typo.subject.hbs", "{{emoji}} {{titel}}"),
        ("email/typo.txt.hbs", "ok"),
    ]);
    assert!(problems.is_empty());
    let found = check_templates(Some(dir.path()));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].key.ends_with("email/typo.subject.hbs:1:11"),
        "{found:?}"
    );
    assert!(found[0].message.contains("titel"), "{found:?}");
}

#[test]
fn unknown_file_names_are_reported() {
    let (_d, _t, problems) = with_dir(&[("email/default.text.hbs", "x")]);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].message.contains("NAME.txt.hbs"), "{problems:?}");
}

#[test]
fn a_failing_template_falls_back_and_says_why() {
    let (_d, t, problems) = with_dir(&[
        ("slack/broken.json.hbs", "{ \"text\": {{model}} }"),
        ("email/broken.subject.hbs", "{{truncate model \"x\"}}"),
        ("email/broken.txt.hbs", "body"),
        ("webhook/broken.json.hbs", "not json"),
    ]);
    assert!(problems.is_empty(), "{problems:?}");
    let ctx = ctx();
    let slack = slack::render::render(&t, "broken", &ctx);
    assert!(slack.fallback.as_deref().unwrap().contains("invalid JSON"));
    // Plain text, which Slack shows as written: no entities.
    let text = slack.message["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(text.contains("boom <b>"), "{text}");
    assert!(!slack.message["text"].as_str().unwrap().contains('\r'));
    let email = mail::render(&t, "broken", &ctx);
    assert!(email.fallback.is_some());
    assert!(email.message.text.contains("boom <b>"));
    assert_eq!(email.message.subject, "❌ Prediction acme/m failed");
    let hook = webhook::render(&t, Some("broken"), &ctx, b"{\"original\":1}");
    assert_eq!(hook.message, b"{\"original\":1}");
    assert!(hook.fallback.is_some());
}

#[test]
fn each_format_escapes_for_its_target() {
    let (_d, t, _) = with_dir(&[
        ("email/esc.subject.hbs", "{{error}}\n"),
        ("email/esc.txt.hbs", "{{error}}"),
        ("email/esc.html.hbs", "<p>{{error}}</p>"),
        (
            "slack/esc.json.hbs",
            "{\"text\": \"{{error}}\", \"blocks\": []}",
        ),
        ("webhook/esc.json.hbs", "{\"e\": \"{{error}}\"}"),
    ]);
    let mut ctx = ctx();
    ctx["error"] = json!("<!channel> \"x\" & y\r\nBcc: z");
    let email = mail::render(&t, "esc", &ctx).message;
    assert_eq!(email.subject, "<!channel> \"x\" & y Bcc: z");
    // Line breaks as `\n`: lettre writes each as CRLF, and no bare CR
    // reaches the SMTP server.
    assert_eq!(email.text, "<!channel> \"x\" & y\nBcc: z");
    assert_eq!(
        email.html.unwrap(),
        "<p>&lt;!channel&gt; &quot;x&quot; &amp; y\nBcc: z</p>"
    );
    let slack = slack::render::render(&t, "esc", &ctx);
    assert!(slack.fallback.is_none(), "{:?}", slack.fallback);
    assert_eq!(
        slack.message["text"],
        "&lt;!channel&gt; \"x\" &amp; y\nBcc: z"
    );
    let hook = webhook::render(&t, Some("esc"), &ctx, b"{}");
    let body: Value = serde_json::from_slice(&hook.message).unwrap();
    assert_eq!(body["e"], "<!channel> \"x\" & y\r\nBcc: z");
    // Colour codes and NUL reach no reader.
    ctx["error"] = json!("\u{1b}[31mRuntimeError\u{1b}[0m\u{0}: x");
    let email = mail::render(&t, "esc", &ctx).message;
    assert_eq!(email.subject, "RuntimeError: x");
    assert_eq!(email.html.unwrap(), "<p>RuntimeError: x</p>");
    let slack = slack::render::render(&t, "esc", &ctx);
    assert_eq!(slack.message["text"], "RuntimeError: x");
}

#[test]
fn every_kind_is_found_by_its_name_once() {
    let names = names();
    for name in &names {
        assert_eq!(find(name).map(|k| k.name()), Some(*name));
        assert_eq!(names.iter().filter(|n| *n == name).count(), 1, "{name}");
    }
    assert!(find("pigeon").is_none());
}
