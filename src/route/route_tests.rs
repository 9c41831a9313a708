//! Routing's tables: every kind of condition, first match and `continue`,
//! explanations, and routing from the stored fields alone.

use super::*;
use crate::config::read::{Reader, Table};
use crate::config::routes::read_when;
use serde_json::json;
use std::path::PathBuf;

fn event(payload: Value, query: &str) -> Event {
    Event::from_value(payload, query).unwrap()
}

fn base() -> Value {
    json!({
        "id": "p1", "status": "failed", "model": "acme/captioner",
        "deployment": "acme/prod-captioner",
        "input": {"prompt": "a cat", "steps": 30},
        "output": ["https://x/a.png", "https://x/b.webp"],
        "metrics": {"predict_time": 700.5},
        "urls": {"get": "https://api.replicate.com/v1/predictions/p1"},
        "tags": ["nightly", "vision"]
    })
}

/// Parses `when` from TOML-ish JSON, failing the test on config problems.
fn when(value: Value) -> Vec<Condition> {
    let mut r = Reader::new(PathBuf::new());
    let map = value.as_object().unwrap();
    let conds = read_when(&mut r, Table { path: "when", map });
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    conds
}

fn route(name: &str, w: Value, cont: bool) -> Route {
    Route {
        after: None,
        name: name.into(),
        when: when(w),
        notify: vec!["n".into()],
        continue_matching: cont,
        lifecycle: false,
        progress: None,
        group: None,
    }
}

#[test]
fn condition_table() {
    let ev = event(base(), "team=vision&priority=2");
    let cases: Vec<(Value, bool)> = vec![
        (json!({"model": "acme/captioner"}), true),
        (json!({"model": "acme/other"}), false),
        (json!({"model": "acme/*"}), true),
        (json!({"model": "*/captioner"}), true),
        (json!({"model": "a*c*r"}), true),
        (json!({"model": "acme/*x"}), false),
        (json!({"deployment": "acme/prod-*"}), true),
        (json!({"status": ["failed", "aborted"]}), true),
        (json!({"status": ["succeeded", "canceled"]}), false),
        (json!({"kind": "prediction"}), true),
        (json!({"kind": "training"}), false),
        (json!({"query.team": "vision"}), true),
        (json!({"query.team": "audio"}), false),
        (json!({"query.priority": {"gte": 2}}), true),
        (json!({"query.missing": {"exists": false}}), true),
        (json!({"metrics.predict_time": {"gt": 600}}), true),
        (json!({"metrics.predict_time": {"gt": 700.5}}), false),
        (json!({"metrics.predict_time": {"gte": 700.5}}), true),
        (json!({"metrics.predict_time": {"lt": 600}}), false),
        (json!({"metrics.predict_time": {"lte": 700.5}}), true),
        (
            json!({"metrics.predict_time": {"gt": 600, "lt": 800}}),
            true,
        ),
        (
            json!({"metrics.predict_time": {"gt": 600, "lt": 650}}),
            false,
        ),
        (json!({"input.steps": 30}), true),
        (json!({"input.steps": "30"}), true),
        (json!({"input.prompt": {"regex": "^a (cat|dog)$"}}), true),
        (json!({"input.prompt": {"regex": "dog"}}), false),
        (json!({"input.prompt": {"not": "a dog"}}), true),
        (json!({"input.prompt": {"not": ["a cat", "a dog"]}}), false),
        (json!({"deployment": {"exists": true}}), true),
        (json!({"destination": {"exists": true}}), false),
        (json!({"destination": {"exists": false}}), true),
        (json!({"error": {"exists": true}}), false),
        (json!({"output": "*.webp"}), true),
        (json!({"output.0": "*.png"}), true),
        (json!({"output.1": "*.png"}), false),
        (json!({"output.7": {"exists": true}}), false),
        (json!({"tags": "vision"}), true),
        (json!({"input.prompt.deeper": "x"}), false),
        (json!({"nothing.here": "x"}), false),
        (json!({"nothing.here": {"gt": 1}}), false),
        (json!({"nothing.here": {"not": "x"}}), true),
        (
            json!({"model": "acme/captioner", "query.team": "audio"}),
            false,
        ),
        (json!({}), true),
    ];
    for (w, want) in cases {
        let r = route("r", w.clone(), false);
        assert_eq!(check(&r, &ev).is_ok(), want, "when {w}");
    }
}

#[test]
fn routing_on_the_needed_fields_only_decides_the_same() {
    let routes = vec![
        route(
            "a",
            json!({"model": "acme/*", "metrics.predict_time": {"gt": 600}}),
            true,
        ),
        route(
            "b",
            json!({"output": "*.webp", "status": ["failed", "succeeded"]}),
            true,
        ),
        route(
            "c",
            json!({"input.prompt": {"regex": "cat"}, "query.team": "vision"}),
            true,
        ),
        route("d", json!({"tags": "nightly", "kind": "prediction"}), false),
    ];
    let keys = payload_keys(&routes);
    assert_eq!(
        keys.iter().map(String::as_str).collect::<Vec<_>>(),
        ["input", "metrics", "model", "output", "status", "tags"]
    );
    let mut bodies = vec![base()];
    for (key, value) in [
        ("status", json!("processing")),
        ("model", json!("other/x")),
        ("output", json!(null)),
    ] {
        let mut b = base();
        b[key] = value;
        bodies.push(b);
    }
    for body in bodies {
        for query in ["", "team=vision"] {
            let full = event(body.clone(), query);
            let bytes = serde_json::to_vec(&body).unwrap();
            let partial =
                Event::for_routing(&bytes, query, full.kind, full.status.clone(), &keys).unwrap();
            let names = |e: &Event| -> Vec<String> {
                explain(&routes, e)
                    .into_iter()
                    .map(|(r, v)| format!("{}={v:?}", r.name))
                    .collect()
            };
            assert_eq!(names(&partial), names(&full), "{body} {query}");
        }
    }
}

#[test]
fn globs() {
    for (pattern, text, want) in [
        ("*", "", true),
        ("*", "anything", true),
        ("a*", "abc", true),
        ("*c", "abc", true),
        ("a*c", "ac", true),
        ("a*c", "abcbc", true),
        ("a*b*c", "aXbYc", true),
        ("a*b*c", "aXcYb", false),
        ("ab*ab", "ab", false),
        ("exact", "exact", true),
        ("exact", "exactly", false),
    ] {
        assert_eq!(glob(pattern, text), want, "{pattern} ~ {text}");
    }
}

/// `matching` decides without explaining; it must decide as `explain` does.
#[test]
fn matching_agrees_with_explain() {
    let conditions = [
        json!({"status": "failed"}),
        json!({"model": "acme/*"}),
        json!({"model": "other/*"}),
        json!({"metrics.predict_time": {"gt": 600}}),
        json!({"kind": "training"}),
        json!({"status": ["starting", "processing"]}),
        json!({"query.team": "vision"}),
        json!({}),
    ];
    let mut processing = base();
    processing["status"] = json!("processing");
    let mut fast = base();
    fast["metrics"] = json!({"predict_time": 1});
    let events = [
        event(base(), ""),
        event(base(), "team=vision"),
        event(processing, "team=vision"),
        event(fast, ""),
    ];
    // Every pattern of `continue` over the routes, so first-match and
    // shadowing are covered wherever a match falls.
    for pattern in 0..(1u32 << conditions.len()) {
        let routes: Vec<Route> = conditions
            .iter()
            .enumerate()
            .map(|(i, w)| route(&format!("r{i}"), w.clone(), pattern & (1 << i) != 0))
            .collect();
        for ev in &events {
            let decided: Vec<&str> = matching(&routes, ev)
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            let explained: Vec<&str> = explain(&routes, ev)
                .iter()
                .filter(|(_, v)| *v == Verdict::Matched)
                .map(|(r, _)| r.name.as_str())
                .collect();
            assert_eq!(decided, explained, "continue pattern {pattern:b}");
        }
    }
}

#[test]
fn first_match_wins_unless_continue() {
    let ev = event(base(), "");
    let routes = vec![
        route("failures", json!({"status": "failed"}), true),
        route("acme", json!({"model": "acme/*"}), false),
        route("catch-all", json!({}), false),
    ];
    let names: Vec<_> = matching(&routes, &ev)
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["failures", "acme"]);
    let verdicts = explain(&routes, &ev);
    assert!(matches!(&verdicts[2].1, Verdict::Shadowed(why) if why.contains("\"acme\"")));

    let routes = vec![
        route("failures", json!({"status": "failed"}), false),
        route("acme", json!({"model": "acme/*"}), false),
    ];
    let names: Vec<_> = matching(&routes, &ev)
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["failures"]);
}

#[test]
fn terminal_statuses_only_unless_status_is_named() {
    let mut processing = base();
    processing["status"] = json!("processing");
    let ev = event(processing, "");
    let any = route("any", json!({"model": "acme/*"}), false);
    let Verdict::NoMatch(why) = &explain(std::slice::from_ref(&any), &ev)[0].1 else {
        panic!()
    };
    assert!(why.contains("not final"), "{why}");
    let opted_in = route(
        "progress",
        json!({"status": ["starting", "processing"]}),
        false,
    );
    assert!(check(&opted_in, &ev).is_ok());
    for status in ["succeeded", "failed", "canceled", "aborted"] {
        let mut p = base();
        p["status"] = json!(status);
        assert!(check(&any, &event(p, "")).is_ok(), "{status}");
    }
}

#[test]
fn explanations_say_which_condition_failed() {
    let ev = event(base(), "");
    let r = route("slow", json!({"metrics.predict_time": {"gt": 1000}}), false);
    assert_eq!(
        check(&r, &ev).unwrap_err().to_string(),
        "`metrics.predict_time` is 700.5; wanted > 1000"
    );
    let r = route("dest", json!({"destination": "acme/*"}), false);
    assert_eq!(
        check(&r, &ev).unwrap_err().to_string(),
        "`destination` is missing; wanted glob \"acme/*\""
    );
    let r = route("kind", json!({"kind": "training"}), false);
    assert_eq!(
        check(&r, &ev).unwrap_err().to_string(),
        "`kind` is \"prediction\"; wanted \"training\""
    );
}

#[test]
fn a_lifecycle_route_follows_a_job_from_its_start_without_its_status_condition() {
    let mut lifecycle = route(
        "life",
        json!({"model": "acme/*", "status": ["succeeded", "failed"]}),
        false,
    );
    lifecycle.lifecycle = true;
    let plain = route("plain", json!({"model": "acme/*"}), false);
    let cases = [
        ("acme/neon", "starting", true, false),
        ("acme/neon", "processing", true, false),
        ("acme/neon", "succeeded", true, true),
        // Its status condition still holds for an end.
        ("acme/neon", "canceled", false, true),
        // Its other conditions hold for a start too.
        ("other/x", "starting", false, false),
    ];
    for (model, status, life, plain_matches) in cases {
        let e = event(json!({"id": "p1", "model": model, "status": status}), "");
        assert_eq!(
            check(&lifecycle, &e).is_ok(),
            life,
            "lifecycle, {model} {status}"
        );
        assert_eq!(
            check(&plain, &e).is_ok(),
            plain_matches,
            "plain, {model} {status}"
        );
    }
}
