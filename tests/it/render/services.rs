//! Every kind's default message, for every sample and a set of edge events
//! (long signed URLs, many outputs, markup in every field, control
//! characters, odd file names, a bare canceled job), checked as its service
//! would: against the service's published schema where one exists
//! (`tests/schemas/`, whose README gives their sources and licences) and
//! against its documented limits, and read as its reader would (no control
//! characters, no link the payload made, no URL a parser would rewrite).

use replicate_relay::notify::registry;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use replicate_relay::event::Event;
use replicate_relay::notify::{self, Notifier};
use replicate_relay::render::Templates;
use replicate_relay::render::message::strings;
use serde_json::{Value, json};

use crate::common::{SECRET, fixtures, write_config};

/// The services' published schemas, compiled once.
struct Schemas {
    set: boon::Schemas,
    discord: boon::SchemaIndex,
    card: boon::SchemaIndex,
    pagerduty: boon::SchemaIndex,
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas");
    let mut set = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    // `uri` and `date-time` are checked, as the services check them.
    compiler.enable_format_assertions();
    let mut load = |file: &str| {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        let url = format!("file:///schemas/{file}");
        compiler.add_resource(&url, value).unwrap();
        compiler
            .compile(&url, &mut set)
            .unwrap_or_else(|e| panic!("{file}: {e}"))
    };
    let discord = load("discord-execute-webhook.json");
    let card = load("adaptive-card-1.5.json");
    let pagerduty = load("pagerduty-events-v2.json");
    Schemas {
        set,
        discord,
        card,
        pagerduty,
    }
});

fn valid(what: &str, index: boon::SchemaIndex, value: &Value) -> Result<(), String> {
    SCHEMAS
        .set
        .validate(value, index)
        .map_err(|e| format!("{what} fails its published schema: {e:#}"))
}

/// One notifier of every kind, from each kind's own example keys.
fn notifiers(dir: &std::path::Path) -> BTreeMap<String, Notifier> {
    let mut extra = String::new();
    for k in registry::KINDS {
        extra.push_str(&format!(
            "[notifiers.{0}]\ntype = \"{0}\"\n{1}\n\n",
            k.name(),
            k.example()
        ));
    }
    // The shipped kinds (not `registry::names()`: another test may register one).
    let names: Vec<&str> = registry::KINDS.iter().map(|k| k.name()).collect();
    extra.push_str(&format!(
        "[[routes]]\nname = \"everything\"\nnotify = {names:?}\n"
    ));
    let file = write_config(dir, SECRET, &extra);
    replicate_relay::config::load(&file)
        .unwrap_or_else(|e| panic!("{e}"))
        .notifiers
}

fn shipped() -> Templates {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    registry::load_templates(Some(&dir), false).0
}

/// A URL as long as an S3 presigned one gets with a long session token.
fn signed(name: &str) -> String {
    format!(
        "https://replicate.delivery/xezq/{}/{name}?X-Amz-Security-Token={}&X-Amz-Signature={}",
        "k".repeat(40),
        "T".repeat(1_900),
        "f".repeat(64)
    )
}

/// The edge events, by name: bodies Replicate can send that are hard to show.
fn edge_events() -> Vec<(&'static str, Value)> {
    let markup = "Tom & Jerry <3 **bold** _it_ ~~s~~ `c` ||spoiler|| [a](https://evil.example) <!channel> <@U1> &amp; # h\n- item";
    vec![
        (
            "long signed URLs",
            json!({"id": "p-long", "status": "succeeded", "model": "acme/sdxl", "source": "api",
                   "completed_at": "2026-11-24T09:12:00Z",
                   "output": [signed("out-0.png"), signed("out-1.png"), signed("out-2.webp")]}),
        ),
        (
            "many outputs",
            json!({"id": "p-many", "status": "succeeded", "model": "acme/sdxl",
                   "output": (0..60).map(|i| format!("https://replicate.delivery/xezq/{}/out-{i}.png", "k".repeat(60))).collect::<Vec<_>>()}),
        ),
        (
            "markup in every field",
            json!({"id": "p-markup", "status": "failed", "model": "acme/`m`*",
                   "error": markup, "logs": format!("{markup}\n```\nstep 3/10 loss=1"),
                   "input": {"prompt": markup, "style": "[a](https://evil.example)", "note": "**x** _y_", "n": 3},
                   "output": ["https://replicate.delivery/a/[x](https:%2F%2Fevil.example).png"]}),
        ),
        (
            "control characters",
            json!({"id": "p-ansi", "status": "failed", "model": "acme/m",
                   "error": "\u{1b}[31mRuntimeError\u{1b}[0m\u{0}: CUDA out of memory\r\n\u{7}",
                   "logs": "\u{1b}[1mstep 1\u{1b}[0m\r\n 10%|█  |\r100%|███|\n\u{0}",
                   "input": {"prompt": "a cat\u{0}\u{1b}[2J", "seed": 42}}),
        ),
        (
            "odd file names",
            json!({"id": "p-files", "status": "succeeded", "model": "acme/m",
                   "output": {"a": "https://replicate.delivery/a/file%20name.txt",
                              "b": "https://replicate.delivery/a/<b> \"q\".png",
                              "c": "https://replicate.delivery/a/%E6%BC%A2%F0%9F%99%82%0A.gif",
                              "d": "https://replicate.delivery/a/__init__.py"}}),
        ),
        (
            "a bare canceled job",
            json!({"id": "p-bare", "status": "canceled"}),
        ),
        (
            "a training with long weights",
            json!({"id": "t-long", "status": "succeeded", "model": "lab/trainer", "destination": "acme/neon",
                   "output": {"version": "acme/neon:abc", "weights": signed("weights.tar")}}),
        ),
    ]
}

/// Every event the test renders: the samples and the edge events.
fn events() -> Vec<(String, Event)> {
    let (_, samples) = fixtures();
    let mut out: Vec<(String, Event)> = samples
        .iter()
        .map(|f| {
            let query = if f.name.starts_with("training") {
                "kind=training"
            } else {
                ""
            };
            (f.name.clone(), Event::from_body(&f.body, query).unwrap())
        })
        .collect();
    for (name, body) in edge_events() {
        let query = if name.contains("training") {
            "kind=training"
        } else {
            ""
        };
        out.push((name.to_owned(), Event::from_value(body, query).unwrap()));
    }
    out
}

#[test]
fn every_kind_is_accepted_and_shown_as_meant_by_its_service() {
    let dir = tempfile::tempdir().unwrap();
    let notifiers = notifiers(dir.path());
    assert_eq!(notifiers.len(), registry::KINDS.len());
    let templates = shipped();
    let mut problems = Vec::new();
    for (name, event) in events() {
        let original = serde_json::to_vec(&event.payload).unwrap();
        for (kind_name, notifier) in &notifiers {
            let message =
                notify::message(&templates, notifier, "everything", &event, &original, None);
            let what = format!("{kind_name} for {name}");
            if let Some(why) = message.fallback() {
                problems.push(format!("{what}: fell back: {why}"));
            }
            let preview = message.preview_json();
            let checked = match kind_name.as_str() {
                "slack" => super::limits::slack(&preview["slack"]),
                "discord" => valid(&what, SCHEMAS.discord, &preview["discord"])
                    .and_then(|()| super::limits::discord(&preview["discord"])),
                "teams" => {
                    let card = &preview["teams"]["attachments"][0]["content"];
                    valid(&what, SCHEMAS.card, card)
                        .and_then(|()| super::limits::teams(&preview["teams"]))
                }
                "pagerduty" => valid(&what, SCHEMAS.pagerduty, &preview["pagerduty"])
                    .and_then(|()| super::limits::pagerduty(&preview["pagerduty"], &event)),
                "ntfy" => super::limits::ntfy(&preview["ntfy"]),
                "email" => super::limits::email(&preview),
                _ => Ok(()),
            };
            if let Err(e) = checked {
                problems.push(format!("{what}: {e}"));
            }
            // Sixty outputs: each list shows what fits and says how many more.
            let lists = ["slack", "discord", "teams", "ntfy", "email"];
            if name == "many outputs" && lists.contains(&kind_name.as_str()) {
                let seen = message.seen_text();
                let more = regex_lite::Regex::new(r"(\d+) more").unwrap();
                let said = more
                    .captures_iter(&seen)
                    .any(|c| c[1].parse::<usize>().is_ok_and(|n| n >= 40));
                if !said {
                    problems.push(format!("{what}: does not say how many outputs it left out"));
                }
            }
            if kind_name != "webhook" {
                let mut all = Vec::new();
                strings(&preview, &mut all);
                if let Some(s) = all
                    .iter()
                    .find(|s| s.chars().any(|c| c.is_control() && c != '\n' && c != '\t'))
                {
                    problems.push(format!(
                        "{what}: a control character reaches the reader in {s:?}"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The checks themselves fail where the services would refuse.
    let mut over =
        json!({"content": "x", "embeds": [{"image": {"url": signed("a.png").repeat(2)}}]});
    assert!(valid("a long image URL", SCHEMAS.discord, &over).is_err());
    over["embeds"][0]["image"]["url"] = json!("https://replicate.delivery/a/<b>.png");
    assert!(valid("an unencoded URL", SCHEMAS.discord, &over).is_err());
    assert_eq!(super::limits::measure("🙂"), 2);
}
