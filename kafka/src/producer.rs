//! The idempotent producer.
//!
//! # Theory of operation
//!
//! [`Producer::send`] only queues (bounded by [`crate::Bounds::producer_queue_max`]).
//! [`Producer::flush`] does the work: it gets a producer id and epoch (InitProducerId with
//! no transactional id) once, reads the metadata of the queued records' topics, picks each
//! record's partition (murmur2 of the key, positive, modulo the partition count, like the
//! Java client; records without a key go round robin), and cuts per-partition batches. A
//! batch gets the partition's next sequence number when it is cut and keeps it until the
//! broker acknowledges it, so a batch sent again after a timeout or a lost connection is
//! recognised by the broker as a duplicate and written once. Batches go to their leaders in
//! one ProduceRequest per leader with `acks = -1` (all in-sync replicas).
//!
//! Each record ends in one [`Delivery`]: its offset, or the broker's error for it. Retryable
//! broker errors (leader moved) refresh the metadata and retry within the flush's
//! timeout; network faults return an [`Error`] and keep everything queued for the next
//! flush (reports already made are kept too and returned by the next flush).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::{
    InitProducerIdRequest, ProduceRequest, TopicName,
    produce_request::{PartitionProduceData, TopicProduceData},
};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use kafka_protocol::records::{
    Compression, Record as WireRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::cluster::{Cluster, topic_arc};
use crate::config::Config;
use crate::error::{Error, Result};

const PRODUCE: VersionRange = VersionRange { min: 3, max: 9 };
const INIT_PRODUCER_ID: VersionRange = VersionRange { min: 0, max: 4 };
/// The pause before a flush retries a partition whose leader is moving.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The outcome of one sent record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The id [`Producer::send`] returned for the record.
    pub id: u64,
    /// The topic.
    pub topic: Arc<str>,
    /// The partition it went to (`-1` if none could be chosen).
    pub partition: i32,
    /// Its offset, or the broker's error for it.
    pub result: std::result::Result<i64, ResponseError>,
}

#[derive(Debug)]
struct Pending {
    id: u64,
    key: Option<Bytes>,
    value: Bytes,
    timestamp_ms: i64,
}

/// A batch cut for one partition, with its sequence number fixed until acknowledged.
#[derive(Debug)]
struct Batch {
    records: Vec<Pending>,
    base_sequence: i32,
    encoded: Bytes,
}

type Key = (Arc<str>, i32);

/// An idempotent, blocking producer (see the module docs).
#[derive(Debug)]
pub struct Producer {
    cluster: Cluster,
    /// Records not yet given a partition, by topic.
    unassigned: BTreeMap<Arc<str>, VecDeque<Pending>>,
    /// Records given a partition but not yet in a batch.
    assigned: BTreeMap<Key, VecDeque<Pending>>,
    /// Batches sent (or to be sent) and not yet acknowledged.
    in_flight: BTreeMap<Key, Batch>,
    sequences: BTreeMap<Key, i32>,
    producer: Option<(i64, i16)>,
    queued: usize,
    next_id: u64,
    round_robin: u32,
    reports: Vec<Delivery>,
    compression: Compression,
}

impl Producer {
    /// A producer for this cluster. Nothing is connected until the first flush.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the configuration is inconsistent.
    pub fn new(config: Config) -> Result<Self> {
        Ok(Producer {
            cluster: Cluster::new(config)?,
            unassigned: BTreeMap::new(),
            assigned: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            sequences: BTreeMap::new(),
            producer: None,
            queued: 0,
            next_id: 0,
            round_robin: 0,
            reports: Vec::new(),
            compression: Compression::None,
        })
    }

    /// Compresses batches with this codec from now on (default none; GCN's producers use
    /// zstd).
    pub fn set_compression(&mut self, compression: Compression) {
        self.compression = compression;
    }

    /// Queues a record; returns its id for the [`Delivery`] report.
    ///
    /// # Errors
    ///
    /// [`Error::QueueFull`] when [`crate::Bounds::producer_queue_max`] records wait; the
    /// record is not queued.
    pub fn send(&mut self, topic: &str, key: Option<Bytes>, value: Bytes) -> Result<u64> {
        let capacity = self.cluster.config.bounds.producer_queue_max;
        if self.queued >= capacity {
            return Err(Error::QueueFull { capacity });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queued += 1;
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.unassigned
            .entry(Arc::from(topic))
            .or_default()
            .push_back(Pending {
                id,
                key,
                value,
                timestamp_ms,
            });
        Ok(id)
    }

    /// Records queued or in flight.
    pub fn pending(&self) -> usize {
        self.queued
    }

    /// Sends what is queued and waits for the acknowledgements, for at most `timeout`.
    /// Returns the reports of records finished since the last call; what is still pending
    /// when the time is up stays queued.
    ///
    /// # Errors
    ///
    /// A retryable [`Error`] for network faults (everything stays queued, reports are kept
    /// for the next call; flush again after a backoff); others need a person.
    pub fn flush(&mut self, timeout: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + timeout;
        let result = self.flush_inner(deadline);
        if let Err(e) = &result
            && e.is_retryable()
        {
            self.cluster.disconnect();
        }
        result.map(|()| std::mem::take(&mut self.reports))
    }

    fn flush_inner(&mut self, deadline: Instant) -> Result<()> {
        let mut stale = !self.unassigned.is_empty() || self.cluster.metadata.topics.is_empty();
        while self.queued > 0 && Instant::now() < deadline {
            if self.producer.is_none() {
                self.init_producer_id()?;
            }
            if stale || !self.unassigned.is_empty() {
                self.assign()?;
            }
            self.cut_batches();
            let before = self.queued;
            stale = self.send_batches()?;
            if stale && self.queued == before {
                // A leader is moving: give the cluster a moment before asking again.
                let left = deadline.saturating_duration_since(Instant::now());
                std::thread::sleep(left.min(RETRY_PAUSE));
            }
        }
        Ok(())
    }

    fn init_producer_id(&mut self) -> Result<()> {
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = None;
        req.transaction_timeout_ms = 60_000;
        req.producer_id = (-1).into();
        req.producer_epoch = -1;
        let (resp, addr) = self.cluster.any(|conn| {
            conn.request(&req, INIT_PRODUCER_ID)
                .map(|(r, _)| (r, conn.addr().to_owned()))
        })?;
        if let Some(code) = ResponseError::try_from_code(resp.error_code) {
            return Err(Error::broker(&addr, "InitProducerId", code));
        }
        tracing::debug!(
            producer_id = resp.producer_id.0,
            epoch = resp.producer_epoch,
            "kafka producer id"
        );
        self.producer = Some((resp.producer_id.0, resp.producer_epoch));
        self.sequences.clear();
        Ok(())
    }

    /// Reads the metadata of every topic with records and gives unassigned records a
    /// partition; records of a topic that cannot be written get their error report.
    fn assign(&mut self) -> Result<()> {
        let topics: Vec<String> = self
            .unassigned
            .keys()
            .chain(self.assigned.keys().map(|k| &k.0))
            .chain(self.in_flight.keys().map(|k| &k.0))
            .map(|t| t.to_string())
            .collect();
        let md = self.cluster.refresh(Some(&topics))?.clone();
        for (topic, records) in std::mem::take(&mut self.unassigned) {
            let info = md.topics.get(&*topic);
            let error = match info {
                None => Some(ResponseError::UnknownTopicOrPartition),
                Some(i) if i.partitions.is_empty() => {
                    Some(i.error.unwrap_or(ResponseError::UnknownTopicOrPartition))
                }
                Some(i) => i.error.filter(|e| !e.is_retriable()),
            };
            if let Some(code) = error {
                tracing::warn!(topic = %topic, error = %code, "kafka topic cannot be written");
                for r in records {
                    self.report(&topic, -1, r.id, Err(code));
                }
                continue;
            }
            let count = info.map_or(0, |i| i.partitions.len()) as u32;
            for r in records {
                let partition = match &r.key {
                    Some(k) => (to_positive(murmur2(k)) % count) as i32,
                    None => {
                        self.round_robin = self.round_robin.wrapping_add(1);
                        (self.round_robin % count) as i32
                    }
                };
                self.assigned
                    .entry((topic.clone(), partition))
                    .or_default()
                    .push_back(r);
            }
        }
        Ok(())
    }

    /// Cuts one batch for every partition without one in flight.
    fn cut_batches(&mut self) {
        let Some((producer_id, epoch)) = self.producer else {
            return;
        };
        let max = self.cluster.config.bounds.produce_request_max;
        for (key, queue) in &mut self.assigned {
            if queue.is_empty() || self.in_flight.contains_key(key) {
                continue;
            }
            let mut records = Vec::new();
            let mut bytes = 0;
            while let Some(r) = queue.front() {
                let size = r.value.len() + r.key.as_ref().map_or(0, Bytes::len);
                if !records.is_empty() && bytes + size > max {
                    break;
                }
                bytes += size;
                records.extend(queue.pop_front());
            }
            let base_sequence = *self.sequences.get(key).unwrap_or(&0);
            let wire: Vec<WireRecord> = records
                .iter()
                .enumerate()
                .map(|(i, r)| WireRecord {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id,
                    producer_epoch: epoch,
                    timestamp_type: TimestampType::Creation,
                    offset: i as i64,
                    sequence: base_sequence.wrapping_add(i as i32),
                    timestamp: r.timestamp_ms,
                    key: r.key.clone(),
                    value: Some(r.value.clone()),
                    headers: IndexMap::new(),
                })
                .collect();
            let mut buf = BytesMut::with_capacity(bytes + 128);
            let options = RecordEncodeOptions {
                version: 2,
                compression: self.compression,
            };
            if let Err(e) = RecordBatchEncoder::encode(&mut buf, &wire, &options) {
                // Only an impossible record (over 2 GiB) fails here.
                tracing::warn!(error = %e, "kafka batch cannot be encoded");
                for r in records {
                    self.queued -= 1;
                    self.reports.push(Delivery {
                        id: r.id,
                        topic: key.0.clone(),
                        partition: key.1,
                        result: Err(ResponseError::InvalidRecord),
                    });
                }
                continue;
            }
            self.in_flight.insert(
                key.clone(),
                Batch {
                    records,
                    base_sequence,
                    encoded: buf.freeze(),
                },
            );
        }
        self.assigned.retain(|_, q| !q.is_empty());
    }

    /// Sends every batch in flight to its leader; returns true if the metadata is stale.
    fn send_batches(&mut self) -> Result<bool> {
        let mut by_leader: BTreeMap<i32, Vec<Key>> = BTreeMap::new();
        let mut stale = false;
        for key in self.in_flight.keys() {
            let leader = self
                .cluster
                .metadata
                .topics
                .get(&*key.0)
                .and_then(|t| t.partitions.get(&key.1))
                .copied()
                .unwrap_or(-1);
            if leader < 0 {
                stale = true;
            } else {
                by_leader.entry(leader).or_default().push(key.clone());
            }
        }
        let timeout_ms = self
            .cluster
            .config
            .request_timeout
            .as_millis()
            .min(i32::MAX as u128) as i32;
        for (leader, keys) in by_leader {
            let mut topics: BTreeMap<Arc<str>, Vec<PartitionProduceData>> = BTreeMap::new();
            for key in &keys {
                let mut p = PartitionProduceData::default();
                p.index = key.1;
                p.records = self.in_flight.get(key).map(|b| b.encoded.clone());
                topics.entry(key.0.clone()).or_default().push(p);
            }
            let mut req = ProduceRequest::default();
            req.transactional_id = None;
            req.acks = -1;
            req.timeout_ms = timeout_ms;
            req.topic_data = topics
                .into_iter()
                .map(|(name, partition_data)| {
                    let mut t = TopicProduceData::default();
                    t.name = TopicName(StrBytes::from_string(name.to_string()));
                    t.partition_data = partition_data;
                    t
                })
                .collect();
            let (resp, _, _) = self
                .cluster
                .request(leader, &req, PRODUCE, Duration::ZERO)?;
            for t in resp.responses {
                let topic = topic_arc(&t.name);
                for p in t.partition_responses {
                    let key = (topic.clone(), p.index);
                    stale |= self.handle_partition_response(key, p.error_code, p.base_offset);
                }
            }
        }
        Ok(stale)
    }

    /// Settles one partition's batch; returns true if the metadata should be refreshed.
    fn handle_partition_response(&mut self, key: Key, error_code: i16, base_offset: i64) -> bool {
        let code = ResponseError::try_from_code(error_code);
        match code {
            // Already written by an earlier attempt of the same batch.
            None | Some(ResponseError::DuplicateSequenceNumber) => {
                let Some(batch) = self.in_flight.remove(&key) else {
                    return false;
                };
                let n = batch.records.len() as i32;
                self.sequences
                    .insert(key.clone(), batch.base_sequence.wrapping_add(n) & i32::MAX);
                for (i, r) in batch.records.into_iter().enumerate() {
                    let offset = if code.is_none() {
                        base_offset + i as i64
                    } else {
                        -1
                    };
                    self.report(&key.0, key.1, r.id, Ok(offset));
                }
                false
            }
            Some(ResponseError::OutOfOrderSequenceNumber | ResponseError::UnknownProducerId) => {
                // The broker lost our producer state: start over with a new id; the batch
                // is cut again with new sequence numbers.
                tracing::warn!(topic = %key.0, partition = key.1, error = ?code,
                    "kafka producer state lost: new producer id");
                self.producer = None;
                self.requeue_all();
                true
            }
            Some(c) if c.is_retriable() => true,
            Some(c) => {
                if let Some(batch) = self.in_flight.remove(&key) {
                    for r in batch.records {
                        self.report(&key.0, key.1, r.id, Err(c));
                    }
                }
                false
            }
        }
    }

    /// Puts every in-flight batch's records back in front of their partition's queue.
    fn requeue_all(&mut self) {
        for (key, batch) in std::mem::take(&mut self.in_flight) {
            let q = self.assigned.entry(key).or_default();
            for r in batch.records.into_iter().rev() {
                q.push_front(r);
            }
        }
    }

    fn report(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        id: u64,
        result: std::result::Result<i64, ResponseError>,
    ) {
        self.queued -= 1;
        self.reports.push(Delivery {
            id,
            topic: topic.clone(),
            partition,
            result,
        });
    }
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), used to pick a key's partition.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The Java client's `Utils.toPositive`: the sign bit cleared.
pub fn to_positive(h: i32) -> u32 {
    (h & 0x7fff_ffff) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values of Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), want, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn to_positive_clears_the_sign_bit() {
        assert_eq!(to_positive(-1), 0x7fff_ffff);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(5), 5);
    }

    /// A producer with records assigned to partition 0 of `t` and a producer id, no IO.
    fn primed(values: &[&'static [u8]]) -> Producer {
        let mut p = Producer::new(Config::new("127.0.0.1:9", "t").unwrap()).unwrap();
        p.producer = Some((7, 0));
        for v in values {
            p.send("t", None, Bytes::from_static(v)).unwrap();
        }
        let records = p.unassigned.remove("t").unwrap();
        p.assigned.insert((Arc::from("t"), 0), records);
        p
    }

    #[test]
    fn a_retried_batch_keeps_its_bytes_and_sequence_until_acknowledged() {
        let mut p = primed(&[b"a", b"b", b"c"]);
        let key: Key = (Arc::from("t"), 0);
        p.cut_batches();
        let first = p.in_flight[&key].encoded.clone();
        assert_eq!(p.in_flight[&key].base_sequence, 0);
        // The leader moved: the batch stays, byte for byte, and nothing is reported.
        let leader_moved = ResponseError::NotLeaderOrFollower.code();
        assert!(p.handle_partition_response(key.clone(), leader_moved, -1));
        p.cut_batches();
        assert_eq!(p.in_flight[&key].encoded, first);
        assert!(p.reports.is_empty());
        // Acknowledged: the reports carry consecutive offsets, the sequence moves on.
        assert!(!p.handle_partition_response(key.clone(), 0, 40));
        let offsets: Vec<_> = p.reports.iter().map(|d| d.result).collect();
        assert_eq!(offsets, [Ok(40), Ok(41), Ok(42)]);
        assert_eq!(p.sequences[&key], 3);
        assert_eq!(p.pending(), 0);
        p.send("t", None, Bytes::from_static(b"d")).unwrap();
        let records = p.unassigned.remove("t").unwrap();
        p.assigned.insert(key.clone(), records);
        p.cut_batches();
        assert_eq!(p.in_flight[&key].base_sequence, 3);
    }

    #[test]
    fn a_duplicate_is_a_success_and_a_refused_batch_is_reported() {
        let mut p = primed(&[b"a"]);
        let key: Key = (Arc::from("t"), 0);
        p.cut_batches();
        let duplicate = ResponseError::DuplicateSequenceNumber.code();
        assert!(!p.handle_partition_response(key.clone(), duplicate, -1));
        assert_eq!(p.reports[0].result, Ok(-1));
        let mut p = primed(&[b"a"]);
        p.cut_batches();
        let too_large = ResponseError::MessageTooLarge.code();
        assert!(!p.handle_partition_response(key.clone(), too_large, -1));
        assert_eq!(p.reports[0].result, Err(ResponseError::MessageTooLarge));
        assert_eq!(
            p.sequences.get(&key),
            None,
            "a refused batch takes no sequence numbers"
        );
    }

    #[test]
    fn a_lost_producer_state_recuts_the_batch_under_a_new_id() {
        let mut p = primed(&[b"a", b"b"]);
        let key: Key = (Arc::from("t"), 0);
        p.cut_batches();
        let lost = ResponseError::UnknownProducerId.code();
        assert!(p.handle_partition_response(key.clone(), lost, -1));
        assert!(p.producer.is_none() && p.in_flight.is_empty());
        assert_eq!(p.assigned[&key].len(), 2, "the records wait for the new id");
        assert_eq!(p.pending(), 2);
    }

    #[test]
    fn a_full_queue_refuses_the_record() {
        let mut config = Config::new("127.0.0.1:9", "t").unwrap();
        config.bounds.producer_queue_max = 2;
        let mut p = Producer::new(config).unwrap();
        p.send("t", None, Bytes::from_static(b"1")).unwrap();
        p.send("t", None, Bytes::from_static(b"2")).unwrap();
        let err = p.send("t", None, Bytes::from_static(b"3")).unwrap_err();
        assert!(matches!(err, Error::QueueFull { capacity: 2 }), "{err}");
        assert_eq!(p.pending(), 2);
    }
}
