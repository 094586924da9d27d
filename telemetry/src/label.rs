//! Label values of free text, escaped for the text exposition formats.

use std::borrow::Cow;
use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// `value` as a label value of the Prometheus text format and of
/// OpenMetrics text, which escape alike: `\` as `\\`, `"` as `\"` and a line
/// feed as `\n`; every other character stands for itself. Borrowed when
/// there is nothing to escape.
///
/// ```
/// assert_eq!(telemetry::escape_label_value(r#"The "A" Team"#), r#"The \"A\" Team"#);
/// assert_eq!(telemetry::escape_label_value("C:\\temp\nx"), r"C:\\temp\nx");
/// assert_eq!(telemetry::escape_label_value("Alpha"), "Alpha");
/// ```
pub fn escape_label_value(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    let mut escaped = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str(r"\\"),
            '"' => escaped.push_str(r#"\""#),
            '\n' => escaped.push_str(r"\n"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// A label value of free text (a circle's name): compared and hashed as
/// given, written through [`escape_label_value`].
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct LabelText(String);

impl LabelText {
    /// The label value `text`, unescaped.
    pub fn new(text: &str) -> LabelText {
        LabelText(text.to_owned())
    }
}

impl EncodeLabelValue for LabelText {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(&escape_label_value(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backslash_a_quote_and_a_line_feed_are_escaped_and_nothing_else() {
        for (given, escaped) in [
            ("Alpha Circle", "Alpha Circle"),
            (r#"The "A" Team"#, r#"The \"A\" Team"#),
            (r"C:\temp", r"C:\\temp"),
            ("two\nlines", r"two\nlines"),
            (r#"\""#, r#"\\\""#),
            ("tab\tcr\r é ✓ {}=,", "tab\tcr\r é ✓ {}=,"),
            ("", ""),
        ] {
            assert_eq!(escape_label_value(given), escaped, "{given:?}");
        }
        assert!(matches!(escape_label_value("Alpha"), Cow::Borrowed(_)));
    }
}
