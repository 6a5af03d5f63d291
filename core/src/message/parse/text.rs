//! Characters and text: the characters XML 1.0 allows, whitespace, references (`&lt;`,
//! `&#x20;`), line-end and attribute-value normalisation, and trimming.

use std::borrow::Cow;

use super::names::check_name;
use super::{excerpt, malformed};
use crate::message::ParseError;

/// Resolves the name of a reference (the part between `&` and `;`) to its character.
pub(crate) fn resolve_ref(name: &[u8], at: usize) -> Result<char, ParseError> {
    match name {
        b"lt" => Ok('<'),
        b"gt" => Ok('>'),
        b"amp" => Ok('&'),
        b"apos" => Ok('\''),
        b"quot" => Ok('"'),
        [b'#', b'x', hex @ ..] => char_ref(hex, 16, at),
        [b'#', decimal @ ..] => char_ref(decimal, 10, at),
        _ if check_name(name, at).is_ok() => Err(ParseError::UndefinedEntity(excerpt(name))),
        _ => Err(malformed(at, "invalid entity reference")),
    }
}

fn char_ref(digits: &[u8], radix: u32, at: usize) -> Result<char, ParseError> {
    let invalid = || malformed(at, "invalid character reference");
    if digits.is_empty() {
        return Err(invalid());
    }
    let mut value: u32 = 0;
    for &digit in digits {
        let digit = char::from(digit).to_digit(radix).ok_or_else(invalid)?;
        value = value
            .checked_mul(radix)
            .and_then(|v| v.checked_add(digit))
            .ok_or_else(invalid)?;
    }
    char::from_u32(value)
        .filter(|&c| is_xml_char(c))
        .ok_or_else(invalid)
}

/// The text a reference stands for, without allocating for the predefined entities.
pub(crate) fn char_piece(c: char) -> Cow<'static, str> {
    match c {
        '<' => Cow::Borrowed("<"),
        '>' => Cow::Borrowed(">"),
        '&' => Cow::Borrowed("&"),
        '\'' => Cow::Borrowed("'"),
        '"' => Cow::Borrowed("\""),
        ' ' => Cow::Borrowed(" "),
        '\n' => Cow::Borrowed("\n"),
        other => Cow::Owned(other.to_string()),
    }
}

/// Whether `c` is a `Char` of XML 1.0.
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..
    )
}

/// Resolves references and applies attribute-value normalisation (XML 1.0 §3.3.3): a literal
/// tab, newline, carriage return or CR LF pair becomes one space.
pub(super) fn normalize_attr(value: Cow<'_, str>, at: usize) -> Result<Cow<'_, str>, ParseError> {
    let special = |b: u8| matches!(b, b'&' | b'\t' | b'\n' | b'\r');
    if !value.bytes().any(special) {
        return Ok(value);
    }
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..]
            .iter()
            .position(|&b| special(b))
            .map_or(bytes.len(), |p| i + p);
        out.push_str(&value[i..run]);
        i = run;
        match bytes.get(i) {
            Some(b'&') => {
                let len = bytes[i + 1..]
                    .iter()
                    .position(|&b| b == b';')
                    .ok_or_else(|| malformed(at + i, "`&` must start a reference ending in `;`"))?;
                out.push(resolve_ref(&bytes[i + 1..i + 1 + len], at + i)?);
                i += len + 2;
            }
            Some(b'\r') if bytes.get(i + 1) == Some(&b'\n') => {
                out.push(' ');
                i += 2;
            }
            Some(_) => {
                out.push(' ');
                i += 1;
            }
            None => {}
        }
    }
    Ok(Cow::Owned(out))
}

/// Applies line-end normalisation (XML 1.0 §2.11): CR LF and lone CR become LF.
pub(super) fn normalize_newlines(text: Cow<'_, str>) -> Cow<'_, str> {
    if memchr::memchr(b'\r', text.as_bytes()).is_none() {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            if chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Trims XML whitespace from both ends, keeping a borrow borrowed.
pub(super) fn trim_ws(text: Cow<'_, str>) -> Cow<'_, str> {
    match text {
        Cow::Borrowed(s) => Cow::Borrowed(trim(s)),
        Cow::Owned(s) => {
            let trimmed = trim(&s);
            if trimmed.len() == s.len() {
                Cow::Owned(s)
            } else {
                Cow::Owned(trimmed.to_owned())
            }
        }
    }
}

/// [`trim_ws`] on a `str`.
fn trim(s: &str) -> &str {
    // Whitespace is ASCII: the bytes next to it are character boundaries.
    let bytes = s.as_bytes();
    let start = bytes.iter().position(|&b| !is_ws(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !is_ws(b))
        .map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

/// XML whitespace (`S`): space, tab, newline, carriage return.
pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

pub(super) fn is_all_ws(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| is_ws(b))
}
