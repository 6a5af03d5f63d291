//! Attribute lists: one scan of a tag's attributes that checks their syntax, the
//! uniqueness of their names, their count and their references, with the names kept for the
//! duplicate check without allocating for an ordinary tag.

use super::names::{check_name, is_name_char, is_name_run};
use super::text::{is_ws, resolve_ref};
use super::{excerpt, malformed};
use crate::message::ParseError;

/// Scans the attributes of one tag, checking their syntax, uniqueness, count and references,
/// and calls `on_attr(name, raw_value, value_offset)` for each.
///
/// `attrs` is the part of the tag after its name; `at` is its payload offset.
pub(super) fn scan_attrs<'t>(
    attrs: &'t [u8],
    at: usize,
    max: usize,
    keys: &mut Keys,
    mut on_attr: impl FnMut(&'t [u8], &'t [u8], usize) -> Result<(), ParseError>,
) -> Result<(), ParseError> {
    keys.clear();
    let n = attrs.len();
    let mut i = 0;
    loop {
        let gap_start = i;
        while i < n && is_ws(attrs[i]) {
            i += 1;
        }
        if i == n {
            return Ok(());
        }
        if i == gap_start {
            return Err(malformed(
                at + i,
                "attributes must be separated by whitespace",
            ));
        }
        let key_start = i;
        let mut colons = 0u32;
        while let Some(&b) = attrs.get(i)
            && is_name_char(b)
        {
            colons += u32::from(b == b':');
            i += 1;
        }
        let key = &attrs[key_start..i];
        if !is_name_run(key, colons) {
            check_name(key, at + key_start)?;
        }
        while i < n && is_ws(attrs[i]) {
            i += 1;
        }
        if attrs.get(i) != Some(&b'=') {
            return Err(malformed(at + i, "expected `=` after an attribute name"));
        }
        i += 1;
        while i < n && is_ws(attrs[i]) {
            i += 1;
        }
        let quote = match attrs.get(i) {
            Some(&q @ (b'"' | b'\'')) => q,
            _ => return Err(malformed(at + i, "attribute value must be quoted")),
        };
        i += 1;
        let value_start = i;
        loop {
            let Some(step) = memchr::memchr3(quote, b'<', b'&', &attrs[i..]) else {
                return Err(malformed(at + value_start, "attribute value is not closed"));
            };
            i += step;
            match attrs[i] {
                b'<' => {
                    return Err(malformed(
                        at + i,
                        "`<` is not allowed in an attribute value",
                    ));
                }
                b'&' => {
                    let Some(len) = attrs[i + 1..]
                        .iter()
                        .position(|&b| b == b';' || b == quote || b == b'&')
                    else {
                        return Err(malformed(at + value_start, "attribute value is not closed"));
                    };
                    if attrs[i + 1 + len] != b';' {
                        return Err(malformed(
                            at + i,
                            "`&` must start a reference ending in `;`",
                        ));
                    }
                    resolve_ref(&attrs[i + 1..i + 1 + len], at + i)?;
                    i += len + 2;
                }
                _ => break,
            }
        }
        let value = &attrs[value_start..i];
        i += 1;
        if keys.len() >= max {
            return Err(ParseError::TooManyAttributes { max });
        }
        if keys.contains(attrs, key) {
            return Err(malformed(
                at + key_start,
                &format!("duplicate attribute `{}`", excerpt(key)),
            ));
        }
        keys.push(key_start, key.len());
        on_attr(key, value, at + value_start)?;
    }
}

/// Attribute names of one tag, as `(offset, length)` in its attribute text, for the
/// duplicate check: the first [`KEYS_INLINE`] in place, any more in a vector (which allocates
/// only for a tag with more attributes than that).
pub(super) struct Keys {
    inline: [(usize, usize); KEYS_INLINE],
    inline_len: usize,
    spill: Vec<(usize, usize)>,
}

/// Attribute names a tag can have before [`Keys`] allocates.
const KEYS_INLINE: usize = 8;

impl Keys {
    pub(super) fn new() -> Self {
        Self {
            inline: [(0, 0); KEYS_INLINE],
            inline_len: 0,
            spill: Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.inline_len = 0;
        self.spill.clear();
    }

    fn len(&self) -> usize {
        self.inline_len + self.spill.len()
    }

    fn push(&mut self, at: usize, len: usize) {
        match self.inline.get_mut(self.inline_len) {
            Some(slot) => {
                *slot = (at, len);
                self.inline_len += 1;
            }
            None => self.spill.push((at, len)),
        }
    }

    /// Whether `key` is one of the names, which are ranges of `attrs`.
    fn contains(&self, attrs: &[u8], key: &[u8]) -> bool {
        let same =
            |&(at, len): &(usize, usize)| len == key.len() && attrs.get(at..at + len) == Some(key);
        self.inline[..self.inline_len].iter().any(same) || self.spill.iter().any(same)
    }
}
