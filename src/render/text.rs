//! Text from a job, made fit to show: a log as the terminal showed it, and
//! any text as mail can carry it.
//!
//! Model logs are written for a terminal: progress bars redraw their line
//! with `\r`, and colours are ANSI escape sequences. Shown raw, a log tail is
//! a wall of redraws and `[31m` noise. And mail cannot carry every character:
//! a lone `\r` or a NUL goes out as is in a 7-bit part, and SMTP servers
//! refuse such a message (bare CR is a known smuggling vector), which would
//! turn odd log text into a dead delivery.

/// `log` as a terminal would have shown it: within each line only what the
/// last `\r` left, escape sequences removed, other control characters
/// dropped (tabs kept).
pub fn as_terminal_showed(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    for (i, line) in log.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // `\r\n` ends a line; any other `\r` starts it again.
        let line = line.strip_suffix('\r').unwrap_or(line);
        let shown = line.rsplit('\r').next().unwrap_or(line);
        push_without_escapes(shown, &mut out);
    }
    out
}

/// Appends `text` without ANSI escape sequences (CSI `ESC [ … final`, OSC
/// `ESC ] … BEL|ESC \`, and two-character `ESC x`) and control characters.
fn push_without_escapes(text: &str, out: &mut String) {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    // Parameters and intermediates, then one final byte.
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
}

/// `text` as mail can carry it: line breaks as `\n` (lettre writes CRLF),
/// a lone `\r` as a line break, other control characters but tabs dropped.
pub fn mail_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                chars.next_if_eq(&'\n');
                out.push('\n');
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_read_as_the_terminal_showed_them() {
        let cases = [
            ("plain\nlines", "plain\nlines"),
            ("step 1/3\rstep 2/3\rstep 3/3\ndone", "step 3/3\ndone"),
            ("windows\r\nline\r\n", "windows\nline\n"),
            (
                " 10%|█         |\r100%|██████████|\r\n",
                "100%|██████████|\n",
            ),
            (
                "\u{1b}[31mred\u{1b}[0m and \u{1b}[1;32mgreen\u{1b}[m",
                "red and green",
            ),
            (
                "\u{1b}]0;title\u{7}after \u{1b}]8;;http://x\u{1b}\\link",
                "after link",
            ),
            (
                "nul\u{0} bell\u{7} del\u{7f} tab\there",
                "nul bell del tab\there",
            ),
            ("\u{1b}", ""),
            ("\u{1b}[", ""),
            ("é漢🙂\u{fffd}", "é漢🙂\u{fffd}"),
        ];
        for (log, shown) in cases {
            assert_eq!(as_terminal_showed(log), shown, "{log:?}");
        }
    }

    #[test]
    fn mail_gets_no_bare_cr_and_no_nul() {
        let cases = [
            ("a\r\nb\rc\nd", "a\nb\nc\nd"),
            ("x\u{0}y\u{1b}[0m\u{7f}", "xy[0m"),
            ("\ttabbed\u{2028}", "\ttabbed\u{2028}"),
            ("ends in\r", "ends in\n"),
        ];
        for (text, safe) in cases {
            assert_eq!(mail_safe(text), safe, "{text:?}");
        }
    }
}
