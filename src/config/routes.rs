//! `[[routes]]`: the routing rules as values. Each route's `when` table is
//! read into [`Condition`]s, every problem reported with its key (an unknown
//! operator, a bad regex, a notifier nobody declared); matching them against
//! an event is [`crate::route`]'s job.
//!
//! A string is an exact match, or a glob when it contains `*`; a number or
//! boolean is an exact match; a list matches when any item does; a table holds
//! operators (`gt`, `gte`, `lt`, `lte`, `regex`, `exists`, `not`), all of which
//! must hold.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use crate::config::read::{Reader, Table};
use crate::event::Kind;

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub when: Vec<Condition>,
    pub notify: Vec<String>,
    /// Keep trying later routes after this one matches.
    pub continue_matching: bool,
    /// One of `notify`: the route's other notifiers wait until its
    /// delivery is delivered or dead, and see its result.
    pub after: Option<String>,
    /// A job's whole life in one message: its first non-final webhook
    /// posts a start message (the conditions checked without `status`),
    /// its end updates it and replies in its thread.
    pub lifecycle: bool,
    /// On a lifecycle route: how often at most `processing` webhooks
    /// update the start message.
    pub progress: Option<std::time::Duration>,
    /// A digest: final events with the same values at these paths are
    /// sent as one message.
    pub group: Option<Grouping>,
}

/// `group_by`, `group_wait` and `group_max_wait` on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    /// Dotted paths, as in `when` (`query.sweep`).
    pub by: Vec<String>,
    /// Sent when no member came for this long...
    pub wait: std::time::Duration,
    /// ...or this long after the first, whichever is sooner.
    pub max_wait: std::time::Duration,
}

impl Route {
    /// Whether it names `status`; routes that do not match final statuses only.
    pub fn has_status_condition(&self) -> bool {
        self.when.iter().any(|c| c.path == "status")
    }
}

/// `path` must satisfy `matcher`.
#[derive(Debug, Clone)]
pub struct Condition {
    pub path: String,
    pub matcher: Matcher,
}

#[derive(Debug, Clone)]
pub enum Matcher {
    /// Exact text.
    Exact(String),
    /// Text with `*` wildcards.
    Glob(String),
    Number(f64),
    Bool(bool),
    AnyOf(Vec<Matcher>),
    /// An operator table: every operator must hold.
    All(Vec<Op>),
}

#[derive(Debug, Clone)]
pub enum Op {
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    Regex(regex_lite::Regex),
    Exists(bool),
    Not(Box<Matcher>),
}

const OPERATORS: &str = "gt, gte, lt, lte, regex, exists, not";

/// Numbers, and strings that hold one (query parameters are always text).
pub fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Exact(s) => write!(f, "{s:?}"),
            Matcher::Glob(s) => write!(f, "glob {s:?}"),
            Matcher::Number(n) => write!(f, "{n}"),
            Matcher::Bool(b) => write!(f, "{b}"),
            Matcher::AnyOf(all) => {
                f.write_str("one of [")?;
                for (i, m) in all.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{m}")?;
                }
                f.write_str("]")
            }
            Matcher::All(ops) => {
                for (i, op) in ops.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" and ")?;
                    }
                    match op {
                        Op::Gt(n) => write!(f, "> {n}")?,
                        Op::Gte(n) => write!(f, ">= {n}")?,
                        Op::Lt(n) => write!(f, "< {n}")?,
                        Op::Lte(n) => write!(f, "<= {n}")?,
                        Op::Regex(re) => write!(f, "matching /{}/", re.as_str())?,
                        Op::Exists(true) => f.write_str("present")?,
                        Op::Exists(false) => f.write_str("absent")?,
                        Op::Not(m) => write!(f, "not {m}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// Reads `[[routes]]`, checking operators, regexes and notifier names.
/// `declared` is every name under `[notifiers]`, valid or not: a route naming a
/// notifier that has its own problems is not reported twice.
pub fn read_routes(
    r: &mut Reader,
    value: Option<&Value>,
    declared: &BTreeSet<String>,
) -> Vec<Route> {
    let items = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            r.error(
                "routes",
                "must be a list of tables: write each route as [[routes]]",
            );
            return Vec::new();
        }
    };
    let mut routes = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("routes[{i}]");
        let Some(t) = r.table(Some(item), &path) else {
            continue;
        };
        r.known_keys(
            t,
            &[
                "name",
                "when",
                "notify",
                "continue",
                "after",
                "lifecycle",
                "progress",
                "group_by",
                "group_wait",
                "group_max_wait",
            ],
        );
        let name = r
            .string(t, "name")
            .unwrap_or_else(|| format!("route {}", i + 1));
        if !names.insert(name.clone()) {
            r.error(
                t.key("name"),
                format!("another route is already named \"{name}\""),
            );
        }
        let notify = r.strings(t, "notify");
        if notify.is_empty() && !r.failed(&t.key("notify")) {
            r.error(
                t.key("notify"),
                "missing; the notifiers to send to, e.g. notify = [\"ml-slack\"]",
            );
        }
        for n in &notify {
            if !declared.contains(n) {
                let known: Vec<&str> = declared.iter().map(String::as_str).collect();
                r.error(
                    t.key("notify"),
                    format!(
                        "no notifier named `{n}` (declared: {}); add a [notifiers.{n}] section",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        }
        let continue_matching = r.bool(t, "continue").unwrap_or(false);
        let lifecycle = r.bool(t, "lifecycle").unwrap_or(false);
        let progress = r.duration(t, "progress");
        if let Some(every) = progress {
            if !lifecycle {
                r.error(
                    t.key("progress"),
                    "updates a job's start message, so it needs lifecycle = true on the route",
                );
            } else if every < std::time::Duration::from_secs(1) {
                r.error(t.key("progress"), "must be at least 1s; e.g. \"1m\"");
            }
        }
        let after = r.string(t, "after");
        if let Some(a) = &after
            && !notify.contains(a)
        {
            r.error(
                t.key("after"),
                format!(
                    "`{a}` is not in this route's notify list; after names the notifier the others wait for, e.g. after = \"keep\" with notify = [\"keep\", \"ml-slack\"]"
                ),
            );
        }
        let when_path = t.key("when");
        let when = match r.table(t.map.get("when"), &when_path) {
            Some(w) => read_when(r, w),
            None => Vec::new(),
        };
        routes.push(Route {
            name,
            when,
            notify,
            continue_matching,
            after,
            lifecycle,
            progress,
            group: read_grouping(r, t, lifecycle),
        });
    }
    routes
}

pub(crate) fn read_when(r: &mut Reader, when: Table<'_>) -> Vec<Condition> {
    let mut out = Vec::new();
    for (path, value) in when.map {
        let key = when.key(&format!("\"{path}\""));
        if let Some(matcher) = read_matcher(r, value, &key) {
            if path == "kind" && !kind_values_ok(&matcher) {
                r.error(&key, "kind is \"prediction\" or \"training\"");
            }
            out.push(Condition {
                path: path.clone(),
                matcher,
            });
        }
    }
    out
}

fn kind_values_ok(m: &Matcher) -> bool {
    match m {
        Matcher::Exact(s) => s.parse::<Kind>().is_ok(),
        Matcher::AnyOf(all) => all.iter().all(kind_values_ok),
        _ => true,
    }
}

fn read_matcher(r: &mut Reader, value: &Value, key: &str) -> Option<Matcher> {
    match value {
        Value::String(s) if s.contains('*') => Some(Matcher::Glob(s.clone())),
        Value::String(s) => Some(Matcher::Exact(s.clone())),
        Value::Number(n) => n.as_f64().map(Matcher::Number),
        Value::Bool(b) => Some(Matcher::Bool(*b)),
        Value::Array(items) if items.is_empty() => {
            r.error(
                key,
                "an empty list matches nothing; remove the condition or list values",
            );
            None
        }
        Value::Array(items) => {
            let all: Vec<Matcher> = items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| read_matcher(r, v, &format!("{key}[{i}]")))
                .collect();
            (all.len() == items.len()).then_some(Matcher::AnyOf(all))
        }
        Value::Object(ops) => {
            if ops.is_empty() {
                r.error(
                    key,
                    format!("an empty table has no operator (known: {OPERATORS})"),
                );
                return None;
            }
            // Every operator is read, so each bad one is reported, not just
            // the first.
            let mut out = Vec::new();
            let mut all_read = true;
            for (op, arg) in ops {
                let op_key = format!("{key}.{op}");
                let num = |r: &mut Reader| match number(arg) {
                    Some(n) => Some(n),
                    None => {
                        r.error(&op_key, "needs a number");
                        None
                    }
                };
                let parsed = match op.as_str() {
                    "gt" => num(r).map(Op::Gt),
                    "gte" => num(r).map(Op::Gte),
                    "lt" => num(r).map(Op::Lt),
                    "lte" => num(r).map(Op::Lte),
                    "regex" => match arg.as_str().map(regex_lite::Regex::new) {
                        Some(Ok(re)) => Some(Op::Regex(re)),
                        Some(Err(e)) => {
                            r.error(&op_key, format!("invalid regex: {e}"));
                            None
                        }
                        None => {
                            r.error(&op_key, "needs a string");
                            None
                        }
                    },
                    "exists" => match arg.as_bool() {
                        Some(b) => Some(Op::Exists(b)),
                        None => {
                            r.error(&op_key, "needs true or false");
                            None
                        }
                    },
                    "not" => read_matcher(r, arg, &op_key).map(|m| Op::Not(Box::new(m))),
                    other => {
                        r.error(
                            &op_key,
                            format!(
                                "unknown operator `{other}` (known: {OPERATORS}); to reach a nested field, quote the dotted key: \"metrics.predict_time\" = {{ gt = 600 }}"
                            ),
                        );
                        None
                    }
                };
                match parsed {
                    Some(op) => out.push(op),
                    None => all_read = false,
                }
            }
            all_read.then_some(Matcher::All(out))
        }
        Value::Null => {
            r.error(key, "has no value");
            None
        }
    }
}

/// `group_by`, `group_wait` (default 2m) and `group_max_wait` (default 30m).
fn read_grouping(r: &mut Reader, t: Table<'_>, lifecycle: bool) -> Option<Grouping> {
    use std::time::Duration;
    let by = r.strings(t, "group_by");
    let wait = r.duration(t, "group_wait");
    let max_wait = r.duration(t, "group_max_wait");
    if by.is_empty() {
        for key in ["group_wait", "group_max_wait"] {
            if t.map.contains_key(key) {
                r.error(
                    t.key(key),
                    "needs group_by, the keys that make a group, e.g. group_by = [\"query.sweep\"]",
                );
            }
        }
        return None;
    }
    if lifecycle {
        r.error(
            t.key("group_by"),
            "a route either follows each job's life (lifecycle) or sends one digest for many jobs (group_by), not both",
        );
    }
    for path in &by {
        if path.trim().is_empty() {
            r.error(
                t.key("group_by"),
                "an empty key; write dotted paths as in `when`, e.g. \"query.sweep\"",
            );
        }
    }
    let wait = wait.unwrap_or(Duration::from_secs(120));
    let max_wait = max_wait.unwrap_or(Duration::from_secs(1800).max(wait));
    if wait < Duration::from_secs(1) {
        r.error(
            t.key("group_wait"),
            "must be at least 1s; the default is \"2m\"",
        );
    }
    if max_wait < wait {
        r.error(
            t.key("group_max_wait"),
            format!(
                "is shorter than group_wait ({}); the default is \"30m\"",
                humantime::format_duration(wait)
            ),
        );
    }
    Some(Grouping { by, wait, max_wait })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    #[test]
    fn config_problems_name_the_key() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"model": {"like": "x"}}), "when.\"model\".like"),
            (json!({"model": {"regex": "("}}), "when.\"model\".regex"),
            (json!({"model": {"gt": "many"}}), "when.\"model\".gt"),
            (json!({"model": {"exists": "yes"}}), "when.\"model\".exists"),
            (json!({"model": []}), "when.\"model\""),
            (json!({"model": {}}), "when.\"model\""),
            (json!({"kind": "trainings"}), "when.\"kind\""),
            (
                json!({"model": {"not": {"regex": "["}}}),
                "when.\"model\".not.regex",
            ),
        ];
        let several: Vec<(Value, Vec<&str>)> = vec![
            (
                json!({"model": {"like": "x", "regex": "("}}),
                vec!["when.\"model\".like", "when.\"model\".regex"],
            ),
            (
                json!({"metrics.predict_time": {"gt": "a", "lt": "b", "exists": 1}}),
                vec![
                    "when.\"metrics.predict_time\".exists",
                    "when.\"metrics.predict_time\".gt",
                    "when.\"metrics.predict_time\".lt",
                ],
            ),
            (
                json!({"model": {"not": {"gt": "x", "lt": "y"}}, "status": []}),
                vec![
                    "when.\"model\".not.gt",
                    "when.\"model\".not.lt",
                    "when.\"status\"",
                ],
            ),
        ];
        let cases = cases
            .into_iter()
            .map(|(w, key)| (w, vec![key]))
            .chain(several);
        for (w, key) in cases {
            let mut r = Reader::new(PathBuf::new());
            read_when(
                &mut r,
                Table {
                    path: "when",
                    map: w.as_object().unwrap(),
                },
            );
            let mut keys: Vec<_> = r.problems.iter().map(|p| p.key.as_str()).collect();
            keys.sort();
            assert_eq!(keys, key, "when {w}: {:?}", r.problems);
        }
    }
}
