//! Table tests of cutting at safe boundaries.

use super::*;

#[test]
fn measure_counts_utf16_units() {
    assert_eq!(measure("abc"), 3);
    assert_eq!(measure("é漢"), 2);
    assert_eq!(measure("🙂"), 2);
}

#[test]
fn plain_cuts_keep_whole_graphemes() {
    let family = "👨\u{200D}👩\u{200D}👧";
    for (text, max, want) in [
        ("abcdef", 6, "abcdef".to_owned()),
        ("abcdef", 4, "abc…".to_owned()),
        ("ééééé", 3, "éé…".to_owned()),
        ("e\u{301}e\u{301}e\u{301}", 4, "e\u{301}…".to_owned()),
        (&format!("a{family}b"), 9, "a…".to_owned()),
        (&format!("a{family}bc"), 10, format!("a{family}…")),
        ("🇫🇷🇫🇷", 5, "🇫🇷…".to_owned()),
        ("abc", 0, String::new()),
    ] {
        let got = cut(text, max);
        assert_eq!(got, want, "{text:?} {max}");
        assert!(measure(&got) <= max);
    }
}

#[test]
fn markdown_cuts_never_break_a_link() {
    let link = "[out-0.webp](https://replicate.delivery/a/out-0.webp)";
    let text = format!("see {link} now");
    for max in 1..text.len() {
        let got = cut_markdown(&text, max);
        assert!(measure(&got) <= max, "{max}: {got}");
        let whole = got.contains(link);
        let none = !got.contains("](");
        assert!(whole || none, "{max}: {got}");
    }
    // Where the link does not fit but its text does, the text stays.
    assert_eq!(cut_markdown(&text, 20), "see out-0.webp…");
}

#[test]
fn lists_of_links_lose_items_and_say_how_many() {
    let lines: Vec<String> = (0..10)
        .map(|i| format!("[out-{i}.png](https://replicate.delivery/a/out-{i}.png)"))
        .collect();
    let text = lines.join("\n");
    let got = cut_markdown(&text, 200);
    assert!(measure(&got) <= 200, "{got}");
    assert_eq!(
        got,
        format!("{}\n{}\n{}\n…and 7 more", lines[0], lines[1], lines[2])
    );
    // A list that already said how many it left out counts them too.
    let text = format!("{text}\n…and 40 more");
    assert_eq!(
        cut_markdown(&text, 200),
        format!("{}\n{}\n{}\n…and 47 more", lines[0], lines[1], lines[2])
    );
    // One link longer than the limit: its text, and the rest counted.
    let long = format!(
        "[big.png](https://x.example/{})\n{}",
        "a".repeat(300),
        lines[0]
    );
    assert_eq!(cut_markdown(&long, 100), "big.png…");
}

#[test]
fn code_blocks_cut_open_are_closed_and_escapes_kept_whole() {
    let text = format!("**Error**\n```\n{}\n```\nafter", "x".repeat(100));
    let got = cut_markdown(&text, 40);
    assert!(got.ends_with("…\n```"), "{got}");
    assert!(measure(&got) <= 40);
    assert_eq!(got.matches("```").count(), 2);
    // An escape is never split from what it escapes.
    let escaped = "\\*\\*\\*\\*\\*";
    for max in 1..escaped.len() {
        let got = cut_markdown(escaped, max);
        assert!(!got.trim_end_matches('…').ends_with('\\'), "{max}: {got}");
    }
    // An inline code span is kept whole or left out.
    assert_eq!(cut_markdown("run `abcdefgh` x", 10), "run …");
}

#[test]
fn text_built_to_be_slow_is_cut_in_one_pass() {
    // Every `[` would look for its `]`, every backtick for its pair, every
    // line count those after it: each bounded, so this is quick.
    for text in [
        "[".repeat(400_000),
        "`".repeat(400_000),
        "x\n".repeat(200_000),
        format!("[a]({}", "b".repeat(400_000)),
    ] {
        let got = cut_markdown(&text, 1_024);
        assert!(measure(&got) <= 1_024);
        assert!(
            got.ends_with("more") || got.ends_with('…'),
            "{}",
            &got[got.len() - 20..]
        );
    }
}
