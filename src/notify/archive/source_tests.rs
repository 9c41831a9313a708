use super::*;
use serde_json::json;

#[test]
fn every_url_in_the_output_at_any_depth_once_in_order() {
    let job = json!({
        "id": "p1",
        "urls": {"get": "https://api.replicate.com/v1/predictions/p1"},
        "output": {
            "images": ["https://replicate.delivery/a/1.png", "https://replicate.delivery/a/2.png"],
            "nested": {"deep": [[{"x": "https://replicate.delivery/a/3.bin"}]]},
            "again": "https://replicate.delivery/a/1.png",
            "text": "not a url",
            "plain": "http://example.com/x",
            "count": 3,
            "weird/key~": "https://replicate.delivery/a/4"
        }
    });
    let found = urls(&job, true);
    let got: Vec<(&str, &str)> = found
        .iter()
        .map(|n| (n.url.as_str(), n.at.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            // Keys in sorted order (as serde_json keeps them), arrays in theirs.
            ("https://replicate.delivery/a/1.png", "/output/again"),
            ("https://replicate.delivery/a/2.png", "/output/images/1"),
            (
                "https://replicate.delivery/a/3.bin",
                "/output/nested/deep/0/0/x"
            ),
            ("http://example.com/x", "/output/plain"),
            ("https://replicate.delivery/a/4", "/output/weird~1key~0"),
        ]
    );
}

#[test]
fn a_trainings_weights_are_left_out_when_asked() {
    let job = json!({"output": {"version": "v", "weights": "https://replicate.delivery/w.tar"}});
    assert_eq!(urls(&job, true).len(), 1);
    assert!(urls(&job, false).is_empty());
    // Only the training's own `weights`, not a key of that name deeper down.
    let deeper = json!({"output": {"files": {"weights": "https://replicate.delivery/x"}}});
    assert_eq!(urls(&deeper, false).len(), 1);
}

#[test]
fn outputs_that_name_nothing() {
    for job in [
        json!({}),
        json!({"output": null}),
        json!({"output": "just text"}),
        json!({"output": ["https://", "https://:443/x", "ftp://x/y", "mailto:a@b.c"]}),
    ] {
        assert!(urls(&job, true).is_empty(), "{job}");
    }
    let one = json!({"output": "https://replicate.delivery/x.png"});
    assert_eq!(urls(&one, true)[0].at, "/output");
}

#[test]
fn a_hostile_output_is_bounded() {
    let many: Vec<String> = (0..5_000)
        .map(|i| format!("https://replicate.delivery/{i}"))
        .collect();
    assert_eq!(urls(&json!({"output": many}), true).len(), MAX_URLS);
    let long = format!("https://replicate.delivery/{}", "a".repeat(MAX_URL_LEN));
    assert!(urls(&json!({"output": [long]}), true).is_empty());
    // Nested as deep as serde_json parses a body (128 levels).
    let deep = format!(
        "{{\"output\":{}\"https://replicate.delivery/deep\"{}}}",
        "[".repeat(126),
        "]".repeat(126)
    );
    let deep: serde_json::Value = serde_json::from_str(&deep).unwrap();
    assert_eq!(urls(&deep, true)[0].at.matches('/').count(), 127);
}

#[test]
fn only_https_on_replicates_hosts_or_listed_ones() {
    let listed = vec!["files.internal.example".to_owned()];
    for (url, want) in [
        ("https://replicate.delivery/a.png", Ok(Trust::Replicate)),
        (
            "https://pbxt.replicate.delivery/a.png",
            Ok(Trust::Replicate),
        ),
        (
            "https://PBXT.Replicate.Delivery./a.png",
            Ok(Trust::Replicate),
        ),
        ("https://files.internal.example/a", Ok(Trust::Listed)),
        ("https://FILES.internal.example./a", Ok(Trust::Listed)),
        ("http://replicate.delivery/a.png", Err("https")),
        ("ftp://replicate.delivery/a.png", Err("https")),
        (
            "https://evilreplicate.delivery/a",
            Err("not one of Replicate's"),
        ),
        (
            "https://replicate.delivery.evil.com/a",
            Err("not one of Replicate's"),
        ),
        ("https://127.0.0.1/a", Err("not one of Replicate's")),
        ("https://[::1]/a", Err("not one of Replicate's")),
        (
            "https://user@replicate.delivery.attacker.io/",
            Err("not one of Replicate's"),
        ),
        ("not a url", Err("https")),
    ] {
        let got = allowed(url, &listed);
        match want {
            Ok(trust) => assert_eq!(got, Ok(trust), "{url}"),
            Err(words) => {
                let e = got.expect_err(url).to_string();
                assert!(e.contains(words), "{url}: {e}");
            }
        }
    }
}

#[test]
fn public_addresses_only() {
    for (ip, public) in [
        ("8.8.8.8", true),
        ("34.117.59.81", true),
        ("2606:4700::6810:84e5", true),
        ("127.0.0.1", false),
        ("10.1.2.3", false),
        ("172.16.0.1", false),
        ("192.168.1.1", false),
        ("169.254.169.254", false),
        ("100.64.0.1", false),
        ("100.127.255.255", false),
        ("100.128.0.1", true),
        ("0.0.0.0", false),
        ("0.1.2.3", false),
        ("255.255.255.255", false),
        ("224.0.0.1", false),
        ("192.0.2.1", false),
        ("198.18.0.1", false),
        ("240.0.0.1", false),
        ("192.0.0.8", false),
        ("::1", false),
        ("::", false),
        ("fc00::1", false),
        ("fd12:3456::1", false),
        ("fe80::1", false),
        ("ff02::1", false),
        ("2001:db8::1", false),
        ("::ffff:127.0.0.1", false),
        ("::ffff:8.8.8.8", true),
        ("64:ff9b::a00:1", false),
        ("64:ff9b::808:808", true),
        ("::127.0.0.1", false),
    ] {
        let addr: IpAddr = ip.parse().unwrap();
        assert_eq!(is_public(addr), public, "{ip}");
    }
    let host = "x.replicate.delivery";
    assert!(public(host, &["8.8.8.8".parse().unwrap()]).is_ok());
    let mixed = ["8.8.8.8".parse().unwrap(), "10.0.0.1".parse().unwrap()];
    let e = public(host, &mixed).unwrap_err().to_string();
    assert!(
        e.contains("10.0.0.1") && e.contains("not a public address"),
        "{e}"
    );
}
