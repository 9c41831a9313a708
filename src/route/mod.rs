//! Routing: which notifiers an event goes to. A pure function of the event and
//! the `[[routes]]` of the config, so it can be table-tested here and explained
//! by `replicate-relay route` before anything is ever sent; [`plan`] turns
//! its answer into the deliveries the store writes with the event.
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

pub mod plan;

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
    let grouped = routes
        .iter()
        .filter_map(|r| r.group.as_ref())
        .flat_map(|g| g.by.iter());
    routes
        .iter()
        .flat_map(|r| r.when.iter().map(|c| &c.path))
        .chain(grouped)
        .filter(|path| *path != "kind" && !path.starts_with("query."))
        .map(|path| path.split('.').next().unwrap_or_default().to_owned())
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
    // A job's start on a lifecycle route: the route's other conditions
    // decide whether its life is followed.
    let starting = route.lifecycle && !event.status.is_terminal();
    if !starting && !route.has_status_condition() && !event.status.is_terminal() {
        return Err(Miss::NotFinal(&event.status));
    }
    for cond in &route.when {
        if starting && cond.path == "status" {
            continue;
        }
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
#[path = "route_tests.rs"]
mod tests;
