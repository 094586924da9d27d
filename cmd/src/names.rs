//! What a name shown in a terminal (the status table, log lines) may hold.

/// Whether `c` would garble a terminal line that shows it: a control
/// character, or an invisible one that reorders, joins or breaks the text
/// around it (bidirectional controls, zero-width characters, the line and
/// paragraph separators, the byte order mark).
pub(crate) fn garbles(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}')
}

/// `text` with every character that [`garbles`] a terminal line written as
/// its Rust escape (`\n`, `\u{1b}`): for a message that quotes the file as
/// written (serde names an unknown field so), shown in the status table,
/// plain output and log lines. Borrowed when there is nothing to escape.
pub(crate) fn escaped(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(garbles) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if garbles(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `name` between double quotes, a `"` or `\\` in it escaped with a
/// backslash: a list of quoted names (`"A", "B"`) reads as the names it
/// holds whatever they contain.
pub(crate) fn quoted(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_quoted_name_escapes_its_quotes_and_backslashes() {
        assert_eq!(super::quoted("Alpha"), r#""Alpha""#);
        assert_eq!(super::quoted(r#"B", "C"#), r#""B\", \"C""#);
        assert_eq!(super::quoted(r"a\b"), r#""a\\b""#);
    }

    /// README: a name with "an invisible one that garbles a terminal line:
    /// bidirectional controls, …" is refused. Unicode's Bidi_Control set is
    /// U+061C, U+200E, U+200F, U+202A–U+202E and U+2066–U+2069: the Arabic
    /// letter mark (U+061C) reorders a line like the others.
    #[test]
    fn every_bidirectional_control_garbles() {
        for c in [
            '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}',
        ] {
            assert!(
                super::garbles(c),
                "U+{:04X} is a bidirectional control",
                c as u32
            );
        }
    }
}
