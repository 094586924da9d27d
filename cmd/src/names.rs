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

#[cfg(test)]
mod tests {
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
