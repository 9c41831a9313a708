//! The event model: what Replicate POSTs, as typed Rust.
//!
//! A webhook body is the prediction or training object that `GET /v1/predictions/{id}`
//! or `GET /v1/trainings/{id}` returns. Replicate adds fields over time and leaves
//! many null, so every field but `id` and `status` is optional and parsed leniently:
//! a field of an unexpected type becomes `None` instead of failing the event. The
//! raw body is always kept beside the typed view, so nothing is lost either way.
//!
//! The kind (prediction or training) is not in the body; [`detect_kind`] decides it.

use std::fmt;
use std::str::FromStr;

use serde::de::{DeserializeOwned, Deserializer, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

mod envelope;
pub mod json;

pub use envelope::{BodyError, Envelope, MAX_ID, MAX_STATUS, detect_kind};

use json::Tolerant;
use time::format_description::well_known::Rfc3339;

/// Prediction or training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Prediction,
    Training,
}

impl Kind {
    /// Every kind's name.
    pub const NAMES: [&'static str; 2] = ["prediction", "training"];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Prediction => "prediction",
            Kind::Training => "training",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "prediction" => Ok(Kind::Prediction),
            "training" => Ok(Kind::Training),
            other => Err(format!(
                "unknown kind `{other}` (expected `prediction` or `training`)"
            )),
        }
    }
}

/// A job's status. Replicate may add statuses; an unknown one is kept verbatim
/// (and is not terminal) rather than refused, so the event is never lost.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Status {
    Starting,
    Processing,
    Succeeded,
    Failed,
    Canceled,
    Aborted,
    Other(String),
}

impl Status {
    /// Every status Replicate sends, in the order a job goes through them.
    pub const KNOWN: [&'static str; 6] = [
        "starting",
        "processing",
        "succeeded",
        "failed",
        "canceled",
        "aborted",
    ];

    pub fn parse(s: &str) -> Self {
        match s {
            "starting" => Status::Starting,
            "processing" => Status::Processing,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            "canceled" => Status::Canceled,
            "aborted" => Status::Aborted,
            other => Status::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Status::Starting => "starting",
            Status::Processing => "processing",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
            Status::Aborted => "aborted",
            Status::Other(s) => s,
        }
    }

    /// Final statuses: the job will send no further webhooks after one of these.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Status::Succeeded | Status::Failed | Status::Canceled | Status::Aborted
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Status::parse(&s))
    }
}

/// An RFC 3339 instant as Replicate writes them (`2026-11-20T14:03:11.482915Z`,
/// with anywhere from 0 to 9 fraction digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub OffsetDateTime);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        OffsetDateTime::parse(&s, &Rfc3339)
            .map(Timestamp)
            .map_err(serde::de::Error::custom)
    }
}

/// Links Replicate puts in `urls`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Urls {
    #[serde(default, deserialize_with = "lenient")]
    pub get: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub cancel: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub web: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub stream: Option<String>,
}

/// Timing metrics; absent until the job ends.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Metrics {
    #[serde(default, deserialize_with = "lenient")]
    pub predict_time: Option<f64>,
    #[serde(default, deserialize_with = "lenient")]
    pub total_time: Option<f64>,
    /// Model-specific metrics (token counts, …), kept as sent.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The fields predictions and trainings share.
#[derive(Debug, Clone, Deserialize)]
pub struct Common {
    pub id: String,
    pub status: Status,
    #[serde(default, deserialize_with = "lenient")]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub version: Option<String>,
    /// Whatever the job was given; shape depends on the model.
    #[serde(default)]
    pub input: Value,
    /// Whatever the job produced so far; shape depends on the model.
    #[serde(default)]
    pub output: Value,
    #[serde(default, deserialize_with = "lenient")]
    pub logs: Option<String>,
    /// Usually a string; kept as JSON since nothing promises that.
    #[serde(default)]
    pub error: Value,
    #[serde(default, deserialize_with = "lenient")]
    pub source: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub created_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient")]
    pub started_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient")]
    pub completed_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient")]
    pub urls: Option<Urls>,
    #[serde(default, deserialize_with = "lenient")]
    pub metrics: Option<Metrics>,
    #[serde(default, deserialize_with = "lenient")]
    pub webhook: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub webhook_events_filter: Option<Vec<String>>,
}

impl Common {
    /// Only an id and a status, everything else absent.
    pub fn minimal(id: &str, status: Status) -> Self {
        Self {
            id: id.to_owned(),
            status,
            model: None,
            version: None,
            input: Value::Null,
            output: Value::Null,
            logs: None,
            error: Value::Null,
            source: None,
            created_at: None,
            started_at: None,
            completed_at: None,
            urls: None,
            metrics: None,
            webhook: None,
            webhook_events_filter: None,
        }
    }
}

/// A prediction object.
#[derive(Debug, Clone, Deserialize)]
pub struct Prediction {
    #[serde(flatten)]
    pub common: Common,
    /// Set when the prediction ran through a deployment (`owner/name`).
    #[serde(default, deserialize_with = "lenient")]
    pub deployment: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub data_removed: Option<bool>,
}

/// A training object.
#[derive(Debug, Clone, Deserialize)]
pub struct Training {
    #[serde(flatten)]
    pub common: Common,
    /// The model the trained version is pushed to (`owner/name`), if any.
    #[serde(default, deserialize_with = "lenient")]
    pub destination: Option<String>,
}

/// A job of either kind.
#[derive(Debug, Clone)]
pub enum Job {
    Prediction(Prediction),
    Training(Training),
}

impl Job {
    /// Reads a body already known to be of `kind`.
    pub fn parse(kind: Kind, body: &[u8]) -> Result<Self, serde_json::Error> {
        let value = json::read(&String::from_utf8_lossy(body))?;
        Ok(match kind {
            Kind::Prediction => Job::Prediction(Prediction::deserialize(&value)?),
            Kind::Training => Job::Training(Training::deserialize(&value)?),
        })
    }

    pub fn kind(&self) -> Kind {
        match self {
            Job::Prediction(_) => Kind::Prediction,
            Job::Training(_) => Kind::Training,
        }
    }

    pub fn common(&self) -> &Common {
        match self {
            Job::Prediction(p) => &p.common,
            Job::Training(t) => &t.common,
        }
    }

    /// Wall time from start to completion, when both are known.
    pub fn run_time(&self) -> Option<time::Duration> {
        let c = self.common();
        Some(c.completed_at?.0 - c.started_at?.0)
    }

    /// The error as text: the string itself, or compact JSON for anything else.
    pub fn error_message(&self) -> Option<String> {
        match &self.common().error {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

/// An event as routing and rendering see it: the payload as JSON (so rules can
/// reach any field by path), the typed view, the kind, and the webhook URL's
/// query parameters.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: Kind,
    pub status: Status,
    pub payload: Value,
    pub query: Vec<(String, String)>,
    /// The typed view, built on first use: routing needs only `payload`, so
    /// the router never pays for it.
    job: std::sync::OnceLock<Job>,
}

impl Event {
    /// Reads a stored (or sample) body with the query string it arrived with.
    ///
    /// Bytes that are not UTF-8 read as U+FFFD: the intake refuses such bodies
    /// now, but earlier builds acknowledged and stored a few (a stray byte in
    /// a field the intake skipped), and their notifications must still go.
    pub fn from_body(body: &[u8], query: &str) -> Result<Self, BodyError> {
        let payload = json::read(&String::from_utf8_lossy(body))
            .map_err(|e| BodyError::NotJson(e.to_string()))?;
        Self::from_value(payload, query)
    }

    pub fn from_value(payload: Value, query: &str) -> Result<Self, BodyError> {
        let query = parse_query(query);
        let envelope = Envelope::from_value(&payload, kind_hint(&query))?;
        Ok(Self {
            kind: envelope.kind,
            status: envelope.status,
            payload,
            query,
            job: std::sync::OnceLock::new(),
        })
    }

    /// The typed prediction or training.
    pub fn job(&self) -> &Job {
        self.job.get_or_init(|| {
            // Every field but `id` and `status` (checked by the envelope) is
            // lenient, so this cannot fail; if it ever did, a minimal job keeps
            // the notification going.
            let parsed = match self.kind {
                Kind::Prediction => Prediction::deserialize(&self.payload).map(Job::Prediction),
                Kind::Training => Training::deserialize(&self.payload).map(Job::Training),
            };
            parsed.unwrap_or_else(|e| {
                tracing::error!(message = "Typed view of an event failed; using the minimum.", error = %e);
                let common = Common::minimal(
                    self.payload["id"].as_str().unwrap_or_default(),
                    self.status.clone(),
                );
                match self.kind {
                    Kind::Prediction => Job::Prediction(Prediction {
                        common,
                        deployment: None,
                        data_removed: None,
                    }),
                    Kind::Training => Job::Training(Training {
                        common,
                        destination: None,
                    }),
                }
            })
        })
    }

    /// An event for routing only, from a stored body whose kind and status the
    /// store already knows: just the top-level fields in `keys` are parsed
    /// (routes rarely look at `input`, `output` or `logs`, the big ones).
    /// `job()` on it would see only those fields, so it is not for rendering.
    pub fn for_routing(
        body: &[u8],
        query: &str,
        kind: Kind,
        status: Status,
        keys: &std::collections::BTreeSet<String>,
    ) -> Result<Self, BodyError> {
        let payload = json::tolerantly(&String::from_utf8_lossy(body), |text| {
            let mut de = serde_json::Deserializer::from_str(text);
            let payload = serde::de::DeserializeSeed::deserialize(Fields(keys), &mut de)?;
            de.end().map(|()| payload)
        })
        .map_err(|e| BodyError::NotJson(e.to_string()))?;
        Ok(Self::for_routing_from(
            payload,
            parse_query(query),
            kind,
            status,
        ))
    }

    /// An event for routing only, from fields already read (by
    /// [`Envelope::read_keeping`]) and the decoded query: the same limits as
    /// [`Event::for_routing`].
    pub fn for_routing_from(
        payload: Value,
        query: Vec<(String, String)>,
        kind: Kind,
        status: Status,
    ) -> Self {
        Self {
            kind,
            status,
            payload,
            query,
            job: std::sync::OnceLock::new(),
        }
    }

    /// The value of query parameter `name` (the last one, if repeated).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a JSON object keeping only the top-level `keys` (the rest is checked
/// and skipped without allocating).
struct Fields<'k>(&'k std::collections::BTreeSet<String>);

impl<'de> serde::de::DeserializeSeed<'de> for Fields<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Fields<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if self.0.contains(&key) {
                out.insert(key, map.next_value_seed(Tolerant::FIELD)?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Value::Object(out))
    }
}

/// Decodes a raw query string into pairs, in order. Never fails: undecodable
/// bytes are replaced, since the event must still be kept.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The `kind` query parameter the user may have put in the webhook URL. A value
/// other than `prediction`/`training` is ignored (and logged), not refused: the
/// event still matters, and the body usually tells the kind anyway.
pub fn kind_hint(query: &[(String, String)]) -> Option<Kind> {
    let value = query.iter().rev().find(|(k, _)| k == "kind")?;
    match value.1.parse() {
        Ok(kind) => Some(kind),
        Err(reason) => {
            tracing::warn!(message = "Ignoring the webhook URL's kind parameter.", %reason);
            None
        }
    }
}

/// `deserialize_with` for optional fields: a value of the wrong type becomes `None`
/// instead of failing the whole object.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
