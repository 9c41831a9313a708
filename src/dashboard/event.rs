//! One event: its summary, query parameters and body (pretty-printed,
//! folded), which routes match it under the config now and why, and each
//! delivery with every attempt (when, how long, how it ended, what the
//! service answered) and the message as it was rendered, in a sandboxed
//! frame; with retry and resend.

use std::fmt::Write as _;

use super::html::{self, Page, csrf_field, esc};
use super::request::{Answer, Request, Session, not_found};
use super::{Dashboard, overview};
use crate::event::Event;
use crate::store::{AttemptRecord, DeliveryState, Found};
use warp::http::StatusCode;

/// The most of a body shown; the rest is cut, saying how much there was.
const BODY_SHOWN: usize = 256 * 1024;

pub async fn page(d: &Dashboard, seq: i64, r: &Request, s: &Session) -> Answer {
    let found = match d.admin.event(seq).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(),
        Err(e) => return overview::unavailable(&e),
    };
    let mut attempts = Vec::new();
    for delivery in &found.deliveries {
        match d.admin.attempts(delivery.id).await {
            Ok(a) => attempts.push(a.map(|a| a.list).unwrap_or_default()),
            Err(e) => return overview::unavailable(&e),
        }
    }
    let e = &found.event;
    let mut out = format!(
        "<h1>{} {} {}</h1>",
        esc(e.kind.as_str()),
        esc(&e.object_id),
        html::badge(e.status.as_str())
    );
    if let Some(done) = r.param("done") {
        let _ = write!(out, "<p class=\"notice\" role=\"status\">{}</p>", esc(done));
    }
    out.push_str(&summary(&found));
    out.push_str(&routes(d, &found));
    out.push_str("<h2>Deliveries</h2>");
    if found.deliveries.is_empty() {
        out.push_str("<p class=\"muted\">No route sent this event anywhere.</p>");
    }
    for (delivery, attempts) in found.deliveries.iter().zip(&attempts) {
        out.push_str(&self::delivery(delivery, attempts, seq, s));
    }
    Answer::Page(
        StatusCode::OK,
        Page {
            title: &format!("{} {}", e.kind.as_str(), e.object_id),
            nav: "/events",
            csrf: s.logged_in.then_some(s.csrf.as_str()),
            refresh: None,
            body: out,
        }
        .render(),
    )
}

fn summary(found: &Found) -> String {
    let e = &found.event;
    let source = crate::replicate::catch_up::source(&e.webhook_id);
    let mut out = String::from("<table class=\"wide\"><tbody>");
    for (label, value) in [
        ("Received", html::time(e.received_at_ms)),
        ("Model", esc(e.model.as_deref().unwrap_or("—"))),
        ("Webhook id", format!("<code>{}</code>", esc(&e.webhook_id))),
        ("Source", esc(source)),
        ("Stored as", format!("event {}", e.seq)),
    ] {
        let _ = write!(out, "<tr><th>{label}</th><td>{value}</td></tr>");
    }
    out.push_str("</tbody></table>");
    let params = crate::event::parse_query(&e.query);
    if !params.is_empty() {
        out.push_str("<h2>Query parameters</h2><table><tbody>");
        for (k, v) in params {
            let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(&k), esc(&v));
        }
        out.push_str("</tbody></table>");
    }
    let text = String::from_utf8_lossy(&e.body);
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.into_owned());
    let shown = crate::notify::exchange::cut(&pretty, BODY_SHOWN);
    let _ = write!(
        out,
        "<details><summary>Body ({})</summary><pre>{}</pre></details>",
        html::bytes(e.body.len() as i64),
        esc(&shown)
    );
    out
}

/// Which routes match the event under the config now, and why not.
fn routes(d: &Dashboard, found: &Found) -> String {
    let setup = d.live.load();
    let mut out =
        String::from("<h2>Routes <span class=\"muted\">(under the config now)</span></h2>");
    let event = match Event::from_body(&found.event.body, &found.event.query) {
        Ok(event) => event,
        Err(e) => {
            let _ = write!(
                out,
                "<p class=\"bad\">The stored body cannot be read: {}</p>",
                esc(&e.to_string())
            );
            return out;
        }
    };
    if setup.config.routes.is_empty() {
        out.push_str("<p class=\"muted\">The config has no routes.</p>");
        return out;
    }
    out.push_str("<table><tbody>");
    for (route, verdict) in crate::route::explain(&setup.config.routes, &event) {
        let (badge, why) = match verdict {
            crate::route::Verdict::Matched => (
                html::badge("matched"),
                format!("to {}", esc(&route.notify.join(", "))),
            ),
            crate::route::Verdict::NoMatch(why) => (html::badge("no match"), esc(&why)),
            crate::route::Verdict::Shadowed(why) => (html::badge("skipped"), esc(&why)),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{badge}</td><td>{why}</td></tr>",
            esc(&route.name)
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn delivery(
    delivery: &crate::store::Delivery,
    attempts: &[AttemptRecord],
    seq: i64,
    s: &Session,
) -> String {
    let mut out = format!(
        "<section class=\"delivery\" id=\"delivery-{}\"><h3>{} <span class=\"muted\">by route {}</span> {}</h3>",
        delivery.id,
        esc(&delivery.notifier),
        esc(&delivery.route),
        html::badge(delivery.state.as_str())
    );
    let back = format!("/events/{seq}");
    let action = |what: &str, label: &str, class: &str| {
        format!(
            "<form method=\"post\" action=\"/deliveries/{}/{what}\" class=\"inline\">{}<input type=\"hidden\" name=\"back\" value=\"{}\"><button class=\"{class}\">{label}</button></form>",
            delivery.id,
            csrf_field(&s.csrf),
            esc(&back)
        )
    };
    match delivery.state {
        DeliveryState::Dead => out.push_str(&action("retry", "Retry", "")),
        DeliveryState::Delivered => out.push_str(&action("resend", "Resend…", "danger")),
        DeliveryState::Pending if delivery.attempts > 0 => {
            let _ = write!(out, "<p>Next attempt at {}.</p>", html::time(delivery.next_attempt_at_ms));
        }
        DeliveryState::Held => out.push_str("<p class=\"warn\">Held: its notifier is not in the config. Add it back and reload, and it is sent.</p>"),
        _ => {}
    }
    if let Some(error) = &delivery.last_error {
        let _ = write!(out, "<p class=\"bad\">{}</p>", esc(error));
    }
    if attempts.is_empty() {
        out.push_str("<p class=\"muted\">No attempt recorded yet.</p>");
    } else {
        out.push_str("<table><thead><tr><th>#</th><th>When</th><th>Took</th><th>Outcome</th><th>Status</th><th>Answer</th></tr></thead><tbody>");
        for a in attempts {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                a.number,
                html::time(a.started_ms),
                html::took(a.duration_ms),
                html::badge(&a.outcome),
                a.status.map_or("—".into(), |s| s.to_string()),
                exchanges(a),
            );
        }
        out.push_str("</tbody></table>");
    }
    let _ = write!(
        out,
        "<details><summary>The message as rendered</summary><iframe class=\"message\" sandbox title=\"the message\" loading=\"lazy\" src=\"/deliveries/{}/message\"></iframe></details></section>",
        delivery.id
    );
    out
}

/// An attempt's error and exchanges, folded.
fn exchanges(a: &AttemptRecord) -> String {
    let seen = crate::notify::exchange::Exchanges::parse(&a.exchanges);
    let mut out = a
        .error
        .as_deref()
        .map_or(String::new(), |e| format!("<div>{}</div>", esc(e)));
    if seen.kept.is_empty() {
        return out;
    }
    out.push_str("<details><summary>what was asked and answered</summary>");
    if seen.left_out > 0 {
        let _ = write!(
            out,
            "<p class=\"muted\">{} earlier exchanges not kept</p>",
            seen.left_out
        );
    }
    for e in &seen.kept {
        let _ = write!(
            out,
            "<div><code>{}</code> → {}</div><pre>{}</pre>",
            esc(&e.request),
            e.status.map_or("no answer".into(), |s| s.to_string()),
            esc(&e.answer)
        );
    }
    out.push_str("</details>");
    out
}
