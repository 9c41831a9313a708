//! The events page: newest first, a page at a time by keyset, under
//! filters (job id, kind, status, model, route, source, time range) given
//! as the query, so a filtered view is a link to share.

use std::fmt::Write as _;

use super::html::{self, Page, esc};
use super::request::{Answer, Request, Session};
use super::{Dashboard, overview};
use crate::event::Kind;
use crate::store::browse::{EventQuery, Source};
use warp::http::StatusCode;

/// Events on a page.
const PER_PAGE: usize = 50;

/// The filters a page can be asked for, by query key.
const KEYS: &[&str] = &[
    "job", "scan", "kind", "status", "model", "route", "source", "from", "to",
];

pub async fn page(d: &Dashboard, r: &Request, s: &Session) -> Answer {
    let mut q = EventQuery {
        job: r.param("job").map(|j| j.trim().to_owned()),
        scan: r.param("scan").is_some(),
        kind: r.param("kind").and_then(|k| k.parse::<Kind>().ok()),
        status: r.param("status").map(str::to_owned),
        model: r.param("model").map(|m| m.trim().to_owned()),
        route: r.param("route").map(str::to_owned),
        source: match r.param("source") {
            Some("webhook") => Some(Source::Webhook),
            Some("catch-up") => Some(Source::CatchUp),
            _ => None,
        },
        before_seq: r.param("before").and_then(|b| b.parse().ok()),
        limit: PER_PAGE,
        ..EventQuery::default()
    };
    let mut problems = Vec::new();
    for (key, bound) in [("from", &mut q.from_seq), ("to", &mut q.to_seq)] {
        let Some(text) = r.param(key) else { continue };
        match parse_time(text) {
            Some(ms) => match d.admin.seq_at(ms).await {
                // Nothing at or after `to`: the range is open there.
                Ok(seq) => *bound = seq.or((key == "from").then_some(i64::MAX)),
                Err(e) => return overview::unavailable(&e),
            },
            None => problems.push(format!("`{text}` is not a time such as 2026-12-04T09:30")),
        }
    }
    let found = match d.admin.browse(q.clone()).await {
        Ok(found) => found,
        Err(e) => return overview::unavailable(&e),
    };
    let setup = d.live.load();
    let mut out = String::from("<h1>Events</h1>");
    out.push_str(&form(r, &setup.config.routes));
    for p in &problems {
        let _ = write!(out, "<p class=\"notice bad\">{}</p>", esc(p));
    }
    if found.rows.is_empty() {
        out.push_str("<p class=\"muted\">No events here.</p>");
    } else {
        out.push_str("<table class=\"events\"><thead><tr><th>Received</th><th>Job</th><th>Status</th><th>Kind</th><th>Model</th><th>Deliveries</th></tr></thead><tbody>");
        for e in &found.rows {
            let mut deliveries = Vec::new();
            if e.delivered > 0 {
                deliveries.push(format!(
                    "<span class=\"good\">{} delivered</span>",
                    e.delivered
                ));
            }
            if e.waiting > 0 {
                deliveries.push(format!("<span class=\"info\">{} waiting</span>", e.waiting));
            }
            if e.dead > 0 {
                deliveries.push(format!("<span class=\"bad\">{} dead</span>", e.dead));
            }
            let _ = write!(
                out,
                "<tr><td>{}</td><td><a href=\"/events/{}\">{}</a>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html::time(e.received_at_ms),
                e.seq,
                esc(&e.object_id),
                if e.webhook_id
                    .starts_with(crate::replicate::catch_up::WEBHOOK_PREFIX)
                {
                    " <span class=\"muted\">(caught up)</span>"
                } else {
                    ""
                },
                html::badge(e.status.as_str()),
                esc(e.kind.as_str()),
                esc(e.model.as_deref().unwrap_or("—")),
                if deliveries.is_empty() {
                    "<span class=\"muted\">none</span>".into()
                } else {
                    deliveries.join(" · ")
                },
            );
        }
        out.push_str("</tbody></table>");
    }
    if q.job.is_some() && !q.scan && !found.rows.is_empty() {
        let mut all: Vec<(&str, String)> = KEYS
            .iter()
            .filter_map(|k| r.param(k).map(|v| (*k, v.to_owned())))
            .collect();
        all.push(("scan", "1".into()));
        let _ = write!(
            out,
            "<p class=\"muted\">These are the job's events some route sent somewhere. <a href=\"{}\">Look through every event for this job</a> (its other webhooks too, a window of 20,000 at a time).</p>",
            esc(&html::href("/events", &all))
        );
    }
    out.push_str("<div class=\"pager\">");
    let kept: Vec<(&str, String)> = KEYS
        .iter()
        .filter_map(|k| r.param(k).map(|v| (*k, v.to_owned())))
        .collect();
    if q.before_seq.is_some() {
        let _ = write!(
            out,
            "<a href=\"{}\">Newest</a>",
            esc(&html::href("/events", &kept))
        );
    }
    if let Some(before) = found.next_before {
        let mut next = kept.clone();
        next.push(("before", before.to_string()));
        let _ = write!(
            out,
            "<a href=\"{}\" rel=\"next\">Older →</a>",
            esc(&html::href("/events", &next))
        );
        if found.scan_ended {
            out.push_str(" <span class=\"muted\">(looked through 20,000 events; there may be more further back)</span>");
        }
    }
    out.push_str("</div>");
    Answer::Page(
        StatusCode::OK,
        Page {
            title: "Events",
            nav: "/events",
            csrf: s.logged_in.then_some(s.csrf.as_str()),
            refresh: (q.before_seq.is_none() && kept.is_empty()).then_some(15),
            body: out,
        }
        .render(),
    )
}

/// The filter form, holding what is asked now.
fn form(r: &Request, routes: &[crate::config::routes::Route]) -> String {
    let value = |k: &str| esc(r.param(k).unwrap_or_default());
    let select = |name: &str, label: &str, options: &[&str]| {
        let mut s =
            format!("<label>{label}<select name=\"{name}\"><option value=\"\">any</option>");
        for o in options {
            let selected = if r.param(name) == Some(o) {
                " selected"
            } else {
                ""
            };
            let _ = write!(s, "<option{selected}>{}</option>", esc(o));
        }
        s.push_str("</select></label>");
        s
    };
    let route_names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    format!(
        "<form class=\"filters\" method=\"get\" action=\"/events\">\
         <label>Job id<input name=\"job\" value=\"{}\" placeholder=\"p1abc…\" size=\"18\"></label>{}{}\
         <label>Model<input name=\"model\" value=\"{}\" placeholder=\"owner/name\" size=\"16\"></label>{}{}\
         <label>From (UTC)<input name=\"from\" type=\"datetime-local\" value=\"{}\"></label>\
         <label>To (UTC)<input name=\"to\" type=\"datetime-local\" value=\"{}\"></label>\
         <button>Filter</button> <a href=\"/events\">Clear</a></form>",
        value("job"),
        select("kind", "Kind", &["prediction", "training"]),
        select(
            "status",
            "Status",
            &[
                "succeeded",
                "failed",
                "canceled",
                "aborted",
                "starting",
                "processing"
            ]
        ),
        value("model"),
        select("route", "Route", &route_names),
        select("source", "Source", &["webhook", "catch-up"]),
        value("from"),
        value("to"),
    )
}

/// A time as a form gives it (`2026-12-04T09:30`, seconds optional, UTC),
/// or a date alone, in milliseconds.
pub fn parse_time(text: &str) -> Option<i64> {
    use time::macros::format_description;
    let text = text.trim();
    let formats = [
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]"),
    ];
    for f in formats {
        if let Ok(t) = time::PrimitiveDateTime::parse(text, &f) {
            return Some((t.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64);
        }
    }
    time::Date::parse(text, format_description!("[year]-[month]-[day]"))
        .ok()
        .map(|d| (d.midnight().assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_a_form_gives() {
        let t = 1_796_299_200_000; // 2026-12-03 12:00:00 UTC
        assert_eq!(parse_time("2026-12-03T12:00"), Some(t));
        assert_eq!(parse_time("2026-12-03T12:00:05"), Some(t + 5_000));
        assert_eq!(parse_time(" 2026-12-03 12:00 "), Some(t));
        assert_eq!(parse_time("2026-12-03"), Some(t - 12 * 3_600_000));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2026-13-03"), None);
    }
}
