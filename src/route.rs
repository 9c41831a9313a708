//! Routing: which notifiers an event goes to. A pure function of the event and
//! the `[[routes]]` of the config, so it can be table-tested here and explained
//! by `replicate-relay route` before anything is ever sent.
//!
//! Routes are tried in file order; the first match wins unless it says
//! `continue = true`. All conditions of a route's `when` must hold:
//! - a string is an exact match, or a glob when it contains `*`;
//! - a number or boolean is an exact match;
//! - a list matches when any of its items does;
//! - a table holds operators, all of which must hold: `gt`, `gte`, `lt`, `lte`,
//!   `regex`, `exists`, `not`.
//!
//! Keys are dotted paths into the payload (`metrics.predict_time`, `input.prompt`),
//! plus the derived `kind` and `query.<param>`. When the payload value is a list,
//! a condition holds if it holds for any item. A route with no `status` condition
//! matches terminal statuses only, so nobody is paged for `processing`.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use crate::config::routes::number;
pub use crate::config::routes::{Condition, Matcher, Op, Route};
use crate::event::{Event, Status};

/// What routing decided about one route, for `route --explain`.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Matched,
    /// A condition did not hold; the text says which and why.
    NoMatch(String),
    /// An earlier route matched without `continue = true`.
    Shadowed(String),
}

/// The top-level payload fields any route looks at (`metrics` for
/// `metrics.predict_time`); `kind` and `query.*` are not payload fields.
pub fn payload_keys(routes: &[Route]) -> BTreeSet<String> {
    routes
        .iter()
        .flat_map(|r| &r.when)
        .filter(|c| c.path != "kind" && !c.path.starts_with("query."))
        .map(|c| c.path.split('.').next().unwrap_or_default().to_owned())
        .collect()
}

/// The routes that match `event`, in order, honouring first-match and `continue`.
///
/// The same decision as [`explain`] without the explanations: this runs for
/// every webhook before it is answered, and writing out why each route did
/// not match cost more than the rest of routing together.
pub fn matching<'a>(routes: &'a [Route], event: &Event) -> Vec<&'a Route> {
    let mut out = Vec::new();
    for route in routes {
        if check(route, event).is_ok() {
            out.push(route);
            if !route.continue_matching {
                break;
            }
        }
    }
    out
}

/// Every route with its verdict for `event`.
pub fn explain<'a>(routes: &'a [Route], event: &Event) -> Vec<(&'a Route, Verdict)> {
    let mut stopped_by: Option<&str> = None;
    let mut out = Vec::with_capacity(routes.len());
    for route in routes {
        let verdict = if let Some(earlier) = stopped_by {
            Verdict::Shadowed(format!(
                "route \"{earlier}\" matched first and has no `continue = true`"
            ))
        } else {
            match check(route, event) {
                Ok(()) => {
                    if !route.continue_matching {
                        stopped_by = Some(&route.name);
                    }
                    Verdict::Matched
                }
                Err(miss) => Verdict::NoMatch(miss.to_string()),
            }
        };
        out.push((route, verdict));
    }
    out
}

/// Why a route did not match. Written out only when someone reads it.
#[derive(Debug)]
enum Miss<'a> {
    NotFinal(&'a Status),
    Condition {
        cond: &'a Condition,
        found: Option<Cow<'a, Value>>,
    },
}

impl fmt::Display for Miss<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Miss::NotFinal(status) => write!(
                f,
                "status `{status}` is not final, and routes without a `status` condition match only succeeded, failed, canceled and aborted"
            ),
            Miss::Condition { cond, found } => {
                write!(f, "`{}` is ", cond.path)?;
                match found.as_deref() {
                    None | Some(Value::Null) => f.write_str("missing")?,
                    Some(v) => write!(f, "{}", Shown(v))?,
                }
                write!(f, "; wanted {}", cond.matcher)
            }
        }
    }
}

fn check<'a>(route: &'a Route, event: &'a Event) -> Result<(), Miss<'a>> {
    if !route.has_status_condition() && !event.status.is_terminal() {
        return Err(Miss::NotFinal(&event.status));
    }
    for cond in &route.when {
        let found = lookup(event, &cond.path);
        if !cond.matcher.matches(found.as_deref()) {
            return Err(Miss::Condition { cond, found });
        }
    }
    Ok(())
}

/// The value at `path`: `kind`, `query.<param>`, or a dotted path into the payload
/// (a number segment indexes a list: `output.0`). Payload values are borrowed.
pub fn lookup<'a>(event: &'a Event, path: &str) -> Option<Cow<'a, Value>> {
    if path == "kind" {
        return Some(Cow::Owned(Value::String(event.kind.as_str().to_owned())));
    }
    if let Some(param) = path.strip_prefix("query.") {
        return event
            .query_param(param)
            .map(|v| Cow::Owned(Value::String(v.to_owned())));
    }
    let mut here = &event.payload;
    for segment in path.split('.') {
        here = match here {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(Cow::Borrowed(here))
}

impl Matcher {
    pub fn matches(&self, value: Option<&Value>) -> bool {
        match self {
            Matcher::AnyOf(all) => all.iter().any(|m| m.matches(value)),
            Matcher::All(ops) => ops.iter().all(|op| op.holds(value)),
            scalar => match value {
                None | Some(Value::Null) => false,
                Some(Value::Array(items)) => items.iter().any(|v| scalar.matches_scalar(v)),
                Some(v) => scalar.matches_scalar(v),
            },
        }
    }

    fn matches_scalar(&self, value: &Value) -> bool {
        match self {
            Matcher::Exact(want) => text(value).is_some_and(|t| t == *want),
            Matcher::Glob(pattern) => text(value).is_some_and(|t| glob(pattern, &t)),
            Matcher::Number(want) => number(value).is_some_and(|n| n == *want),
            Matcher::Bool(want) => value.as_bool() == Some(*want),
            Matcher::AnyOf(_) | Matcher::All(_) => self.matches(Some(value)),
        }
    }
}

impl Op {
    fn holds(&self, value: Option<&Value>) -> bool {
        let present = value.filter(|v| !v.is_null());
        match self {
            Op::Exists(want) => present.is_some() == *want,
            Op::Not(inner) => !inner.matches(value),
            _ => match present {
                None => false,
                Some(Value::Array(items)) => items.iter().any(|v| self.holds_scalar(v)),
                Some(v) => self.holds_scalar(v),
            },
        }
    }

    fn holds_scalar(&self, value: &Value) -> bool {
        match self {
            Op::Gt(n) => number(value).is_some_and(|v| v > *n),
            Op::Gte(n) => number(value).is_some_and(|v| v >= *n),
            Op::Lt(n) => number(value).is_some_and(|v| v < *n),
            Op::Lte(n) => number(value).is_some_and(|v| v <= *n),
            Op::Regex(re) => text(value).is_some_and(|t| re.is_match(&t)),
            Op::Exists(_) | Op::Not(_) => self.holds(Some(value)),
        }
    }
}

/// Scalars as text (so `"2"` matches the number 2); lists and tables are not text.
fn text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// `*` matches any run of characters (including none); everything else is literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = parts.split_first().expect("split yields at least one part");
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// Shows a payload value briefly in explanations.
struct Shown<'a>(&'a Value);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        if text.chars().count() > 80 {
            let cut: String = text.chars().take(77).collect();
            write!(f, "{cut}...")
        } else {
            f.write_str(&text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routes::read_when;
    use crate::read::{Reader, Table};
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
            name: name.into(),
            when: when(w),
            notify: vec!["n".into()],
            continue_matching: cont,
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
                    Event::for_routing(&bytes, query, full.kind, full.status.clone(), &keys)
                        .unwrap();
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
}
