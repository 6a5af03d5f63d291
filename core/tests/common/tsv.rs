//! The tab-separated tables that `data/*.py` generators write.

/// Undoes the generators' backslash escapes in one field (`\\`, `\t`, `\n`, `\r`, `\xHH`).
pub fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                let code = u32::from_str_radix(&hex, 16).expect("two hex digits after \\x");
                out.push(char::from_u32(code).expect("an escaped control character"));
            }
            other => panic!("bad escape \\{other:?} in {field:?}"),
        }
    }
    out
}
