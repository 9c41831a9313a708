//! What an attempt asked its receiver and what the receiver answered,
//! kept for the dashboard and `deliveries --attempts`: the code kinds
//! share to talk to a service ([`super::http`], the Slack and SMTP
//! clients, Replicate's API) records each exchange here, and the
//! dispatcher collects those of one attempt with [`capture`]. Outside
//! [`capture`] recording does nothing, so a preview or a test sending by
//! hand keeps nothing.
//!
//! Bounded whatever the receiver sends: at most [`KEPT`] exchanges an
//! attempt (the last ones; the number left out is counted) and
//! [`ANSWER_KEPT`] bytes of each answer.

use std::cell::RefCell;
use std::future::Future;

use serde::{Deserialize, Serialize};

/// One request and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// What was asked, secrets left out: "POST Discord at https://discord.com/api/webhooks/1/…".
    pub request: String,
    /// The answer's HTTP status or SMTP reply code; none when nothing
    /// answered (a timeout, a refused connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The start of the answer's body, or why there was none.
    #[serde(default)]
    pub answer: String,
}

/// The exchanges of one attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchanges {
    pub kept: Vec<Exchange>,
    /// How many earlier ones were left out to keep [`KEPT`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub left_out: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Exchanges {
    /// Exchanges as stored; none when they cannot be read.
    pub fn parse(stored: &str) -> Self {
        serde_json::from_str(stored).unwrap_or_default()
    }

    /// The last status any exchange got: the receiver's last word.
    pub fn last_status(&self) -> Option<u16> {
        self.kept.iter().rev().find_map(|e| e.status)
    }
}

/// Exchanges kept for one attempt (the last ones).
pub const KEPT: usize = 8;

/// Bytes of an answer kept (cut at a character boundary).
pub const ANSWER_KEPT: usize = 2048;

tokio::task_local! {
    static CURRENT: RefCell<Exchanges>;
}

/// Runs `f`, and returns with its output what it recorded.
pub async fn capture<F: Future>(f: F) -> (F::Output, Exchanges) {
    CURRENT
        .scope(RefCell::new(Exchanges::default()), async move {
            let out = f.await;
            let seen = CURRENT.with(|c| std::mem::take(&mut *c.borrow_mut()));
            (out, seen)
        })
        .await
}

/// Records one exchange for the attempt under way, if any.
pub fn record(request: impl FnOnce() -> String, status: Option<u16>, answer: &str) {
    let _ = CURRENT.try_with(|c| {
        let mut c = c.borrow_mut();
        if c.kept.len() == KEPT {
            c.kept.remove(0);
            c.left_out += 1;
        }
        c.kept.push(Exchange {
            request: request(),
            status,
            answer: cut(answer, ANSWER_KEPT),
        });
    });
}

/// `text` cut to at most `max` bytes at a character boundary, with "…"
/// when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_attempt_keeps_its_last_exchanges_each_cut() {
        let ((), seen) = capture(async {
            for i in 0..(KEPT + 3) {
                record(|| format!("POST {i}"), Some(200), &"é".repeat(ANSWER_KEPT));
            }
        })
        .await;
        assert_eq!(seen.kept.len(), KEPT);
        assert_eq!(seen.left_out, 3);
        assert_eq!(seen.kept[0].request, "POST 3");
        for e in &seen.kept {
            assert!(e.answer.len() <= ANSWER_KEPT, "{}", e.answer.len());
            assert!(e.answer.ends_with('…'));
        }
        assert_eq!(seen.last_status(), Some(200));
    }

    #[tokio::test]
    async fn outside_an_attempt_nothing_is_kept_and_attempts_do_not_mix() {
        record(|| "lost".into(), None, "");
        let (_, a) = capture(async { record(|| "a".into(), Some(500), "x") }).await;
        let (_, b) = capture(async { record(|| "b".into(), None, "timeout") }).await;
        assert_eq!(a.kept.len(), 1);
        assert_eq!(b.kept[0].request, "b");
        assert_eq!(b.last_status(), None);
    }

    #[test]
    fn cutting_keeps_short_text_and_character_boundaries() {
        assert_eq!(cut("short", 10), "short");
        let cut_text = cut("ééééé", 6);
        assert!(cut_text.len() <= 6 && cut_text.ends_with('…'), "{cut_text}");
    }
}
