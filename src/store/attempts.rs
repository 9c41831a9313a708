//! What each attempt at a delivery did, as the store keeps it for the
//! dashboard and `deliveries --attempts`: when it began, how long it took,
//! how it ended, the receiver's last status and the exchanges it had
//! (already cut by the dispatcher), and on the delivery the message as it
//! was last rendered. Attempts go with their delivery when retention
//! prunes it.

use super::Delivery;

/// What an attempt did, recorded with its outcome ([`super::Store::finish_logged`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptLog {
    /// Its number among the delivery's attempts (1 for the first).
    pub number: i64,
    pub started_ms: i64,
    pub duration_ms: i64,
    /// The receiver's last status: an HTTP status or an SMTP reply code.
    pub status: Option<i32>,
    /// What was asked and answered, as JSON.
    pub exchanges: String,
    /// The message as rendered, as JSON (`{"kind", "message"}`); kept on
    /// the delivery, the last attempt's replacing the one before.
    pub message: Option<String>,
}

/// A recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub number: i64,
    pub started_ms: i64,
    pub duration_ms: i64,
    /// `delivered`, `retry` or `dead`.
    pub outcome: String,
    pub error: Option<String>,
    pub status: Option<i32>,
    pub exchanges: String,
}

/// A delivery with every attempt recorded for it, oldest first.
#[derive(Debug, Clone)]
pub struct Attempts {
    pub delivery: Delivery,
    /// The message as it was last rendered (JSON), if an attempt rendered one.
    pub message: Option<String>,
    pub list: Vec<AttemptRecord>,
}

/// The name an outcome is stored under.
pub fn outcome_name(outcome: &super::Outcome) -> (&'static str, Option<&str>) {
    match outcome {
        super::Outcome::Delivered { .. } => ("delivered", None),
        super::Outcome::Retry { error, .. } => ("retry", Some(error)),
        super::Outcome::Dead { error } => ("dead", Some(error)),
    }
}
