//! The overview: the last 24 hours' events by status and delivery times
//! as charts, the outbox's counts, each notifier's state (ok, paused by
//! a 429 until when, failing since when, its last error), the certificate's
//! expiry and the store's size. Hours long past are read once and kept.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::html::{self, Page, esc};
use super::request::{Answer, Session};
use super::{Dashboard, chart};
use crate::clock::now_ms;
use crate::store::StoreError;
use crate::store::browse::Activity;
use warp::http::StatusCode;

const HOUR: i64 = 3_600_000;

/// The activity of hours that no longer change (two hours back and
/// older), by hour.
#[derive(Default)]
pub struct Hours {
    kept: BTreeMap<i64, Activity>,
}

impl Hours {
    /// The last 24 hours' activity, ending with `now_hour`, reading only
    /// what is not kept.
    async fn last_day(&mut self, d: &Dashboard, now_hour: i64) -> Result<Activity, StoreError> {
        let first = now_hour - 23;
        self.kept.retain(|hour, _| *hour >= first);
        let from = (first..now_hour)
            .find(|h| !self.kept.contains_key(h))
            .unwrap_or(now_hour);
        let fresh = match d.admin.seq_at(from * HOUR).await? {
            Some(seq) => d.admin.activity(seq).await?,
            None => Activity::default(),
        };
        // Settled: two hours back and older.
        for hour in from..now_hour - 1 {
            let of_hour = Activity {
                events: fresh
                    .events
                    .iter()
                    .filter(|e| e.0 == hour)
                    .cloned()
                    .collect(),
                latencies: fresh
                    .latencies
                    .iter()
                    .filter(|l| l.0 == hour)
                    .copied()
                    .collect(),
            };
            self.kept.insert(hour, of_hour);
        }
        let mut all = Activity::default();
        for kept in self.kept.values() {
            all.events.extend(kept.events.iter().cloned());
            all.latencies.extend(kept.latencies.iter().copied());
        }
        let settled = now_hour - 1;
        all.events.extend(
            fresh
                .events
                .into_iter()
                .filter(|e| e.0 >= settled.max(from)),
        );
        all.latencies.extend(
            fresh
                .latencies
                .into_iter()
                .filter(|l| l.0 >= settled.max(from)),
        );
        Ok(all)
    }
}

pub async fn page(d: &Dashboard, s: &Session) -> Answer {
    match body(d).await {
        Ok(body) => Answer::Page(
            StatusCode::OK,
            Page {
                title: "Overview",
                nav: "/",
                csrf: s.logged_in.then_some(s.csrf.as_str()),
                refresh: Some(30),
                body,
            }
            .render(),
        ),
        Err(e) => unavailable(&e),
    }
}

/// The answer when the store cannot be read.
pub fn unavailable(e: &StoreError) -> Answer {
    Answer::Problem(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "The store cannot be read right now: {e}. The daemon keeps taking webhooks if it can; try again in a moment."
        ),
    )
}

async fn body(d: &Dashboard) -> Result<String, StoreError> {
    let now = now_ms();
    let now_hour = now / HOUR;
    let activity = {
        // One page load reads the hours at a time; others wait for it.
        let mut hours = std::mem::take(&mut *d.hours.lock().unwrap_or_else(|e| e.into_inner()));
        let read = hours.last_day(d, now_hour).await;
        *d.hours.lock().unwrap_or_else(|e| e.into_inner()) = hours;
        read?
    };
    let stats = d.store.outbox_stats().await?;
    let size = d.admin.size().await?;
    let setup = d.live.load();
    // The config's notifiers, and those deliveries wait for that it lacks.
    let mut names: Vec<String> = setup.config.notifiers.keys().cloned().collect();
    for (name, _) in d.admin.waiting_by_notifier().await? {
        if !setup.config.notifiers.contains_key(&name) {
            names.push(name);
        }
    }
    let loads = d.admin.notifier_loads(names).await?;
    let pauses: BTreeMap<String, i64> = d.store.pauses(now).await?.into_iter().collect();

    let events: i64 = activity.events.iter().map(|e| e.2).sum();
    let failed: i64 = activity
        .events
        .iter()
        .filter(|e| e.1 == "failed")
        .map(|e| e.2)
        .sum();
    let mut out = String::from("<h1>Overview</h1><div class=\"cards\">");
    let mut card = |value: String, label: &str, class: &str| {
        let _ = write!(
            out,
            "<div class=\"card\"><b class=\"{class}\">{}</b><span>{}</span></div>",
            esc(&value),
            esc(label)
        );
    };
    card(events.to_string(), "events in 24 h", "");
    card(
        failed.to_string(),
        "jobs failed in 24 h",
        if failed > 0 { "bad" } else { "" },
    );
    card(stats.pending.to_string(), "deliveries pending", "");
    card(
        stats.dead.to_string(),
        "dead",
        if stats.dead > 0 { "bad" } else { "" },
    );
    card(
        stats.held.to_string(),
        "held",
        if stats.held > 0 { "warn" } else { "" },
    );
    card(html::bytes(size), "store size", "");
    match crate::telemetry::certificate_expires_at() {
        Some(at) => {
            let days = (at * 1000 - now) / 86_400_000;
            card(
                format!("{days} days"),
                "until the certificate expires",
                if days < 14 { "bad" } else { "" },
            );
        }
        None => card("none".into(), "HTTPS certificate", "muted"),
    }
    out.push_str("</div>");
    let _ = write!(
        out,
        "<h2>Events per hour</h2>{}<h2>From receipt to delivery</h2>{}",
        chart::events(&activity, now_hour),
        chart::latency(&activity, now_hour)
    );

    out.push_str("<h2>Notifiers</h2><table><thead><tr><th>Notifier</th><th>Kind</th><th>State</th><th class=\"num\">Waiting</th><th class=\"num\">Dead</th><th>Last error</th></tr></thead><tbody>");
    let by_name: BTreeMap<&str, &crate::store::browse::NotifierLoad> =
        loads.iter().map(|l| (l.notifier.as_str(), l)).collect();
    for (name, notifier) in &setup.config.notifiers {
        let load = by_name.get(name.as_str());
        let paused = setup
            .senders
            .get(name)
            .and_then(|s| pauses.get(&s.rate_key()));
        let state = match (paused, load.and_then(|l| l.failing_since_ms)) {
            (Some(until), _) => format!("{} until {}", html::badge("paused"), html::time(*until)),
            (None, Some(since)) => {
                format!("{} since {}", html::badge("failing"), html::time(since))
            }
            (None, None) => html::badge("ok"),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{state}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(name),
            esc(notifier.settings.kind().name()),
            load.map_or(0, |l| l.waiting),
            match load.map_or(0, |l| l.dead) {
                0 => "0".to_owned(),
                dead => format!("<a href=\"/deliveries\">{dead}</a>"),
            },
            esc(&crate::render::helpers::truncate_chars(
                load.and_then(|l| l.last_error.as_deref()).unwrap_or("—"),
                200
            )),
        );
    }
    // Deliveries held for notifiers no longer in the config.
    for load in loads
        .iter()
        .filter(|l| !setup.config.notifiers.contains_key(&l.notifier))
    {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"muted\">not in the config</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td></td></tr>",
            esc(&load.notifier),
            html::badge("held"),
            load.held,
            load.dead
        );
    }
    out.push_str("</tbody></table>");
    Ok(out)
}
