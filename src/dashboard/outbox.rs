//! Dead and held deliveries, and sending again: retry one dead delivery,
//! retry every one shown (after confirming the count), and resend a
//! delivered one (a separate action, confirmed, since its receiver gets
//! it twice).

use std::fmt::Write as _;

use super::html::{self, Page, csrf_field, esc};
use super::request::{Answer, Request, Session, not_found};
use super::{Dashboard, overview};
use crate::clock::now_ms;
use crate::store::{DeliveryFilter, DeliveryState, RetrySelector};
use warp::http::StatusCode;

/// Deliveries listed, and retried together, at most.
const SHOWN: usize = 500;

pub async fn page(d: &Dashboard, r: &Request, s: &Session) -> Answer {
    let held = r.param("state") == Some("held");
    let filter = if held {
        DeliveryFilter::Held
    } else {
        DeliveryFilter::Dead
    };
    let rows = match d.admin.deliveries(filter, SHOWN).await {
        Ok(rows) => rows,
        Err(e) => return overview::unavailable(&e),
    };
    let mut out = String::from("<h1>Dead &amp; held deliveries</h1><div class=\"pager\">");
    for (state, label) in [("dead", "Dead"), ("held", "Held")] {
        let current = if held == (state == "held") {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(
            out,
            "<a href=\"/deliveries?state={state}\"{current}>{label}</a>"
        );
    }
    out.push_str("</div>");
    if let Some(done) = r.param("done") {
        let _ = write!(out, "<p class=\"notice\" role=\"status\">{}</p>", esc(done));
    }
    if held {
        out.push_str("<p class=\"muted\">Held deliveries wait for a notifier that is no longer in the config; add it back and reload, and they are sent.</p>");
    }
    if rows.is_empty() {
        let _ = write!(
            out,
            "<p class=\"muted\">No {} deliveries.</p>",
            if held { "held" } else { "dead" }
        );
    } else {
        if !held {
            let ids: Vec<String> = rows.iter().map(|l| l.delivery.id.to_string()).collect();
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/deliveries/retry\">{}<input type=\"hidden\" name=\"ids\" value=\"{}\"><button>Retry all {} shown…</button></form>",
                csrf_field(&s.csrf),
                esc(&ids.join(",")),
                ids.len()
            );
        }
        out.push_str("<table><thead><tr><th>Delivery</th><th>Notifier</th><th>Route</th><th>Job</th><th class=\"num\">Attempts</th><th>Made</th><th>Last error</th><th></th></tr></thead><tbody>");
        for l in &rows {
            let dl = &l.delivery;
            let retry = if held {
                String::new()
            } else {
                format!(
                    "<form method=\"post\" action=\"/deliveries/{}/retry\" class=\"inline\">{}<input type=\"hidden\" name=\"back\" value=\"/deliveries\"><button>Retry</button></form>",
                    dl.id,
                    csrf_field(&s.csrf)
                )
            };
            let _ = write!(
                out,
                "<tr><td><a href=\"/events/{}#delivery-{}\">{}</a></td><td>{}</td><td>{}</td><td>{} {} {}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{retry}</td></tr>",
                dl.event_seq,
                dl.id,
                dl.id,
                esc(&dl.notifier),
                esc(&dl.route),
                esc(l.kind.as_str()),
                esc(&l.object_id),
                html::badge(l.status.as_str()),
                dl.attempts,
                html::time(dl.created_at_ms),
                esc(&crate::render::helpers::truncate_chars(
                    dl.last_error.as_deref().unwrap_or("—"),
                    300
                )),
            );
        }
        out.push_str("</tbody></table>");
    }
    framed(&out, "Dead & held", s)
}

fn framed(body: &str, title: &str, s: &Session) -> Answer {
    Answer::Page(
        StatusCode::OK,
        Page {
            title,
            nav: "/deliveries",
            csrf: s.logged_in.then_some(s.csrf.as_str()),
            refresh: None,
            body: body.to_owned(),
        }
        .render(),
    )
}

/// Where to go back to after an action: a path of the dashboard's own.
fn back(r: &Request, fallback: &str) -> String {
    r.field("back")
        .filter(|b| b.starts_with('/') && !b.starts_with("//") && !b.starts_with("/\\"))
        .unwrap_or(fallback)
        .to_owned()
}

/// `back` with a notice of what was done.
fn done(back: &str, notice: &str) -> Answer {
    let (path, fragment) = back.split_once('#').unwrap_or((back, ""));
    let mut to = html::href(path, &[("done", notice.to_owned())]);
    if !fragment.is_empty() {
        to = format!("{to}#{fragment}");
    }
    Answer::Redirect(to)
}

fn max_age(d: &Dashboard) -> i64 {
    d.live.load().config.delivery.max_age.as_millis() as i64
}

/// Retries dead delivery `id`, or, with `resend`, sends a delivered one
/// again once confirmed.
pub async fn retry_one(d: &Dashboard, id: i64, resend: bool, r: &Request, s: &Session) -> Answer {
    let found = match d.admin.attempts(id).await {
        Ok(Some(found)) => found.delivery,
        Ok(None) => return not_found(),
        Err(e) => return overview::unavailable(&e),
    };
    let back = back(r, &format!("/events/{}", found.event_seq));
    let state = found.state;
    match (resend, state) {
        (false, DeliveryState::Dead) => {}
        (true, DeliveryState::Delivered) if r.field("confirm") == Some("yes") => {}
        (true, DeliveryState::Delivered) => {
            let body = format!(
                "<h1>Send delivery {id} again?</h1><p>It was delivered to <b>{}</b>: its receiver gets the message a second time.</p>\
                 <form method=\"post\" action=\"/deliveries/{id}/resend\">{}<input type=\"hidden\" name=\"confirm\" value=\"yes\"><input type=\"hidden\" name=\"back\" value=\"{}\">\
                 <button class=\"danger\">Resend</button> <a href=\"{}\">Cancel</a></form>",
                esc(&found.notifier),
                csrf_field(&s.csrf),
                esc(&back),
                esc(&back)
            );
            return framed(&body, "Resend", s);
        }
        _ => {
            return done(
                &back,
                &format!(
                    "Delivery {id} is {} now; nothing was requeued.",
                    state.as_str()
                ),
            );
        }
    }
    match d
        .admin
        .retry(RetrySelector::One(id), now_ms(), max_age(d))
        .await
    {
        Ok(0) => done(
            &back,
            &format!("Delivery {id} is being sent right now; nothing was requeued."),
        ),
        Ok(_) => done(
            &back,
            &format!(
                "Delivery {id} to {} is requeued; the daemon sends it within a second.",
                found.notifier
            ),
        ),
        Err(e) => overview::unavailable(&e),
    }
}

/// Retries the dead deliveries a page showed, once their count is confirmed.
pub async fn retry_many(d: &Dashboard, r: &Request, s: &Session) -> Answer {
    let ids: Vec<i64> = r
        .field("ids")
        .unwrap_or_default()
        .split(',')
        .filter_map(|id| id.trim().parse().ok())
        .take(SHOWN)
        .collect();
    if ids.is_empty() {
        return done("/deliveries", "Nothing to retry.");
    }
    if r.field("confirm") != Some("yes") {
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        let body = format!(
            "<h1>Retry {n} dead deliveries?</h1><p>Each is sent again now, with a fresh window of retries.</p>\
             <form method=\"post\" action=\"/deliveries/retry\">{}<input type=\"hidden\" name=\"ids\" value=\"{}\"><input type=\"hidden\" name=\"confirm\" value=\"yes\">\
             <button>Retry {n}</button> <a href=\"/deliveries\">Cancel</a></form>",
            csrf_field(&s.csrf),
            esc(&list.join(",")),
            n = ids.len()
        );
        return framed(&body, "Retry", s);
    }
    let asked = ids.len();
    match d
        .admin
        .retry(RetrySelector::DeadAmong(ids), now_ms(), max_age(d))
        .await
    {
        Ok(n) => done(
            "/deliveries",
            &format!(
                "Requeued {n} of {asked}{}; the daemon sends them within a second.",
                if n < asked {
                    " (the others were no longer dead)"
                } else {
                    ""
                }
            ),
        ),
        Err(e) => overview::unavailable(&e),
    }
}
