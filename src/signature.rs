//! Standard Webhooks (symmetric `v1`) signatures, exactly as Replicate signs its webhooks.
//!
//! Replicate sends `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature` (one or more space-separated `v1,<base64>` entries). The
//! signature is HMAC-SHA256 over `{id}.{timestamp}.{raw body}` keyed with the base64
//! bytes after `whsec_`. This module owns parsing secrets, checking a request, and
//! signing one (for tests, and for `send` later). It does no I/O; time comes from
//! an injectable [`Clock`] so the fixtures' old timestamps can be checked.

use crate::clock::Clock;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix Replicate (and Standard Webhooks) put before the base64 key.
const PREFIX: &str = "whsec_";

/// A webhook signing secret. Its `Debug` never shows the key, so it is safe to log
/// a config that holds one.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

/// Why a configured secret is unusable. Messages never contain the secret itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error(
        "does not start with `whsec_` (use the `key` that `GET /v1/webhooks/default/secret` returns)"
    )]
    MissingPrefix,
    #[error("the part after `whsec_` is not valid base64")]
    NotBase64,
    #[error("the key after `whsec_` is empty")]
    Empty,
}

impl Secret {
    /// Parses `whsec_<base64>`. Surrounding whitespace (a trailing newline in a
    /// credential file) is ignored.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let b64 = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = B64.decode(b64).map_err(|_| SecretError::NotBase64)?;
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self { key })
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    /// The `v1,<base64>` signature entry for this message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.mac();
        feed(&mut mac, id, &timestamp.to_string(), body);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(whsec_<redacted>)")
    }
}

fn feed(mac: &mut HmacSha256, id: &str, timestamp: &str, body: &[u8]) {
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
}

/// Why a request's signature was refused. Each variant becomes a 401 whose body
/// says which, so whoever set up the sender can fix it without guessing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header `{0}`")]
    MissingHeader(&'static str),
    #[error("header `{0}` appears more than once")]
    DuplicateHeader(&'static str),
    #[error("header `{0}` is not valid text")]
    UnreadableHeader(&'static str),
    #[error("`webhook-timestamp` is not a Unix time in seconds")]
    BadTimestamp,
    #[error(
        "timestamp is {0} s old, more than the tolerance allows (replayed request, or this host's clock is wrong)"
    )]
    Stale(i64),
    #[error("timestamp is {0} s in the future, more than the tolerance allows (check the clocks)")]
    Future(i64),
    #[error("`webhook-signature` holds no `v1,<base64>` entry of an HMAC-SHA256")]
    Malformed,
    #[error("`webhook-signature` holds {0} entries; at most {max} are read", max = MAX_ENTRIES)]
    TooManyEntries(usize),
    #[error("`webhook-id` is longer than {max} bytes", max = MAX_ID)]
    LongId,
    #[error("no signature matches any configured secret (wrong secret, or the body was changed)")]
    NoMatch,
}

/// The three signature headers of one request, as received.
#[derive(Debug, Clone, Copy)]
pub struct SignedHeaders<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

/// Checks requests against a set of secrets (several during a key rotation, or
/// for two Replicate accounts) within a timestamp tolerance.
#[derive(Clone)]
pub struct Verifier {
    secrets: Vec<Secret>,
    tolerance: Duration,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl Verifier {
    pub fn new(secrets: Vec<Secret>, tolerance: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            secrets,
            tolerance,
            clock,
        }
    }

    /// Accepts the request if its timestamp is within tolerance and any `v1` entry
    /// matches any secret. Comparisons are constant-time (`Mac::verify_slice`).
    pub fn verify(&self, headers: SignedHeaders<'_>, body: &[u8]) -> Result<(), VerifyError> {
        self.check_headers(headers)?.verify(self, body)
    }

    /// What can be checked before the body is read: the id's length, the
    /// timestamp's window and the signature entries' shape and number. A
    /// stranger without the secret is refused here, before sending a byte
    /// of body, and costs nothing more.
    pub fn check_headers<'a>(
        &self,
        headers: SignedHeaders<'a>,
    ) -> Result<CheckedHeaders<'a>, VerifyError> {
        if headers.id.len() > MAX_ID {
            return Err(VerifyError::LongId);
        }
        let ts: i64 = headers
            .timestamp
            .trim()
            .parse()
            .map_err(|_| VerifyError::BadTimestamp)?;
        let now = self.clock.now_unix();
        let tolerance = self.tolerance.as_secs().min(i64::MAX as u64) as i64;
        // Saturating: a timestamp at i64's edge is as stale (or as far
        // ahead) as it gets, not an overflow.
        let age = now.saturating_sub(ts);
        if age > tolerance {
            return Err(VerifyError::Stale(age));
        }
        if age < -tolerance {
            return Err(VerifyError::Future(age.saturating_neg()));
        }

        let entries: Vec<&str> = headers
            .signature
            .split(' ')
            .filter(|e| !e.is_empty())
            .collect();
        if entries.len() > MAX_ENTRIES {
            return Err(VerifyError::TooManyEntries(entries.len()));
        }
        // Entries we cannot decode are skipped, not fatal: a future `v1a,` entry
        // beside a good `v1,` one must still pass. An HMAC-SHA256 is 32 bytes,
        // so any other length cannot match.
        let candidates: Vec<[u8; 32]> = entries
            .iter()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|b64| B64.decode(b64).ok())
            .filter_map(|sig| <[u8; 32]>::try_from(sig.as_slice()).ok())
            .collect();
        if candidates.is_empty() {
            return Err(VerifyError::Malformed);
        }
        Ok(CheckedHeaders {
            headers,
            candidates,
        })
    }
}

/// The longest `webhook-id` accepted. Replicate's are about 30 characters;
/// the id is the dedup key, stored with every event.
pub const MAX_ID: usize = 256;

/// The most entries a `webhook-signature` may hold: one per active secret
/// of the sender, a handful during a rotation.
pub const MAX_ENTRIES: usize = 8;

/// Signature headers whose shape and timestamp passed, waiting for the body.
#[derive(Debug)]
pub struct CheckedHeaders<'a> {
    headers: SignedHeaders<'a>,
    candidates: Vec<[u8; 32]>,
}

impl<'a> CheckedHeaders<'a> {
    /// The `webhook-id` these headers carry.
    pub fn id(&self) -> &'a str {
        self.headers.id
    }

    /// Whether any entry is the signature of `body` under any of
    /// `verifier`'s secrets.
    pub fn verify(&self, verifier: &Verifier, body: &[u8]) -> Result<(), VerifyError> {
        for secret in &verifier.secrets {
            let mut mac = secret.mac();
            feed(&mut mac, self.headers.id, self.headers.timestamp, body);
            if self
                .candidates
                .iter()
                .any(|sig| mac.clone().verify_slice(sig).is_ok())
            {
                return Ok(());
            }
        }
        Err(VerifyError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const OTHER: &str = "whsec_c2VjcmV0LW51bWJlci10d28=";
    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"abc","status":"succeeded"}"#;

    fn verifier(secrets: &[&str]) -> Verifier {
        Verifier::new(
            secrets.iter().map(|s| Secret::parse(s).unwrap()).collect(),
            Duration::from_secs(300),
            Arc::new(FixedClock(NOW)),
        )
    }

    fn good_sig(ts: i64) -> String {
        Secret::parse(SECRET).unwrap().sign("msg_1", ts, BODY)
    }

    #[test]
    fn secret_parsing() {
        let cases: &[(&str, Result<(), SecretError>)] = &[
            (SECRET, Ok(())),
            ("  whsec_c2VjcmV0\n", Ok(())),
            ("c2VjcmV0", Err(SecretError::MissingPrefix)),
            ("whsec_not base64!", Err(SecretError::NotBase64)),
            ("whsec_", Err(SecretError::Empty)),
            ("", Err(SecretError::MissingPrefix)),
        ];
        for (text, want) in cases {
            assert_eq!(&Secret::parse(text).map(|_| ()), want, "input {text:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let shown = format!("{:?}", Secret::parse(SECRET).unwrap());
        assert!(!shown.contains("MfKQ9r8"), "{shown}");
    }

    #[test]
    fn verification_table() {
        let good = good_sig(NOW);
        let other_secret_sig = Secret::parse(OTHER).unwrap().sign("msg_1", NOW, BODY);
        let rotated = format!("v1,AAAAbm90LXRoZS1yaWdodC1vbmU= {good}");
        let with_future_scheme = format!("v1a,c29tZXRoaW5nZWxzZQ== {good}");
        let stale_ts = (NOW - 301).to_string();
        let stale_sig = good_sig(NOW - 301);
        let future_ts = (NOW + 301).to_string();
        let future_sig = good_sig(NOW + 301);
        let edge_ts = (NOW - 300).to_string();
        let edge_sig = good_sig(NOW - 300);
        let now = NOW.to_string();
        let (lowest, highest) = (i64::MIN.to_string(), i64::MAX.to_string());
        let eight = format!("{}{good}", "v1,AAAA ".repeat(7));
        let nine = format!("{}{good}", "v1,AAAA ".repeat(8));

        type Case<'a> = (&'a str, &'a str, &'a str, &'a [u8], Result<(), VerifyError>);
        let cases: Vec<Case> = vec![
            ("valid", &now, &good, BODY, Ok(())),
            ("second entry matches", &now, &rotated, BODY, Ok(())),
            (
                "unknown scheme beside v1",
                &now,
                &with_future_scheme,
                BODY,
                Ok(()),
            ),
            ("at the tolerance edge", &edge_ts, &edge_sig, BODY, Ok(())),
            (
                "changed body",
                &now,
                &good,
                br#"{"id":"abd","status":"succeeded"}"#,
                Err(VerifyError::NoMatch),
            ),
            (
                "other secret",
                &now,
                &other_secret_sig,
                BODY,
                Err(VerifyError::NoMatch),
            ),
            (
                "stale",
                &stale_ts,
                &stale_sig,
                BODY,
                Err(VerifyError::Stale(301)),
            ),
            (
                "future",
                &future_ts,
                &future_sig,
                BODY,
                Err(VerifyError::Future(301)),
            ),
            (
                "timestamp not a number",
                "yesterday",
                &good,
                BODY,
                Err(VerifyError::BadTimestamp),
            ),
            (
                "no v1 entry",
                &now,
                "v2,abc",
                BODY,
                Err(VerifyError::Malformed),
            ),
            (
                "v1 entry not base64",
                &now,
                "v1,***",
                BODY,
                Err(VerifyError::Malformed),
            ),
            ("empty header", &now, "", BODY, Err(VerifyError::Malformed)),
            (
                "v1 entry of the wrong length",
                &now,
                "v1,AAAA",
                BODY,
                Err(VerifyError::Malformed),
            ),
            (
                "timestamp at i64's lowest",
                &lowest,
                &good,
                BODY,
                Err(VerifyError::Stale(i64::MAX)),
            ),
            (
                "timestamp at i64's highest",
                &highest,
                &good,
                BODY,
                Err(VerifyError::Future(i64::MAX - NOW)),
            ),
            (
                "timestamp beyond i64",
                "99999999999999999999",
                &good,
                BODY,
                Err(VerifyError::BadTimestamp),
            ),
            (
                "nine entries",
                &now,
                &nine,
                BODY,
                Err(VerifyError::TooManyEntries(9)),
            ),
            ("eight entries, the last good", &now, &eight, BODY, Ok(())),
        ];
        let v = verifier(&[SECRET]);
        for (name, ts, sig, body, want) in cases {
            let headers = SignedHeaders {
                id: "msg_1",
                timestamp: ts,
                signature: sig,
            };
            assert_eq!(v.verify(headers, body), want, "case {name}");
        }
    }

    #[test]
    fn a_long_id_is_refused_before_anything_else() {
        let id = "m".repeat(MAX_ID + 1);
        let headers = SignedHeaders {
            id: &id,
            timestamp: "0",
            signature: "",
        };
        assert_eq!(
            verifier(&[SECRET]).check_headers(headers).unwrap_err(),
            VerifyError::LongId
        );
        let id = "m".repeat(MAX_ID);
        let sig = Secret::parse(SECRET).unwrap().sign(&id, NOW, BODY);
        let headers = SignedHeaders {
            id: &id,
            timestamp: &NOW.to_string(),
            signature: &sig,
        };
        assert_eq!(verifier(&[SECRET]).verify(headers, BODY), Ok(()));
    }

    #[test]
    fn any_configured_secret_may_match() {
        let sig = Secret::parse(OTHER).unwrap().sign("msg_1", NOW, BODY);
        let headers = SignedHeaders {
            id: "msg_1",
            timestamp: &NOW.to_string(),
            signature: &sig,
        };
        assert_eq!(
            verifier(&[SECRET]).verify(headers, BODY),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(verifier(&[SECRET, OTHER]).verify(headers, BODY), Ok(()));
    }

    #[test]
    fn the_id_is_part_of_the_signed_content() {
        let sig = good_sig(NOW);
        let headers = SignedHeaders {
            id: "msg_2",
            timestamp: &NOW.to_string(),
            signature: &sig,
        };
        assert_eq!(
            verifier(&[SECRET]).verify(headers, BODY),
            Err(VerifyError::NoMatch)
        );
    }
}
