//! The payload's encoding: byte-order marks, declared encodings, and the character checks
//! made before the structure is read.

use encoding_rs::{DecoderResult, Encoding};

use super::attrs::scan_attrs;
use super::{Parser, Path, TextEncoding, excerpt, is_ws, malformed, plain};
use crate::message::ParseError;

/// Detects a byte-order mark; returns the number of bytes to skip.
pub(super) fn sniff_bom(payload: &[u8]) -> Result<usize, ParseError> {
    let unsupported = |name: &str| Err(ParseError::UnsupportedEncoding(name.to_owned()));
    match payload {
        [0xEF, 0xBB, 0xBF, ..] => Ok(3),
        [0x00, 0x00, 0xFE, 0xFF, ..] | [0x00, 0x00, 0x00, b'<', ..] => unsupported("UTF-32BE"),
        [0xFF, 0xFE, 0x00, 0x00, ..] | [b'<', 0x00, 0x00, 0x00, ..] => unsupported("UTF-32LE"),
        [0xFE, 0xFF, ..] | [0x00, b'<', ..] => unsupported("UTF-16BE"),
        [0xFF, 0xFE, ..] | [b'<', 0x00, ..] => unsupported("UTF-16LE"),
        _ => Ok(0),
    }
}

/// Maps an encoding label from the XML declaration to the way the payload is read.
pub(super) fn resolve_label(label: &[u8]) -> Result<TextEncoding, ParseError> {
    let label = label.trim_ascii();
    let ascii = [b"us-ascii".as_slice(), b"ascii", b"utf-8", b"utf8"];
    if ascii.iter().any(|known| label.eq_ignore_ascii_case(known)) {
        return Ok(TextEncoding::Utf8);
    }
    match Encoding::for_label(label) {
        Some(encoding) if encoding == encoding_rs::UTF_8 => Ok(TextEncoding::Utf8),
        Some(encoding) if encoding.is_ascii_compatible() => Ok(TextEncoding::Legacy(encoding)),
        _ => Err(ParseError::UnsupportedEncoding(excerpt(label))),
    }
}

/// What [`scan_chars`] found.
pub(super) struct CharScan {
    /// Every byte is printable ASCII (0x20 to 0x7F), tab, newline or carriage return, so the
    /// payload is valid UTF-8 and, as far as characters go, in every supported encoding.
    /// `false` when not looked for.
    pub(super) plain: bool,
    /// Offset of the first character XML 1.0 forbids, if any.
    pub(super) forbidden: Option<usize>,
    /// There may be a carriage return (before `forbidden`, if any). `true` when not looked
    /// for.
    pub(super) has_cr: bool,
}

/// Finds the first character XML 1.0 forbids: a C0 control other than tab, newline and carriage
/// return, or (in UTF-8) U+FFFE or U+FFFF.
///
/// With `HINTS`, also tells whether the payload is plain ASCII and whether it has a carriage
/// return, at a lower cost for plain ASCII and a higher one for text with control characters
/// (line ends): for a small Transport message, not for a VOEvent.
pub(super) fn scan_chars<const HINTS: bool>(body: &[u8], utf8: bool) -> CharScan {
    const CHUNK: usize = 32;
    // Branch-free tests per chunk (vectorised by the compiler). With hints, first: any control
    // or non-ASCII byte at all (one signed compare). Then, for such a chunk: any byte that may
    // start a forbidden character. The exact position is looked for only in a chunk that
    // fails both.
    let printable = |b: u8| (b as i8) >= 0x20;
    let suspicious =
        |b: u8| ((b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r')) | (utf8 & (b == 0xEF));
    let mut scan = CharScan {
        plain: HINTS,
        forbidden: None,
        has_cr: !HINTS,
    };
    for (index, chunk) in body.chunks(CHUNK).enumerate() {
        if HINTS {
            if chunk.iter().fold(true, |acc, &b| acc & printable(b)) {
                continue;
            }
            scan.plain &= chunk.iter().all(|&b| b < 0x80);
            scan.has_cr |= chunk.contains(&b'\r');
        }
        if chunk.iter().fold(false, |acc, &b| acc | suspicious(b)) {
            let start = index * CHUNK;
            scan.forbidden = (start..start + chunk.len()).find(|&i| match body[i] {
                b'\t' | b'\n' | b'\r' => false,
                0x00..=0x1F => true,
                0xEF => {
                    utf8 && body.get(i + 1) == Some(&0xBF)
                        && matches!(body.get(i + 2), Some(0xBE | 0xBF))
                }
                _ => false,
            });
            if scan.forbidden.is_some() {
                return scan;
            }
        }
    }
    scan
}

/// Checks that the whole payload decodes in `encoding` without errors, without allocating.
pub(super) fn check_decodes(
    body: &[u8],
    base: usize,
    encoding: &'static Encoding,
) -> Result<(), ParseError> {
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let mut scratch = [0u8; 1024];
    let mut read_total = 0;
    loop {
        let (result, read, _) =
            decoder.decode_to_utf8_without_replacement(&body[read_total..], &mut scratch, true);
        read_total += read;
        match result {
            DecoderResult::InputEmpty => return Ok(()),
            DecoderResult::OutputFull => {}
            DecoderResult::Malformed(bad, extra) => {
                let at = read_total.saturating_sub(usize::from(bad) + usize::from(extra));
                return Err(malformed(
                    base + at,
                    &format!(
                        "byte sequence not valid in the declared encoding {}",
                        encoding.name()
                    ),
                ));
            }
        }
    }
}

impl Parser<'_, '_> {
    /// Validates the payload's characters before the structure is read, and records what the
    /// pass can then skip ([`Parser::body_text`], and with `hints` [`Parser::has_cr`] and, for
    /// plain ASCII, the UTF-8 validation).
    pub(super) fn check_chars(&mut self, hints: bool) -> Result<(), ParseError> {
        let (body, base) = (self.body, self.base);
        let utf8 = matches!(self.text, TextEncoding::Utf8);
        let scan = if hints {
            scan_chars::<true>(body, utf8)
        } else {
            scan_chars::<false>(body, utf8)
        };
        // Plain ASCII needs no UTF-8 validation (its pieces are validated as they are taken).
        let text = if utf8 && !(scan.plain && scan.forbidden.is_none()) {
            let text = std::str::from_utf8(body).map_err(|e| ParseError::NotUtf8 {
                offset: base + e.valid_up_to(),
            })?;
            Some(text)
        } else {
            None
        };
        if let Some(at) = scan.forbidden {
            let reason = match body[at] {
                0xEF => format!(
                    "character U+FFF{:X} is not allowed in XML",
                    body[at + 2] & 0x0F
                ),
                byte => format!("character U+{byte:04X} is not allowed in XML"),
            };
            return Err(malformed(base + at, &reason));
        }
        if let TextEncoding::Legacy(encoding) = self.text {
            check_decodes(body, base, encoding)?;
        }
        self.chars_checked = true;
        self.body_text = text;
        // In a legacy encoding the decoded text is what counts: always normalise.
        self.has_cr = scan.has_cr || !utf8;
        Ok(())
    }

    /// Reads the encoding from the XML declaration, if there is one.
    ///
    /// The declaration is parsed here, before the main pass, because the payload must be
    /// validated in its encoding before quick-xml reads it.
    pub(super) fn declared_encoding(&mut self) -> Result<TextEncoding, ParseError> {
        if self.path == Path::Fast
            && let Some(decl) = plain::COMMON_DECLARATIONS
                .iter()
                .find(|decl| self.body.starts_with(decl))
        {
            self.decl_end = decl.len();
            return Ok(TextEncoding::Utf8);
        }
        let Some(rest) = self.body.strip_prefix(b"<?xml") else {
            return Ok(TextEncoding::Utf8);
        };
        if !rest.first().is_some_and(|&b| is_ws(b)) {
            // `<?xml-stylesheet ...?>` or a broken declaration: the main pass decides.
            return Ok(TextEncoding::Utf8);
        }
        let Some(end) = rest.windows(2).position(|w| w == b"?>") else {
            return Err(self.malformed(0, "XML declaration is not closed"));
        };
        let mut index = 0usize;
        let mut encoding: Option<&[u8]> = None;
        let mut order_ok = true;
        let at = self.base + 5;
        scan_attrs(&rest[..end], at, 3, &mut self.keys, |key, value, _| {
            order_ok &= match (index, key) {
                (0, b"version") => true,
                (1, b"encoding") => {
                    encoding = Some(value);
                    true
                }
                (1 | 2, b"standalone") => true,
                _ => false,
            };
            index += 1;
            Ok(())
        })
        .map_err(|e| match e {
            ParseError::TooManyAttributes { .. } => {
                self.malformed(0, "XML declaration has unexpected pseudo-attributes")
            }
            other => other,
        })?;
        if !order_ok || index == 0 {
            return Err(self.malformed(
                0,
                "XML declaration must be `version`, then optional `encoding` and `standalone`",
            ));
        }
        // `<?xml`, the pseudo-attributes, `?>`.
        self.decl_end = 5 + end + 2;
        match encoding {
            None => Ok(TextEncoding::Utf8),
            Some(label) => resolve_label(label),
        }
    }
}
