//! The little XML reading the validator does itself, on a payload the message parser has
//! already checked: the declared encoding, a tag's name and attributes, qualified names,
//! references, and excerpts of peer text for error messages.

use encoding_rs::Encoding;

/// The encoding the payload's XML declaration names, when it is an ASCII-compatible encoding
/// other than UTF-8; `None` for UTF-8, ASCII, no declaration, or anything unknown (which
/// [`message::parse`](crate::message::parse) refuses before the schema check runs).
pub(super) fn declared_encoding(payload: &[u8]) -> Option<&'static Encoding> {
    let body = payload.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(payload);
    let rest = body.strip_prefix(b"<?xml")?;
    let decl = &rest[..rest.windows(2).position(|w| w == b"?>")?];
    let at = decl.windows(8).position(|w| w == b"encoding")?;
    let after = decl[at + 8..].trim_ascii_start().strip_prefix(b"=")?;
    let after = after.trim_ascii_start();
    let quote = *after.first().filter(|&&q| q == b'"' || q == b'\'')?;
    let value = &after[1..];
    let label = value[..value.iter().position(|&b| b == quote)?].trim_ascii();
    // As the parser does: ASCII labels read as UTF-8 (encoding_rs maps them to windows-1252).
    let utf8_like: [&[u8]; 4] = [b"us-ascii", b"ascii", b"utf-8", b"utf8"];
    if utf8_like
        .iter()
        .any(|known| label.eq_ignore_ascii_case(known))
    {
        return None;
    }
    Encoding::for_label(label).filter(|e| *e != encoding_rs::UTF_8 && e.is_ascii_compatible())
}

/// Calls `on_attr(name, raw_value)` for each attribute of a tag (the part after its name),
/// until it returns `false`.
pub(super) fn scan_attrs<'t>(
    attrs: &'t [u8],
    mut on_attr: impl FnMut(&'t [u8], &'t [u8]) -> bool,
) -> Result<(), &'static str> {
    let is_ws = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let n = attrs.len();
    let mut i = 0;
    loop {
        while i < n && is_ws(attrs[i]) {
            i += 1;
        }
        if i == n {
            return Ok(());
        }
        let key_start = i;
        while i < n && !is_ws(attrs[i]) && attrs[i] != b'=' {
            i += 1;
        }
        let key = &attrs[key_start..i];
        while i < n && is_ws(attrs[i]) {
            i += 1;
        }
        if key.is_empty() || attrs.get(i) != Some(&b'=') {
            return Err("expected `name=\"value\"` in a tag");
        }
        i += 1;
        while i < n && is_ws(attrs[i]) {
            i += 1;
        }
        let quote = match attrs.get(i) {
            Some(&q @ (b'"' | b'\'')) => q,
            _ => return Err("attribute value must be quoted"),
        };
        let value_start = i + 1;
        let Some(len) = memchr::memchr(quote, &attrs[value_start..]) else {
            return Err("attribute value is not closed");
        };
        i = value_start + len + 1;
        if !on_attr(key, &attrs[value_start..value_start + len]) {
            return Ok(());
        }
    }
}

/// Resolves the name of a reference (between `&` and `;`) to its character, as the message
/// parser does (the payload has been through it).
pub(super) fn resolve_ref(name: &[u8]) -> Option<char> {
    crate::message::resolve_ref(name, 0).ok()
}

/// Splits a tag's content into its name and the rest (the attributes).
pub(super) fn split_tag(tag: &[u8]) -> (&[u8], &[u8]) {
    let name_len = tag
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(tag.len());
    tag.split_at(name_len)
}

/// Splits a qualified name into its prefix and local name.
pub(super) fn split_qname(name: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match name.iter().position(|&b| b == b':') {
        Some(colon) => (Some(&name[..colon]), &name[colon + 1..]),
        None => (None, name),
    }
}

pub(super) fn lossy(bytes: &[u8]) -> String {
    excerpt(&String::from_utf8_lossy(bytes))
}

/// Peer text for a message: at most 64 characters, control characters escaped.
pub(super) fn excerpt(text: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
