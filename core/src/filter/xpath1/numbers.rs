//! XPath 1.0 numbers as libxml2 reads them: number literals in an expression (with libxml2's
//! optional exponent) and the string-to-number conversion of `number()` and comparisons.

/// XPath 1.0 `number(string)` as libxml2 computes it: optional whitespace, an optional `-`,
/// digits with an optional fraction, libxml2's optional exponent, optional whitespace; anything
/// else (`+5`, `0x3`, `INF`, `NaN`, the empty string) is NaN.
pub(crate) fn string_to_number(s: &str) -> f64 {
    let t = s.trim_matches([' ', '\t', '\r', '\n']);
    let (negative, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    match scan_number(body) {
        Some((value, len)) if len == body.len() => {
            if negative {
                -value
            } else {
                value
            }
        }
        _ => f64::NAN,
    }
}

/// Reads an unsigned number at the start of `s` the way libxml2 does (digits, an optional
/// fraction, an optional exponent whose digits may be missing) and returns its value and
/// length, or `None` if `s` does not start with a digit or `.` and a digit.
pub(super) fn scan_number(s: &str) -> Option<(f64, usize)> {
    let bytes = s.as_bytes();
    let digits = |p: &mut usize| {
        let start = *p;
        while bytes.get(*p).is_some_and(u8::is_ascii_digit) {
            *p += 1;
        }
        *p - start
    };
    let mut p = 0;
    let mut count = digits(&mut p);
    if bytes.get(p) == Some(&b'.') {
        p += 1;
        count += digits(&mut p);
    }
    if count == 0 {
        return None;
    }
    let mantissa = &s[..p];
    let mantissa = mantissa.strip_suffix('.').unwrap_or(mantissa);
    let mut exponent: i64 = 0;
    if matches!(bytes.get(p), Some(b'e' | b'E')) {
        p += 1;
        let negative = match bytes.get(p) {
            Some(b'-') => {
                p += 1;
                true
            }
            Some(b'+') => {
                p += 1;
                false
            }
            _ => false,
        };
        while let Some(d) = bytes.get(p).filter(|d| d.is_ascii_digit()) {
            // Saturates far beyond f64's range: 1e99999999 is still infinity.
            exponent = (exponent * 10 + i64::from(d - b'0')).min(1_000_000);
            p += 1;
        }
        if negative {
            exponent = -exponent;
        }
    }
    // Rust's parser rounds correctly; "12.5" with exponent -3 reads "12.5e-3".
    let value = format!("{mantissa}e{exponent}").parse::<f64>().ok()?;
    Some((value, p))
}
