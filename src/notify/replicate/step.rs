//! One stage of a pipeline, as pure logic: the webhook address the next
//! prediction is created with (this relay, with a query that routes it and
//! marks which delivery made it), how deep the chain already is, and
//! whether a prediction Replicate lists is the one an earlier attempt of
//! this delivery created.

use serde_json::{Map, Value};

use super::config::Target;

/// The query parameters a stage sets on its webhook; a parent's other
/// parameters are carried to its child (a `team=` keeps routing the whole
/// chain).
pub const PIPELINE: &str = "pipeline";
pub const PARENT: &str = "parent";
pub const DEPTH: &str = "depth";
/// The delivery that created the prediction (its message id, the same at
/// every attempt): what finds an interrupted create again.
pub const STEP: &str = "relay_step";

/// How deep the job that ended is in its chain: its webhook's `depth`, 0
/// for a job no pipeline made.
pub fn depth(query: &Map<String, Value>) -> Result<u32, String> {
    match query.get(DEPTH).and_then(Value::as_str) {
        None => Ok(0),
        Some(text) => text.parse().map_err(|_| {
            format!("the job's webhook says depth `{text}`, not a number; it was not made by this relay's pipelines")
        }),
    }
}

/// The webhook for the child of job `parent` at `depth`, made by stage
/// `pipeline`, from `base` (this relay's address) and the parent's query.
pub fn child_webhook(
    base: &url::Url,
    parent_query: &Map<String, Value>,
    pipeline: &str,
    parent: &str,
    depth: u32,
) -> String {
    let mut url = base.clone();
    {
        let mut q = url.query_pairs_mut();
        q.clear();
        for (k, v) in parent_query {
            if [PIPELINE, PARENT, DEPTH, STEP].contains(&k.as_str()) {
                continue;
            }
            if let Some(v) = v.as_str() {
                q.append_pair(k, v);
            }
        }
        q.append_pair(PIPELINE, pipeline)
            .append_pair(PARENT, parent)
            .append_pair(DEPTH, &depth.to_string());
    }
    url.into()
}

/// `webhook` with the delivery's mark added.
pub fn marked(webhook: &str, step: &str) -> String {
    match url::Url::parse(webhook) {
        Ok(mut url) => {
            url.query_pairs_mut().append_pair(STEP, step);
            url.into()
        }
        Err(_) => webhook.to_owned(),
    }
}

/// What a listed prediction is to a delivery looking for what an earlier
/// attempt created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// It is: its id.
    Ours(String),
    /// It is not.
    Other,
    /// It may be: the listing shows neither its webhook nor its input.
    Unsure(String),
}

/// Whether `listed` is the prediction delivery `step` created at `target`
/// with `input`: its webhook carries the mark; without a webhook, the
/// same target and the same input.
pub fn compare(listed: &Value, step: &str, target: &Target, input: &Value) -> Seen {
    let Some(id) = listed["id"].as_str() else {
        return Seen::Other;
    };
    if let Some(webhook) = listed["webhook"].as_str() {
        let mark = url::Url::parse(webhook).ok().and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == STEP)
                .map(|(_, v)| v.into_owned())
        });
        return if mark.as_deref() == Some(step) {
            Seen::Ours(id.to_owned())
        } else {
            Seen::Other
        };
    }
    let differs = |field: &str, want: &str| {
        listed[field]
            .as_str()
            .is_some_and(|seen| seen != want && !want.ends_with(&format!(":{seen}")))
    };
    let other_target = match target {
        Target::Model(m) => differs("model", m),
        Target::Version(v) => differs("version", v),
        Target::Deployment(d) => differs("deployment", d),
    };
    if other_target {
        return Seen::Other;
    }
    match &listed["input"] {
        Value::Object(_) if listed["data_removed"] != Value::Bool(true) => {
            if &listed["input"] == input {
                Seen::Ours(id.to_owned())
            } else {
                Seen::Other
            }
        }
        _ => Seen::Unsure(id.to_owned()),
    }
}

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
