//! The rule "a 2xx means delivered", as a check over one body, and a generator
//! of bodies that lean on it. Shared by the property test (`tests/it/accepted.rs`)
//! and the fuzz target (`fuzz/fuzz_targets/accepted.rs`), which include this
//! file by path.
//!
//! For any body the intake accepts, delivery reads it as the same job (id,
//! status, kind, and the fields kept for routing), and every notifier kind
//! renders a message — the shipped template or the built-in fallback — that
//! names the job's id and its status.
#![allow(dead_code)] // each includer uses a different part

use std::path::Path;

use replicate_relay::config::{self, Config};
use replicate_relay::event::{Envelope, Event, Status};
use replicate_relay::notify;
use replicate_relay::notify::mail::EmailMessage;
use replicate_relay::render::{Message, Rendered, Templates};
use replicate_relay::route;

/// A config and its compiled templates.
pub struct Compiled {
    pub config: Config,
    pub templates: Templates,
}

/// One notifier of every kind, and routes that keep fields for routing, in a
/// config under `dir` that reads the shipped templates from `templates`.
pub fn config(dir: &Path, templates: &Path) -> Compiled {
    let file = dir.join("relay.toml");
    std::fs::write(
        &file,
        format!("[templates]\ndir = {:?}\n", templates.display().to_string())
            + r##"
[server]
listen = "127.0.0.1:0"
[verify]
secret = "whsec_dGVzdC1zZWNyZXQtZm9yLXJlbGF5LXRlc3Rz"
[store]
path = "relay.db"
[notifiers.mail]
type = "email"
smtp = "smtp://127.0.0.1:2525"
tls = "none"
from = "relay@example.org"
to = ["ml@example.org"]
[notifiers.chat]
type = "slack"
token = "xoxb-0000-test"
channel = "#ml"
[notifiers.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"
[notifiers.summary]
type = "webhook"
url = "http://127.0.0.1:9/summary"
template = "summary"
[notifiers.console]
type = "log"
[notifiers.phone]
type = "ntfy"
url = "http://127.0.0.1:9/ml-alerts"
[notifiers.channel]
type = "discord"
webhook_url = "http://127.0.0.1:9/api/webhooks/1/t"
[notifiers.oncall]
type = "pagerduty"
routing_key = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY00"
url = "http://127.0.0.1:9/v2/enqueue"
[notifiers.team]
type = "teams"
webhook_url = "http://127.0.0.1:9/workflows/x"
[[routes]]
name = "prompted"
when = { "input.prompt" = { exists = true }, "metrics.predict_time" = { gt = 1 } }
notify = ["mail"]
continue = true
[[routes]]
name = "everything"
when = { status = ["starting", "processing", "succeeded", "failed", "canceled", "aborted"] }
notify = ["mail", "chat", "hook", "summary", "console", "phone", "channel", "oncall", "team"]
"##,
    )
    .unwrap();
    let config = config::load_with_env(&file, []).unwrap_or_else(|e| panic!("{e}"));
    let templates = replicate_relay::live::templates(&config).unwrap_or_else(|e| panic!("{e}"));
    Compiled { config, templates }
}

/// Checks the rule for `body`: `Ok(false)` when the intake refuses it,
/// `Ok(true)` when it accepts it and the rule holds, `Err` saying how it broke.
pub fn check(compiled: &Compiled, body: &[u8], query: &str) -> Result<bool, String> {
    let config = &compiled.config;
    let keys = route::payload_keys(&config.routes);
    let pairs = replicate_relay::event::parse_query(query);
    let hint = replicate_relay::event::kind_hint(&pairs);
    let Ok((envelope, kept)) = Envelope::read_keeping(body, hint, &keys) else {
        return Ok(false);
    };
    let event = Event::from_body(body, query)
        .map_err(|e| format!("accepted, but delivery cannot read it: {e}"))?;
    let (id, status) = (envelope.id.as_str(), envelope.status.as_str());
    if event.job().common().id != id
        || event.status != envelope.status
        || event.kind != envelope.kind
    {
        return Err(format!(
            "delivery reads {}/{}/{} where the intake read {id}/{status}/{}",
            event.job().common().id,
            event.status,
            event.kind,
            envelope.kind
        ));
    }
    let later = Event::for_routing(body, query, envelope.kind, envelope.status.clone(), &keys)
        .map_err(|e| format!("accepted, but routing from the store cannot read it: {e}"))?;
    if later.payload != kept {
        return Err(format!(
            "the fields kept at intake {kept} differ from a later read {}",
            later.payload
        ));
    }
    for notifier in config.notifiers.values() {
        let message = notify::message(
            &compiled.templates,
            notifier,
            "everything",
            &event,
            body,
            None,
        );
        names(message.as_ref(), id, status)
            .map_err(|why| format!("notifier `{}`: {why}", notifier.name))?;
    }
    Ok(true)
}

/// Whether `message` names `id` and `status`, read as its receiver reads it.
fn names(message: &dyn Message, id: &str, status: &str) -> Result<(), String> {
    if let Some(email) = message.as_any().downcast_ref::<Rendered<EmailMessage>>()
        && email.message.subject.contains(['\r', '\n'])
    {
        return Err(format!(
            "a line break in the subject {:?}",
            email.message.subject
        ));
    }
    let shown = message.seen_text();
    for (what, value) in [("id", id), ("status", status)] {
        if !shown.contains(value) {
            let start: String = shown.chars().take(400).collect();
            return Err(format!("the {what} {value:?} is not in {start:?}"));
        }
    }
    Ok(())
}

/// A small, seedable generator (splitmix64): enough for bodies, no crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Timestamps and durations at the edges of what `time` and `f64` hold, as
/// fields of a job from the API (whose files expire an hour after it ends).
pub const EDGE_TIMES: &[(&str, &str)] = &[
    (
        "ended at the last instant of year 9999",
        r#""source":"api","created_at":"9999-12-31T23:59:58Z","started_at":"9999-12-31T23:59:59Z","completed_at":"9999-12-31T23:59:59.999999999Z""#,
    ),
    (
        "ended in year 9999 west of UTC, so after it in UTC",
        r#""source":"api","completed_at":"9999-12-31T23:00:00-23:59""#,
    ),
    (
        "began at year 0 east of UTC, so before it in UTC",
        r#""source":"api","created_at":"0000-01-01T00:00:00+23:59","started_at":"0000-01-01T00:00:00Z","completed_at":"9999-12-31T23:59:59Z""#,
    ),
    (
        "ended before it began",
        r#""created_at":"2026-11-20T14:05:00Z","started_at":"2026-11-20T14:04:00Z","completed_at":"2026-11-20T14:03:00Z""#,
    ),
    (
        "an offset past any zone",
        r#""source":"api","completed_at":"2026-11-20T14:03:00+99:99""#,
    ),
    (
        "a leap second",
        r#""source":"api","completed_at":"2016-12-31T23:59:60Z""#,
    ),
    (
        "run time at f64's largest",
        r#""metrics":{"predict_time":1.7976931348623157e308,"total_time":1.7976931348623157e308}"#,
    ),
    (
        "run time past f64",
        r#""metrics":{"predict_time":1e400,"total_time":-1e400}"#,
    ),
    (
        "negative run time, total smaller than run",
        r#""metrics":{"predict_time":-5,"total_time":-10}"#,
    ),
    (
        "run time of centuries, queue of a denormal",
        r#""metrics":{"predict_time":9.2e18,"total_time":9.2e18},"created_at":"2026-11-20T14:03:00Z","started_at":"2026-11-20T14:03:00.000000001Z""#,
    ),
    (
        "run time under a nanosecond",
        r#""metrics":{"predict_time":5e-324,"total_time":1e-300}"#,
    ),
];

/// Pieces of JSON string text (already escaped) that readers disagree on or
/// that markup cares about.
const STRING_PIECES: &[&str] = &[
    "step 1000/1000 loss=0.1842",
    r"\udc00",
    r"\ud800",
    r"\ud83d\ude00",
    r"\ud800\ud800",
    r"\u0000",
    r"\u001b[31mred\u001b[0m",
    r"\n",
    r"\r\n",
    r"\t",
    r#"\""#,
    r"\\",
    r"\/",
    "é漢🙂",
    "*bold* _it_ ~s~ ```",
    "<!channel> & <b>",
    "{{title}}",
    "Bcc: x@example.org",
    "https://replicate.delivery/x/out.png",
];

/// A JSON string literal built from pieces.
pub fn string(rng: &mut Rng) -> String {
    let mut s = String::from("\"");
    for _ in 0..rng.below(6) {
        s.push_str(rng.pick(STRING_PIECES));
    }
    s.push('"');
    s
}

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-17",
    "3.5",
    "1e3",
    "1E-9",
    "1e400",
    "-1e400",
    "1e-400",
    "18446744073709551616",
    "1.7976931348623157e308",
    "1.8e308",
    "123456789012345678901234567890",
    "9.2e18",
    "5e-324",
    "-5",
];

/// Timestamps Replicate writes, and those at the edges of what a date type
/// holds: year 9999 west of UTC, year 0 east of it, a leap second, an
/// offset past any zone, and text that is no date at all.
const TIMES: &[&str] = &[
    "\"2026-11-20T14:03:11.482915Z\"",
    "\"2026-11-20T14:05:11Z\"",
    "\"9999-12-31T23:59:59.999999999Z\"",
    "\"9999-12-31T23:00:00-23:59\"",
    "\"0000-01-01T00:00:00+23:59\"",
    "\"0000-01-01T00:00:00Z\"",
    "\"2016-12-31T23:59:60Z\"",
    "\"2026-11-20T14:03:00+99:99\"",
    "\"yesterday\"",
    "\"\\udc00\"",
    "7",
    "null",
];

/// Any JSON value of at most `depth` levels (sometimes far more).
pub fn value(rng: &mut Rng, depth: usize) -> String {
    let deep = rng.one_in(40);
    match rng.below(if depth == 0 { 4 } else { 7 }) {
        0 => string(rng),
        1 => rng.pick(NUMBERS).to_owned(),
        2 => rng.pick(&["true", "false", "null"]).to_owned(),
        3 if deep => {
            let levels = 60 + rng.below(200);
            format!(
                "{}{}{}",
                "[".repeat(levels),
                value(rng, 0),
                "]".repeat(levels)
            )
        }
        3 => string(rng),
        4 | 5 => {
            let items: Vec<String> = (0..rng.below(4)).map(|_| value(rng, depth - 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let items: Vec<String> = (0..rng.below(4))
                .map(|_| format!("{}:{}", string(rng), value(rng, depth - 1)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

/// A webhook body: mostly the shape Replicate sends, with hostile values in
/// every field, and now and then broken on purpose.
pub fn body(rng: &mut Rng) -> String {
    let id = match rng.below(4) {
        0 => r"p\u00e9-&<b>".to_owned(),
        1 => r"x\ud83d\ude00y".to_owned(),
        _ => format!("{:026x}", rng.next()),
    };
    let training = rng.one_in(2);
    let mut fields = vec![
        format!("\"id\":\"{id}\""),
        // Every status Replicate sends, and one it may add.
        format!(
            "\"status\":\"{}\"",
            if rng.one_in(7) {
                "queued"
            } else {
                rng.pick(&Status::KNOWN)
            }
        ),
    ];
    let optional: Vec<(&str, String)> = vec![
        ("model", string(rng)),
        ("version", string(rng)),
        (
            "input",
            format!("{{\"prompt\":{},\"extra\":{}}}", string(rng), value(rng, 4)),
        ),
        (
            "output",
            if training {
                "{\"version\":\"acme/neon:abc\",\"weights\":\"https://x/w.tar\"}".to_owned()
            } else {
                value(rng, 4)
            },
        ),
        ("logs", string(rng)),
        ("error", value(rng, 2)),
        (
            "metrics",
            format!(
                "{{\"predict_time\":{},\"total_time\":{}}}",
                rng.pick(NUMBERS),
                value(rng, 1)
            ),
        ),
        (
            "urls",
            format!(
                "{{\"get\":\"https://api.replicate.com/v1/{}/x\",\"web\":{}}}",
                if training { "trainings" } else { "predictions" },
                value(rng, 1)
            ),
        ),
        ("created_at", rng.pick(TIMES).to_owned()),
        (
            "started_at",
            if rng.one_in(4) {
                value(rng, 1)
            } else {
                rng.pick(TIMES).to_owned()
            },
        ),
        ("completed_at", rng.pick(TIMES).to_owned()),
        // Jobs from the API have files that expire an hour after the end.
        ("source", rng.pick(&["\"api\"", "\"web\"", "3"]).to_owned()),
        ("destination", string(rng)),
        ("deployment", string(rng)),
        ("data_removed", value(rng, 0)),
        (r"\udc00odd key", value(rng, 2)),
    ];
    for (key, v) in optional {
        if rng.below(4) != 0 {
            fields.push(format!("\"{key}\":{v}"));
        }
    }
    // Shuffle, so `id` and `status` are not always first.
    for i in (1..fields.len()).rev() {
        fields.swap(i, rng.below(i + 1));
    }
    let mut text = format!("{{{}}}", fields.join(","));
    if rng.one_in(20) {
        // Broken on purpose: the intake must refuse it, not crash.
        let at = rng.below(text.len());
        if text.is_char_boundary(at) {
            text.insert(
                at,
                rng.pick(&["\"", "}", ",", "\\", "x"])
                    .chars()
                    .next()
                    .unwrap(),
            );
        }
    }
    text
}
