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
//! default).
//!
//! # Bounds and fairness
//!
//! The index holds at most `entries_max` keys. Each entry remembers its [`SeenSource`]: the
//! author's network (an IPv4 address, an IPv6 /64), the upstream, the node itself (test
//! events), or "restored" for entries loaded from the store, whose source is not recorded.
//! While there is room every source inserts freely. When the index is full, a new entry from
//! source `S` is placed by the *fair share* `entries_max / k`, `k` being the number of sources
//! holding entries (counting `S`):
//!
//! - `S` below its share: the oldest entry of the largest other source is evicted. That source
//!   holds more than its share (the entries sum to `entries_max`), so a source at or below its
//!   share never loses an entry to another one.
//! - `S` at or over its share: an author's event is refused ([`Seen::Refused`]; the node naks
//!   it), so a flooding author can neither evict nor block the others; an upstream or the node
//!   itself evicts its *own* oldest entry (an upstream's events cannot be refused, only acked).
//!
//! Restored entries form one source like the others: after a restart with a full index they
//! give way only above their fair share, oldest first, and otherwise leave by expiry.
//!
//! The table of sources is bounded too: beyond `sources_max` sources, new ones share one
//! [`SeenSource::Other`] bucket, so many addresses cannot grow memory, and together get one
//! share. (Many addresses still get many shares up to that bound: fairness per network cannot
//! stop an attacker who has as many networks as the bound; the whitelist can.)
//!
//! The index also reports its fill level ([`SeenLevel`]) with hysteresis: high at 80 % of the
//! bound, full at 100 %, back to high below 90 % and to normal below 70 %.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;

use crate::output::Peer;

/// The SHA-256 state after an element's bytes: the [`EventKey`] is its end, and an OpenPGP
/// signature made with SHA-256 over the same element (Comet's convention signs exactly the
/// element) hashes those bytes first, then its own trailer. A verifier continues this state
/// ([`ElementHash::finish_with`]) instead of reading the 10 KB again
/// ([`Verifier::verify_element`](crate::signature::Verifier::verify_element)).
#[derive(Clone)]
pub struct ElementHash(ring::digest::Context);

impl ElementHash {
    /// Hashes the bytes of a `VOEvent` element.
    #[must_use]
    pub fn of(element: &[u8]) -> Self {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(element);
        Self(context)
    }

    /// The event's key: SHA-256 of the element.
    #[must_use]
    pub fn key(&self) -> EventKey {
        EventKey(self.finish_with(&[]))
    }

    /// SHA-256 of the element followed by `tail`.
    #[must_use]
    pub fn finish_with(&self, tail: &[u8]) -> [u8; 32] {
        let mut context = self.0.clone();
        context.update(tail);
        let mut out = [0; 32];
        out.copy_from_slice(context.finish().as_ref());
        out
    }
}

impl fmt::Debug for ElementHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ElementHash(SHA-256)")
    }
}

/// The identity of one event: SHA-256 of its `VOEvent` element bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey(pub [u8; 32]);

impl EventKey {
    /// Hashes the bytes of a `VOEvent` element (the span reported by the message parser).
    pub fn of_element(element: &[u8]) -> Self {
        ElementHash::of(element).key()
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
    /// First sighting: the key was inserted. If the index was full, an entry was evicted to
    /// make room (see the [module docs](self)) and is returned so the store can forget it.
    New {
        /// The entry evicted to make room, if any and if the store holds it: a test event's
        /// entry ([`SeenSource::Local`]), which the store never had, is evicted silently.
        evicted: Option<EventKey>,
    },
    /// Already in the index: a duplicate.
    Duplicate,
    /// Not inserted: the index is full and this author's source holds its fair share already.
    Refused,
}

/// Who caused a seen-index entry: the unit of its fair share (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SeenSource {
    /// Loaded from the store at start-up (the source of a stored record is not kept).
    Restored,
    /// The node itself: its test events.
    Local,
    /// An upstream, by its index in the configuration.
    Upstream(usize),
    /// An author over TCP: its IPv4 address, or its IPv6 address's /64 (host bits zero).
    Author(IpAddr),
    /// Authors on Unix-domain sockets, together.
    UnixAuthor,
    /// An external source (a Kafka consumer): the connection id
    /// [`Node::open_external`](crate::Node::open_external) gave it.
    External(crate::output::ConnId),
    /// Every source beyond the bound on the table of sources, together.
    Other,
}

impl SeenSource {
    /// The source of an author's submissions from `peer`: its IPv4 address (an IPv4-mapped
    /// IPv6 address counts as IPv4) or its IPv6 /64.
    pub fn author(peer: Peer) -> Self {
        peer.network().map_or(Self::UnixAuthor, Self::Author)
    }

    /// Whether the source's events can be refused. An upstream's cannot (we ack everything it
    /// sends), nor can the node's own: over their share they recycle their own oldest entries.
    fn refusable(self) -> bool {
        matches!(self, Self::Author(_) | Self::UnixAuthor | Self::Other)
    }
}

/// How full the seen-index is, with hysteresis (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SeenLevel {
    /// Below 80 % of the bound (or back below 70 %).
    Normal,
    /// At or over 80 % of the bound (until below 70 %).
    High,
    /// At the bound (until below 90 %): new entries evict or are refused.
    Full,
}

/// Bounded in-memory index of seen events with time-based expiry and per-source fair shares.
#[derive(Debug)]
pub struct SeenIndex {
    entries: HashMap<EventKey, Entry>,
    /// Per source, its entries in insertion order (oldest first). A pair is live only if it
    /// matches `entries`; stale pairs are skipped and compacted away.
    sources: BTreeMap<SeenSource, Queue>,
    entries_max: usize,
    sources_max: usize,
    level: SeenLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    unix_secs: u64,
    source: SeenSource,
    /// The store holds a record of it: every entry but a test event's ([`SeenSource::Local`]
    /// at insertion, even when counted under [`SeenSource::Other`]).
    stored: bool,
}

impl Entry {
    /// Whether this is the entry a queue's pair `(unix_secs, source)` stands for.
    fn is(&self, unix_secs: u64, source: SeenSource) -> bool {
        self.unix_secs == unix_secs && self.source == source
    }
}

#[derive(Debug, Default)]
struct Queue {
    order: VecDeque<SeenRecord>,
    live: usize,
}

impl SeenIndex {
    /// An empty index holding at most `entries_max` keys (at least 1), from at most
    /// `sources_max` distinct sources (at least 1) plus the shared [`SeenSource::Other`].
    pub fn new(entries_max: usize, sources_max: usize) -> Self {
        Self {
            entries: HashMap::new(),
            sources: BTreeMap::new(),
            entries_max: entries_max.max(1),
            sources_max: sources_max.max(1),
            level: SeenLevel::Normal,
        }
    }

    /// Atomically checks for `key` and inserts it at `unix_secs` for `source` if absent.
    pub fn check_and_insert(&mut self, key: EventKey, unix_secs: u64, source: SeenSource) -> Seen {
        if self.entries.contains_key(&key) {
            return Seen::Duplicate;
        }
        let stored = source != SeenSource::Local;
        let source = if self.sources.contains_key(&source) || self.sources.len() < self.sources_max
        {
            source
        } else {
            SeenSource::Other
        };
        let mut evicted = None;
        if self.entries.len() >= self.entries_max {
            let held = self.sources.get(&source).map_or(0, |q| q.live);
            let k = self.sources.len() + usize::from(held == 0);
            let share = self.entries_max / k;
            let victim = if held < share {
                self.largest_other(source)
            } else if source.refusable() {
                return Seen::Refused;
            } else {
                Some(source)
            };
            let Some((old, old_stored)) = victim.and_then(|v| self.evict_oldest(v)) else {
                return Seen::Refused;
            };
            evicted = old_stored.then_some(old);
        }
        self.entries.insert(
            key,
            Entry {
                unix_secs,
                source,
                stored,
            },
        );
        let q = self.sources.entry(source).or_default();
        q.order.push_back(SeenRecord { key, unix_secs });
        q.live += 1;
        self.compact_if_sparse(source);
        Seen::New { evicted }
    }

    /// Loads records from a store at start-up, as [`SeenSource::Restored`]. Records already
    /// expired at `now_unix_secs` under `retention_secs` are skipped; if there are more than
    /// the bound, the newest are kept. Returns the number of entries loaded.
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
        let room = self.entries_max.saturating_sub(self.entries.len());
        let skip = fresh.len().saturating_sub(room);
        let mut loaded = 0;
        for r in fresh.into_iter().skip(skip) {
            if let Seen::New { .. } =
                self.check_and_insert(r.key, r.unix_secs, SeenSource::Restored)
            {
                loaded += 1;
            }
        }
        loaded
    }

    /// Removes every entry inserted at or before `cutoff_unix_secs` (age ≥ retention). Returns
    /// how many were removed.
    pub fn expire(&mut self, cutoff_unix_secs: u64) -> usize {
        let mut removed = 0;
        for (&source, q) in &mut self.sources {
            while let Some(front) = q.order.front().copied() {
                if front.unix_secs > cutoff_unix_secs {
                    break;
                }
                q.order.pop_front();
                if self
                    .entries
                    .get(&front.key)
                    .is_some_and(|e| e.is(front.unix_secs, source))
                {
                    self.entries.remove(&front.key);
                    q.live -= 1;
                    removed += 1;
                }
            }
        }
        self.sources.retain(|_, q| q.live > 0);
        removed
    }

    /// The fill level, if it changed since the last call (with hysteresis: high at 80 %, full
    /// at 100 %; back to high below 90 %, to normal below 70 %).
    pub fn level_change(&mut self) -> Option<SeenLevel> {
        let (len, max) = (self.entries.len() as u128, self.entries_max as u128);
        let at = |percent: u128| len * 100 >= max * percent;
        let level = match self.level {
            _ if len >= max => SeenLevel::Full,
            SeenLevel::Full if at(90) => SeenLevel::Full,
            SeenLevel::Normal if !at(80) => SeenLevel::Normal,
            _ if at(70) => SeenLevel::High,
            _ => SeenLevel::Normal,
        };
        (level != self.level).then(|| {
            self.level = level;
            level
        })
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

    /// The bound on entries.
    pub fn entries_max(&self) -> usize {
        self.entries_max
    }

    /// Live entries of one source.
    pub fn source_len(&self, source: SeenSource) -> usize {
        self.sources.get(&source).map_or(0, |q| q.live)
    }

    /// Number of sources holding entries.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// The source other than `not` holding the most entries (the first in source order on a
    /// tie, so the choice is deterministic).
    fn largest_other(&self, not: SeenSource) -> Option<SeenSource> {
        let mut best: Option<(usize, SeenSource)> = None;
        for (&s, q) in &self.sources {
            if s != not && q.live > best.map_or(0, |b| b.0) {
                best = Some((q.live, s));
            }
        }
        best.map(|b| b.1)
    }

    /// Evicts the oldest live entry of `source`: its key, and whether the store holds it.
    fn evict_oldest(&mut self, source: SeenSource) -> Option<(EventKey, bool)> {
        let q = self.sources.get_mut(&source)?;
        let mut evicted = None;
        while let Some(front) = q.order.pop_front() {
            if let Some(entry) = self
                .entries
                .get(&front.key)
                .filter(|e| e.is(front.unix_secs, source))
            {
                evicted = Some((front.key, entry.stored));
                self.entries.remove(&front.key);
                q.live -= 1;
                break;
            }
        }
        if q.live == 0 {
            self.sources.remove(&source);
        }
        evicted
    }

    fn compact_if_sparse(&mut self, source: SeenSource) {
        // Stale pairs cannot arise today (a key is removed from its queue's front when it
        // expires or is evicted); this keeps a queue within a constant factor of its live
        // entries should that change, so memory stays bounded.
        let Some(q) = self.sources.get_mut(&source) else {
            return;
        };
        if q.order.len() > 2 * q.live + 64 {
            let entries = &self.entries;
            q.order.retain(|r| {
                entries
                    .get(&r.key)
                    .is_some_and(|e| e.is(r.unix_secs, source))
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: SeenSource = SeenSource::Upstream(0);

    fn key(n: u8) -> EventKey {
        EventKey([n; 32])
    }

    fn author(n: u8) -> SeenSource {
        SeenSource::Author(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn an_event_key_is_the_sha256_of_the_element() {
        // FIPS 180-2's examples: one block, two blocks, and a million bytes (many blocks,
        // where an assembly implementation takes its multi-block path).
        let cases: [(&[u8], &str); 3] = [
            (
                b"abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            ),
            (
                &[b'a'; 1_000_000],
                "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
            ),
        ];
        for (bytes, hex) in cases {
            assert_eq!(EventKey::of_element(bytes).to_hex(), hex);
        }
    }

    #[test]
    fn check_and_insert_detects_duplicates() {
        let mut idx = SeenIndex::new(10, 8);
        assert_eq!(
            idx.check_and_insert(key(1), 100, A),
            Seen::New { evicted: None }
        );
        assert_eq!(idx.check_and_insert(key(1), 101, A), Seen::Duplicate);
        assert_eq!(
            idx.check_and_insert(key(2), 101, A),
            Seen::New { evicted: None }
        );
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn bounded_evicts_oldest() {
        let mut idx = SeenIndex::new(2, 8);
        let _ = idx.check_and_insert(key(1), 1, A);
        let _ = idx.check_and_insert(key(2), 2, A);
        assert_eq!(
            idx.check_and_insert(key(3), 3, A),
            Seen::New {
                evicted: Some(key(1))
            }
        );
        assert!(!idx.contains(&key(1)));
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn a_test_events_entry_is_evicted_without_a_forget() {
        // The store never had a test event's record: evicting it asks nothing of the store.
        let mut idx = SeenIndex::new(2, 8);
        let _ = idx.check_and_insert(key(1), 1, SeenSource::Local);
        let _ = idx.check_and_insert(key(2), 2, SeenSource::Local);
        assert_eq!(
            idx.check_and_insert(key(3), 3, SeenSource::Local),
            Seen::New { evicted: None }
        );
        assert!(!idx.contains(&key(1)));
        // Stored entries are reported when they go, test events' never.
        let mut reported = Vec::new();
        for n in 4..10 {
            if let Seen::New { evicted: Some(old) } = idx.check_and_insert(key(n), n.into(), A) {
                reported.push(old);
            }
        }
        // key(2) went silently for key(4); then the author's own oldest, each reported.
        assert!(!idx.contains(&key(2)));
        assert_eq!(reported, [key(4), key(5), key(6), key(7), key(8)]);
    }

    #[test]
    fn expire_removes_old_entries_only() {
        let mut idx = SeenIndex::new(10, 8);
        let _ = idx.check_and_insert(key(1), 10, A);
        let _ = idx.check_and_insert(key(2), 20, A);
        let _ = idx.check_and_insert(key(3), 30, A);
        assert_eq!(idx.expire(20), 2);
        assert!(idx.contains(&key(3)));
        assert!(!idx.contains(&key(2)));
        // Re-inserting an expired key is a new sighting.
        assert!(matches!(
            idx.check_and_insert(key(1), 40, A),
            Seen::New { .. }
        ));
    }

    #[test]
    fn restore_skips_expired_and_keeps_newest() {
        let mut idx = SeenIndex::new(2, 8);
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
    fn a_flooding_author_is_refused_and_evicts_nobody() {
        let mut idx = SeenIndex::new(10, 8);
        let (flood, other) = (author(1), author(2));
        let _ = idx.check_and_insert(key(100), 1, other);
        for n in 0..9 {
            assert_eq!(
                idx.check_and_insert(key(n), 2, flood),
                Seen::New { evicted: None }
            );
        }
        // Full, and the flooder holds 9 of 10 entries, over its share of 5: refused.
        assert_eq!(idx.check_and_insert(key(50), 3, flood), Seen::Refused);
        assert!(idx.contains(&key(100)));
        assert_eq!(idx.check_and_insert(key(100), 3, other), Seen::Duplicate);
        // The other author is below its share: it is not blocked, the flooder gives way.
        assert_eq!(
            idx.check_and_insert(key(101), 3, other),
            Seen::New {
                evicted: Some(key(0))
            }
        );
        assert_eq!((idx.source_len(flood), idx.source_len(other)), (8, 2));
    }

    #[test]
    fn an_upstream_over_its_share_recycles_its_own_entries() {
        let mut idx = SeenIndex::new(4, 8);
        let _ = idx.check_and_insert(key(100), 1, author(1));
        for n in 0..3 {
            let _ = idx.check_and_insert(key(n), 2, A);
        }
        assert_eq!(
            idx.check_and_insert(key(3), 3, A),
            Seen::New {
                evicted: Some(key(0))
            }
        );
        assert!(idx.contains(&key(100)));
    }

    #[test]
    fn sources_beyond_the_bound_share_one_bucket() {
        let mut idx = SeenIndex::new(100, 2);
        for n in 0..5 {
            let _ = idx.check_and_insert(key(n), 1, author(n));
        }
        assert_eq!(idx.sources(), 3);
        assert_eq!(idx.source_len(SeenSource::Other), 3);
    }

    #[test]
    fn ipv6_authors_are_grouped_by_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let b: IpAddr = "2001:db8:1:2:bbbb::2"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(
            SeenSource::author(Peer::Tcp(std::net::SocketAddr::new(a, 40000))),
            SeenSource::author(Peer::Tcp(std::net::SocketAddr::new(b, 40000)))
        );
        assert_ne!(
            SeenSource::author(Peer::Tcp(std::net::SocketAddr::new(a, 40000))),
            SeenSource::author(Peer::Tcp(std::net::SocketAddr::new(c, 40000)))
        );
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(
            SeenSource::author(Peer::Tcp(std::net::SocketAddr::new(mapped, 40000))),
            author(1)
        );
    }

    #[test]
    fn level_changes_once_per_crossing_with_hysteresis() {
        let mut idx = SeenIndex::new(10, 8);
        let mut changes = Vec::new();
        for n in 0..12 {
            let _ = idx.check_and_insert(key(n), u64::from(n), A);
            changes.extend(idx.level_change());
        }
        assert_eq!(changes, [SeenLevel::High, SeenLevel::Full]);
        // 10 entries at seconds 2..=11: expiring up to 3 leaves 8 (below 90 %: high), up to 5
        // leaves 6 (below 70 %: normal).
        let _ = idx.expire(3);
        assert_eq!(idx.level_change(), Some(SeenLevel::High));
        let _ = idx.expire(5);
        assert_eq!(idx.level_change(), Some(SeenLevel::Normal));
        assert_eq!(idx.level_change(), None);
    }

    #[test]
    fn key_hashes_element_bytes() {
        let a = EventKey::of_element(b"<VOEvent ivorn=\"ivo://a.b/c#1\"/>");
        let b = EventKey::of_element(b"<VOEvent ivorn=\"ivo://a.b/c#1\" />");
        assert_ne!(a, b);
        assert_eq!(a.to_hex().len(), 64);
    }
}
