//! Wall time derived from monotonic time, and UTC timestamps for VTP messages.
//!
//! The core never reads a clock. The runtime reads the wall clock **once**, together with an
//! `Instant`, and builds a [`WallClock`] from the pair; afterwards wall time is the anchor's
//! UNIX time plus the monotonic time elapsed since the anchor.
//! A simulator moves both clocks in lockstep simply by passing later `Instant`s.
//!
//! [`format_utc`] renders whole UNIX seconds as `YYYY-MM-DDTHH:MM:SSZ`, the form Comet emits in a
//! Transport `TimeStamp` (docs/protocol.md §6, §7.1 item 3), without allocating.

use core::fmt;
use std::time::{Duration, Instant};

/// Maps monotonic `Instant`s to wall time: anchor taken once by the caller.
///
/// Implementation note: wall time does not follow later steps of the system clock (NTP
/// corrections, manual changes); it drifts with the monotonic clock instead. For VTP timestamps
/// and the 30-day seen-event expiry that is the better trade: time never runs backwards.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// The monotonic instant at which the wall clock was read.
    anchor: Instant,
    /// Time since the UNIX epoch at `anchor`.
    unix_at_anchor: Duration,
}

impl WallClock {
    /// Anchors wall time: at the monotonic instant `anchor` it was `unix_at_anchor` after the
    /// UNIX epoch.
    ///
    /// The runtime typically passes `Instant::now()` and
    /// `SystemTime::now().duration_since(UNIX_EPOCH)` read back to back.
    pub fn new(anchor: Instant, unix_at_anchor: Duration) -> Self {
        Self {
            anchor,
            unix_at_anchor,
        }
    }

    /// Wall time at `now`, as a duration since the UNIX epoch.
    ///
    /// Saturating: an instant before the anchor gives the anchor's wall time, and the sum is
    /// capped at [`Duration::MAX`].
    pub fn unix_at(&self, now: Instant) -> Duration {
        self.unix_at_anchor
            .saturating_add(now.saturating_duration_since(self.anchor))
    }

    /// Whole seconds since the UNIX epoch at `now`, for VTP TimeStamps and seen-event records.
    ///
    /// Truncates toward the past, like [`Duration::as_secs`]; see [`WallClock::unix_at`].
    pub fn unix_secs_at(&self, now: Instant) -> u64 {
        self.unix_at(now).as_secs()
    }
}

/// "YYYY-MM-DDTHH:MM:SSZ" (20 ASCII bytes) for a UNIX time in whole seconds, proleptic Gregorian,
/// valid for years 1970..=9999 (clamp beyond). No allocation.
///
/// Times after `9999-12-31T23:59:59Z` (253 402 300 799) are clamped to it, so the result always
/// has a four-digit year. Leap seconds do not exist in UNIX time and never appear.
pub fn format_utc(unix_secs: u64) -> UtcStamp {
    let secs = unix_secs.min(UNIX_SECS_MAX);
    let days = secs / SECS_PER_DAY;
    let of_day = secs % SECS_PER_DAY;
    let (year, month, day) = civil_from_days(days);

    let mut out = *b"0000-00-00T00:00:00Z";
    put_digits(&mut out[0..4], year);
    put_digits(&mut out[5..7], u64::from(month));
    put_digits(&mut out[8..10], u64::from(day));
    put_digits(&mut out[11..13], of_day / 3600);
    put_digits(&mut out[14..16], of_day / 60 % 60);
    put_digits(&mut out[17..19], of_day % 60);
    UtcStamp(out)
}

/// A UTC timestamp `YYYY-MM-DDTHH:MM:SSZ`, made by [`format_utc`].
///
/// Stored inline as 20 ASCII bytes; `Debug` and `Display` write the text.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UtcStamp([u8; 20]);

impl UtcStamp {
    /// The timestamp as text, e.g. `2024-05-01T12:00:00Z`.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0)
            .expect("invariant: format_utc writes only ASCII digits and separators")
    }

    /// The timestamp as its 20 ASCII bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }
}

impl fmt::Display for UtcStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for UtcStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UtcStamp({})", self.as_str())
    }
}

/// Converts days since 1970-01-01 to a proleptic Gregorian `(year, month, day)`.
///
/// Howard Hinnant's `civil_from_days`, in unsigned arithmetic (valid for `days >= 0`): it counts
/// 400-year eras from 0000-03-01, so the leap day falls at the end of each computed year.
#[must_use]
pub fn civil_from_days(days: u64) -> (u64, u8, u8) {
    // Days from 0000-03-01 to 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146_096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1; // 1..=31
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // 1..=12
    let year = era * 400 + yoe + u64::from(month <= 2);
    // `day <= 31` and `month <= 12`, so the casts are lossless.
    (year, month as u8, day as u8)
}

/// Days since 1970-01-01 of a proleptic Gregorian date from 1970 on: the inverse of
/// [`civil_from_days`] (Howard Hinnant's `days_from_civil`). The caller checks the date (month
/// 1 to 12, a day the month has); a year before 1970 gives 0.
#[must_use]
pub fn days_from_civil(year: u64, month: u8, day: u8) -> u64 {
    let (month, day) = (u64::from(month.clamp(1, 12)), u64::from(day.max(1)));
    // Years counted from March: January and February belong to the year before.
    let y = year - u64::from(month <= 2);
    let era = y / 400;
    let yoe = y % 400;
    let mp = (month + 9) % 12; // month from March, 0..=11
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// Writes `value` as zero-padded decimal into `out` (keeping the lowest `out.len()` digits).
fn put_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        // `value % 10 < 10`, so the cast is lossless.
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Seconds in a day (UNIX time has no leap seconds).
const SECS_PER_DAY: u64 = 86_400;

/// `9999-12-31T23:59:59Z`, the last instant with a four-digit year.
const UNIX_SECS_MAX: u64 = 253_402_300_799;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (59, "1970-01-01T00:00:59Z"),
            (86_399, "1970-01-01T23:59:59Z"),
            (86_400, "1970-01-02T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (951_868_799, "2000-02-29T23:59:59Z"),
            (951_868_800, "2000-03-01T00:00:00Z"),
            (1_714_564_800, "2024-05-01T12:00:00Z"),
            (1_709_164_800, "2024-02-29T00:00:00Z"),
            (4_107_456_000, "2100-02-28T00:00:00Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (2_147_483_647, "2038-01-19T03:14:07Z"),
            (4_294_967_296, "2106-02-07T06:28:16Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
        ];
        for (secs, text) in cases {
            assert_eq!(format_utc(secs).as_str(), text, "{secs}");
        }
    }

    #[test]
    fn clamps_beyond_year_9999() {
        for secs in [253_402_300_800, 1 << 40, u64::MAX] {
            assert_eq!(format_utc(secs).as_str(), "9999-12-31T23:59:59Z");
        }
    }

    #[test]
    fn leap_year_rules() {
        // Day after Feb 28: Feb 29 in leap years, Mar 1 otherwise.
        for (year, leap) in [
            (1972, true),
            (1999, false),
            (2000, true),
            (2023, false),
            (2024, true),
            (2100, false),
            (2400, true),
            (9996, true),
        ] {
            let feb28 = naive_days_from_civil(year, 2, 28);
            let (_, month, day) = civil_from_days(feb28 + 1);
            assert_eq!((month, day) == (2, 29), leap, "{year}");
            assert_eq!((month, day) == (3, 1), !leap, "{year}");
        }
    }

    #[test]
    fn stamp_text_and_formats() {
        let stamp = format_utc(1_714_564_800);
        assert_eq!(stamp.to_string(), "2024-05-01T12:00:00Z");
        assert_eq!(format!("{stamp:?}"), "UtcStamp(2024-05-01T12:00:00Z)");
        assert_eq!(stamp.as_bytes(), b"2024-05-01T12:00:00Z");
        assert_ne!(stamp, format_utc(1_714_564_801));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a test needs some real base instant; only offsets matter
    fn wall_clock_follows_the_anchor() {
        let base = Instant::now();
        let unix = Duration::new(1_714_564_800, 250_000_000);
        let clock = WallClock::new(base, unix);
        assert_eq!(clock.unix_at(base), unix);
        assert_eq!(clock.unix_secs_at(base), 1_714_564_800);
        let later = base + Duration::from_millis(1_750);
        assert_eq!(clock.unix_at(later), Duration::new(1_714_564_802, 0));
        assert_eq!(clock.unix_secs_at(later), 1_714_564_802);
        assert_eq!(
            format_utc(clock.unix_secs_at(later)).as_str(),
            "2024-05-01T12:00:02Z"
        );
        if let Some(earlier) = base.checked_sub(Duration::from_secs(5)) {
            assert_eq!(clock.unix_at(earlier), unix, "saturates before the anchor");
        }
        let huge = WallClock::new(base, Duration::MAX);
        assert_eq!(huge.unix_at(later), Duration::MAX);
    }

    /// Days since 1970-01-01 by counting whole years and months: slow, obviously correct.
    fn naive_days_from_civil(year: u64, month: u8, day: u8) -> u64 {
        let mut days = 0;
        for y in 1970..year {
            days += if is_leap(y) { 366 } else { 365 };
        }
        for m in 1..month {
            days += u64::from(month_len(year, m));
        }
        days + u64::from(day) - 1
    }

    fn is_leap(y: u64) -> bool {
        (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
    }

    fn month_len(y: u64, m: u8) -> u8 {
        match m {
            2 if is_leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    proptest::proptest! {
        /// Formatting agrees with the naive calendar for every valid date and time of day.
        #[test]
        fn agrees_with_naive_calendar(
            year in 1970u64..=9999,
            month in 1u8..=12,
            day_seed in 0u8..31,
            of_day in 0u64..SECS_PER_DAY,
        ) {
            let day = day_seed % month_len(year, month) + 1;
            let secs = naive_days_from_civil(year, month, day) * SECS_PER_DAY + of_day;
            let want = format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
                of_day / 3600,
                of_day / 60 % 60,
                of_day % 60
            );
            let got = format_utc(secs);
            proptest::prop_assert_eq!(got.as_str(), want.as_str());
        }

        /// `days_from_civil` is the inverse of `civil_from_days` over years 1970 to 9999.
        #[test]
        fn days_from_civil_inverts_civil_from_days(days in 0u64..2_932_896) {
            let (y, m, d) = civil_from_days(days);
            proptest::prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        /// Consecutive days never skip or repeat a date.
        #[test]
        fn next_day_is_one_calendar_day_later(days in 0u64..2_932_896) {
            let (y0, m0, d0) = civil_from_days(days);
            let (y1, m1, d1) = civil_from_days(days + 1);
            let expected = if d0 < month_len(y0, m0) {
                (y0, m0, d0 + 1)
            } else if m0 < 12 {
                (y0, m0 + 1, 1)
            } else {
                (y0 + 1, 1, 1)
            };
            proptest::prop_assert_eq!((y1, m1, d1), expected);
        }
    }
}
