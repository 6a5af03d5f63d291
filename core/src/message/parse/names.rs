//! XML names: splitting a tag into its name and attributes, the `Name` production with the
//! namespace rule (one colon at most), prefixes and their declarations, and the byte-class
//! table behind the checks.

use super::text::is_ws;
use super::{excerpt, malformed};
use crate::message::ParseError;

/// Splits a tag's content into its name, checked with [`check_name`], and the rest (the
/// attributes).
///
/// # Errors
///
/// [`check_name`]'s, for the name.
pub(super) fn split_name(tag: &[u8], at: usize) -> Result<(&[u8], &[u8]), ParseError> {
    // One pass over the name characters; [`check_name`] only to word an error.
    let mut end = 0;
    let mut colons = 0u32;
    while let Some(&b) = tag.get(end)
        && is_name_char(b)
    {
        colons += u32::from(b == b':');
        end += 1;
    }
    let (name, rest) = tag.split_at(end);
    if rest.first().is_none_or(|&b| is_ws(b)) && is_name_run(name, colons) {
        return Ok((name, rest));
    }
    let (name, rest) = split_tag(tag);
    check_name(name, at)?;
    Ok((name, rest))
}

/// Splits a tag's content into its name and the rest (the attributes).
fn split_tag(tag: &[u8]) -> (&[u8], &[u8]) {
    let name_len = tag.iter().position(|&b| is_ws(b)).unwrap_or(tag.len());
    tag.split_at(name_len)
}

/// Splits a qualified name into its prefix and local name.
pub(super) fn split_qname(name: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match name.iter().position(|&b| b == b':') {
        Some(colon) => (Some(&name[..colon]), &name[colon + 1..]),
        None => (None, name),
    }
}

/// Whether attribute `key` declares the namespace of `prefix` (`xmlns` for no prefix).
pub(super) fn declares_prefix(key: &[u8], prefix: Option<&[u8]>) -> bool {
    match prefix {
        None => key == b"xmlns",
        Some(prefix) => key.strip_prefix(b"xmlns:") == Some(prefix),
    }
}

/// Checks a name (element, attribute, PI target or entity): the XML `Name` production for ASCII
/// (every non-ASCII byte is accepted), plus the namespace rule of at most one colon, with text
/// on both sides.
pub(super) fn check_name(name: &[u8], at: usize) -> Result<(), ParseError> {
    // One pass: AND the byte classes together and count colons.
    let (classes, colons) = name
        .iter()
        .fold((NAME_CHAR, 0u32), |(classes, colons), &b| {
            (
                classes & NAME_CLASS[usize::from(b)],
                colons + u32::from(b == b':'),
            )
        });
    let syntax_ok = classes & NAME_CHAR != 0 && name.first().is_some_and(|&b| is_name_start(b));
    let colons_ok =
        colons == 0 || (colons == 1 && name.first() != Some(&b':') && name.last() != Some(&b':'));
    if syntax_ok && colons_ok {
        Ok(())
    } else {
        Err(malformed(at, &format!("invalid name `{}`", excerpt(name))))
    }
}

/// [`check_name`]'s test for bytes known to be name characters, holding `colons` colons.
pub(super) fn is_name_run(name: &[u8], colons: u32) -> bool {
    name.first().is_some_and(|&b| is_name_start(b) && b != b':')
        && (colons == 0 || (colons == 1 && name.last() != Some(&b':')))
}

const NAME_START: u8 = 1;
const NAME_CHAR: u8 = 2;

/// Byte classes for names: `NAME_START` and/or `NAME_CHAR`.
static NAME_CLASS: [u8; 256] = name_classes();

const fn name_classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let start = b.is_ascii_alphabetic() || b == b'_' || b == b':' || b >= 0x80;
        let other = b.is_ascii_digit() || b == b'-' || b == b'.';
        if start {
            table[i] = NAME_START | NAME_CHAR;
        } else if other {
            table[i] = NAME_CHAR;
        }
        i += 1;
    }
    table
}

fn is_name_start(b: u8) -> bool {
    NAME_CLASS[usize::from(b)] & NAME_START != 0
}

pub(super) fn is_name_char(b: u8) -> bool {
    NAME_CLASS[usize::from(b)] & NAME_CHAR != 0
}
