//! The event model: what Replicate POSTs, as typed Rust.
//!
//! A webhook body is the prediction or training object that `GET /v1/predictions/{id}`
//! or `GET /v1/trainings/{id}` returns. Replicate adds fields over time and leaves
//! many null, so every field but `id` and `status` is optional and parsed leniently:
//! a field of an unexpected type becomes `None` instead of failing the event. The
//! raw body is always kept beside the typed view, so nothing is lost either way.
//!
//! The kind (prediction or training) is not in the body; [`detect_kind`] decides it.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::de::{DeserializeOwned, Deserializer, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

pub mod json;

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

/// The minimum the intake must know about a body before acknowledging it. Parsed
/// from JSON that is already known to be an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: String,
    pub status: Status,
    pub model: Option<String>,
    pub kind: Kind,
}

/// Why a body cannot be accepted as a webhook event (answered 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body is JSON but not an object (a prediction or training object is expected)")]
    NotObject,
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `{0}` must be a non-empty string")]
    NotString(&'static str),
    #[error("field `{0}` is longer than {1} bytes (Replicate's are far shorter)")]
    TooLong(&'static str, usize),
    #[error("field `{0}` contains a control character (Replicate's never do)")]
    ControlCharacter(&'static str),
}

/// The longest `id` and `status` the intake accepts. Replicate's ids are 26
/// characters and its statuses a word; a message must be able to name both
/// in full (a Slack header holds 150 characters).
pub const MAX_ID: usize = 100;
pub const MAX_STATUS: usize = 32;

impl Envelope {
    /// Validates the body and picks out what the store indexes. `kind_hint` is the
    /// webhook URL's `kind` query parameter, if the user put one there.
    ///
    /// This is on the path to every 2xx, so it does not build the whole JSON
    /// tree: it checks the syntax of everything (with serde_json's nesting
    /// limit) and keeps only the handful of fields it needs.
    pub fn read(body: &[u8], kind_hint: Option<Kind>) -> Result<Self, BodyError> {
        Self::read_keeping(body, kind_hint, &BTreeSet::new()).map(|(envelope, _)| envelope)
    }

    /// [`Envelope::read`] that also keeps the top-level fields in `keys` (those
    /// the routes look at), in the same pass over the body.
    pub fn read_keeping(
        body: &[u8],
        kind_hint: Option<Kind>,
        keys: &BTreeSet<String>,
    ) -> Result<(Self, Value), BodyError> {
        // JSON text is UTF-8 (RFC 8259). serde_json checks only the strings it
        // decodes, not those it skips, so a stray byte in a field read by
        // nobody here (`logs`, say) was acknowledged and stored, and then the
        // full read at delivery refused it: an alert lost. So the whole body is
        // checked once, and the parse below skips its per-string checks.
        let text = std::str::from_utf8(body).map_err(|e| {
            BodyError::NotJson(format!(
                "invalid UTF-8 at byte {} (JSON must be UTF-8)",
                e.valid_up_to()
            ))
        })?;
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => Err(BodyError::NotObject),
                Err(e) => Err(BodyError::NotJson(e.to_string())),
            };
        }
        // Read as delivery will read it (module `json`): one rule for both.
        let (peek, kept) = json::tolerantly(text, |text| {
            let mut de = serde_json::Deserializer::from_str(text);
            let read = serde::de::DeserializeSeed::deserialize(PeekSeed(keys), &mut de)?;
            de.end().map(|()| read)
        })
        .map_err(|e| BodyError::NotJson(e.to_string()))?;
        let id = required_string(peek.id, "id")?;
        let status = required_string(peek.status, "status")?;
        for (key, value, max) in [("id", &id, MAX_ID), ("status", &status, MAX_STATUS)] {
            if value.len() > max {
                return Err(BodyError::TooLong(key, max));
            }
            // A line break or NUL here would change how every message shows
            // the job (mail carries none), so such a body is refused.
            if value.chars().any(char::is_control) {
                return Err(BodyError::ControlCharacter(key));
            }
        }
        let status = Status::parse(&status);
        let model = match peek.model {
            Some(Value::String(m)) => Some(m),
            _ => None,
        };
        let kind = kind_hint.unwrap_or_else(|| {
            training_kind(
                peek.urls.unwrap_or_default(),
                peek.output.unwrap_or_default(),
            )
        });
        let envelope = Self {
            id,
            status,
            model,
            kind,
        };
        Ok((envelope, Value::Object(kept)))
    }

    /// [`Envelope::read`] for a body already parsed.
    pub fn from_value(value: &Value, kind_hint: Option<Kind>) -> Result<Self, BodyError> {
        let obj = value.as_object().ok_or(BodyError::NotObject)?;
        let id = required_string(obj.get("id").cloned(), "id")?;
        let status = Status::parse(&required_string(obj.get("status").cloned(), "status")?);
        let model = obj.get("model").and_then(Value::as_str).map(str::to_owned);
        let kind = kind_hint.unwrap_or_else(|| detect_kind(obj));
        Ok(Self {
            id,
            status,
            model,
            kind,
        })
    }
}

fn required_string(value: Option<Value>, key: &'static str) -> Result<String, BodyError> {
    match value {
        None | Some(Value::Null) => Err(BodyError::Missing(key)),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(BodyError::NotString(key)),
    }
}

/// The fields the intake reads; all others are skipped without allocating.
#[derive(Default)]
struct Peek {
    id: Option<Value>,
    status: Option<Value>,
    model: Option<Value>,
    urls: Option<UrlsShape>,
    output: Option<OutputShape>,
}

/// An object key, borrowed from the body when it has no escapes: the intake
/// reads every top-level key of every webhook, and most are skipped.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// Reads a body into [`Peek`], plus the top-level fields in `.0` kept whole.
struct PeekSeed<'k>(&'k BTreeSet<String>);

impl<'de> serde::de::DeserializeSeed<'de> for PeekSeed<'_> {
    type Value = (Peek, Map<String, Value>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PeekSeed<'_> {
    type Value = (Peek, Map<String, Value>);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let (mut peek, mut kept) = (Peek::default(), Map::new());
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let key = key.as_ref();
            let slot = match key {
                "id" => Some(&mut peek.id),
                "status" => Some(&mut peek.status),
                "model" => Some(&mut peek.model),
                _ => None,
            };
            // A repeated field would make it ambiguous which one was meant.
            let repeated = match &slot {
                Some(slot) => slot.is_some(),
                None if key == "urls" => peek.urls.is_some(),
                None => key == "output" && peek.output.is_some(),
            };
            if repeated {
                return Err(A::Error::custom(format_args!("duplicate field `{key}`")));
            }
            if self.0.contains(key) {
                let value = map.next_value_seed(Tolerant::FIELD)?;
                match slot {
                    Some(slot) => *slot = Some(value.clone()),
                    None if key == "urls" => peek.urls = Some(ShapeOf::of(Some(&value))),
                    None if key == "output" => peek.output = Some(ShapeOf::of(Some(&value))),
                    None => {}
                }
                kept.insert(key.to_owned(), value);
            } else {
                match slot {
                    Some(slot) => *slot = Some(map.next_value_seed(Tolerant::FIELD)?),
                    None if key == "urls" => peek.urls = Some(map.next_value_seed(ShapeOf::new())?),
                    None if key == "output" => {
                        peek.output = Some(map.next_value_seed(ShapeOf::new())?)
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
        }
        Ok((peek, kept))
    }
}

/// A value of which only an object's entries matter: [`ShapeOf`] reads any
/// JSON value, hands each entry of an object to `entry`, skips lists, and
/// gives the default for anything else.
trait Shape: Default {
    fn entry<'de, A: serde::de::MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<(), A::Error>;
}

/// Reads a [`Shape`], from the body as it streams by or from a value already
/// read whole: one definition for both, so they cannot disagree.
struct ShapeOf<T>(std::marker::PhantomData<T>);

impl<T: Shape> ShapeOf<T> {
    fn new() -> Self {
        Self(std::marker::PhantomData)
    }

    /// The shape of a field already read whole (kept for routing, or in a
    /// stored body); a missing field has the default shape.
    fn of(value: Option<&Value>) -> T {
        use serde::de::DeserializeSeed;
        value.map_or_else(T::default, |v| {
            Self::new().deserialize(v).unwrap_or_default()
        })
    }
}

impl<'de, T: Shape> serde::de::DeserializeSeed<'de> for ShapeOf<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Shape> serde::de::Visitor<'de> for ShapeOf<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut shape = T::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            shape.entry(&key, &mut map)?;
        }
        Ok(shape)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::default())
    }
    fn visit_bool<E>(self, _: bool) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::default())
    }
}

/// Whether `urls.get` names a training (`.../trainings/...`); the other URLs
/// are skipped. Like a JSON object read whole, a repeated `get` counts last.
#[derive(Default)]
struct UrlsShape {
    training: bool,
}

impl Shape for UrlsShape {
    fn entry<'de, A: serde::de::MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<(), A::Error> {
        if key == "get" {
            // `urls` is a field of the body, so `get` is at depth 3.
            let value = map.next_value_seed(Tolerant::at(3))?;
            self.training = value.as_str().is_some_and(|u| u.contains("/trainings/"));
        } else {
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Whether `output` looks like a training's `{version, weights}`; its contents
/// (often long lists) are skipped.
#[derive(Default)]
struct OutputShape {
    version: bool,
    weights: bool,
}

impl Shape for OutputShape {
    fn entry<'de, A: serde::de::MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<(), A::Error> {
        match key {
            "version" => self.version = true,
            "weights" => self.weights = true,
            _ => {}
        }
        map.next_value::<IgnoredAny>()?;
        Ok(())
    }
}

fn training_kind(urls: UrlsShape, output: OutputShape) -> Kind {
    if urls.training || (output.version && output.weights) {
        Kind::Training
    } else {
        Kind::Prediction
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

/// Decides the kind from the body when the webhook URL did not say: `urls.get`
/// pointing at `/trainings/`, or an `output` shaped `{version, weights}`, mean a
/// training; anything else is a prediction.
pub fn detect_kind(obj: &Map<String, Value>) -> Kind {
    training_kind(ShapeOf::of(obj.get("urls")), ShapeOf::of(obj.get("output")))
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
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// The name lists agree with the enums they name.
    #[test]
    fn known_names_parse_to_their_own_variants() {
        for name in Status::KNOWN {
            let status = Status::parse(name);
            assert!(!matches!(status, Status::Other(_)), "{name}");
            assert_eq!(status.as_str(), name);
        }
        for name in Kind::NAMES {
            assert_eq!(name.parse::<Kind>().unwrap().as_str(), name);
        }
    }

    #[test]
    fn kind_detection_table() {
        let cases = [
            (json!({}), Kind::Prediction),
            (
                json!({"urls": {"get": "https://api.replicate.com/v1/trainings/x"}}),
                Kind::Training,
            ),
            (
                json!({"urls": {"get": "https://api.replicate.com/v1/predictions/x"}}),
                Kind::Prediction,
            ),
            (
                json!({"output": {"version": "a/b:c", "weights": "https://x/w.tar"}}),
                Kind::Training,
            ),
            (json!({"output": {"version": "a/b:c"}}), Kind::Prediction),
            (json!({"output": ["https://x/out.png"]}), Kind::Prediction),
            (json!({"urls": null, "output": null}), Kind::Prediction),
            (json!({"urls": {"get": 7}}), Kind::Prediction),
            (json!({"urls": ["/trainings/"]}), Kind::Prediction),
            (json!({"urls": "/trainings/"}), Kind::Prediction),
            (
                json!({"urls": {"cancel": "https://api.replicate.com/v1/trainings/x/cancel",
                                "get": "https://api.replicate.com/v1/predictions/x"}}),
                Kind::Prediction,
            ),
            (
                json!({"urls": {"web": "https://replicate.com/p/x",
                                "get": "https://api.replicate.com/v1/trainings/x",
                                "stream": "https://stream/x"}}),
                Kind::Training,
            ),
        ];
        let urls_kept: BTreeSet<String> = ["urls".to_owned()].into();
        for (body, want) in cases {
            assert_eq!(detect_kind(&obj(body.clone())), want, "body {body}");
            // The intake's streaming reader decides the same way, whether
            // routes keep `urls` whole or not.
            let mut full = body.clone();
            full["id"] = json!("x");
            full["status"] = json!("succeeded");
            let bytes = serde_json::to_vec(&full).unwrap();
            assert_eq!(
                Envelope::read(&bytes, None).unwrap().kind,
                want,
                "read {body}"
            );
            let (envelope, _) = Envelope::read_keeping(&bytes, None, &urls_kept).unwrap();
            assert_eq!(envelope.kind, want, "read keeping urls {body}");
        }
        // What `json!` cannot write: escapes, and a repeated `get` (the last
        // counts, as when the object is read whole).
        for (bytes, want) in [
            (
                &br#"{"id":"x","status":"failed","urls":{"get":"https:\/\/a\/v1\/trainings\/x"}}"#[..],
                Kind::Training,
            ),
            (
                br#"{"id":"x","status":"failed","urls":{"get":"/trainings/","get":"/predictions/"}}"#,
                Kind::Prediction,
            ),
            (
                br#"{"id":"x","status":"failed","urls":{"get":"/predictions/","g\u0065t":"/trainings/"}}"#,
                Kind::Training,
            ),
        ] {
            let whole: Value = serde_json::from_slice(bytes).unwrap();
            assert_eq!(detect_kind(whole.as_object().unwrap()), want);
            assert_eq!(Envelope::read(bytes, None).unwrap().kind, want);
            let (envelope, _) = Envelope::read_keeping(bytes, None, &urls_kept).unwrap();
            assert_eq!(envelope.kind, want);
        }
    }

    #[test]
    fn the_envelope_pass_keeps_the_fields_routes_need() {
        let keys: BTreeSet<String> = ["metrics", "output", "status"].map(String::from).into();
        let body = br#"{"id":"t1","status":"succeeded","input":{"big":[1,2,3]},
            "output":{"version":"v","weights":"w"},"metrics":{"predict_time":3.5}}"#;
        let (envelope, kept) = Envelope::read_keeping(body, None, &keys).unwrap();
        assert_eq!(envelope.id, "t1");
        assert_eq!(envelope.status, Status::Succeeded);
        assert_eq!(
            envelope.kind,
            Kind::Training,
            "output kept whole still shapes the kind"
        );
        assert_eq!(
            kept,
            json!({"status": "succeeded", "output": {"version": "v", "weights": "w"},
                   "metrics": {"predict_time": 3.5}})
        );
        // The same as reading the stored body for routing later.
        let later = Event::for_routing(body, "", Kind::Training, Status::Succeeded, &keys).unwrap();
        assert_eq!(later.payload, kept);
        // A repeated field is refused, kept or not.
        for dup in [
            &br#"{"id":"a","status":"failed","id":"b"}"#[..],
            br#"{"id":"a","status":"failed","output":1,"output":2}"#,
            br#"{"id":"a","status":"failed","status":"succeeded"}"#,
            br#"{"id":"a","status":"failed","urls":{},"urls":null}"#,
        ] {
            let err = Envelope::read_keeping(dup, None, &keys).unwrap_err();
            assert!(err.to_string().contains("duplicate field"), "{err}");
        }
    }

    #[test]
    fn envelope_table() {
        let ok = |id: &str, status: Status, kind: Kind| {
            Ok(Envelope {
                id: id.into(),
                status,
                model: None,
                kind,
            })
        };
        let cases: Vec<(&str, Option<Kind>, Result<Envelope, BodyError>)> = vec![
            (
                r#"{"id":"a","status":"failed"}"#,
                None,
                ok("a", Status::Failed, Kind::Prediction),
            ),
            (
                r#"{"id":"a","status":"failed"}"#,
                Some(Kind::Training),
                ok("a", Status::Failed, Kind::Training),
            ),
            (
                r#"{"id":"a","status":"queued"}"#,
                None,
                ok("a", Status::Other("queued".into()), Kind::Prediction),
            ),
            (r#"[1,2]"#, None, Err(BodyError::NotObject)),
            (r#""text""#, None, Err(BodyError::NotObject)),
            (
                r#"{"status":"failed"}"#,
                None,
                Err(BodyError::Missing("id")),
            ),
            (
                r#"{"id":null,"status":"failed"}"#,
                None,
                Err(BodyError::Missing("id")),
            ),
            (r#"{"id":"a"}"#, None, Err(BodyError::Missing("status"))),
            (
                r#"{"id":7,"status":"failed"}"#,
                None,
                Err(BodyError::NotString("id")),
            ),
            (
                r#"{"id":"","status":"failed"}"#,
                None,
                Err(BodyError::NotString("id")),
            ),
            (
                r#"{"id":"a","status":["failed"]}"#,
                None,
                Err(BodyError::NotString("status")),
            ),
            // What serde_json's decoder refuses is read, not refused.
            (
                r#"{"id":"a\udc00","status":"failed","logs":"\ud800","input":1e400}"#,
                None,
                ok("a\u{fffd}", Status::Failed, Kind::Prediction),
            ),
            (
                r#"{"\udc00":1,"id":"a","status":"failed"}"#,
                None,
                ok("a", Status::Failed, Kind::Prediction),
            ),
        ];
        let long_id = format!(r#"{{"id":"{}","status":"failed"}}"#, "a".repeat(MAX_ID + 1));
        let long_status = format!(r#"{{"id":"a","status":"{}"}}"#, "s".repeat(MAX_STATUS + 1));
        let longest = format!(
            r#"{{"id":"{}","status":"{}"}}"#,
            "a".repeat(MAX_ID),
            "s".repeat(MAX_STATUS)
        );
        let mut cases = cases
            .into_iter()
            .map(|(b, h, w)| (b.to_owned(), h, w))
            .collect::<Vec<_>>();
        cases.push((long_id, None, Err(BodyError::TooLong("id", MAX_ID))));
        cases.push((
            r#"{"id":"a","status":"abo\rted"}"#.to_owned(),
            None,
            Err(BodyError::ControlCharacter("status")),
        ));
        cases.push((
            r#"{"id":"p\u0000","status":"failed"}"#.to_owned(),
            None,
            Err(BodyError::ControlCharacter("id")),
        ));
        cases.push((
            long_status,
            None,
            Err(BodyError::TooLong("status", MAX_STATUS)),
        ));
        cases.push((
            longest,
            None,
            ok(
                &"a".repeat(MAX_ID),
                Status::Other("s".repeat(MAX_STATUS)),
                Kind::Prediction,
            ),
        ));
        for (body, hint, want) in cases {
            assert_eq!(Envelope::read(body.as_bytes(), hint), want, "body {body}");
        }
        // A deep `urls.get` is read too (and names no training).
        let deep_get = format!(
            r#"{{"id":"a","status":"failed","urls":{{"get":{}{}}}}}"#,
            "[".repeat(300),
            "]".repeat(300)
        );
        assert_eq!(
            Envelope::read(deep_get.as_bytes(), None),
            ok("a", Status::Failed, Kind::Prediction)
        );
        assert!(matches!(
            Envelope::read(b"{not json", None),
            Err(BodyError::NotJson(_))
        ));
        assert!(matches!(
            Envelope::read(b"\xff\xfe", None),
            Err(BodyError::NotJson(_))
        ));
    }

    #[test]
    fn a_body_that_is_not_utf8_is_refused_wherever_the_bad_byte_is() {
        let keys: BTreeSet<String> = ["input".to_owned()].into();
        // (body, accepted): what the intake accepts, the delivery's full read
        // must read too, or an acknowledged alert is lost at delivery.
        let cases: [(&[u8], bool); 8] = [
            (
                b"{\"id\":\"a\",\"status\":\"failed\",\"logs\":\"caf\xc3\xa9 \xf0\x9f\x94\xa5\"}",
                true,
            ),
            (
                b"{\"id\":\"a\",\"status\":\"failed\",\"logs\":\"\xff\"}",
                false,
            ),
            (
                b"{\"id\":\"a\",\"status\":\"failed\",\"logs\":[\"ok\",\"\xc3\"]}",
                false,
            ),
            (
                b"{\"id\":\"a\",\"status\":\"failed\",\"input\":{\"p\":\"\xed\xa0\x80\"}}",
                false,
            ),
            (b"{\"id\":\"a\",\"status\":\"failed\",\"\xfe\":1}", false),
            (b"{\"id\":\"a\xff\",\"status\":\"failed\"}", false),
            (b"[\"\xff\"]", false),
            (b"{\"id\":\"a\",\"status\":\"failed\"}\n\xff", false),
        ];
        for (body, accepted) in cases {
            let shown = String::from_utf8_lossy(body);
            let read = Envelope::read_keeping(body, None, &keys);
            assert_eq!(read.is_ok(), accepted, "{shown}: {read:?}");
            if accepted {
                assert!(Event::from_body(body, "").is_ok(), "{shown}: read whole");
            }
            if let Err(e) = read {
                assert!(
                    e.to_string().contains("invalid UTF-8 at byte"),
                    "{shown}: {e}"
                );
            }
        }
    }

    /// What an earlier build stored (it did not check the strings it
    /// skipped) is still read for delivery, the bad bytes as U+FFFD.
    #[test]
    fn a_stored_body_with_bytes_not_utf8_still_reads_for_delivery() {
        let stored = b"{\"id\":\"p1\",\"status\":\"failed\",\"logs\":\"loss \xff\xfe 0.3\"}";
        let event = Event::from_body(stored, "").unwrap();
        assert_eq!(event.status, Status::Failed);
        assert_eq!(event.payload["logs"], "loss \u{fffd}\u{fffd} 0.3");
        assert_eq!(event.job().common().id, "p1");
        // Not JSON for other reasons: still an error.
        assert!(Event::from_body(b"{\"id\":\xff}", "").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let body = "[".repeat(100_000);
        assert!(matches!(
            Envelope::read(body.as_bytes(), None),
            Err(BodyError::NotJson(_))
        ));
    }

    #[test]
    fn wrong_types_in_optional_fields_are_tolerated() {
        let body = br#"{"id":"a","status":"succeeded","model":5,"logs":{"x":1},
            "metrics":"fast","started_at":"not a time","completed_at":null,
            "urls":{"get":7,"web":"https://replicate.com/p/a"},"data_removed":"no"}"#;
        let Job::Prediction(p) = Job::parse(Kind::Prediction, body).unwrap() else {
            panic!("kind")
        };
        assert_eq!(p.common.model, None);
        assert_eq!(p.common.logs, None);
        assert!(p.common.metrics.is_none());
        assert!(p.common.started_at.is_none());
        let urls = p.common.urls.unwrap();
        assert_eq!(urls.get, None);
        assert_eq!(urls.web.as_deref(), Some("https://replicate.com/p/a"));
        assert_eq!(p.data_removed, None);
    }

    #[test]
    fn timestamps_with_any_fraction_length() {
        for (text, nanos) in [
            ("2026-11-20T14:03:11.482915Z", 482_915_000),
            ("2026-11-20T14:03:11.482915123Z", 482_915_123),
            ("2026-11-20T14:03:11.4829151Z", 482_915_100),
            ("2026-11-20T14:03:11Z", 0),
            ("2026-11-20T16:03:11.5+02:00", 500_000_000),
        ] {
            let ts: Timestamp = serde_json::from_value(json!(text)).unwrap();
            assert_eq!(ts.0.nanosecond(), nanos, "{text}");
        }
    }

    #[test]
    fn kind_hint_table() {
        for (query, want) in [
            ("", None),
            ("kind=training", Some(Kind::Training)),
            ("team=vision&kind=prediction", Some(Kind::Prediction)),
            ("kind=trainings", None),
            ("kind=%74raining", Some(Kind::Training)),
        ] {
            assert_eq!(kind_hint(&parse_query(query)), want, "{query}");
        }
    }

    #[test]
    fn status_is_terminal() {
        for (s, terminal) in [
            ("starting", false),
            ("processing", false),
            ("succeeded", true),
            ("failed", true),
            ("canceled", true),
            ("aborted", true),
            ("queued", false),
        ] {
            assert_eq!(Status::parse(s).is_terminal(), terminal, "{s}");
            assert_eq!(Status::parse(s).as_str(), s);
        }
    }
}
