//! Talking back to Replicate: its HTTP API, with the account's token.
//! [`client`] is the one client every caller goes through (`fetch-secret`
//! today; creating the next stage of a pipeline and catching up on
//! webhooks that never came build on it): bearer token, a base URL that
//! tests point at a stand-in, every request bounded in time and size,
//! `Retry-After` honoured, pages followed on Replicate's own host only.

pub mod catch_up;
pub mod client;

pub use client::{Api, ApiError};

/// Where Replicate's API is.
pub const API_URL: &str = "https://api.replicate.com/";

/// `ms` as Replicate writes times: RFC 3339 in UTC, microseconds.
pub fn rfc3339(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000000Z".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_written_as_replicate_writes_them() {
        assert_eq!(
            super::rfc3339(1_796_294_415_123),
            "2026-12-03T10:40:15.123000Z"
        );
    }
}
