//! Arbitrary payloads through every shipped template: rendering never panics,
//! Slack messages are always JSON objects within Slack's limits, and subjects
//! never contain a line break.
#![no_main]

use replicate_relay::notify::registry;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use replicate_relay::event::Event;
use replicate_relay::notify::slack::limits::{MAX_BLOCKS, MAX_HEADER, MAX_SECTION};
use replicate_relay::notify::{mail, slack, webhook};
use replicate_relay::render::Templates;
use replicate_relay::render::context::context;

fn templates() -> &'static Templates {
    static T: OnceLock<Templates> = OnceLock::new();
    T.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
        let (t, problems) = registry::load_templates(Some(&dir), false);
        assert!(problems.is_empty());
        t
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(event) = Event::from_body(data, "team=fuzz") else {
        return;
    };
    let ctx = context(&event, "route", "notifier");
    let t = templates();
    let email = mail::render(&t, "default", &ctx).message;
    assert!(!email.subject.contains(['\r', '\n']));
    let slack = slack::render::render(&t, "default", &ctx).message;
    let blocks = slack["blocks"].as_array().expect("blocks");
    assert!(blocks.len() <= MAX_BLOCKS);
    for b in blocks {
        let len = |v: &serde_json::Value| v.as_str().map_or(0, |s| s.chars().count());
        match b["type"].as_str() {
            Some("header") => assert!(len(&b["text"]["text"]) <= MAX_HEADER),
            Some("section") => assert!(len(&b["text"]["text"]) <= MAX_SECTION),
            _ => {}
        }
    }
    let _ = webhook::render(&t, Some("summary"), &ctx, data);
});
