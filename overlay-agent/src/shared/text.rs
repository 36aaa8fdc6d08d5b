//! Outside input quoted in a message. A refusal is one line (users read it, logs keep it per
//! line), but some messages quote what they refused verbatim: serde's "unknown variant `...`"
//! puts a value from etcd or a runtime's JSON into the text as it is, newlines included.

/// `s` with its control characters (newlines, carriage returns, escapes) written as Rust
/// escapes, everything else as it is.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(
            super::one_line("unknown variant `a\nb\r`, \"é\" \u{1b}"),
            "unknown variant `a\\nb\\r`, \"é\" \\u{1b}"
        );
    }
}
