//! The templates gallery: every configured notifier's messages for the
//! sample jobs (the shipped examples, and each kind and status), rendered
//! with the templates the daemon runs now and shown as the event page
//! shows a message, each in its sandboxed frame.

use std::fmt::Write as _;

use super::Dashboard;
use super::html::{Page, esc};
use super::request::{Answer, Session, not_found};
use crate::event::Event;
use crate::render::samples;
use warp::http::StatusCode;

/// The sample jobs, labelled, with their bodies.
fn jobs() -> Vec<(String, Event, Vec<u8>)> {
    let mut all = samples::examples();
    for (label, event) in samples::samples() {
        let body = serde_json::to_vec(&event.payload).unwrap_or_default();
        all.push((format!("sample {label}"), event, body));
    }
    all
}

pub fn page(d: &Dashboard, s: &Session) -> Answer {
    let setup = d.live.load();
    let mut out = String::from(
        "<h1>Templates</h1><p class=\"muted\">Each notifier's message for sample jobs, rendered with the templates the daemon runs now.</p>",
    );
    if setup.config.notifiers.is_empty() {
        out.push_str("<p>The config has no notifiers.</p>");
    }
    let jobs = jobs();
    for (name, notifier) in &setup.config.notifiers {
        let _ = write!(
            out,
            "<h2 id=\"{0}\">{0} <span class=\"muted\">({1})</span></h2>",
            esc(name),
            esc(notifier.settings.kind().name())
        );
        for (n, (label, _, _)) in jobs.iter().enumerate() {
            let src = format!(
                "/templates/{}/{n}",
                url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
            );
            let _ = write!(
                out,
                "<details><summary>{}</summary><iframe class=\"message\" sandbox loading=\"lazy\" title=\"{}\" src=\"{}\"></iframe></details>",
                esc(label),
                esc(label),
                esc(&src)
            );
        }
    }
    Answer::Page(
        StatusCode::OK,
        Page {
            title: "Templates",
            nav: "/templates",
            csrf: s.logged_in.then_some(s.csrf.as_str()),
            refresh: None,
            body: out,
        }
        .render(),
    )
}

/// Notifier `name`'s message for sample job `n`.
pub fn frame(d: &Dashboard, name: &str, n: usize) -> Answer {
    let setup = d.live.load();
    let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    let (Some(notifier), Some((_, event, body))) = (
        setup.config.notifiers.get(name.as_ref()),
        jobs().into_iter().nth(n),
    ) else {
        return not_found();
    };
    let message =
        crate::notify::message(&setup.templates, notifier, "preview", &event, &body, None);
    let stored = serde_json::json!({
        "kind": notifier.settings.kind().name(),
        "message": message.preview_json(),
    });
    Answer::Frame(super::frame::shown(&stored))
}
