//! The seen-index: which events this node has already processed (VTP 2.0 §8).
//!
//! # Theory of operation
//!
//! An event's identity is the SHA-256 of its `VOEvent` element bytes, from the `<` of the start
//! tag through the `>` of the end tag ([`EventKey::of_element`]): the rule of VTP 2.0 §8. Every
//! pair of payloads that Comet's whole-frame hash calls duplicates is a duplicate here too.
//!
//! [`SeenIndex::check_and_insert`] is the only way in, and is atomic by construction (the node
//! is single-owner), so two upstreams delivering the same bytes at once forward them once
//! (Comet issue #30). Entries carry the wall-clock second they were inserted, so they survive a
//! restart through the runtime's store and expire after the retention period (30 days by
//! default). The index is bounded: when full, the oldest entry is evicted and reported so the
//! store can forget it too.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use sha2::{Digest, Sha256};

/// The identity of one event: SHA-256 of its `VOEvent` element bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey(pub [u8; 32]);

impl EventKey {
    /// Hashes the bytes of a `VOEvent` element (the span reported by the message parser).
    pub fn of_element(element: &[u8]) -> Self {
        Self(Sha256::digest(element).into())
    }

    /// Lower-case hex, 64 characters: the form used in logs and stores.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s
    }
}

impl fmt::Debug for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight bytes are plenty to tell keys apart in a log line.
        let hex = self.to_hex();
        write!(f, "EventKey({}…)", &hex[..16])
    }
}

impl fmt::Display for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One entry of the seen-index as a store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenRecord {
    /// The event's identity.
    pub key: EventKey,
    /// Wall-clock second (UNIX time) at which it was first seen.
    pub unix_secs: u64,
}

/// Outcome of [`SeenIndex::check_and_insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Seen {
    /// First sighting: the key was inserted. If the index was full, the oldest entry was evicted
    /// to make room and is returned so the store can forget it.
    New {
        /// The entry evicted to make room, if any.
        evicted: Option<EventKey>,
    },
    /// Already in the index: a duplicate.
    Duplicate,
}

/// Bounded in-memory index of seen events with time-based expiry.
#[derive(Debug)]
pub struct SeenIndex {
    entries: HashMap<EventKey, u64>,
    // Insertion order (oldest first). May hold stale pairs for keys that were re-inserted after
    // expiry; a pair is live only if it matches `entries`.
    order: VecDeque<SeenRecord>,
    entries_max: usize,
}

impl SeenIndex {
    /// An empty index holding at most `entries_max` keys (at least 1).
    pub fn new(entries_max: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            entries_max: entries_max.max(1),
        }
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no event has been recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True if the key is present.
    pub fn contains(&self, key: &EventKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Atomically checks for `key` and inserts it at `unix_secs` if absent.
    pub fn check_and_insert(&mut self, key: EventKey, unix_secs: u64) -> Seen {
        if self.entries.contains_key(&key) {
            return Seen::Duplicate;
        }
        let evicted = if self.entries.len() >= self.entries_max {
            self.evict_oldest()
        } else {
            None
        };
        self.entries.insert(key, unix_secs);
        self.order.push_back(SeenRecord { key, unix_secs });
        self.compact_if_sparse();
        Seen::New { evicted }
    }

    /// Loads records from a store at start-up. Records already expired at `now_unix_secs` under
    /// `retention_secs` are skipped; if there are more than the bound, the newest are kept.
    /// Returns the number of entries loaded.
    pub fn restore(
        &mut self,
        records: impl IntoIterator<Item = SeenRecord>,
        now_unix_secs: u64,
        retention_secs: u64,
    ) -> usize {
        let cutoff = now_unix_secs.saturating_sub(retention_secs);
        let mut fresh: Vec<SeenRecord> = records
            .into_iter()
            .filter(|r| r.unix_secs > cutoff || retention_secs == 0)
            .collect();
        fresh.sort_by_key(|r| r.unix_secs);
        let skip = fresh.len().saturating_sub(self.entries_max);
        let mut loaded = 0;
        for r in fresh.into_iter().skip(skip) {
            if let Seen::New { .. } = self.check_and_insert(r.key, r.unix_secs) {
                loaded += 1;
            }
        }
        loaded
    }

    /// Removes every entry inserted at or before `cutoff_unix_secs` (age ≥ retention). Returns
    /// how many were removed.
    pub fn expire(&mut self, cutoff_unix_secs: u64) -> usize {
        let mut removed = 0;
        while let Some(front) = self.order.front().copied() {
            if front.unix_secs > cutoff_unix_secs {
                break;
            }
            self.order.pop_front();
            if self.entries.get(&front.key) == Some(&front.unix_secs) {
                self.entries.remove(&front.key);
                removed += 1;
            }
        }
        removed
    }

    fn evict_oldest(&mut self) -> Option<EventKey> {
        while let Some(front) = self.order.pop_front() {
            if self.entries.get(&front.key) == Some(&front.unix_secs) {
                self.entries.remove(&front.key);
                return Some(front.key);
            }
        }
        None
    }

    fn compact_if_sparse(&mut self) {
        // Stale pairs only arise from restore() of unsorted duplicates; keep `order` within a
        // constant factor of the live entries so memory stays bounded.
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|r| entries.get(&r.key) == Some(&r.unix_secs));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> EventKey {
        EventKey([n; 32])
    }

    #[test]
    fn check_and_insert_detects_duplicates() {
        let mut idx = SeenIndex::new(10);
        assert_eq!(
            idx.check_and_insert(key(1), 100),
            Seen::New { evicted: None }
        );
        assert_eq!(idx.check_and_insert(key(1), 101), Seen::Duplicate);
        assert_eq!(
            idx.check_and_insert(key(2), 101),
            Seen::New { evicted: None }
        );
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn bounded_evicts_oldest() {
        let mut idx = SeenIndex::new(2);
        let _ = idx.check_and_insert(key(1), 1);
        let _ = idx.check_and_insert(key(2), 2);
        assert_eq!(
            idx.check_and_insert(key(3), 3),
            Seen::New {
                evicted: Some(key(1))
            }
        );
        assert!(!idx.contains(&key(1)));
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn expire_removes_old_entries_only() {
        let mut idx = SeenIndex::new(10);
        let _ = idx.check_and_insert(key(1), 10);
        let _ = idx.check_and_insert(key(2), 20);
        let _ = idx.check_and_insert(key(3), 30);
        assert_eq!(idx.expire(20), 2);
        assert!(idx.contains(&key(3)));
        assert!(!idx.contains(&key(2)));
        // Re-inserting an expired key is a new sighting.
        assert!(matches!(idx.check_and_insert(key(1), 40), Seen::New { .. }));
    }

    #[test]
    fn restore_skips_expired_and_keeps_newest() {
        let mut idx = SeenIndex::new(2);
        let recs = [
            SeenRecord {
                key: key(1),
                unix_secs: 50,
            },
            SeenRecord {
                key: key(2),
                unix_secs: 500,
            },
            SeenRecord {
                key: key(3),
                unix_secs: 400,
            },
            SeenRecord {
                key: key(4),
                unix_secs: 300,
            },
        ];
        // now = 600, retention = 520: record 1 (age 550) is expired; of the other three, the
        // bound keeps the newest two.
        assert_eq!(idx.restore(recs, 600, 520), 2);
        assert!(idx.contains(&key(2)) && idx.contains(&key(3)));
        assert!(!idx.contains(&key(4)));
    }

    #[test]
    fn key_hashes_element_bytes() {
        let a = EventKey::of_element(b"<VOEvent ivorn=\"ivo://a.b/c#1\"/>");
        let b = EventKey::of_element(b"<VOEvent ivorn=\"ivo://a.b/c#1\" />");
        assert_ne!(a, b);
        assert_eq!(a.to_hex().len(), 64);
    }
}
