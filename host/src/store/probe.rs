//! What another thread (a metrics or health endpoint) may read of the store worker without
//! touching the event loop: its health, whether it stopped, and how long its commits take.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::worker::Durable;

/// A read-only handle on a [`StoreWorker`](super::StoreWorker)'s progress, from
/// [`StoreWorker::probe`](super::StoreWorker::probe): cheap to clone, lock-free to read, kept
/// valid after the worker is gone.
#[derive(Clone)]
pub struct StoreProbe(pub(super) Arc<Durable>);

impl StoreProbe {
    /// False from a failed commit (a full or failing disk) until the next one succeeds.
    pub fn is_healthy(&self) -> bool {
        !self.0.failing.load(Ordering::Acquire)
    }

    /// True once the worker thread has ended (stopped, panicked, or its final commit failed).
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::Acquire)
    }

    /// The highest sequence number committed (see
    /// [`StoreWorker::durable_seq`](super::StoreWorker::durable_seq)).
    pub fn durable_seq(&self) -> u64 {
        self.0.load()
    }

    /// How long the commits took so far.
    pub fn commits(&self) -> CommitSnapshot {
        self.0.commits.snapshot()
    }
}

impl fmt::Debug for StoreProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreProbe")
            .field("healthy", &self.is_healthy())
            .field("stopped", &self.is_stopped())
            .field("durable_seq", &self.durable_seq())
            .finish()
    }
}

/// The upper bounds, in seconds, of the commit-duration histogram's buckets (an implicit
/// `+Inf` bucket follows): from 100 µs (a commit of a few records on a fast SSD) to 10 s (a
/// disk in trouble).
pub const COMMIT_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// Commit durations as a histogram of atomics: the worker adds, anyone reads.
#[derive(Default)]
pub(super) struct CommitStats {
    /// Commits per bucket of [`COMMIT_BUCKETS`], not cumulative; the last is `+Inf`.
    buckets: [AtomicU64; COMMIT_BUCKETS.len() + 1],
    /// Sum of the durations, in nanoseconds.
    sum_nanos: AtomicU64,
    /// Commits that failed (counted in the histogram too).
    failed: AtomicU64,
}

impl CommitStats {
    /// Counts one commit that wrote something and took `took`.
    pub(super) fn record(&self, took: Duration, ok: bool) {
        let secs = took.as_secs_f64();
        let i = COMMIT_BUCKETS
            .iter()
            .position(|&upper| secs <= upper)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> CommitSnapshot {
        let mut buckets = [0; COMMIT_BUCKETS.len() + 1];
        for (out, b) in buckets.iter_mut().zip(&self.buckets) {
            *out = b.load(Ordering::Relaxed);
        }
        CommitSnapshot {
            buckets,
            sum: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// Commit durations read at one moment (each field read on its own: a commit recorded while
/// reading may show in one and not another).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitSnapshot {
    /// Commits per bucket of [`COMMIT_BUCKETS`], not cumulative; the last is `+Inf`.
    pub buckets: [u64; COMMIT_BUCKETS.len() + 1],
    /// Total time spent committing.
    pub sum: Duration,
    /// Commits that failed.
    pub failed: u64,
}

impl CommitSnapshot {
    /// Commits counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// `(upper bound in seconds, commits in the bucket)` for each bucket of
    /// [`COMMIT_BUCKETS`] and then `+Inf` (not cumulative).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        COMMIT_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_commit_lands_in_the_first_bucket_that_holds_it_and_the_sum_adds_up() {
        let stats = CommitStats::default();
        stats.record(Duration::from_micros(50), true);
        stats.record(Duration::from_micros(100), true);
        stats.record(Duration::from_millis(3), false);
        stats.record(Duration::from_secs(60), true);
        let s = stats.snapshot();
        assert_eq!(s.count(), 4);
        assert_eq!(s.failed, 1);
        assert_eq!(s.buckets[0], 2, "50 µs and 100 µs (bounds are inclusive)");
        assert_eq!(
            s.buckets[COMMIT_BUCKETS.len()],
            1,
            "60 s is over every bound"
        );
        let buckets = s.buckets();
        assert_eq!(buckets.len(), COMMIT_BUCKETS.len() + 1);
        assert_eq!(buckets[0], (0.0001, 2));
        assert_eq!(buckets[5], (0.005, 1));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(
            s.sum,
            Duration::from_micros(150) + Duration::from_millis(3) + Duration::from_secs(60)
        );
    }
}
