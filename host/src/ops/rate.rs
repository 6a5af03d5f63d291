//! Events accepted per minute over the last 24 hours, for the status page's chart: a fixed
//! ring of [`MINUTES`] counters, one per minute of UNIX time, written by the loop only and read
//! by anyone. The clock is passed in (the loop's wall clock when it counts, the reader's when it
//! reads), so the ring is tested in virtual time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Minutes kept: 24 hours.
pub const MINUTES: usize = 1440;

const MINUTE_MS: u64 = 60_000;

/// The ring. Slot `m % MINUTES` holds the count of minute `m` (minutes since the UNIX epoch)
/// while its tag says `m + 1` (0: never written); a slot whose tag names an older minute counts
/// as 0 and is reset by the next event that falls in it.
pub(super) struct MinuteRing {
    tags: Box<[AtomicU64]>,
    counts: Box<[AtomicU64]>,
}

impl MinuteRing {
    pub(super) fn new() -> Self {
        let zeros = || (0..MINUTES).map(|_| AtomicU64::new(0)).collect();
        Self {
            tags: zeros(),
            counts: zeros(),
        }
    }

    /// Counts one event at `unix_ms` (the loop only: there is one writer).
    pub(super) fn record(&self, unix_ms: u64) {
        let minute = unix_ms / MINUTE_MS;
        let slot = slot(minute);
        let tag = minute + 1;
        if self.tags[slot].load(Ordering::Acquire) != tag {
            // A new minute in this slot: zero it before naming it, so a reader that sees the
            // new tag never reads the old count under it.
            self.counts[slot].store(0, Ordering::Relaxed);
            self.tags[slot].store(tag, Ordering::Release);
        }
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts of the [`MINUTES`] minutes up to the one of `now_unix_ms`, oldest first (the
    /// last is the current minute, still counting).
    pub(super) fn per_minute(&self, now_unix_ms: u64) -> Vec<u64> {
        let now = now_unix_ms / MINUTE_MS;
        (0..MINUTES as u64)
            .map(|back| {
                let Some(minute) = now.checked_sub(MINUTES as u64 - 1 - back) else {
                    return 0;
                };
                let slot = slot(minute);
                if self.tags[slot].load(Ordering::Acquire) == minute + 1 {
                    self.counts[slot].load(Ordering::Relaxed)
                } else {
                    0
                }
            })
            .collect()
    }
}

fn slot(minute: u64) -> usize {
    // The remainder is below MINUTES.
    (minute % MINUTES as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-07T09:00:00Z.
    const T0: u64 = 1_796_634_000_000;

    #[test]
    fn events_land_in_their_minute_and_the_last_is_now() {
        let ring = MinuteRing::new();
        assert_eq!(ring.per_minute(T0), vec![0; MINUTES]);
        ring.record(T0);
        ring.record(T0 + 59_999);
        ring.record(T0 - 1);
        ring.record(T0 - 2 * MINUTE_MS);
        let v = ring.per_minute(T0 + 30_000);
        assert_eq!(v.len(), MINUTES);
        assert_eq!(v[MINUTES - 1], 2, "this minute");
        assert_eq!(v[MINUTES - 2], 1, "the minute before");
        assert_eq!(v[MINUTES - 3], 1);
        assert_eq!(v.iter().sum::<u64>(), 4);
        // A minute later, everything moves one to the left.
        let later = ring.per_minute(T0 + MINUTE_MS);
        assert_eq!(&later[..MINUTES - 1], &v[1..]);
        assert_eq!(later[MINUTES - 1], 0);
    }

    #[test]
    fn minutes_older_than_a_day_are_forgotten_and_their_slots_reused() {
        let ring = MinuteRing::new();
        for i in 0..5 {
            ring.record(T0 + i);
        }
        let day = MINUTES as u64 * MINUTE_MS;
        let v = ring.per_minute(T0 + day - 1);
        assert_eq!(v[0], 5, "the oldest minute of the window");
        assert_eq!(
            ring.per_minute(T0 + day).iter().sum::<u64>(),
            0,
            "a day later it is out of the window"
        );
        // The same slot, a day later: counted from zero.
        ring.record(T0 + day + 10);
        let v = ring.per_minute(T0 + day + 20);
        assert_eq!(v[MINUTES - 1], 1);
        assert_eq!(v.iter().sum::<u64>(), 1);
        // A reader's clock behind the writer's: the newer minute is not shown as an old one.
        assert_eq!(ring.per_minute(T0 + 20).iter().sum::<u64>(), 0);
    }

    #[test]
    fn a_clock_near_the_epoch_reads_zeros_before_it() {
        let ring = MinuteRing::new();
        ring.record(0);
        ring.record(MINUTE_MS);
        let v = ring.per_minute(MINUTE_MS);
        assert_eq!(v[MINUTES - 1], 1);
        assert_eq!(v[MINUTES - 2], 1);
        assert_eq!(v.iter().sum::<u64>(), 2);
    }

    #[test]
    fn a_full_day_of_events_is_counted_per_minute() {
        let ring = MinuteRing::new();
        for m in 0..MINUTES as u64 {
            for _ in 0..(m % 7) {
                ring.record(T0 + m * MINUTE_MS + 1);
            }
        }
        let v = ring.per_minute(T0 + (MINUTES as u64 - 1) * MINUTE_MS);
        for (m, n) in v.iter().enumerate() {
            assert_eq!(*n, m as u64 % 7, "minute {m}");
        }
    }
}
