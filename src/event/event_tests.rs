//! The event model's tables: statuses, kinds, lenient fields, the
//! envelope's checks and the fields kept for routing.

use std::collections::BTreeSet;

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
