//! IVOA identifiers (IVOIDs, "IVORNs") checked with Comet's rules.
//!
//! A VOEvent names itself with an IVOID such as
//! `ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729`: the scheme `ivo://`, an *authority*
//! (`nasa.gsfc.gcn`), an optional *resource key* (`/SWIFT`), an optional `#` and a *local ID*
//! (`BAT_GRB_Pos_532871-729`). A Comet receiver naks a submission whose IVOID it cannot parse
//! (`Invalid IVOID: <id>`) or whose local ID is empty (`No per-event local ID`); see
//! docs/protocol.md §4.1. [`Ivoid::parse`] accepts exactly the identifiers Comet accepts and splits
//! them the same way, and [`check_event_ivorn`] adds the receiver's non-empty local ID rule.
//!
//! # The rule
//!
//! Comet matches this Python regular expression from the start of the string, then rejects a
//! resource key containing `//`, `/./` or `/../`, or ending in `/` (IVOA Identifiers 2.0
//! §2.3.3):
//!
//! ```text
//! ivo://(?P<auth>[a-zA-Z0-9][\w\-.~*'()]{2,})(?P<rsrc>/[\w\-.~*'()/]*)?#?(?P<local>[\w\-.~*'()+=/%!$&,;:@?]*)$
//! ```
//!
//! The three character classes nest: every authority character may appear in a resource key,
//! and every resource key character (`/` included) may appear in a local ID. Because of that
//! nesting, the regex matches if and only if its fully greedy path matches, so the hand-written
//! matcher here takes that path without backtracking:
//!
//! 1. the authority is the longest run of authority characters (at least three, the first an
//!    ASCII letter or digit);
//! 2. if a `/` follows, the resource key is the longest run of resource key characters;
//! 3. one `#` is consumed if present;
//! 4. everything left, to the end of the string, must be local ID characters.
//!
//! The resource key check runs after the split, as in Comet, so a bad key is a rejection and
//! never a re-split: `ivo://auth/rsrc/+x` has the key `/rsrc/` (trailing slash, rejected), not
//! the key `/rsrc` and the local ID `/+x`.
//!
//! Splits worth knowing, all identical to Comet's: `ivo://auth/rsrc+x` has the resource key
//! `/rsrc` and the local ID `+x` (the `#` is optional); `ivo://auth:8080/x` has the authority
//! `auth` and the local ID `:8080/x`; `ivo://a.b#x` has no resource key; `ivo://authreskey#local`
//! cannot be told apart from an authority without a resource key.
//!
//! # Differences from Comet
//!
//! - **Trailing newline.** Python's `$` also matches just before one final `\n`, so Comet
//!   accepts `ivo://a.b/c#x\n` (with the local ID `x`). We decided against that quirk: a newline
//!   is never part of an IVOID here, and the identifier is rejected.
//! - **Unicode `\w`.** Python's `\w` is Unicode-aware: `_` plus every character for which
//!   `str.isalnum()` holds (Unicode letters `L*` and numbers `Nd`/`Nl`/`No`). The Rust equivalent
//!   used here is `_` plus [`char::is_alphanumeric`] (the `Alphabetic` and `Numeric` properties).
//!   The two agree on ASCII and on the letters and digits of every script. Checked over all code
//!   points against Python 3.11 (Unicode 14): Python accepts nothing that this module rejects,
//!   and this module also accepts about 900 BMP combining marks that Unicode counts as
//!   `Other_Alphabetic` (such as U+0345, Hebrew points from U+05B0, the Devanagari vowel sign
//!   U+093E), plus letters assigned in later Unicode versions. So a few exotic identifiers that
//!   Comet rejects pass here; real IVOIDs are ASCII.
//!
//! Comet compares identifiers only as exact strings, and so does this module: nothing is
//! case-folded or normalised.

use core::fmt;

/// A syntactically valid IVOA identifier, borrowed from the string it was parsed from.
///
/// Made by [`Ivoid::parse`]; the accessors return slices of that string. Equality compares the
/// string and the split (which the string determines), so it is exact string equality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ivoid<'a> {
    /// The whole identifier, `ivo://` included.
    s: &'a str,
    /// Byte index where the authority ends (and the resource key, if any, starts).
    auth_end: usize,
    /// Byte index where the resource key ends; equal to `auth_end` when there is none.
    rsrc_end: usize,
    /// Byte index where the local ID starts: `rsrc_end`, or `rsrc_end + 1` after a `#`.
    local_start: usize,
}

impl<'a> Ivoid<'a> {
    /// Parses `s` with Comet's rules (see the [module docs](self)).
    ///
    /// Runs in one pass over `s` and does not allocate.
    ///
    /// # Errors
    ///
    /// Returns an [`IvoidError`] naming the first thing found wrong: a missing `ivo://`, a bad
    /// authority, a bad resource key or a character not allowed in the local ID. Byte offsets in
    /// the error count from the start of `s`.
    pub fn parse(s: &'a str) -> Result<Self, IvoidError> {
        let Some(rest) = s.strip_prefix(SCHEME) else {
            return Err(IvoidError::NotIvoScheme);
        };
        let bytes = s.as_bytes();

        // 1. Authority: an ASCII letter or digit, then the longest run of authority chars.
        match rest.chars().next() {
            Some(c) if c.is_ascii_alphanumeric() => {}
            found => {
                return Err(IvoidError::BadAuthority {
                    at: SCHEME.len(),
                    problem: AuthorityProblem::BadFirstChar(found),
                });
            }
        }
        let (auth_end, auth_chars) = scan(s, SCHEME.len() + 1, AUTH);
        let auth_chars = auth_chars + 1;
        if auth_chars < AUTHORITY_CHARS_MIN {
            return Err(IvoidError::BadAuthority {
                at: SCHEME.len(),
                problem: AuthorityProblem::TooShort { chars: auth_chars },
            });
        }

        // 2. Optional resource key: `/`, then the longest run of resource key chars.
        let rsrc_end = if bytes.get(auth_end) == Some(&b'/') {
            scan(s, auth_end + 1, RSRC).0
        } else {
            auth_end
        };

        // 3. Optional `#`.
        let marker = bytes.get(rsrc_end) == Some(&b'#');
        let local_start = rsrc_end + usize::from(marker);

        // 4. The rest must be local ID characters, to the very end.
        let (local_end, _) = scan(s, local_start, LOCAL);
        if local_end < s.len() {
            return Err(local_failure(
                s,
                auth_end,
                rsrc_end,
                local_start,
                local_end,
                marker,
            ));
        }

        // Comet checks the resource key only after the regex has matched.
        if rsrc_end > auth_end {
            check_resource_key(&s[auth_end..rsrc_end], auth_end)?;
        }

        Ok(Self {
            s,
            auth_end,
            rsrc_end,
            local_start,
        })
    }

    /// The whole identifier, exactly as given to [`Ivoid::parse`].
    pub fn as_str(&self) -> &'a str {
        self.s
    }

    /// The authority: the part between `ivo://` and the resource key, `#` or local ID.
    ///
    /// Always at least three characters, starting with an ASCII letter or digit.
    pub fn authority(&self) -> &'a str {
        &self.s[SCHEME.len()..self.auth_end]
    }

    /// The resource key with its leading `/`, or `None` if the authority is followed directly
    /// by `#`, by the local ID or by the end.
    pub fn resource_key(&self) -> Option<&'a str> {
        (self.rsrc_end > self.auth_end).then(|| &self.s[self.auth_end..self.rsrc_end])
    }

    /// Whether a `#` separated the local ID from what precedes it.
    ///
    /// Comet makes the `#` optional, so `ivo://auth/rsrc+x` has a local ID (`+x`) but no `#`,
    /// and `ivo://auth/rsrc#` has a `#` but an empty local ID.
    pub fn has_fragment_marker(&self) -> bool {
        self.local_start > self.rsrc_end
    }

    /// The local ID (the part after the `#`, if any); may be empty.
    pub fn local_id(&self) -> &'a str {
        &self.s[self.local_start..]
    }
}

impl fmt::Display for Ivoid<'_> {
    /// Writes the identifier exactly as parsed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.s)
    }
}

/// Why a string is not a valid IVOID under Comet's rules.
///
/// Offsets (`at`) are byte offsets into the string given to [`Ivoid::parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IvoidError {
    /// The string does not start with the lowercase scheme `ivo://`.
    #[error("IVOID does not start with `ivo://`; the scheme must be present and lowercase")]
    NotIvoScheme,
    /// The authority (after `ivo://`) is malformed.
    #[error("bad IVOID authority at byte {at}: {problem}")]
    BadAuthority {
        /// Where the problem was found.
        at: usize,
        /// What is wrong with it.
        problem: AuthorityProblem,
    },
    /// The resource key (from the first `/` after the authority) is malformed.
    #[error("bad IVOID resource key at byte {at}: {problem}")]
    BadResourceKey {
        /// Where the problem was found.
        at: usize,
        /// What is wrong with it.
        problem: ResourceKeyProblem,
    },
    /// The local ID contains a character that is not allowed there.
    #[error(
        "bad IVOID local ID: {ch:?} at byte {at} is not allowed; the local ID may hold letters, \
         digits and `_-.~*'()+=/%!$&,;:@?`, and no second `#`"
    )]
    BadLocalId {
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
}

/// What is wrong with an IVOID authority; see [`IvoidError::BadAuthority`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthorityProblem {
    /// The first character is not an ASCII letter or digit (`None`: nothing follows `ivo://`).
    BadFirstChar(Option<char>),
    /// The authority has fewer than three characters.
    TooShort {
        /// How many characters it has.
        chars: usize,
    },
    /// The authority ends in a character allowed neither in an authority nor after one.
    BadChar(char),
}

impl fmt::Display for AuthorityProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadFirstChar(None) => f.write_str(
                "it is missing; write an authority such as `example.org` after `ivo://`",
            ),
            Self::BadFirstChar(Some(c)) => write!(
                f,
                "it starts with {c:?}; it must start with an ASCII letter or digit"
            ),
            Self::TooShort { chars } => write!(
                f,
                "it has {chars} character(s); it needs at least 3 (letters, digits, `_-.~*'()`)"
            ),
            Self::BadChar(c) => write!(
                f,
                "{c:?} is not allowed; an authority may hold only letters, digits and `_-.~*'()`"
            ),
        }
    }
}

/// What is wrong with an IVOID resource key; see [`IvoidError::BadResourceKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResourceKeyProblem {
    /// A character allowed neither in a resource key nor after one.
    BadChar(char),
    /// An empty segment: the key contains `//`.
    EmptySegment,
    /// A `.` or `..` segment followed by `/`: the key contains `/./` or `/../`.
    DotSegment,
    /// The key ends in `/` (this includes a key that is just `/`).
    TrailingSlash,
}

impl fmt::Display for ResourceKeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadChar(c) => write!(
                f,
                "{c:?} is not allowed; a resource key may hold only letters, digits and \
                 `_-.~*'()/` (put other characters in the local ID, after `#`)"
            ),
            Self::EmptySegment => f.write_str("it contains `//`; remove the empty segment"),
            Self::DotSegment => {
                f.write_str("it contains `/./` or `/../`; remove the relative path segment")
            }
            Self::TrailingSlash => f.write_str("it ends in `/`; remove the trailing slash"),
        }
    }
}

/// Checks the IVORN of a received event as a Comet receiver does.
///
/// The IVORN must be a valid IVOID ([`Ivoid::parse`]) with a non-empty local ID (VOEvent 2.0
/// §3.1.1). A `#` is not required: Comet accepts `ivo://auth/rsrc+x`.
///
/// # Errors
///
/// [`EventIdError::Invalid`] if the IVORN does not parse, [`EventIdError::NoLocalId`] if its
/// local ID is empty (`ivo://auth/rsrc`, `ivo://auth/rsrc#`). Use
/// [`EventIdError::nak_reason`] for the text of the nak.
pub fn check_event_ivorn(s: &str) -> Result<Ivoid<'_>, EventIdError> {
    let ivoid = Ivoid::parse(s).map_err(EventIdError::Invalid)?;
    if ivoid.local_id().is_empty() {
        return Err(EventIdError::NoLocalId);
    }
    Ok(ivoid)
}

/// Why an event's IVORN was refused by [`check_event_ivorn`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventIdError {
    /// The IVORN is not a valid IVOID; the source says why.
    #[error("event IVORN is not a valid IVOID")]
    Invalid(#[source] IvoidError),
    /// The IVORN is a valid IVOID but has no per-event local ID.
    #[error(
        "event IVORN has an empty local ID; give each event its own ID after `#`, \
         as in `ivo://example.org/stream#event-1`"
    )]
    NoLocalId,
}

impl EventIdError {
    /// The reason text Comet puts in its nak for this error, for the event IVORN `ivorn`.
    ///
    /// `Invalid IVOID: <ivorn>` or `No per-event local ID`, byte for byte as a Comet receiver
    /// sends them (docs/protocol.md §4.1). Formatting it does not allocate.
    pub fn nak_reason<'s>(&self, ivorn: &'s str) -> NakReason<'s> {
        match self {
            Self::Invalid(_) => NakReason(Some(ivorn)),
            Self::NoLocalId => NakReason(None),
        }
    }
}

/// The nak reason text for an [`EventIdError`]; made by [`EventIdError::nak_reason`].
///
/// Its [`Display`](fmt::Display) writes the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NakReason<'a>(Option<&'a str>);

impl fmt::Display for NakReason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ivorn) => write!(f, "Invalid IVOID: {ivorn}"),
            None => f.write_str("No per-event local ID"),
        }
    }
}

/// Builds the error for a local ID that stops at `local_end` before the end of `s`.
///
/// Implementation note: Comet's regex only says "no match", so which part to blame is our
/// choice. The local ID usually fails on a `#`. If no `#` preceded the local ID, that `#` was
/// meant as the marker, and the real culprit is the first local ID character, the one that ended
/// the authority or resource key early (`ivo://auth:8080/x#y`, `ivo://a/data!g-vo.org#x`).
fn local_failure(
    s: &str,
    auth_end: usize,
    rsrc_end: usize,
    local_start: usize,
    local_end: usize,
    marker: bool,
) -> IvoidError {
    let ch = char_at(s, local_end);
    if ch == '#' && !marker && local_end > local_start {
        let first = char_at(s, local_start);
        return if rsrc_end > auth_end {
            IvoidError::BadResourceKey {
                at: local_start,
                problem: ResourceKeyProblem::BadChar(first),
            }
        } else {
            IvoidError::BadAuthority {
                at: local_start,
                problem: AuthorityProblem::BadChar(first),
            }
        };
    }
    IvoidError::BadLocalId { ch, at: local_end }
}

/// Applies Comet's resource key check to `key` (which starts with `/` at byte `base` of the
/// IVOID): no `//`, `/./`, `/../`, and no trailing `/`.
///
/// A segment followed by another `/` must not be empty, `.` or `..`; the last segment must not
/// be empty. (`/data/..` at the very end passes, as it does in Comet.)
fn check_resource_key(key: &str, base: usize) -> Result<(), IvoidError> {
    let mut segments = key[1..].split('/');
    let mut start = base + 1;
    let mut current = segments.next();
    while let Some(segment) = current {
        let next = segments.next();
        let problem = match (segment, next.is_some()) {
            ("", false) => Some(ResourceKeyProblem::TrailingSlash),
            ("", true) => Some(ResourceKeyProblem::EmptySegment),
            ("." | "..", true) => Some(ResourceKeyProblem::DotSegment),
            _ => None,
        };
        if let Some(problem) = problem {
            // Point at the `/` that opens the offending segment.
            return Err(IvoidError::BadResourceKey {
                at: start - 1,
                problem,
            });
        }
        start += segment.len() + 1;
        current = next;
    }
    Ok(())
}

/// Scans `s` from byte `from` while characters are in `class`.
///
/// Returns the byte index of the first character not in the class (or `s.len()`) and the number
/// of characters accepted. ASCII is looked up in [`ASCII_CLASSES`]; any other character is in
/// every class if it is alphanumeric (Python's Unicode `\w`), else in none.
fn scan(s: &str, from: usize, class: u8) -> (usize, usize) {
    let bytes = s.as_bytes();
    let mut i = from;
    let mut chars = 0;
    while let Some(&b) = bytes.get(i) {
        if b.is_ascii() {
            if ASCII_CLASSES[usize::from(b)] & class == 0 {
                break;
            }
            i += 1;
        } else {
            let c = char_at(s, i);
            if !c.is_alphanumeric() {
                break;
            }
            i += c.len_utf8();
        }
        chars += 1;
    }
    (i, chars)
}

/// The character starting at byte `i` of `s`.
///
/// `i` must be a character boundary before the end of `s`; every caller gets `i` from [`scan`],
/// which stops only at boundaries, after checking that a byte exists there.
fn char_at(s: &str, i: usize) -> char {
    s[i..]
        .chars()
        .next()
        .expect("invariant: callers pass a char boundary before the end of the string")
}

/// The scheme, which Comet requires in lowercase.
const SCHEME: &str = "ivo://";

/// IVOA Identifiers 2.0 §2.3: `AUTHORITYID = ALPHANUM 2*UNRESERVED`.
const AUTHORITY_CHARS_MIN: usize = 3;

/// Class bit: allowed after the first authority character (`\w-.~*'()`).
const AUTH: u8 = 1;
/// Class bit: allowed in a resource key after its leading `/` (authority chars plus `/`).
const RSRC: u8 = 2;
/// Class bit: allowed in a local ID (resource key chars plus `+=%!$&,;:@?`).
const LOCAL: u8 = 4;

/// Class bits for each ASCII byte.
const ASCII_CLASSES: [u8; 128] = ascii_classes();

/// Builds [`ASCII_CLASSES`] from Comet's character classes.
const fn ascii_classes() -> [u8; 128] {
    let mut table = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' {
            table[b] = AUTH | RSRC | LOCAL;
        }
        b += 1;
    }
    let mut i = 0;
    let unreserved = b"-.~*'()";
    while i < unreserved.len() {
        table[unreserved[i] as usize] = AUTH | RSRC | LOCAL;
        i += 1;
    }
    table[b'/' as usize] = RSRC | LOCAL;
    let mut i = 0;
    let local_only = b"+=%!$&,;:@?";
    while i < local_only.len() {
        table[local_only[i] as usize] = LOCAL;
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests;
