//! Reconnect back-off: exponential with seeded jitter (VTP 2.0 §5, §7.4; docs/protocol.md §7.1
//! item 13).
//!
//! The delay before attempt `n` (0-based) is `min(initial · factorⁿ, cap)` scaled by a jitter
//! factor drawn uniformly from `[1 − jitter, 1 + jitter)`, and never more than `cap`. The counter
//! resets only once a connection has stayed up for [`BackoffConfig::reset_after`], so a broker
//! that drops us at once cannot cause a reconnect storm (Comet #29).

use std::time::Duration;

/// Back-off parameters. Every field is configurable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Growth per failed attempt (≥ 1).
    pub factor: f64,
    /// Largest delay.
    pub cap: Duration,
    /// Relative jitter in `[0, 1)`: 0.25 spreads each delay over ±25 %.
    pub jitter: f64,
    /// A connection must live this long before the back-off resets.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            factor: 2.0,
            cap: Duration::from_secs(60),
            jitter: 0.25,
            reset_after: Duration::from_secs(5),
        }
    }
}

/// Back-off state for one upstream.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// A fresh back-off whose jitter comes from `seed`.
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Self {
            config,
            attempt: 0,
            rng: SplitMix64(seed),
        }
    }

    /// The delay before the next attempt; advances the attempt counter.
    pub fn next_delay(&mut self) -> Duration {
        let c = &self.config;
        let exp = c.factor.max(1.0).powi(self.attempt.min(64) as i32);
        let base = (c.initial.as_secs_f64() * exp).min(c.cap.as_secs_f64());
        let jitter = c.jitter.clamp(0.0, 0.99);
        let scale = 1.0 - jitter + 2.0 * jitter * self.rng.next_f64();
        let secs = (base * scale).min(c.cap.as_secs_f64()).max(0.0);
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_secs_f64(secs)
    }

    /// Number of attempts since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Called when a connection closes after having been up for `lived`: resets the counter if
    /// it lived at least `reset_after`.
    pub fn connection_ended(&mut self, lived: Duration) {
        if lived >= self.config.reset_after {
            self.attempt = 0;
        }
    }
}

/// A tiny seeded generator (SplitMix64): deterministic, no OS randomness. The back-off's
/// jitter and the simulator's scheduling draw from it; not for cryptography.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        // 53 random bits into [0, 1).
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps_within_jitter() {
        let mut b = Backoff::new(BackoffConfig::default(), 7);
        let delays: Vec<f64> = (0..10).map(|_| b.next_delay().as_secs_f64()).collect();
        for (n, d) in delays.iter().enumerate() {
            let base = (2f64.powi(n as i32)).min(60.0);
            assert!(
                *d >= base * 0.75 - 1e-9 && *d <= (base * 1.25).min(60.0) + 1e-9,
                "{n}: {d}"
            );
        }
        assert!(delays[9] <= 60.0);
    }

    #[test]
    fn same_seed_same_schedule_different_seed_differs() {
        let mut a = Backoff::new(BackoffConfig::default(), 1);
        let mut b = Backoff::new(BackoffConfig::default(), 1);
        let mut c = Backoff::new(BackoffConfig::default(), 2);
        let da: Vec<_> = (0..5).map(|_| a.next_delay()).collect();
        let db: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        let dc: Vec<_> = (0..5).map(|_| c.next_delay()).collect();
        assert_eq!(da, db);
        assert_ne!(da, dc);
    }

    #[test]
    fn resets_only_after_long_enough_connection() {
        let mut b = Backoff::new(BackoffConfig::default(), 3);
        let _ = b.next_delay();
        let _ = b.next_delay();
        b.connection_ended(Duration::from_secs(1));
        assert_eq!(b.attempt(), 2);
        b.connection_ended(Duration::from_secs(5));
        assert_eq!(b.attempt(), 0);
    }
}
