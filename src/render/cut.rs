//! Cutting text to a service's limit without breaking what its reader
//! sees: never inside a grapheme (an emoji with its modifiers, a letter
//! with its accents), a Markdown link, an escape or an inline code span; a
//! code block cut open is closed again; a list of lines cut short says how
//! many it left out.
//!
//! Length is counted in UTF-16 code units ([`measure`]), which is never
//! less than the count of characters: the services do not all say which
//! they count, and a text within the larger count is within either.

use unicode_segmentation::UnicodeSegmentation;

/// The length a service's limit is checked against (see the module doc).
pub fn measure(text: &str) -> usize {
    text.encode_utf16().count()
}

/// `text` within `max`: whole graphemes, the last one "…" when it was cut.
pub fn cut(text: &str, max: usize) -> String {
    if measure(text) <= max {
        return text.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for g in text.graphemes(true) {
        let width = measure(g);
        if used + width > max - 1 {
            break;
        }
        out.push_str(g);
        used += width;
    }
    out.push('…');
    out
}

/// One unit a Markdown cut keeps or drops whole.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Token<'a> {
    /// `[text](url)`, with its text.
    Link(&'a str, &'a str),
    /// "```", opening or closing a code block.
    Fence(&'a str),
    /// A line break.
    Newline,
    /// A backslash escape, an inline code span, or one grapheme.
    Text(&'a str),
}

impl Token<'_> {
    fn text(&self) -> &str {
        match self {
            Token::Link(whole, _) | Token::Fence(whole) | Token::Text(whole) => whole,
            Token::Newline => "\n",
        }
    }
}

/// `text` split into [`Token`]s, lazily: a cut reads only as far as it keeps.
fn tokens(text: &str) -> impl Iterator<Item = Token<'_>> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (token, len) = next_token(rest);
        rest = &rest[len..];
        Some(token)
    })
}

/// How far ahead a token may reach: farther than any link or code span a
/// message holds (a URL is at most a few thousand characters), near enough
/// that text full of `[` or `` ` `` is still cut in linear time.
const LOOKAHEAD: usize = 8 * 1024;

/// The start of `rest`, at most [`LOOKAHEAD`] bytes, on a character boundary.
fn window(rest: &str) -> &str {
    let mut end = rest.len().min(LOOKAHEAD);
    while !rest.is_char_boundary(end) {
        end -= 1;
    }
    &rest[..end]
}

fn next_token(rest: &str) -> (Token<'_>, usize) {
    let grapheme = |from: usize| {
        rest[from..]
            .graphemes(true)
            .next()
            .map_or(from, |g| from + g.len())
    };
    if rest.starts_with("```") {
        return (Token::Fence(&rest[..3]), 3);
    }
    if rest.starts_with('\n') {
        return (Token::Newline, 1);
    }
    if rest.starts_with('\\') && rest.len() > 1 {
        let end = grapheme(1);
        return (Token::Text(&rest[..end]), end);
    }
    if rest.starts_with('`') {
        let ahead = window(rest);
        let line = ahead.split('\n').next().unwrap_or(ahead);
        if let Some(close) = line[1..].find('`') {
            let end = close + 2;
            return (Token::Text(&rest[..end]), end);
        }
    }
    if rest.starts_with('[')
        && let Some((text_end, url_end)) = link_at(rest)
    {
        return (Token::Link(&rest[..url_end], &rest[1..text_end]), url_end);
    }
    let end = grapheme(0);
    (Token::Text(&rest[..end]), end)
}

/// Where the text and the whole of a `[text](url)` starting `rest` end,
/// if one does: text without brackets or line breaks, a target without
/// spaces or parentheses (what [`super::display::markdown_link`] writes).
fn link_at(rest: &str) -> Option<(usize, usize)> {
    let rest = window(rest);
    let text_end = rest.find(']')?;
    if rest[1..text_end].contains(['[', '\n']) || !rest[text_end..].starts_with("](") {
        return None;
    }
    let target = &rest[text_end + 2..];
    let close = target.find(|c: char| c == ')' || c.is_whitespace() || c == '(')?;
    target[close..]
        .starts_with(')')
        .then_some((text_end, text_end + 2 + close + 1))
}

/// Markdown `text` within `max`, cut at a safe boundary (see the module
/// doc). Text without code blocks that spans lines keeps whole lines and
/// ends "…and N more" (the lines left out), so a list of links loses
/// items, never half a link; otherwise it ends "…", closing a code block it
/// cut open. A link that does not fit where the cut falls is kept as its
/// text when that fits.
pub fn cut_markdown(text: &str, max: usize) -> String {
    if measure(text) <= max {
        return text.to_owned();
    }
    // A line holds no link or code span across its end, so without code
    // blocks lines can be kept whole.
    if text.contains('\n')
        && !text.contains("```")
        && let Some(kept) = whole_lines(text, max)
    {
        return kept;
    }
    let mut out = String::new();
    let mut used = 0;
    let mut in_code = false;
    for token in tokens(text) {
        let width = measure(token.text());
        let code_after = in_code ^ matches!(token, Token::Fence(_));
        if used + width + closing_len(code_after) <= max {
            out.push_str(token.text());
            used += width;
            in_code = code_after;
            continue;
        }
        if let Token::Link(_, shown) = token
            && used + measure(shown) + closing_len(in_code) <= max
        {
            out.push_str(shown);
        }
        break;
    }
    if out.is_empty() && max < closing_len(in_code) {
        return cut(text, max);
    }
    out.push('…');
    if in_code {
        out.push_str("\n```");
    }
    out
}

/// What a cut adds: "…", and "\n```" when it closes a code block.
fn closing_len(in_code: bool) -> usize {
    if in_code { 5 } else { 1 }
}

/// The most whole lines of `text` that fit in `max` with a last line
/// "…and N more"; `None` when not even the first one does. Linear: what the
/// lines after each one stand for is counted once, from the end.
fn whole_lines(text: &str, max: usize) -> Option<String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut after = vec![0usize; lines.len() + 1];
    for i in (0..lines.len()).rev() {
        let items = if lines[i].trim().is_empty() {
            0
        } else {
            already_more(lines[i]).unwrap_or(1)
        };
        after[i] = after[i + 1] + items;
    }
    let mut used = 0;
    for (n, line) in lines.iter().enumerate() {
        let width = measure(line) + usize::from(n > 0);
        let left = after[n + 1];
        let note = if left == 0 {
            0
        } else {
            measure(&format!("\n…and {left} more"))
        };
        if used + width + note > max {
            if n == 0 {
                return None;
            }
            return Some(format!("{}\n…and {} more", lines[..n].join("\n"), after[n]));
        }
        used += width;
    }
    Some(text.to_owned())
}

/// The N of a line "…and N more" that a list already ends with: the items
/// it stands for.
fn already_more(line: &str) -> Option<usize> {
    line.trim()
        .strip_prefix("…and ")?
        .strip_suffix(" more")?
        .parse()
        .ok()
}

#[cfg(test)]
#[path = "cut_tests.rs"]
mod tests;
