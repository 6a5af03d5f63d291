//! Deadlines: a keyed set of instants whose minimum is the node's next wake-up.
//!
//! Each timer has a key; setting a key replaces its previous deadline. `poll_timeout` is the
//! earliest deadline (O(log n)), and [`Timers::pop_due`] hands out due keys one at a time, each
//! removed as it fires, so a fired deadline never fires twice (no busy loop).

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// A set of keyed deadlines.
#[derive(Debug)]
pub(crate) struct Timers<K: Ord + Hash + Copy> {
    by_key: HashMap<K, Instant>,
    queue: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Hash + Copy> Timers<K> {
    pub(crate) fn new() -> Self {
        Self {
            by_key: HashMap::new(),
            queue: BTreeSet::new(),
        }
    }

    /// Arms (or re-arms) `key` for `at`.
    pub(crate) fn set(&mut self, key: K, at: Instant) {
        if let Some(old) = self.by_key.insert(key, at) {
            self.queue.remove(&(old, key));
        }
        self.queue.insert((at, key));
    }

    /// Disarms `key` if armed.
    pub(crate) fn cancel(&mut self, key: K) {
        if let Some(old) = self.by_key.remove(&key) {
            self.queue.remove(&(old, key));
        }
    }

    /// The deadline of `key`, if armed.
    pub(crate) fn deadline(&self, key: K) -> Option<Instant> {
        self.by_key.get(&key).copied()
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Removes and returns one key whose deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<K> {
        let &(at, key) = self.queue.first()?;
        if at > now {
            return None;
        }
        self.queue.pop_first();
        self.by_key.remove(&key);
        Some(key)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rearm_replaces_and_pop_is_ordered() {
        let t0 = crate::testutil::origin();
        let mut t = Timers::new();
        t.set(1u8, t0 + Duration::from_secs(5));
        t.set(2u8, t0 + Duration::from_secs(3));
        t.set(1u8, t0 + Duration::from_secs(1));
        assert_eq!(t.len(), 2);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(t.pop_due(t0 + Duration::from_secs(10)), Some(1));
        assert_eq!(t.pop_due(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(t.pop_due(t0 + Duration::from_secs(10)), None);
        t.set(3u8, t0);
        t.cancel(3u8);
        assert_eq!(t.next(), None);
    }
}
