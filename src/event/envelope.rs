//! The envelope: what the intake must know of a body before it answers (id,
//! status, model, kind, and the fields routing reads), read in one pass over
//! the text without building the rest. What makes a body unacceptable (400)
//! is decided here.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny};
use serde_json::{Map, Value};

use super::json::{self, Tolerant};
use super::{Kind, Status};

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

/// Decides the kind from the body when the webhook URL did not say: `urls.get`
/// pointing at `/trainings/`, or an `output` shaped `{version, weights}`, mean a
/// training; anything else is a prediction.
pub fn detect_kind(obj: &Map<String, Value>) -> Kind {
    training_kind(ShapeOf::of(obj.get("urls")), ShapeOf::of(obj.get("output")))
}
