//! When a delivery's attempts began, for kinds whose sends cost money and
//! cannot be deduplicated by their receiver (a Replicate prediction): each
//! attempt's start is written to the store before it sends, under
//! [`crate::store::BEGAN`] and the message's id, and the earlier ones are
//! handed to the attempt, which then looks for what an attempt cut short
//! may have made before it sends again.

use crate::notify::Began;
use crate::store::{BEGAN, Store, StoreError};

/// Records that an attempt of message `message_id` begins at `now_ms`;
/// returns when the earlier ones began, if any did. Nothing may be sent
/// unless this succeeded.
pub async fn record(
    store: &dyn Store,
    message_id: &str,
    now_ms: i64,
) -> Result<Option<Began>, StoreError> {
    let name = format!("{BEGAN}{message_id}");
    let earlier = store.load_state(&name).await?.and_then(|v| parse(&v));
    let first = earlier.map_or(now_ms, |e| e.first_ms);
    store
        .save_state(&name, format!("{first} {now_ms}"), now_ms)
        .await?;
    Ok(earlier)
}

/// `"<first> <last>"`, in milliseconds since the Unix epoch.
fn parse(value: &str) -> Option<Began> {
    let (first, last) = value.split_once(' ')?;
    Some(Began {
        first_ms: first.parse().ok()?,
        last_ms: last.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_anything_else_is_no_record() {
        let cases = [
            (
                "1000 2000",
                Some(Began {
                    first_ms: 1000,
                    last_ms: 2000,
                }),
            ),
            ("1000", None),
            ("", None),
            ("a b", None),
            ("1000 2000 3000", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse(value), want, "{value:?}");
        }
    }
}
