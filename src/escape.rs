//! Text others wrote (process titles, log tails, status pages), made safe to print: it must not
//! become extra lines in a mail or the log, nor commands to a terminal (#13).

/// Text as it may be printed where others' words must not become lines or terminal commands (#13):
/// control characters escaped (`\n`, `\t`, `\u{1b}` …), except those in `keep`.
pub fn printable(text: &str, keep: &[char]) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && !keep.contains(&c) {
            out.extend(c.escape_debug());
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
}
