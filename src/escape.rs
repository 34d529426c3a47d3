//! Text others wrote (process titles, log tails, status pages, FastCGI replies, config values), made
//! safe to print: it must not become extra lines in a mail or the log, nor commands to a terminal
//! (#13, #18). Each output applies this once, where it is rendered (the log line, the alert, `check`'s
//! line, `doctor`, `report`, error messages), so a field added later cannot forget it.

use std::fmt::Write as _;

/// The longest piece of outside text kept in one field, in characters.
pub const MAX_FIELD: usize = 1000;

/// Whether `c` must never reach a terminal or a mail raw: C0 controls, DEL, C1 (U+0080–U+009F, which
/// some terminals take as 8-bit escape sequences), and the bidi controls that make a reader see text
/// in another order than it is.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Text as it may be printed where others' words must not become lines or terminal commands:
/// unsafe characters escaped (`\n`, `\t`, `\u{1b}`, `\u{202e}` …), except those in `keep`.
pub fn printable(text: &str, keep: &[char]) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !is_unsafe(c) || keep.contains(&c) {
            out.push(c);
        } else if c.is_ascii_control() {
            out.extend(c.escape_debug());
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    out
}

/// One line of outside text: every unsafe character escaped, newlines included, and cut after
/// [`MAX_FIELD`] characters (marked with `…`).
pub fn field(text: &str) -> String {
    let mut out = printable(&cut(text, MAX_FIELD), &[]);
    if text.chars().count() > MAX_FIELD {
        out.push('…');
    }
    out
}

/// The first `max` characters of `text`.
pub fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Serialised JSON made safe for a terminal with the same meaning: serde_json escapes C0 controls
/// but writes DEL, C1 and bidi controls raw (they can only stand inside strings), so they become
/// `\uXXXX` escapes.
pub fn json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe(c) && c != '\n' {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_controls_but_those_kept() {
        assert_eq!(printable("a\nb\u{1b}[1m\t", &[]), r"a\nb\u{1b}[1m\t");
        assert_eq!(printable("a\nb\r", &['\n']), "a\nb\\r");
    }

    #[test]
    fn del_c1_and_bidi_controls_are_escaped_too() {
        assert_eq!(
            printable("\u{7f}\u{9b}2J\u{202e}abc\u{2066}", &[]),
            r"\u{7f}\u{9b}2J\u{202e}abc\u{2066}"
        );
        assert_eq!(printable("é ü ✓", &[]), "é ü ✓");
    }

    #[test]
    fn fields_are_one_bounded_line() {
        assert_eq!(field("a\nb"), r"a\nb");
        let long = field(&"x".repeat(5000));
        assert_eq!(long.chars().count(), MAX_FIELD + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn json_keeps_its_meaning() {
        let raw = serde_json::to_string(&"a\u{1b}\u{7f}\u{9b}\u{202e}b").unwrap();
        let safe = json(&raw);
        assert!(!safe.chars().any(is_unsafe), "{safe}");
        let back: String = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, "a\u{1b}\u{7f}\u{9b}\u{202e}b");
    }
}
