//! Rate limits for log lines a peer can cause in floods (dropped deliveries, refused HTTP
//! requests): the first few of each second are logged one by one, the rest counted and
//! reported as one line.

use std::time::{Duration, Instant};

/// The first `per_sec` occurrences of each one-second window are logged on their own; the
/// rest are counted and reported as one line when the next window opens (or at
/// [`take_suppressed`](Self::take_suppressed)).
#[derive(Debug)]
pub(crate) struct RateLog {
    per_sec: u32,
    window: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl RateLog {
    /// At most `per_sec` lines a second.
    pub(crate) const fn new(per_sec: u32) -> Self {
        Self {
            per_sec,
            window: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// One occurrence at `now`: `log` runs if this window still has room; a window opening
    /// first hands the previous windows' count not logged, if any, to `report`.
    pub(crate) fn note(&mut self, now: Instant, log: impl FnOnce(), report: impl FnOnce(u64)) {
        match self.window {
            Some(start) if now.saturating_duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                let n = self.take_suppressed();
                if n > 0 {
                    report(n);
                }
                self.window = Some(now);
                self.logged = 0;
            }
        }
        if self.logged < self.per_sec {
            self.logged += 1;
            log();
        } else {
            self.suppressed += 1;
        }
    }

    /// The occurrences counted but not logged so far; the count starts again from zero.
    pub(crate) fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_each_second_are_logged_and_the_rest_reported_once() {
        let t0 = Instant::now();
        let mut log = RateLog::new(3);
        let (mut logged, mut reported) = (0, Vec::new());
        for _ in 0..10 {
            log.note(t0, || logged += 1, |n| reported.push(n));
        }
        assert_eq!((logged, reported.len()), (3, 0));
        log.note(
            t0 + Duration::from_millis(1500),
            || logged += 1,
            |n| reported.push(n),
        );
        assert_eq!((logged, reported.as_slice()), (4, &[7][..]));
        assert_eq!(log.take_suppressed(), 0);
    }
}
