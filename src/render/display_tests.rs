//! Table tests of the display-text rule and each target's neutralising.

use super::*;

#[test]
fn what_any_reader_sees() {
    for (text, shown) in [
        (
            "\u{1b}[31mRuntimeError\u{1b}[0m: CUDA",
            "RuntimeError: CUDA",
        ),
        ("nul\u{0}byte", "nulbyte"),
        ("two\nlines\ttab", "two\nlines\ttab"),
        ("Tom & Jerry <3", "Tom & Jerry <3"),
    ] {
        assert_eq!(display(text), shown, "{text:?}");
    }
    assert_eq!(one_line(" a \n\u{1b}[1mb\u{1b}[0m\r\n c "), "a b c");
}

#[test]
fn file_names_are_decoded() {
    for (url, name) in [
        ("https://replicate.delivery/x/out-0.webp", "out-0.webp"),
        ("https://x/a/file%20name.txt?sig=1#f", "file name.txt"),
        ("https://x/a/%E6%BC%A2%F0%9F%99%82.png", "漢🙂.png"),
        ("https://x/a/bad%FF.bin", "bad\u{FFFD}.bin"),
        ("https://x/a/line%0Abreak%1B%5B31m.txt", "line break.txt"),
        ("https://x/dir/", "dir"),
    ] {
        assert_eq!(file_name(url), name, "{url}");
    }
}

#[test]
fn urls_as_a_parser_writes_them() {
    for (text, url) in [
        (
            "https://replicate.delivery/a/<b> \"c\".png",
            Some("https://replicate.delivery/a/%3Cb%3E%20%22c%22.png"),
        ),
        ("HTTPS://Example.COM/x", Some("https://example.com/x")),
        (
            "https://[::1]:8080/a[b]{c}|d^e`f?q=[1]|2#x]",
            Some("https://[::1]:8080/a%5Bb%5D%7Bc%7D%7Cd%5Ee%60f?q=%5B1%5D%7C2#x%5D"),
        ),
        (" https://x.example/a ", Some("https://x.example/a")),
        ("javascript:alert(1)", None),
        ("data:text/plain,x", None),
        ("not a url", None),
    ] {
        assert_eq!(web_url(text).as_deref(), url, "{text}");
        if let Some(url) = url {
            assert_eq!(url::Url::parse(url).unwrap().as_str(), url, "stable");
        }
    }
}

#[test]
fn slack_entities_round_trip() {
    let text = "Tom & Jerry <3 &lt;";
    assert_eq!(escape_mrkdwn(text), "Tom &amp; Jerry &lt;3 &amp;lt;");
    assert_eq!(decode_entities(&escape_mrkdwn(text)), text);
    assert_eq!(
        unmention("<!channel> <@U1> a<b"),
        "<\u{200B}!channel> <\u{200B}@U1> a<b"
    );
}

#[test]
fn discord_link_text_cannot_format() {
    for (text, shown) in [
        ("out-0.webp", "out-0.webp"),
        ("out_0_final.png", "out_0_final.png"),
        ("__init__.py", "＿＿init＿＿.py"),
        (
            "**bold** `code` ~~gone~~ ||spoiler||",
            "∗∗bold∗∗ ˋcodeˋ ∼∼gone∼∼ ∣∣spoiler∣∣",
        ),
        ("a](https://evil.example) [b", "a)(https://evil.example) (b"),
        ("two\nlines", "two lines"),
    ] {
        assert_eq!(link_text(text), shown, "{text}");
    }
}

#[test]
fn discord_links_no_part_can_break_out_of() {
    for (text, url, want) in [
        (
            "out-0.webp",
            "https://replicate.delivery/x/out-0.webp",
            "[out-0.webp](https://replicate.delivery/x/out-0.webp)",
        ),
        // The URL closes the link and opens one of its own.
        (
            "out.txt",
            "https://x.example/out.txt) · [Sign in again](https://evil.example/login",
            "[out.txt](https://x.example/out.txt%29%20%C2%B7%20%5BSign%20in%20again%5D%28https://evil.example/login)",
        ),
        (
            "a](https://evil.example) [b",
            "https://x.example/f",
            "[a)(https://evil.example) (b](https://x.example/f)",
        ),
        ("x*", "javascript:alert(1)", "x\\*"),
        (
            "long",
            &format!("https://x.example/{}", "a".repeat(2_100)),
            "long",
        ),
        (
            "two\nlines",
            "https://x.example/a_b*c~d|e<f",
            "[two lines](https://x.example/a%5Fb%2Ac%7Ed%7Ce%3Cf)",
        ),
    ] {
        assert_eq!(markdown_link(text, url), want, "{text} {url}");
    }
}

#[test]
fn teams_facts_show_commonmark_as_written() {
    for (text, shown) in [
        ("num_inference_steps", "num_inference_steps"),
        ("[a](https://evil.example)", "\\[a\\](https://evil.example)"),
        ("**bold** _it_", "\\*\\*bold\\*\\* \\_it\\_"),
        ("- item", "\\- item"),
        ("12. twelve", "12\\. twelve"),
        ("# big", "\\# big"),
        ("3.5", "3.5"),
        ("-1", "-1"),
        ("#hashtag", "#hashtag"),
        ("a - b", "a - b"),
        ("\u{1b}[31mred\u{1b}[0m", "red"),
        ("a\\*b", "a\\\\\\*b"),
        ("x.*", "x.\\*"),
    ] {
        assert_eq!(escape_commonmark(text), shown, "{text}");
        assert_eq!(unescape_commonmark(shown), display(text), "{shown}");
    }
}
