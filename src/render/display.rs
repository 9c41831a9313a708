//! The display-text rule: how a string from a payload is made fit to show,
//! once for every kind. First [`display`] (what any reader should see:
//! no ANSI colour codes, no NUL or other control characters), then what the
//! target's syntax needs so the text is shown as written and can neither
//! format, link nor mention: Slack's entities ([`escape_mrkdwn`],
//! [`unmention`]), Discord's Markdown ([`escape_markdown`], [`link_text`],
//! [`unfence`]), the CommonMark subset of Teams' facts
//! ([`escape_commonmark`]). File names are shown decoded ([`file_name`]) and
//! URLs as a URL parser writes them ([`web_url`]).

use percent_encoding::percent_decode_str;

use super::text::as_terminal_showed;

/// `text` as any reader should see it: ANSI escape sequences removed, a
/// line as the terminal left it after `\r`, control characters other than
/// line breaks and tabs dropped.
pub fn display(text: &str) -> String {
    as_terminal_showed(text)
}

/// [`display`] on one line: every run of whitespace becomes one space.
pub fn one_line(text: &str) -> String {
    display(text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The file a URL names, as its owner named it: the last path segment,
/// without query or fragment, percent-decoded (`file%20name.txt` is
/// `file name.txt`) and on one line.
pub fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    one_line(&percent_decode_str(last).decode_utf8_lossy())
}

/// What RFC 3986 allows nowhere after the host but a WHATWG URL parser
/// leaves as it is in a path or query (`format: uri` in a service's schema
/// refuses them).
const NOT_IN_RFC3986: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b'[')
    .add(b']')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'^')
    .add(b'`')
    .add(b'\\')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b' ');

/// `text` as an http(s) URL written the way a URL parser serialises it
/// (spaces, quotes, `<` and `>` percent-encoded; the host lowercased and
/// punycoded), with what RFC 3986 forbids after the host encoded too; or
/// `None` when it is not a web URL with a host. Parsing the result gives it
/// back unchanged.
pub fn web_url(text: &str) -> Option<String> {
    let parsed = url::Url::parse(text.trim()).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return None;
    }
    let start = &parsed[..url::Position::BeforePath];
    let rest = &parsed[url::Position::BeforePath..];
    Some(format!(
        "{start}{}",
        percent_encoding::utf8_percent_encode(rest, NOT_IN_RFC3986)
    ))
}

/// Slack: the three characters Slack decodes as entities in any text it
/// parses, so a prompt cannot write `<!channel>` or a fake link.
pub fn escape_mrkdwn(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack: what [`escape_mrkdwn`] wrote, back as written, for a field Slack
/// shows as plain text without decoding anything (a header).
pub fn decode_entities(text: &str) -> String {
    // `&amp;` last, so `&amp;lt;` is decoded once, to `&lt;`.
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Slack: `<!channel>`, `<@U123>`, `<#C1>` made inert by a zero-width space
/// after the `<`, which a reader does not see.
pub fn unmention(text: &str) -> String {
    zero_width_between(text, |c, next| c == '<' && matches!(next, '!' | '@' | '#'))
}

/// Discord: Markdown's formatting characters backslash-escaped.
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '*'
                | '_'
                | '~'
                | '`'
                | '|'
                | '>'
                | '<'
                | '#'
                | '['
                | ']'
                | '('
                | ')'
                | '-'
                | ':'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Discord: a zero-width space after every backtick that another follows,
/// so no run of three can close a code block.
pub fn unfence(text: &str) -> String {
    zero_width_between(text, |c, next| c == '`' && next == '`')
}

/// Discord: the text of a masked link `[text](…)`, where Discord shows a
/// backslash escape as written but still formats: on one line, brackets as
/// parentheses, and each character that could start formatting as its
/// look-alike (`*` `∗`, `` ` `` `ˋ`, `~` `∼`, `|` `∣`; `_` `＿` unless it is
/// inside a word, where it formats nothing).
pub fn link_text(text: &str) -> String {
    let chars: Vec<char> = one_line(text).chars().collect();
    let word = |i: Option<usize>| {
        i.and_then(|i| chars.get(i))
            .is_some_and(|c| c.is_alphanumeric())
    };
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| match c {
            '[' => '(',
            ']' => ')',
            '*' => '∗',
            '`' => 'ˋ',
            '~' => '∼',
            '|' => '∣',
            '_' if !(word(i.checked_sub(1)) && word(Some(i + 1))) => '＿',
            c => c,
        })
        .collect()
}

/// What ends a Markdown link target or starts formatting or another link
/// inside one; a URL parser has already encoded spaces, quotes and angle
/// brackets.
const LINK_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b'(')
    .add(b')')
    .add(b'[')
    .add(b']')
    .add(b'*')
    .add(b'_')
    .add(b'~')
    .add(b'|');

/// Discord: `url` as a Markdown link target: [`web_url`] with what would
/// end or format a link target encoded.
pub fn link_target(url: &str) -> Option<String> {
    let url = web_url(url)?;
    Some(percent_encoding::utf8_percent_encode(&url, LINK_UNSAFE).to_string())
}

/// Discord's limit on a URL, which a link's target is kept to as well.
pub const MAX_LINK_URL: usize = 2_048;

/// Discord: `[text](url)` that neither part can break out of; the text
/// alone, Markdown-escaped, when `url` is not a web URL or is longer than
/// [`MAX_LINK_URL`].
pub fn markdown_link(text: &str, url: &str) -> String {
    match link_target(url).filter(|u| u.len() <= MAX_LINK_URL) {
        Some(url) => format!("[{}]({url})", link_text(text)),
        None => escape_markdown(&one_line(text)),
    }
}

/// Teams: text a CommonMark reader (an Adaptive Card fact) shows as it is:
/// what could format or link backslash-escaped, `_` only where it could
/// (inside a word it cannot), and a line that would start a list or quote
/// escaped at its start.
pub fn escape_commonmark(text: &str) -> String {
    let shown = display(text);
    let mut out = String::with_capacity(shown.len() + 8);
    for (n, line) in shown.split('\n').enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let chars: Vec<char> = line.chars().collect();
        let word = |i: Option<usize>| {
            i.and_then(|i| chars.get(i))
                .is_some_and(|c| c.is_alphanumeric())
        };
        let lead = line.trim_start();
        let digits = lead.chars().take_while(char::is_ascii_digit).count();
        // `- x`, `+ x`, `# x` and `1. x` or `1) x` start a list or heading
        // (with a space after, or alone); `>` a quote.
        let marker_then_space =
            |len: usize| lead[len..].chars().next().is_none_or(char::is_whitespace);
        let starts_block = lead.starts_with('>')
            || (matches!(lead.chars().next(), Some('-' | '+' | '#')) && marker_then_space(1))
            || (digits > 0
                && matches!(lead[digits..].chars().next(), Some('.' | ')'))
                && marker_then_space(digits + 1));
        let mut escaped_lead = !starts_block;
        for (i, &c) in chars.iter().enumerate() {
            let escape = match c {
                '\\' | '*' | '[' | ']' | '`' | '<' | '>' | '~' | '|' => true,
                '_' => !(word(i.checked_sub(1)) && word(Some(i + 1))),
                c if !escaped_lead && !c.is_whitespace() && !c.is_ascii_digit() => {
                    escaped_lead = true;
                    true
                }
                _ => false,
            };
            if escape && c.is_ascii_punctuation() {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// What a CommonMark reader shows of [`escape_commonmark`]'s text: a
/// backslash before ASCII punctuation dropped.
pub fn unescape_commonmark(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let escaped = (c == '\\')
            .then(|| chars.next_if(char::is_ascii_punctuation))
            .flatten();
        out.push(escaped.unwrap_or(c));
    }
    out
}

/// `text` with a zero-width space (unseen by a reader) between each pair of
/// neighbouring characters `split` picks: what breaks a markup sequence
/// apart without changing what is read.
fn zero_width_between(text: &str, split: impl Fn(char, char) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if chars.peek().is_some_and(|&next| split(c, next)) {
            out.push('\u{200B}');
        }
    }
    out
}

#[cfg(test)]
#[path = "display_tests.rs"]
mod tests;
