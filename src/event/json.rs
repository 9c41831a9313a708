//! The one reader of webhook JSON, so that what the intake accepts, delivery
//! can read.
//!
//! What counts as JSON is decided by serde_json's grammar (RFC 8259),
//! everywhere. But serde_json's *decoder* refuses three things its grammar
//! accepts, and a job can legitimately carry each of them:
//!
//! - a lone UTF-16 surrogate escape (`"\udc00"`), which Python's encoder
//!   writes for text decoded with `surrogateescape` — model logs have them;
//! - a number beyond an `f64` (`1e400`, a 400-digit integer) in a user input;
//! - nesting deeper than its recursion limit (128) in an input or output.
//!
//! The intake skips the fields it does not route on without decoding them, so
//! it used to acknowledge such bodies that delivery then could not read: an
//! alert lost behind a 2xx. Here every value is read by [`Tolerant`], with the
//! same depth limit wherever it reads, and [`tolerantly`] re-reads a text the
//! decoder refused from its [`normalise`]d form, in which exactly those
//! constructs are replaced: a lone surrogate by U+FFFD, an out-of-range
//! number by a string of its digits. Anything nested deeper than
//! [`MAX_DEPTH`] reads as the [`TOO_DEEP`] marker, so a message shows the
//! field as unreadable instead of losing the notification.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// How deep values are read: the body itself is depth 1, its fields depth 2.
/// Well inside serde_json's limit of 128, so that limit is never what stops
/// a read, and shallow enough that rendering a value never nests far.
pub const MAX_DEPTH: usize = 64;

/// What a value nested deeper than [`MAX_DEPTH`] reads as.
pub const TOO_DEEP: &str = "[not shown: nested more than 64 levels deep]";

/// Reads a whole body: an error only when `text` is not JSON.
pub fn read(text: &str) -> Result<Value, serde_json::Error> {
    tolerantly(text, |text| {
        let mut de = serde_json::Deserializer::from_str(text);
        let value = Tolerant::TOP.deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    })
}

/// Runs `read` over `text`, and when it fails, once more over the normalised
/// text, if normalising changes anything. `read` must take its values with
/// [`Tolerant`] (or skip them), so that depth never fails it either.
pub fn tolerantly<T>(
    text: &str,
    read: impl Fn(&str) -> Result<T, serde_json::Error>,
) -> Result<T, serde_json::Error> {
    match read(text) {
        Ok(value) => Ok(value),
        Err(first) => match normalise(text) {
            Some(fixed) => read(&fixed),
            None => Err(first),
        },
    }
}

/// A JSON value read with the limits above; `depth` is that of the value
/// about to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tolerant {
    depth: usize,
}

impl Tolerant {
    /// A whole body.
    pub const TOP: Tolerant = Tolerant { depth: 1 };
    /// A field of the body.
    pub const FIELD: Tolerant = Tolerant { depth: 2 };

    /// A value at `depth`.
    pub const fn at(depth: usize) -> Self {
        Tolerant { depth }
    }

    fn child(self) -> Self {
        Tolerant {
            depth: self.depth + 1,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Tolerant {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.depth > MAX_DEPTH {
            // serde_json skips a value without recursing, however deep.
            d.deserialize_ignored_any(IgnoredAny)?;
            return Ok(Value::String(TOO_DEEP.to_owned()));
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tolerant {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(self.child())? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self.child())?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// `text` with what serde_json's grammar accepts but its decoder refuses
/// replaced: each lone surrogate escape by `\ufffd` (the same length, so
/// positions keep), each number the decoder refuses by a string of its
/// digits. `None` when there is nothing to replace. Meant for text that
/// passed the grammar; anything else comes out as broken as it went in.
pub fn normalise(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0; // bytes of `text` already in `out`
    let mut changed = false;
    let mut replace = |from: usize, to: usize, with: &str, out: &mut String| {
        out.push_str(&text[copied..from]);
        out.push_str(with);
        copied = to;
        changed = true;
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() {
                    match b[i] {
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\\' if b.get(i + 1) == Some(&b'u') => {
                            // The decoder's rule: a high surrogate must be
                            // followed at once by `\u` and a low one; any
                            // other surrogate is lone.
                            match hex4(b, i + 2) {
                                Some(0xD800..=0xDBFF)
                                    if b.get(i + 6) == Some(&b'\\')
                                        && b.get(i + 7) == Some(&b'u')
                                        && matches!(hex4(b, i + 8), Some(0xDC00..=0xDFFF)) =>
                                {
                                    i += 12
                                }
                                Some(0xD800..=0xDFFF) => {
                                    replace(i, i + 6, "\\ufffd", &mut out);
                                    i += 6;
                                }
                                _ => i += 6,
                            }
                        }
                        b'\\' => i += 2,
                        _ => i += 1,
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let token = &text[start..i];
                // Whatever serde_json's own number reading refuses, nothing
                // else: a number it reads must read the same either way.
                if serde_json::from_str::<IgnoredAny>(token).is_ok()
                    && serde_json::from_str::<Value>(token).is_err()
                {
                    replace(start, i, &format!("\"{token}\""), &mut out);
                }
            }
            _ => i += 1,
        }
    }
    if !changed {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

/// The four hex digits at `at`, as a number.
fn hex4(b: &[u8], at: usize) -> Option<u16> {
    let digits = std::str::from_utf8(b.get(at..at + 4)?).ok()?;
    if !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
