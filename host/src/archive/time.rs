//! UTC times of the archive's API: unix milliseconds to and from ISO 8601
//! (`2026-12-07T09:00:00.123Z`).

use vtp_core::time::{civil_from_days, days_from_civil};

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of unix milliseconds.
pub(crate) fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    // Received times are after 1970: an earlier one (a clock set wrong) reads as 1970-01-01.
    let (y, mo, d) = civil_from_days(u64::try_from(secs.div_euclid(86_400)).unwrap_or(0));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Unix milliseconds of an ISO 8601 UTC time: `YYYY-MM-DDTHH:MM:SS[.fff...]Z` (a trailing
/// `Z` or `+00:00`, or none: UTC either way), or a date `YYYY-MM-DD` (its midnight). Digits
/// after the milliseconds are dropped. Years 1970 to 9999.
pub(crate) fn parse_ms(s: &str) -> Result<i64, &'static str> {
    const WANT: &str = "expected an ISO 8601 UTC time such as 2026-12-07T09:00:00Z";
    let b = s.as_bytes();
    if b.len() > 40 {
        return Err(WANT);
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, &'static str> {
        let part = b.get(r).ok_or(WANT)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(WANT);
        }
        Ok(part.iter().fold(0i64, |a, c| a * 10 + i64::from(c - b'0')))
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return Err(WANT);
    }
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) {
        return Err(WANT);
    }
    let month_days = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let max_d = month_days[(mo - 1) as usize] + i64::from(mo == 2 && leap);
    if !(1..=max_d).contains(&d) {
        return Err(WANT);
    }
    // Checked above: 1970 <= y <= 9999, a valid month and day.
    let days = days_from_civil(y as u64, mo as u8, d as u8) as i64;
    if b.len() == 10 {
        return Ok(days * 86_400_000);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return Err(WANT);
    }
    let (h, mi) = (num(11..13)?, num(14..16)?);
    if b.get(16) != Some(&b':') {
        return Err(WANT);
    }
    let sec = num(17..19)?;
    if h > 23 || mi > 59 || sec > 60 {
        return Err(WANT);
    }
    let mut i = 19;
    let mut milli = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                milli = milli * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return Err(WANT);
        }
        for _ in (i - start)..3 {
            milli *= 10;
        }
    }
    match &b[i..] {
        b"" | b"Z" | b"z" | b"+00:00" => {}
        _ => return Err(WANT),
    }
    Ok(((days * 86_400 + h * 3600 + mi * 60 + sec.min(59)) * 1000) + milli)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let ms = parse_ms("2026-12-07T09:00:00.123Z").expect("valid");
        assert_eq!(format_ms(ms), "2026-12-07T09:00:00.123Z");
        assert_eq!(parse_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_ms("1970-01-02"), Ok(86_400_000));
        assert_eq!(parse_ms("2000-02-29T00:00:00.5Z"), Ok(951_782_400_500));
        assert_eq!(
            parse_ms("2024-03-01T00:00:00.123456789Z"),
            Ok(1_709_251_200_123)
        );
        assert_eq!(format_ms(1_709_251_200_123), "2024-03-01T00:00:00.123Z");
        for bad in [
            "",
            "x",
            "2026-13-01T00:00:00Z",
            "2023-02-29",
            "2026-12-07T24:00:00Z",
            "2026-12-07T09:00:00+01:00",
            "2026-12-07T09:00",
            "1969-12-31",
            "2026-12-07T09:00:00.Z",
            "'; DROP TABLE events; --",
            "２０２６-12-07",
        ] {
            assert!(parse_ms(bad).is_err(), "{bad}");
        }
    }
}
