//! Lexical checks of the XSD simple types the VOEvent 2.0 schema uses, as libxml2 2.14
//! implements them (`xmlschemastypes.c`, `uri.c`): see the [parent module](super) for the
//! quirks reproduced.

/// XML whitespace (`S`, and libxml2's `IS_WSP_BLANK_CH`).
pub(super) fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// `xs:float` as libxml2 reads it: returns the single-precision value, or `None` if the
/// lexical form is invalid.
pub(super) fn parse_float(value: &str) -> Option<f32> {
    // libxml2 skips leading whitespace; trailing whitespace only after a number, not after
    // `NaN` or `INF` (its quirk, reproduced).
    let s = value.trim_start_matches(is_xml_space);
    if s == "NaN" {
        return Some(f32::NAN);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let negative = bytes.first() == Some(&b'-');
    if negative {
        i += 1;
    }
    if &bytes[i..] == b"INF" {
        return Some(if negative {
            f32::NEG_INFINITY
        } else {
            f32::INFINITY
        });
    }
    if !negative && bytes.get(i) == Some(&b'+') {
        i += 1;
    }
    if matches!(bytes.get(i), None | Some(b'+' | b'-')) {
        return None;
    }
    let digits = |i: &mut usize| {
        let from = *i;
        while bytes.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - from
    };
    let before = digits(&mut i);
    let after = if bytes.get(i) == Some(&b'.') {
        i += 1;
        digits(&mut i)
    } else {
        0
    };
    if before == 0 && after == 0 {
        return None;
    }
    let mantissa_end = i;
    let mut exponent_digits = 0;
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        exponent_digits = digits(&mut i);
    }
    let end = i;
    if !bytes[end..].iter().all(|&b| is_xml_space(char::from(b))) {
        return None;
    }
    // libxml2 takes the value from sscanf("%f"), which ignores an exponent without digits.
    let number = if exponent_digits > 0 {
        &s[..end]
    } else {
        &s[..mantissa_end]
    };
    number.parse().ok()
}

/// `xs:dateTime` as libxml2 2.14 reads it (`xmlSchemaValidateDates`).
pub(super) fn is_date_time(s: &[u8]) -> bool {
    let two = |i: usize| -> Option<u32> {
        let (a, b) = (*s.get(i)?, *s.get(i + 1)?);
        (a.is_ascii_digit() && b.is_ascii_digit())
            .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
    };
    let mut i = 0;
    // Year: `-`?, four or more digits (no leading zero beyond four), not zero, fits a C long.
    let negative = s.first() == Some(&b'-');
    if negative {
        i += 1;
    }
    let first = i;
    let mut year: i64 = 0;
    while let Some(&d) = s.get(i).filter(|d| d.is_ascii_digit()) {
        let Some(y) = year
            .checked_mul(10)
            .and_then(|y| y.checked_add(i64::from(d - b'0')))
        else {
            return false;
        };
        year = y;
        i += 1;
    }
    let year_digits = i - first;
    if year_digits < 4 || (year_digits > 4 && s[first] == b'0') || year == 0 {
        return false;
    }
    if negative {
        year = -year;
    }
    let Some(month) = s.get(i).filter(|&&c| c == b'-').and_then(|_| two(i + 1)) else {
        return false;
    };
    i += 3;
    let Some(day) = s.get(i).filter(|&&c| c == b'-').and_then(|_| two(i + 1)) else {
        return false;
    };
    i += 3;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || day > days_in_month(year, month) {
        return false;
    }
    if s.get(i) != Some(&b'T') {
        return false;
    }
    i += 1;
    let Some(hour) = two(i) else { return false };
    let Some(minute) = s
        .get(i + 2)
        .filter(|&&c| c == b':')
        .and_then(|_| two(i + 3))
    else {
        return false;
    };
    i += 5;
    if hour > 24 || minute > 59 || s.get(i) != Some(&b':') {
        return false;
    }
    i += 1;
    // Seconds: two digits, then an optional fraction of at least one digit, accumulated in a
    // double exactly as libxml2's PARSE_FLOAT does.
    let Some(whole) = two(i) else { return false };
    i += 2;
    let mut second = f64::from(whole);
    if s.get(i) == Some(&b'.') {
        i += 1;
        if !s.get(i).is_some_and(u8::is_ascii_digit) {
            return false;
        }
        let mut mult = 1.0f64;
        while let Some(&d) = s.get(i).filter(|d| d.is_ascii_digit()) {
            mult /= 10.0;
            second += f64::from(d - b'0') * mult;
            i += 1;
        }
    }
    let time_ok = (hour < 24 && second < 60.0) || (hour == 24 && minute == 0 && second == 0.0);
    if !time_ok {
        return false;
    }
    // Time zone: none, `Z`, or `(+|-)hh:mm` within ±14:00.
    match s.get(i) {
        None => return true,
        Some(b'Z') => i += 1,
        Some(b'+' | b'-') => {
            let Some(h) = two(i + 1) else { return false };
            let Some(m) = s
                .get(i + 3)
                .filter(|&&c| c == b':')
                .and_then(|_| two(i + 4))
            else {
                return false;
            };
            if h > 23 || m > 59 || h * 60 + m > 840 {
                return false;
            }
            i += 6;
        }
        Some(_) => return false,
    }
    // After a time zone, and only there, libxml2 skips trailing whitespace.
    s[i..].iter().all(|&c| is_xml_space(char::from(c)))
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `xs:ID` / `xs:NCName` as libxml2's `xmlValidateNCName(value, 1)` reads it: surrounding
/// whitespace allowed.
pub(super) fn is_ncname(value: &str) -> bool {
    let s = value.trim_matches(is_xml_space);
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let letter = |c: char| c.is_ascii_alphabetic() || (!c.is_ascii() && c.is_alphabetic());
    (first == '_' || letter(first))
        && chars.all(|c| {
            letter(c)
                || c.is_ascii_digit()
                || matches!(c, '.' | '-' | '_')
                || (!c.is_ascii() && (c.is_numeric() || is_combining_or_extender(c)))
        })
}

/// An approximation of XML 1.0 (4th edition) `CombiningChar | Extender`.
fn is_combining_or_extender(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}' | '\u{0483}'..='\u{0486}' | '\u{0591}'..='\u{05C4}'
        | '\u{064B}'..='\u{0652}' | '\u{0900}'..='\u{0903}' | '\u{093C}'..='\u{094D}'
        | '\u{3099}' | '\u{309A}' | '\u{00B7}' | '\u{02D0}' | '\u{02D1}' | '\u{0387}'
        | '\u{0640}' | '\u{0E46}' | '\u{0EC6}' | '\u{3005}' | '\u{3031}'..='\u{3035}'
        | '\u{309D}' | '\u{309E}' | '\u{30FC}'..='\u{30FE}')
}

/// `xs:anyURI` as libxml2 2.14 reads it: collapsed, then characters outside printable ASCII
/// and `<>"{}|\^`'` and space read as `_`, then `xmlParseURI` (RFC 3986 URI reference).
pub(super) fn is_any_uri(value: &str) -> bool {
    let s = value.trim_matches(is_xml_space);
    s.is_empty() || Uri(s.as_bytes()).reference()
}

/// A port of libxml2's RFC 3986 parser (`uri.c`), reading bytes through libxml2's anyURI
/// substitution. Each method returns the index after what it read, `None` on failure.
struct Uri<'s>(&'s [u8]);

impl Uri<'_> {
    /// The byte at `i` as libxml2 sees it; 0 past the end.
    fn at(&self, i: usize) -> u8 {
        match self.0.get(i) {
            None => 0,
            Some(&c)
                if !(32..127).contains(&c)
                    || matches!(c, b' ' | b'<' | b'>' | b'"' | b'{' | b'}')
                    || matches!(c, b'|' | b'\\' | b'^' | b'`' | b'\'') =>
            {
                b'_'
            }
            Some(&c) => c,
        }
    }

    fn reference(&self) -> bool {
        self.absolute() || self.relative()
    }

    /// `xmlParse3986URI`: scheme ":" hier-part [ "?" query ] [ "#" fragment ].
    fn absolute(&self) -> bool {
        let Some(i) = self.scheme(0) else {
            return false;
        };
        if self.at(i) != b':' {
            return false;
        }
        self.hier_part(i + 1).is_some_and(|i| self.tail(i))
    }

    /// `xmlParse3986RelativeRef`.
    fn relative(&self) -> bool {
        let i = if self.at(0) == b'/' && self.at(1) == b'/' {
            self.authority(2).and_then(|i| self.path_ab_empty(i))
        } else if self.at(0) == b'/' {
            self.path_absolute(0)
        } else if self.pchar(0) {
            self.path_no_scheme(0)
        } else {
            Some(0)
        };
        i.is_some_and(|i| self.tail(i))
    }

    /// Optional query and fragment, then the end.
    fn tail(&self, mut i: usize) -> bool {
        if self.at(i) == b'?' {
            i = self.skip(i + 1, |u, i| u.pchar(i) || matches!(u.at(i), b'/' | b'?'));
        }
        if self.at(i) == b'#' {
            i = self.skip(i + 1, |u, i| {
                u.pchar(i) || matches!(u.at(i), b'/' | b'?' | b'[' | b']')
            });
        }
        self.at(i) == 0
    }

    fn scheme(&self, i: usize) -> Option<usize> {
        if !self.at(i).is_ascii_alphabetic() {
            return None;
        }
        let mut i = i + 1;
        while self.at(i).is_ascii_alphanumeric() || matches!(self.at(i), b'+' | b'-' | b'.') {
            i += 1;
        }
        Some(i)
    }

    fn hier_part(&self, i: usize) -> Option<usize> {
        if self.at(i) == b'/' && self.at(i + 1) == b'/' {
            self.authority(i + 2).and_then(|i| self.path_ab_empty(i))
        } else if self.at(i) == b'/' {
            self.path_absolute(i)
        } else if self.pchar(i) {
            self.path_rootless(i)
        } else {
            Some(i)
        }
    }

    /// [ userinfo "@" ] host [ ":" port ]. libxml2's IPv4 branch never succeeds (it misses
    /// a dot), so a dotted quad is read as a registered name, which accepts it all the same.
    fn authority(&self, i: usize) -> Option<usize> {
        let user_end = self.skip(i, |u, i| {
            u.unreserved(i) || u.pct_encoded(i) || u.sub_delim(i) || u.at(i) == b':'
        });
        let mut i = if self.at(user_end) == b'@' {
            user_end + 1
        } else {
            i
        };
        if self.at(i) == b'[' {
            i += 1;
            while !matches!(self.at(i), b']' | 0) {
                i += 1;
            }
            if self.at(i) != b']' {
                return None;
            }
            i += 1;
        } else {
            i = self.skip(i, |u, i| {
                u.unreserved(i) || u.pct_encoded(i) || u.sub_delim(i)
            });
        }
        if self.at(i) == b':' {
            i += 1;
            if !self.at(i).is_ascii_digit() {
                return None;
            }
            let mut port: i32 = 0;
            while self.at(i).is_ascii_digit() {
                port = port
                    .checked_mul(10)?
                    .checked_add(i32::from(self.at(i) - b'0'))?;
                i += 1;
            }
        }
        Some(i)
    }

    /// A segment; `forbid` (0 for none) ends it; an empty one fails unless `empty`.
    fn segment(&self, i: usize, forbid: u8, empty: bool) -> Option<usize> {
        if !self.pchar(i) || self.at(i) == forbid {
            return empty.then_some(i);
        }
        Some(self.skip(self.next(i), |u, i| u.pchar(i) && u.at(i) != forbid))
    }

    fn slashed_segments(&self, mut i: usize) -> Option<usize> {
        while self.at(i) == b'/' {
            i = self.segment(i + 1, 0, true)?;
        }
        Some(i)
    }

    fn path_ab_empty(&self, i: usize) -> Option<usize> {
        self.slashed_segments(i)
    }

    fn path_absolute(&self, i: usize) -> Option<usize> {
        if self.at(i) != b'/' {
            return None;
        }
        match self.segment(i + 1, 0, false) {
            Some(i) => self.slashed_segments(i),
            None => Some(i + 1),
        }
    }

    fn path_rootless(&self, i: usize) -> Option<usize> {
        self.segment(i, 0, false)
            .and_then(|i| self.slashed_segments(i))
    }

    fn path_no_scheme(&self, i: usize) -> Option<usize> {
        self.segment(i, b':', false)
            .and_then(|i| self.slashed_segments(i))
    }

    /// Advances over characters (percent-escapes as one) while `accept` holds.
    fn skip(&self, mut i: usize, accept: impl Fn(&Self, usize) -> bool) -> usize {
        while accept(self, i) {
            i = self.next(i);
        }
        i
    }

    fn next(&self, i: usize) -> usize {
        if self.at(i) == b'%' { i + 3 } else { i + 1 }
    }

    fn unreserved(&self, i: usize) -> bool {
        self.at(i).is_ascii_alphanumeric() || matches!(self.at(i), b'-' | b'.' | b'_' | b'~')
    }

    fn pct_encoded(&self, i: usize) -> bool {
        self.at(i) == b'%'
            && self.at(i + 1).is_ascii_hexdigit()
            && self.at(i + 2).is_ascii_hexdigit()
    }

    fn sub_delim(&self, i: usize) -> bool {
        matches!(
            self.at(i),
            b'!' | b'$' | b'&' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b'\''
        )
    }

    fn pchar(&self, i: usize) -> bool {
        self.unreserved(i)
            || self.pct_encoded(i)
            || self.sub_delim(i)
            || matches!(self.at(i), b':' | b'@')
    }
}
