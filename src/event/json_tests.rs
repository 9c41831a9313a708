//! Table tests for the one JSON reader.

use super::*;
use serde_json::json;

/// `[[[…[leaf]…]]]` with `levels` lists around `leaf`.
fn nested(levels: usize, leaf: &str) -> String {
    format!("{}{leaf}{}", "[".repeat(levels), "]".repeat(levels))
}

#[test]
fn normalise_replaces_exactly_what_the_decoder_refuses() {
    let cases: &[(&str, Option<&str>)] = &[
        // Lone surrogates, low and high, anywhere in a string or a key.
        (r#"{"logs":"a\udc00b"}"#, Some(r#"{"logs":"a\ufffdb"}"#)),
        (r#"{"logs":"\uD800"}"#, Some(r#"{"logs":"\ufffd"}"#)),
        (r#"{"\udfff":1}"#, Some(r#"{"\ufffd":1}"#)),
        // A high surrogate followed by something other than a low one.
        (r#"["\ud800x"]"#, Some(r#"["\ufffdx"]"#)),
        (r#"["\ud800\n"]"#, Some(r#"["\ufffd\n"]"#)),
        (
            r#"["\ud800\ud800\udc00"]"#,
            Some(r#"["\ufffd\ud800\udc00"]"#),
        ),
        (r#"["\udc00\ud800"]"#, Some(r#"["\ufffd\ufffd"]"#)),
        // A proper pair, an escaped backslash before `u`, plain escapes.
        (r#"["\ud83d\ude00"]"#, None),
        (r#"["\\udc00"]"#, None),
        (r#"["\"\udc00"]"#, Some(r#"["\"\ufffd"]"#)),
        (r#"["\u00e9\t"]"#, None),
        // Numbers beyond an f64, as strings of their digits.
        (r#"{"x":1e400}"#, Some(r#"{"x":"1e400"}"#)),
        (r#"[-1.5E+999, 2]"#, Some(r#"["-1.5E+999", 2]"#)),
        // Numbers it reads stay numbers, however long or small.
        (r#"[1e-400, 0.000001, -0, 18446744073709551616]"#, None),
        (r#"["1e400 in a string is text"]"#, None),
    ];
    for (text, want) in cases {
        assert_eq!(normalise(text).as_deref(), *want, "{text}");
        if let Some(fixed) = normalise(text) {
            assert!(
                serde_json::from_str::<Value>(&fixed).is_ok(),
                "{fixed} decodes"
            );
        }
    }
    let long = "9".repeat(400);
    assert_eq!(
        normalise(&format!("[{long}]")),
        Some(format!("[\"{long}\"]"))
    );
}

#[test]
fn read_decodes_what_serde_json_decodes_the_same_way() {
    for text in [
        r#"{"id":"p1","status":"failed","input":{"prompt":"x","n":[1,2.5,-3,true,null]}}"#,
        r#"{"a":{"b":{"c":{"d":"\ud83d\ude00"}}},"e":[],"f":{}}"#,
        r#"  {"dup":1,"dup":2}  "#,
        &format!("{{\"deep\":{}}}", nested(62, "1")),
    ] {
        let ours = read(text).unwrap();
        let theirs: Value = serde_json::from_str(text).unwrap();
        assert_eq!(ours, theirs, "{text}");
    }
}

#[test]
fn read_reads_what_serde_json_refuses_and_marks_what_it_cannot_show() {
    let deep = |levels| format!("{{\"input\":{}}}", nested(levels, "\"leaf\""));
    let cases: Vec<(String, Value)> = vec![
        (
            r#"{"logs":"step 1\udc00 done"}"#.into(),
            json!({"logs": "step 1\u{fffd} done"}),
        ),
        (
            r#"{"input":{"\udc80key":"\ud800"}}"#.into(),
            json!({"input": {"\u{fffd}key": "\u{fffd}"}}),
        ),
        (
            r#"{"input":{"seed":1e400}}"#.into(),
            json!({"input": {"seed": "1e400"}}),
        ),
        // The body is depth 1, `input` 2, so 63 lists put the leaf at 65.
        (
            deep(62),
            json!({"input": serde_json::from_str::<Value>(&nested(62, "\"leaf\"")).unwrap()}),
        ),
        (
            deep(63),
            json!({"input": serde_json::from_str::<Value>(&nested(63, &format!("{TOO_DEEP:?}"))).unwrap()}),
        ),
        (
            deep(100_000),
            json!({"input": serde_json::from_str::<Value>(&nested(63, &format!("{TOO_DEEP:?}"))).unwrap()}),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(
            read(&text).unwrap(),
            want,
            "{}",
            &text[..text.len().min(80)]
        );
    }
}

#[test]
fn what_is_not_json_stays_an_error() {
    for text in [
        "",
        "{",
        r#"{"a":}"#,
        r#"{"a":1,}"#,
        r#"{"a":"\x"}"#,
        r#"{"a":"\u12"}"#,
        "{\"a\":\"\u{1}\"}",
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":-}"#,
        r#"{"a":1e400,}"#,
        r#"{"a":"\udc00"} x"#,
        &format!("{}1{}", "[".repeat(200), "]".repeat(199)),
    ] {
        assert!(read(text).is_err(), "{text:?} is refused");
        // The grammar alone says the same.
        assert!(
            serde_json::from_str::<IgnoredAny>(text).is_err(),
            "{text:?}"
        );
    }
}

#[test]
fn tolerant_seed_reads_from_a_value_too() {
    // ShapeOf and the typed view read through a Value; the seed must too.
    let value = json!({"a": [1, {"b": null}], "c": "d"});
    assert_eq!(Tolerant::TOP.deserialize(&value).unwrap(), value);
    assert_eq!(
        Tolerant::at(MAX_DEPTH + 1).deserialize(&value).unwrap(),
        json!(TOO_DEEP)
    );
}
