//! The consumer: every partition of the subscribed topics, offsets stored in a group.
//!
//! # Theory of operation
//!
//! There is no group membership: a bridge wants every event, so the consumer assigns itself
//! all partitions of the topics its [`Subscription`]s match (re-checked every
//! `refresh_every`, and at once after a leader error). The group id only names where offsets
//! are stored: at start (and for each new partition) the committed offset is read with
//! OffsetFetch; a partition without one starts at the earliest or latest offset
//! ([`StartFrom`], via ListOffsets). [`Consumer::commit`] writes offsets with OffsetCommit
//! as a "simple consumer" (generation -1, empty member id), which Kafka accepts for a group
//! with no active members.
//!
//! Each [`Consumer::poll`] sends one Fetch to each leader and returns what came back, in
//! offset order per partition. Faults:
//! - a topic error (authorization, unknown topic) is kept per topic in
//!   [`Consumer::topic_errors`] and the other topics go on;
//! - a leader error (not leader, unknown partition, broker gone) marks the metadata stale,
//!   and the next poll refreshes it;
//! - an offset out of range restarts the partition per [`StartFrom`];
//! - a hole at a partition's position (the fetch returned a batch that begins after it) is
//!   waited for, never stepped over at once: a broker may show a later batch before an
//!   earlier one, or (tansu 0.6.0) answer a fetch from the middle of a batch with the later
//!   batches only. Meanwhile the consumer looks back for the batch that holds the position
//!   (fetching from 1, 2, 4 ... offsets before it, or from the end of a batch seen before
//!   it), and after [`Bounds::gap_wait`](crate::Bounds::gap_wait) it moves past the hole
//!   with a warning (a compacted or deleted batch);
//! - a response over the response bound makes the consumer fetch one partition per request
//!   for a while; a single partition's record that still does not fit is returned as
//!   [`Oversize`] and skipped;
//! - a connection fault is returned as a retryable [`Error`] after the connections are
//!   dropped; the caller waits (its own backoff) and polls again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    FetchRequest, GroupId, ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
    fetch_request::{FetchPartition, FetchTopic},
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
    offset_fetch_request::OffsetFetchRequestTopic,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::cluster::{Cluster, Metadata, Subscription, topic_arc};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::records::{self, Item, Oversize};

/// Up to v11: tansu 0.6.0 answers Fetch v12 (the first flexible version) with a tagged
/// field 0 at the top level, which Kafka defines from v16 on (NodeEndpoints) and
/// kafka-protocol refuses ("Tag 0 is not valid for version 12"). v11 has everything a
/// consumer by topic name needs.
const FETCH: VersionRange = VersionRange { min: 4, max: 11 };
const LIST_OFFSETS: VersionRange = VersionRange { min: 1, max: 7 };
const OFFSET_FETCH: VersionRange = VersionRange { min: 1, max: 7 };
const OFFSET_COMMIT: VersionRange = VersionRange { min: 2, max: 8 };
/// Polls during which partitions are fetched one per request after an oversize response.
const SPLIT_POLLS: u32 = 16;
/// The pause between fetches while a hole in a partition is waited for.
const GAP_PACE: Duration = Duration::from_millis(20);

/// Where a partition without a committed offset starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest record still kept.
    Earliest,
    /// Only records written from now on.
    Latest,
}

/// The lag of one partition, as of the last fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lag {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The next offset this consumer will return (`None` before it is known).
    pub position: Option<i64>,
    /// The partition's high watermark at the last fetch (`None` before the first).
    pub high_watermark: Option<i64>,
}

impl Lag {
    /// Records not yet returned: high watermark minus position, when both are known.
    pub fn lag(&self) -> Option<i64> {
        Some((self.high_watermark? - self.position?).max(0))
    }
}

#[derive(Debug)]
struct PartState {
    leader: i32,
    position: Option<i64>,
    high_watermark: Option<i64>,
    /// The last fetch found no batch holding `position`, but a later one.
    gap: Option<Gap>,
}

/// A hole at a partition's position, being waited for (see [`Bounds::gap_wait`]).
///
/// [`Bounds::gap_wait`]: crate::Bounds::gap_wait
#[derive(Debug)]
struct Gap {
    since: Instant,
    /// Where the next fetch starts: the position, or before it while looking for the batch
    /// that holds the position (a broker may return only batches that begin at or after the
    /// fetch offset, as tansu 0.6.0 does).
    fetch_at: i64,
    /// How far before the position the last look went back (0: not looking; -1: gave up).
    back: i64,
}

type Key = (Arc<str>, i32);

/// A blocking consumer of all partitions of the subscribed topics (see the module docs).
#[derive(Debug)]
pub struct Consumer {
    cluster: Cluster,
    group: String,
    subscriptions: Vec<Subscription>,
    start: StartFrom,
    refresh_every: Duration,
    next_refresh: Option<Instant>,
    parts: BTreeMap<Key, PartState>,
    topic_errors: BTreeMap<String, ResponseError>,
    coordinator: Option<i32>,
    split_polls: u32,
}

impl Consumer {
    /// A consumer of the topics matching `subscriptions` (names or globs, see
    /// [`Subscription::parse`]), storing offsets under `group`. Nothing is connected until
    /// the first [`Consumer::poll`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the configuration is inconsistent or nothing is subscribed.
    pub fn new(
        config: Config,
        group: &str,
        subscriptions: &[&str],
        start: StartFrom,
    ) -> Result<Self> {
        if subscriptions.is_empty() {
            return Err(Error::Config("no topic subscribed".into()));
        }
        if group.is_empty() {
            return Err(Error::Config("the group id is empty".into()));
        }
        Ok(Consumer {
            cluster: Cluster::new(config)?,
            group: group.to_owned(),
            subscriptions: subscriptions
                .iter()
                .map(|s| Subscription::parse(s))
                .collect(),
            start,
            refresh_every: Duration::from_secs(60),
            next_refresh: None,
            parts: BTreeMap::new(),
            topic_errors: BTreeMap::new(),
            coordinator: None,
            split_polls: 0,
        })
    }

    /// How often the topic list is re-read to find new matching topics (default 60 s).
    pub fn set_refresh_every(&mut self, every: Duration) {
        self.refresh_every = every;
        self.next_refresh = None;
    }

    /// Fetches once from every partition leader, waiting at the broker up to `timeout` (at
    /// most [`crate::Bounds::fetch_wait`]) when nothing is there yet. Returns records in
    /// offset order per partition; empty when nothing arrived.
    ///
    /// # Errors
    ///
    /// A retryable [`Error`] when a broker cannot be reached or misbehaves (the connections
    /// are dropped; poll again after a backoff); [`Error::Sasl`], [`Error::Tls`],
    /// [`Error::Unsupported`] need a person.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<Item>> {
        let result = self.poll_inner(timeout);
        if let Err(e) = &result
            && e.is_retryable()
        {
            self.cluster.disconnect();
            self.next_refresh = None;
            self.coordinator = None;
        }
        result
    }

    /// Commits `next_offset` (the offset of the next record to read: last handled + 1) for
    /// each partition, as the group's stored position.
    ///
    /// # Errors
    ///
    /// A retryable [`Error`] for network or coordinator faults; [`Error::Partition`] for a
    /// partition the broker refused (for example `GroupAuthorizationFailed`).
    pub fn commit(&mut self, offsets: &[(&str, i32, i64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for &(topic, partition, offset) in offsets {
            let mut p = OffsetCommitRequestPartition::default();
            p.partition_index = partition;
            p.committed_offset = offset;
            p.committed_metadata = Some(StrBytes::from_static_str(""));
            by_topic.entry(topic).or_default().push(p);
        }
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(StrBytes::from_string(self.group.clone()));
        req.generation_id_or_member_epoch = -1;
        req.member_id = StrBytes::from_static_str("");
        req.retention_time_ms = -1;
        req.topics = by_topic
            .into_iter()
            .map(|(name, partitions)| {
                let mut t = OffsetCommitRequestTopic::default();
                t.name = TopicName(StrBytes::from_string(name.to_owned()));
                t.partitions = partitions;
                t
            })
            .collect();
        let coordinator = self.coordinator()?;
        let result = self
            .cluster
            .request(coordinator, &req, OFFSET_COMMIT, Duration::ZERO);
        let (resp, _, addr) = self.forget_coordinator_on_error(result)?;
        for t in &resp.topics {
            for p in &t.partitions {
                if let Some(code) = ResponseError::try_from_code(p.error_code) {
                    if matches!(
                        code,
                        ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable
                    ) {
                        self.coordinator = None;
                    }
                    return Err(Error::partition(
                        &addr,
                        "OffsetCommit",
                        t.name.0.as_str(),
                        p.partition_index,
                        code,
                    ));
                }
            }
        }
        Ok(())
    }

    /// The group's committed offsets for these partitions (`None`: none committed).
    ///
    /// # Errors
    ///
    /// As [`Consumer::commit`].
    pub fn committed(
        &mut self,
        partitions: &[(&str, i32)],
    ) -> Result<Vec<(String, i32, Option<i64>)>> {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for &(t, p) in partitions {
            by_topic.entry(t).or_default().push(p);
        }
        let mut req = OffsetFetchRequest::default();
        req.group_id = GroupId(StrBytes::from_string(self.group.clone()));
        req.topics = Some(
            by_topic
                .into_iter()
                .map(|(name, ids)| {
                    let mut t = OffsetFetchRequestTopic::default();
                    t.name = TopicName(StrBytes::from_string(name.to_owned()));
                    t.partition_indexes = ids;
                    t
                })
                .collect(),
        );
        let coordinator = self.coordinator()?;
        let result = self
            .cluster
            .request(coordinator, &req, OFFSET_FETCH, Duration::ZERO);
        let (resp, version, addr) = self.forget_coordinator_on_error(result)?;
        if version >= 2
            && let Some(code) = ResponseError::try_from_code(resp.error_code)
        {
            if matches!(
                code,
                ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable
            ) {
                self.coordinator = None;
            }
            return Err(Error::broker(&addr, "OffsetFetch", code));
        }
        let mut out = Vec::new();
        for t in &resp.topics {
            for p in &t.partitions {
                if let Some(code) = ResponseError::try_from_code(p.error_code) {
                    return Err(Error::partition(
                        &addr,
                        "OffsetFetch",
                        t.name.0.as_str(),
                        p.partition_index,
                        code,
                    ));
                }
                let offset = (p.committed_offset >= 0).then_some(p.committed_offset);
                out.push((t.name.0.to_string(), p.partition_index, offset));
            }
        }
        Ok(out)
    }

    /// Topics that matched a subscription (or were named exactly) but cannot be read, with
    /// the broker's reason (for example `TopicAuthorizationFailed`,
    /// `UnknownTopicOrPartition`). The other topics are consumed regardless.
    pub fn topic_errors(&self) -> &BTreeMap<String, ResponseError> {
        &self.topic_errors
    }

    /// The partitions being consumed, with their positions and lag.
    pub fn lag(&self) -> Vec<Lag> {
        self.parts
            .iter()
            .map(|((topic, partition), s)| Lag {
                topic: topic.clone(),
                partition: *partition,
                position: s.position,
                high_watermark: s.high_watermark,
            })
            .collect()
    }

    /// The last metadata read from the cluster.
    pub fn metadata(&self) -> &Metadata {
        &self.cluster.metadata
    }

    fn poll_inner(&mut self, timeout: Duration) -> Result<Vec<Item>> {
        if self.next_refresh.is_none_or(|at| Instant::now() >= at) {
            self.refresh()?;
        }
        if self.parts.values().any(|s| s.position.is_none()) {
            self.init_positions()?;
        }
        let wait = timeout.min(self.cluster.config.bounds.fetch_wait);
        let mut leaders: BTreeMap<i32, Vec<Key>> = BTreeMap::new();
        for (key, s) in &self.parts {
            if s.leader >= 0 && s.position.is_some() {
                leaders.entry(s.leader).or_default().push(key.clone());
            }
        }
        let mut items = Vec::new();
        for (leader, keys) in leaders {
            let groups: Vec<Vec<Key>> = if self.split_polls > 0 {
                keys.into_iter().map(|k| vec![k]).collect()
            } else {
                vec![keys]
            };
            for keys in groups {
                // Once something has arrived, later fetches do not wait at the broker.
                let wait = if items.is_empty() {
                    wait
                } else {
                    Duration::ZERO
                };
                self.fetch(leader, &keys, wait, &mut items)?;
            }
        }
        self.split_polls = self.split_polls.saturating_sub(1);
        if items.is_empty() && self.parts.values().any(|s| s.gap.is_some()) {
            // A fetch past a hole returns at once: pace the wait for it.
            std::thread::sleep(wait.min(GAP_PACE));
        }
        Ok(items)
    }

    /// Re-reads metadata and brings the partition table in line with the subscriptions.
    fn refresh(&mut self) -> Result<()> {
        let exact: Vec<String> = self
            .subscriptions
            .iter()
            .filter_map(|s| match s {
                Subscription::Exact(n) => Some(n.clone()),
                Subscription::Glob(_) => None,
            })
            .collect();
        let any_glob = exact.len() < self.subscriptions.len();
        let md = self
            .cluster
            .refresh(if any_glob { None } else { Some(&exact) })?
            .clone();
        let mut errors = BTreeMap::new();
        let mut wanted: BTreeMap<Key, i32> = BTreeMap::new();
        for name in &exact {
            if !md.topics.contains_key(name) {
                errors.insert(name.clone(), ResponseError::UnknownTopicOrPartition);
            }
        }
        for (name, info) in &md.topics {
            if !self.subscriptions.iter().any(|s| s.matches(name)) {
                continue;
            }
            if let Some(code) = info.error {
                // Leader elections are transient; anything else is a topic error.
                if !code.is_retriable() || info.partitions.is_empty() {
                    errors.insert(name.clone(), code);
                    continue;
                }
            }
            let topic: Arc<str> = Arc::from(name.as_str());
            for (&partition, &leader) in &info.partitions {
                wanted.insert((topic.clone(), partition), leader);
            }
        }
        for (topic, code) in &errors {
            if self.topic_errors.get(topic) != Some(code) {
                tracing::warn!(topic, error = %code, "kafka topic cannot be consumed");
            }
        }
        self.topic_errors = errors;
        self.parts.retain(|k, _| wanted.contains_key(k));
        for (key, leader) in wanted {
            self.parts
                .entry(key)
                .and_modify(|s| s.leader = leader)
                .or_insert(PartState {
                    leader,
                    position: None,
                    high_watermark: None,
                    gap: None,
                });
        }
        self.next_refresh = Some(Instant::now() + self.refresh_every);
        Ok(())
    }

    fn coordinator(&mut self) -> Result<i32> {
        if let Some(id) = self.coordinator {
            return Ok(id);
        }
        let id = self.cluster.coordinator(&self.group)?;
        self.coordinator = Some(id);
        Ok(id)
    }

    fn forget_coordinator_on_error<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.coordinator = None;
        }
        r
    }

    /// Committed offsets first, then ListOffsets for partitions without one.
    fn init_positions(&mut self) -> Result<()> {
        let unknown: Vec<(Arc<str>, i32)> = self
            .parts
            .iter()
            .filter(|(_, s)| s.position.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        let asked: Vec<(&str, i32)> = unknown.iter().map(|(t, p)| (&**t, *p)).collect();
        for (topic, partition, offset) in self.committed(&asked)? {
            if let (Some(offset), Some(s)) = (
                offset,
                self.parts.get_mut(&(Arc::from(topic.as_str()), partition)),
            ) {
                s.position = Some(offset);
            }
        }
        let mut by_leader: BTreeMap<i32, BTreeMap<Arc<str>, Vec<i32>>> = BTreeMap::new();
        for ((topic, partition), s) in &self.parts {
            if s.position.is_none() && s.leader >= 0 {
                by_leader
                    .entry(s.leader)
                    .or_default()
                    .entry(topic.clone())
                    .or_default()
                    .push(*partition);
            }
        }
        let timestamp = match self.start {
            StartFrom::Earliest => -2,
            StartFrom::Latest => -1,
        };
        for (leader, topics) in by_leader {
            let mut req = ListOffsetsRequest::default();
            req.replica_id = (-1).into();
            req.topics = topics
                .into_iter()
                .map(|(name, ids)| {
                    let mut t = ListOffsetsTopic::default();
                    t.name = TopicName(StrBytes::from_string(name.to_string()));
                    t.partitions = ids
                        .into_iter()
                        .map(|id| {
                            let mut p = ListOffsetsPartition::default();
                            p.partition_index = id;
                            p.timestamp = timestamp;
                            p
                        })
                        .collect();
                    t
                })
                .collect();
            let (resp, _, addr) =
                self.cluster
                    .request(leader, &req, LIST_OFFSETS, Duration::ZERO)?;
            for t in &resp.topics {
                let topic = topic_arc(&t.name);
                for p in &t.partitions {
                    let Some(s) = self.parts.get_mut(&(topic.clone(), p.partition_index)) else {
                        continue;
                    };
                    match ResponseError::try_from_code(p.error_code) {
                        None => s.position = Some(p.offset),
                        Some(code) if code.is_retriable() => self.next_refresh = None,
                        Some(code) => {
                            return Err(Error::partition(
                                &addr,
                                "ListOffsets",
                                &topic,
                                p.partition_index,
                                code,
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn fetch(
        &mut self,
        leader: i32,
        keys: &[Key],
        wait: Duration,
        items: &mut Vec<Item>,
    ) -> Result<()> {
        let bounds = self.cluster.config.bounds;
        let mut topics: BTreeMap<Arc<str>, Vec<FetchPartition>> = BTreeMap::new();
        for key in keys {
            let Some(s) = self.parts.get(key) else {
                continue;
            };
            let Some(position) = s.position else {
                continue;
            };
            let mut p = FetchPartition::default();
            p.partition = key.1;
            p.fetch_offset = s.gap.as_ref().map_or(position, |g| g.fetch_at);
            p.partition_max_bytes = clamp_i32(bounds.fetch_max);
            topics.entry(key.0.clone()).or_default().push(p);
        }
        let mut req = FetchRequest::default();
        req.replica_id = (-1).into();
        req.max_wait_ms = clamp_i32(wait.as_millis() as usize);
        req.min_bytes = 1;
        req.max_bytes = clamp_i32(bounds.fetch_max);
        req.isolation_level = 0;
        req.session_id = 0;
        req.session_epoch = -1;
        req.topics = topics
            .into_iter()
            .map(|(name, partitions)| {
                let mut t = FetchTopic::default();
                t.topic = TopicName(StrBytes::from_string(name.to_string()));
                t.partitions = partitions;
                t
            })
            .collect();
        let resp = match self.cluster.request(leader, &req, FETCH, wait) {
            Ok((resp, _, addr)) => (resp, addr),
            Err(Error::FrameTooLarge { len, .. }) => {
                if keys.len() == 1 {
                    let key = &keys[0];
                    if let Some(s) = self.parts.get_mut(key)
                        && let Some(position) = s.position
                    {
                        tracing::warn!(topic = %key.0, partition = key.1, offset = position, len,
                            "kafka record too large for the response bound: skipped");
                        items.push(Item::Oversize(Oversize {
                            topic: key.0.clone(),
                            partition: key.1,
                            offset: position,
                            size: len as usize,
                        }));
                        s.position = Some(position + 1);
                    }
                } else {
                    self.split_polls = SPLIT_POLLS;
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let (resp, addr) = resp;
        if let Some(code) = ResponseError::try_from_code(resp.error_code) {
            return Err(Error::broker(&addr, "Fetch", code));
        }
        for t in resp.responses {
            let topic = topic_arc(&t.topic);
            for p in t.partitions {
                let key = (topic.clone(), p.partition_index);
                let Some(s) = self.parts.get_mut(&key) else {
                    continue;
                };
                let Some(position) = s.position else { continue };
                match ResponseError::try_from_code(p.error_code) {
                    None => {}
                    Some(ResponseError::OffsetOutOfRange)
                        if s.gap.as_ref().is_some_and(|g| g.fetch_at < position) =>
                    {
                        // Looked back past the log's start: wait at the position instead.
                        if let Some(g) = &mut s.gap {
                            g.fetch_at = position;
                            g.back = -1;
                        }
                        continue;
                    }
                    Some(ResponseError::OffsetOutOfRange) => {
                        tracing::warn!(topic = %topic, partition = p.partition_index, position,
                            "kafka offset out of range: restarting the partition");
                        s.position = None;
                        continue;
                    }
                    Some(code) if code.is_retriable() => {
                        tracing::debug!(topic = %topic, partition = p.partition_index, error = %code,
                            "kafka fetch: refreshing metadata");
                        self.next_refresh = None;
                        continue;
                    }
                    Some(code) => {
                        tracing::warn!(topic = %topic, error = %code, "kafka topic cannot be consumed");
                        self.topic_errors.insert(topic.to_string(), code);
                        continue;
                    }
                }
                s.high_watermark = Some(p.high_watermark);
                let Some(raw) = p.records else { continue };
                let decoded = records::decode(
                    &topic,
                    p.partition_index,
                    raw,
                    position,
                    bounds.response_max,
                    bounds.record_value_max,
                )
                .map_err(|reason| {
                    Error::bad_frame(&addr, format!("{topic}/{}: {reason}", p.partition_index))
                })?;
                items.extend(decoded.items);
                match decoded.next_offset {
                    Some(next) if next > position => {
                        s.position = Some(next);
                        if let Some(g) = s.gap.take() {
                            tracing::debug!(topic = %topic, partition = p.partition_index, position,
                                waited_ms = g.since.elapsed().as_millis() as u64,
                                "kafka partition: the hole at the position filled");
                        }
                    }
                    _ => {
                        if let Some(hole_end) = decoded.gap {
                            on_hole(
                                &topic,
                                p.partition_index,
                                s,
                                position,
                                hole_end,
                                decoded.boundary,
                                bounds.gap_wait,
                            );
                        } else if let (Some(g), Some(b)) = (&mut s.gap, decoded.boundary) {
                            g.fetch_at = g.fetch_at.max(b);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The fetch at `position` found no batch holding it but one that begins at `hole_end`: wait
/// for the hole to fill (looking for the batch that holds the position meanwhile), and after
/// `gap_wait` move past it with a warning.
fn on_hole(
    topic: &str,
    partition: i32,
    s: &mut PartState,
    position: i64,
    hole_end: i64,
    boundary: Option<i64>,
    gap_wait: Duration,
) {
    let now = Instant::now();
    let g = s.gap.get_or_insert_with(|| {
        tracing::debug!(
            topic,
            partition,
            position,
            hole_end,
            "kafka partition: no batch holds the position yet; waiting for it"
        );
        Gap {
            since: now,
            fetch_at: position,
            back: 0,
        }
    });
    if now.duration_since(g.since) >= gap_wait {
        tracing::warn!(
            topic,
            partition,
            first = position,
            last = hole_end - 1,
            waited_ms = gap_wait.as_millis() as u64,
            "kafka partition: offsets missing from the log (compacted or deleted, or never \
             written by the broker): moving past them"
        );
        s.position = Some(hole_end);
        s.gap = None;
        return;
    }
    g.fetch_at = match boundary {
        // A batch ends at or before the position: fetch from there.
        Some(b) => b,
        None if g.back >= 0 => {
            g.back = (g.back * 2).max(1);
            (position - g.back).max(0)
        }
        None => position,
    };
}

fn clamp_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(position: i64) -> PartState {
        PartState {
            leader: 1,
            position: Some(position),
            high_watermark: None,
            gap: None,
        }
    }

    const WAIT: Duration = Duration::from_secs(60);

    #[test]
    fn a_hole_is_waited_for_looking_back_for_the_batch_that_holds_the_position() {
        let mut s = part(20);
        // Nothing at or before the position came back: look back 1, 2, 4 ... offsets.
        let mut looked = Vec::new();
        for _ in 0..4 {
            on_hole("t", 0, &mut s, 20, 62, None, WAIT);
            looked.push(s.gap.as_ref().unwrap().fetch_at);
        }
        assert_eq!(looked, [19, 18, 16, 12]);
        // A batch ending before the position came back: fetch from its end.
        on_hole("t", 0, &mut s, 20, 62, Some(17), WAIT);
        assert_eq!(s.gap.as_ref().unwrap().fetch_at, 17);
        // A batch ends at the position: wait there for the next one to be written.
        on_hole("t", 0, &mut s, 20, 62, Some(20), WAIT);
        assert_eq!(s.gap.as_ref().unwrap().fetch_at, 20);
        assert_eq!(s.position, Some(20), "never moved past the hole meanwhile");
        // Looking back never goes below offset 0.
        let mut s = part(1);
        for _ in 0..5 {
            on_hole("t", 0, &mut s, 1, 9, None, WAIT);
            assert!(s.gap.as_ref().unwrap().fetch_at >= 0);
        }
    }

    #[test]
    fn a_hole_that_stays_past_the_wait_is_passed() {
        let mut s = part(4);
        on_hole("t", 0, &mut s, 4, 10, None, Duration::ZERO);
        assert_eq!(s.position, Some(10));
        assert!(s.gap.is_none());
    }
}
