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

/// `text` split into [`Token`]s.
fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (token, len) = next_token(rest);
        out.push(token);
        rest = &rest[len..];
    }
    out
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
        let line = rest.split('\n').next().unwrap_or(rest);
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
    let tokens = tokens(text);
    let lines = tokens.iter().filter(|t| **t == Token::Newline).count() + 1;
    if lines > 1
        && !tokens.iter().any(|t| matches!(t, Token::Fence(_)))
        && let Some(kept) = whole_lines(&tokens, lines, max)
    {
        return kept;
    }
    let mut out = String::new();
    let mut used = 0;
    let mut in_code = false;
    for token in &tokens {
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

/// The most whole lines of `tokens` that fit in `max` with a last line
/// "…and N more"; `None` when not even the first one does.
fn whole_lines(tokens: &[Token<'_>], lines: usize, max: usize) -> Option<String> {
    let mut texts = vec![String::new()];
    for token in tokens {
        match token {
            Token::Newline => texts.push(String::new()),
            t => texts.last_mut()?.push_str(t.text()),
        }
    }
    let mut kept = String::new();
    for (n, line) in texts.iter().enumerate() {
        let left = texts[n + 1..]
            .iter()
            .filter(|l| !l.trim().is_empty())
            .count();
        let candidate = if n == 0 {
            line.clone()
        } else {
            format!("{kept}\n{line}")
        };
        let note = format!("\n…and {} more", left);
        let fits = if left == 0 {
            measure(&candidate) <= max
        } else {
            measure(&candidate) + measure(&note) <= max
        };
        if !fits {
            if n == 0 {
                return None;
            }
            let dropped: usize = texts[n..]
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| already_more(l).unwrap_or(1))
                .sum();
            return Some(format!("{kept}\n…and {dropped} more"));
        }
        kept = candidate;
    }
    debug_assert_eq!(lines, texts.len());
    Some(kept)
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
