//! The simulator's only source of randomness: a seeded SplitMix64 stream.
//!
//! Every random choice of a run (topology, fault configuration, fault times, chunk boundaries,
//! latencies, node seeds) is drawn from streams forked off the run's seed, so a seed replays
//! exactly. SplitMix64 is small, fast and statistically good enough for test scheduling; it
//! is not for cryptography.

use std::time::Duration;

use vtp_core::backoff::SplitMix64;

/// A seeded pseudo-random stream (the core's SplitMix64, with the draws the simulator needs).
#[derive(Debug, Clone)]
pub(crate) struct Rng(SplitMix64);

impl Rng {
    /// A stream determined by `seed` alone.
    pub(crate) fn new(seed: u64) -> Self {
        Self(SplitMix64(seed))
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// An independent stream, for a component whose draws must not shift when another
    /// component draws more or less.
    pub(crate) fn fork(&mut self) -> Self {
        Self::new(self.next_u64() ^ 0x5851_F42D_4C95_7F2D)
    }

    /// Uniform in `0..n`; 0 when `n` is 0.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        // The modulo bias is irrelevant at the small `n` the simulator uses.
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `num / den`.
    pub(crate) fn ratio(&mut self, num: u64, den: u64) -> bool {
        den > 0 && self.next_u64() % den < num
    }

    /// A fair coin.
    pub(crate) fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// Uniform in `lo..=hi`, at microsecond resolution.
    pub(crate) fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        let lo_us = lo.as_micros() as u64;
        let hi_us = hi.as_micros() as u64;
        if hi_us <= lo_us {
            return lo;
        }
        Duration::from_micros(lo_us + self.next_u64() % (hi_us - lo_us + 1))
    }

    /// Exponentially distributed with the given mean (the gap between Poisson arrivals), at
    /// millisecond resolution and at most 20 means.
    pub(crate) fn exponential(&mut self, mean: Duration) -> Duration {
        // 53 random bits give a uniform in (0, 1].
        let u = ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let x = (-u.ln()).min(20.0);
        Duration::from_millis((mean.as_millis() as f64 * x) as u64)
    }

    /// One element of a non-empty slice.
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_and_forks_are_independent() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut c = Rng::new(8);
        assert_ne!(xs[0], c.next_u64());
        let mut f = a.fork();
        assert_ne!(f.next_u64(), a.next_u64());
    }

    #[test]
    fn ranges_hold() {
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            assert!(r.below(5) < 5);
            let v = r.between(3, 6);
            assert!((3..=6).contains(&v));
            let d = r.duration(Duration::from_millis(1), Duration::from_millis(2));
            assert!(d >= Duration::from_millis(1) && d <= Duration::from_millis(2));
            assert!(r.exponential(Duration::from_secs(1)) <= Duration::from_secs(20));
        }
        assert_eq!(r.below(0), 0);
    }
}
