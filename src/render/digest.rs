//! A digest's template context: the finished jobs of one group (`group_by`
//! on a route), told in one message. Templates named `digest` see `group`:
//! `key` (each grouping key and its value), `key_text`, `events` (every
//! member, failures first, each with the fields a line needs), `shown` (the
//! first [`SHOWN`] of them) and `more` (how many are left out of `shown`),
//! `counts` (by status) and `counts_text`, `total`, `failures`, and
//! `run_time` (the members' run times added up); and beside it `title`,
//! `headline`, `emoji`, `route` and `notifier`, as for one job, with `id`
//! (the route and the group's key: what names the group where one id is
//! needed, as PagerDuty's dedup key) and `status`, `is_failure` (failed
//! when any job of the group failed).

use serde_json::{Map, Value, json};

use super::context;
use super::helpers::human_duration;
use crate::event::Event;

/// The template name digests are rendered with.
pub const NAME: &str = "digest";

/// How many members a chat message lists before "and N more".
pub const SHOWN: usize = 20;

/// The fields of one member a digest line uses.
const MEMBER_FIELDS: [&str; 12] = [
    "id",
    "kind",
    "status",
    "emoji",
    "target",
    "run_name",
    "duration",
    "duration_seconds",
    "web_url",
    "error_message",
    "is_failure",
    "title",
];

/// The context of the digest of `members` (in the order they came), the
/// group of `key` (each `group_by` path and its value) on `route`.
pub fn context(route: &str, notifier: &str, key: &[(String, Value)], members: &[Event]) -> Value {
    let mut events: Vec<Value> = members
        .iter()
        .map(|event| {
            let full = context::context(event, route, notifier);
            let mut line = Map::new();
            for field in MEMBER_FIELDS {
                line.insert(
                    field.into(),
                    full.get(field).cloned().unwrap_or(Value::Null),
                );
            }
            if let Some(Value::String(e)) = line.get_mut("error_message") {
                *e = super::helpers::truncate_chars(e, 200);
            }
            Value::Object(line)
        })
        .collect();
    // Failures first, then the rest as they came.
    events.sort_by_key(|e| match e["status"].as_str() {
        Some("failed" | "aborted") => 0,
        Some("canceled") => 1,
        _ => 2,
    });
    let mut counts: Map<String, Value> = Map::new();
    for e in &events {
        let status = e["status"].as_str().unwrap_or("unknown").to_owned();
        let n = counts.get(&status).and_then(Value::as_u64).unwrap_or(0);
        counts.insert(status, json!(n + 1));
    }
    let mut by_count: Vec<(&String, u64)> = counts
        .iter()
        .map(|(s, n)| (s, n.as_u64().unwrap_or(0)))
        .collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let counts_text = by_count
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    let failures = events
        .iter()
        .filter(|e| e["is_failure"] == Value::Bool(true))
        .count();
    let run_seconds: f64 = events
        .iter()
        .filter_map(|e| e["duration_seconds"].as_f64())
        .sum();
    let key_text = key
        .iter()
        .map(|(path, value)| {
            let name = path.rsplit('.').next().unwrap_or(path);
            format!("{name} {}", super::helpers::as_text(value))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let total = events.len();
    let jobs = if total == 1 { "job" } else { "jobs" };
    let title = format!("{key_text}: {total} {jobs} — {counts_text}");
    let shown: Vec<Value> = events.iter().take(SHOWN).cloned().collect();
    json!({
        "group": {
            "key": key.iter().map(|(p, v)| (p.clone(), v.clone())).collect::<Map<_, _>>(),
            "key_text": key_text,
            "events": events,
            "shown": shown,
            "more": total.saturating_sub(SHOWN),
            "counts": counts,
            "counts_text": counts_text,
            "total": total,
            "failures": failures,
            "run_time": (run_seconds > 0.0).then(|| human_duration(run_seconds)),
        },
        "title": title,
        "headline": title,
        "id": format!("{route}: {key_text}"),
        "status": if failures > 0 { "failed" } else { "succeeded" },
        "is_failure": failures > 0,
        "emoji": if failures > 0 { "❌" } else { "✅" },
        "route": route,
        "notifier": notifier,
    })
}

/// A digest of every sample job, for `check` and previews.
pub fn sample() -> Value {
    let members: Vec<Event> = super::samples::samples()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.status.is_terminal())
        .collect();
    context(
        "sample route",
        "sample-notifier",
        &[("query.sweep".into(), json!("lr"))],
        &members,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, status: &str) -> Event {
        Event::from_value(
            json!({"id": id, "status": status, "model": "acme/neon",
                   "created_at": "2026-12-04T01:00:00Z", "started_at": "2026-12-04T01:00:00Z",
                   "completed_at": "2026-12-04T01:01:00Z",
                   "urls": {"get": format!("https://api.replicate.com/v1/predictions/{id}")}}),
            "sweep=lr",
        )
        .unwrap()
    }

    #[test]
    fn a_digest_counts_by_status_lists_failures_first_and_says_how_many_more() {
        let mut members = vec![
            job("a", "succeeded"),
            job("b", "failed"),
            job("c", "canceled"),
        ];
        members.extend((0..30).map(|i| job(&format!("s{i}"), "succeeded")));
        let key = [("query.sweep".to_owned(), json!("lr"))];
        let ctx = context("sweep", "chat", &key, &members);
        let g = &ctx["group"];
        assert_eq!(g["total"], 33);
        assert_eq!(
            g["counts"],
            json!({"succeeded": 31, "failed": 1, "canceled": 1})
        );
        assert_eq!(g["counts_text"], "31 succeeded, 1 canceled, 1 failed");
        assert_eq!(g["failures"], 1);
        let order: Vec<&str> = g["events"]
            .as_array()
            .unwrap()
            .iter()
            .take(3)
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        assert_eq!(order, ["b", "c", "a"]);
        assert_eq!(g["shown"].as_array().unwrap().len(), SHOWN);
        assert_eq!(g["more"], 33 - SHOWN);
        assert_eq!(g["key"], json!({"query.sweep": "lr"}));
        assert_eq!(
            ctx["title"],
            "sweep lr: 33 jobs — 31 succeeded, 1 canceled, 1 failed"
        );
        assert_eq!(ctx["emoji"], "❌");
        assert_eq!(g["run_time"], "33m 0s");
    }
}
