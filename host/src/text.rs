//! Text from peers made safe for logs and terminals: one function, shared by the event log,
//! the handlers and the spool.

/// A peer's text made safe to print: control characters (ESC, newlines, ...) escaped as
/// [`char::escape_default`] spells them (`\u{1b}`, `\n`), so a peer cannot forge log lines or
/// drive the terminal; every other character, UTF-8 included, is kept as is.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_characters_only() {
        assert!(matches!(
            printable("plain ü 星"),
            std::borrow::Cow::Borrowed("plain ü 星")
        ));
        assert_eq!(
            printable("a\x1b[31mred\nfake line\r\tü"),
            "a\\u{1b}[31mred\\nfake line\\r\\tü"
        );
    }
}
