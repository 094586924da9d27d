//! What a name shown in a terminal (the status table, log lines) may hold.

/// Whether `c` would garble a terminal line that shows it: a control
/// character, or an invisible one that reorders, joins or breaks the text
/// around it (bidirectional controls, zero-width characters, the line and
/// paragraph separators, the byte order mark).
pub(crate) fn garbles(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}')
}
