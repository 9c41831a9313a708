//! A PagerDuty event: its format, its shipped template (the incident's
//! summary, source and details), and the Events API v2 body around it — a
//! failure triggers an incident keyed by the job id, so every alert about
//! one job groups into one incident, and a success of the same job resolves
//! it; within PagerDuty's limits; the built-in plain event when the template
//! fails.

use std::any::Any;

use serde_json::{Map, Value, json};

use super::config::PagerDuty;
use crate::event::Status;
use crate::render::{
    BuiltIn, Format, Message, RenderFailure, Rendered, Templates, field, helpers, parse_json,
    plain_title,
};

/// `pagerduty/NAME.json.hbs`: an event's `payload` fields, JSON-escaped.
pub const PAGERDUTY: Format =
    Format::new("pagerduty", ".json.hbs", helpers::escape_shown_json, true);

/// The shipped PagerDuty template, built into the binary.
pub const BUILT_IN: &[BuiltIn] = &[(
    PAGERDUTY,
    include_str!("../../../templates/pagerduty/default.json.hbs"),
)];

/// The shipped PagerDuty digest (`group_by` on a route).
pub const DIGEST: &[BuiltIn] = &[(
    PAGERDUTY,
    include_str!("../../../templates/pagerduty/digest.json.hbs"),
)];

/// PagerDuty's limits on a summary and a dedup key.
pub const MAX_SUMMARY: usize = 1_024;
pub const MAX_DEDUP_KEY: usize = 255;

/// The event to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueue(pub Value);

/// What an event of `status` does to the job's incident.
pub fn action(status: &str) -> &'static str {
    match Status::parse(status) {
        Status::Succeeded | Status::Canceled => "resolve",
        _ => "trigger",
    }
}

/// The event for `ctx` with template `name`; the built-in plain one if the
/// template fails.
pub fn render(
    settings: &PagerDuty,
    templates: &Templates,
    name: &str,
    ctx: &Value,
) -> Rendered<Enqueue> {
    let attempt = || -> Result<Map<String, Value>, RenderFailure> {
        let text = templates.render(PAGERDUTY, name, ctx)?;
        match parse_json(&text, PAGERDUTY, name)? {
            Value::Object(payload) => Ok(payload),
            _ => Err(RenderFailure {
                location: PAGERDUTY.relative_path(name),
                reason: "renders JSON that is not an object with `summary` and `source`".into(),
            }),
        }
    };
    let rendered = Rendered::or_fallback(attempt(), "pagerduty", name, |_| Map::new());
    Rendered {
        message: Enqueue(envelope(settings, rendered.message, ctx)),
        fallback: rendered.fallback,
    }
}

/// The Events API v2 body: routing key, action, dedup key (the job id), and
/// the payload with its summary, source and severity (required to trigger;
/// a resolve carries it too, so the incident's log says how the job ended).
fn envelope(settings: &PagerDuty, mut payload: Map<String, Value>, ctx: &Value) -> Value {
    let status = field(ctx, "status");
    let action = action(status);
    let dedup_key = helpers::truncate_chars(field(ctx, "id"), MAX_DEDUP_KEY);
    let mut event = json!({
        "routing_key": settings.routing_key.expose(),
        "event_action": action,
        "dedup_key": dedup_key,
        "client": "replicate-relay",
    });
    if let Some(url) = ctx.get("web_url").and_then(Value::as_str) {
        event["client_url"] = json!(url);
        event["links"] = json!([{"href": url, "text": "Open on Replicate"}]);
    }
    {
        let summary = payload
            .get("summary")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| plain_title(ctx));
        payload.insert(
            "summary".into(),
            json!(helpers::truncate_chars(&summary, MAX_SUMMARY)),
        );
        if payload
            .get("source")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            payload.insert("source".into(), json!("replicate"));
        }
        payload.insert("severity".into(), json!(settings.severity));
        if !payload.get("timestamp").is_some_and(Value::is_string)
            && let Some(at) = when(ctx)
        {
            payload.insert("timestamp".into(), json!(at));
        }
        let mut payload = Value::Object(payload);
        without_nulls(&mut payload);
        event["payload"] = payload;
    }
    event
}

/// When the job ended (else when it was made), RFC 3339 in UTC: the time
/// PagerDuty shows for the incident, which would otherwise be when the
/// event arrived.
fn when(ctx: &Value) -> Option<String> {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    ["completed_at", "created_at"].iter().find_map(|key| {
        let at = OffsetDateTime::parse(field(ctx, key), &Rfc3339).ok()?;
        at.checked_to_offset(time::UtcOffset::UTC)?
            .format(&Rfc3339)
            .ok()
    })
}

/// `value` without a `null` anywhere in its objects: PagerDuty shows a
/// detail that is null as the word "null".
fn without_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(without_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(without_nulls),
        _ => {}
    }
}

impl Message for Rendered<Enqueue> {
    fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    fn preview(&self) -> String {
        let mut shown = self.message.0.clone();
        shown["routing_key"] = json!("(secret)");
        serde_json::to_string_pretty(&shown).unwrap_or_default()
    }

    fn preview_json(&self) -> Value {
        let mut shown = self.message.0.clone();
        shown["routing_key"] = json!("(secret)");
        json!({"pagerduty": shown})
    }

    fn seen_text(&self) -> String {
        let e = &self.message.0;
        let get = |p: &str| {
            e.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        // An incident is seen by its key (the job id), its action and summary.
        format!(
            "{} {} {}\n{}",
            get("/event_action"),
            get("/dedup_key"),
            get("/payload/custom_details/status"),
            get("/payload/summary")
        )
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::read::Sensitive;

    fn settings() -> PagerDuty {
        PagerDuty {
            routing_key: Sensitive::new("R0UT1NGKEY0000000000000000000000"),
            severity: "critical".into(),
            url: "https://events.pagerduty.com/v2/enqueue".into(),
            timeout: std::time::Duration::from_secs(5),
        }
    }

    #[test]
    fn failures_trigger_and_successes_resolve_by_job_id() {
        let ctx = |status| json!({"id": "p1", "status": status, "emoji": "❌", "title": "Prediction x failed", "web_url": "https://replicate.com/p/p1"});
        let Value::Object(payload) = json!({"summary": "s".repeat(2_000), "source": "", "custom_details": {"status": "failed"}})
        else {
            unreachable!()
        };
        let trigger = envelope(&settings(), payload, &ctx("failed"));
        assert_eq!(trigger["event_action"], "trigger");
        assert_eq!(trigger["dedup_key"], "p1");
        assert_eq!(trigger["payload"]["severity"], "critical");
        assert_eq!(trigger["payload"]["source"], "replicate");
        assert_eq!(
            trigger["payload"]["summary"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            MAX_SUMMARY
        );
        assert_eq!(trigger["links"][0]["href"], "https://replicate.com/p/p1");
        let resolve = envelope(&settings(), Map::new(), &ctx("succeeded"));
        assert_eq!(resolve["event_action"], "resolve");
        assert_eq!(resolve["dedup_key"], "p1");
        assert_eq!(resolve["payload"]["summary"], "❌ Prediction x failed");
        assert_eq!(action("aborted"), "trigger");
        assert_eq!(action("canceled"), "resolve");
    }

    #[test]
    fn the_incident_says_when_the_job_ended_and_no_detail_is_null() {
        let ctx = json!({"id": "p1", "status": "failed", "completed_at": "2026-11-22T19:20:31.0468+01:00",
                         "created_at": "2026-11-22T18:00:00Z"});
        let Value::Object(payload) = json!({"summary": "s", "source": "x", "component": null,
            "custom_details": {"error": null, "inputs": [{"name": "a", "value": null}], "id": "p1"}})
        else {
            unreachable!()
        };
        let event = envelope(&settings(), payload, &ctx);
        let payload = &event["payload"];
        assert_eq!(payload["timestamp"], "2026-11-22T18:20:31.0468Z");
        assert!(payload.get("component").is_none());
        assert_eq!(
            payload["custom_details"],
            json!({"inputs": [{"name": "a"}], "id": "p1"})
        );
        for (completed, created, want) in [
            (
                json!("not a date"),
                json!("2026-11-22T18:00:00Z"),
                json!("2026-11-22T18:00:00Z"),
            ),
            (json!("9999-12-31T23:00:00-23:59"), json!(null), Value::Null),
        ] {
            let ctx = json!({"id": "p", "status": "failed", "completed_at": completed, "created_at": created});
            assert_eq!(
                envelope(&settings(), Map::new(), &ctx)["payload"]["timestamp"],
                want
            );
        }
    }
}
