//! The table of hostile requests and the answer each must get.

use super::*;

/// What the daemon must do with a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Expect {
    Status(u16),
    /// Close the connection within the read timeout (plus slack), without a
    /// success: a stalled request must not hold a connection.
    ClosedSoon,
}

/// How the body is sent.
#[derive(Debug, Clone)]
pub(super) enum Body {
    /// With a Content-Length.
    Plain(Vec<u8>),
    /// Chunked, no Content-Length.
    Chunked(Vec<u8>),
    /// Declares `len` bytes, then sends a few every 300 ms.
    Trickle { len: usize },
    /// Stops in the middle of the headers.
    StallHeaders,
    /// Declares `len` bytes and sends none: only an answer that needs no
    /// body can come back before the read timeout.
    Declared { len: usize },
}

pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) method: &'static str,
    pub(super) path: String,
    pub(super) headers: Vec<(String, Vec<u8>)>,
    pub(super) body: Body,
    pub(super) expect: Expect,
}

fn sig_headers(id: &str, ts: i64, body: &[u8], secret: &str) -> Vec<(String, Vec<u8>)> {
    vec![
        ("webhook-id".into(), id.as_bytes().to_vec()),
        ("webhook-timestamp".into(), ts.to_string().into_bytes()),
        (
            "webhook-signature".into(),
            Secret::parse(secret)
                .unwrap()
                .sign(id, ts, body)
                .into_bytes(),
        ),
    ]
}

/// A POST to the hook, signed correctly over `body`.
fn signed_case(name: &'static str, id: &str, body: Vec<u8>, expect: u16) -> Case {
    Case {
        name,
        method: "POST",
        path: "/hooks/replicate".into(),
        headers: sig_headers(id, now(), &body, SECRET),
        body: Body::Plain(body),
        expect: Expect::Status(expect),
    }
}

/// A POST of a valid event with the signature headers changed by `f`.
fn header_case(name: &'static str, expect: u16, f: impl Fn(&mut Vec<(String, Vec<u8>)>)) -> Case {
    let body = payload(&format!("p_{name}"), "succeeded");
    let mut headers = sig_headers(
        &format!("msg_{}", name.replace(' ', "_")),
        now(),
        &body,
        SECRET,
    );
    f(&mut headers);
    Case {
        name,
        method: "POST",
        path: "/hooks/replicate".into(),
        headers,
        body: Body::Plain(body),
        expect: Expect::Status(expect),
    }
}

fn set(headers: &mut [(String, Vec<u8>)], name: &str, value: &[u8]) {
    headers.iter_mut().find(|(k, _)| k == name).unwrap().1 = value.to_vec();
}

pub(super) fn cases() -> Vec<Case> {
    let now = now();
    let valid = |id: &str| payload(&format!("p_{id}"), "succeeded");
    let with_field = |id: &str, key: &str, value: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_slice(&valid(id)).unwrap();
        v[key] = value;
        serde_json::to_vec(&v).unwrap()
    };
    let hostile = "<!channel> <script>alert(1)</script>\r\nBcc: x@evil.test\u{0000}";
    let mut cases = vec![
        // Signature headers.
        header_case("no signature headers", 401, |h| h.clear()),
        header_case("no webhook-id", 401, |h| {
            h.retain(|(k, _)| k != "webhook-id")
        }),
        header_case("no webhook-timestamp", 401, |h| {
            h.retain(|(k, _)| k != "webhook-timestamp")
        }),
        header_case("no webhook-signature", 401, |h| {
            h.retain(|(k, _)| k != "webhook-signature")
        }),
        header_case("empty webhook-id", 401, |h| set(h, "webhook-id", b"")),
        header_case("duplicated webhook-signature", 401, |h| {
            let s = h[2].clone();
            h.push(s)
        }),
        header_case("duplicated webhook-id", 401, |h| {
            let s = h[0].clone();
            h.push(s)
        }),
        header_case("duplicated webhook-timestamp", 401, |h| {
            let s = h[1].clone();
            h.push(s)
        }),
        header_case("signature v1 empty", 401, |h| {
            set(h, "webhook-signature", b"v1,")
        }),
        header_case("signature not base64", 401, |h| {
            set(h, "webhook-signature", b"v1,!!!*")
        }),
        header_case("signature other scheme only", 401, |h| {
            set(h, "webhook-signature", b"v1a,c2lnbmF0dXJl")
        }),
        header_case("signature of another body", 401, |h| {
            let other = Secret::parse(SECRET).unwrap().sign("msg_x", now, b"{}");
            set(h, "webhook-signature", other.as_bytes())
        }),
        header_case("signature with another secret", 401, |h| {
            let other = Secret::parse("whsec_YW5vdGhlci1zZWNyZXQ=")
                .unwrap()
                .sign("msg_x", now, b"{}");
            set(h, "webhook-signature", other.as_bytes())
        }),
        header_case("stale timestamp", 401, |h| {
            set(h, "webhook-timestamp", (now - 600).to_string().as_bytes())
        }),
        header_case("future timestamp", 401, |h| {
            set(h, "webhook-timestamp", (now + 600).to_string().as_bytes())
        }),
        header_case("timestamp not a number", 401, |h| {
            set(h, "webhook-timestamp", b"noon")
        }),
        header_case("timestamp overflowing", 401, |h| {
            set(h, "webhook-timestamp", b"99999999999999999999999")
        }),
        header_case("timestamp negative", 401, |h| {
            set(h, "webhook-timestamp", b"-5")
        }),
        // Past the 64 KiB a request head may take.
        header_case("100 KB of signature entries", 431, |h| {
            set(h, "webhook-signature", "v1,AAAA ".repeat(12_000).as_bytes())
        }),
        header_case("40 KB of signature entries", 401, |h| {
            set(h, "webhook-signature", "v1,AAAA ".repeat(5_000).as_bytes())
        }),
        header_case("timestamp at i64's lowest", 401, |h| {
            set(h, "webhook-timestamp", i64::MIN.to_string().as_bytes())
        }),
        header_case("timestamp at i64's highest", 401, |h| {
            set(h, "webhook-timestamp", i64::MAX.to_string().as_bytes())
        }),
        header_case("nine signature entries, one good", 401, |h| {
            let good = String::from_utf8(h[2].1.clone()).unwrap();
            let nine = format!("{}{good}", format!("v1,{}= ", "A".repeat(43)).repeat(8));
            set(h, "webhook-signature", nine.as_bytes())
        }),
        header_case("webhook-id of 300 bytes", 401, |h| {
            set(h, "webhook-id", "m".repeat(300).as_bytes())
        }),
        header_case("webhook-id not UTF-8", 401, |h| {
            set(h, "webhook-id", b"msg_\xff\xfe")
        }),
        // Bodies that are not events (correctly signed).
        signed_case("invalid JSON", "msg_h1", b"{\"id\": ".to_vec(), 400),
        signed_case("empty body", "msg_h2", Vec::new(), 400),
        signed_case("JSON array", "msg_h3", b"[1,2,3]".to_vec(), 400),
        signed_case("JSON string", "msg_h4", b"\"prediction\"".to_vec(), 400),
        signed_case("JSON number", "msg_h5", b"42".to_vec(), 400),
        signed_case("JSON null", "msg_h6", b"null".to_vec(), 400),
        signed_case(
            "100k nested arrays",
            "msg_h7",
            "[".repeat(100_000).into_bytes(),
            400,
        ),
        signed_case(
            "200 nested objects",
            "msg_h8",
            ("{\"a\":".repeat(200) + "1" + &"}".repeat(200)).into_bytes(),
            400,
        ),
        signed_case(
            "body not UTF-8",
            "msg_h9",
            b"{\"id\":\"\xff\xfe\",\"status\":\"failed\"}".to_vec(),
            400,
        ),
        // serde_json does not check the strings it skips: this one was
        // acknowledged, then refused by the full read at delivery.
        signed_case(
            "not UTF-8 in a field the intake skips",
            "msg_h9b",
            [
                br#"{"logs":"loss 0.3 "#.as_slice(),
                b"\xff\xfe",
                br#"","#,
                &valid("h9b")[1..],
            ]
            .concat(),
            400,
        ),
        signed_case(
            "byte order mark",
            "msg_h10",
            [b"\xef\xbb\xbf".as_slice(), &valid("h10")].concat(),
            400,
        ),
        signed_case(
            "id is a number",
            "msg_h11",
            br#"{"id":1,"status":"failed"}"#.to_vec(),
            400,
        ),
        signed_case("no id", "msg_h12", br#"{"status":"failed"}"#.to_vec(), 400),
        signed_case("no status", "msg_h13", br#"{"id":"p"}"#.to_vec(), 400),
        signed_case(
            "status is a number",
            "msg_h14",
            br#"{"id":"p","status":3}"#.to_vec(),
            400,
        ),
        signed_case(
            "id is null",
            "msg_h15",
            br#"{"id":null,"status":"failed"}"#.to_vec(),
            400,
        ),
        signed_case(
            "trailing garbage",
            "msg_h16",
            [valid("h16").as_slice(), b"}}"].concat(),
            400,
        ),
        // Odd but genuine events are kept.
        signed_case(
            "wrong types in optional fields",
            "msg_h17",
            with_field("h17", "metrics", serde_json::json!("fast")),
            200,
        ),
        signed_case(
            "logs is an object",
            "msg_h18",
            with_field("h18", "logs", serde_json::json!({"x": 1})),
            200,
        ),
        signed_case(
            "10 MB prompt",
            "msg_h19",
            with_field(
                "h19",
                "input",
                serde_json::json!({"prompt": "x".repeat(10_000_000)}),
            ),
            200,
        ),
        signed_case(
            "mention, HTML and CRLF in input",
            "msg_h20",
            with_field("h20", "input", serde_json::json!({"prompt": hostile})),
            200,
        ),
        signed_case(
            "unknown status",
            "msg_h21",
            with_field("h21", "status", serde_json::json!("queued")),
            200,
        ),
        signed_case(
            "unicode everywhere",
            "msg_h22",
            with_field("h22", "model", serde_json::json!("ünï/cødé-🚀")),
            200,
        ),
        signed_case(
            "unknown fields",
            "msg_h23",
            with_field(
                "h23",
                "brand_new_field",
                serde_json::json!({"deep": [1, 2]}),
            ),
            200,
        ),
        signed_case("kind hint in the query", "msg_h24", valid("h24"), 200),
    ];
    // Sizes and timing.
    let big = vec![b' '; 11 * 1024 * 1024];
    cases.push(Case {
        name: "declared 11 MiB",
        method: "POST",
        path: "/hooks/replicate".into(),
        headers: sig_headers("msg_big1", now, &big, SECRET),
        body: Body::Plain(big.clone()),
        expect: Expect::Status(413),
    });
    cases.push(Case {
        name: "chunked 11 MiB",
        method: "POST",
        path: "/hooks/replicate".into(),
        headers: sig_headers("msg_big2", now, &big, SECRET),
        body: Body::Chunked(big),
        expect: Expect::Status(413),
    });
    cases.push(Case {
        name: "slow body",
        method: "POST",
        path: "/hooks/replicate".into(),
        headers: sig_headers("msg_slow", now, b"", SECRET),
        body: Body::Trickle { len: 4096 },
        expect: Expect::Status(408),
    });
    // Refused from the headers alone: the answer comes before the read
    // timeout, though the body never does.
    for (name, headers) in [
        ("no signature, 9 MiB declared and never sent", vec![]),
        (
            "stale timestamp, 9 MiB declared and never sent",
            sig_headers("msg_stale_declared", now - 3600, b"", SECRET),
        ),
    ] {
        cases.push(Case {
            name,
            method: "POST",
            path: "/hooks/replicate".into(),
            headers,
            body: Body::Declared {
                len: 9 * 1024 * 1024,
            },
            expect: Expect::Status(401),
        });
    }
    cases.push(Case {
        name: "slow headers",
        method: "POST",
        path: "/hooks/replicate".into(),
        headers: vec![],
        body: Body::StallHeaders,
        expect: Expect::ClosedSoon,
    });
    // Methods and paths.
    for (name, method, path, status) in [
        ("GET on the hook", "GET", "/hooks/replicate", 405),
        ("PUT on the hook", "PUT", "/hooks/replicate", 405),
        ("POST elsewhere", "POST", "/hooks/replicat", 404),
        ("path traversal", "GET", "/hooks/../../etc/passwd", 404),
    ] {
        cases.push(Case {
            name,
            method,
            path: path.into(),
            headers: vec![],
            body: Body::Plain(Vec::new()),
            expect: Expect::Status(status),
        });
    }
    let last = cases
        .iter_mut()
        .find(|c| c.name == "kind hint in the query")
        .unwrap();
    last.path = "/hooks/replicate?kind=training&team=%E2%9C%93".into();
    cases
}
